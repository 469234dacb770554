/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <string.h>

#include "imapfs/block-cache.h"
#include "imapfs/cancel.h"
#include "imapfs/error.h"
#include "imapfs/log.h"
#include "imapfs/mime.h"

#define BS IMAPFS_BLOCK_SIZE
/* Readahead within one message starts at this many blocks (a read from
 * the start is usually a read of all of it) and grows to 32 (8 MiB). */
#define RA_FIRST_BLOCKS 4
#define RA_MAX_BLOCKS 32
/* One prefetch job: at most this many windows or bytes, so that a job
 * (one round trip) is large enough to hide latency and small enough to
 * spread over the connections. */
#define JOB_MAX_WINDOWS 64
#define JOB_MAX_BYTES (4 * 1024 * 1024)
/* Messages up to this size (4 MiB) are prefetched whole, in one window. */
#define WHOLE_MAX_BLOCKS 16
/* Bytes that may wait for the disk writer before fetching waits too. */
#define WRITE_QUEUE_MAX (32 * 1024 * 1024)

typedef struct {
	char *id;      /* block_id(): the key */
	char *mailbox; /* server name, for drop_mailbox */
	guint32 uidvalidity;
	GBytes *data;	 /* fewer than BS bytes: the message ends here */
	GList *lru_link; /* in cache->lru, most recent at the head */
	gboolean unread; /* prefetched, not read yet: in the budget */
} Block;

/* A block being fetched; readers of the same block wait for it. */
typedef struct {
	guint refs; /* the fetcher and every waiter */
	gboolean done;
	gboolean prefetch; /* counts @estimate against the budget */
	guint64 estimate;
	GBytes *data;  /* when done without error */
	GError *error; /* when done with one */
} Pending;

/* A run of blocks of one message, fetched as one window. */
typedef struct {
	guint32 uid;
	guint64 first, count; /* block indexes */
} Span;

typedef struct {
	char *mailbox;
	guint32 uidvalidity;
	GArray *spans;	 /* Span */
	gboolean urgent; /* readahead of a file being read */
	guint64 seq;	 /* submission order */
} Job;

struct ImapfsBlockCache {
	ImapfsBlockFetchFunc fetch;
	gpointer fetch_data;
	ImapfsDiskCache *disk; /* may be NULL */
	guint64 max_bytes;
	GThreadPool *workers; /* prefetch jobs; NULL without prefetch */
	gint closing;	      /* atomic: queued jobs only clean up */
	gint next_seq;	      /* atomic: Job.seq of the next job */
	guint64 budget;	      /* prefetch bytes allowed */
	GMutex lock;
	GCond fetched;	      /* a Pending finished */
	GThread *writer;      /* writes to disk; only with a disk cache */
	GCond write_wake;     /* the queue has work, or stop */
	GCond written;	      /* write_queued went down */
	GQueue writes;	      /* DiskWrite *; protected by lock */
	guint64 write_queued; /* their bytes; protected by lock */
	guint write_waiters;  /* threads waiting on written; by lock */
	gboolean writer_sleeping, writer_stop; /* protected by lock */
	GHashTable *blocks;	     /* id -> Block *; protected by lock */
	GQueue lru;		     /* Block *; protected by lock */
	guint64 bytes;		     /* protected by lock */
	GHashTable *pending;	     /* id -> Pending *; protected by lock */
	guint64 budget_used;	     /* protected by lock */
	ImapfsBlockCacheStats stats; /* protected by lock */
};

static void block_free(gpointer p)
{
	Block *b = p;

	g_free(b->id);
	g_free(b->mailbox);
	g_bytes_unref(b->data);
	g_free(b);
}

static void pending_unref(Pending *p)
{
	if (--p->refs > 0)
		return;
	if (p->data)
		g_bytes_unref(p->data);
	g_clear_error(&p->error);
	g_free(p);
}

static void job_free(Job *job)
{
	g_free(job->mailbox);
	g_array_unref(job->spans);
	g_free(job);
}

static void run_job(gpointer job, gpointer cache);
static gint job_order(gconstpointer a, gconstpointer b, gpointer data);
static gpointer writer_main(gpointer data);
static void queue_write(ImapfsBlockCache *cache, const ImapfsMessageKey *key,
			guint64 index, GBytes *data);

ImapfsBlockCache *imapfs_block_cache_new(guint64 max_bytes,
					 ImapfsDiskCache *disk,
					 ImapfsBlockFetchFunc fetch,
					 gpointer fetch_data)
{
	ImapfsBlockCache *cache = g_new0(ImapfsBlockCache, 1);

	cache->fetch = fetch;
	cache->fetch_data = fetch_data;
	cache->disk = disk;
	cache->max_bytes = max_bytes;
	g_mutex_init(&cache->lock);
	g_cond_init(&cache->fetched);
	g_cond_init(&cache->written);
	g_cond_init(&cache->write_wake);
	g_queue_init(&cache->writes);
	cache->blocks = g_hash_table_new_full(g_str_hash, g_str_equal, NULL,
					      block_free);
	cache->pending =
		g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	g_queue_init(&cache->lru);
	return cache;
}

