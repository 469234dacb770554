/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "imapfs/error.h"
#include "imapfs/listing.h"
#include "imapfs/log.h"
#include "imapfs/names.h"
#include "imapfs/tree.h"
#include "tree-private.h"

#define MAX_SLOTS (1u << 24)
/* Listings (LIST, and a mailbox's messages) younger than this are reused
 * by readdir: like sshfs's directory cache, a repeated ls or grep -r costs
 * no command. A name looked up that is not known yet is still checked at
 * once (LOOKUP_FRESH_US). */
#define DIR_FRESH_US (20 * G_TIME_SPAN_SECOND)

static void mailbox_free(gpointer p)
{
	Mailbox *m = p;

	g_free(m->path);
	g_free(m->parent_path);
	g_free(m->file_name);
	g_free(m->server_name);
	g_free(m->special_use);
	if (m->meta)
		g_hash_table_unref(m->meta);
	if (m->binary_sizes)
		g_hash_table_unref(m->binary_sizes);
	if (m->messages)
		g_array_unref(m->messages);
	g_free(m->by_name);
	g_free(m);
}

void imapfs_dir_entry_free(gpointer p)
{
	ImapfsDirEntry *e = p;

	g_free(e->name);
	g_free(e);
}

/* Called locked. */
static Mailbox *add_mailbox(ImapfsTree *tree, const char *path)
{
	Mailbox *m = g_new0(Mailbox, 1);
	const char *slash = strrchr(path, '/');

	m->slot = tree->slots->len;
	m->path = g_strdup(path);
	if (*path)
		m->parent_path =
			slash ? g_strndup(path, slash - path) : g_strdup("");
	m->file_name = g_strdup(slash ? slash + 1 : path);
	m->present = TRUE;
	g_ptr_array_add(tree->slots, m);
	g_hash_table_replace(tree->by_path, m->path, m);
	return m;
}

ImapfsTree *imapfs_tree_new(const ImapfsConfig *cfg, ImapfsPool *pool,
			    ImapfsBlockCache *cache, ImapfsDiskCache *disk)
{
	ImapfsTree *tree = g_new0(ImapfsTree, 1);

	tree->cfg = cfg;
	tree->pool = pool;
	tree->cache = cache;
	tree->disk = disk;
	tree->mount_time = g_get_real_time() / G_USEC_PER_SEC;
	if (cfg->mailbox)
		tree->root_levels = g_strsplit(cfg->mailbox, "/", -1);
	g_mutex_init(&tree->lock);
	tree->slots = g_ptr_array_new_with_free_func(mailbox_free);
	tree->by_path = g_hash_table_new(g_str_hash, g_str_equal);
	tree->corrected = g_hash_table_new_full(g_int64_hash, g_int64_equal,
						g_free, NULL);
	tree->warned =
		g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	tree->pending = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL,
					      tree_pending_free);
	tree->part_nodes = g_hash_table_new_full(g_int64_hash, g_int64_equal,
						 NULL, tree_part_node_free);
	tree->part_keys =
		g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	add_mailbox(tree, "");
	return tree;
}

void imapfs_tree_free(ImapfsTree *tree)
{
	if (tree == NULL)
		return;
	g_hash_table_unref(tree->by_path);
	g_hash_table_unref(tree->corrected);
	g_hash_table_unref(tree->warned);
	g_hash_table_unref(tree->pending);
	g_hash_table_unref(tree->part_keys);
	g_hash_table_unref(tree->part_nodes);
	g_free(tree->trash_name);
	g_ptr_array_unref(tree->slots);
	g_strfreev(tree->root_levels);
	g_mutex_clear(&tree->lock);
	g_free(tree);
}

/* --- inode numbers -----------------------------------------------------------
 */

guint64 tree_dir_ino(const Mailbox *m)
{
	/* The root keeps inode 1 even when a recreated /MAILBOX gave it a
	 * new slot for its messages. */
	return *m->path == '\0' ? IMAPFS_ROOT_INO
				: (guint64)m->slot << SLOT_SHIFT;
}

guint64 tree_message_ino(const Mailbox *m, guint32 uid)
{
	return (guint64)m->slot << SLOT_SHIFT | (guint64)uid << UID_SHIFT |
	       KIND_MESSAGE;
}

/* The directory @ino names, or NULL. Called locked. */
Mailbox *tree_dir_of(ImapfsTree *tree, guint64 ino)
{
	guint64 slot = ino >> SLOT_SHIFT;

	if (ino == IMAPFS_ROOT_INO)
		return g_hash_table_lookup(tree->by_path, "");
	if ((ino & ((G_GUINT64_CONSTANT(1) << SLOT_SHIFT) - 1)) != 0 ||
	    slot == 0 || slot >= tree->slots->len)
		return NULL;
	return tree->slots->pdata[slot];
}

/* The mailbox and UID of message @ino; FALSE if it is not one. */
gboolean tree_decode_message(ImapfsTree *tree, guint64 ino, Mailbox **m_r,
			     guint32 *uid_r)
{
	guint64 slot = ino >> SLOT_SHIFT;

	if ((ino & 0xff) != KIND_MESSAGE || slot >= tree->slots->len)
		return FALSE;
	*m_r = tree->slots->pdata[slot];
	*uid_r = (guint32)(ino >> UID_SHIFT);
	return TRUE;
}

ImapfsMessageInfo *tree_find_message(Mailbox *m, guint32 uid)
{
	return m->messages ? imapfs_listing_find(m->messages, uid) : NULL;
}

