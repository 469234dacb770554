/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "imapfs/disk-cache.h"
#include "imapfs/error.h"
#include "imapfs/log.h"

#define VERSION_LINE "imapfs-cache 1\n"
#define BLOCK_MAGIC "IMFSBLK1"
#define META_MAGIC "IMFSMET1"
#define MAGIC_LEN 8
/* Header after magic, key length and key: data length, XXH3 of the data,
 * XXH3 of the header up to here. */
#define TRAILER_LEN 24
/* Sections longer than this are hashed to keep file names short. */
#define MAX_HEX_SECTION 64

typedef struct {
	char *rel;    /* "<mb>/<uidvalidity>/<name>" under blocks/: the key */
	guint64 size; /* of the file, header included */
	GList link;   /* in dc->lru, most recent at the head; data is self */
} Entry;

struct ImapfsDiskCache {
	char *account;
	char *blocks_dir;
	char *meta_dir;
	guint64 max_bytes;
	int lock_fd;	   /* holds the flock() on dir/lock while open */
	gint warned_read;  /* atomic: a damaged file or read error was warned */
	gint warned_write; /* atomic: a failed write was warned */
	GMutex lock;
	GHashTable *entries; /* rel -> Entry *; protected by dc->lock */
	GQueue lru;	     /* of Entry; protected by dc->lock */
	guint64 bytes;	     /* in entries; protected by dc->lock */
	guint64 pending;     /* by puts in progress; protected by dc->lock */
	gint64 last_stamp;   /* last mtime given, ns; protected by dc->lock */
};

static void entry_free(gpointer p)
{
	Entry *e = p;

	g_free(e->rel);
	g_free(e);
}

static void complain(gint *warned, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

/* The first failure of a kind is a warning; the repeats (a full disk fails
 * every put) are only traced. */
static void complain(gint *warned, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	g_autofree char *msg = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	if (g_atomic_int_compare_and_exchange(warned, 0, 1))
		g_warning("%s (further such disk cache errors are traced only)",
			  msg);
	else
		imapfs_trace(IMAPFS_TRACE_CACHE, "%s", msg);
}

static gboolean fail_errno(GError **error, const char *what, const char *path)
{
	int err = errno;
	g_autofree char *q = imapfs_log_quote(path);

	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_FAILED, "%s \"%s\": %s",
		    what, q, g_strerror(err));
	return FALSE;
}

/* rm -rf, best effort, never following a symbolic link out of the cache. */
static void remove_tree(const char *path)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		return;
	if (!S_ISDIR(st.st_mode)) {
		unlink(path);
		return;
	}
	g_autoptr(GDir) d = g_dir_open(path, 0, NULL);
	const char *name;
	while (d && (name = g_dir_read_name(d))) {
		g_autofree char *child = g_build_filename(path, name, NULL);
		remove_tree(child);
	}
	rmdir(path);
}

/* File names: a fixed-size, harmless directory name for any mailbox; the
 * header holds the real key, so a collision is only a miss. */
static char *mailbox_dir(ImapfsDiskCache *dc, const char *mailbox)
{
	g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);

	g_checksum_update(sum, (const guchar *)dc->account,
			  strlen(dc->account) + 1);
	g_checksum_update(sum, (const guchar *)mailbox, strlen(mailbox));
	return g_strndup(g_checksum_get_string(sum), 32);
}

/* Hex, which is safe in a file name whatever the section holds. */
static char *section_name(const char *section)
{
	gsize len = strlen(section);

	if (len > MAX_HEX_SECTION) {
		g_autofree char *sum = g_compute_checksum_for_string(
			G_CHECKSUM_SHA256, section, len);
		return g_strdup_printf("h%.32s", sum);
	}
	GString *hex = g_string_sized_new(2 * len);
	for (gsize i = 0; i < len; i++)
		g_string_append_printf(hex, "%02x", (guchar)section[i]);
	return g_string_free(hex, FALSE);
}

