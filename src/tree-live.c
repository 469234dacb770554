/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The tree staying current: refreshes asked for by the watcher (watch.c),
 * the poll, and the changes each refresh hands on to the kernel.
 */
#include <string.h>

#include "imapfs/error.h"
#include "imapfs/log.h"
#include "imapfs/tree.h"
#include "tree-private.h"

/* --- changes for the kernel ------------------------------------------------
 */

static void change_clear(gpointer p)
{
	g_free(((TreeChange *)p)->name);
}

GArray *tree_changes_new(void)
{
	GArray *changes = g_array_new(FALSE, FALSE, sizeof(TreeChange));

	g_array_set_clear_func(changes, change_clear);
	return changes;
}

void tree_change(GArray *changes, ImapfsChangeKind kind, guint64 parent,
		 guint64 child, const char *name)
{
	TreeChange c = {kind, parent, child, g_strdup(name)};

	g_array_append_val(changes, c);
}

void tree_change_message_gone(ImapfsTree *tree, Mailbox *m, guint32 uid,
			      GArray *changes)
{
	guint64 dir = tree_dir_ino(m);
	char name[32];

	g_snprintf(name, sizeof(name), "%u.eml", uid);
	tree_change(changes, IMAPFS_CHANGE_GONE, dir, tree_message_ino(m, uid),
		    name);
	if (!tree->cfg->parts)
		return;
	g_snprintf(name, sizeof(name), "%u.parts", uid);
	tree_change(changes, IMAPFS_CHANGE_GONE, dir,
		    tree_parts_dir_ino(m, uid), name);
}

void tree_changes_emit(ImapfsTree *tree, GArray *changes)
{
	for (guint i = 0; tree->change_func && i < changes->len; i++) {
		TreeChange *c = &g_array_index(changes, TreeChange, i);
		tree->change_func(c->kind, c->parent, c->child, c->name,
				  tree->change_data);
	}
	g_array_unref(changes);
}

void imapfs_tree_set_change_func(ImapfsTree *tree, ImapfsChangeFunc func,
				 gpointer data)
{
	tree->change_func = func;
	tree->change_data = data;
}

/* --- mailboxes in use ------------------------------------------------------
 */

static void in_use_free(gpointer p)
{
	ImapfsMailboxInUse *u = p;

	g_free(u->server_name);
	g_free(u);
}

static gint by_recent_use(gconstpointer a, gconstpointer b)
{
	const Mailbox *x = *(Mailbox *const *)a, *y = *(Mailbox *const *)b;

	return x->used_at > y->used_at ? -1 : x->used_at < y->used_at;
}

/* A mailbox whose listing the watcher keeps current. Called locked. */
static gboolean is_in_use(const Mailbox *m)
{
	return m->present && !m->renewed && m->selectable && m->server_name &&
	       m->messages;
}

GPtrArray *imapfs_tree_in_use(ImapfsTree *tree, guint max)
{
	g_autoptr(GPtrArray) sorted = g_ptr_array_new();
	GPtrArray *out = g_ptr_array_new_with_free_func(in_use_free);

	g_mutex_lock(&tree->lock);
	for (guint i = 0; i < tree->slots->len; i++)
		if (is_in_use(tree->slots->pdata[i]))
			g_ptr_array_add(sorted, tree->slots->pdata[i]);
	g_ptr_array_sort(sorted, by_recent_use);
	for (guint i = 0; i < sorted->len && (max == 0 || i < max); i++) {
		Mailbox *m = sorted->pdata[i];
		ImapfsMailboxInUse *u = g_new0(ImapfsMailboxInUse, 1);
		u->server_name = g_strdup(m->server_name);
		u->state = m->state;
		g_ptr_array_add(out, u);
	}
	g_mutex_unlock(&tree->lock);
	return out;
}

char *tree_path_of_server_name(ImapfsTree *tree, const char *server_name,
			       gboolean in_use)
{
	char *path = NULL;

	g_mutex_lock(&tree->lock);
	for (guint i = 0; path == NULL && i < tree->slots->len; i++) {
		Mailbox *m = tree->slots->pdata[i];
		if ((in_use ? is_in_use(m) : m->present) &&
		    g_strcmp0(m->server_name, server_name) == 0)
			path = g_strdup(m->path);
	}
	g_mutex_unlock(&tree->lock);
	return path;
}