void imapfs_block_cache_start_prefetch(ImapfsBlockCache *cache, guint workers,
				       guint64 budget)
{
	g_return_if_fail(cache->workers == NULL);
	if (workers == 0 || budget == 0)
		return;
	cache->budget = budget;
	cache->workers =
		g_thread_pool_new(run_job, cache, workers, FALSE, NULL);
	g_thread_pool_set_sort_function(cache->workers, job_order, NULL);
}

void imapfs_block_cache_free(ImapfsBlockCache *cache)
{
	if (cache == NULL)
		return;
	/* Queued jobs still run, but only to release their Pendings. */
	g_atomic_int_set(&cache->closing, TRUE);
	if (cache->workers)
		g_thread_pool_free(cache->workers, FALSE, TRUE);
	/* Every block fetched reaches the disk before the cache goes. */
	if (cache->writer) {
		g_mutex_lock(&cache->lock);
		cache->writer_stop = TRUE;
		g_cond_signal(&cache->write_wake);
		g_mutex_unlock(&cache->lock);
		g_thread_join(cache->writer);
	}
	g_queue_clear(&cache->lru);
	g_hash_table_unref(cache->blocks);
	g_hash_table_unref(cache->pending);
	g_cond_clear(&cache->fetched);
	g_cond_clear(&cache->written);
	g_cond_clear(&cache->write_wake);
	g_mutex_clear(&cache->lock);
	g_free(cache);
}

static char *block_id(const ImapfsMessageKey *key, guint64 index)
{
	return g_strdup_printf("%u/%u/%" G_GUINT64_FORMAT "%s%s/%s",
			       key->uidvalidity, key->uid, index,
			       key->section ? ":" : "",
			       key->section ? key->section : "", key->mailbox);
}

static ImapfsBlockKey disk_key(const ImapfsMessageKey *key, guint64 index)
{
	ImapfsBlockKey k = {key->mailbox, key->uidvalidity, key->uid,
			    key->section ? key->section : "", index};

	return k;
}

/* --- the memory tier (all called locked) --------------------------------- */

static void forget_unread(ImapfsBlockCache *cache, Block *b)
{
	if (!b->unread)
		return;
	b->unread = FALSE;
	cache->budget_used -= g_bytes_get_size(b->data);
}

static GBytes *mem_lookup(ImapfsBlockCache *cache, const char *id)
{
	Block *b = g_hash_table_lookup(cache->blocks, id);

	if (b == NULL)
		return NULL;
	g_queue_unlink(&cache->lru, b->lru_link);
	g_queue_push_head_link(&cache->lru, b->lru_link);
	forget_unread(cache, b);
	cache->stats.memory_hits++;
	return g_bytes_ref(b->data);
}

static void mem_remove(ImapfsBlockCache *cache, Block *b)
{
	forget_unread(cache, b);
	cache->bytes -= g_bytes_get_size(b->data);
	g_queue_delete_link(&cache->lru, b->lru_link);
	g_hash_table_remove(cache->blocks, b->id);
}

/* Drops least recently used blocks until @incoming more bytes fit. */
static void make_room(ImapfsBlockCache *cache, gsize incoming)
{
	while (cache->bytes + incoming > cache->max_bytes && cache->lru.tail)
		mem_remove(cache, cache->lru.tail->data);
}

static void mem_store(ImapfsBlockCache *cache, const ImapfsMessageKey *key,
		      const char *id, GBytes *data, gboolean unread)
{
	gsize size = g_bytes_get_size(data);

	if (cache->max_bytes == 0 || size > cache->max_bytes ||
	    g_hash_table_contains(cache->blocks, id))
		return;
	make_room(cache, size);
	Block *b = g_new0(Block, 1);
	b->id = g_strdup(id);
	b->mailbox = g_strdup(key->mailbox);
	b->uidvalidity = key->uidvalidity;
	b->data = g_bytes_ref(data);
	b->unread = unread;
	if (unread)
		cache->budget_used += size;
	g_queue_push_head(&cache->lru, b);
	b->lru_link = cache->lru.head;
	g_hash_table_insert(cache->blocks, b->id, b);
	cache->bytes += size;
}

/* --- writing to disk ------------------------------------------------------
 */

/* A block on its way to the disk cache. */
typedef struct {
	char *mailbox;
	char *section; /* NULL: the whole message */
	guint32 uidvalidity, uid;
	guint64 index;
	GBytes *data;
} DiskWrite;

static void disk_write_free(DiskWrite *dw)
{
	g_bytes_unref(dw->data);
	g_free(dw->mailbox);
	g_free(dw->section);
	g_free(dw);
}

/* Wakes threads waiting for the queue to shrink, if any. Called locked;
 * GLib's GCond makes a system call even when nobody waits. */
static void wake_written(ImapfsBlockCache *cache)
{
	if (cache->write_waiters > 0)
		g_cond_broadcast(&cache->written);
}

/* Writes what is queued, all of it at each wake-up, so the disk never
 * holds up a connection or a reader, and a busy fetch costs the writer
 * one wake-up per batch rather than per block. */
