/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The tree's changes: new messages, moves, deletes, mailboxes, flags. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imapfs/error.h"
#include "imapfs/log.h"
#include "imapfs/names.h"
#include "tree-private.h"

/* How long the name a new message was written under stays reachable
 * after its last close: long enough for rsync to rename its temporary
 * file, short enough that a second cp of the same name finds it gone. */
#define ALIAS_TTL_US (10 * G_TIME_SPAN_SECOND)
/* Most messages being written at once: each holds a file descriptor. */
#define PENDING_MAX 512
#define COPY_CHUNK (256 * 1024)

/* A new message being written, then, for ALIAS_TTL_US, the name it was
 * written under. All fields protected by tree->lock except @fd's
 * contents, which only one writer changes at a time (the kernel orders
 * writes to one file). */
struct Pending {
	guint64 ino; /* the hash key */
	char *path;  /* its directory */
	char *name;  /* NULL once renamed or stored with its name dropped */
	int fd;	     /* private temporary file */
	guint64 size;
	gint64 mtime; /* set before close: the INTERNALDATE; -1: none */
	char *flags;  /* set before close: its flags; NULL: none */
	guint opens;
	gboolean dirty;	     /* holds bytes not stored yet */
	gboolean busy;	     /* being stored right now */
	gboolean stored;     /* on the server */
	gboolean dropped;    /* unlinked while open: never store */
	gboolean failed;     /* a store failed, and close() said so */
	guint32 uid;	     /* once stored, when the server said (UIDPLUS) */
	guint32 uidvalidity; /* the mailbox's, as APPENDUID/COPYUID said */
	gint64 expires;	     /* monotonic; 0 while open */
	/* A whole message copied with copy_file_range, stored by UID COPY. */
	ImapfsMessageKey copy;
	guint64 copy_size;
};

void tree_pending_free(gpointer p)
{
	Pending *pd = p;

	if (pd->fd >= 0)
		close(pd->fd);
	g_free(pd->path);
	g_free(pd->name);
	g_free(pd->flags);
	g_free((char *)pd->copy.mailbox);
	g_free(pd);
}

static gboolean fail(GError **error, ImapfsErrorCode code, const char *what,
		     const char *why)
{
	g_set_error(error, IMAPFS_ERROR, code, "%s: %s", what, why);
	return FALSE;
}

static gboolean check_writable(ImapfsTree *tree, GError **error)
{
	if (!tree->cfg->read_only)
		return TRUE;
	return fail(error, IMAPFS_ERROR_READONLY, "change refused",
		    "the file system is mounted read-only");
}

/* --- pending files: the namespace side (called locked) --------------------
 */

static gboolean expired(const Pending *pd, gint64 now)
{
	return pd->expires && now >= pd->expires;
}

/* Forgets aliases whose time is up. Called locked. */
static void sweep(ImapfsTree *tree)
{
	GHashTableIter iter;
	Pending *pd;
	gint64 now = g_get_monotonic_time();

	g_hash_table_iter_init(&iter, tree->pending);
	while (g_hash_table_iter_next(&iter, NULL, (gpointer *)&pd))
		if (expired(pd, now))
			g_hash_table_iter_remove(&iter);
}

static Pending *pending_of(ImapfsTree *tree, guint64 ino)
{
	Pending *pd = g_hash_table_lookup(tree->pending, &ino);

	return pd && !expired(pd, g_get_monotonic_time()) ? pd : NULL;
}

static Pending *pending_named(ImapfsTree *tree, const char *path,
			      const char *name)
{
	GHashTableIter iter;
	Pending *pd;
	gint64 now = g_get_monotonic_time();

	g_hash_table_iter_init(&iter, tree->pending);
	while (g_hash_table_iter_next(&iter, NULL, (gpointer *)&pd))
		if (pd->name && !expired(pd, now) &&
		    strcmp(pd->path, path) == 0 && strcmp(pd->name, name) == 0)
			return pd;
	return NULL;
}

static void pending_attr(const Pending *pd, ImapfsAttr *attr)
{
	attr->ino = pd->ino;
	attr->kind = IMAPFS_NODE_PENDING;
	attr->size = pd->copy.uid && !pd->dirty ? pd->copy_size : pd->size;
	attr->mtime =
		pd->mtime >= 0 ? pd->mtime : g_get_real_time() / G_USEC_PER_SEC;
}

gboolean tree_pending_lookup_locked(ImapfsTree *tree, Mailbox *dir,
				    const char *name, ImapfsAttr *attr)
{
	/* Lookups come often enough to let expired names (and their
	 * temporary files) go without a timer. */
	sweep(tree);
	Pending *pd = pending_named(tree, dir->path, name);

	if (pd)
		pending_attr(pd, attr);
	return pd != NULL;
}

gboolean tree_pending_getattr_locked(ImapfsTree *tree, guint64 ino,
				     ImapfsAttr *attr)
{
	Pending *pd = pending_of(tree, ino);

	if (pd)
		pending_attr(pd, attr);
	return pd != NULL;
}

void tree_pending_list_locked(ImapfsTree *tree, Mailbox *dir, GPtrArray *out,
			      GHashTable *names)
{
	GHashTableIter iter;
	Pending *pd;
	ImapfsAttr attr;

	/* A file being written shows, as on any file system; once stored it
	 * shows as <UID>.eml instead. */
	g_hash_table_iter_init(&iter, tree->pending);
	while (g_hash_table_iter_next(&iter, NULL, (gpointer *)&pd)) {
		guint32 uid;
		if (pd->stored || pd->name == NULL || pd->opens == 0 ||
		    strcmp(pd->path, dir->path) != 0 ||
		    g_hash_table_contains(names, pd->name) ||
		    (tree_parse_message_name(pd->name, &uid) &&
		     tree_find_message(dir, uid)))
			continue;
		pending_attr(pd, &attr);
		tree_add_entry(out, g_strdup(pd->name), &attr);
	}
}

gssize tree_pending_read(ImapfsTree *tree, guint64 ino, guint64 offset,
			 gsize len, char *buf, GError **error)
{
	g_mutex_lock(&tree->lock);
	Pending *pd = pending_of(tree, ino);
	int fd = pd ? dup(pd->fd) : -1;
	gboolean copied = pd && pd->copy.uid && !pd->dirty;
	ImapfsMessageKey copy = {0};
	if (copied) {
		copy = pd->copy;
		copy.mailbox = g_strdup(pd->copy.mailbox);
	}
	g_mutex_unlock(&tree->lock);
	if (pd == NULL || fd < 0) {
		if (fd >= 0)
			close(fd);
		tree_fail_noent(error, "new message");
		return -1;
	}
	/* A noted copy reads as the message it copies. */
	gssize n = copied ? imapfs_block_cache_read(tree->cache, &copy, offset,
						    len, buf, NULL, error)
			  : pread(fd, buf, len, offset);
	int err = errno;
	close(fd);
	g_free((char *)copy.mailbox);
	if (n < 0 && !copied)
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_FAILED,
			    "cannot read the temporary file: %s",
			    g_strerror(err));
	return n;
}

gboolean imapfs_tree_is_pending(ImapfsTree *tree, guint64 ino)
{
	return (ino & 0xff) == KIND_PENDING;
}

/* --- small helpers ----------------------------------------------------------
 */

/* The mailbox a message may be stored in at @path: its server name, or
 * NULL with @error. Called locked. */
static char *store_target(ImapfsTree *tree, const char *path, GError **error)
{
	Mailbox *m = g_hash_table_lookup(tree->by_path, path);

	if (m == NULL || !m->present) {
		tree_fail_noent(error, path);
		return NULL;
	}
	if (m->server_name == NULL || !m->selectable) {
		fail(error, IMAPFS_ERROR_NOTPERMITTED, "cannot store a message",
		     "this directory is not a mailbox");
		return NULL;
	}
	return g_strdup(m->server_name);
}

/* Makes the next readdir or lookup ask the server. Called locked. */
static void mark_stale(ImapfsTree *tree, const char *path)
{
	Mailbox *m = g_hash_table_lookup(tree->by_path, path);

	if (m)
		tree_mark_stale(m);
}

/* Removes @uid from the listing of the mailbox at @path: its name is
 * gone at once, before the next refresh confirms it. */