static char *block_rel(ImapfsDiskCache *dc, const ImapfsBlockKey *key)
{
	g_autofree char *mb = mailbox_dir(dc, key->mailbox);
	g_autofree char *sec = section_name(key->section);

	return g_strdup_printf("%s/%u/%u-%" G_GUINT64_FORMAT "%s%s", mb,
			       key->uidvalidity, key->uid, key->block,
			       *sec ? "-" : "", sec);
}

static char *meta_path(ImapfsDiskCache *dc, const char *mailbox)
{
	g_autofree char *mb = mailbox_dir(dc, mailbox);

	return g_build_filename(dc->meta_dir, mb, NULL);
}

static void append_u32(GByteArray *b, guint32 v)
{
	v = GUINT32_TO_LE(v);
	g_byte_array_append(b, (const guint8 *)&v, sizeof(v));
}

static void append_u64(GByteArray *b, guint64 v)
{
	v = GUINT64_TO_LE(v);
	g_byte_array_append(b, (const guint8 *)&v, sizeof(v));
}

/* Strings cannot hold a NUL, so NUL-terminated is unambiguous. */
static void append_str(GByteArray *b, const char *s)
{
	g_byte_array_append(b, (const guint8 *)s, strlen(s) + 1);
}

static guint64 get_u64(const guint8 *p)
{
	guint64 v;

	memcpy(&v, p, sizeof(v));
	return GUINT64_FROM_LE(v);
}

/*
 * A header starts with what a reader can predict from the key it wants:
 * magic, key length, key (strings NUL-terminated, numbers little-endian).
 * The reader compares that byte for byte, which catches a file written
 * for another key (hash collision, file moved) as well as damage.
 */
static GByteArray *prefix_begin(const char *magic, ImapfsDiskCache *dc)
{
	GByteArray *b = g_byte_array_new();

	g_byte_array_append(b, (const guint8 *)magic, MAGIC_LEN);
	append_u32(b, 0); /* key length, set by prefix_end() */
	append_str(b, dc->account);
	return b;
}

static GByteArray *prefix_end(GByteArray *b)
{
	guint32 len = GUINT32_TO_LE(b->len - MAGIC_LEN - 4);

	memcpy(b->data + MAGIC_LEN, &len, sizeof(len));
	return b;
}

static GByteArray *block_prefix(ImapfsDiskCache *dc, const ImapfsBlockKey *key)
{
	GByteArray *b = prefix_begin(BLOCK_MAGIC, dc);

	append_str(b, key->mailbox);
	append_str(b, key->section);
	append_u32(b, key->uidvalidity);
	append_u32(b, key->uid);
	append_u64(b, key->block);
	return prefix_end(b);
}

static GByteArray *meta_prefix(ImapfsDiskCache *dc, const char *mailbox)
{
	GByteArray *b = prefix_begin(META_MAGIC, dc);

	append_str(b, mailbox);
	return prefix_end(b);
}

static GByteArray *make_header(GByteArray *prefix, const void *data, gsize len)
{
	GByteArray *h = g_byte_array_sized_new(prefix->len + TRAILER_LEN);

	g_byte_array_append(h, prefix->data, prefix->len);
	append_u64(h, len);
	append_u64(h, XXH3_64bits(len ? data : "", len));
	append_u64(h, XXH3_64bits(h->data, h->len));
	return h;
}

/* The data in @file if it is a whole, intact file for @prefix's key. */
static GBytes *parse_file(GBytes *file, GByteArray *prefix)
{
	gsize size;
	const guint8 *p = g_bytes_get_data(file, &size);
	gsize hlen = prefix->len + TRAILER_LEN;

	if (size < hlen || memcmp(p, prefix->data, prefix->len) != 0)
		return NULL;
	guint64 len = get_u64(p + prefix->len);
	if (XXH3_64bits(p, hlen - 8) != get_u64(p + hlen - 8) ||
	    len != size - hlen ||
	    XXH3_64bits(p + hlen, len) != get_u64(p + prefix->len + 8))
		return NULL;
	return g_bytes_new_from_bytes(file, hlen, len);
}

