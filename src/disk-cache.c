/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <xxhash.h>

#include "imapfs/disk-cache.h"
#include "imapfs/error.h"
#include "imapfs/log.h"

#define VERSION_LINE "imapfs-cache 2\n"
#define REC_MAGIC "IMFSREC2"
#define MAGIC_LEN 8
/* Record header: magic, type (u32), key length (u32), data length (u64),
 * XXH3 of the data, XXH3 of the first HDR_SUMMED bytes and the key. */
#define HDR_LEN 40
#define HDR_SUMMED 32
/* Keys are an account, a mailbox and a section, far below this: a longer
 * key length in a header is damage. */
#define MAX_KEY_LEN (64 * 1024)
/* At open, one pread() brings the header and the key of most records. */
#define SCAN_READ 256
#define SEG_MIN (1024 * 1024)
#define SEG_MAX (64 * 1024 * 1024)
#define SEG_DIGITS 16
#define SEG_SUFFIX ".seg"

enum { REC_BLOCK = 1, REC_DROP = 2, REC_META = 3 };

typedef struct Segment Segment;

/* Where a record is: a copy taken under the lock, for I/O outside it. */
typedef struct {
	guint64 seg;	/* segment number */
	guint64 offset; /* of the record in the segment */
	guint64 len;	/* of the record, padding excluded */
} Loc;

/* A block record in the index. All fields protected by dc->lock. */
typedef struct {
	GBytes *key; /* serialized key; the index's key */
	Segment *seg;
	guint64 offset;
	guint64 len;	     /* of the record, padding excluded */
	GList link;	     /* in seg->entries; data is self */
	gboolean writing;    /* reserved, not written yet: not readable */
	gboolean referenced; /* read since written: rescued from eviction */
} Entry;

/* A segment file. All fields protected by dc->lock. */
struct Segment {
	guint64 number; /* in creation order; names the file */
	guint64 size;	/* reserved: the file's size once writes have landed */
	GQueue entries; /* of Entry.link: the records indexed here */
	int fd;	       /* for appending, or -1; open while current or written */
	guint busy;    /* writes in flight (using fd) and pending rescues */
	gboolean dead; /* evicted; freed once no longer busy */
};

struct ImapfsDiskCache {
	char *account;
	char *seg_dir;
	char *meta_dir;
	guint64 max_bytes;
	guint64 seg_target; /* a segment is full at this size */
	int lock_fd;	    /* holds the flock() on dir/lock while open */
	gint warned_read;   /* atomic: a damaged record or read error warned */
	gint warned_write;  /* atomic: a failed write was warned */
	GMutex lock;
	GHashTable *index;   /* GBytes key -> Entry; protected by dc->lock */
	GQueue segments;     /* oldest first, the tail is current; ditto */
	guint64 bytes;	     /* sum of the segments' sizes; ditto */
	guint64 next_number; /* of the next segment; ditto */
};

/* A referenced record of an evicted segment, to copy before its file
 * goes. */
typedef struct {
	GBytes *key; /* a reference to the entry's key */
	Loc loc;
} Rescue;

/* What the evictions during one put or drop leave to do after unlocking.
 * Only the thread that made it uses it. */
typedef struct {
	guint64 budget;	   /* bytes that may still be rescued */
	GArray *rescues;   /* of Rescue, in eviction order */
	GPtrArray *pinned; /* evicted segments with rescues, kept busy */
	GArray *doomed;	   /* numbers of the segment files to delete */
} Evicted;

/* What a drop removes: blocks under (account, mailbox) with another
 * UIDVALIDITY than keep (keep 0: any). */
typedef struct {
	const guint8 *prefix; /* the drop key up to the UIDVALIDITY */
	gsize prefix_len;
	guint32 keep;
	guint removed;
} Drop;

/* One record on its way to the disk. */
typedef struct {
	GBytes *index_key; /* to index the record under; NULL: not indexed */
	const Loc *from;   /* a rescue: where the record is now */
	Drop *drop;	   /* a tombstone: what it drops */
	guint8 head[HDR_LEN];
	struct iovec iov[4];
	int iovcnt;
	guint64 rec_len; /* padding excluded */
	guint64 len;	 /* padding included: what it takes in the segment */
	/* Set by reserve(). */
	Segment *seg;
	guint64 offset;
	int fd;
} Write;

/* A record header as read. */
typedef struct {
	guint32 type;
	guint32 key_len;
	guint64 data_len;
	guint64 data_sum;
} RecHead;

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

static guint64 pad8(guint64 n)
{
	return (n + 7) & ~(guint64)7;
}

static void put_u32(guint8 *p, guint32 v)
{
	v = GUINT32_TO_LE(v);
	memcpy(p, &v, sizeof(v));
}

static void put_u64(guint8 *p, guint64 v)
{
	v = GUINT64_TO_LE(v);
	memcpy(p, &v, sizeof(v));
}

static guint32 get_u32(const guint8 *p)
{
	guint32 v;

	memcpy(&v, p, sizeof(v));
	return GUINT32_FROM_LE(v);
}

static guint64 get_u64(const guint8 *p)
{
	guint64 v;

	memcpy(&v, p, sizeof(v));
	return GUINT64_FROM_LE(v);
}

static void append_u32(GByteArray *b, guint32 v)
{
	guint8 le[4];

	put_u32(le, v);
	g_byte_array_append(b, le, sizeof(le));
}

static void append_u64(GByteArray *b, guint64 v)
{
	guint8 le[8];

	put_u64(le, v);
	g_byte_array_append(b, le, sizeof(le));
}