static void forget_message(ImapfsTree *tree, const char *path, guint32 uid)
{
	g_mutex_lock(&tree->lock);
	Mailbox *m = g_hash_table_lookup(tree->by_path, path);
	ImapfsMessageInfo *info = m ? tree_find_message(m, uid) : NULL;
	if (info) {
		guint i = info -
			  &g_array_index(m->messages, ImapfsMessageInfo, 0);
		g_array_remove_index(m->messages, i);
		g_clear_pointer(&m->by_name, g_free);
	}
	if (m)
		tree_mark_stale(m);
	g_mutex_unlock(&tree->lock);
}

static void mark_stale_unlocked(ImapfsTree *tree, const char *path)
{
	g_mutex_lock(&tree->lock);
	mark_stale(tree, path);
	g_mutex_unlock(&tree->lock);
}

static int temp_file(GError **error)
{
	g_autofree char *tmpl =
		g_build_filename(g_get_tmp_dir(), "imapfs-new-XXXXXX", NULL);
	int fd = g_mkstemp_full(tmpl, O_RDWR | O_CLOEXEC, 0600);

	if (fd < 0) {
		int err = errno;
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_FAILED,
			    "cannot create a temporary file in \"%s\": %s",
			    g_get_tmp_dir(), g_strerror(err));
		return -1;
	}
	/* Private: nobody else can open it, and it goes when closed. */
	unlink(tmpl);
	return fd;
}

/* --- new messages -----------------------------------------------------------
 */

gboolean imapfs_tree_create(ImapfsTree *tree, guint64 parent, const char *name,
			    ImapfsAttr *attr, GError **error)
{
	if (!check_writable(tree, error))
		return FALSE;
	int fd = temp_file(error);
	if (fd < 0)
		return FALSE;
	g_mutex_lock(&tree->lock);
	sweep(tree);
	Mailbox *dir = tree_dir_of(tree, parent);
	g_autofree char *target =
		dir ? store_target(tree, dir->path, error) : NULL;
	if (dir == NULL)
		tree_fail_noent(error, name);
	gboolean full = g_hash_table_size(tree->pending) >= PENDING_MAX;
	if (target && full)
		fail(error, IMAPFS_ERROR_BUSY, "cannot create a message",
		     "too many messages are being written at once");
	if (target == NULL || full) {
		g_mutex_unlock(&tree->lock);
		close(fd);
		return FALSE;
	}
	Pending *pd = g_new0(Pending, 1);
	pd->ino = (guint64)dir->slot << SLOT_SHIFT |
		  (guint64)++tree->pending_seq << UID_SHIFT | KIND_PENDING;
	pd->path = g_strdup(dir->path);
	pd->name = g_strdup(name);
	pd->fd = fd;
	pd->mtime = -1;
	pd->opens = 1;
	g_hash_table_replace(tree->pending, &pd->ino, pd);
	pending_attr(pd, attr);
	g_mutex_unlock(&tree->lock);
	return TRUE;
}

gboolean imapfs_tree_open_pending(ImapfsTree *tree, guint64 ino, gboolean write,
				  gboolean trunc, GError **error)
{
	gboolean ok = FALSE;

	if (write && !check_writable(tree, error))
		return FALSE;
	g_mutex_lock(&tree->lock);
	Pending *pd = pending_of(tree, ino);
	if (pd == NULL)
		tree_fail_noent(error, "new message");
	else if (write && (pd->stored || pd->busy))
		fail(error, IMAPFS_ERROR_NOTPERMITTED, "cannot write",
		     "the message is stored already, and messages never "
		     "change");
	else
		ok = TRUE;
	if (ok && trunc && ftruncate(pd->fd, 0) == 0) {
		pd->size = 0;
		g_clear_pointer((char **)&pd->copy.mailbox, g_free);
		memset(&pd->copy, 0, sizeof(pd->copy));
	}
	if (ok) {
		pd->opens++;
		pd->expires = 0;
	}
	g_mutex_unlock(&tree->lock);
	return ok;
}

/* A copy noted by copy_range, made real because other bytes follow: the
 * source is read through the cache into the file. */
static gboolean materialize(ImapfsTree *tree, Pending *pd, GError **error)
{
	g_autofree char *buf = g_malloc(COPY_CHUNK);
	ImapfsMessageKey key;
	guint64 off = 0, size;

	/* Reads and stores look at the copy under the lock. */
	g_mutex_lock(&tree->lock);
	key = pd->copy;
	key.mailbox = g_strdup(pd->copy.mailbox);
	size = pd->copy_size;
	g_mutex_unlock(&tree->lock);
	g_autofree char *name = (char *)key.mailbox;
	while (off < size) {
		gssize n = imapfs_block_cache_read(
			tree->cache, &key, off, COPY_CHUNK, buf, NULL, error);
		if (n < 0)
			return FALSE;
		if (n == 0)
			break;
		if (pwrite(pd->fd, buf, n, off) != n)
			return fail(error, IMAPFS_ERROR_FAILED,
				    "cannot write the temporary file",
				    g_strerror(errno));
		off += n;
	}
	g_mutex_lock(&tree->lock);
	g_clear_pointer((char **)&pd->copy.mailbox, g_free);
	memset(&pd->copy, 0, sizeof(pd->copy));
	pd->size = MAX(pd->size, off);
	g_mutex_unlock(&tree->lock);
	return TRUE;
}

/* The pending file @ino for writing: not stored, not being stored. The
 * caller writes its fd without the lock (one writer per file). */
static Pending *writable_pending(ImapfsTree *tree, guint64 ino, GError **error)
{
	g_mutex_lock(&tree->lock);
	Pending *pd = pending_of(tree, ino);
	if (pd == NULL)
		tree_fail_noent(error, "new message");
	else if (pd->stored || pd->busy) {
		fail(error, IMAPFS_ERROR_NOTPERMITTED, "cannot write",
		     "the message is stored already");
		pd = NULL;
	}
	g_mutex_unlock(&tree->lock);
	return pd;
}

gssize imapfs_tree_write(ImapfsTree *tree, guint64 ino, guint64 offset,
			 const char *buf, gsize len, GError **error)
{
	Pending *pd = writable_pending(tree, ino, error);

	if (pd == NULL)
		return -1;
	if (pd->copy.uid && !materialize(tree, pd, error))
		return -1;
	gssize n = pwrite(pd->fd, buf, len, offset);
	if (n < 0) {
		int err = errno;
		g_set_error(error, IMAPFS_ERROR,
			    err == ENOSPC ? IMAPFS_ERROR_OVERQUOTA
					  : IMAPFS_ERROR_FAILED,
			    "cannot write the temporary file: %s",
			    g_strerror(err));
		return -1;
	}
	g_mutex_lock(&tree->lock);
	pd->size = MAX(pd->size, offset + n);
	pd->dirty = TRUE;
	g_mutex_unlock(&tree->lock);
	return n;
}

gboolean imapfs_tree_setattr(ImapfsTree *tree, guint64 ino,
			     const ImapfsSetAttr *set, ImapfsAttr *attr,
			     GError **error)
{
	if (!imapfs_tree_is_pending(tree, ino)) {
		if (!imapfs_tree_getattr(tree, ino, attr, error))
			return FALSE;
		if (!check_writable(tree, error))
			return FALSE;
		/* A mailbox has no mode or date of its own to keep; rsync -a
		 * and cp -a set them on the directories they fill, and must
		 * not fail for it. */
		if (attr->kind == IMAPFS_NODE_DIR)
			return TRUE;
		if ((set->set_size && set->size != attr->size) ||
		    set->set_mtime || set->set_other)
			return fail(error, IMAPFS_ERROR_NOTPERMITTED,
				    "cannot change a message",
				    "messages never change on IMAP");
		return TRUE;
	}
	Pending *pd = set->set_size ? writable_pending(tree, ino, error) : NULL;
	if (set->set_size && pd == NULL)
		return FALSE;
	if (pd && pd->copy.uid && !materialize(tree, pd, error))
		return FALSE;
	if (pd && ftruncate(pd->fd, set->size) != 0)
		return fail(error, IMAPFS_ERROR_FAILED,
			    "cannot resize the temporary file",
			    g_strerror(errno));
	g_mutex_lock(&tree->lock);
	pd = pending_of(tree, ino);
	if (pd && set->set_size) {
		pd->size = set->size;
		pd->dirty = TRUE;
	}
	/* After the message is stored its date cannot change any more
	 * (rsync sets it after close): accepted, not applied. */
	if (pd && set->set_mtime && !pd->stored)
		pd->mtime = set->mtime;
	if (pd)
		pending_attr(pd, attr);
	g_mutex_unlock(&tree->lock);
	return pd != NULL || tree_fail_noent(error, "new message");
}

