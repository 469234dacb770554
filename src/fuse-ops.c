/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h> /* RENAME_* */
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include "imapfs/cancel.h"
#include "imapfs/error.h"
#include "imapfs/fuse-ops.h"
#include "imapfs/log.h"

/* Message files never change, so the kernel may keep what it learnt for
 * long; directories change whenever mail arrives. */
#define MESSAGE_TIMEOUT 3600.0
#define DIR_TIMEOUT 1.0
#define FLAGS_XATTR "user.imap.flags"

struct ImapfsFs {
	ImapfsTree *tree;
	ImapfsFsOwner owner;
	GMutex lock;
	GHashTable *lookups; /* ino -> kernel lookup count; by lock */
	/* dir ino -> digest of the listing the kernel last got; by lock */
	GHashTable *listed;
	/* OpenFile * not released yet (a lazy unmount never releases
	 * them); protected by lock */
	GHashTable *open_files;
	struct fuse_session *se;
	GThreadPool *notifier;	  /* started on first use; by lock */
	gboolean notices_stopped; /* imapfs_fs_stop_notices(); by lock */
};

/* What the kernel must forget (see ImapfsChangeKind). */
typedef struct {
	ImapfsChangeKind kind;
	fuse_ino_t parent, child;
	char *name; /* NULL for DIR and ATTR */
} Notice;

/* An open message file. */
typedef struct {
	ImapfsReadahead ra; /* shared by the handle's concurrent reads */
	/* A new message: whether this handle writes, and who opened it.
	 * A child that inherited the descriptor (the shell's
	 * "{ cat a; cat b; } > f") closes it long before the writing is
	 * done: only the opener's close() stores the message. */
	gboolean writable;
	pid_t opener;
} OpenFile;

ImapfsFs *imapfs_fs_new(ImapfsTree *tree, const ImapfsFsOwner *owner)
{
	ImapfsFs *fs = g_new0(ImapfsFs, 1);

	fs->tree = tree;
	fs->owner = *owner;
	g_mutex_init(&fs->lock);
	fs->lookups = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free,
					    NULL);
	fs->listed = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free,
					   g_free);
	fs->open_files = g_hash_table_new_full(NULL, NULL, g_free, NULL);
	return fs;
}

void imapfs_fs_free(ImapfsFs *fs)
{
	if (fs == NULL)
		return;
	imapfs_fs_stop_notices(fs);
	g_hash_table_unref(fs->lookups);
	g_hash_table_unref(fs->listed);
	g_hash_table_unref(fs->open_files);
	g_mutex_clear(&fs->lock);
	g_free(fs);
}

int imapfs_fs_errno(const GError *error)
{
	if (error == NULL || error->domain != IMAPFS_ERROR)
		return EIO;
	switch ((ImapfsErrorCode)error->code) {
	case IMAPFS_ERROR_NONEXISTENT:
		return ENOENT;
	case IMAPFS_ERROR_ALREADYEXISTS:
		return EEXIST;
	case IMAPFS_ERROR_OVERQUOTA:
		return EDQUOT;
	case IMAPFS_ERROR_NOPERM:
		return EACCES;
	case IMAPFS_ERROR_UIDVALIDITY_CHANGED:
		return ESTALE;
	case IMAPFS_ERROR_TOOBIG:
		return EFBIG;
	case IMAPFS_ERROR_MODIFIED:
		return EBUSY;
	case IMAPFS_ERROR_BUSY:
		return EBUSY;
	case IMAPFS_ERROR_READONLY:
		return EROFS;
	case IMAPFS_ERROR_NOTEMPTY:
		return ENOTEMPTY;
	case IMAPFS_ERROR_INVALID:
		return EINVAL;
	case IMAPFS_ERROR_NOTPERMITTED:
		return EPERM;
	case IMAPFS_ERROR_CROSSDEVICE:
		return EXDEV;
	case IMAPFS_ERROR_UNSUPPORTED:
		return EOPNOTSUPP;
	case IMAPFS_ERROR_INTERRUPTED:
		return EINTR;
	default:
		return EIO;
	}
}

