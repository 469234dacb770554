/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "imapfs/cancel.h"
#include "imapfs/error.h"

typedef struct {
	ImapfsCancelFunc func;
	gpointer data;
} Question;

static __thread Question question;

void imapfs_cancel_set(ImapfsCancelFunc func, gpointer data)
{
	question.func = func;
	question.data = func ? data : NULL;
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