/* --- changes whose reply was lost -----------------------------------------
 *
 * A change is never sent twice blindly: when the connection breaks
 * before its reply, the pool asks the change's check, on a new
 * connection, what the server did (imapfs_pool_run_change()).
 */

/* Where a change may add a message: the mailbox's UIDNEXT right before
 * the change went out. Whatever the change added has a UID from there
 * on; everything older is below. */
typedef struct {
	guint32 uidvalidity;
	guint32 uidnext; /* 0: the server would not say */
	gboolean sent;	 /* the change went out (or may have) */
} Landing;

/* Bytes at the start of two messages compared to tell a copy: the whole
 * header of nearly any message. */
#define COPY_HEAD (64 * 1024)

/* Opens @mailbox now, whatever this session heard of it before: SELECT
 * again if it is selected read-write, else EXAMINE. */
static gboolean reopen(ImapfsSession *s, const char *mailbox,
		       ImapfsMailboxState *state_r, GError **error)
{
	if (imapfs_session_is_selected(s, mailbox) &&
	    imapfs_session_writable(s))
		return imapfs_session_select(s, mailbox, state_r, error);
	return imapfs_session_examine(s, mailbox, state_r, error);
}

/*
 * Notes @mailbox's UIDNEXT in @l, right before a change that may add a
 * message there. Asked of the server each time, not taken from what
 * this session last heard: messages added since (on another connection,
 * by another client) would leave that behind, and a message with the
 * same bytes among them would pass for ours. STATUS on the selected
 * mailbox would leave it (RFC 3501 6.3.10): that one is opened again
 * instead. A server refusing either leaves uidnext 0: the change still
 * goes, only its check cannot tell. FALSE on a broken connection.
 */
static gboolean note_landing(ImapfsSession *s, const char *mailbox, Landing *l,
			     GError **error)
{
	ImapfsMailboxStatus st = {0};
	ImapfsMailboxState now = {0};
	GError *local = NULL;
	gboolean ok;

	memset(l, 0, sizeof(*l));
	if (imapfs_session_is_selected(s, mailbox)) {
		ok = reopen(s, mailbox, &now, &local);
		st.uidvalidity = now.uidvalidity;
		st.uidnext = now.uidnext;
	} else {
		ok = imapfs_session_status(s, mailbox, &st, &local);
	}
	if (!ok && !imapfs_session_is_usable(s)) {
		g_propagate_error(error, local);
		return FALSE;
	}
	g_clear_error(&local);
	if (ok) {
		l->uidvalidity = st.uidvalidity;
		l->uidnext = st.uidnext;
	}
	return TRUE;
}

/* The messages that came to @mailbox since @l was noted; NULL when that
 * cannot be told (no UIDNEXT then, or the mailbox was recreated). The
 * mailbox is opened again: a session that had it open may not have
 * heard of them yet. */
static GArray *arrivals(ImapfsSession *s, const char *mailbox, const Landing *l,
			GError **error)
{
	ImapfsMailboxState now;

	if (l->uidnext == 0) {
		fail(error, IMAPFS_ERROR_FAILED,
		     "cannot tell whether the change was made",
		     "the server did not say its UIDNEXT before");
		return NULL;
	}
	if (!reopen(s, mailbox, &now, error))
		return NULL;
	if (now.uidvalidity != l->uidvalidity) {
		fail(error, IMAPFS_ERROR_UIDVALIDITY_CHANGED,
		     "cannot tell whether the change was made",
		     "the mailbox was recreated meanwhile");
		return NULL;
	}
	return imapfs_session_fetch_index_range(s, l->uidnext, 0, FALSE, 0,
						error);
}

/* Message @uid of the selected mailbox as the server has it now: an
 * array of it alone (size, date, flags), empty once it is gone. The
 * mailbox is opened again first: the pool may hand a check a session
 * that has had it open since before the change, and has not heard of
 * what the change did. */
static GArray *message_now(ImapfsSession *s, guint32 uid, GError **error)
{
	g_autofree char *mailbox = g_strdup(imapfs_session_selected(s));

	if (mailbox && !reopen(s, mailbox, NULL, error))
		return NULL;
	return imapfs_session_fetch_index_range(s, uid, uid, FALSE, 0, error);
}

/*
 * Whether @dest holds a copy of @src (a message of the selected mailbox)
 * that arrived after @l was noted: the same size, the same INTERNALDATE
 * (COPY keeps it, RFC 3501 6.4.7) and the same first COPY_HEAD bytes.
 * Not every byte: the two are in different mailboxes, and comparing all
 * would switch between them for each window; what matches all this is
 * the same message, whoever copied it. DONE fills @got. Leaves @dest
 * selected (SELECTed only if it was before).
 */
static ImapfsOutcome find_copy(ImapfsSession *s, const ImapfsMessageInfo *src,
			       const char *dest, const Landing *l,
			       ImapfsNewUid *got, GError **error)
{
	g_autoptr(GByteArray) head = g_byte_array_new();
	g_autoptr(GByteArray) other = g_byte_array_new();

	if (!imapfs_session_fetch_body(s, src->uid, 0, COPY_HEAD, head, error))
		return IMAPFS_OUTCOME_UNKNOWN;
	g_autoptr(GArray) news = arrivals(s, dest, l, error);
	if (news == NULL)
		return IMAPFS_OUTCOME_UNKNOWN;
	for (guint i = 0; i < news->len; i++) {
		const ImapfsMessageInfo *m =
			&g_array_index(news, ImapfsMessageInfo, i);
		if (m->size != src->size ||
		    m->internaldate != src->internaldate)
			continue;
		g_byte_array_set_size(other, 0);
		if (!imapfs_session_fetch_body(s, m->uid, 0, COPY_HEAD, other,
					       error))
			return IMAPFS_OUTCOME_UNKNOWN;
		if (other->len == head->len &&
		    memcmp(other->data, head->data, head->len) == 0) {
			got->uidvalidity = l->uidvalidity;
			got->uid = m->uid;
			return IMAPFS_OUTCOME_DONE;
		}
	}
	return IMAPFS_OUTCOME_NOT_DONE;
}

/* Back on @mailbox, SELECTed, after a check looked at another one: the
 * change's own function, run again, expects it. */
static gboolean back_to(ImapfsSession *s, const char *mailbox,
			guint32 uidvalidity, GError **error)
{
	ImapfsMailboxState st;

	if (imapfs_session_is_selected(s, mailbox) &&
	    imapfs_session_writable(s))
		return TRUE;
	if (!imapfs_session_select(s, mailbox, &st, error))
		return FALSE;
	if (uidvalidity && st.uidvalidity != uidvalidity)
		return fail(error, IMAPFS_ERROR_UIDVALIDITY_CHANGED,
			    "cannot finish the change",
			    "the mailbox was recreated meanwhile");
	return TRUE;
}

/* Whether LIST @pattern shows a mailbox (not \NonExistent): any, or with
 * @exact, that one (LIST takes '%' and '*' in a name as wildcards). */
static gboolean listed(ImapfsSession *s, const char *pattern, const char *exact,
		       gboolean *there_r, GError **error)
{
	g_autoptr(GPtrArray) list =
		imapfs_session_list(s, "", pattern, FALSE, error);

	*there_r = FALSE;
	if (list == NULL)
		return FALSE;
	for (guint i = 0; i < list->len; i++) {
		ImapfsListEntry *e = list->pdata[i];
		if (!(e->flags & IMAPFS_MBOX_NONEXISTENT) &&
		    (exact == NULL || strcmp(e->name, exact) == 0))
			*there_r = TRUE;
	}
	return TRUE;
}

/* --- storing a new message --------------------------------------------------
 */

typedef struct {
	char *mailbox; /* where it goes */
	int fd;
	guint64 size;
	char *flags;
	gint64 mtime;
	ImapfsMessageKey copy;
	ImapfsNewUid got;
	Landing landing; /* @mailbox's, before the APPEND or COPY */
} StoreJob;

/* Without UIDPLUS the server does not say which UID the message got:
 * the UIDs that appeared since it was sent, if exactly one, are it (with
 * another client appending at the same moment nobody can tell; the
 * message then just shows on the next listing). The APPEND succeeded
 * whatever happens here. */
