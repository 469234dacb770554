/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Message content, read through a cache of fixed-size blocks.
 *
 * A message's bytes never change for a given (mailbox, UIDVALIDITY, UID),
 * so a cached block stays valid for ever. This first version keeps blocks
 * in memory, bounded and evicted least-recently-used; the disk tier and
 * prefetch come later behind the same interface. A miss fetches the block
 * through a fetch function, normally a partial BODY.PEEK[] through the
 * pool (imapfs_block_cache_fetch_from_pool).
 *
 * Threads: thread-safe. cache->lock guards the table and the LRU list and
 * is never held while fetching.
 * Ownership: the fetch data is borrowed and must outlive the cache.
 */
#pragma once

#include <glib.h>

#include "imapfs/pool.h"

G_BEGIN_DECLS

/* Bytes per block; messages up to this size are fetched in one command. */
#define IMAPFS_BLOCK_SIZE (256 * 1024)

typedef struct ImapfsBlockCache ImapfsBlockCache;

typedef struct {
	const char *mailbox; /* server name */
	guint32 uidvalidity;
	guint32 uid;
} ImapfsMessageKey;

/*
 * Fetches up to @len bytes of the message at @offset into @out (empty on
 * entry); fewer bytes mean the message ends there. Called without any
 * cache lock held, from the reading thread.
 */
typedef gboolean (*ImapfsBlockFetchFunc)(gpointer data,
					 const ImapfsMessageKey *key,
					 guint64 offset, gsize len,
					 GByteArray *out, GError **error);

/* The fetcher for a real mount: a partial UID FETCH BODY.PEEK[] through
 * the pool given as @data (an ImapfsPool *). */
gboolean imapfs_block_cache_fetch_from_pool(gpointer data,
					    const ImapfsMessageKey *key,
					    guint64 offset, gsize len,
					    GByteArray *out, GError **error);

/* @max_bytes: memory the cached blocks may take (0: cache nothing).
 * @fetch and @fetch_data (borrowed) are how a missing block is read. */
ImapfsBlockCache *imapfs_block_cache_new(guint64 max_bytes,
					 ImapfsBlockFetchFunc fetch,
					 gpointer fetch_data);
void imapfs_block_cache_free(ImapfsBlockCache *cache);

/*
 * Copies up to @len bytes of the message at @offset into @buf. Returns the
 * count (0 at or past the end of the message, which is where the server's
 * data ends, whatever RFC822.SIZE said) or -1 with an IMAPFS_ERROR.
 */
gssize imapfs_block_cache_read(ImapfsBlockCache *cache,
			       const ImapfsMessageKey *key, guint64 offset,
			       gsize len, char *buf, GError **error);

/*
 * The message's true size, learnt from the server's data: fetches (or
 * finds cached) the block holding byte @hint - 1 and reads on until the
 * data ends. For an honest RFC822.SIZE (@hint) that is one block, which a
 * following read then finds in the cache.
 */
gboolean imapfs_block_cache_size(ImapfsBlockCache *cache,
				 const ImapfsMessageKey *key, guint64 hint,
				 guint64 *size_r, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(ImapfsBlockCache, imapfs_block_cache_free)

G_END_DECLS