static gboolean write_all(int fd, const void *buf, gsize len)
{
	const guint8 *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			return FALSE;
		}
		p += n;
		len -= n;
	}
	return TRUE;
}

/* The file behind @fd, @size bytes by fstat(), fewer if it was cut short;
 * NULL with errno on a read error. */
static GBytes *read_whole(int fd, gsize size)
{
	guint8 *buf = g_malloc(size);
	gsize done = 0;

	while (done < size) {
		ssize_t n = read(fd, buf + done, size - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int err = errno;
			g_free(buf);
			errno = err;
			return NULL;
		}
		if (n == 0)
			break;
		done += n;
	}
	return g_bytes_new_take(buf, done);
}

/* Takes @rel (maybe NULL: not indexed) out of the index. Locked. */
static void forget(ImapfsDiskCache *dc, const char *rel)
{
	Entry *e = rel ? g_hash_table_lookup(dc->entries, rel) : NULL;

	if (e == NULL)
		return;
	g_queue_unlink(&dc->lru, &e->link);
	dc->bytes -= e->size;
	g_hash_table_remove(dc->entries, e->rel);
}

/* Deletes least recently used blocks until @incoming more bytes fit.
 * Locked: the index must never name a file that is gone. */
static void evict(ImapfsDiskCache *dc, guint64 incoming)
{
	while (dc->bytes + dc->pending + incoming > dc->max_bytes &&
	       dc->lru.tail) {
		Entry *e = dc->lru.tail->data;
		g_autofree char *path =
			g_build_filename(dc->blocks_dir, e->rel, NULL);
		if (unlink(path) < 0 && errno != ENOENT)
			imapfs_trace(IMAPFS_TRACE_CACHE,
				     "disk cache: cannot delete \"%s\": %s",
				     path, g_strerror(errno));
		imapfs_trace(IMAPFS_TRACE_CACHE, "disk cache: evict %s",
			     e->rel);
		forget(dc, e->rel);
	}
}

/* Gives the open file the next mtime, so that mtimes order the blocks by
 * use even within one clock tick and keep that order for the next open.
 * Locked. */
static void stamp(ImapfsDiskCache *dc, int fd)
{
	gint64 now = g_get_real_time() * 1000;

	dc->last_stamp = MAX(now, dc->last_stamp + 1);
	struct timespec times[2] = {
		{0, UTIME_OMIT},
		{dc->last_stamp / 1000000000, dc->last_stamp % 1000000000},
	};
	if (futimens(fd, times) < 0)
		imapfs_trace(IMAPFS_TRACE_CACHE,
			     "disk cache: cannot set mtime: %s",
			     g_strerror(errno));
}

/* Forgets @rel after open() found no file (or no directory), unless a put has
 * renamed a new one in place meanwhile (which happens under the lock). */
static void forget_if_gone(ImapfsDiskCache *dc, const char *rel,
			   const char *path)
{
	struct stat st;

	g_mutex_lock(&dc->lock);
	if (lstat(path, &st) < 0 && (errno == ENOENT || errno == ENOTDIR))
		forget(dc, rel);
	g_mutex_unlock(&dc->lock);
}

/* Deletes the damaged file @bad and forgets @rel, unless a put has
 * replaced the file with a good one meanwhile. */
static void discard(ImapfsDiskCache *dc, const char *rel, const char *path,
		    const struct stat *bad)
{
	struct stat st;

	g_mutex_lock(&dc->lock);
	if (lstat(path, &st) == 0 && st.st_ino == bad->st_ino &&
	    st.st_dev == bad->st_dev) {
		unlink(path);
		forget(dc, rel);
	}
	g_mutex_unlock(&dc->lock);
}

/* The data of the open file @fd if it is valid for @prefix; otherwise
 * says why and deletes it. */