static void find_appended(ImapfsSession *s, StoreJob *j)
{
	g_autoptr(GArray) news = arrivals(s, j->mailbox, &j->landing, NULL);
	if (news && news->len == 1) {
		j->got.uidvalidity = j->landing.uidvalidity;
		j->got.uid = g_array_index(news, ImapfsMessageInfo, 0).uid;
	}
}

static gboolean append_func(ImapfsSession *s, gpointer data, GError **error)
{
	StoreJob *j = data;

	if (!note_landing(s, j->mailbox, &j->landing, error))
		return FALSE;
	j->landing.sent = TRUE;
	if (!imapfs_session_append(s, j->mailbox, j->fd, j->size, j->flags,
				   j->mtime, &j->got, error))
		return FALSE;
	if (j->got.uid == 0 && !imapfs_session_has(s, IMAPFS_CAP_UIDPLUS))
		find_appended(s, j);
	return TRUE;
}

/* The APPEND was made if a message with exactly its bytes arrived since
 * it was sent; its UID is then the one APPENDUID would have given. The
 * same size is not enough: another client may have appended meanwhile. */
static ImapfsOutcome appended_check(ImapfsSession *s, gpointer data,
				    GError **error)
{
	StoreJob *j = data;
	guint64 wire;

	if (!j->landing.sent)
		return IMAPFS_OUTCOME_NOT_DONE;
	g_autoptr(GArray) news = arrivals(s, j->mailbox, &j->landing, error);
	if (news == NULL ||
	    !imapfs_session_crlf_size(j->fd, j->size, &wire, error))
		return IMAPFS_OUTCOME_UNKNOWN;
	for (guint i = 0; i < news->len; i++) {
		guint32 uid = g_array_index(news, ImapfsMessageInfo, i).uid;
		gboolean same = FALSE;
		if (g_array_index(news, ImapfsMessageInfo, i).size != wire)
			continue;
		if (!imapfs_session_same_body(s, uid, j->fd, j->size, &same,
					      error))
			return IMAPFS_OUTCOME_UNKNOWN;
		if (same) {
			j->got.uidvalidity = j->landing.uidvalidity;
			j->got.uid = uid;
			return IMAPFS_OUTCOME_DONE;
		}
	}
	return IMAPFS_OUTCOME_NOT_DONE;
}

/* "OK No messages found" (Dovecot) is how a COPY or MOVE of a message
 * expunged meanwhile ends: with UIDPLUS, an OK without COPYUID did
 * nothing. */
static gboolean check_copied(ImapfsSession *s, guint32 new_uid, GError **error)
{
	if (new_uid || !imapfs_session_has(s, IMAPFS_CAP_UIDPLUS))
		return TRUE;
	return fail(error, IMAPFS_ERROR_NONEXISTENT, "nothing copied",
		    "the message is no longer on the server");
}

static gboolean copy_func(ImapfsSession *s, gpointer data, GError **error)
{
	StoreJob *j = data;

	if (!imapfs_session_catch_up(s, j->copy.uid, error) ||
	    !note_landing(s, j->mailbox, &j->landing, error))
		return FALSE;
	j->landing.sent = TRUE;
	if (!imapfs_session_copy(s, j->copy.uid, j->mailbox, &j->got, error))
		return FALSE;
	return check_copied(s, j->got.uid, error);
}

/* The COPY was made if its copy arrived in the target (find_copy()). */
static ImapfsOutcome copied_check(ImapfsSession *s, gpointer data,
				  GError **error)
{
	StoreJob *j = data;

	if (!j->landing.sent)
		return IMAPFS_OUTCOME_NOT_DONE;
	g_autoptr(GArray) src = message_now(s, j->copy.uid, error);
	if (src == NULL)
		return IMAPFS_OUTCOME_UNKNOWN;
	if (src->len == 0) {
		fail(error, IMAPFS_ERROR_FAILED,
		     "cannot tell whether the message was copied",
		     "it is no longer on the server");
		return IMAPFS_OUTCOME_UNKNOWN;
	}
	ImapfsOutcome o =
		find_copy(s, &g_array_index(src, ImapfsMessageInfo, 0),
			  j->mailbox, &j->landing, &j->got, error);
	if (o == IMAPFS_OUTCOME_NOT_DONE &&
	    !back_to(s, j->copy.mailbox, j->copy.uidvalidity, error))
		return IMAPFS_OUTCOME_UNKNOWN;
	return o;
}

typedef struct {
	guint32 uid;
	const char *flags;
	guint64 unchangedsince;
	guint64 modseq;
} FlagsJob;

static gboolean flags_func(ImapfsSession *s, gpointer data, GError **error)
{
	FlagsJob *j = data;

	return imapfs_session_catch_up(s, j->uid, error) &&
	       imapfs_session_store_flags(s, j->uid, j->flags,
					  j->unchangedsince, &j->modseq, error);
}

/* Space separated @flags as a set, lower case, without \Recent. */
static GHashTable *flag_set(const char *flags)
{
	GHashTable *set =
		g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	g_auto(GStrv) words = g_strsplit(flags ? flags : "", " ", -1);

	for (guint i = 0; words[i]; i++)
		if (*words[i] && g_ascii_strcasecmp(words[i], "\\Recent") != 0)
			g_hash_table_add(set, g_ascii_strdown(words[i], -1));
	return set;
}

static gboolean same_flags(const char *a, const char *b)
{
	g_autoptr(GHashTable) x = flag_set(a);
	g_autoptr(GHashTable) y = flag_set(b);
	GHashTableIter iter;
	gpointer flag;

	if (g_hash_table_size(x) != g_hash_table_size(y))
		return FALSE;
	g_hash_table_iter_init(&iter, x);
	while (g_hash_table_iter_next(&iter, &flag, NULL))
		if (!g_hash_table_contains(y, flag))
			return FALSE;
	return TRUE;
}

/* The STORE was made if the message has exactly these flags. Otherwise
 * it is sent again, with the same UNCHANGEDSINCE: had our first STORE
 * been made, the flags would be ours, unless another client changed
 * them after it, which [MODIFIED] then rightly reports. */
static ImapfsOutcome flags_check(ImapfsSession *s, gpointer data,
				 GError **error)
{
	FlagsJob *j = data;
	g_autoptr(GArray) now = message_now(s, j->uid, error);

	if (now == NULL)
		return IMAPFS_OUTCOME_UNKNOWN;
	/* Expunged meanwhile: a STORE does nothing there either way. */
	if (now->len == 0 ||
	    !same_flags(g_array_index(now, ImapfsMessageInfo, 0).flags,
			j->flags))
		return IMAPFS_OUTCOME_NOT_DONE;
	j->modseq = g_array_index(now, ImapfsMessageInfo, 0).modseq;
	return IMAPFS_OUTCOME_DONE;
}

/* A copy keeps the source's flags; flags set on the new file replace
 * them. */
static gboolean store_by_copy(ImapfsTree *tree, StoreJob *j, GError **error)
{
	if (!imapfs_pool_run_change(tree->pool, j->copy.mailbox,
				    j->copy.uidvalidity, copy_func,
				    copied_check, j, error))
		return FALSE;
	if (j->flags == NULL || j->got.uid == 0)
		return TRUE;
	FlagsJob f = {j->got.uid, j->flags, 0, 0};
	g_autoptr(GError) local = NULL;
	/* The copy is made: failing now would only invite a second one. */
	if (!imapfs_pool_run_change(tree->pool, j->mailbox, j->got.uidvalidity,
				    flags_func, flags_check, &f, &local))
		g_warning("copied to \"%s\", but its flags were not set: %s",
			  j->mailbox, local->message);
	return TRUE;
}

/* Takes what storing @pd needs, and marks it busy. Called locked. */
static gboolean start_store(ImapfsTree *tree, Pending *pd, StoreJob *j,
			    GError **error)
{
	j->mailbox = store_target(tree, pd->path, error);
	if (j->mailbox == NULL)
		return FALSE;
	j->fd = pd->fd;
	j->size = pd->size;
	j->flags = g_strdup(pd->flags);
	j->mtime = pd->mtime;
	if (pd->copy.uid && !pd->dirty) {
		j->copy = pd->copy;
		j->copy.mailbox = g_strdup(pd->copy.mailbox);
	}
	pd->busy = TRUE;
	return TRUE;
}

static void clear_job(StoreJob *j)
{
	g_free(j->mailbox);
	g_free(j->flags);
	g_free((char *)j->copy.mailbox);
}

