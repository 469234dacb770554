/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Interrupting a blocked request: the FUSE layer tells each handler
 * thread how to ask whether the request it serves was interrupted (the
 * user pressed Ctrl-C), and every wait below it (a socket, a free
 * connection, another thread's fetch, a reconnection) wakes at least
 * every IMAPFS_CANCEL_SLICE_US to ask (name resolution excepted). The same
 * per-thread record gives the request's deadline once it lost the server.
 * Polling rather than a callback from the interrupting thread: nothing then
 * outlives the request, and no lock is shared across layers.
 *
 * Threads: the question is per thread (thread-local); threads that serve
 * no request (prefetch, watcher) never have one and are never
 * interrupted.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* The longest a wait goes without asking. */
#define IMAPFS_CANCEL_SLICE_US (200 * G_TIME_SPAN_MILLISECOND)

/* TRUE when the request @data stands for was interrupted. */
typedef gboolean (*ImapfsCancelFunc)(gpointer data);

/* A request begins (NULL @func: ends) on this thread: sets its question
 * and starts its clock. @data must stay valid as long as anything may
 * wait on this thread (the FUSE layer's reply frees its request, and
 * nothing waits after the reply). */
void imapfs_cancel_set(ImapfsCancelFunc func, gpointer data);

/* FALSE with IMAPFS_ERROR_INTERRUPTED when this thread's request was
 * interrupted. */
gboolean imapfs_cancel_check(GError **error);

/*
 * The deadline (monotonic µs) for waiting on the server on behalf of this
 * thread's request: @timeout_us after the request began, so that the
 * several steps of one request share one bound; for a thread that
 * serves no request, @timeout_us from now.
 */
gint64 imapfs_cancel_deadline(gint64 timeout_us);

/* Notes that the server failed this thread's request (it could not be
 * reached, or stayed silent): a later step of the same request that
 * finds its time up then gives up at once rather than try again. */
void imapfs_cancel_note_failure(void);
gboolean imapfs_cancel_failed(void);

/* The end of the next wait slice: @deadline (monotonic µs) or sooner,
 * when this thread has a question to ask. */
gint64 imapfs_cancel_slice(gint64 deadline);

G_END_DECLS