static gpointer writer_main(gpointer data)
{
	ImapfsBlockCache *cache = data;

	g_mutex_lock(&cache->lock);
	for (;;) {
		cache->writer_sleeping = TRUE;
		while (cache->writes.length == 0 && !cache->writer_stop)
			g_cond_wait(&cache->write_wake, &cache->lock);
		cache->writer_sleeping = FALSE;
		if (cache->writes.length == 0)
			break;
		GQueue batch = cache->writes;
		g_queue_init(&cache->writes);
		g_mutex_unlock(&cache->lock);
		guint64 done = 0;
		DiskWrite *dw;
		while ((dw = g_queue_pop_head(&batch))) {
			ImapfsMessageKey mk = {dw->mailbox, dw->uidvalidity,
					       dw->uid, dw->section};
			ImapfsBlockKey k = disk_key(&mk, dw->index);
			gsize len;
			gconstpointer bytes = g_bytes_get_data(dw->data, &len);
			imapfs_disk_cache_put(cache->disk, &k, bytes, len);
			done += len;
			disk_write_free(dw);
		}
		g_mutex_lock(&cache->lock);
		cache->write_queued -= done;
		wake_written(cache);
	}
	g_mutex_unlock(&cache->lock);
	return NULL;
}

/* Waits until at most @limit bytes wait for the writer. Called locked. */
static void wait_written(ImapfsBlockCache *cache, guint64 limit)
{
	cache->write_waiters++;
	while (cache->write_queued > limit)
		g_cond_wait(&cache->written, &cache->lock);
	cache->write_waiters--;
}

/* Hands a block to the writer thread; waits while too much is queued,
 * so a slow disk slows fetching rather than filling memory. */
static void queue_write(ImapfsBlockCache *cache, const ImapfsMessageKey *key,
			guint64 index, GBytes *data)
{
	DiskWrite *dw = g_new(DiskWrite, 1);

	dw->mailbox = g_strdup(key->mailbox);
	dw->section = g_strdup(key->section);
	dw->uidvalidity = key->uidvalidity;
	dw->uid = key->uid;
	dw->index = index;
	dw->data = g_bytes_ref(data);
	g_mutex_lock(&cache->lock);
	/* Started on first use, not in new(): a daemon forks after the
	 * cache is made, and threads do not survive fork(). */
	if (cache->writer == NULL)
		cache->writer =
			g_thread_new("imapfs-writer", writer_main, cache);
	wait_written(cache, WRITE_QUEUE_MAX);
	cache->write_queued += g_bytes_get_size(data);
	g_queue_push_tail(&cache->writes, dw);
	if (cache->writer_sleeping)
		g_cond_signal(&cache->write_wake);
	g_mutex_unlock(&cache->lock);
}

/* --- fetching ------------------------------------------------------------- */

/* Ends the fetch of block @id: stores it, wakes the waiters, and for a
 * network fetch writes it to disk (outside the lock). */
static void complete(ImapfsBlockCache *cache, const ImapfsMessageKey *key,
		     guint64 index, Pending *p, GBytes *data,
		     const GError *error, gboolean from_network)
{
	g_autofree char *id = block_id(key, index);

	g_mutex_lock(&cache->lock);
	g_hash_table_remove(cache->pending, id);
	if (p->prefetch)
		cache->budget_used -= p->estimate;
	if (data)
		mem_store(cache, key, id, data, p->prefetch && p->estimate > 0);
	p->done = TRUE;
	p->data = data ? g_bytes_ref(data) : NULL;
	p->error = error ? g_error_copy(error) : NULL;
	/* Only readers waiting for this block need waking; waking all of
	 * them for every prefetched block costs context switches. */
	if (p->refs > 1)
		g_cond_broadcast(&cache->fetched);
	pending_unref(p);
	g_mutex_unlock(&cache->lock);
	if (data && from_network && cache->disk)
		queue_write(cache, key, index, data);
}

static gboolean fail_gone(const ImapfsMessageKey *key, GError **error)
{
	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_NONEXISTENT,
		    "message UID %u is no longer in \"%s\"", key->uid,
		    key->mailbox);
	return FALSE;
}

/* Caches every block of @content but @skip, as fetched from the server. */
static void store_block(ImapfsBlockCache *cache, const ImapfsMessageKey *key,
			GBytes *content, guint64 i)
{
	gsize size = g_bytes_get_size(content);
	g_autoptr(GBytes) data =
		g_bytes_new_from_bytes(content, i * BS, MIN(size - i * BS, BS));
	g_autofree char *id = block_id(key, i);

	g_mutex_lock(&cache->lock);
	mem_store(cache, key, id, data, FALSE);
	g_mutex_unlock(&cache->lock);
	if (cache->disk)
		queue_write(cache, key, i, data);
}

/* Caches every block of @content but @skip (the caller's). The block at
 * the end may be empty: it marks the end. The order is for a memory cache
 * smaller than the content, which keeps the blocks stored last: those
 * before @skip go first, nearest @skip last (a size walk from the end is
 * followed by reads from the start), then those after it, nearest @skip
 * last (a reader goes on from there). In ascending order, every further
 * block of a sequential read would fetch the whole part again. */
static void store_others(ImapfsBlockCache *cache, const ImapfsMessageKey *key,
			 GBytes *content, guint64 skip)
{
	guint64 last = g_bytes_get_size(content) / BS;

	for (guint64 i = MIN(skip, last + 1); i-- > 0;)
		store_block(cache, key, content, i);
	for (guint64 i = last; i > skip; i--)
		store_block(cache, key, content, i);
}