static ImapfsFs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* Replies with the errno for @error; logs what is not a plain ENOENT. */
static void reply_error(fuse_req_t req, const char *op, GError *error)
{
	int err = imapfs_fs_errno(error);

	if (err != ENOENT && err != EINTR)
		g_warning("%s failed: %s", op, error ? error->message : "?");
	else
		imapfs_trace(IMAPFS_TRACE_FUSE, "%s: %s", op, error->message);
	fuse_reply_err(req, err);
	g_clear_error(&error);
}

static gboolean req_interrupted(gpointer req)
{
	return fuse_req_interrupted(req);
}

static void end_interruptible(fuse_req_t *req)
{
	imapfs_cancel_set(NULL, NULL);
}

/*
 * Lets every wait below give up when the kernel interrupts @req (Ctrl-C
 * on a read stuck on the network), until the handler returns. Only for
 * handlers that reply last: the question asks @req, which the reply
 * frees. Changes are not interruptible: their outcome must be known, and
 * the timeout bounds them.
 */
#define INTERRUPTIBLE(req)                                           \
	fuse_req_t interruptible_                                    \
		__attribute__((cleanup(end_interruptible))) = (req); \
	imapfs_cancel_set(req_interrupted, interruptible_)

static void notice_free(Notice *n)
{
	g_free(n->name);
	g_free(n);
}

static int notify(ImapfsFs *fs, const Notice *n)
{
	switch (n->kind) {
	case IMAPFS_CHANGE_DIR:
	case IMAPFS_CHANGE_STALE:
		return fuse_lowlevel_notify_inval_inode(fs->se, n->child, 0, 0);
	case IMAPFS_CHANGE_ATTR:
		/* A negative offset: the attributes only. */
		return fuse_lowlevel_notify_inval_inode(fs->se, n->child, -1,
							0);
	case IMAPFS_CHANGE_GONE:
		return fuse_lowlevel_notify_delete(fs->se, n->parent, n->child,
						   n->name, strlen(n->name));
	case IMAPFS_CHANGE_ENTRY:
	default:
		return fuse_lowlevel_notify_inval_entry(
			fs->se, n->parent, n->name, strlen(n->name));
	}
}

static void send_notice(gpointer data, gpointer user_data)
{
	Notice *n = data;
	ImapfsFs *fs = user_data;
	int r = notify(fs, n);

	/* ENOENT: the kernel did not know it, nothing to forget. */
	if (r != 0 && r != -ENOENT)
		imapfs_trace(IMAPFS_TRACE_FUSE, "invalidating \"%s\": %s",
			     n->name ? n->name : "inode", g_strerror(-r));
	notice_free(n);
}

/*
 * Queues a notice for the notifier thread. Never sent from the thread
 * that asks: a request handler may be the one asking, and the kernel
 * holds the directory locked until that request is answered (libfuse
 * documents the deadlock).
 */
static void queue_notice(ImapfsFs *fs, ImapfsChangeKind kind, fuse_ino_t parent,
			 fuse_ino_t child, const char *name)
{
	/* What the kernel never looked up it holds nothing of: a notice
	 * would only cost a write answered ENOENT (an expunge of 10,000
	 * messages nobody listed). */
	gboolean about_child = kind == IMAPFS_CHANGE_GONE ||
			       kind == IMAPFS_CHANGE_STALE ||
			       kind == IMAPFS_CHANGE_ATTR;
	g_mutex_lock(&fs->lock);
	gboolean known =
		!about_child || g_hash_table_contains(fs->lookups, &child);
	g_mutex_unlock(&fs->lock);
	if (!known)
		return;
	Notice *n = g_new(Notice, 1);

	n->kind = kind;
	n->parent = parent;
	n->child = child;
	n->name = g_strdup(name);
	g_mutex_lock(&fs->lock);
	if (fs->notifier == NULL && !fs->notices_stopped)
		fs->notifier =
			g_thread_pool_new(send_notice, fs, 1, FALSE, NULL);
	if (fs->notifier)
		g_thread_pool_push(fs->notifier, n, NULL);
	else
		notice_free(n);
	g_mutex_unlock(&fs->lock);
}

