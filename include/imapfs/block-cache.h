/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Message content, read through a cache of fixed-size blocks, with
 * readahead within a message and prefetch across messages.
 *
 * A message's bytes never change for a given (mailbox, UIDVALIDITY, UID),
 * so a cached block stays valid for ever. Blocks live in memory (bounded,
 * least-recently-used) and, when a disk cache is given, on disk, where
 * they survive remounts. A miss fetches the block through a fetch function,
 * normally a partial BODY.PEEK[] through the pool
 * (imapfs_block_cache_fetch_from_pool). A block is fetched once however
 * many threads want it at the same time: the others wait for that fetch.
 *
 * Prefetch runs on worker threads, each holding one connection while it
 * fetches a batch of windows in one round trip (pipelined commands). It is
 * bounded by a byte budget: bytes in flight plus prefetched blocks not yet
 * read. Requests beyond the budget are dropped, not queued; the reader
 * asks again as it advances. A failed prefetch is silent: the reader then
 * fetches the block itself and sees the error.
 *
 * Threads: thread-safe. cache->lock guards the tables, the LRU list and the
 * budget and is never held while fetching or touching the disk cache.
 * Lock order: tree, then cache, then pool.
 * Ownership: the fetch data and the disk cache are borrowed and must
 * outlive the cache.
 */
#pragma once

#include <glib.h>

#include "imapfs/disk-cache.h"
#include "imapfs/pool.h"
#include "imapfs/session.h"

G_BEGIN_DECLS

/* Bytes per block; messages up to this size are fetched in one command. */
#define IMAPFS_BLOCK_SIZE (256 * 1024)

typedef struct ImapfsBlockCache ImapfsBlockCache;

typedef struct {
	const char *mailbox; /* server name */
	guint32 uidvalidity;
	guint32 uid;
	/* A MIME part's content instead of the whole message: its IMAP
	 * section (NULL: the message). Read in blocks with BODY.PEEK[section]
	 * (or BINARY.PEEK when @binary, decoded by the server) unless
	 * @decode names a Content-Transfer-Encoding to undo here: the part
	 * is then fetched whole with BODY.PEEK[section] on the first miss,
	 * decoded (imapfs_decoder_new) and cached block by block. Readahead
	 * and prefetch are for whole messages only. */
	const char *section;
	gboolean binary;
	const char *decode;
	/* With @decode: the part's encoded size as BODYSTRUCTURE gave it.
	 * The whole-part fetch stops a little beyond it, and a part that
	 * turns out longer fails with PROTOCOL, so a server cannot make
	 * the cache hold more than it declared. */
	guint64 encoded_size;
} ImapfsMessageKey;

/*
 * Fetches windows (distinct UIDs) of messages in @mailbox, appending each
 * window's bytes to its out and setting found, like
 * imapfs_session_fetch_bodies(), and telling @done (may be NULL) of each
 * window as it completes. Called without any cache lock held, from a
 * reading or prefetching thread. On failure the outs are undefined.
 */
typedef gboolean (*ImapfsBlockFetchFunc)(gpointer data, const char *mailbox,
					 guint32 uidvalidity,
					 ImapfsBodyWindow *windows, guint n,
					 ImapfsBodyDoneFunc done,
					 gpointer done_data, GError **error);

/* The fetcher for a real mount, through the pool given as @data. */
gboolean imapfs_block_cache_fetch_from_pool(gpointer data, const char *mailbox,
					    guint32 uidvalidity,
					    ImapfsBodyWindow *windows, guint n,
					    ImapfsBodyDoneFunc done,
					    gpointer done_data, GError **error);

/*
 * @max_bytes: memory the cached blocks may take (0: keep nothing once
 * read). @disk (may be NULL) is the persistent tier. @fetch and
 * @fetch_data are how a missing block is read. No prefetch until
 * imapfs_block_cache_start_prefetch().
 */
ImapfsBlockCache *imapfs_block_cache_new(guint64 max_bytes,
					 ImapfsDiskCache *disk,
					 ImapfsBlockFetchFunc fetch,
					 gpointer fetch_data);

/* Waits for running prefetch jobs, drops queued ones, frees. */
void imapfs_block_cache_free(ImapfsBlockCache *cache);

/* Starts @workers prefetch threads (each uses one connection at a time)
 * that may hold @budget bytes in flight or unread. */
void imapfs_block_cache_start_prefetch(ImapfsBlockCache *cache, guint workers,
				       guint64 budget);

/* Sequential-read state of one open file, owned by the caller; zero it
 * before the first read. */
typedef struct {
	guint64 size;  /* the message's size, when known (0: unknown) */
	guint64 next;  /* where the next read would continue */
	guint window;  /* blocks read ahead; grows while reads follow on */
	guint64 ahead; /* blocks below this index were already requested */
} ImapfsReadahead;

/*
 * Copies up to @len bytes of the message at @offset into @buf. Returns the
 * count (0 at or past the end of the message, which is where the server's
 * data ends, whatever RFC822.SIZE said) or -1 with an IMAPFS_ERROR. With
 * @ra, reads that follow on from the previous one start readahead of the
 * next blocks in the background.
 */
gssize imapfs_block_cache_read(ImapfsBlockCache *cache,
			       const ImapfsMessageKey *key, guint64 offset,
			       gsize len, char *buf, ImapfsReadahead *ra,
			       GError **error);

/*
 * The message's true size, learnt from the server's data: fetches (or
 * finds cached) the block holding byte @hint - 1 and reads on until the
 * data ends. For an honest RFC822.SIZE (@hint) that is one block, which a
 * following read then finds in the cache.
 */
gboolean imapfs_block_cache_size(ImapfsBlockCache *cache,
				 const ImapfsMessageKey *key, guint64 hint,
				 guint64 *size_r, GError **error);

/* One message to prefetch: its first block, and its last when it has more
 * than one (the block open() reads to check the size). */
typedef struct {
	guint32 uid;
	guint64 size; /* as listed */
} ImapfsPrefetchItem;

/*
 * Queues the first block(s) of @items (messages of @mailbox) for
 * prefetch, skipping what is cached or in flight. Returns how many items
 * were queued or already present; fewer than @n means the budget is spent
 * and the caller should ask again later.
 */
guint imapfs_block_cache_prefetch(ImapfsBlockCache *cache, const char *mailbox,
				  guint32 uidvalidity,
				  const ImapfsPrefetchItem *items, guint n);

/* Waits until every block fetched so far is in the disk cache (blocks
 * are written there by a thread of their own). */
void imapfs_block_cache_sync(ImapfsBlockCache *cache);

/* Forgets every block of @mailbox not under @keep_uidvalidity (0: all),
 * in memory and on disk: the server recreated the mailbox. */
void imapfs_block_cache_drop_mailbox(ImapfsBlockCache *cache,
				     const char *mailbox,
				     guint32 keep_uidvalidity);

/* Counters for tests and traces. */
typedef struct {
	guint64 memory_hits, disk_hits, fetched_blocks, prefetched_blocks;
	guint64 waits; /* reads that waited for another thread's fetch */
} ImapfsBlockCacheStats;

void imapfs_block_cache_get_stats(ImapfsBlockCache *cache,
				  ImapfsBlockCacheStats *stats_r);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(ImapfsBlockCache, imapfs_block_cache_free)

G_END_DECLS