/* Strings cannot hold a NUL, so NUL-terminated is unambiguous. */
static void append_str(GByteArray *b, const char *s)
{
	g_byte_array_append(b, (const guint8 *)s, strlen(s) + 1);
}

/*
 * Keys, stored in each record and compared byte for byte on reading, so a
 * record can only ever be served for the key it was written for:
 *   block: account, mailbox, section (NUL-terminated), uidvalidity (u32),
 *          uid (u32), block (u64)
 *   drop:  account, mailbox, uidvalidity kept (u32)
 *   meta:  account, mailbox
 */
static GByteArray *key_begin(ImapfsDiskCache *dc, const char *mailbox)
{
	GByteArray *b = g_byte_array_new();

	append_str(b, dc->account);
	append_str(b, mailbox);
	return b;
}

static GBytes *block_key(ImapfsDiskCache *dc, const ImapfsBlockKey *key)
{
	GByteArray *b = key_begin(dc, key->mailbox);

	append_str(b, key->section);
	append_u32(b, key->uidvalidity);
	append_u32(b, key->uid);
	append_u64(b, key->block);
	return g_byte_array_free_to_bytes(b);
}

static GBytes *drop_key(ImapfsDiskCache *dc, const char *mailbox, guint32 keep)
{
	GByteArray *b = key_begin(dc, mailbox);

	append_u32(b, keep);
	return g_byte_array_free_to_bytes(b);
}

static GBytes *meta_key(ImapfsDiskCache *dc, const char *mailbox)
{
	return g_byte_array_free_to_bytes(key_begin(dc, mailbox));
}

static guint64 header_sum(const guint8 *head, const void *key, gsize key_len)
{
	return XXH3_64bits_withSeed(key_len ? key : "", key_len,
				    XXH3_64bits(head, HDR_SUMMED));
}

static void encode_header(guint8 *head, guint32 type, GBytes *key,
			  const void *data, guint64 len)
{
	gsize key_len;
	const void *k = g_bytes_get_data(key, &key_len);

	memcpy(head, REC_MAGIC, MAGIC_LEN);
	put_u32(head + 8, type);
	put_u32(head + 12, key_len);
	put_u64(head + 16, len);
	put_u64(head + 24, XXH3_64bits(len ? data : "", len));
	put_u64(head + HDR_SUMMED, header_sum(head, k, key_len));
}

/* Reads the fixed header at @head of a record that must end within
 * @room bytes. The header checksum needs the key: see head_sum_ok(). */
static gboolean head_parse(const guint8 *head, guint64 room, RecHead *h)
{
	if (room < HDR_LEN || memcmp(head, REC_MAGIC, MAGIC_LEN) != 0)
		return FALSE;
	h->type = get_u32(head + 8);
	h->key_len = get_u32(head + 12);
	h->data_len = get_u64(head + 16);
	h->data_sum = get_u64(head + 24);
	return h->key_len <= MAX_KEY_LEN && h->key_len <= room - HDR_LEN &&
	       h->data_len <= room - HDR_LEN - h->key_len;
}

static gboolean head_sum_ok(const guint8 *head, const void *key, gsize len)
{
	return header_sum(head, key, len) == get_u64(head + HDR_SUMMED);
}

static guint64 rec_len(const RecHead *h)
{
	return HDR_LEN + (guint64)h->key_len + h->data_len;
}

/* The data of @rec, if it is exactly one intact record of @type for @key. */
static GBytes *check_record(GBytes *rec, guint32 type, GBytes *key)
{
	gsize size, key_len;
	const guint8 *p = g_bytes_get_data(rec, &size);
	const void *k = g_bytes_get_data(key, &key_len);
	RecHead h;

	if (!head_parse(p, size, &h) || h.type != type ||
	    h.key_len != key_len || rec_len(&h) != size ||
	    memcmp(p + HDR_LEN, k, key_len) != 0 ||
	    !head_sum_ok(p, p + HDR_LEN, key_len))
		return NULL;
	gsize at = HDR_LEN + key_len;
	if (XXH3_64bits(p + at, h.data_len) != h.data_sum)
		return NULL;
	return g_bytes_new_from_bytes(rec, at, h.data_len);
}

static void iov_add(Write *w, const void *p, gsize len)
{
	if (len == 0) /* pwritev() returning 0 would look like no progress */
		return;
	w->iov[w->iovcnt].iov_base = (void *)p;
	w->iov[w->iovcnt].iov_len = len;
	w->iovcnt++;
}

/* A record of @type, without padding (see write_pad()). */
static void write_init(Write *w, guint32 type, GBytes *key, const void *data,
		       gsize len)
{
	gsize key_len;
	const void *k = g_bytes_get_data(key, &key_len);

	encode_header(w->head, type, key, data, len);
	w->rec_len = w->len = HDR_LEN + key_len + len;
	iov_add(w, w->head, HDR_LEN);
	iov_add(w, k, key_len);
	iov_add(w, data, len);
}

/* A copy of an existing record, as read. */
static void write_init_copy(Write *w, GBytes *rec)
{
	gsize len;
	const void *p = g_bytes_get_data(rec, &len);

	w->rec_len = w->len = len;
	iov_add(w, p, len);
}

/* Records in a segment start at multiples of 8, for aligned reads. */
static void write_pad(Write *w)
{
	static const guint8 zeros[8];

	w->len = pad8(w->rec_len);
	iov_add(w, zeros, w->len - w->rec_len);
}