void imapfs_fs_stop_notices(ImapfsFs *fs)
{
	g_mutex_lock(&fs->lock);
	GThreadPool *notifier = g_steal_pointer(&fs->notifier);
	fs->notices_stopped = TRUE;
	g_mutex_unlock(&fs->lock);
	/* Those still queued are moot once unmounting. */
	if (notifier)
		g_thread_pool_free(notifier, TRUE, TRUE);
}

/* Makes the kernel forget @name in @parent, once the request in hand is
 * answered. */
static void forget_name(ImapfsFs *fs, fuse_ino_t parent, const char *name)
{
	queue_notice(fs, IMAPFS_CHANGE_ENTRY, parent, 0, name);
}

/* The tree learnt of a change on the server (another client's). */
static void on_tree_change(ImapfsChangeKind kind, guint64 parent, guint64 child,
			   const char *name, gpointer data)
{
	ImapfsFs *fs = data;

	if (fs->se)
		queue_notice(fs, kind, parent, child, name);
}

void imapfs_fs_set_session(ImapfsFs *fs, struct fuse_session *se)
{
	fs->se = se;
	imapfs_tree_set_change_func(fs->tree, on_tree_change, fs);
}

static void fill_stat(ImapfsFs *fs, const ImapfsAttr *attr, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = attr->ino;
	st->st_uid = fs->owner.uid;
	st->st_gid = fs->owner.gid;
	st->st_mtime = st->st_ctime = st->st_atime = attr->mtime;
	gboolean ro = fs->owner.read_only || attr->kind == IMAPFS_NODE_PART ||
		      attr->kind == IMAPFS_NODE_PART_DIR;

	if (attr->kind == IMAPFS_NODE_DIR ||
	    attr->kind == IMAPFS_NODE_PART_DIR) {
		st->st_mode = S_IFDIR | ((ro ? 0555 : 0755) & ~fs->owner.umask);
		st->st_nlink = 2;
	} else {
		/* Writable-looking, so rm does not ask; writing into a
		 * message still fails (EPERM). */
		st->st_mode = S_IFREG | ((ro ? 0444 : 0644) & ~fs->owner.umask);
		st->st_nlink = 1;
		st->st_size = attr->size;
		st->st_blocks = (attr->size + 511) / 512;
	}
	st->st_blksize = 64 * 1024;
}

static double timeout_for(const ImapfsAttr *attr)
{
	/* A new file changes size while written, and its name goes soon. */
	if (attr->kind == IMAPFS_NODE_PENDING)
		return 0;
	/* A message and its parts never change; a mailbox does. */
	return attr->kind == IMAPFS_NODE_DIR ? DIR_TIMEOUT : MESSAGE_TIMEOUT;
}

static void fill_entry(ImapfsFs *fs, const ImapfsAttr *attr,
		       struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = attr->ino;
	/* Inode numbers are never reused for another file. */
	e->generation = 1;
	e->attr_timeout = e->entry_timeout = timeout_for(attr);
	fill_stat(fs, attr, &e->attr);
}

/* --- lookup accounting -------------------------------------------------------
 */

/* The kernel now holds one more reference to @ino. */
static void count_lookup(ImapfsFs *fs, guint64 ino)
{
	g_mutex_lock(&fs->lock);
	guint64 *count = g_hash_table_lookup(fs->lookups, &ino);
	if (count == NULL) {
		guint64 *key = g_new(guint64, 2);
		key[0] = ino;
		key[1] = 0;
		g_hash_table_insert(fs->lookups, key, key);
		count = key;
	}
	count[1]++;
	g_mutex_unlock(&fs->lock);
}

static void forget_one(ImapfsFs *fs, guint64 ino, guint64 nlookup)
{
	g_mutex_lock(&fs->lock);
	guint64 *count = g_hash_table_lookup(fs->lookups, &ino);
	if (count == NULL || count[1] < nlookup)
		g_warning("kernel forgot inode %" G_GUINT64_FORMAT
			  " more often than it looked it up",
			  ino);
	else if ((count[1] -= nlookup) == 0)
		g_hash_table_remove(fs->lookups, &ino);
	g_mutex_unlock(&fs->lock);
}