void tree_dir_attr(ImapfsTree *tree, const Mailbox *m, ImapfsAttr *attr)
{
	attr->ino = tree_dir_ino(m);
	attr->kind = IMAPFS_NODE_DIR;
	attr->size = 0;
	attr->mtime = tree->mount_time;
}

void tree_message_attr(const Mailbox *m, const ImapfsMessageInfo *info,
		       ImapfsAttr *attr)
{
	attr->ino = tree_message_ino(m, info->uid);
	attr->kind = IMAPFS_NODE_MESSAGE;
	attr->size = info->size;
	attr->mtime = info->internaldate;
}

gboolean tree_fail_noent(GError **error, const char *what)
{
	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_NONEXISTENT,
		    "no such entry \"%s\"", what);
	return FALSE;
}

/* --- the mailbox list
 * ---------------------------------------------------------- */

typedef struct {
	GPtrArray *entries;
	gboolean utf8;
} ListResult;

static gboolean list_func(ImapfsSession *s, gpointer data, GError **error)
{
	ListResult *r = data;

	r->entries = imapfs_session_list(s, "", "*", FALSE, error);
	r->utf8 = imapfs_session_utf8(s);
	return r->entries != NULL;
}

/* Strips the URL's /MAILBOX from @levels; NULL if outside the subtree. */
static char **relative_levels(ImapfsTree *tree, char **levels)
{
	char **root = tree->root_levels;
	guint n = root ? g_strv_length(root) : 0;

	for (guint i = 0; i < n; i++) {
		if (levels[i] == NULL)
			return NULL;
		gboolean inbox =
			i == 0 && g_ascii_strcasecmp(root[0], "INBOX") == 0;
		if (inbox ? g_ascii_strcasecmp(levels[0], "INBOX") != 0
			  : strcmp(levels[i], root[i]) != 0)
			return NULL;
	}
	return g_strdupv(levels + n);
}

static char *levels_to_path(char **levels)
{
	g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);

	for (guint i = 0; levels[i]; i++)
		g_ptr_array_add(names, imapfs_name_escape(levels[i]));
	g_ptr_array_add(names, NULL);
	return g_strjoinv("/", (char **)names->pdata);
}

/* The directory for @path, created (as a bare parent) with its ancestors
 * when missing. Called locked. */
static Mailbox *ensure_dir(ImapfsTree *tree, const char *path)
{
	Mailbox *m = g_hash_table_lookup(tree->by_path, path);

	if (m) {
		m->present = TRUE;
		return m;
	}
	const char *slash = strrchr(path, '/');
	if (slash) {
		g_autofree char *parent = g_strndup(path, slash - path);
		ensure_dir(tree, parent);
	}
	if (tree->slots->len >= MAX_SLOTS)
		return NULL;
	m = add_mailbox(tree, path);
	m->present = TRUE;
	return m;
}

/* LIST is asked again every few seconds: say each problem once. Called
 * locked. */
static void warn_once(ImapfsTree *tree, const char *server_name,
		      const char *why)
{
	if (!g_hash_table_add(tree->warned, g_strdup(server_name)))
		return;
	g_autofree char *q = imapfs_log_quote(server_name);
	g_warning("skipping mailbox \"%s\": %s", q, why);
}

/* Every element of @path fits a file name (NAME_MAX); the kernel would
 * fail the whole readdir otherwise. */
static gboolean names_fit(const char *path)
{
	g_auto(GStrv) names = g_strsplit(path, "/", -1);

	for (guint i = 0; names[i]; i++)
		if (strlen(names[i]) > NAME_MAX)
			return FALSE;
	return TRUE;
}

/* Called locked. */
static void apply_entry(ImapfsTree *tree, const ImapfsListEntry *e,
			gboolean utf8)
{
	g_autoptr(GError) error = NULL;
	g_auto(GStrv) levels =
		imapfs_mailbox_to_levels(e->name, e->delim, utf8, &error);

	if (levels == NULL) {
		warn_once(tree, e->name, error->message);
		return;
	}
	g_auto(GStrv) rel = relative_levels(tree, levels);
	if (rel == NULL)
		return;
	g_autofree char *path = levels_to_path(rel);
	if (!names_fit(path)) {
		warn_once(tree, e->name, "a level is longer than NAME_MAX");
		return;
	}
	Mailbox *m = ensure_dir(tree, path);
	if (m == NULL || (e->flags & IMAPFS_MBOX_NONEXISTENT))
		return;
	g_free(m->server_name);
	m->server_name = g_strdup(e->name);
	m->selectable = !(e->flags & IMAPFS_MBOX_NOSELECT);
	g_free(m->special_use);
	m->special_use = g_strdup(e->special_use);
}

/* What mkdir and rm with delete=trash need: the delimiter, the name
 * encoding, and the \Trash mailbox (which may lie outside a /MAILBOX
 * mount; without the attribute, a top-level "Trash"). Called locked. */
static void learn_namespace(ImapfsTree *tree, ListResult *r)
{
	const char *named = NULL, *flagged = NULL;

	tree->utf8 = r->utf8;
	for (guint i = 0; i < r->entries->len; i++) {
		const ImapfsListEntry *e = r->entries->pdata[i];
		if (e->delim && !tree->delim)
			tree->delim = e->delim;
		if ((e->flags & IMAPFS_MBOX_TRASH) && !flagged)
			flagged = e->name;
		if (g_ascii_strcasecmp(e->name, "Trash") == 0)
			named = e->name;
	}
	g_free(tree->trash_name);
	tree->trash_name = g_strdup(flagged ? flagged : named);
}