/* The most encoded bytes taken for a part declared @declared long: some
 * slack for a server that counts line ends differently. */
static guint64 encoded_limit(guint64 declared)
{
	return MIN(declared + declared / 8 + 64 * 1024, (guint64)G_MAXUINT32);
}

/* A part whose encoding the server does not undo: all of it, decoded;
 * block @index is returned, the others are cached. */
static gboolean fetch_decoded(ImapfsBlockCache *cache,
			      const ImapfsMessageKey *key, guint64 index,
			      GBytes **data_r, GError **error)
{
	guint64 limit = encoded_limit(key->encoded_size);
	g_autoptr(GByteArray) raw = g_byte_array_new();
	/* One byte past the limit tells a part that is longer. */
	ImapfsBodyWindow w = {key->uid,	    0,	  limit + 1, raw, FALSE,
			      key->section, FALSE};

	if (!cache->fetch(cache->fetch_data, key->mailbox, key->uidvalidity, &w,
			  1, NULL, NULL, error))
		return FALSE;
	if (!w.found)
		return fail_gone(key, error);
	if (raw->len > limit) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_PROTOCOL,
			    "part larger than the server said: section %s of "
			    "UID %u in \"%s\"",
			    key->section, key->uid, key->mailbox);
		return FALSE;
	}
	g_autoptr(ImapfsDecoder) dec = imapfs_decoder_new(key->decode);
	g_autoptr(GByteArray) out = g_byte_array_sized_new(raw->len);
	imapfs_decoder_step(dec, raw->data, raw->len, out);
	imapfs_decoder_finish(dec, out);
	g_autoptr(GBytes) content =
		g_byte_array_free_to_bytes(g_steal_pointer(&out));
	gsize size = g_bytes_get_size(content);
	gsize from = MIN(size, index * BS);
	*data_r = g_bytes_new_from_bytes(content, from, MIN(size - from, BS));
	store_others(cache, key, content, index);
	return TRUE;
}

static gboolean fetch_one(ImapfsBlockCache *cache, const ImapfsMessageKey *key,
			  guint64 index, GBytes **data_r, GError **error)
{
	if (key->section && key->decode)
		return fetch_decoded(cache, key, index, data_r, error);
	g_autoptr(GByteArray) out = g_byte_array_new();
	ImapfsBodyWindow w = {key->uid, index * BS,   BS,	  out,
			      FALSE,	key->section, key->binary};

	if (!cache->fetch(cache->fetch_data, key->mailbox, key->uidvalidity, &w,
			  1, NULL, NULL, error))
		return FALSE;
	if (!w.found)
		return fail_gone(key, error);
	*data_r = g_byte_array_free_to_bytes(g_steal_pointer(&out));
	return TRUE;
}

/* Fetches block @index for which this thread registered @p. */
static GBytes *fetch_registered(ImapfsBlockCache *cache,
				const ImapfsMessageKey *key, guint64 index,
				Pending *p, GError **error)
{
	GBytes *data = NULL;
	GError *local = NULL;
	gboolean network = FALSE;

	if (cache->disk) {
		ImapfsBlockKey k = disk_key(key, index);
		data = imapfs_disk_cache_get(cache->disk, &k);
	}
	if (data == NULL) {
		network = TRUE;
		if (!fetch_one(cache, key, index, &data, &local) && !local)
			local = g_error_new(IMAPFS_ERROR, IMAPFS_ERROR_FAILED,
					    "fetching UID %u failed", key->uid);
	}
	g_mutex_lock(&cache->lock);
	if (data && network)
		cache->stats.fetched_blocks++;
	else if (data)
		cache->stats.disk_hits++;
	g_mutex_unlock(&cache->lock);
	complete(cache, key, index, p, data, local, network);
	if (local)
		g_propagate_error(error, local);
	return data;
}

/*
 * Waits for another thread's fetch @p of block @id (locked on entry and
 * exit). Returns its data, or NULL: with @error when a read failed (the
 * same error would happen again at once), a prefetch could not reach the
 * server, or this request was interrupted; without when a prefetch failed
 * otherwise or the fetcher's own request was interrupted (worth trying).
 */
static GBytes *wait_pending(ImapfsBlockCache *cache, Pending *p, const char *id,
			    GError **error)
{
	p->refs++;
	cache->stats.waits++;
	while (!p->done) {
		/* The fetch goes on for others; only this reader gives up. */
		if (!imapfs_cancel_check(error)) {
			pending_unref(p);
			return NULL;
		}
		g_cond_wait_until(&cache->fetched, &cache->lock,
				  imapfs_cancel_slice(G_MAXINT64));
	}
	GBytes *data = p->data ? g_bytes_ref(p->data) : NULL;
	/* A prefetched block read this way is read: out of the budget. */
	Block *b = data ? g_hash_table_lookup(cache->blocks, id) : NULL;
	if (b)
		forget_unread(cache, b);
	/* A prefetch that lost the connection kept trying for a whole
	 * timeout: starting over would double the reader's wait. */
	if (data == NULL &&
	    !g_error_matches(p->error, IMAPFS_ERROR,
			     IMAPFS_ERROR_INTERRUPTED) &&
	    (!p->prefetch || imapfs_error_is_connection(p->error)))
		g_propagate_error(error,
				  p->error ? g_error_copy(p->error)
					   : g_error_new(IMAPFS_ERROR,
							 IMAPFS_ERROR_FAILED,
							 "fetch failed"));
	pending_unref(p);
	return data;
}

