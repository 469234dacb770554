/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "imapfs/error.h"
#include "imapfs/fuse-ops.h"
#include "imapfs/log.h"

/* Message files never change, so the kernel may keep what it learnt for
 * long; directories change whenever mail arrives. */
#define MESSAGE_TIMEOUT 3600.0
#define DIR_TIMEOUT 1.0

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
};

/* An open message file. */
typedef struct {
	ImapfsReadahead ra; /* shared by the handle's concurrent reads */
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

	if (err != ENOENT)
		g_warning("%s failed: %s", op, error ? error->message : "?");
	else
		imapfs_trace(IMAPFS_TRACE_FUSE, "%s: %s", op, error->message);
	fuse_reply_err(req, err);
	g_clear_error(&error);
}

static void fill_stat(ImapfsFs *fs, const ImapfsAttr *attr, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = attr->ino;
	st->st_uid = fs->owner.uid;
	st->st_gid = fs->owner.gid;
	st->st_mtime = st->st_ctime = st->st_atime = attr->mtime;
	if (attr->kind == IMAPFS_NODE_DIR) {
		st->st_mode = S_IFDIR | (0555 & ~fs->owner.umask);
		st->st_nlink = 2;
	} else {
		st->st_mode = S_IFREG | (0444 & ~fs->owner.umask);
		st->st_nlink = 1;
		st->st_size = attr->size;
		st->st_blocks = (attr->size + 511) / 512;
	}
	st->st_blksize = 64 * 1024;
}

static double timeout_for(const ImapfsAttr *attr)
{
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
static char *digest_entries(GPtrArray *entries)
{
	g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA1);

	for (guint i = 0; i < entries->len; i++) {
		ImapfsDirEntry *e = entries->pdata[i];
		g_checksum_update(sum, (const guchar *)e->name,
				  strlen(e->name) + 1);
		g_checksum_update(sum, (const guchar *)&e->attr,
				  sizeof(e->attr));
	}
	return g_strdup(g_checksum_get_string(sum));
}

/* Whether the kernel already holds this listing of @ino; remembers it. */
static gboolean listing_unchanged(ImapfsFs *fs, fuse_ino_t ino,
				  GPtrArray *entries)
{
	g_autofree char *digest = digest_entries(entries);
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

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	GError *error = NULL;
	guint64 size;
	gboolean changed;

	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (!imapfs_tree_open(fs_of(req)->tree, ino, &size, &changed, &error)) {
		reply_error(req, "open", error);
		return;
	}
	OpenFile *of = g_new0(OpenFile, 1);
	of->ra.size = size;
	/* With a wrong RFC822.SIZE the kernel's idea of the size is wrong
	 * too; direct I/O makes it read on until we report the end. */
	fi->keep_cache = !changed;
	fi->direct_io = changed;
	fi->fh = (uint64_t)(uintptr_t)of;
	ImapfsFs *fs = fs_of(req);
	g_mutex_lock(&fs->lock);
	g_hash_table_add(fs->open_files, of);
	g_mutex_unlock(&fs->lock);
	if (fuse_reply_open(req, fi) != 0)
		forget_open_file(fs, of);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
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

static void op_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	forget_open_file(fs_of(req), (OpenFile *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs st = {0};

	st.f_bsize = st.f_frsize = 4096;
	st.f_namemax = 255;
	fuse_reply_statfs(req, &st);
}

/* Getting an xattr that does not exist must be ENODATA: ENOSYS would make
 * the kernel stop asking for the whole mount. */
static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			size_t size)
{
	/* Only user.* attributes exist here. Saying so for the others
	 * (security.selinux, system.posix_acl_access), rather than "no such
	 * attribute", lets ls -l and cp -a stop asking after the first file
	 * of the mount instead of asking for every file: a round trip each.
	 * ENOSYS would switch off every attribute for the whole mount. */
	if (g_str_has_prefix(name, "user."))
		fuse_reply_err(req, ENODATA);
	else
		fuse_reply_err(req, EOPNOTSUPP);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	if (size == 0)
		fuse_reply_xattr(req, 0);
	else
		fuse_reply_buf(req, NULL, 0);
}

/* Every change is refused until writing is implemented. */
static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, dev_t rdev)
{
	fuse_reply_err(req, EROFS);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	fuse_reply_err(req, EROFS);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, EROFS);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	fuse_reply_err(req, EROFS);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		       const char *name)
{
	fuse_reply_err(req, EROFS);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		    const char *newname)
{
	fuse_reply_err(req, EROFS);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			const char *value, size_t size, int flags)
{
	fuse_reply_err(req, EROFS);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	fuse_reply_err(req, EROFS);
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
	.rmdir = op_unlink,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.open = op_open,
	.read = op_read,
	.release = op_release,
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
