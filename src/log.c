/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <stdio.h>
#include <syslog.h>

#include "imapfs/log.h"

/* Written once before any thread starts, read-only afterwards. */
static guint trace_mask;
static gboolean use_syslog;

gboolean imapfs_log_tracing(ImapfsTrace area)
{
	return (trace_mask & area) != 0;
}

static int syslog_priority(GLogLevelFlags level)
{
	if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL))
		return LOG_ERR;
	if (level & G_LOG_LEVEL_WARNING)
		return LOG_WARNING;
	if (level & (G_LOG_LEVEL_MESSAGE | G_LOG_LEVEL_INFO))
		return LOG_INFO;
	return LOG_DEBUG;
}

static const char *level_prefix(GLogLevelFlags level)
{
	if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL))
		return "error: ";
	if (level & G_LOG_LEVEL_WARNING)
		return "warning: ";
	return "";
}

static GLogWriterOutput write_log(GLogLevelFlags level, const GLogField *fields,
				  gsize n_fields, gpointer user_data)
{
	const char *message = "";

	/* Debug messages only ever come from imapfs_trace(), which has
	 * already checked the mask; GLib's own debug output stays off. */
	if ((level & G_LOG_LEVEL_DEBUG) && trace_mask == 0)
		return G_LOG_WRITER_HANDLED;
	for (gsize i = 0; i < n_fields; i++)
		if (g_strcmp0(fields[i].key, "MESSAGE") == 0)
			message = fields[i].value;
	if (use_syslog)
		syslog(syslog_priority(level), "%s%s", level_prefix(level),
		       message);
	else
		fprintf(stderr, "imapfs: %s%s\n", level_prefix(level), message);
	return G_LOG_WRITER_HANDLED;
}

void imapfs_log_init(guint mask)
{
	static gsize installed;

	trace_mask = mask;
	if (g_once_init_enter(&installed))
		g_once_init_leave(
			&installed,
			(g_log_set_writer_func(write_log, NULL, NULL), 1));
}

void imapfs_log_use_syslog(void)
{
	openlog("imapfs", LOG_PID, LOG_DAEMON);
	use_syslog = TRUE;
}

char *imapfs_log_quote(const char *s)
{
	gboolean valid = g_utf8_validate(s, -1, NULL);
	GString *out = g_string_new(NULL);

	for (const guchar *p = (const guchar *)s; *p; p++) {
		if (*p < 0x20 || *p == 0x7f || (*p >= 0x80 && !valid))
			g_string_append_printf(out, "\\x%02x", *p);
		else if (*p == '"' || *p == '\\')
			g_string_append_printf(out, "\\%c", *p);
		else
			g_string_append_c(out, (char)*p);
	}
	return g_string_free(out, FALSE);
}