gboolean imapfs_tree_flush(ImapfsTree *tree, guint64 ino, gboolean retry,
			   GError **error)
{
	StoreJob j = {0};

	g_mutex_lock(&tree->lock);
	Pending *pd = pending_of(tree, ino);
	gboolean news = pd && !pd->stored && !pd->busy && !pd->dropped &&
			(retry || !pd->failed) && (pd->dirty || pd->copy.uid) &&
			(pd->size > 0 || pd->copy.uid);
	gboolean ok = !news || start_store(tree, pd, &j, error);
	g_mutex_unlock(&tree->lock);
	if (!news || !ok)
		return ok;
	ok = j.copy.uid
		     ? store_by_copy(tree, &j, error)
		     : imapfs_pool_run_change(tree->pool, NULL, 0, append_func,
					      appended_check, &j, error);
	g_mutex_lock(&tree->lock);
	pd->busy = FALSE;
	if (ok) {
		pd->stored = TRUE;
		pd->dirty = FALSE;
		pd->uid = j.got.uid;
		pd->uidvalidity = j.got.uidvalidity;
	}
	pd->failed = !ok;
	mark_stale(tree, pd->path);
	g_mutex_unlock(&tree->lock);
	if (!ok)
		g_prefix_error(error,
			       "storing a new message in \"%s\": ", j.mailbox);
	clear_job(&j);
	return ok;
}

void imapfs_tree_release(ImapfsTree *tree, guint64 ino)
{
	g_mutex_lock(&tree->lock);
	Pending *pd = g_hash_table_lookup(tree->pending, &ino);
	if (pd && pd->opens > 0 && --pd->opens == 0) {
		/* Never written, or thrown away: nothing was stored, so the
		 * name goes at once. */
		if (!pd->stored)
			g_hash_table_remove(tree->pending, &ino);
		else
			pd->expires = g_get_monotonic_time() + ALIAS_TTL_US;
	}
	g_mutex_unlock(&tree->lock);
}

gboolean imapfs_tree_copy_range(ImapfsTree *tree, guint64 in, guint64 off_in,
				guint64 out, guint64 off_out, gsize len,
				gsize *copied_r, GError **error)
{
	ImapfsMessageKey key = {0};
	ImapfsAttr attr;

	if (!imapfs_tree_getattr(tree, in, &attr, error))
		return FALSE;
	if (attr.kind != IMAPFS_NODE_MESSAGE)
		return fail(error, IMAPFS_ERROR_CROSSDEVICE, "cannot copy",
			    "only whole messages are copied on the server");
	*copied_r = 0;
	if (off_in >= attr.size)
		return TRUE;
	Mailbox *m;
	g_mutex_lock(&tree->lock);
	Pending *pd = pending_of(tree, out);
	gboolean whole = pd && !pd->stored && !pd->busy && !pd->dirty &&
			 pd->size == 0 && pd->copy.uid == 0 && off_in == 0 &&
			 off_out == 0 && len >= attr.size &&
			 tree_decode_message(tree, in, &m, &key.uid) &&
			 m->server_name;
	if (whole) {
		pd->copy.mailbox = g_strdup(m->server_name);
		pd->copy.uidvalidity = m->state.uidvalidity;
		pd->copy.uid = key.uid;
		pd->copy_size = attr.size;
		*copied_r = attr.size;
	}
	g_mutex_unlock(&tree->lock);
	if (whole)
		return TRUE;
	/* Anything else: the bytes themselves, through the cache. */
	gsize n = MIN(len, COPY_CHUNK);
	g_autofree char *buf = g_malloc(n);
	gssize got = imapfs_tree_read(tree, in, off_in, n, buf, NULL, error);
	if (got <= 0)
		return got == 0;
	gssize put = imapfs_tree_write(tree, out, off_out, buf, got, error);
	if (put < 0)
		return FALSE;
	*copied_r = put;
	return TRUE;
}

/* --- messages: move and delete
 * ------------------------------------------------
 */

typedef struct {
	guint32 uid;
	const char *source;  /* its mailbox (server name) */
	guint32 uidvalidity; /* the source's */
	char *dest;	     /* server name; NULL: expunge */
	gboolean taken;	     /* the target name is another message's */
	gboolean copying;    /* by UID COPY, STORE, UID EXPUNGE */
	Landing landing;     /* @dest's, before the change */
	ImapfsNewUid got;
} MoveJob;

/* Removes @uid only: never a bare EXPUNGE that would also take messages
 * another client flagged \Deleted. Without UIDPLUS a bare EXPUNGE is
 * only used when @uid is the only message flagged. */
static gboolean expunge_one(ImapfsSession *s, guint32 uid, GError **error)
{
	if (imapfs_session_has(s, IMAPFS_CAP_UIDPLUS))
		return imapfs_session_uid_expunge(s, uid, error);
	g_autoptr(GArray) flagged =
		imapfs_session_uid_search(s, "DELETED", error);
	if (flagged == NULL)
		return FALSE;
	if (flagged->len == 1 && g_array_index(flagged, guint32, 0) == uid)
		return imapfs_session_expunge(s, error);
	/* Leave it as it was rather than take other messages with it. */
	imapfs_session_set_deleted(s, uid, FALSE, NULL);
	return fail(error, IMAPFS_ERROR_BUSY, "cannot delete the message",
		    "without UIDPLUS, other messages flagged \\Deleted would "
		    "be expunged with it");
}

static gboolean delete_func(ImapfsSession *s, gpointer data, GError **error)
{
	MoveJob *j = data;

	return imapfs_session_catch_up(s, j->uid, error) &&
	       imapfs_session_set_deleted(s, j->uid, TRUE, error) &&
	       expunge_one(s, j->uid, error);
}

/* rm was made if the UID is gone. If not, it is sent again: STORE and
 * UID EXPUNGE name that UID only. */
static ImapfsOutcome expunged_check(ImapfsSession *s, gpointer data,
				    GError **error)
{
	MoveJob *j = data;
	g_autoptr(GArray) now = message_now(s, j->uid, error);

	if (now == NULL)
		return IMAPFS_OUTCOME_UNKNOWN;
	return now->len ? IMAPFS_OUTCOME_NOT_DONE : IMAPFS_OUTCOME_DONE;
}

/* The second half of a move by copy: the source goes. A failure takes
 * \Deleted back, so the source stays as it was. */
static gboolean remove_copied(ImapfsSession *s, MoveJob *j, GError **error)
{
	if (imapfs_session_set_deleted(s, j->uid, TRUE, error) &&
	    imapfs_session_uid_expunge(s, j->uid, error))
		return TRUE;
	imapfs_session_set_deleted(s, j->uid, FALSE, NULL);
	return FALSE;
}

static gboolean copy_delete(ImapfsSession *s, MoveJob *j, GError **error)
{
	if (!note_landing(s, j->dest, &j->landing, error))
		return FALSE;
	j->copying = j->landing.sent = TRUE;
	return imapfs_session_copy(s, j->uid, j->dest, &j->got, error) &&
	       check_copied(s, j->got.uid, error) && remove_copied(s, j, error);
}

static gboolean move_func(ImapfsSession *s, gpointer data, GError **error)
{
	MoveJob *j = data;

	memset(&j->landing, 0, sizeof(j->landing));
	memset(&j->got, 0, sizeof(j->got));
	j->copying = FALSE;
	if (!imapfs_session_catch_up(s, j->uid, error))
		return FALSE;
	if (imapfs_session_has(s, IMAPFS_CAP_MOVE)) {
		j->landing.sent = TRUE;
		return imapfs_session_move(s, j->uid, j->dest, &j->got,
					   error) &&
		       check_copied(s, j->got.uid, error);
	}
	if (imapfs_session_has(s, IMAPFS_CAP_UIDPLUS))
		return copy_delete(s, j, error);
	/* mv then copies and deletes by itself, but first unlinks what has
	 * the target name: another message, which must not go. */
	if (j->taken)
		return fail(error, IMAPFS_ERROR_ALREADYEXISTS,
			    "cannot move the message",
			    "the server has neither MOVE nor UIDPLUS, and the "
			    "target name is another message's");
	return fail(error, IMAPFS_ERROR_CROSSDEVICE, "cannot move the message",
		    "the server has neither MOVE nor UIDPLUS");
}

/*
 * The move was made if the source UID is gone: its new UID, if COPYUID
 * did not come, shows when the target is listed again. Still there
 * after UID MOVE, one action (RFC 6851 3.1), it was not moved. Still
 * there after a COPY: if the copy is in the target (COPYUID said so, or
 * find_copy() finds it) only the source's removal is left to do, never
 * a second COPY.
 */
