/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The persistent tier of the block cache: blocks of message content, and
 * one metadata blob per mailbox, kept in files under a cache directory.
 *
 * The bytes of a block never change for its key (account, mailbox,
 * UIDVALIDITY, UID, section, block index), so a cached block is valid for
 * ever and survives remounts. Blocks are evicted least-recently-used by
 * their size on disk (header included) to stay within max_bytes; the order
 * is kept in the files' mtimes, so it survives a remount too.
 *
 * Layout under the directory (private, mode 0700):
 *   lock                      flock()ed while a cache is open
 *   VERSION                   "imapfs-cache 1"; anything else wipes below
 *   blocks/<mb>/<uidvalidity>/<uid>-<block>[-<section>]
 *   meta/<mb>
 * <mb> is a hash of (account, mailbox); <section> is the section in hex
 * (or a hash of it when long). Each file starts with a header holding the
 * full key, the data length and checksums of header and data: a torn,
 * corrupt or misplaced file is found on reading, deleted, and is a miss.
 *
 * The cache is best effort: after open, no failure (full disk, I/O error,
 * damaged file) is reported to the caller or ends the process. Each kind
 * is logged as a warning the first time, traced (cache) afterwards.
 *
 * Threads: thread-safe. dc->lock guards only the in-memory index (which
 * files exist, their sizes and LRU order) and is a leaf lock. File data is
 * read and written outside it; only the metadata calls that keep index and
 * directory in step (rename, unlink, lstat, futimens) run under it. Every
 * call may still touch the disk: do not call with a lock held that other
 * threads need quickly. A get racing with the eviction of its key misses.
 * Ownership: arguments are borrowed for the duration of the call; returned
 * GBytes belong to the caller.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct ImapfsDiskCache ImapfsDiskCache;

typedef struct {
	const char *mailbox; /* server name */
	guint32 uidvalidity;
	guint32 uid;
	const char *section; /* "" for the whole message (BODY[]); "1.2" */
	guint64 block;	     /* block index */
} ImapfsBlockKey;

/*
 * Opens (creating it and its parents, mode 0700) the cache directory @dir
 * for @account (any string naming the account, e.g. "user@host:port"),
 * holding at most @max_bytes of blocks (0: hold none). A group- or
 * world-accessible @dir is made private. Leftovers of an interrupted
 * write are removed; blocks beyond @max_bytes (a smaller limit than last
 * time) are evicted. Fails with IMAPFS_ERROR_BUSY when another open cache
 * (another imapfs) uses @dir, IMAPFS_ERROR_FAILED when @dir is unusable.
 */
ImapfsDiskCache *imapfs_disk_cache_open(const char *dir, const char *account,
					guint64 max_bytes, GError **error);

/* Frees the index and releases the directory. NULL is ignored. */
void imapfs_disk_cache_close(ImapfsDiskCache *dc);

/* The data stored under @key, or NULL on a miss. A hit becomes the most
 * recently used block. */
GBytes *imapfs_disk_cache_get(ImapfsDiskCache *dc, const ImapfsBlockKey *key);

/* Stores @len bytes at @data under @key, evicting least recently used
 * blocks first to make room; does nothing when @key is already stored or
 * the block alone would exceed max_bytes. */
void imapfs_disk_cache_put(ImapfsDiskCache *dc, const ImapfsBlockKey *key,
			   const void *data, gsize len);

/*
 * Deletes the blocks of @mailbox under every UIDVALIDITY but
 * @keep_uidvalidity (0: all of them), e.g. when the server reports a new
 * UIDVALIDITY. A put racing with the drop of its own UIDVALIDITY may
 * survive it; it then only waits for eviction.
 */
void imapfs_disk_cache_drop_mailbox(ImapfsDiskCache *dc, const char *mailbox,
				    guint32 keep_uidvalidity);

/* The metadata blob last stored for @mailbox (opaque to this module), or
 * NULL when there is none or it was damaged. */
GBytes *imapfs_disk_cache_get_meta(ImapfsDiskCache *dc, const char *mailbox);

/* Replaces the metadata blob of @mailbox. Blobs do not count towards
 * max_bytes, are never evicted and survive drop_mailbox(). */
void imapfs_disk_cache_put_meta(ImapfsDiskCache *dc, const char *mailbox,
				GBytes *blob);

/* Bytes of block files (headers included) currently held. */
guint64 imapfs_disk_cache_bytes(ImapfsDiskCache *dc);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(ImapfsDiskCache, imapfs_disk_cache_close)

G_END_DECLS