gboolean imapfs_tree_refresh(ImapfsTree *tree, const char *server_name,
			     GError **error)
{
	g_autofree char *path =
		tree_path_of_server_name(tree, server_name, TRUE);

	return path == NULL || tree_refresh_messages(tree, path, 0, error);
}

/* --- polling ---------------------------------------------------------------
 */

typedef struct {
	GPtrArray *in_use; /* ImapfsMailboxInUse * */
	GPtrArray *entries;
	gboolean utf8;
	ImapfsMailboxStatus *status; /* per in_use, without LIST-STATUS */
	gboolean *found;
} PollResult;

static gboolean poll_func(ImapfsSession *s, gpointer data, GError **error)
{
	PollResult *r = data;
	guint n = r->in_use->len;

	g_clear_pointer(&r->entries, g_ptr_array_unref);
	/* LIST-STATUS on the selected mailbox answers from this session's
	 * view, which has not heard of other clients' changes (Dovecot):
	 * no mailbox stays selected while asking. */
	if (n > 0 && imapfs_session_has(s, IMAPFS_CAP_LIST_STATUS) &&
	    !imapfs_session_unselect(s, error))
		return FALSE;
	/* Nothing in use: the mailbox tree alone is watched. */
	r->entries = imapfs_session_list(s, "", "*", n > 0, error);
	if (r->entries == NULL)
		return FALSE;
	r->utf8 = imapfs_session_utf8(s);
	if (imapfs_session_has(s, IMAPFS_CAP_LIST_STATUS) || n == 0)
		return TRUE;
	g_autofree const char **names = g_new(const char *, n);
	for (guint i = 0; i < n; i++)
		names[i] = ((ImapfsMailboxInUse *)r->in_use->pdata[i])
				   ->server_name;
	r->status = g_new0(ImapfsMailboxStatus, n);
	r->found = g_new0(gboolean, n);
	return imapfs_session_status_many(s, names, n, r->status, r->found,
					  error);
}

/* What the poll learnt of mailbox @i of r->in_use, or NULL. */
static const ImapfsMailboxStatus *status_of(PollResult *r, guint i)
{
	const ImapfsMailboxInUse *u = r->in_use->pdata[i];

	if (r->status)
		return r->found[i] ? &r->status[i] : NULL;
	for (guint k = 0; k < r->entries->len; k++) {
		const ImapfsListEntry *e = r->entries->pdata[k];
		if (e->has_status && strcmp(e->name, u->server_name) == 0)
			return &e->status;
	}
	return NULL;
}

static gboolean moved(const ImapfsMailboxState *was,
		      const ImapfsMailboxStatus *now)
{
	return was->uidvalidity != now->uidvalidity ||
	       was->uidnext != now->uidnext || was->exists != now->messages ||
	       (was->highestmodseq && now->highestmodseq &&
		was->highestmodseq != now->highestmodseq);
}

gboolean imapfs_tree_poll(ImapfsTree *tree, GError **error)
{
	PollResult r = {imapfs_tree_in_use(tree, 0)};
	gboolean ok = imapfs_pool_run(tree->pool, NULL, 0, TRUE, poll_func, &r,
				      error) &&
		      tree_apply_list(tree, r.entries, r.utf8, error);

	for (guint i = 0; ok && i < r.in_use->len; i++) {
		const ImapfsMailboxInUse *u = r.in_use->pdata[i];
		const ImapfsMailboxStatus *st = status_of(&r, i);
		if (st == NULL || !moved(&u->state, st))
			continue;
		imapfs_trace(IMAPFS_TRACE_CACHE, "poll: \"%s\" changed",
			     u->server_name);
		ok = imapfs_tree_refresh(tree, u->server_name, error);
	}
	g_ptr_array_unref(r.in_use);
	if (r.entries)
		g_ptr_array_unref(r.entries);
	g_free(r.status);
	g_free(r.found);
	return ok;
}