static ImapfsOutcome moved_check(ImapfsSession *s, gpointer data,
				 GError **error)
{
	MoveJob *j = data;
	ImapfsOutcome o = IMAPFS_OUTCOME_DONE;

	if (!j->landing.sent)
		return IMAPFS_OUTCOME_NOT_DONE;
	g_autoptr(GArray) src = message_now(s, j->uid, error);
	if (src == NULL)
		return IMAPFS_OUTCOME_UNKNOWN;
	if (src->len == 0)
		return IMAPFS_OUTCOME_DONE;
	if (!j->copying)
		return IMAPFS_OUTCOME_NOT_DONE;
	if (j->got.uid == 0)
		o = find_copy(s, &g_array_index(src, ImapfsMessageInfo, 0),
			      j->dest, &j->landing, &j->got, error);
	if (o == IMAPFS_OUTCOME_UNKNOWN ||
	    !back_to(s, j->source, j->uidvalidity, error))
		return IMAPFS_OUTCOME_UNKNOWN;
	if (o == IMAPFS_OUTCOME_NOT_DONE)
		return o;
	imapfs_trace(IMAPFS_TRACE_POOL,
		     "move: UID %u is copied already; removing it", j->uid);
	return remove_copied(s, j, error) ? IMAPFS_OUTCOME_DONE
					  : IMAPFS_OUTCOME_UNKNOWN;
}

/* The message @name in directory @parent: its mailbox (path and server
 * name, for the caller to free) and UID. */
static gboolean find_named_message(ImapfsTree *tree, guint64 parent,
				   const char *name, char **path_r,
				   char **server_r, guint32 *uidvalidity_r,
				   guint32 *uid_r, GError **error)
{
	gboolean found = FALSE;

	g_mutex_lock(&tree->lock);
	Mailbox *dir = tree_dir_of(tree, parent);
	if (dir && tree_parse_message_name(name, uid_r) &&
	    tree_find_message(dir, *uid_r) && dir->server_name) {
		*path_r = g_strdup(dir->path);
		*server_r = g_strdup(dir->server_name);
		*uidvalidity_r = dir->state.uidvalidity;
		found = TRUE;
	}
	g_mutex_unlock(&tree->lock);
	return found || tree_fail_noent(error, name);
}

static gboolean move_message(ImapfsTree *tree, const char *path,
			     const char *server, guint32 uidvalidity,
			     guint32 uid, const char *dest,
			     const char *dest_path, gboolean taken,
			     GError **error)
{
	MoveJob j = {uid, server, uidvalidity, (char *)dest, taken};

	if (!imapfs_pool_run_change(tree->pool, server, uidvalidity,
				    dest ? move_func : delete_func,
				    dest ? moved_check : expunged_check, &j,
				    error))
		return FALSE;
	forget_message(tree, path, uid);
	if (dest_path)
		mark_stale_unlocked(tree, dest_path);
	return TRUE;
}

/* delete=trash: where rm sends a message, or NULL to expunge it. */
static char *trash_for(ImapfsTree *tree, const char *server, GError **error)
{
	if (tree->cfg->delete_mode != IMAPFS_DELETE_TRASH)
		return NULL;
	g_mutex_lock(&tree->lock);
	char *trash = g_strdup(tree->trash_name);
	g_mutex_unlock(&tree->lock);
	if (trash == NULL)
		fail(error, IMAPFS_ERROR_NONEXISTENT, "cannot delete",
		     "delete=trash, but the server has no \\Trash mailbox");
	else if (strcmp(trash, server) == 0)
		g_clear_pointer(&trash, g_free); /* in Trash: expunge */
	return trash;
}

/* The path of the directory whose mailbox is @server, or NULL. */
/* unlink of a pending file: not stored yet, it is thrown away; stored,
 * the message goes too (it is what the name stood for). */
static gboolean unlink_pending(ImapfsTree *tree, Mailbox *dir, const char *name,
			       char **path_r, guint32 *uid_r,
			       guint32 *uidvalidity_r, gboolean *busy_r)
{
	Pending *pd = pending_named(tree, dir->path, name);

	if (pd == NULL)
		return FALSE;
	/* Being stored, or stored without the server saying under which
	 * UID: which message the name stands for is not known (yet). */
	if (pd->busy || (pd->stored && pd->uid == 0)) {
		*busy_r = TRUE;
		return TRUE;
	}
	g_clear_pointer(&pd->name, g_free);
	*uid_r = pd->stored ? pd->uid : 0;
	*uidvalidity_r = pd->uidvalidity;
	if (!pd->stored)
		pd->dropped = TRUE;
	*path_r = g_strdup(dir->path);
	return TRUE;
}

gboolean imapfs_tree_unlink(ImapfsTree *tree, guint64 parent, const char *name,
			    GError **error)
{
	g_autofree char *path = NULL, *server = NULL;
	guint32 uidvalidity = 0, uid = 0;

	if (!check_writable(tree, error))
		return FALSE;
	g_mutex_lock(&tree->lock);
	Mailbox *dir = tree_dir_of(tree, parent);
	gboolean busy = FALSE;
	gboolean was_pending = dir && unlink_pending(tree, dir, name, &path,
						     &uid, &uidvalidity, &busy);
	/* The UIDVALIDITY the message was stored under: if the mailbox was
	 * recreated since, the UID names nothing of ours. */
	if (was_pending && uid && dir->server_name)
		server = g_strdup(dir->server_name);
	g_mutex_unlock(&tree->lock);
	/* Being stored right now: whether it will be there is not known
	 * yet, and rm must not report success for a message that lands. */
	if (busy)
		return fail(error, IMAPFS_ERROR_BUSY, "cannot remove",
			    "the message is being stored, or the server did "
			    "not say its UID: remove it as <UID>.eml");
	if (was_pending && server == NULL)
		return TRUE;
	if (!was_pending &&
	    !find_named_message(tree, parent, name, &path, &server,
				&uidvalidity, &uid, error))
		return FALSE;
	GError *local = NULL;
	g_autofree char *trash = trash_for(tree, server, &local);
	if (local) {
		g_propagate_error(error, local);
		return FALSE;
	}
	g_autofree char *trash_path =
		trash ? tree_path_of_server_name(tree, trash, FALSE) : NULL;
	return move_message(tree, path, server, uidvalidity, uid, trash,
			    trash_path, FALSE, error);
}

/* rename of a pending file: within its directory (rsync's temporary
 * name) it only changes the name, or drops it once stored; to another
 * mailbox before it is stored, it goes there instead. Returns FALSE when
 * @name is no pending file. Called locked. */
static gboolean rename_pending(ImapfsTree *tree, Mailbox *dir, const char *name,
			       Mailbox *newdir, const char *newname,
			       gboolean *ok_r, GError **error)
{
	Pending *pd = pending_named(tree, dir->path, name);

	if (pd == NULL)
		return FALSE;
	*ok_r = TRUE;
	if (dir == newdir && pd->stored) {
		g_clear_pointer(&pd->name, g_free);
		return TRUE;
	}
	if (dir != newdir && (pd->stored || pd->busy)) {
		*ok_r = fail(error, IMAPFS_ERROR_CROSSDEVICE, "cannot move",
			     "the message is being stored in its mailbox");
		return TRUE;
	}
	g_autofree char *target = store_target(tree, newdir->path, error);
	if (target == NULL) {
		*ok_r = FALSE;
		return TRUE;
	}
	g_free(pd->path);
	pd->path = g_strdup(newdir->path);
	g_free(pd->name);
	pd->name = g_strdup(newname);
	return TRUE;
}

static gboolean rename_mailbox(ImapfsTree *tree, guint64 parent,
			       const char *name, guint64 newparent,
			       const char *newname, GError **error);