/* Block @index of the message, from memory, disk or the server. */
static GBytes *get_block(ImapfsBlockCache *cache, const ImapfsMessageKey *key,
			 guint64 index, GError **error)
{
	g_autofree char *id = block_id(key, index);
	GError *local = NULL;

	g_mutex_lock(&cache->lock);
	for (;;) {
		GBytes *data = mem_lookup(cache, id);
		if (data) {
			g_mutex_unlock(&cache->lock);
			return data;
		}
		Pending *p = g_hash_table_lookup(cache->pending, id);
		if (p == NULL)
			break;
		data = wait_pending(cache, p, id, &local);
		if (data || local) {
			g_mutex_unlock(&cache->lock);
			if (local)
				g_propagate_error(error, local);
			return data;
		}
		/* A failed prefetch: look again, then fetch ourselves. */
	}
	Pending *p = g_new0(Pending, 1);
	p->refs = 1;
	g_hash_table_insert(cache->pending, g_strdup(id), p);
	g_mutex_unlock(&cache->lock);
	return fetch_registered(cache, key, index, p, error);
}

/* --- prefetch --------------------------------------------------------------
 */

/* Stores the bytes of @span's window in its blocks; completes them. */
static void finish_span(ImapfsBlockCache *cache, const ImapfsMessageKey *key,
			const Span *span, Pending **pendings,
			const ImapfsBodyWindow *w, const GError *error)
{
	g_autoptr(GError) gone = NULL;

	if (error == NULL && !w->found) {
		fail_gone(key, &gone);
		error = gone;
	}
	for (guint64 i = 0; i < span->count; i++) {
		g_autoptr(GBytes) data = NULL;
		if (error == NULL) {
			gsize from = MIN(w->out->len, i * BS);
			gsize n = MIN(w->out->len - from, BS);
			data = g_bytes_new(w->out->data + from, n);
		}
		if (pendings[i])
			complete(cache, key, span->first + i, pendings[i], data,
				 error, TRUE);
		pendings[i] = NULL;
	}
}

/* The Pendings of @span's blocks, looked up under the lock. */
static Pending **span_pendings(ImapfsBlockCache *cache, const Job *job,
			       const Span *span)
{
	Pending **out = g_new0(Pending *, span->count);

	g_mutex_lock(&cache->lock);
	for (guint64 i = 0; i < span->count; i++) {
		ImapfsMessageKey key = {job->mailbox, job->uidvalidity,
					span->uid};
		g_autofree char *id = block_id(&key, span->first + i);
		out[i] = g_hash_table_lookup(cache->pending, id);
	}
	g_mutex_unlock(&cache->lock);
	return out;
}

/* Completes the blocks of @span found on disk (reading ahead from disk
 * in parallel helps a remounted grep too) and trims @span to the blocks
 * still missing, shifting @pendings to match. FALSE if none is. */
static gboolean span_from_disk(ImapfsBlockCache *cache,
			       const ImapfsMessageKey *key, Span *span,
			       Pending **pendings)
{
	guint64 hits = 0;

	for (guint64 i = 0; cache->disk && i < span->count; i++) {
		ImapfsBlockKey k = disk_key(key, span->first + i);
		g_autoptr(GBytes) data =
			pendings[i] ? imapfs_disk_cache_get(cache->disk, &k)
				    : NULL;
		if (data == NULL)
			continue;
		complete(cache, key, span->first + i, pendings[i], data, NULL,
			 FALSE);
		pendings[i] = NULL;
		hits++;
	}
	g_mutex_lock(&cache->lock);
	cache->stats.disk_hits += hits;
	g_mutex_unlock(&cache->lock);
	guint64 lo = 0, hi = span->count;
	while (lo < hi && pendings[lo] == NULL)
		lo++;
	while (hi > lo && pendings[hi - 1] == NULL)
		hi--;
	memmove(pendings, pendings + lo, (hi - lo) * sizeof(*pendings));
	span->first += lo;
	span->count = hi - lo;
	return span->count > 0;
}

/* Fails the blocks of @spans without fetching: the cache is closing. */
static void cancel_round(ImapfsBlockCache *cache, Job *job, Span *spans,
			 guint n)
{
	g_autoptr(GError) error =
		g_error_new(IMAPFS_ERROR, IMAPFS_ERROR_DISCONNECTED,
			    "the file system is being unmounted");

	for (guint i = 0; i < n; i++) {
		ImapfsMessageKey key = {job->mailbox, job->uidvalidity,
					spans[i].uid};
		g_autofree Pending **p = span_pendings(cache, job, &spans[i]);
		for (guint64 b = 0; b < spans[i].count; b++)
			if (p[b])
				complete(cache, &key, spans[i].first + b, p[b],
					 NULL, error, FALSE);
	}
}

/* What window_done() needs to find a window's blocks. */
typedef struct {
	ImapfsBlockCache *cache;
	Job *job;
	Span *spans;
	Pending ***pend;
	ImapfsBodyWindow *w;
} Round;