static gboolean pwritev_all(int fd, struct iovec *iov, int n, off_t off)
{
	while (n > 0) {
		ssize_t done = pwritev(fd, iov, n, off);
		if (done < 0 && errno == EINTR)
			continue;
		if (done <= 0) {
			if (done == 0)
				errno = EIO;
			return FALSE;
		}
		off += done;
		while (n > 0 && (size_t)done >= iov->iov_len) {
			done -= iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (guint8 *)iov->iov_base + done;
			iov->iov_len -= done;
		}
	}
	return TRUE;
}

/* Bytes read into @buf, fewer at the end of the file; -1 with errno. */
static gssize pread_all(int fd, void *buf, gsize len, off_t off)
{
	gsize done = 0;

	while (done < len) {
		ssize_t n =
			pread(fd, (guint8 *)buf + done, len - done, off + done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		done += n;
	}
	return done;
}

static char *seg_path(ImapfsDiskCache *dc, guint64 number)
{
	char name[SEG_DIGITS + sizeof(SEG_SUFFIX)];

	g_snprintf(name, sizeof(name), "%016" G_GINT64_MODIFIER "x" SEG_SUFFIX,
		   number);
	return g_build_filename(dc->seg_dir, name, NULL);
}

/* --- the index; every function here runs under dc->lock --- */

static void entry_free(gpointer p)
{
	Entry *e = p;

	g_bytes_unref(e->key);
	g_free(e);
}

static Entry *index_add(ImapfsDiskCache *dc, GBytes *key, Segment *seg,
			guint64 offset, guint64 len)
{
	Entry *e = g_new0(Entry, 1);
	gsize key_len;
	const void *k = g_bytes_get_data(key, &key_len);

	/* A copy of its own: index keys are only touched under the lock. */
	e->key = g_bytes_new(k, key_len);
	e->seg = seg;
	e->offset = offset;
	e->len = len;
	e->link.data = e;
	g_queue_push_tail_link(&seg->entries, &e->link);
	g_hash_table_insert(dc->index, e->key, e);
	return e;
}

static void entry_move(Entry *e, Segment *seg, guint64 offset)
{
	g_queue_unlink(&e->seg->entries, &e->link);
	e->seg = seg;
	e->offset = offset;
	g_queue_push_tail_link(&seg->entries, &e->link);
}

static void forget(ImapfsDiskCache *dc, Entry *e)
{
	g_queue_unlink(&e->seg->entries, &e->link);
	g_hash_table_remove(dc->index, e->key);
}

static gboolean entry_at(const Entry *e, const Loc *loc)
{
	return e && e->seg->number == loc->seg && e->offset == loc->offset;
}

static gboolean drop_parse(GBytes *key, Drop *d)
{
	gsize len;
	const guint8 *p = g_bytes_get_data(key, &len);

	if (len < 4)
		return FALSE;
	*d = (Drop){p, len - 4, get_u32(p + len - 4), 0};
	return TRUE;
}

static gboolean drop_matches(GBytes *key, const Drop *d)
{
	gsize len;
	const guint8 *p = g_bytes_get_data(key, &len);

	if (len < d->prefix_len || memcmp(p, d->prefix, d->prefix_len) != 0)
		return FALSE;
	/* Past the section: uidvalidity, uid and block number. */
	const guint8 *nul = memchr(p + d->prefix_len, 0, len - d->prefix_len);
	if (nul == NULL || (gsize)(p + len - nul) != 1 + 4 + 4 + 8)
		return FALSE;
	return d->keep == 0 || get_u32(nul + 1) != d->keep;
}

static gboolean drop_entry(gpointer key, gpointer value, gpointer data)
{
	Entry *e = value;
	Drop *d = data;

	if (!drop_matches(e->key, d))
		return FALSE;
	g_queue_unlink(&e->seg->entries, &e->link);
	d->removed++;
	return TRUE;
}

/* Takes the blocks @d drops out of the index; how many there were. */
static guint forget_dropped(ImapfsDiskCache *dc, Drop *d)
{
	g_hash_table_foreach_remove(dc->index, drop_entry, d);
	return d->removed;
}

/* --- segments; every function here runs under dc->lock --- */

static Segment *seg_push(ImapfsDiskCache *dc, guint64 number)
{
	Segment *seg = g_new0(Segment, 1);

	seg->number = number;
	seg->fd = -1;
	g_queue_init(&seg->entries);
	g_queue_push_tail(&dc->segments, seg);
	dc->next_number = number + 1;
	return seg;
}

static void seg_close(Segment *seg)
{
	if (seg->fd >= 0)
		close(seg->fd);
	seg->fd = -1;
}

static void seg_free(gpointer p)
{
	seg_close(p);
	g_free(p);
}

static gboolean seg_is_current(ImapfsDiskCache *dc, Segment *seg)
{
	return seg == g_queue_peek_tail(&dc->segments);
}

/* A segment no longer appended to lets go of its file, or of itself once
 * evicted, when nothing in flight uses it: no use after close or free. */
static void seg_settle(ImapfsDiskCache *dc, Segment *seg)
{
	if (seg->busy > 0)
		return;
	if (seg->dead)
		seg_free(seg);
	else if (!seg_is_current(dc, seg))
		seg_close(seg);
}

/* Starts a new current segment; its file is created by its first write. */
static void rotate(ImapfsDiskCache *dc)
{
	Segment *old = g_queue_peek_tail(&dc->segments);

	seg_push(dc, dc->next_number);
	if (old)
		seg_settle(dc, old);
}

/* Whether @e, in a segment being evicted, is to be copied forward: read
 * since it was written, and within the budget. Its reference is used up:
 * it needs another read to be rescued again. */
static gboolean rescue_entry(Entry *e, Evicted *ev)
{
	guint64 len = pad8(e->len);

	if (!e->referenced || e->writing || len > ev->budget)
		return FALSE;
	ev->budget -= len;
	e->referenced = FALSE;
	Rescue r = {g_bytes_ref(e->key), {e->seg->number, e->offset, e->len}};
	g_array_append_val(ev->rescues, r);
	return TRUE;
}

/*
 * Drops the oldest segment and the index entries of its records, but for
 * those to be rescued: they stay readable where they are, their segment
 * kept busy, until rescue_all() has copied them. The file is deleted after
 * unlocking (deleting a large file takes a while); numbers are never
 * reused, so late is safe.
 */
static void evict_oldest(ImapfsDiskCache *dc, Evicted *ev)
{
	Segment *seg = g_queue_pop_head(&dc->segments);

	for (GList *l = seg->entries.head, *next; l; l = next) {
		next = l->next;
		if (!rescue_entry(l->data, ev))
			forget(dc, l->data);
	}
	dc->bytes -= seg->size;
	seg->dead = TRUE;
	g_array_append_val(ev->doomed, seg->number);
	if (seg->entries.length > 0) {
		seg->busy++;
		g_ptr_array_add(ev->pinned, seg);
	}
	imapfs_trace(IMAPFS_TRACE_CACHE,
		     "disk cache: evict segment %" G_GUINT64_FORMAT
		     ", rescuing %u records",
		     seg->number, seg->entries.length);
	seg_settle(dc, seg);
}

/*
 * Makes the current segment ready to take @len more bytes: a new segment
 * when it is full (a record never spans two; a large one gets one of its
 * own), and the oldest segments evicted while the cache would exceed
 * max_bytes. FALSE when @len alone exceeds it.
 */
static gboolean make_room(ImapfsDiskCache *dc, guint64 len, Evicted *ev)
{
	Segment *cur = g_queue_peek_tail(&dc->segments);

	if (len > dc->max_bytes)
		return FALSE;
	if (cur == NULL || (cur->size > 0 && cur->size + len > dc->seg_target))
		rotate(dc);
	while (dc->bytes + len > dc->max_bytes) {
		/* Never the segment written into: leave it first. */
		if (g_queue_get_length(&dc->segments) == 1)
			rotate(dc);
		evict_oldest(dc, ev);
	}
	return TRUE;
}

/* The current segment's file, created by its first write: an open()
 * under the lock, but once a segment. */
static int seg_fd(ImapfsDiskCache *dc, Segment *seg)
{
	if (seg->fd >= 0)
		return seg->fd;
	g_autofree char *path = seg_path(dc, seg->number);
	seg->fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (seg->fd < 0)
		complain(&dc->warned_write,
			 "disk cache: cannot create \"%s\": %s", path,
			 g_strerror(errno));
	return seg->fd;
}

/* Reserves the place of @w at the end of the current segment. */
static gboolean reserve(ImapfsDiskCache *dc, Write *w, Evicted *ev)
{
	if (!make_room(dc, w->len, ev))
		return FALSE;
	Segment *seg = g_queue_peek_tail(&dc->segments);
	if (seg_fd(dc, seg) < 0)
		return FALSE;
	w->seg = seg;
	w->offset = seg->size;
	w->fd = seg->fd;
	seg->size += w->len;
	dc->bytes += w->len;
	seg->busy++;
	return TRUE;
}

/*
 * Decides whether @w is still to be written, and reserves its place. A put
 * of a key indexed already (stored or being written; its bytes cannot
 * differ) is not, nor a rescue of a record dropped or found damaged
 * meanwhile. A tombstone is written after the records it drops, in the
 * same step, so the scan at the next open drops them again; nothing to
 * drop, no tombstone. (Without one, the blocks come back at the next open,
 * with their right bytes: only space is lost.)
 */
static gboolean claim(ImapfsDiskCache *dc, Write *w, Evicted *ev)
{
	if (w->drop)
		return forget_dropped(dc, w->drop) > 0 && reserve(dc, w, ev);
	Entry *e = g_hash_table_lookup(dc->index, w->index_key);
	if (w->from ? !entry_at(e, w->from) : e != NULL)
		return FALSE;
	if (!reserve(dc, w, ev))
		return FALSE;
	/* A rescued entry stays where it is until the copy has landed. */
	if (w->from == NULL)
		index_add(dc, w->index_key, w->seg, w->offset, w->rec_len)
			->writing = TRUE;
	return TRUE;
}

/* After a failed write: if it was the last in its segment, the space (and
 * whatever part of it landed) is cut off. Otherwise a later record follows
 * a hole, which ends the scan at the next open: nothing more goes there. */
static void give_back(ImapfsDiskCache *dc, Write *w)
{
	Segment *seg = w->seg;

	if (seg->dead)
		return;
	if (seg->size == w->offset + w->len &&
	    ftruncate(w->fd, w->offset) == 0) {
		seg->size = w->offset;
		dc->bytes -= w->len;
	} else if (seg_is_current(dc, seg)) {
		rotate(dc);
	}
}

/* Makes the index tell what the write of @w (@ok or not) left on disk. */
static void settle(ImapfsDiskCache *dc, Write *w, gboolean ok)
{
	Entry *e = w->index_key ? g_hash_table_lookup(dc->index, w->index_key)
				: NULL;
	Loc here = {w->seg->number, w->offset, w->rec_len};

	if (entry_at(e, &here)) {
		if (ok)
			e->writing = FALSE;
		else
			forget(dc, e);
	} else if (w->from && entry_at(e, w->from) && ok && !w->seg->dead) {
		entry_move(e, w->seg, w->offset);
	}
	if (!ok)
		give_back(dc, w);
	w->seg->busy--;
	seg_settle(dc, w->seg);
}

/* --- reading records --- */

/* Forgets @key's record at @loc, found bad or gone, unless it has been
 * replaced meanwhile. The current segment is not appended to any more:
 * its file is suspect (or not the one open for writing). */
static void discard(ImapfsDiskCache *dc, GBytes *key, const Loc *loc)
{
	g_mutex_lock(&dc->lock);
	Entry *e = g_hash_table_lookup(dc->index, key);
	if (entry_at(e, loc)) {
		gboolean current = seg_is_current(dc, e->seg);
		forget(dc, e);
		if (current)
			rotate(dc);
	}
	g_mutex_unlock(&dc->lock);
}

/* The bytes at @loc, fewer if the file is shorter; NULL when unreadable. A
 * missing file (evicted since the lookup) is a quiet miss. */
static GBytes *read_record(ImapfsDiskCache *dc, GBytes *key, const Loc *loc)
{
	g_autofree char *path = seg_path(dc, loc->seg);
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 && errno == ENOENT) {
		discard(dc, key, loc);
		return NULL;
	}
	if (fd < 0) {
		complain(&dc->warned_read, "disk cache: cannot open \"%s\": %s",
			 path, g_strerror(errno));
		return NULL;
	}
	guint8 *buf = g_malloc(loc->len);
	gssize n = pread_all(fd, buf, loc->len, loc->offset);
	int err = errno;
	close(fd);
	if (n < 0) {
		g_free(buf);
		complain(&dc->warned_read, "disk cache: cannot read \"%s\": %s",
			 path, g_strerror(err));
		return NULL;
	}
	return g_bytes_new_take(buf, n);
}