/* --- operations
 * ---------------------------------------------------------------- */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	/* Listings come with attributes; readdirplus saves a lookup per
	 * file for ls -l, find and rsync. */
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	INTERRUPTIBLE(req);
	ImapfsFs *fs = fs_of(req);
	GError *error = NULL;
	ImapfsAttr attr;
	struct fuse_entry_param e;

	if (!imapfs_tree_lookup(fs->tree, parent, name, &attr, &error)) {
		reply_error(req, "lookup", error);
		return;
	}
	fill_entry(fs, &attr, &e);
	count_lookup(fs, e.ino);
	if (fuse_reply_entry(req, &e) != 0)
		forget_one(fs, e.ino, 1);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	forget_one(fs_of(req), ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count,
			    struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		forget_one(fs_of(req), forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	INTERRUPTIBLE(req);
	ImapfsFs *fs = fs_of(req);
	GError *error = NULL;
	ImapfsAttr attr;
	struct stat st;

	if (!imapfs_tree_getattr(fs->tree, ino, &attr, &error)) {
		reply_error(req, "getattr", error);
		return;
	}
	fill_stat(fs, &attr, &st);
	fuse_reply_attr(req, &st, timeout_for(&attr));
}

/* A digest of what readdir would return, to tell whether the kernel's
 * cached copy is still right. */
static char *digest_entries(GPtrArray *entries, guint64 reads)
{
	g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA1);

	/* Field by field: the struct's padding is not part of the state. */
	g_checksum_update(sum, (const guchar *)&reads, sizeof(reads));
	for (guint i = 0; i < entries->len; i++) {
		ImapfsDirEntry *e = entries->pdata[i];
		guint64 fields[4] = {e->attr.ino, e->attr.kind, e->attr.size,
				     (guint64)e->attr.mtime};
		g_checksum_update(sum, (const guchar *)e->name,
				  strlen(e->name) + 1);
		g_checksum_update(sum, (const guchar *)fields, sizeof(fields));
	}
	return g_strdup(g_checksum_get_string(sum));
}

/* Whether the kernel already holds this listing of @ino; remembers it. */
static gboolean listing_unchanged(ImapfsFs *fs, fuse_ino_t ino,
				  GPtrArray *entries)
{
	/* Files read since the last listing: send it again, so that their
	 * attributes come back with it rather than by one GETATTR each. */
	g_autofree char *digest =
		digest_entries(entries, imapfs_tree_dir_reads(fs->tree, ino));
	guint64 key = ino;

	g_mutex_lock(&fs->lock);
	const char *last = g_hash_table_lookup(fs->listed, &key);
	gboolean same = g_strcmp0(last, digest) == 0;
	if (!same)
		g_hash_table_replace(fs->listed, g_memdup2(&key, sizeof(key)),
				     g_steal_pointer(&digest));
	g_mutex_unlock(&fs->lock);
	return same;
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	INTERRUPTIBLE(req);
	GError *error = NULL;
	ImapfsFs *fs = fs_of(req);
	GPtrArray *entries = imapfs_tree_readdir(fs->tree, ino, &error);

	if (entries == NULL) {
		reply_error(req, "opendir", error);
		return;
	}
	/* The kernel may serve readdir from its cache while the listing is
	 * what it got last time: a repeated ls costs no readdir at all. */
	fi->cache_readdir = 1;
	fi->keep_cache = listing_unchanged(fs, ino, entries);
	fi->fh = (uint64_t)(uintptr_t)entries;
	if (fuse_reply_open(req, fi) != 0)
		g_ptr_array_unref(entries);
}