/* Completes a window's blocks as soon as its reply is in, so that a
 * reader waiting for it need not wait for the rest of the batch. */
static void window_done(ImapfsBodyWindow *w, gpointer data)
{
	Round *r = data;
	guint i = w - r->w;
	ImapfsMessageKey key = {r->job->mailbox, r->job->uidvalidity,
				r->spans[i].uid};

	finish_span(r->cache, &key, &r->spans[i], r->pend[i], w, NULL);
}

/*
 * One round of a job: spans with distinct UIDs, fetched with one call
 * (one round trip). Spans found on disk are completed from there.
 */
static void run_round(ImapfsBlockCache *cache, Job *job, Span *spans, guint n)
{
	g_autofree ImapfsBodyWindow *w = g_new0(ImapfsBodyWindow, n);
	g_autofree Pending ***pend = g_new0(Pending **, n);
	g_autoptr(GError) error = NULL;
	guint k = 0;

	if (g_atomic_int_get(&cache->closing)) {
		cancel_round(cache, job, spans, n);
		return;
	}
	for (guint i = 0; i < n; i++) {
		ImapfsMessageKey key = {job->mailbox, job->uidvalidity,
					spans[i].uid};
		Pending **p = span_pendings(cache, job, &spans[i]);
		if (!span_from_disk(cache, &key, &spans[i], p)) {
			g_free(p);
			continue;
		}
		spans[k] = spans[i];
		pend[k] = p;
		w[k] = (ImapfsBodyWindow){spans[i].uid, spans[i].first * BS,
					  spans[i].count * BS,
					  g_byte_array_new(), FALSE};
		k++;
	}
	Round round = {cache, job, spans, pend, w};
	if (k > 0)
		cache->fetch(cache->fetch_data, job->mailbox, job->uidvalidity,
			     w, k, window_done, &round, &error);
	if (error)
		imapfs_trace(IMAPFS_TRACE_CACHE, "prefetch failed: %s",
			     error->message);
	for (guint i = 0; i < k; i++) {
		ImapfsMessageKey key = {job->mailbox, job->uidvalidity,
					spans[i].uid};
		finish_span(cache, &key, &spans[i], pend[i], &w[i], error);
		g_byte_array_unref(w[i].out);
		g_free(pend[i]);
	}
	guint64 blocks = 0;
	for (guint i = 0; i < k; i++)
		blocks += spans[i].count;
	g_mutex_lock(&cache->lock);
	cache->stats.prefetched_blocks += blocks;
	g_mutex_unlock(&cache->lock);
}

/* Runs a job in rounds, each taking the spans whose UID it has not seen
 * yet (a message's first and last block are two spans). */
static void run_job(gpointer data, gpointer user_data)
{
	Job *job = data;
	GArray *left = job->spans;

	while (left->len > 0) {
		g_autoptr(GHashTable) seen = g_hash_table_new(NULL, NULL);
		g_autoptr(GArray) round =
			g_array_new(FALSE, FALSE, sizeof(Span));
		g_autoptr(GArray) later =
			g_array_new(FALSE, FALSE, sizeof(Span));
		for (guint i = 0; i < left->len; i++) {
			Span *s = &g_array_index(left, Span, i);
			gpointer uid = GUINT_TO_POINTER(s->uid);
			g_array_append_val(g_hash_table_contains(seen, uid)
						   ? later
						   : round,
					   *s);
			g_hash_table_add(seen, uid);
		}
		run_round(user_data, job, (Span *)(void *)round->data,
			  round->len);
		g_array_set_size(left, 0);
		g_array_append_vals(left, later->data, later->len);
	}
	job_free(job);
}

/* Registers the blocks of @span that are neither cached nor in flight
 * as prefetch Pendings and adds them to @job as spans. FALSE when the
 * budget is spent; *@end_r (may be NULL) then gets the first block not
 * claimed. Readahead within the file being read is not @budgeted: it is
 * what the reader waits for next, bounded by RA_MAX_BLOCKS per file, and
 * must not starve behind prefetch of other messages. Called locked. */
static gboolean claim_span(ImapfsBlockCache *cache, Job *job, Span span,
			   guint64 size, gboolean budgeted, guint64 *end_r)
{
	for (guint64 i = span.first; i < span.first + span.count; i++) {
		if (end_r)
			*end_r = i;
		ImapfsMessageKey key = {job->mailbox, job->uidvalidity,
					span.uid};
		g_autofree char *id = block_id(&key, i);
		if (g_hash_table_contains(cache->blocks, id) ||
		    g_hash_table_contains(cache->pending, id))
			continue;
		guint64 start = i * BS;
		guint64 estimate = size > start ? MIN(size - start, BS) : 0;
		if (!budgeted)
			estimate = 0;
		else if (cache->budget_used + estimate > cache->budget)
			return FALSE;
		Pending *p = g_new0(Pending, 1);
		p->refs = 1;
		p->prefetch = TRUE;
		p->estimate = estimate;
		cache->budget_used += estimate;
		g_hash_table_insert(cache->pending, g_steal_pointer(&id), p);
		Span *last = job->spans->len
				     ? &g_array_index(job->spans, Span,
						      job->spans->len - 1)
				     : NULL;
		if (last && last->uid == span.uid &&
		    last->first + last->count == i)
			last->count++;
		else
			g_array_append_val(job->spans,
					   ((Span){span.uid, i, 1}));
	}
	if (end_r)
		*end_r = span.first + span.count;
	return TRUE;
}