/* The data of @key's record at @loc, or NULL: missing, unreadable or
 * damaged (then said and forgotten). @rec_r gets the record as read. */
static GBytes *load(ImapfsDiskCache *dc, GBytes *key, const Loc *loc,
		    GBytes **rec_r)
{
	g_autoptr(GBytes) rec = read_record(dc, key, loc);
	GBytes *data = rec ? check_record(rec, REC_BLOCK, key) : NULL;

	if (rec && data == NULL) {
		g_autofree char *path = seg_path(dc, loc->seg);
		complain(&dc->warned_read,
			 "disk cache: damaged record in \"%s\" at "
			 "%" G_GUINT64_FORMAT,
			 path, loc->offset);
		discard(dc, key, loc);
	}
	if (rec_r && data)
		*rec_r = g_steal_pointer(&rec);
	return data;
}

/* --- writing --- */

static void evicted_init(Evicted *ev, guint64 budget)
{
	ev->budget = budget;
	ev->rescues = g_array_new(FALSE, FALSE, sizeof(Rescue));
	ev->pinned = g_ptr_array_new();
	ev->doomed = g_array_new(FALSE, FALSE, sizeof(guint64));
}

/* Writes @w at its reserved place, outside the lock, then settles it. No
 * fsync: a record torn by a power cut fails its checks on reading. */