/* Adds one entry; returns its size in the buffer, 0 when it did not fit. */
static size_t add_dirent(fuse_req_t req, ImapfsFs *fs, char *buf, size_t room,
			 const char *name, const ImapfsAttr *attr, off_t next,
			 gboolean plus)
{
	struct fuse_entry_param e;
	size_t n;

	fill_entry(fs, attr, &e);
	if (!plus)
		return fuse_add_direntry(req, buf, room, name, &e.attr, next);
	n = fuse_add_direntry_plus(req, buf, room, name, &e, next);
	if (n <= room && strcmp(name, ".") && strcmp(name, ".."))
		count_lookup(fs, e.ino);
	return n;
}

/* Entries 0 and 1 are "." and ".."; entry i + 2 is entries[i]. */
static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi, gboolean plus)
{
	ImapfsFs *fs = fs_of(req);
	GPtrArray *entries = (GPtrArray *)(uintptr_t)fi->fh;
	g_autofree char *buf = g_malloc(size);
	size_t used = 0;

	for (off_t i = off; i < (off_t)entries->len + 2; i++) {
		ImapfsAttr dot = {.ino = ino, .kind = IMAPFS_NODE_DIR};
		const char *name = i == 0 ? "." : i == 1 ? ".." : NULL;
		const ImapfsAttr *attr = &dot;
		if (name == NULL) {
			ImapfsDirEntry *e = entries->pdata[i - 2];
			name = e->name;
			attr = &e->attr;
		}
		size_t n = add_dirent(req, fs, buf + used, size - used, name,
				      attr, i + 1, plus);
		if (n > size - used)
			break;
		used += n;
	}
	fuse_reply_buf(req, buf, used);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, FALSE);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off, struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, TRUE);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	g_ptr_array_unref((GPtrArray *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static void forget_open_file(ImapfsFs *fs, OpenFile *of)
{
	g_mutex_lock(&fs->lock);
	g_hash_table_remove(fs->open_files, of);
	g_mutex_unlock(&fs->lock);
}

static OpenFile *new_open_file(ImapfsFs *fs, guint64 size)
{
	OpenFile *of = g_new0(OpenFile, 1);

	of->ra.size = size;
	g_mutex_lock(&fs->lock);
	g_hash_table_add(fs->open_files, of);
	g_mutex_unlock(&fs->lock);
	return of;
}

static gboolean wants_write(const struct fuse_file_info *fi)
{
	return (fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC);
}

/* A new message still being written: its bytes change, so no caching. */
static void open_pending(fuse_req_t req, fuse_ino_t ino,
			 struct fuse_file_info *fi)
{
	ImapfsFs *fs = fs_of(req);
	GError *error = NULL;

	if (!imapfs_tree_open_pending(fs->tree, ino, wants_write(fi),
				      fi->flags & O_TRUNC, &error)) {
		reply_error(req, "open", error);
		return;
	}
	OpenFile *of = new_open_file(fs, 0);
	of->writable = wants_write(fi);
	of->opener = fuse_req_ctx(req)->pid;
	fi->direct_io = 1;
	fi->fh = (uint64_t)(uintptr_t)of;
	if (fuse_reply_open(req, fi) != 0) {
		forget_open_file(fs, of);
		imapfs_tree_release(fs->tree, ino);
	}
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	INTERRUPTIBLE(req);
	ImapfsFs *fs = fs_of(req);
	GError *error = NULL;
	guint64 size;
	gboolean changed;

	if (imapfs_tree_is_pending(fs->tree, ino)) {
		open_pending(req, ino, fi);
		return;
	}
	if (wants_write(fi)) {
		/* Messages never change on IMAP. */
		fuse_reply_err(req, fs->owner.read_only ? EROFS : EPERM);
		return;
	}
	if (!imapfs_tree_open(fs->tree, ino, &size, &changed, &error)) {
		reply_error(req, "open", error);
		return;
	}
	OpenFile *of = new_open_file(fs, size);
	/* With a wrong RFC822.SIZE the kernel's idea of the size is wrong
	 * too; direct I/O makes it read on until we report the end. */
	fi->keep_cache = !changed;
	fi->direct_io = changed;
	/* Nothing to do at close(): without this, every close of every
	 * message read is one more round trip to us (grep -r: 10,000). */
	fi->noflush = 1;
	fi->fh = (uint64_t)(uintptr_t)of;
	if (fuse_reply_open(req, fi) != 0)
		forget_open_file(fs, of);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	INTERRUPTIBLE(req);
	GError *error = NULL;
	OpenFile *of = (OpenFile *)(uintptr_t)fi->fh;
	g_autofree char *buf = g_malloc(size);
	gssize n = imapfs_tree_read(fs_of(req)->tree, ino, off, size, buf,
				    &of->ra, &error);

	if (n < 0)
		reply_error(req, "read", error);
	else
		fuse_reply_buf(req, buf, n);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	GError *error = NULL;
	gssize n = imapfs_tree_write(fs_of(req)->tree, ino, off, buf, size,
				     &error);

	if (n < 0)
		reply_error(req, "write", error);
	else
		fuse_reply_write(req, n);
}

/* close(): a new message goes to the server now, so that close() can
 * say whether it got there. */
static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	OpenFile *of = (OpenFile *)(uintptr_t)fi->fh;
	GError *error = NULL;

	if (imapfs_tree_is_pending(fs_of(req)->tree, ino) && of->writable &&
	    fuse_req_ctx(req)->pid == of->opener &&
	    !imapfs_tree_flush(fs_of(req)->tree, ino, TRUE, &error))
		reply_error(req, "close", error);
	else
		fuse_reply_err(req, 0);
}

static void op_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	ImapfsFs *fs = fs_of(req);

	OpenFile *of = (OpenFile *)(uintptr_t)fi->fh;
	GError *error = NULL;

	/* The last close of a handle whose opener never closed it (it
	 * exited after handing it on): store now, or nobody will. Nobody
	 * can be told of a failure any more but the log. A failed store
	 * is not tried again: that close() already said it failed. */
	if (imapfs_tree_is_pending(fs->tree, ino) && of->writable &&
	    !imapfs_tree_flush(fs->tree, ino, FALSE, &error)) {
		g_warning("%s", error->message);
		g_clear_error(&error);
	}
	if (imapfs_tree_is_pending(fs->tree, ino))
		imapfs_tree_release(fs->tree, ino);
	forget_open_file(fs, of);
	fuse_reply_err(req, 0);
}