static GBytes *read_valid(ImapfsDiskCache *dc, const char *rel,
			  const char *path, int fd, GByteArray *prefix,
			  guint64 max)
{
	struct stat st;

	if (fstat(fd, &st) < 0) {
		complain(&dc->warned_read, "disk cache: cannot stat \"%s\": %s",
			 path, g_strerror(errno));
		return NULL;
	}
	/* Larger than anything put would write: not ours, or damaged. */
	g_autoptr(GBytes) file = (guint64)st.st_size <= MIN(max, G_MAXSSIZE)
					 ? read_whole(fd, st.st_size)
					 : g_bytes_new(NULL, 0);
	GBytes *data = file ? parse_file(file, prefix) : NULL;
	if (data == NULL) {
		if (file == NULL)
			complain(&dc->warned_read,
				 "disk cache: cannot read \"%s\": %s", path,
				 g_strerror(errno));
		else
			complain(&dc->warned_read,
				 "disk cache: deleting damaged file \"%s\"",
				 path);
		discard(dc, rel, path, &st);
	}
	return data;
}

/* Opens and checks a cache file. On success, *fd_r is left open for the
 * caller to stamp and close. */
static GBytes *load(ImapfsDiskCache *dc, const char *rel, const char *path,
		    GByteArray *prefix, guint64 max, int *fd_r)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			forget_if_gone(dc, rel, path);
		else
			complain(&dc->warned_read,
				 "disk cache: cannot open \"%s\": %s", path,
				 g_strerror(errno));
		return NULL;
	}
	GBytes *data = read_valid(dc, rel, path, fd, prefix, max);
	if (data)
		*fd_r = fd;
	else
		close(fd);
	return data;
}

/* A new temporary file in @dir, which is created if need be. Tried again
 * because a concurrent drop_mailbox() may remove the directory again. */
static int create_temp(const char *dir, char **tmp_r)
{
	int fd = -1;

	for (int tries = 0; tries < 3; tries++) {
		g_free(*tmp_r);
		*tmp_r = g_build_filename(dir, ".tmp-XXXXXX", NULL);
		fd = g_mkstemp_full(*tmp_r, O_RDWR | O_CLOEXEC, 0600);
		if (fd >= 0 || errno != ENOENT)
			break;
		if (g_mkdir_with_parents(dir, 0700) < 0 && errno != ENOENT)
			break;
		errno = ENOENT;
	}
	return fd;
}

/*
 * Writes header and data to a new temporary file beside @path, to be
 * renamed over it: a crash leaves the old file, the new one or a stray
 * temporary file (removed at open), never a partial file under the final
 * name. No fsync: a file torn by a power cut fails its checksum on
 * reading and is then only a miss. Returns the open file, or -1.
 */
static int write_temp(ImapfsDiskCache *dc, const char *path, GByteArray *header,
		      const void *data, gsize len, char **tmp_r)
{
	g_autofree char *dir = g_path_get_dirname(path);
	g_autofree char *tmp = NULL;
	int fd = create_temp(dir, &tmp);

	if (fd < 0 && errno == ENOENT) {
		imapfs_trace(IMAPFS_TRACE_CACHE,
			     "disk cache: \"%s\" dropped while written", dir);
		return -1;
	}
	if (fd < 0) {
		complain(&dc->warned_write,
			 "disk cache: cannot create a file in \"%s\": %s", dir,
			 g_strerror(errno));
		return -1;
	}
	if (!write_all(fd, header->data, header->len) ||
	    !write_all(fd, data, len)) {
		complain(&dc->warned_write,
			 "disk cache: cannot write \"%s\": %s", tmp,
			 g_strerror(errno));
		unlink(tmp);
		close(fd);
		return -1;
	}
	*tmp_r = g_steal_pointer(&tmp);
	return fd;
}

/* Makes room for a file of @size bytes and counts it as pending; FALSE
 * when @rel is stored already or could never fit. */