static void write_reserved(ImapfsDiskCache *dc, Write *w)
{
	gboolean ok = pwritev_all(w->fd, w->iov, w->iovcnt, w->offset);

	if (!ok) {
		int err = errno;
		g_autofree char *path = seg_path(dc, w->seg->number);
		complain(&dc->warned_write,
			 "disk cache: cannot write \"%s\": %s", path,
			 g_strerror(err));
	}
	g_mutex_lock(&dc->lock);
	settle(dc, w, ok);
	g_mutex_unlock(&dc->lock);
}

static void commit(ImapfsDiskCache *dc, Write *w, Evicted *ev)
{
	g_mutex_lock(&dc->lock);
	gboolean go = claim(dc, w, ev);
	g_mutex_unlock(&dc->lock);
	if (go)
		write_reserved(dc, w);
}

/* Copies the rescued records to the current segment, from the files of
 * their evicted segments, which are still there. Making room for them may
 * evict more segments and add rescues, within the budget. */
static void rescue_all(ImapfsDiskCache *dc, Evicted *ev)
{
	for (guint i = 0; i < ev->rescues->len; i++) {
		Rescue r = g_array_index(ev->rescues, Rescue, i);
		g_autoptr(GBytes) rec = NULL;
		g_autoptr(GBytes) data = load(dc, r.key, &r.loc, &rec);
		if (data == NULL)
			continue;
		Write w = {.index_key = r.key, .from = &r.loc};
		write_init_copy(&w, rec);
		write_pad(&w);
		commit(dc, &w, ev);
	}
}

/* Forgets what could not be rescued, lets the evicted segments go and
 * deletes their files. */