static void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
			       struct fuse_file_info *fi_in, fuse_ino_t ino_out,
			       off_t off_out, struct fuse_file_info *fi_out,
			       size_t len, int flags)
{
	INTERRUPTIBLE(req);
	GError *error = NULL;
	gsize copied;

	if (!imapfs_tree_copy_range(fs_of(req)->tree, ino_in, off_in, ino_out,
				    off_out, len, &copied, &error))
		reply_error(req, "copy_file_range", error);
	else
		fuse_reply_write(req, copied);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	INTERRUPTIBLE(req);
	struct statvfs st = {0};

	st.f_bsize = st.f_frsize = 4096;
	st.f_namemax = 255;
	fuse_reply_statfs(req, &st);
}

/* Replies with @data as an xattr value or list, as getxattr and
 * listxattr do: its size when @size is 0, ERANGE when it does not fit. */
static void reply_xattr_data(fuse_req_t req, const char *data, size_t len,
			     size_t size)
{
	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (len > size)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, data, len);
}

/* The attribute @name of @ino, or NULL. */
static char *find_xattr(GPtrArray *xattrs, const char *name)
{
	for (guint i = 0; xattrs && i < xattrs->len; i++) {
		ImapfsXattr *x = xattrs->pdata[i];
		if (strcmp(x->name, name) == 0)
			return g_strdup(x->value);
	}
	return NULL;
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			size_t size)
{
	INTERRUPTIBLE(req);
	/* Only user.* attributes exist here. Saying so for the others
	 * (security.selinux, system.posix_acl_access), rather than "no such
	 * attribute", lets ls -l and cp -a stop asking after the first file
	 * of the mount instead of asking for every file: a round trip each.
	 * ENOSYS would switch off every attribute for the whole mount. */
	if (!g_str_has_prefix(name, "user.")) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	g_autoptr(GPtrArray) xattrs =
		imapfs_tree_xattrs(fs_of(req)->tree, ino, name, NULL);
	g_autofree char *value = find_xattr(xattrs, name);
	if (value == NULL)
		fuse_reply_err(req, ENODATA);
	else
		reply_xattr_data(req, value, strlen(value), size);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	INTERRUPTIBLE(req);
	GError *error = NULL;
	g_autoptr(GPtrArray) xattrs =
		imapfs_tree_xattrs(fs_of(req)->tree, ino, NULL, &error);
	g_autoptr(GString) names = g_string_new(NULL);

	if (xattrs == NULL) {
		reply_error(req, "listxattr", error);
		return;
	}
	/* Names one after another, each with its NUL. */
	for (guint i = 0; i < xattrs->len; i++) {
		const char *name = ((ImapfsXattr *)xattrs->pdata[i])->name;
		g_string_append_len(names, name, strlen(name) + 1);
	}
	reply_xattr_data(req, names->str, names->len, size);
}