static gboolean reserve(ImapfsDiskCache *dc, const char *rel, guint64 size)
{
	g_mutex_lock(&dc->lock);
	gboolean ok = size <= dc->max_bytes &&
		      !g_hash_table_contains(dc->entries, rel);
	if (ok) {
		evict(dc, size);
		dc->pending += size;
	}
	g_mutex_unlock(&dc->lock);
	return ok;
}

/* Renames the written file @tmp (open as @fd) into place as @rel and
 * indexes it, together under the lock so the index always tells which
 * files exist. Returns 0 or an errno. Locked. */
static int install(ImapfsDiskCache *dc, const char *rel, const char *tmp,
		   const char *path, int fd, guint64 size)
{
	stamp(dc, fd);
	if (rename(tmp, path) < 0)
		return errno;
	Entry *e = g_hash_table_lookup(dc->entries, rel);
	if (e) { /* a racing put of the same key; we replaced its file */
		g_queue_unlink(&dc->lru, &e->link);
		dc->bytes -= e->size;
	} else {
		e = g_new0(Entry, 1);
		e->rel = g_strdup(rel);
		e->link.data = e;
		g_hash_table_insert(dc->entries, e->rel, e);
	}
	e->size = size;
	dc->bytes += size;
	g_queue_push_head_link(&dc->lru, &e->link);
	/* Puts running together may have reserved more than fits. */
	evict(dc, 0);
	return 0;
}

/* A rename that failed: ENOENT means drop_mailbox() moved the directory
 * away meanwhile, which is no error. */
static void rename_failed(ImapfsDiskCache *dc, const char *tmp,
			  const char *path, int err)
{
	unlink(tmp);
	if (err == ENOENT)
		imapfs_trace(IMAPFS_TRACE_CACHE,
			     "disk cache: \"%s\" dropped while written", path);
	else
		complain(&dc->warned_write,
			 "disk cache: cannot rename to \"%s\": %s", path,
			 g_strerror(err));
}

void imapfs_disk_cache_put(ImapfsDiskCache *dc, const ImapfsBlockKey *key,
			   const void *data, gsize len)
{
	g_autofree char *rel = block_rel(dc, key);
	g_autoptr(GByteArray) prefix = block_prefix(dc, key);
	g_autoptr(GByteArray) header = make_header(prefix, data, len);
	guint64 size = header->len + (guint64)len;
	g_autofree char *path = g_build_filename(dc->blocks_dir, rel, NULL);
	g_autofree char *tmp = NULL;

	if (!reserve(dc, rel, size))
		return;
	int fd = write_temp(dc, path, header, data, len, &tmp);
	g_mutex_lock(&dc->lock);
	dc->pending -= size;
	int err = fd >= 0 ? install(dc, rel, tmp, path, fd, size) : 0;
	g_mutex_unlock(&dc->lock);
	if (fd < 0)
		return;
	close(fd);
	if (err)
		rename_failed(dc, tmp, path, err);
	else
		imapfs_trace(IMAPFS_TRACE_CACHE, "disk cache: put %s", rel);
}

GBytes *imapfs_disk_cache_get(ImapfsDiskCache *dc, const ImapfsBlockKey *key)
{
	g_autofree char *rel = block_rel(dc, key);
	int fd;

	/* The index knows every file: a miss costs no system call. */
	g_mutex_lock(&dc->lock);
	gboolean known = g_hash_table_contains(dc->entries, rel);
	g_mutex_unlock(&dc->lock);
	if (!known) {
		imapfs_trace(IMAPFS_TRACE_CACHE, "disk cache: miss %s", rel);
		return NULL;
	}
	g_autofree char *path = g_build_filename(dc->blocks_dir, rel, NULL);
	g_autoptr(GByteArray) prefix = block_prefix(dc, key);
	GBytes *data = load(dc, rel, path, prefix, dc->max_bytes, &fd);
	if (data == NULL)
		return NULL;
	g_mutex_lock(&dc->lock);
	Entry *e = g_hash_table_lookup(dc->entries, rel);
	if (e) { /* else evicted meanwhile; the data is still good */
		g_queue_unlink(&dc->lru, &e->link);
		g_queue_push_head_link(&dc->lru, &e->link);
		stamp(dc, fd);
	}
	g_mutex_unlock(&dc->lock);
	close(fd);
	imapfs_trace(IMAPFS_TRACE_CACHE, "disk cache: hit %s", rel);
	return data;
}