static void evicted_finish(ImapfsDiskCache *dc, Evicted *ev)
{
	gboolean locked = ev->pinned->len > 0 || ev->rescues->len > 0;

	if (locked)
		g_mutex_lock(&dc->lock);
	for (guint i = 0; i < ev->pinned->len; i++) {
		Segment *seg = ev->pinned->pdata[i];
		while (seg->entries.head)
			forget(dc, seg->entries.head->data);
		seg->busy--;
		seg_settle(dc, seg);
	}
	/* Under the lock, as the index's own references are. */
	for (guint i = 0; i < ev->rescues->len; i++)
		g_bytes_unref(g_array_index(ev->rescues, Rescue, i).key);
	if (locked)
		g_mutex_unlock(&dc->lock);
	for (guint i = 0; i < ev->doomed->len; i++) {
		g_autofree char *path =
			seg_path(dc, g_array_index(ev->doomed, guint64, i));
		if (unlink(path) < 0 && errno != ENOENT)
			imapfs_trace(IMAPFS_TRACE_CACHE,
				     "disk cache: cannot delete \"%s\": %s",
				     path, g_strerror(errno));
	}
	g_array_unref(ev->rescues);
	g_ptr_array_unref(ev->pinned);
	g_array_unref(ev->doomed);
}

/* Appends @w, then rescues what its evictions left to rescue: at most
 * about one segment's worth, so that a put never rewrites the cache. */
static void append(ImapfsDiskCache *dc, Write *w)
{
	Evicted ev;

	evicted_init(&ev, dc->seg_target);
	commit(dc, w, &ev);
	rescue_all(dc, &ev);
	evicted_finish(dc, &ev);
}

static void trace_key(const char *what, const ImapfsBlockKey *key)
{
	if (!imapfs_log_tracing(IMAPFS_TRACE_CACHE))
		return;
	g_autofree char *mb = imapfs_log_quote(key->mailbox);
	g_autofree char *sec = imapfs_log_quote(key->section);
	imapfs_trace(
		IMAPFS_TRACE_CACHE,
		"disk cache: %s \"%s\" %u:%u \"%s\" block %" G_GUINT64_FORMAT,
		what, mb, key->uidvalidity, key->uid, sec, key->block);
}

void imapfs_disk_cache_put(ImapfsDiskCache *dc, const ImapfsBlockKey *key,
			   const void *data, gsize len)
{
	g_autoptr(GBytes) k = block_key(dc, key);
	Write w = {.index_key = k};

	write_init(&w, REC_BLOCK, k, data, len);
	write_pad(&w);
	append(dc, &w);
	trace_key("put", key);
}

void imapfs_disk_cache_drop_mailbox(ImapfsDiskCache *dc, const char *mailbox,
				    guint32 keep_uidvalidity)
{
	g_autoptr(GBytes) k = drop_key(dc, mailbox, keep_uidvalidity);
	Drop d;
	Write w = {.drop = &d};

	drop_parse(k, &d);
	write_init(&w, REC_DROP, k, NULL, 0);
	write_pad(&w);
	append(dc, &w);
}

/* --- getting --- */

GBytes *imapfs_disk_cache_get(ImapfsDiskCache *dc, const ImapfsBlockKey *key)
{
	g_autoptr(GBytes) k = block_key(dc, key);
	Loc loc;

	g_mutex_lock(&dc->lock);
	Entry *e = g_hash_table_lookup(dc->index, k);
	gboolean found = e && !e->writing;
	if (found) {
		loc = (Loc){e->seg->number, e->offset, e->len};
		e->referenced = TRUE;
	}
	g_mutex_unlock(&dc->lock);
	GBytes *data = found ? load(dc, k, &loc, NULL) : NULL;
	trace_key(data ? "hit" : "miss", key);
	return data;
}

guint64 imapfs_disk_cache_bytes(ImapfsDiskCache *dc)
{
	g_mutex_lock(&dc->lock);
	guint64 bytes = dc->bytes;
	g_mutex_unlock(&dc->lock);
	return bytes;
}

/* --- metadata blobs: one file each, replaced whole --- */

/* A fixed-size, harmless file name for any mailbox; the record holds the
 * real key, so a collision is only a miss. */
static char *meta_path(ImapfsDiskCache *dc, const char *mailbox)
{
	g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);

	g_checksum_update(sum, (const guchar *)dc->account,
			  strlen(dc->account) + 1);
	g_checksum_update(sum, (const guchar *)mailbox, strlen(mailbox));
	g_autofree char *name = g_strndup(g_checksum_get_string(sum), 32);
	return g_build_filename(dc->meta_dir, name, NULL);
}

/* The whole file behind @fd, fewer bytes if it was cut short. */
static GBytes *read_whole(ImapfsDiskCache *dc, int fd, const char *path,
			  struct stat *st)
{
	if (fstat(fd, st) < 0) {
		complain(&dc->warned_read, "disk cache: cannot stat \"%s\": %s",
			 path, g_strerror(errno));
		return NULL;
	}
	guint8 *buf = g_malloc(st->st_size);
	gssize n = pread_all(fd, buf, st->st_size, 0);
	if (n < 0) {
		complain(&dc->warned_read, "disk cache: cannot read \"%s\": %s",
			 path, g_strerror(errno));
		g_free(buf);
		return NULL;
	}
	return g_bytes_new_take(buf, n);
}

/* Deletes the damaged file @bad, unless a put_meta() has replaced it
 * meanwhile (renames happen under the lock). */
static void discard_meta(ImapfsDiskCache *dc, const char *path,
			 const struct stat *bad)
{
	struct stat st;

	g_mutex_lock(&dc->lock);
	if (lstat(path, &st) == 0 && st.st_ino == bad->st_ino &&
	    st.st_dev == bad->st_dev)
		unlink(path);
	g_mutex_unlock(&dc->lock);
}

