/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The tree's extended attributes: what the listing knows, as text. */
#include <string.h>

#include "imapfs/error.h"
#include "tree-private.h"

static void xattr_free(gpointer p)
{
	ImapfsXattr *x = p;

	g_free(x->name);
	g_free(x->value);
	g_free(x);
}

/* Takes @value. */
static void add(GPtrArray *out, const char *name, char *value)
{
	ImapfsXattr *x = g_new(ImapfsXattr, 1);

	x->name = g_strdup(name);
	x->value = value;
	g_ptr_array_add(out, x);
}

static char *rfc3339(gint64 when)
{
	g_autoptr(GDateTime) dt = g_date_time_new_from_unix_utc(when);

	return dt ? g_date_time_format(dt, "%Y-%m-%dT%H:%M:%SZ")
		  : g_strdup("1970-01-01T00:00:00Z");
}

static gboolean has_flag(const char *flags, const char *flag)
{
	g_auto(GStrv) words = g_strsplit(flags ? flags : "", " ", -1);

	for (guint i = 0; words[i]; i++)
		if (g_ascii_strcasecmp(words[i], flag) == 0)
			return TRUE;
	return FALSE;
}

/* Called locked. */
static void message_xattrs(const Mailbox *m, const ImapfsMessageInfo *info,
			   char *flags, GPtrArray *out)
{
	add(out, "user.imap.flags", flags);
	add(out, "user.imap.uid", g_strdup_printf("%u", info->uid));
	add(out, "user.imap.uidvalidity",
	    g_strdup_printf("%u", m->state.uidvalidity));
	add(out, "user.imap.internaldate", rfc3339(info->internaldate));
	if (info->modseq)
		add(out, "user.imap.modseq",
		    g_strdup_printf("%" G_GUINT64_FORMAT, info->modseq));
}

/* Called locked. */
static void mailbox_xattrs(const Mailbox *m, GPtrArray *out)
{
	if (m->messages && m->server_name && m->selectable) {
		guint unseen = 0;
		for (guint i = 0; i < m->messages->len; i++)
			if (!has_flag(g_array_index(m->messages,
						    ImapfsMessageInfo, i)
					      .flags,
				      "\\Seen"))
				unseen++;
		add(out, "user.imap.uidvalidity",
		    g_strdup_printf("%u", m->state.uidvalidity));
		add(out, "user.imap.uidnext",
		    g_strdup_printf("%u", m->state.uidnext));
		add(out, "user.imap.messages",
		    g_strdup_printf("%u", m->messages->len));
		add(out, "user.imap.unseen", g_strdup_printf("%u", unseen));
	}
	if (m->special_use && m->server_name)
		add(out, "user.imap.special-use", g_strdup(m->special_use));
}

/* A mailbox directory's listing, loaded if it is not yet. */
static void load_listing(ImapfsTree *tree, guint64 ino)
{
	g_autofree char *path = NULL;

	g_mutex_lock(&tree->lock);
	Mailbox *m = tree_dir_of(tree, ino);
	if (m && m->messages == NULL && m->selectable && m->server_name)
		path = g_strdup(m->path);
	g_mutex_unlock(&tree->lock);
	/* Without a listing the attributes just do not show. */
	if (path)
		tree_refresh_messages(tree, path, LOOKUP_FRESH_US, NULL);
}

GPtrArray *imapfs_tree_xattrs(ImapfsTree *tree, guint64 ino, GError **error)
{
	GPtrArray *out = g_ptr_array_new_with_free_func(xattr_free);
	gboolean found = TRUE;
	Mailbox *m;
	guint32 uid;

	if (!imapfs_tree_is_pending(tree, ino))
		load_listing(tree, ino);
	char *flags = imapfs_tree_get_flags(tree, ino, NULL);
	g_mutex_lock(&tree->lock);
	ImapfsMessageInfo *info = NULL;
	if ((m = tree_dir_of(tree, ino)) != NULL)
		mailbox_xattrs(m, out);
	else if (tree_decode_message(tree, ino, &m, &uid) &&
		 (info = tree_find_message(m, uid)) != NULL && flags)
		message_xattrs(m, info, g_steal_pointer(&flags), out);
	else if (flags)
		add(out, "user.imap.flags", g_steal_pointer(&flags));
	else
		found = FALSE;
	g_mutex_unlock(&tree->lock);
	g_free(flags);
	if (found)
		return out;
	g_ptr_array_unref(out);
	tree_fail_noent(error, "inode");
	return NULL;
}