GBytes *imapfs_disk_cache_get_meta(ImapfsDiskCache *dc, const char *mailbox)
{
	g_autofree char *path = meta_path(dc, mailbox);
	g_autoptr(GByteArray) prefix = meta_prefix(dc, mailbox);
	int fd;
	GBytes *blob = load(dc, NULL, path, prefix, G_MAXSSIZE, &fd);

	if (blob)
		close(fd);
	return blob;
}

void imapfs_disk_cache_put_meta(ImapfsDiskCache *dc, const char *mailbox,
				GBytes *blob)
{
	g_autofree char *path = meta_path(dc, mailbox);
	g_autoptr(GByteArray) prefix = meta_prefix(dc, mailbox);
	gsize len;
	const void *data = g_bytes_get_data(blob, &len);
	g_autoptr(GByteArray) header = make_header(prefix, data, len);
	g_autofree char *tmp = NULL;
	int fd = write_temp(dc, path, header, data, len, &tmp);

	if (fd < 0)
		return;
	close(fd);
	/* Locked like block renames, for discard()'s check. */
	g_mutex_lock(&dc->lock);
	int err = rename(tmp, path) < 0 ? errno : 0;
	g_mutex_unlock(&dc->lock);
	if (err)
		rename_failed(dc, tmp, path, err);
}

typedef struct {
	ImapfsDiskCache *dc;
	const char *prefix;
} ForgetUnder;

static gboolean forget_under(gpointer key, gpointer value, gpointer data)
{
	Entry *e = value;
	ForgetUnder *fu = data;

	if (!g_str_has_prefix(e->rel, fu->prefix))
		return FALSE;
	g_queue_unlink(&fu->dc->lru, &e->link);
	fu->dc->bytes -= e->size;
	return TRUE;
}

/* Moves <mb>/<uidvalidity> aside and forgets its blocks in one step under
 * the lock, then deletes the files outside it: there may be many. */
static void drop_dir(ImapfsDiskCache *dc, const char *mb, const char *name)
{
	g_autofree char *rel = g_strdup_printf("%s/%s/", mb, name);
	g_autofree char *path =
		g_build_filename(dc->blocks_dir, mb, name, NULL);
	g_autofree char *trash =
		g_build_filename(dc->blocks_dir, ".trash-XXXXXX", NULL);
	ForgetUnder fu = {dc, rel};
	int err = 0;

	/* rename() may replace an empty directory: a unique name for free. */
	if (g_mkdtemp_full(trash, 0700) == NULL) {
		complain(&dc->warned_write,
			 "disk cache: cannot create \"%s\": %s", trash,
			 g_strerror(errno));
		return;
	}
	g_mutex_lock(&dc->lock);
	if (rename(path, trash) == 0)
		g_hash_table_foreach_remove(dc->entries, forget_under, &fu);
	else
		err = errno;
	g_mutex_unlock(&dc->lock);
	if (err && err != ENOENT)
		complain(&dc->warned_write,
			 "disk cache: cannot drop \"%s\": %s", path,
			 g_strerror(err));
	remove_tree(trash);
}

void imapfs_disk_cache_drop_mailbox(ImapfsDiskCache *dc, const char *mailbox,
				    guint32 keep_uidvalidity)
{
	g_autofree char *mb = mailbox_dir(dc, mailbox);
	g_autofree char *path = g_build_filename(dc->blocks_dir, mb, NULL);
	g_autofree char *keep = g_strdup_printf("%u", keep_uidvalidity);
	g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
	g_autoptr(GDir) d = g_dir_open(path, 0, NULL);
	const char *name;

	/* Listed first: renaming while reading a directory may skip. */
	while (d && (name = g_dir_read_name(d)))
		if (keep_uidvalidity == 0 || strcmp(name, keep) != 0)
			g_ptr_array_add(names, g_strdup(name));
	for (guint i = 0; i < names->len; i++)
		drop_dir(dc, mb, names->pdata[i]);
	if (keep_uidvalidity == 0)
		rmdir(path); /* fails if a put has just recreated a block */
}