GBytes *imapfs_disk_cache_get_meta(ImapfsDiskCache *dc, const char *mailbox)
{
	g_autofree char *path = meta_path(dc, mailbox);
	g_autoptr(GBytes) key = meta_key(dc, mailbox);
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		if (errno != ENOENT)
			complain(&dc->warned_read,
				 "disk cache: cannot open \"%s\": %s", path,
				 g_strerror(errno));
		return NULL;
	}
	g_autoptr(GBytes) file = read_whole(dc, fd, path, &st);
	close(fd);
	GBytes *blob = file ? check_record(file, REC_META, key) : NULL;
	if (file && blob == NULL) {
		complain(&dc->warned_read, "disk cache: damaged file \"%s\"",
			 path);
		discard_meta(dc, path, &st);
	}
	return blob;
}

/* Writes @w to a new temporary file in the meta directory; its name, or
 * NULL. No fsync: a torn file fails its checks on reading. */
static char *write_temp(ImapfsDiskCache *dc, Write *w)
{
	g_autofree char *tmp =
		g_build_filename(dc->meta_dir, ".tmp-XXXXXX", NULL);
	int fd = g_mkstemp_full(tmp, O_WRONLY | O_CLOEXEC, 0600);

	if (fd < 0) {
		complain(&dc->warned_write,
			 "disk cache: cannot create a file in \"%s\": %s",
			 dc->meta_dir, g_strerror(errno));
		return NULL;
	}
	gboolean ok = pwritev_all(fd, w->iov, w->iovcnt, 0);
	int err = errno;
	close(fd);
	if (!ok) {
		complain(&dc->warned_write,
			 "disk cache: cannot write \"%s\": %s", tmp,
			 g_strerror(err));
		unlink(tmp);
		return NULL;
	}
	return g_steal_pointer(&tmp);
}

void imapfs_disk_cache_put_meta(ImapfsDiskCache *dc, const char *mailbox,
				GBytes *blob)
{
	g_autofree char *path = meta_path(dc, mailbox);
	g_autoptr(GBytes) key = meta_key(dc, mailbox);
	gsize len;
	const void *data = g_bytes_get_data(blob, &len);
	Write w = {0};

	/* The same record as in a segment, without padding. */
	write_init(&w, REC_META, key, data, len);
	g_autofree char *tmp = write_temp(dc, &w);
	if (tmp == NULL)
		return;
	/* Under the lock, for discard_meta()'s check. */
	g_mutex_lock(&dc->lock);
	int err = rename(tmp, path) < 0 ? errno : 0;
	g_mutex_unlock(&dc->lock);
	if (err) {
		complain(&dc->warned_write,
			 "disk cache: cannot rename to \"%s\": %s", path,
			 g_strerror(err));
		unlink(tmp);
	}
}

/* --- open: rebuilding the index from the segments --- */

/* Reads the header and key of the record at @pos, which must end (padding
 * included) within the @size bytes of the file. FALSE when bad or torn;
 * the data is checked by a get. */
static gboolean scan_record(int fd, guint64 pos, guint64 size, RecHead *h,
			    GBytes **key_r)
{
	guint8 buf[SCAN_READ];
	gsize want = MIN(SCAN_READ, size - pos);

	if (pread_all(fd, buf, want, pos) != (gssize)want ||
	    !head_parse(buf, size - pos, h) || pad8(rec_len(h)) > size - pos)
		return FALSE;
	if (HDR_LEN + h->key_len <= want) {
		*key_r = g_bytes_new(buf + HDR_LEN, h->key_len);
	} else {
		guint8 *key = g_malloc(h->key_len);
		if (pread_all(fd, key, h->key_len, pos + HDR_LEN) !=
		    h->key_len) {
			g_free(key);
			return FALSE;
		}
		*key_r = g_bytes_new_take(key, h->key_len);
	}
	gsize len;
	const void *key = g_bytes_get_data(*key_r, &len);
	return head_sum_ok(buf, key, len);
}

/* Adds a block record to the index (a later one for a key replaces an
 * earlier), or applies a tombstone to what is indexed so far. Locked. */
static gboolean index_record(ImapfsDiskCache *dc, Segment *seg, guint64 pos,
			     const RecHead *h, GBytes *key)
{
	Drop d;

	if (h->type == REC_DROP) {
		if (!drop_parse(key, &d))
			return FALSE;
		forget_dropped(dc, &d);
		return TRUE;
	}
	if (h->type != REC_BLOCK)
		return FALSE;
	Entry *e = g_hash_table_lookup(dc->index, key);
	if (e) {
		entry_move(e, seg, pos);
		e->len = rec_len(h);
	} else {
		index_add(dc, key, seg, pos, rec_len(h));
	}
	return TRUE;
}

/* Indexes segment @number in order and adds it as the newest. The first
 * bad record ends it: the file is cut there, so appends start clean. */