/* Readahead of the file a reader is in comes before prefetch of the
 * files it will open later, which may fill the queue; then FIFO. */
static gint job_order(gconstpointer a, gconstpointer b, gpointer data)
{
	const Job *x = a, *y = b;

	if (x->urgent != y->urgent)
		return x->urgent ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static Job *job_new(const char *mailbox, guint32 uidvalidity)
{
	Job *job = g_new0(Job, 1);

	job->mailbox = g_strdup(mailbox);
	job->uidvalidity = uidvalidity;
	job->spans = g_array_new(FALSE, FALSE, sizeof(Span));
	return job;
}

/* Hands @job to the workers if it holds anything; frees it otherwise. */
static void submit(ImapfsBlockCache *cache, Job *job)
{
	if (job->spans->len == 0) {
		job_free(job);
		return;
	}
	job->seq = (guint)g_atomic_int_add(&cache->next_seq, 1);
	imapfs_trace(IMAPFS_TRACE_CACHE, "prefetch: %u windows in \"%s\"",
		     job->spans->len, job->mailbox);
	g_thread_pool_push(cache->workers, job, NULL);
}

/* The spans worth prefetching for a message of @size: all of it when
 * small, else its first block and the last (which open() checks). */
static guint message_spans(guint32 uid, guint64 size, Span out[2])
{
	guint64 blocks = size / BS + 1;

	if (blocks <= WHOLE_MAX_BLOCKS) {
		out[0] = (Span){uid, 0, blocks};
		return 1;
	}
	out[0] = (Span){uid, 0, 1};
	out[1] = (Span){uid, (size - 1) / BS, 1};
	return 2;
}

guint imapfs_block_cache_prefetch(ImapfsBlockCache *cache, const char *mailbox,
				  guint32 uidvalidity,
				  const ImapfsPrefetchItem *items, guint n)
{
	Job *job = job_new(mailbox, uidvalidity);
	guint64 job_bytes = 0;
	guint done = 0;

	if (cache->workers == NULL) {
		job_free(job);
		return 0;
	}
	g_mutex_lock(&cache->lock);
	for (; done < n; done++) {
		Span spans[2];
		guint count =
			message_spans(items[done].uid, items[done].size, spans);
		guint64 before = cache->budget_used;
		if (!claim_span(cache, job, spans[0], items[done].size, TRUE,
				NULL) ||
		    (count > 1 && !claim_span(cache, job, spans[1],
					      items[done].size, TRUE, NULL)))
			break;
		job_bytes += cache->budget_used - before;
		if (job->spans->len >= JOB_MAX_WINDOWS ||
		    job_bytes >= JOB_MAX_BYTES) {
			submit(cache, job);
			job = job_new(mailbox, uidvalidity);
			job_bytes = 0;
		}
	}
	g_mutex_unlock(&cache->lock);
	submit(cache, job);
	return done;
}

/* Reads this far apart still count as following on: the kernel's own
 * readahead may send neighbouring requests out of order. */
#define RA_SLACK (1024 * 1024)

/*
 * Grows the readahead window while reads follow on from each other and
 * claims the blocks after the one at @offset; random reads claim nothing.
 * Returns the job to submit, or NULL. Called locked: concurrent reads of
 * one file share @ra.
 */
static Job *plan_readahead(ImapfsBlockCache *cache, const ImapfsMessageKey *key,
			   ImapfsReadahead *ra, guint64 offset)
{
	gboolean follows = offset == 0 || (offset + RA_SLACK >= ra->next &&
					   offset <= ra->next + RA_SLACK);

	if (!follows) {
		ra->window = 0;
		ra->ahead = 0;
		return NULL;
	}
	ra->window = ra->window ? MIN(ra->window * 2, RA_MAX_BLOCKS)
				: RA_FIRST_BLOCKS;
	guint64 index = offset / BS;
	/* Asked far enough ahead still: wait until half of it is read, so
	 * that each command carries a large window, not a block or two. */
	if (ra->ahead > index + 1 + ra->window / 2)
		return NULL;
	guint64 first = MAX(index + 1, ra->ahead);
	guint64 end = index + 1 + ra->window;
	if (ra->size > 0)
		end = MIN(end, (ra->size + BS - 1) / BS);
	if (first >= end)
		return NULL;
	Job *job = job_new(key->mailbox, key->uidvalidity);
	job->urgent = TRUE;
	Span span = {key->uid, first, end - first};
	/* Blocks refused for the budget are asked again on the next read. */
	claim_span(cache, job, span, ra->size ? ra->size : end * BS, FALSE,
		   &ra->ahead);
	return job;
}

static void update_readahead(ImapfsBlockCache *cache,
			     const ImapfsMessageKey *key, ImapfsReadahead *ra,
			     guint64 offset)
{
	if (ra == NULL || cache->workers == NULL)
		return;
	g_mutex_lock(&cache->lock);
	Job *job = plan_readahead(cache, key, ra, offset);
	g_mutex_unlock(&cache->lock);
	if (job)
		submit(cache, job);
}

/* --- reading --------------------------------------------------------------
 */

gssize imapfs_block_cache_read(ImapfsBlockCache *cache,
			       const ImapfsMessageKey *key, guint64 offset,
			       gsize len, char *buf, ImapfsReadahead *ra,
			       GError **error)
{
	gsize done = 0;

	update_readahead(cache, key, ra, offset);
	while (done < len) {
		guint64 pos = offset + done;
		guint64 index = pos / BS;
		g_autoptr(GBytes) data = get_block(cache, key, index, error);
		/* Never a short count on failure: the kernel would take it
		 * for the end of the file and cp would succeed, truncated. */
		if (data == NULL)
			return -1;
		gsize size = g_bytes_get_size(data);
		gsize in_block = pos - index * BS;
		if (in_block >= size)
			break; /* past the end of the message */
		gsize n = MIN(size - in_block, len - done);
		memcpy(buf + done,
		       (const char *)g_bytes_get_data(data, NULL) + in_block,
		       n);
		done += n;
		if (size < BS && in_block + n == size)
			break; /* a short block ends the message */
	}
	if (ra) {
		g_mutex_lock(&cache->lock);
		ra->next = offset + done;
		g_mutex_unlock(&cache->lock);
	}
	return done;
}

gboolean imapfs_block_cache_size(ImapfsBlockCache *cache,
				 const ImapfsMessageKey *key, guint64 hint,
				 guint64 *size_r, GError **error)
{
	guint64 index = hint > 0 ? (hint - 1) / BS : 0;
	gboolean after_full = FALSE; /* block index - 1 was full */

	for (;;) {
		g_autoptr(GBytes) data = get_block(cache, key, index, error);
		if (data == NULL)
			return FALSE;
		gsize size = g_bytes_get_size(data);
		if (size == 0 && index > 0 && !after_full) {
			/* RFC822.SIZE overstated the size: scan from the
			 * start, which costs at most the real size. */
			index = 0;
			continue;
		}
		if (size < BS || index == G_MAXUINT32) {
			*size_r = index * BS + size;
			return TRUE;
		}
		after_full = TRUE;
		index++;
	}
}

void imapfs_block_cache_sync(ImapfsBlockCache *cache)
{
	g_mutex_lock(&cache->lock);
	wait_written(cache, 0);
	g_mutex_unlock(&cache->lock);
}

void imapfs_block_cache_drop_mailbox(ImapfsBlockCache *cache,
				     const char *mailbox,
				     guint32 keep_uidvalidity)
{
	GHashTableIter iter;
	gpointer value;
	g_autoptr(GPtrArray) doomed = g_ptr_array_new();

	g_mutex_lock(&cache->lock);
	g_hash_table_iter_init(&iter, cache->blocks);
	while (g_hash_table_iter_next(&iter, NULL, &value)) {
		Block *b = value;
		if (strcmp(b->mailbox, mailbox) == 0 &&
		    b->uidvalidity != keep_uidvalidity)
			g_ptr_array_add(doomed, b);
	}
	for (guint i = 0; i < doomed->len; i++)
		mem_remove(cache, doomed->pdata[i]);
	g_mutex_unlock(&cache->lock);
	/* A queued write of an old block must not land after the drop. */
	imapfs_block_cache_sync(cache);
	if (cache->disk)
		imapfs_disk_cache_drop_mailbox(cache->disk, mailbox,
					       keep_uidvalidity);
}

void imapfs_block_cache_get_stats(ImapfsBlockCache *cache,
				  ImapfsBlockCacheStats *stats_r)
{
	g_mutex_lock(&cache->lock);
	*stats_r = cache->stats;
	g_mutex_unlock(&cache->lock);
}

/* --- the pool fetcher ------------------------------------------------------
 */

typedef struct {
	ImapfsBodyWindow *w;
	guint n;
	ImapfsBodyDoneFunc done;
	gpointer done_data;
} FetchBodies;

static gboolean fetch_func(ImapfsSession *s, gpointer data, GError **error)
{
	FetchBodies *fb = data;

	guint32 newest = 0;

	/* A retry on another connection starts over (a window already
	 * handed to done is simply fetched again and ignored there). */
	for (guint i = 0; i < fb->n; i++) {
		g_byte_array_set_size(fb->w[i].out, 0);
		fb->w[i].found = FALSE;
		newest = MAX(newest, fb->w[i].uid);
	}
	/* A message newer than this session's view of the mailbox would
	 * come back as "no such message". */
	if (!imapfs_session_catch_up(s, newest, error))
		return FALSE;
	return imapfs_session_fetch_bodies(s, fb->w, fb->n, fb->done,
					   fb->done_data, error);
}

gboolean imapfs_block_cache_fetch_from_pool(gpointer data, const char *mailbox,
					    guint32 uidvalidity,
					    ImapfsBodyWindow *windows, guint n,
					    ImapfsBodyDoneFunc done,
					    gpointer done_data, GError **error)
{
	FetchBodies fb = {windows, n, done, done_data};

	return imapfs_pool_run(data, mailbox, uidvalidity, TRUE, fetch_func,
			       &fb, error);
}