/* What a new LIST changed for the kernel: directories that came, went or
 * became (un)selectable, against @was (present | selectable << 1 for
 * each of the @n slots there were before). Called locked. */
static void list_changes(ImapfsTree *tree, const guint8 *was, guint n,
			 GArray *changes)
{
	for (guint i = 1; i < tree->slots->len; i++) {
		Mailbox *m = tree->slots->pdata[i];
		guint8 before = i < n ? was[i] : 0; /* slots added: new */
		guint8 now = m->present | m->selectable << 1;
		if (now == before || m->renewed)
			continue;
		Mailbox *parent =
			g_hash_table_lookup(tree->by_path, m->parent_path);
		guint64 pino = parent ? tree_dir_ino(parent) : 0;
		if ((before & 1) && !m->present)
			tree_change(changes, IMAPFS_CHANGE_GONE, pino,
				    tree_dir_ino(m), m->file_name);
		else
			tree_change(changes, IMAPFS_CHANGE_DIR, 0,
				    tree_dir_ino(m), NULL);
		if (pino)
			tree_change(changes, IMAPFS_CHANGE_DIR, 0, pino, NULL);
	}
}

static gboolean apply_list(ImapfsTree *tree, ListResult *r, GError **error)
{
	g_autoptr(GArray) changes = tree_changes_new();
	gboolean found;

	g_mutex_lock(&tree->lock);
	guint n = tree->slots->len;
	g_autofree guint8 *was = g_new(guint8, n);
	/* What LIST no longer says must not linger: a deleted parent of a
	 * remaining child is a bare directory again. */
	for (guint i = 0; i < n; i++) {
		Mailbox *m = tree->slots->pdata[i];
		was[i] = m->present | m->selectable << 1;
		if (*m->path)
			m->present = FALSE;
		g_clear_pointer(&m->server_name, g_free);
		g_clear_pointer(&m->special_use, g_free);
		m->selectable = FALSE;
	}
	for (guint i = 0; i < r->entries->len; i++)
		apply_entry(tree, r->entries->pdata[i], r->utf8);
	learn_namespace(tree, r);
	list_changes(tree, was, n, changes);
	/* With /MAILBOX, the root must be that mailbox or its parent. */
	Mailbox *root = g_hash_table_lookup(tree->by_path, "");
	found = tree->root_levels == NULL || root->server_name != NULL;
	for (guint i = 1; !found && i < tree->slots->len; i++)
		found = ((Mailbox *)tree->slots->pdata[i])->present;
	tree->listed_at = g_get_monotonic_time();
	g_mutex_unlock(&tree->lock);
	tree_changes_emit(tree, g_steal_pointer(&changes));
	if (!found)
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_NONEXISTENT,
			    "mailbox \"%s\" does not exist on \"%s\"",
			    tree->cfg->mailbox, tree->cfg->host);
	return found;
}

gboolean tree_apply_list(ImapfsTree *tree, GPtrArray *entries, gboolean utf8,
			 GError **error)
{
	ListResult r = {entries, utf8};

	return apply_list(tree, &r, error);
}

gboolean imapfs_tree_load(ImapfsTree *tree, GError **error)
{
	ListResult r = {0};
	gboolean ok;

	if (!imapfs_pool_run(tree->pool, NULL, 0, TRUE, list_func, &r, error))
		return FALSE;
	ok = apply_list(tree, &r, error);
	g_ptr_array_unref(r.entries);
	return ok;
}

/* Whether a refresh that failed with @error may be answered from what
 * the tree already has: the server could not be reached. Frees @error
 * then (the cause was logged when the pool went offline). */
static gboolean serve_cached(GError **error, GError *local)
{
	if (!imapfs_error_is_connection(local)) {
		g_propagate_error(error, local);
		return FALSE;
	}
	imapfs_trace(IMAPFS_TRACE_POOL, "serving a cached listing: %s",
		     local->message);
	g_error_free(local);
	return TRUE;
}

static gboolean refresh_list(ImapfsTree *tree, GError **error)
{
	ListResult r = {0};
	GError *local = NULL;

	g_mutex_lock(&tree->lock);
	gboolean fresh =
		g_get_monotonic_time() - tree->listed_at < DIR_FRESH_US;
	g_mutex_unlock(&tree->lock);
	if (fresh)
		return TRUE;
	if (!imapfs_pool_run_cached(tree->pool, NULL, 0, list_func, &r, &local))
		return serve_cached(error, local);
	gboolean ok = apply_list(tree, &r, error);
	g_ptr_array_unref(r.entries);
	return ok;
}

/* --- message listings
 * ------------------------------------------------------------ */

typedef struct {
	char *server_name;
	ImapfsListingBase base;
	GArray *loaded; /* a listing read from the disk cache, or NULL */
	ImapfsMailboxState loaded_state;
	ImapfsListingDelta *delta;
	guint changes; /* the mailbox's count of changes when it began */
} IndexResult;

static gboolean index_func(ImapfsSession *s, gpointer data, GError **error)
{
	IndexResult *r = data;

	g_clear_pointer(&r->delta, imapfs_listing_delta_free);
	r->delta = imapfs_listing_refresh(s, r->server_name, &r->base, error);
	return r->delta != NULL;
}

/* A mailbox recreated on the server gets a new slot, so no inode number
 * ever names two messages. Called locked; returns the current mailbox. */