guint64 imapfs_disk_cache_bytes(ImapfsDiskCache *dc)
{
	g_mutex_lock(&dc->lock);
	guint64 bytes = dc->bytes;
	g_mutex_unlock(&dc->lock);
	return bytes;
}

typedef struct {
	Entry *entry;
	gint64 mtime; /* ns */
} Found;

static gint found_cmp(gconstpointer a, gconstpointer b)
{
	const Found *x = a, *y = b;

	if (x->mtime != y->mtime)
		return x->mtime < y->mtime ? -1 : 1;
	return strcmp(x->entry->rel, y->entry->rel);
}

static void add_found(GArray *found, const char *rel, const struct stat *st)
{
	Found f = {g_new0(Entry, 1),
		   st->st_mtim.tv_sec * G_GINT64_CONSTANT(1000000000) +
			   st->st_mtim.tv_nsec};

	f.entry->rel = g_strdup(rel);
	f.entry->size = st->st_size;
	f.entry->link.data = f.entry;
	g_array_append_val(found, f);
}

/* Collects the block files at <mb>/<uidvalidity>/<name> below @rel
 * (@depth levels down); removes what a crash or a drop left behind. */
static void scan_dir(ImapfsDiskCache *dc, const char *rel, int depth,
		     GArray *found)
{
	g_autofree char *path = g_build_filename(dc->blocks_dir, rel, NULL);
	g_autoptr(GDir) d = g_dir_open(path, 0, NULL);
	const char *name;

	while (d && (name = g_dir_read_name(d))) {
		g_autofree char *child_rel =
			*rel ? g_build_filename(rel, name, NULL)
			     : g_strdup(name);
		g_autofree char *child =
			g_build_filename(dc->blocks_dir, child_rel, NULL);
		struct stat st;
		if (name[0] == '.') /* .tmp-*, .trash-* */
			remove_tree(child);
		else if (lstat(child, &st) < 0)
			continue;
		else if (S_ISDIR(st.st_mode) && depth < 2)
			scan_dir(dc, child_rel, depth + 1, found);
		else if (S_ISREG(st.st_mode) && depth == 2)
			add_found(found, child_rel, &st);
	}
}

/* Rebuilds the index from the files, in the LRU order their mtimes keep,
 * and evicts down to a limit that may have shrunk since last time. */
static void load_index(ImapfsDiskCache *dc)
{
	g_autoptr(GArray) found = g_array_new(FALSE, FALSE, sizeof(Found));

	scan_dir(dc, "", 0, found);
	g_array_sort(found, found_cmp);
	g_mutex_lock(&dc->lock);
	for (guint i = 0; i < found->len; i++) {
		Found *f = &g_array_index(found, Found, i);
		g_hash_table_insert(dc->entries, f->entry->rel, f->entry);
		g_queue_push_head_link(&dc->lru, &f->entry->link);
		dc->bytes += f->entry->size;
		/* New stamps must sort after these, whatever the clock. */
		dc->last_stamp = MAX(dc->last_stamp, f->mtime);
	}
	evict(dc, 0);
	g_mutex_unlock(&dc->lock);
}

static void remove_temps(const char *dir)
{
	g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
	const char *name;

	while (d && (name = g_dir_read_name(d))) {
		g_autofree char *path = g_build_filename(dir, name, NULL);
		if (name[0] == '.')
			remove_tree(path);
	}
}