gboolean imapfs_tree_rename(ImapfsTree *tree, guint64 parent, const char *name,
			    guint64 newparent, const char *newname,
			    GError **error)
{
	g_autofree char *path = NULL, *server = NULL, *dest = NULL,
			*dest_path = NULL;
	guint32 uidvalidity, uid;
	gboolean ok = TRUE;

	if (!check_writable(tree, error))
		return FALSE;
	g_mutex_lock(&tree->lock);
	Mailbox *dir = tree_dir_of(tree, parent);
	Mailbox *newdir = tree_dir_of(tree, newparent);
	gboolean done =
		dir && newdir &&
		rename_pending(tree, dir, name, newdir, newname, &ok, error);
	g_autofree char *sub = dir ? tree_child_path(dir, name) : NULL;
	Mailbox *child = sub ? g_hash_table_lookup(tree->by_path, sub) : NULL;
	gboolean is_dir = !done && child && child->present;
	if (!done && !is_dir && newdir)
		dest = store_target(tree, newdir->path, NULL);
	if (dest)
		dest_path = g_strdup(newdir->path);
	ImapfsAttr there;
	gboolean taken =
		dest && tree_lookup_locked(tree, newdir, newname, &there);
	g_mutex_unlock(&tree->lock);
	if (done)
		return ok;
	if (is_dir)
		return rename_mailbox(tree, parent, name, newparent, newname,
				      error);
	if (!find_named_message(tree, parent, name, &path, &server,
				&uidvalidity, &uid, error))
		return FALSE;
	if (parent == newparent)
		return fail(error, IMAPFS_ERROR_NOTPERMITTED,
			    "cannot rename a message",
			    "its name is its UID; move it to another "
			    "mailbox instead");
	if (dest == NULL)
		return fail(error, IMAPFS_ERROR_NOTPERMITTED,
			    "cannot move the message",
			    "the target directory is not a mailbox");
	return move_message(tree, path, server, uidvalidity, uid, dest,
			    dest_path, taken, error);
}

/* --- flags ------------------------------------------------------------------
 */

/* Checks and normalizes @flags (whitespace separated) to single spaces.
 * NULL with INVALID for anything STORE would reject, and for \Recent. */
static char *normalize_flags(const char *flags, GError **error)
{
	static const char *const system[] = {"\\Answered", "\\Flagged",
					     "\\Deleted", "\\Seen", "\\Draft"};
	g_auto(GStrv) words = g_strsplit_set(flags, " \t\r\n", -1);
	g_autoptr(GString) out = g_string_new(NULL);

	for (guint i = 0; words[i]; i++) {
		const char *w = words[i];
		gboolean ok = imapfs_flag_is_valid(w);
		if (*w == '\0')
			continue;
		/* Of the system flags, only those a client may set. */
		if (*w == '\\') {
			ok = FALSE;
			for (guint k = 0; k < G_N_ELEMENTS(system); k++)
				if (g_ascii_strcasecmp(w, system[k]) == 0)
					w = system[k], ok = TRUE;
		}
		if (!ok) {
			g_autofree char *q = imapfs_log_quote(words[i]);
			fail(error, IMAPFS_ERROR_INVALID, "invalid flag", q);
			return NULL;
		}
		if (out->len)
			g_string_append_c(out, ' ');
		g_string_append(out, w);
	}
	return g_string_free(g_steal_pointer(&out), FALSE);
}

/* Flags as shown: without \Recent, which belongs to one session. */
static char *shown_flags(const char *flags)
{
	g_auto(GStrv) words = g_strsplit(flags ? flags : "", " ", -1);
	g_autoptr(GString) out = g_string_new(NULL);

	for (guint i = 0; words[i]; i++) {
		if (*words[i] == '\0' ||
		    g_ascii_strcasecmp(words[i], "\\Recent") == 0)
			continue;
		if (out->len)
			g_string_append_c(out, ' ');
		g_string_append(out, words[i]);
	}
	return g_string_free(g_steal_pointer(&out), FALSE);
}

char *imapfs_tree_get_flags(ImapfsTree *tree, guint64 ino, GError **error)
{
	char *flags = NULL;
	Mailbox *m;
	guint32 uid;

	g_mutex_lock(&tree->lock);
	Pending *pd = pending_of(tree, ino);
	ImapfsMessageInfo *info =
		pd == NULL && tree_decode_message(tree, ino, &m, &uid)
			? tree_find_message(m, uid)
			: NULL;
	if (pd)
		flags = g_strdup(pd->flags ? pd->flags : "");
	else if (info)
		flags = shown_flags(info->flags);
	g_mutex_unlock(&tree->lock);
	if (flags == NULL)
		tree_fail_noent(error, "message");
	return flags;
}

/* Flags set on a new file before it is stored go with APPEND. Returns
 * FALSE when @ino is no pending file. Called locked. */
static gboolean set_pending_flags(ImapfsTree *tree, guint64 ino,
				  const char *flags, gboolean *ok_r,
				  GError **error)
{
	Pending *pd = pending_of(tree, ino);

	if (pd == NULL)
		return FALSE;
	*ok_r = !pd->stored && !pd->busy;
	if (*ok_r) {
		g_free(pd->flags);
		pd->flags = g_strdup(flags);
	} else
		fail(error, IMAPFS_ERROR_NOTPERMITTED, "cannot set flags",
		     "set them on the message's <UID>.eml file");
	return TRUE;
}

/* After our own STORE the listing has the new flags at once. */
static void note_flags(ImapfsTree *tree, guint64 ino, const char *flags,
		       guint64 modseq)
{
	Mailbox *m;
	guint32 uid;

	g_mutex_lock(&tree->lock);
	ImapfsMessageInfo *info = tree_decode_message(tree, ino, &m, &uid)
					  ? tree_find_message(m, uid)
					  : NULL;
	if (info) {
		g_free(info->flags);
		info->flags = g_strdup(flags);
		if (modseq)
			info->modseq = modseq;
	}
	g_mutex_unlock(&tree->lock);
}

gboolean imapfs_tree_set_flags(ImapfsTree *tree, guint64 ino, const char *flags,
			       GError **error)
{
	g_autofree char *norm = normalize_flags(flags, error);
	ImapfsMessageKey key = {0};
	FlagsJob j = {0};
	gboolean done = FALSE, ok = FALSE;
	ImapfsAttr attr;
	Mailbox *m;

	if (norm == NULL || !check_writable(tree, error))
		return FALSE;
	g_mutex_lock(&tree->lock);
	done = set_pending_flags(tree, ino, norm, &ok, error);
	ImapfsMessageInfo *info =
		!done && tree_decode_message(tree, ino, &m, &key.uid)
			? tree_find_message(m, key.uid)
			: NULL;
	if (info && m->server_name) {
		key.mailbox = g_strdup(m->server_name);
		key.uidvalidity = m->state.uidvalidity;
		/* Only if nobody changed it since we listed it. */
		j.unchangedsince =
			info->modseq ? info->modseq : m->state.highestmodseq;
	}
	g_mutex_unlock(&tree->lock);
	g_autofree char *server = (char *)key.mailbox;
	if (done)
		return ok;
	if (server == NULL && imapfs_tree_getattr(tree, ino, &attr, NULL) &&
	    attr.kind == IMAPFS_NODE_DIR)
		return fail(error, IMAPFS_ERROR_UNSUPPORTED, "cannot set flags",
			    "a mailbox has none");
	if (server == NULL)
		return tree_fail_noent(error, "message");
	j.uid = key.uid;
	j.flags = norm;
	if (!imapfs_pool_run_change(tree->pool, server, key.uidvalidity,
				    flags_func, flags_check, &j, error)) {
		/* Another client changed it: learn its flags now, so
		 * that a retry after a look at them can succeed. */
		if (g_error_matches(*error, IMAPFS_ERROR,
				    IMAPFS_ERROR_MODIFIED)) {
			g_autofree char *path =
				tree_path_of_server_name(tree, server, FALSE);
			if (path)
				tree_refresh_messages(tree, path, 0, NULL);
		}
		return FALSE;
	}
	note_flags(tree, ino, norm, j.modseq);
	return TRUE;
}

/* --- mailboxes --------------------------------------------------------------
 */

/* The server name for the directory @name in @parent. Called locked. */
static char *server_name_for(ImapfsTree *tree, Mailbox *parent,
			     const char *name, GError **error)
{
	g_autoptr(GPtrArray) levels = g_ptr_array_new_with_free_func(g_free);
	g_auto(GStrv) parts = *parent->path ? g_strsplit(parent->path, "/", -1)
					    : g_new0(char *, 1);
	char *level;

	for (guint i = 0; tree->root_levels && tree->root_levels[i]; i++)
		g_ptr_array_add(levels, g_strdup(tree->root_levels[i]));
	for (guint i = 0; parts[i]; i++) {
		if ((level = imapfs_name_unescape(parts[i], error)) == NULL)
			return NULL;
		g_ptr_array_add(levels, level);
	}
	if ((level = imapfs_name_unescape(name, error)) == NULL)
		return NULL;
	g_ptr_array_add(levels, level);
	g_ptr_array_add(levels, NULL);
	char *server =
		imapfs_mailbox_from_levels((const char *const *)levels->pdata,
					   tree->delim, tree->utf8, error);
	if (server == NULL && error && *error)
		(*error)->code = IMAPFS_ERROR_INVALID;
	return server;
}