static Mailbox *renew_slot(ImapfsTree *tree, Mailbox *old)
{
	if (tree->slots->len >= MAX_SLOTS)
		return old;
	Mailbox *m = add_mailbox(tree, old->path);
	m->server_name = g_strdup(old->server_name);
	m->selectable = old->selectable;
	m->special_use = g_strdup(old->special_use);
	m->changes = old->changes;
	m->used_at = old->used_at;
	old->present = FALSE;
	old->renewed = TRUE;
	g_clear_pointer(&old->messages, g_array_unref);
	return m;
}

/* The kernel must forget the old mailbox's names and data: its directory
 * has a new inode number now (the mount root excepted, whose messages go
 * one by one), and files still open must fail rather than go on reading
 * pages the kernel kept. Called locked, before renew_slot(). */
static void renewal_changes(ImapfsTree *tree, Mailbox *old, GArray *changes)
{
	for (guint i = 0; old->messages && i < old->messages->len; i++) {
		guint32 uid =
			g_array_index(old->messages, ImapfsMessageInfo, i).uid;
		tree_change(changes, IMAPFS_CHANGE_STALE, 0,
			    tree_message_ino(old, uid), NULL);
		if (*old->path == '\0')
			tree_change_message_gone(tree, old, uid, changes);
	}
	Mailbox *parent = *old->path ? g_hash_table_lookup(tree->by_path,
							   old->parent_path)
				     : NULL;
	if (parent == NULL)
		return;
	tree_change(changes, IMAPFS_CHANGE_ENTRY, tree_dir_ino(parent), 0,
		    old->file_name);
	tree_change(changes, IMAPFS_CHANGE_DIR, 0, tree_dir_ino(parent), NULL);
}

typedef struct {
	ImapfsTree *tree;
	Mailbox *m;
	GArray *changes;
} ListingReport;

static void on_listing_change(guint32 uid, ImapfsListingChange what,
			      gpointer data)
{
	ListingReport *r = data;

	if (what == IMAPFS_LISTING_REMOVED)
		tree_change_message_gone(r->tree, r->m, uid, r->changes);
	else if (what == IMAPFS_LISTING_FLAGS)
		tree_change(r->changes, IMAPFS_CHANGE_ATTR, 0,
			    tree_message_ino(r->m, uid), NULL);
}

/* A refreshed listing brings RFC822.SIZE back: apply what the data
 * showed instead. Called locked. */
static void reapply_corrections(ImapfsTree *tree, Mailbox *m)
{
	GHashTableIter iter;
	guint64 *known;

	g_hash_table_iter_init(&iter, tree->corrected);
	while (g_hash_table_iter_next(&iter, (gpointer *)&known, NULL)) {
		if (known[0] >> SLOT_SHIFT != m->slot)
			continue;
		ImapfsMessageInfo *info =
			tree_find_message(m, (guint32)(known[0] >> UID_SHIFT));
		if (info)
			info->size = known[1];
	}
}

/* Installs a listing read from disk as if it had been fetched, so the
 * delta (computed against it) applies. Called locked. */
static void install_loaded(Mailbox *m, IndexResult *r)
{
	if (r->loaded == NULL || m->messages != NULL ||
	    imapfs_listing_delta_is_full(r->delta))
		return;
	m->messages = g_steal_pointer(&r->loaded);
	m->state = r->loaded_state;
}

/* Applies the refresh; returns the listing to save to disk (or NULL when
 * nothing changed). Called locked. */
static GBytes *apply_index_locked(ImapfsTree *tree, Mailbox *m, IndexResult *r,
				  guint32 *dropped_r, GArray *changes)
{
	const ImapfsMailboxState *state = imapfs_listing_delta_state(r->delta);
	gboolean from_disk = r->loaded != NULL;

	/* Blocks cached under an older UIDVALIDITY are another mailbox's. */
	if (from_disk && r->loaded_state.uidvalidity != state->uidvalidity)
		*dropped_r = r->loaded_state.uidvalidity;
	install_loaded(m, r);
	if (m->messages && m->state.uidvalidity != state->uidvalidity) {
		*dropped_r = m->state.uidvalidity;
		renewal_changes(tree, m, changes);
		m = renew_slot(tree, m);
	}
	ListingReport report = {tree, m, changes};
	gboolean changed = imapfs_listing_delta_apply(
		r->delta, &m->messages, on_listing_change, &report);
	if (imapfs_listing_delta_is_full(r->delta))
		reapply_corrections(tree, m);
	changed |= from_disk || m->state.uidvalidity != state->uidvalidity ||
		   m->state.uidnext != state->uidnext ||
		   m->state.exists != state->exists ||
		   m->state.highestmodseq != state->highestmodseq;
	m->state = *state;
	/* A change made meanwhile may not be in what the server said. */
	m->listed_at = m->changes == r->changes ? g_get_monotonic_time() : 0;
	g_clear_pointer(&m->by_name, g_free);
	if (changed && !from_disk)
		tree_change(changes, IMAPFS_CHANGE_DIR, 0, tree_dir_ino(m),
			    NULL);
	if (!changed || tree->disk == NULL || m->messages == NULL)
		return NULL;
	return imapfs_listing_serialize(&m->state, m->messages);
}

static void apply_index(ImapfsTree *tree, const char *path, IndexResult *r)
{
	g_autoptr(GBytes) save = NULL;
	GArray *changes = tree_changes_new();
	guint32 dropped = 0;

	g_mutex_lock(&tree->lock);
	Mailbox *m = g_hash_table_lookup(tree->by_path, path);
	if (m)
		save = apply_index_locked(tree, m, r, &dropped, changes);
	g_mutex_unlock(&tree->lock);
	tree_changes_emit(tree, changes);
	/* Disk work outside the tree lock. */
	if (dropped)
		imapfs_block_cache_drop_mailbox(
			tree->cache, r->server_name,
			imapfs_listing_delta_state(r->delta)->uidvalidity);
	if (save)
		imapfs_disk_cache_put_meta(tree->disk, r->server_name, save);
}

