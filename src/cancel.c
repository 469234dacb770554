/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "imapfs/cancel.h"
#include "imapfs/error.h"

typedef struct {
	ImapfsCancelFunc func;
	gpointer data;
	gint64 started;	 /* monotonic; 0 without a request */
	gboolean failed; /* imapfs_cancel_note_failure() */
} Question;

static __thread Question question;

void imapfs_cancel_set(ImapfsCancelFunc func, gpointer data)
{
	question.func = func;
	question.data = func ? data : NULL;
	question.started = func ? g_get_monotonic_time() : 0;
	question.failed = FALSE;
}

gint64 imapfs_cancel_deadline(gint64 timeout_us)
{
	gint64 from =
		question.started ? question.started : g_get_monotonic_time();

	return from + timeout_us;
}

void imapfs_cancel_note_failure(void)
{
	question.failed = question.started != 0;
}

gboolean imapfs_cancel_failed(void)
{
	return question.failed;
}

gboolean imapfs_cancel_check(GError **error)
{
	if (question.func == NULL || !question.func(question.data))
		return TRUE;
	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_INTERRUPTED,
		    "interrupted");
	return FALSE;
}

gint64 imapfs_cancel_slice(gint64 deadline)
{
	if (question.func == NULL)
		return deadline;
	return MIN(deadline, g_get_monotonic_time() + IMAPFS_CANCEL_SLICE_US);
}