/* The server name @name in directory @parent would have; INVALID if it
 * cannot have one, NONEXISTENT without such a directory. */
static char *new_mailbox_name(ImapfsTree *tree, guint64 parent,
			      const char *name, GError **error)
{
	char *server = NULL;

	g_mutex_lock(&tree->lock);
	Mailbox *dir = tree_dir_of(tree, parent);
	if (dir == NULL || !dir->present)
		tree_fail_noent(error, name);
	else
		server = server_name_for(tree, dir, name, error);
	g_mutex_unlock(&tree->lock);
	return server;
}

typedef struct {
	const char *name;
	const char *to;	     /* RENAME */
	char delim;	     /* DELETE: to ask for children */
	gboolean selectable; /* DELETE: \Noselect ones hold no messages */
	guint32 messages;
	gboolean children;
} MailboxJob;

static gboolean create_func(ImapfsSession *s, gpointer data, GError **error)
{
	return imapfs_session_create(s, ((MailboxJob *)data)->name, error);
}

/* CREATE, DELETE and RENAME were made if LIST shows it: the name there,
 * gone, or the one gone and the other there. This is @if_there or
 * @if_gone as LIST shows @name or not. */
static ImapfsOutcome by_list(ImapfsSession *s, const char *name,
			     ImapfsOutcome if_there, ImapfsOutcome if_gone,
			     GError **error)
{
	gboolean there;

	if (!listed(s, name, name, &there, error))
		return IMAPFS_OUTCOME_UNKNOWN;
	return there ? if_there : if_gone;
}

static ImapfsOutcome created_check(ImapfsSession *s, gpointer data,
				   GError **error)
{
	return by_list(s, ((MailboxJob *)data)->name, IMAPFS_OUTCOME_DONE,
		       IMAPFS_OUTCOME_NOT_DONE, error);
}

/* Not done, DELETE is sent again after the same look at what the
 * mailbox holds. */
static ImapfsOutcome deleted_check(ImapfsSession *s, gpointer data,
				   GError **error)
{
	return by_list(s, ((MailboxJob *)data)->name, IMAPFS_OUTCOME_NOT_DONE,
		       IMAPFS_OUTCOME_DONE, error);
}

static ImapfsOutcome renamed_check(ImapfsSession *s, gpointer data,
				   GError **error)
{
	MailboxJob *j = data;
	gboolean from, to;

	if (!listed(s, j->name, j->name, &from, error) ||
	    !listed(s, j->to, j->to, &to, error))
		return IMAPFS_OUTCOME_UNKNOWN;
	if (from != to)
		return to ? IMAPFS_OUTCOME_DONE : IMAPFS_OUTCOME_NOT_DONE;
	fail(error, IMAPFS_ERROR_FAILED, "cannot tell whether it was renamed",
	     from ? "both names are there" : "neither name is there");
	return IMAPFS_OUTCOME_UNKNOWN;
}

gboolean imapfs_tree_mkdir(ImapfsTree *tree, guint64 parent, const char *name,
			   ImapfsAttr *attr, GError **error)
{
	if (!check_writable(tree, error))
		return FALSE;
	g_autofree char *server = new_mailbox_name(tree, parent, name, error);
	MailboxJob j = {server};

	if (server == NULL ||
	    !imapfs_pool_run_change(tree->pool, NULL, 0, create_func,
				    created_check, &j, error) ||
	    !imapfs_tree_load(tree, error))
		return FALSE;
	return imapfs_tree_lookup(tree, parent, name, attr, error);
}

/* Whether the server still knows children of @name: the tree may not
 * have seen them yet. */
static gboolean has_children(ImapfsSession *s, const char *name, char delim,
			     gboolean *children_r, GError **error)
{
	char pattern[3] = {delim, '%', '\0'};
	g_autofree char *pat = g_strconcat(name, pattern, NULL);

	*children_r = FALSE;
	if (delim == '\0')
		return TRUE;
	return listed(s, pat, NULL, children_r, error);
}

static gboolean emptiness_func(ImapfsSession *s, gpointer data, GError **error)
{
	MailboxJob *j = data;

	ImapfsMailboxStatus st = {0};

	/* A \Noselect one has no messages, and STATUS is refused there. */
	if (j->selectable && !imapfs_session_status(s, j->name, &st, error))
		return FALSE;
	j->messages = st.messages;
	return has_children(s, j->name, j->delim, &j->children, error);
}

static gboolean delete_mailbox_func(ImapfsSession *s, gpointer data,
				    GError **error)
{
	MailboxJob *j = data;

	/* Asked again right before DELETE, on the server: IMAP DELETE
	 * would take every message with it. */
	if (!emptiness_func(s, data, error))
		return FALSE;
	if (j->messages || j->children)
		return fail(error, IMAPFS_ERROR_NOTEMPTY, "cannot remove",
			    "the mailbox still holds messages or mailboxes");
	return imapfs_session_delete(s, j->name, error);
}

/* The mailbox directory @name in @parent: a copy of its server name, or
 * NULL with NONEXISTENT, NOTPERMITTED (INBOX, or no mailbox at all) or
 * NOTEMPTY (children the tree knows of). Called locked. */
static char *removable_mailbox(ImapfsTree *tree, guint64 parent,
			       const char *name, gboolean need_empty,
			       GError **error)
{
	Mailbox *dir = tree_dir_of(tree, parent);
	g_autofree char *path = dir ? tree_child_path(dir, name) : NULL;
	Mailbox *m = path ? g_hash_table_lookup(tree->by_path, path) : NULL;

	if (m == NULL || !m->present) {
		tree_fail_noent(error, name);
		return NULL;
	}
	if (m->server_name == NULL ||
	    g_ascii_strcasecmp(m->server_name, "INBOX") == 0 ||
	    *m->path == '\0') {
		fail(error, IMAPFS_ERROR_NOTPERMITTED, name,
		     m->server_name ? "INBOX cannot be removed or renamed"
				    : "not a mailbox on the server");
		return NULL;
	}
	for (guint i = 1; need_empty && i < tree->slots->len; i++) {
		Mailbox *c = tree->slots->pdata[i];
		if (c->present && g_strcmp0(c->parent_path, m->path) == 0) {
			fail(error, IMAPFS_ERROR_NOTEMPTY, name,
			     "the mailbox has child mailboxes");
			return NULL;
		}
	}
	return g_strdup(m->server_name);
}

gboolean imapfs_tree_rmdir(ImapfsTree *tree, guint64 parent, const char *name,
			   GError **error)
{
	if (!check_writable(tree, error))
		return FALSE;
	g_mutex_lock(&tree->lock);
	g_autofree char *server =
		removable_mailbox(tree, parent, name, TRUE, error);
	MailboxJob j = {server, NULL, tree->delim};
	g_autofree char *path = NULL;
	Mailbox *dir = tree_dir_of(tree, parent);
	if (server && dir && (path = tree_child_path(dir, name))) {
		Mailbox *m = g_hash_table_lookup(tree->by_path, path);
		j.selectable = m && m->selectable;
	}
	g_mutex_unlock(&tree->lock);

	if (server == NULL ||
	    !imapfs_pool_run_change(tree->pool, NULL, 0, delete_mailbox_func,
				    deleted_check, &j, error))
		return FALSE;
	return imapfs_tree_load(tree, error);
}

static gboolean rename_func(ImapfsSession *s, gpointer data, GError **error)
{
	MailboxJob *j = data;

	return imapfs_session_rename(s, j->name, j->to, error);
}

static gboolean rename_mailbox(ImapfsTree *tree, guint64 parent,
			       const char *name, guint64 newparent,
			       const char *newname, GError **error)
{
	g_mutex_lock(&tree->lock);
	g_autofree char *server =
		removable_mailbox(tree, parent, name, FALSE, error);
	g_mutex_unlock(&tree->lock);
	if (server == NULL)
		return FALSE;
	g_autofree char *to = new_mailbox_name(tree, newparent, newname, error);
	MailboxJob j = {server, to};

	if (to == NULL ||
	    !imapfs_pool_run_change(tree->pool, NULL, 0, rename_func,
				    renamed_check, &j, error))
		return FALSE;
	return imapfs_tree_load(tree, error);
}