/* The listing saved by an earlier mount, if the mailbox has none yet. */
static void load_saved(ImapfsTree *tree, IndexResult *r)
{
	if (tree->disk == NULL || r->base.have)
		return;
	g_autoptr(GBytes) bytes =
		imapfs_disk_cache_get_meta(tree->disk, r->server_name);
	if (bytes == NULL)
		return;
	r->loaded = imapfs_listing_deserialize(bytes, &r->loaded_state);
	if (r->loaded)
		imapfs_listing_base(&r->base, &r->loaded_state, r->loaded);
}

void tree_mark_stale(Mailbox *m)
{
	m->listed_at = 0;
	m->changes++;
}

/* Makes sure the listing of the mailbox at @path is at most @max_age_us
 * old (0: ask the server in any case). */
gboolean tree_refresh_messages(ImapfsTree *tree, const char *path,
			       gint64 max_age_us, GError **error)
{
	IndexResult r = {0};

	g_mutex_lock(&tree->lock);
	Mailbox *m = g_hash_table_lookup(tree->by_path, path);
	gboolean skip = m == NULL || !m->selectable || m->server_name == NULL ||
			(m->messages && max_age_us > 0 &&
			 g_get_monotonic_time() - m->listed_at < max_age_us);
	/* A listing to fall back on while the server is unreachable. */
	gboolean cached = m && m->messages && max_age_us > 0;
	if (!skip) {
		r.server_name = g_strdup(m->server_name);
		r.changes = m->changes;
		imapfs_listing_base(&r.base, &m->state, m->messages);
	}
	g_mutex_unlock(&tree->lock);
	if (skip)
		return TRUE;
	load_saved(tree, &r);
	/* index_func EXAMINEs by itself: that is how it learns whether the
	 * mailbox changed, so the pool must not select it first. */
	GError *local = NULL;
	gboolean ok = cached ? imapfs_pool_run_cached(tree->pool, NULL, 0,
						      index_func, &r, &local)
			     : imapfs_pool_run(tree->pool, NULL, 0, TRUE,
					       index_func, &r, &local);
	if (ok)
		apply_index(tree, path, &r);
	else if (cached)
		ok = serve_cached(error, local);
	else
		g_propagate_error(error, local);
	if (r.loaded)
		g_array_unref(r.loaded);
	imapfs_listing_delta_free(r.delta);
	g_free(r.server_name);
	return ok;
}

static gboolean fail_message(Mailbox *m, guint32 uid, GError **error);

/* --- operations
 * ------------------------------------------------------------------- */

gboolean imapfs_tree_getattr(ImapfsTree *tree, guint64 ino, ImapfsAttr *attr,
			     GError **error)
{
	Mailbox *m;
	guint32 uid;
	gboolean ok = FALSE;

	g_mutex_lock(&tree->lock);
	if ((m = tree_dir_of(tree, ino)) != NULL) {
		tree_dir_attr(tree, m, attr);
		ok = TRUE;
	} else if (tree_decode_message(tree, ino, &m, &uid)) {
		ImapfsMessageInfo *info = tree_find_message(m, uid);
		if (info)
			tree_message_attr(m, info, attr);
		ok = info != NULL;
		/* An open file of a recreated mailbox: ESTALE, not ENOENT. */
		if (!ok && m->renewed) {
			fail_message(m, uid, error);
			g_mutex_unlock(&tree->lock);
			return FALSE;
		}
	} else if (tree_is_part(ino))
		ok = tree_part_getattr_locked(tree, ino, attr);
	else
		ok = tree_pending_getattr_locked(tree, ino, attr);
	g_mutex_unlock(&tree->lock);
	return ok || tree_fail_noent(error, "inode");
}

gboolean tree_parse_uid_name(const char *name, const char *suffix,
			     guint32 *uid_r)
{
	char *end = NULL;

	if (!g_ascii_isdigit(name[0]) || name[0] == '0')
		return FALSE;
	guint64 v = g_ascii_strtoull(name, &end, 10);
	if (g_strcmp0(end, suffix) != 0 || v == 0 || v > G_MAXUINT32)
		return FALSE;
	*uid_r = (guint32)v;
	return TRUE;
}

gboolean tree_parse_message_name(const char *name, guint32 *uid_r)
{
	return tree_parse_uid_name(name, ".eml", uid_r);
}

char *tree_child_path(const Mailbox *parent, const char *name)
{
	return *parent->path ? g_strconcat(parent->path, "/", name, NULL)
			     : g_strdup(name);
}

/* Looks @name up among what is already known. Called locked. */
gboolean tree_lookup_locked(ImapfsTree *tree, Mailbox *dir, const char *name,
			    ImapfsAttr *attr)
{
	g_autofree char *path = tree_child_path(dir, name);
	Mailbox *child = g_hash_table_lookup(tree->by_path, path);
	guint32 uid;

	if (child && child->present) {
		tree_dir_attr(tree, child, attr);
		return TRUE;
	}
	ImapfsMessageInfo *info = tree_parse_message_name(name, &uid)
					  ? tree_find_message(dir, uid)
					  : NULL;
	if (info)
		tree_message_attr(dir, info, attr);
	else if (tree->cfg->parts && tree_parse_parts_name(name, &uid) &&
		 (info = tree_find_message(dir, uid)) != NULL)
		tree_parts_dir_attr(dir, info, attr);
	return info != NULL ||
	       tree_pending_lookup_locked(tree, dir, name, attr);
}