/* Replies EROFS on a read-only mount; TRUE when the caller may go on. */
static gboolean writable(fuse_req_t req)
{
	if (!fs_of(req)->owner.read_only)
		return TRUE;
	fuse_reply_err(req, EROFS);
	return FALSE;
}

/* Whether @name in @parent is (or would be) inside a parts directory,
 * or is one: they show what the message holds and change with it only. */
static gboolean in_parts(ImapfsFs *fs, fuse_ino_t parent, const char *name)
{
	ImapfsAttr attr;

	if (imapfs_tree_is_part(fs->tree, parent))
		return TRUE;
	return name &&
	       imapfs_tree_lookup(fs->tree, parent, name, &attr, NULL) &&
	       attr.kind == IMAPFS_NODE_PART_DIR;
}

/* writable(), and EPERM for a change inside a parts directory. */
static gboolean changeable(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	if (!writable(req))
		return FALSE;
	if (!in_parts(fs_of(req), parent, name))
		return TRUE;
	fuse_reply_err(req, EPERM);
	return FALSE;
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi)
{
	ImapfsFs *fs = fs_of(req);
	ImapfsSetAttr set = {0};
	GError *error = NULL;
	ImapfsAttr now;
	struct stat st;

	set.set_size = (to_set & FUSE_SET_ATTR_SIZE) != 0;
	set.size = attr->st_size;
	set.set_mtime =
		(to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) != 0;
	set.mtime = to_set & FUSE_SET_ATTR_MTIME_NOW
			    ? g_get_real_time() / G_USEC_PER_SEC
			    : attr->st_mtime;
	set.set_other = (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID |
				   FUSE_SET_ATTR_GID)) != 0;
	if ((set.set_size || set.set_mtime || set.set_other) &&
	    !changeable(req, ino, NULL))
		return;
	if (!imapfs_tree_setattr(fs->tree, ino, &set, &now, &error)) {
		reply_error(req, "setattr", error);
		return;
	}
	fill_stat(fs, &now, &st);
	fuse_reply_attr(req, &st, timeout_for(&now));
}

/* Only messages and mailboxes exist: no devices, fifos or links. */
static void refuse_kind(fuse_req_t req)
{
	fuse_reply_err(req, fs_of(req)->owner.read_only ? EROFS : EPERM);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, dev_t rdev)
{
	refuse_kind(req);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		       const char *name)
{
	refuse_kind(req);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		    const char *newname)
{
	refuse_kind(req);
}

/* FALSE when the reply did not reach the kernel. */
static gboolean reply_new_entry(fuse_req_t req, const ImapfsAttr *attr,
				struct fuse_file_info *fi)
{
	ImapfsFs *fs = fs_of(req);
	struct fuse_entry_param e;

	fill_entry(fs, attr, &e);
	count_lookup(fs, e.ino);
	if ((fi ? fuse_reply_create(req, &e, fi) : fuse_reply_entry(req, &e)) ==
	    0)
		return TRUE;
	forget_one(fs, e.ino, 1);
	return FALSE;
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	GError *error = NULL;
	ImapfsAttr attr;

