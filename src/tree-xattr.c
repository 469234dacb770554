/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The tree's extended attributes: what the listing knows, as text. */
#include <string.h>

#include "imapfs/error.h"
#include "imapfs/mime.h"
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

/* Whether space-separated @flags holds @flag; no allocation, since it
 * runs for every message of a mailbox. */
static gboolean has_flag(const char *flags, const char *flag)
{
	gsize n = strlen(flag);

	for (const char *p = flags; p && *p;) {
		const char *end = strchr(p, ' ');
		gsize len = end ? (gsize)(end - p) : strlen(p);
		if (len == n && g_ascii_strncasecmp(p, flag, n) == 0)
			return TRUE;
		p = end ? end + 1 : NULL;
	}
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

/* Adds user.mail.@name, decoded to UTF-8, when ENVELOPE had it. */
static void add_mail(GPtrArray *out, const char *name, const char *raw)
{
	g_autofree char *full = g_strconcat("user.mail.", name, NULL);

	if (raw)
		add(out, full, imapfs_mime_decode_header(raw));
}

/* Called locked. */
static void envelope_xattrs(const ImapfsEnvelope *env, GPtrArray *out)
{
	add_mail(out, "subject", env->subject);
	add_mail(out, "from", env->from);
	add_mail(out, "to", env->to);
	add_mail(out, "cc", env->cc);
	add_mail(out, "date", env->date);
	add_mail(out, "message-id", env->message_id);
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

typedef struct {
	guint32 first, last;
	GPtrArray *got;
} MetaJob;

static gboolean meta_func(ImapfsSession *s, gpointer data, GError **error)
{
	MetaJob *j = data;

	if (j->got)
		g_ptr_array_unref(j->got);
	j->got = imapfs_session_fetch_meta(s, j->first, j->last, error);
	return j->got != NULL;
}

/* Keeps what came, for the UIDs the listing still has. Called locked. */
static void store_meta(Mailbox *m, guint32 uidvalidity, MetaJob *j)
{
	if (m->state.uidvalidity != uidvalidity)
		return; /* recreated meanwhile: ask again next time */
	if (m->meta == NULL)
		m->meta = g_hash_table_new_full(NULL, NULL, NULL,
						imapfs_message_meta_free);
	for (guint i = 0; i < j->got->len; i++) {
		ImapfsMessageMeta *meta = j->got->pdata[i];
		/* What the server sent unasked would stay for the mount. */
		if (tree_find_message(m, meta->uid) == NULL)
			continue;
		g_hash_table_replace(m->meta, GUINT_TO_POINTER(meta->uid),
				     meta);
		j->got->pdata[i] = NULL;
	}
	m->meta_next = MAX(m->meta_next, j->first);
	for (guint i = 0; i < m->messages->len; i++)
		m->meta_next = MAX(
			m->meta_next,
			g_array_index(m->messages, ImapfsMessageInfo, i).uid +
				1);
}

/*
 * ENVELOPE and BODYSTRUCTURE of the messages of message @ino's mailbox
 * that the tree has not asked for yet, in one command for all of them:
 * getfattr or ls -R over a whole mailbox costs one command, not one per
 * file.
 */
gboolean tree_load_meta(ImapfsTree *tree, guint64 ino, GError **error)
{
	g_autofree char *server = NULL;
	guint32 uidvalidity = 0, uid;
	MetaJob j = {0};
	Mailbox *m;

	g_mutex_lock(&tree->lock);
	/* Only what the listing has is kept (store_meta): nothing past
	 * its last UID is even parsed. */
	if (tree_decode_message(tree, ino, &m, &uid) && m->server_name &&
	    m->messages && m->messages->len > 0 && uid >= m->meta_next) {
		GArray *msgs = m->messages;
		server = g_strdup(m->server_name);
		uidvalidity = m->state.uidvalidity;
		j.first = m->meta_next;
		j.last = g_array_index(msgs, ImapfsMessageInfo, msgs->len - 1)
				 .uid;
	}
	g_mutex_unlock(&tree->lock);
	if (server == NULL)
		return TRUE;
	if (!imapfs_pool_run(tree->pool, server, uidvalidity, TRUE, meta_func,
			     &j, error)) {
		if (j.got)
			g_ptr_array_unref(j.got);
		return FALSE;
	}
	g_mutex_lock(&tree->lock);
	if (tree_decode_message(tree, ino, &m, &uid) && m->messages)
		store_meta(m, uidvalidity, &j);
	g_mutex_unlock(&tree->lock);
	g_ptr_array_unref(j.got);
	return TRUE;
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

/* Whether attribute @name comes from ENVELOPE or OBJECTID (a fetch for
 * the whole mailbox the first time), not from the listing. */
static gboolean from_meta(const char *name)
{
	return g_str_has_prefix(name, "user.mail.") ||
	       strcmp(name, "user.imap.emailid") == 0;
}

GPtrArray *imapfs_tree_xattrs(ImapfsTree *tree, guint64 ino, const char *wanted,
			      GError **error)
{
	GPtrArray *out = g_ptr_array_new_with_free_func(xattr_free);
	gboolean found = TRUE;
	Mailbox *m;
	guint32 uid;

	if (tree_is_part(ino)) {
		char *charset;
		if (!tree_part_charset(tree, ino, &charset)) {
			g_ptr_array_unref(out);
			tree_fail_noent(error, "inode");
			return NULL;
		}
		if (charset)
			add(out, "user.mail.charset", charset);
		return out;
	}
	if (!imapfs_tree_is_pending(tree, ino)) {
		load_listing(tree, ino);
		/* Failures only leave the user.mail.* attributes out. */
		if (wanted == NULL || from_meta(wanted))
			tree_load_meta(tree, ino, NULL);
	}
	char *flags = imapfs_tree_get_flags(tree, ino, NULL);
	g_mutex_lock(&tree->lock);
	ImapfsMessageInfo *info = NULL;
	if ((m = tree_dir_of(tree, ino)) != NULL)
		mailbox_xattrs(m, out);
	else if (tree_decode_message(tree, ino, &m, &uid) &&
		 (info = tree_find_message(m, uid)) != NULL && flags) {
		message_xattrs(m, info, g_steal_pointer(&flags), out);
		ImapfsMessageMeta *meta =
			m->meta ? g_hash_table_lookup(m->meta,
						      GUINT_TO_POINTER(uid))
				: NULL;
		if (meta && meta->emailid)
			add(out, "user.imap.emailid", g_strdup(meta->emailid));
		if (meta)
			envelope_xattrs(&meta->envelope, out);
	} else if (flags)
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