gboolean imapfs_tree_lookup(ImapfsTree *tree, guint64 parent, const char *name,
			    ImapfsAttr *attr, GError **error)
{
	g_autofree char *path = NULL;
	gboolean found = FALSE;

	if (tree_is_part(parent))
		return tree_part_lookup(tree, parent, name, attr, error);
	g_mutex_lock(&tree->lock);
	Mailbox *dir = tree_dir_of(tree, parent);
	if (dir) {
		path = g_strdup(dir->path);
		found = tree_lookup_locked(tree, dir, name, attr);
	}
	g_mutex_unlock(&tree->lock);
	/* Only a message name can be news from the server; child mailboxes
	 * come from LIST, and other names never exist. */
	guint32 uid;
	if (dir == NULL || found ||
	    !(tree_parse_message_name(name, &uid) ||
	      (tree->cfg->parts && tree_parse_parts_name(name, &uid))))
		return found || tree_fail_noent(error, name);
	/* Not known yet: a message may have arrived, or the listing was
	 * never loaded. */
	if (!tree_refresh_messages(tree, path, LOOKUP_FRESH_US, error))
		return FALSE;
	g_mutex_lock(&tree->lock);
	dir = g_hash_table_lookup(tree->by_path, path);
	found = dir && tree_lookup_locked(tree, dir, name, attr);
	g_mutex_unlock(&tree->lock);
	return found || tree_fail_noent(error, name);
}

void tree_add_entry(GPtrArray *out, char *name, const ImapfsAttr *attr)
{
	ImapfsDirEntry *e = g_new(ImapfsDirEntry, 1);

	e->name = name;
	e->attr = *attr;
	g_ptr_array_add(out, e);
}

/* Called locked. */
static GPtrArray *snapshot(ImapfsTree *tree, Mailbox *dir)
{
	GPtrArray *out = g_ptr_array_new_with_free_func(imapfs_dir_entry_free);
	g_autoptr(GHashTable) names = g_hash_table_new(g_str_hash, g_str_equal);
	ImapfsAttr attr;

	for (guint i = 1; i < tree->slots->len; i++) {
		Mailbox *c = tree->slots->pdata[i];
		if (!c->present || g_strcmp0(c->parent_path, dir->path) != 0)
			continue;
		tree_dir_attr(tree, c, &attr);
		tree_add_entry(out, g_strdup(c->file_name), &attr);
		g_hash_table_add(names, c->file_name);
	}
	for (guint i = 0; dir->messages && i < dir->messages->len; i++) {
		ImapfsMessageInfo *info =
			&g_array_index(dir->messages, ImapfsMessageInfo, i);
		char *name = g_strdup_printf("%u.eml", info->uid);
		/* A child mailbox called "5.eml" hides message 5. */
		if (g_hash_table_contains(names, name)) {
			g_free(name);
			continue;
		}
		tree_message_attr(dir, info, &attr);
		tree_add_entry(out, name, &attr);
		name = g_strdup_printf("%u.parts", info->uid);
		if (!tree->cfg->parts || g_hash_table_contains(names, name)) {
			g_free(name);
			continue;
		}
		tree_parts_dir_attr(dir, info, &attr);
		tree_add_entry(out, name, &attr);
	}
	tree_pending_list_locked(tree, dir, out, names);
	return out;
}

GPtrArray *imapfs_tree_readdir(ImapfsTree *tree, guint64 ino, GError **error)
{
	g_autofree char *path = NULL;

	if (tree_is_part(ino))
		return tree_part_readdir(tree, ino, error);
	g_mutex_lock(&tree->lock);
	Mailbox *dir = tree_dir_of(tree, ino);
	if (dir && dir->present)
		path = g_strdup(dir->path);
	g_mutex_unlock(&tree->lock);
	if (path == NULL) {
		tree_fail_noent(error, "directory");
		return NULL;
	}
	if (!refresh_list(tree, error) ||
	    !tree_refresh_messages(tree, path, DIR_FRESH_US, error))
		return NULL;
	g_mutex_lock(&tree->lock);
	dir = g_hash_table_lookup(tree->by_path, path);
	if (dir)
		dir->used_at = g_get_monotonic_time();
	GPtrArray *out = dir ? snapshot(tree, dir) : NULL;
	g_mutex_unlock(&tree->lock);
	if (out == NULL)
		tree_fail_noent(error, path);
	return out;
}

/* Why message @m/@uid cannot be read. Called locked. */
static gboolean fail_message(Mailbox *m, guint32 uid, GError **error)
{
	if (m && m->renewed) {
		g_set_error(error, IMAPFS_ERROR,
			    IMAPFS_ERROR_UIDVALIDITY_CHANGED,
			    "message \"%u.eml\": its mailbox was recreated on "
			    "the server (new UIDVALIDITY)",
			    uid);
		return FALSE;
	}
	return tree_fail_noent(error, "message");
}

/*
 * Fills @key with a copy of the mailbox name (a LIST refresh may replace
 * the mailbox's own) for the caller to free, and the listed size. With
 * @gone_r, a message expunged since (by another client) still gets its
 * key, and *@gone_r set: an open file keeps reading what the cache holds.
 * A message of a mailbox recreated since fails with UIDVALIDITY_CHANGED.
 */