static gboolean make_private_dir(const char *dir, GError **error)
{
	struct stat st;

	if (g_mkdir_with_parents(dir, 0700) < 0 || stat(dir, &st) < 0)
		return fail_errno(error, "cannot create cache directory", dir);
	/* It holds mail: nobody else may look in. */
	if ((st.st_mode & 077) && chmod(dir, 0700) < 0)
		return fail_errno(error, "cannot make private cache directory",
				  dir);
	return TRUE;
}

/* flock() locks belong to the open file description, so this also keeps
 * out a second cache opened in this process. */
static gboolean take_lock(ImapfsDiskCache *dc, const char *dir, GError **error)
{
	g_autofree char *path = g_build_filename(dir, "lock", NULL);

	dc->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (dc->lock_fd < 0)
		return fail_errno(error, "cannot open", path);
	if (flock(dc->lock_fd, LOCK_EX | LOCK_NB) == 0)
		return TRUE;
	if (errno != EWOULDBLOCK)
		return fail_errno(error, "cannot lock", path);
	g_autofree char *q = imapfs_log_quote(dir);
	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_BUSY,
		    "cache directory \"%s\" is in use by another imapfs", q);
	return FALSE;
}

/* A cache in another format, or from before VERSION, is wiped: only what
 * this module creates, never anything else a user put in @dir. */
static gboolean check_version(ImapfsDiskCache *dc, const char *dir,
			      GError **error)
{
	g_autofree char *path = g_build_filename(dir, "VERSION", NULL);
	g_autofree char *text = NULL;
	g_autoptr(GError) local = NULL;

	if (!g_file_get_contents(path, &text, NULL, NULL) ||
	    strcmp(text, VERSION_LINE) != 0) {
		remove_tree(dc->blocks_dir);
		remove_tree(dc->meta_dir);
		unlink(path);
		if (!g_file_set_contents_full(path, VERSION_LINE, -1,
					      G_FILE_SET_CONTENTS_CONSISTENT,
					      0600, &local)) {
			g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_FAILED,
				    "%s", local->message);
			return FALSE;
		}
	}
	if (g_mkdir_with_parents(dc->blocks_dir, 0700) < 0)
		return fail_errno(error, "cannot create", dc->blocks_dir);
	if (g_mkdir_with_parents(dc->meta_dir, 0700) < 0)
		return fail_errno(error, "cannot create", dc->meta_dir);
	return TRUE;
}

ImapfsDiskCache *imapfs_disk_cache_open(const char *dir, const char *account,
					guint64 max_bytes, GError **error)
{
	g_autoptr(ImapfsDiskCache) dc = g_new0(ImapfsDiskCache, 1);

	dc->account = g_strdup(account);
	dc->blocks_dir = g_build_filename(dir, "blocks", NULL);
	dc->meta_dir = g_build_filename(dir, "meta", NULL);
	dc->max_bytes = max_bytes;
	dc->lock_fd = -1;
	g_mutex_init(&dc->lock);
	dc->entries = g_hash_table_new_full(g_str_hash, g_str_equal, NULL,
					    entry_free);
	g_queue_init(&dc->lru);
	if (!make_private_dir(dir, error) || !take_lock(dc, dir, error) ||
	    !check_version(dc, dir, error))
		return NULL;
	remove_temps(dc->meta_dir);
	load_index(dc);
	imapfs_trace(IMAPFS_TRACE_CACHE,
		     "disk cache: %u blocks, %" G_GUINT64_FORMAT " bytes",
		     g_hash_table_size(dc->entries), dc->bytes);
	return g_steal_pointer(&dc);
}

void imapfs_disk_cache_close(ImapfsDiskCache *dc)
{
	if (dc == NULL)
		return;
	if (dc->lock_fd >= 0)
		close(dc->lock_fd); /* releases the flock() */
	/* The queue's links live in the entries, freed with the table. */
	g_hash_table_unref(dc->entries);
	g_mutex_clear(&dc->lock);
	g_free(dc->account);
	g_free(dc->blocks_dir);
	g_free(dc->meta_dir);
	g_free(dc);
}
