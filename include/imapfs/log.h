/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Logging: g_log with the "imapfs" domain plus a trace mask.
 *
 * Errors and warnings always go out: to stderr while in the foreground, to
 * syslog once daemonized. Traces are debug messages that are only emitted
 * when their area is enabled in the mask (-d enables all of them).
 * Thread-safe: the mask is written once at start-up, before any thread.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
	IMAPFS_TRACE_NET = 1 << 0,   /* the IMAP conversation (redacted) */
	IMAPFS_TRACE_POOL = 1 << 1,  /* connections taken, returned, made */
	IMAPFS_TRACE_CACHE = 1 << 2, /* block cache hits, misses, evictions */
	IMAPFS_TRACE_FUSE = 1 << 3,  /* FUSE requests and replies */
	IMAPFS_TRACE_ALL = 0xf,
} ImapfsTrace;

/* Sets the trace mask and installs the log writer (once). Call before
 * any thread starts; calling again only changes the mask. */
void imapfs_log_init(guint trace_mask);

/* From now on, write to syslog instead of stderr (after daemonizing). */
void imapfs_log_use_syslog(void);

/* TRUE when traces of @area are wanted; cheap, for guarding expensive work. */
gboolean imapfs_log_tracing(ImapfsTrace area);

/* @s made safe to show between quotes in a message: control characters,
 * and every byte of invalid UTF-8, as \xNN; quotes and backslashes
 * escaped; valid UTF-8 kept. The input may come from the user or the
 * server. Caller frees. */
char *imapfs_log_quote(const char *s);

/* A debug message for @area, dropped unless that area is traced. */
#define imapfs_trace(area, ...)                                          \
	G_STMT_START                                                     \
	{                                                                \
		if (imapfs_log_tracing(area))                            \
			g_log("imapfs", G_LOG_LEVEL_DEBUG, __VA_ARGS__); \
	}                                                                \
	G_STMT_END

G_END_DECLS