static gboolean message_key(ImapfsTree *tree, guint64 ino,
			    ImapfsMessageKey *key, guint64 *size_r,
			    gboolean *checked_r, gboolean *gone_r,
			    GError **error)
{
	Mailbox *m = NULL;
	ImapfsMessageInfo *info = NULL;
	gboolean ok = FALSE;

	g_mutex_lock(&tree->lock);
	if (tree_decode_message(tree, ino, &m, &key->uid) && !m->renewed) {
		info = tree_find_message(m, key->uid);
		ok = info != NULL || (gone_r && m->server_name && m->messages);
	}
	if (ok) {
		key->mailbox = g_strdup(m->server_name);
		key->uidvalidity = m->state.uidvalidity;
		if (size_r)
			*size_r = info ? info->size : 0;
		if (checked_r)
			*checked_r = info && info->checked;
		if (gone_r)
			*gone_r = info == NULL;
	} else
		fail_message(m, key->uid, error);
	g_mutex_unlock(&tree->lock);
	return ok;
}

/* Remembers the size the data showed; returns whether an earlier open
 * had already found RFC822.SIZE wrong. */
static gboolean correct_size(ImapfsTree *tree, guint64 ino, guint64 listed,
			     guint64 size)
{
	Mailbox *m;
	guint32 uid;

	g_mutex_lock(&tree->lock);
	guint64 *known = g_hash_table_lookup(tree->corrected, &ino);
	gboolean before = known != NULL;
	if (size != listed && !before) {
		known = g_new(guint64, 2);
		known[0] = ino;
		g_hash_table_insert(tree->corrected, known, known);
	}
	if (known)
		known[1] = size;
	if (tree_decode_message(tree, ino, &m, &uid)) {
		ImapfsMessageInfo *info = tree_find_message(m, uid);
		if (info) {
			info->size = size;
			info->checked = TRUE;
		}
	}
	g_mutex_unlock(&tree->lock);
	return before;
}

/* --- prefetch across messages ----------------------------------------------
 */

enum { ORDER_UID, ORDER_NAME };
/* Opens that must follow on before prefetch starts, and how far ahead
 * it then reaches (in messages), doubling with every further one. */
#define PREFETCH_AFTER 1
#define PREFETCH_FIRST 32
#define PREFETCH_MOST 512

static guint digits(guint32 v)
{
	guint n = 1;

	while (v >= 10) {
		v /= 10;
		n++;
	}
	return n;
}

/* Compares "<a>.eml" with "<b>.eml" as strcmp would, without printing:
 * a shorter number that is a prefix of the longer sorts first. */
static int cmp_names(guint32 a, guint32 b)
{
	guint da = digits(a), db = digits(b);
	guint64 x = a, y = b;

	for (guint i = da; i < db; i++)
		x *= 10;
	for (guint i = db; i < da; i++)
		y *= 10;
	if (x != y)
		return x < y ? -1 : 1;
	return da < db ? -1 : da > db;
}

static gint cmp_names_qsort(gconstpointer a, gconstpointer b)
{
	return cmp_names(*(const guint32 *)a, *(const guint32 *)b);
}

/* Called locked. */
static void build_by_name(Mailbox *m)
{
	guint n = m->messages->len;

	m->by_name = g_new(guint32, MAX(n, 1));
	for (guint i = 0; i < n; i++)
		m->by_name[i] =
			g_array_index(m->messages, ImapfsMessageInfo, i).uid;
	qsort(m->by_name, n, sizeof(guint32), cmp_names_qsort);
}