	if (!changeable(req, parent, NULL))
		return;
	if (!imapfs_tree_mkdir(fs_of(req)->tree, parent, name, &attr, &error))
		reply_error(req, "mkdir", error);
	else
		reply_new_entry(req, &attr, NULL);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	ImapfsFs *fs = fs_of(req);
	GError *error = NULL;
	ImapfsAttr attr;

	if (!changeable(req, parent, NULL))
		return;
	if (!S_ISREG(mode)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (!imapfs_tree_create(fs->tree, parent, name, &attr, &error)) {
		reply_error(req, "create", error);
		return;
	}
	OpenFile *of = new_open_file(fs, 0);
	of->writable = TRUE;
	of->opener = fuse_req_ctx(req)->pid;
	fi->direct_io = 1;
	fi->fh = (uint64_t)(uintptr_t)of;
	if (!reply_new_entry(req, &attr, fi)) {
		/* Interrupted: the kernel has no handle to release. */
		forget_open_file(fs, of);
		imapfs_tree_release(fs->tree, attr.ino);
	}
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	GError *error = NULL;

	if (!changeable(req, parent, NULL))
		return;
	if (!imapfs_tree_unlink(fs_of(req)->tree, parent, name, &error))
		reply_error(req, "unlink", error);
	else
		fuse_reply_err(req, 0);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	GError *error = NULL;

	if (!changeable(req, parent, name))
		return;
	if (!imapfs_tree_rmdir(fs_of(req)->tree, parent, name, &error))
		reply_error(req, "rmdir", error);
	else
		fuse_reply_err(req, 0);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	ImapfsFs *fs = fs_of(req);
	GError *error = NULL;
	ImapfsAttr attr;

	if (!changeable(req, parent, name) ||
	    (newparent != parent && !changeable(req, newparent, NULL)))
		return;
	if (flags & RENAME_EXCHANGE) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if ((flags & RENAME_NOREPLACE) &&
	    imapfs_tree_lookup(fs->tree, newparent, newname, &attr, NULL)) {
		fuse_reply_err(req, EEXIST);
		return;
	}
	if (!imapfs_tree_rename(fs->tree, parent, name, newparent, newname,
				&error)) {
		reply_error(req, "rename", error);
		return;
	}
	fuse_reply_err(req, 0);
	/* The kernel now takes @newname for what was moved; what is there
	 * is whatever the tree says (a message lands under its new UID, and
	 * never replaces one). */
	forget_name(fs, newparent, newname);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			const char *value, size_t size, int flags)
{
	GError *error = NULL;

	if (strcmp(name, FLAGS_XATTR) != 0) {
		fuse_reply_err(req, g_str_has_prefix(name, "user.")
					    ? ENOTSUP
					    : EOPNOTSUPP);
		return;
	}
	if (!changeable(req, ino, NULL))
		return;
	g_autofree char *flags_str = g_strndup(value, size);
	if (strlen(flags_str) != size) {
		fuse_reply_err(req, EINVAL); /* a NUL inside */
		return;
	}
	if (!imapfs_tree_set_flags(fs_of(req)->tree, ino, flags_str, &error))
		reply_error(req, "setxattr", error);
	else
		fuse_reply_err(req, 0);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	GError *error = NULL;

	if (strcmp(name, FLAGS_XATTR) != 0) {
		fuse_reply_err(req, g_str_has_prefix(name, "user.")
					    ? ENODATA
					    : EOPNOTSUPP);
		return;
	}
	if (!writable(req))
		return;
	if (!imapfs_tree_set_flags(fs_of(req)->tree, ino, "", &error))
		reply_error(req, "removexattr", error);
	else
		fuse_reply_err(req, 0);
}

static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.release = op_release,
	.copy_file_range = op_copy_file_range,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_releasedir,
	.statfs = op_statfs,
	.setxattr = op_setxattr,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.removexattr = op_removexattr,
	.create = op_create,
};

const struct fuse_lowlevel_ops *imapfs_fs_ops(void)
{
	return &ops;
}