static void scan_segment(ImapfsDiskCache *dc, guint64 number)
{
	g_autofree char *path = seg_path(dc, number);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0) {
		complain(&dc->warned_read, "disk cache: cannot open \"%s\": %s",
			 path, g_strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	Segment *seg = seg_push(dc, number);
	guint64 pos = 0, size = st.st_size;
	while (pos < size) {
		RecHead h;
		g_autoptr(GBytes) key = NULL;
		if (!scan_record(fd, pos, size, &h, &key) ||
		    !index_record(dc, seg, pos, &h, key)) {
			complain(&dc->warned_read,
				 "disk cache: damaged record in \"%s\" at "
				 "%" G_GUINT64_FORMAT ", cut there",
				 path, pos);
			if (ftruncate(fd, pos) < 0)
				imapfs_trace(IMAPFS_TRACE_CACHE,
					     "disk cache: cannot truncate "
					     "\"%s\": %s",
					     path, g_strerror(errno));
			break;
		}
		pos += pad8(rec_len(&h));
	}
	seg->size = pos;
	dc->bytes += pos;
	close(fd);
}

static gboolean seg_name_parse(const char *name, guint64 *number_r)
{
	if (strlen(name) != SEG_DIGITS + strlen(SEG_SUFFIX) ||
	    strcmp(name + SEG_DIGITS, SEG_SUFFIX) != 0)
		return FALSE;
	for (int i = 0; i < SEG_DIGITS; i++)
		if (!g_ascii_isdigit(name[i]) &&
		    (name[i] < 'a' || name[i] > 'f'))
			return FALSE;
	*number_r = g_ascii_strtoull(name, NULL, 16);
	return TRUE;
}

static gint number_cmp(gconstpointer a, gconstpointer b)
{
	guint64 x = *(const guint64 *)a, y = *(const guint64 *)b;

	return x < y ? -1 : x > y;
}

/* The segment numbers, in order; anything else in the directory is
 * removed (it is ours, and of no use). */
static GArray *list_segments(ImapfsDiskCache *dc)
{
	GArray *numbers = g_array_new(FALSE, FALSE, sizeof(guint64));
	g_autoptr(GDir) d = g_dir_open(dc->seg_dir, 0, NULL);
	const char *name;

	while (d && (name = g_dir_read_name(d))) {
		g_autofree char *path =
			g_build_filename(dc->seg_dir, name, NULL);
		struct stat st;
		guint64 number;
		if (seg_name_parse(name, &number) && lstat(path, &st) == 0 &&
		    S_ISREG(st.st_mode))
			g_array_append_val(numbers, number);
		else
			remove_tree(path);
	}
	g_array_sort(numbers, number_cmp);
	return numbers;
}

/* Rebuilds the index, then evicts down to a limit that may have shrunk
 * since last time. The last segment stays current: appends continue at
 * its end. */
static void load_segments(ImapfsDiskCache *dc)
{
	g_autoptr(GArray) numbers = list_segments(dc);
	Evicted ev;

	/* Nobody else has dc yet; locked for the functions' sake. Nothing
	 * has been read yet, so nothing is rescued. */
	evicted_init(&ev, 0);
	g_mutex_lock(&dc->lock);
	for (guint i = 0; i < numbers->len; i++)
		scan_segment(dc, g_array_index(numbers, guint64, i));
	while (dc->bytes > dc->max_bytes)
		evict_oldest(dc, &ev);
	g_mutex_unlock(&dc->lock);
	evicted_finish(dc, &ev);
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

/* A cache in another format (version 1 kept a file per block in blocks/),
 * or from before VERSION, is wiped: only what this module creates, never
 * anything else a user put in @dir. */
static gboolean check_version(ImapfsDiskCache *dc, const char *dir,
			      GError **error)
{
	g_autofree char *path = g_build_filename(dir, "VERSION", NULL);
	g_autofree char *blocks = g_build_filename(dir, "blocks", NULL);
	g_autofree char *text = NULL;
	g_autoptr(GError) local = NULL;

	if (!g_file_get_contents(path, &text, NULL, NULL) ||
	    strcmp(text, VERSION_LINE) != 0) {
		remove_tree(blocks);
		remove_tree(dc->seg_dir);
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
	if (g_mkdir_with_parents(dc->seg_dir, 0700) < 0)
		return fail_errno(error, "cannot create", dc->seg_dir);
	if (g_mkdir_with_parents(dc->meta_dir, 0700) < 0)
		return fail_errno(error, "cannot create", dc->meta_dir);
	return TRUE;
}

ImapfsDiskCache *imapfs_disk_cache_open(const char *dir, const char *account,
					guint64 max_bytes, GError **error)
{
	g_autoptr(ImapfsDiskCache) dc = g_new0(ImapfsDiskCache, 1);

	dc->account = g_strdup(account);
	dc->seg_dir = g_build_filename(dir, "segments", NULL);
	dc->meta_dir = g_build_filename(dir, "meta", NULL);
	dc->max_bytes = max_bytes;
	dc->seg_target = CLAMP(max_bytes / 8, SEG_MIN, SEG_MAX);
	dc->lock_fd = -1;
	dc->next_number = 1;
	g_mutex_init(&dc->lock);
	dc->index = g_hash_table_new_full(g_bytes_hash, g_bytes_equal, NULL,
					  entry_free);
	g_queue_init(&dc->segments);
	if (!make_private_dir(dir, error) || !take_lock(dc, dir, error) ||
	    !check_version(dc, dir, error))
		return NULL;
	remove_temps(dc->meta_dir);
	load_segments(dc);
	imapfs_trace(IMAPFS_TRACE_CACHE,
		     "disk cache: %u blocks in %u segments, %" G_GUINT64_FORMAT
		     " bytes",
		     g_hash_table_size(dc->index),
		     g_queue_get_length(&dc->segments), dc->bytes);
	return g_steal_pointer(&dc);
}

void imapfs_disk_cache_close(ImapfsDiskCache *dc)
{
	if (dc == NULL)
		return;
	/* The segments' entry queues link entries freed with the table. */
	g_hash_table_unref(dc->index);
	g_queue_clear_full(&dc->segments, seg_free);
	if (dc->lock_fd >= 0)
		close(dc->lock_fd); /* releases the flock() */
	g_mutex_clear(&dc->lock);
	g_free(dc->account);
	g_free(dc->seg_dir);
	g_free(dc->meta_dir);
	g_free(dc);
}