/* Where @uid stands in @order, or -1. Called locked. */
static gint64 order_index(Mailbox *m, int order, guint32 uid)
{
	if (order == ORDER_UID) {
		ImapfsMessageInfo *info = tree_find_message(m, uid);
		return info ? info - &g_array_index(m->messages,
						    ImapfsMessageInfo, 0)
			    : -1;
	}
	if (m->by_name == NULL)
		build_by_name(m);
	guint lo = 0, hi = m->messages->len;
	while (lo < hi) {
		guint mid = lo + (hi - lo) / 2;
		int c = cmp_names(m->by_name[mid], uid);
		if (c == 0)
			return mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

static const ImapfsMessageInfo *order_nth(Mailbox *m, int order, guint i)
{
	if (order == ORDER_UID)
		return &g_array_index(m->messages, ImapfsMessageInfo, i);
	return tree_find_message(m, m->by_name[i]);
}

/* Whether opening @uid follows on from the last open, in either order
 * (a skipped message or two still counts: grep -l may not read all). */
static gboolean follows_on(Mailbox *m, guint32 uid, gint64 *index_r)
{
	int orders[2] = {m->order, !m->order};

	for (guint k = 0; k < 2 && m->last_uid; k++) {
		gint64 i = order_index(m, orders[k], uid);
		gint64 j = order_index(m, orders[k], m->last_uid);
		if (i >= 0 && j >= 0 && i > j && i <= j + 3) {
			m->order = orders[k];
			*index_r = i;
			return TRUE;
		}
	}
	return FALSE;
}

/*
 * Notes that message @uid of @m is being opened and, when opens follow
 * on in listing order, fills @items with the next messages to prefetch
 * (only when half of what was asked before is used up). Called locked.
 */
static void plan_prefetch(Mailbox *m, guint32 uid, GArray *items)
{
	gint64 i = -1;

	if (m->messages == NULL)
		return;
	m->streak = follows_on(m, uid, &i) ? m->streak + 1 : 0;
	m->last_uid = uid;
	if (m->streak < PREFETCH_AFTER) {
		m->ahead_uid = 0;
		return;
	}
	guint window = PREFETCH_FIRST << MIN(m->streak - PREFETCH_AFTER, 6);
	window = MIN(window, PREFETCH_MOST);
	gint64 ahead =
		m->ahead_uid ? order_index(m, m->order, m->ahead_uid) : -1;
	if (ahead > i + (gint64)window / 2)
		return;
	gint64 from = MAX(i + 1, ahead + 1);
	gint64 to = MIN(i + (gint64)window, (gint64)m->messages->len - 1);
	for (gint64 k = from; k <= to; k++) {
		const ImapfsMessageInfo *info = order_nth(m, m->order, k);
		ImapfsPrefetchItem item = {info->uid, info->size};
		/* Read before in this mount: the kernel keeps its pages. */
		if (!info->checked)
			g_array_append_val(items, item);
	}
	if (from <= to)
		m->ahead_uid = order_nth(m, m->order, to)->uid;
}

static void prefetch_after(ImapfsTree *tree, guint64 ino)
{
	g_autoptr(GArray) items =
		g_array_new(FALSE, FALSE, sizeof(ImapfsPrefetchItem));
	g_autofree char *server_name = NULL;
	guint32 uidvalidity = 0, uid;
	Mailbox *m;

	guint32 planned = 0;

	g_mutex_lock(&tree->lock);
	if (tree_decode_message(tree, ino, &m, &uid)) {
		m->opened++;
		m->used_at = g_get_monotonic_time();
		plan_prefetch(m, uid, items);
		planned = m->ahead_uid;
		server_name = g_strdup(m->server_name);
		uidvalidity = m->state.uidvalidity;
	}
	g_mutex_unlock(&tree->lock);
	if (items->len == 0 || server_name == NULL)
		return;
	guint queued = imapfs_block_cache_prefetch(
		tree->cache, server_name, uidvalidity,
		(ImapfsPrefetchItem *)(void *)items->data, items->len);
	if (queued == items->len)
		return;
	/* Over budget: ask again for the rest on a later open. */
	g_mutex_lock(&tree->lock);
	if (m->ahead_uid == planned)
		m->ahead_uid = queued ? g_array_index(items, ImapfsPrefetchItem,
						      queued - 1)
						.uid
				      : 0;
	g_mutex_unlock(&tree->lock);
}

gboolean imapfs_tree_open(ImapfsTree *tree, guint64 ino, guint64 *size_r,
			  gboolean *changed_r, GError **error)
{
	ImapfsMessageKey key = {0};
	guint64 listed;
	gboolean checked;

	if (tree_is_part(ino))
		return tree_part_open(tree, ino, size_r, changed_r, error);
	if (!message_key(tree, ino, &key, &listed, &checked, NULL, error))
		return FALSE;
	g_autofree char *name = (char *)key.mailbox;
	prefetch_after(tree, ino);
	/* Opened before in this mount: its size is known, and the kernel
	 * most likely still holds its pages. */
	if (checked) {
		*size_r = listed;
		g_mutex_lock(&tree->lock);
		*changed_r = g_hash_table_contains(tree->corrected, &ino);
		g_mutex_unlock(&tree->lock);
		return TRUE;
	}
	if (!imapfs_block_cache_size(tree->cache, &key, listed, size_r, error))
		return FALSE;
	/* The kernel may still hold RFC822.SIZE from the listing, so a size
	 * once found wrong stays "changed" for every later open. */
	gboolean before = correct_size(tree, ino, listed, *size_r);
	*changed_r = before || *size_r != listed;
	if (*size_r != listed) {
		g_autofree char *q = imapfs_log_quote(key.mailbox);
		g_warning("message \"%u.eml\" in \"%s\": the server said "
			  "%" G_GUINT64_FORMAT
			  " bytes but sent %" G_GUINT64_FORMAT,
			  key.uid, q, listed, *size_r);
	}
	return TRUE;
}

gssize imapfs_tree_read(ImapfsTree *tree, guint64 ino, guint64 offset,
			gsize len, char *buf, ImapfsReadahead *ra,
			GError **error)
{
	ImapfsMessageKey key = {0};

	if (imapfs_tree_is_pending(tree, ino))
		return tree_pending_read(tree, ino, offset, len, buf, error);
	if (tree_is_part(ino))
		return tree_part_read(tree, ino, offset, len, buf, error);
	gboolean gone;
	if (!message_key(tree, ino, &key, NULL, NULL, &gone, error))
		return -1;
	g_autofree char *name = (char *)key.mailbox;
	g_autoptr(GError) local = NULL;
	gssize n = imapfs_block_cache_read(tree->cache, &key, offset, len, buf,
					   ra, &local);
	/* Expunged by another client while open: what was cached is still
	 * served, the rest is an I/O error, never some other message. */
	if (n < 0 && gone &&
	    g_error_matches(local, IMAPFS_ERROR, IMAPFS_ERROR_NONEXISTENT))
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_FAILED,
			    "message \"%u.eml\" was expunged on the server",
			    key.uid);
	else if (n < 0)
		g_propagate_error(error, g_steal_pointer(&local));
	return n;
}

guint64 imapfs_tree_dir_reads(ImapfsTree *tree, guint64 ino)
{
	g_mutex_lock(&tree->lock);
	Mailbox *m = tree_dir_of(tree, ino);
	guint64 n = m ? m->opened : 0;
	g_mutex_unlock(&tree->lock);
	return n;
}
