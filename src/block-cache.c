/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <string.h>

#include "imapfs/block-cache.h"
#include "imapfs/error.h"
#include "imapfs/log.h"

typedef struct {
	char *id;	 /* "uidvalidity/uid/block/mailbox": the key */
	GBytes *data;	 /* fewer than IMAPFS_BLOCK_SIZE bytes: EOF */
	GList *lru_link; /* in cache->lru, most recent at the head */
} Block;

struct ImapfsBlockCache {
	ImapfsBlockFetchFunc fetch;
	gpointer fetch_data;
	guint64 max_bytes;
	GMutex lock;
	GHashTable *blocks; /* id -> Block *; protected by lock */
	GQueue lru;	    /* Block *; protected by lock */
	guint64 bytes;	    /* protected by lock */
};

static void block_free(gpointer p)
{
	Block *b = p;

	g_free(b->id);
	g_bytes_unref(b->data);
	g_free(b);
}

ImapfsBlockCache *imapfs_block_cache_new(guint64 max_bytes,
					 ImapfsBlockFetchFunc fetch,
					 gpointer fetch_data)
{
	ImapfsBlockCache *cache = g_new0(ImapfsBlockCache, 1);

	cache->fetch = fetch;
	cache->fetch_data = fetch_data;
	cache->max_bytes = max_bytes;
	g_mutex_init(&cache->lock);
	cache->blocks = g_hash_table_new_full(g_str_hash, g_str_equal, NULL,
					      block_free);
	g_queue_init(&cache->lru);
	return cache;
}

void imapfs_block_cache_free(ImapfsBlockCache *cache)
{
	if (cache == NULL)
		return;
	g_queue_clear(&cache->lru);
	g_hash_table_unref(cache->blocks);
	g_mutex_clear(&cache->lock);
	g_free(cache);
}

static char *block_id(const ImapfsMessageKey *key, guint64 index)
{
	return g_strdup_printf("%u/%u/%" G_GUINT64_FORMAT "/%s",
			       key->uidvalidity, key->uid, index, key->mailbox);
}

static GBytes *lookup(ImapfsBlockCache *cache, const char *id)
{
	GBytes *data = NULL;

	g_mutex_lock(&cache->lock);
	Block *b = g_hash_table_lookup(cache->blocks, id);
	if (b) {
		g_queue_unlink(&cache->lru, b->lru_link);
		g_queue_push_head_link(&cache->lru, b->lru_link);
		data = g_bytes_ref(b->data);
	}
	g_mutex_unlock(&cache->lock);
	imapfs_trace(IMAPFS_TRACE_CACHE, "cache: %s %s", data ? "hit" : "miss",
		     id);
	return data;
}

/* Drops least recently used blocks until @incoming more bytes fit.
 * Called locked. */
static void make_room(ImapfsBlockCache *cache, gsize incoming)
{
	while (cache->bytes + incoming > cache->max_bytes && cache->lru.tail) {
		Block *b = cache->lru.tail->data;
		cache->bytes -= g_bytes_get_size(b->data);
		g_queue_delete_link(&cache->lru, b->lru_link);
		g_hash_table_remove(cache->blocks, b->id);
	}
}

static void store(ImapfsBlockCache *cache, char *id, GBytes *data)
{
	gsize size = g_bytes_get_size(data);

	g_mutex_lock(&cache->lock);
	if (size <= cache->max_bytes &&
	    !g_hash_table_contains(cache->blocks, id)) {
		make_room(cache, size);
		Block *b = g_new0(Block, 1);
		b->id = g_strdup(id);
		b->data = g_bytes_ref(data);
		g_queue_push_head(&cache->lru, b);
		b->lru_link = cache->lru.head;
		g_hash_table_insert(cache->blocks, b->id, b);
		cache->bytes += size;
	}
	g_mutex_unlock(&cache->lock);
}

typedef struct {
	guint32 uid;
	guint64 offset;
	gsize len;
	GByteArray *out;
} FetchBody;

static gboolean fetch_func(ImapfsSession *s, gpointer data, GError **error)
{
	FetchBody *fb = data;

	/* A retry on another connection starts over. */
	g_byte_array_set_size(fb->out, 0);
	return imapfs_session_fetch_body(s, fb->uid, fb->offset, fb->len,
					 fb->out, error);
}

gboolean imapfs_block_cache_fetch_from_pool(gpointer data,
					    const ImapfsMessageKey *key,
					    guint64 offset, gsize len,
					    GByteArray *out, GError **error)
{
	FetchBody fb = {key->uid, offset, len, out};

	return imapfs_pool_run(data, key->mailbox, key->uidvalidity, TRUE,
			       fetch_func, &fb, error);
}

/* Block @index of the message, from the cache or the server. */
static GBytes *get_block(ImapfsBlockCache *cache, const ImapfsMessageKey *key,
			 guint64 index, GError **error)
{
	g_autofree char *id = block_id(key, index);
	GBytes *data = lookup(cache, id);

	if (data)
		return data;
	g_autoptr(GByteArray) out = g_byte_array_new();
	if (!cache->fetch(cache->fetch_data, key, index * IMAPFS_BLOCK_SIZE,
			  IMAPFS_BLOCK_SIZE, out, error))
		return NULL;
	data = g_byte_array_free_to_bytes(g_steal_pointer(&out));
	store(cache, id, data);
	return data;
}

gssize imapfs_block_cache_read(ImapfsBlockCache *cache,
			       const ImapfsMessageKey *key, guint64 offset,
			       gsize len, char *buf, GError **error)
{
	gsize done = 0;

	while (done < len) {
		guint64 pos = offset + done;
		guint64 index = pos / IMAPFS_BLOCK_SIZE;
		g_autoptr(GBytes) data = get_block(cache, key, index, error);
		/* Never a short count on failure: the kernel would take it
		 * for the end of the file and cp would succeed, truncated. */
		if (data == NULL)
			return -1;
		gsize size = g_bytes_get_size(data);
		gsize in_block = pos - index * IMAPFS_BLOCK_SIZE;
		if (in_block >= size)
			break; /* past the end of the message */
		gsize n = MIN(size - in_block, len - done);
		memcpy(buf + done,
		       (const char *)g_bytes_get_data(data, NULL) + in_block,
		       n);
		done += n;
		if (size < IMAPFS_BLOCK_SIZE && in_block + n == size)
			break; /* a short block ends the message */
	}
	return done;
}

gboolean imapfs_block_cache_size(ImapfsBlockCache *cache,
				 const ImapfsMessageKey *key, guint64 hint,
				 guint64 *size_r, GError **error)
{
	guint64 index = hint > 0 ? (hint - 1) / IMAPFS_BLOCK_SIZE : 0;
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
		if (size < IMAPFS_BLOCK_SIZE || index == G_MAXUINT32) {
			*size_r = index * IMAPFS_BLOCK_SIZE + size;
			return TRUE;
		}
		after_full = TRUE;
		index++;
	}
}
