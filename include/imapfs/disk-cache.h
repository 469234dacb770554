/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The persistent tier of the block cache: blocks of message content, and
 * one metadata blob per mailbox, kept in files under a cache directory.
 *
 * The bytes of a block never change for its key (account, mailbox,
 * UIDVALIDITY, UID, section, block index), so a cached block is valid for
 * ever and survives remounts.
 *
 * Blocks are appended as records to a log of segment files, each up to
 * max_bytes / 8 (at least 1 MiB, at most 64 MiB; a larger record gets a
 * segment of its own), so that a put creates no file and an eviction
 * deletes few: a file per block made inode allocation the bottleneck. A
 * record holds its full key, the data and checksums of both. An index in
 * memory, rebuilt at open by reading the record headers in order, maps
 * keys to records.
 *
 * Eviction deletes the oldest segment while the segments would exceed
 * max_bytes. LRU is approximated by a second chance: a get marks the block
 * (in memory only), and when its segment is evicted, a marked block is
 * copied to the newest segment, unmarked, and survives; an unmarked block
 * goes with its segment, however new its neighbours. Copies happen only
 * when new data needs the room, never on a get, and at most about one
 * segment's worth per put (the rest of a fully used cache goes unrescued
 * rather than rewritten). Marks are lost at close. Space of a dropped or
 * replaced record comes back only when its segment is evicted.
 *
 * Layout under the directory (private, mode 0700):
 *   lock                      flock()ed while a cache is open
 *   VERSION                   "imapfs-cache 2"; anything else (version 1
 *                             kept a file per block in blocks/) wipes below
 *   segments/<16 hex digits>.seg   numbered in creation order
 *   meta/<mb>                 one record, replaced whole by rename()
 * <mb> is a hash of (account, mailbox). A damaged or torn record is found
 * on reading (a get checks key, length and both checksums), forgotten,
 * and is a miss; at open, the first bad header ends its segment's scan
 * and the file is cut there, records after it included. drop_mailbox()
 * appends a tombstone record that the scan applies to earlier records.
 *
 * The cache is best effort: after open, no failure (full disk, I/O error,
 * damaged record) is reported to the caller or ends the process. Each kind
 * is logged as a warning the first time, traced (cache) afterwards.
 *
 * Threads: thread-safe. dc->lock guards only the in-memory state (index,
 * segment list, byte counts) and is a leaf lock. Record data is read and
 * written outside it (a put reserves its place under the lock, writes, and
 * then marks its record readable); under it run only the open() of a new
 * segment, the truncation after a failed write, and the rename() of a
 * meta file. Every call may still touch the disk: do not call with a lock
 * held that other threads need quickly. A get racing with the eviction of
 * its key misses. A put or drop_mailbox() may also copy blocks rescued
 * from eviction, so its time varies; a get only reads.
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
 * holding at most @max_bytes of segments (0: hold none). A group- or
 * world-accessible @dir is made private. Reads the header of every record
 * to rebuild the index; cuts segments at their first bad record (a torn
 * write) and removes stray files; evicts the oldest segments beyond
 * @max_bytes (a smaller limit than last time). Fails with
 * IMAPFS_ERROR_BUSY when another open cache (another imapfs) uses @dir,
 * IMAPFS_ERROR_FAILED when @dir is unusable.
 */
ImapfsDiskCache *imapfs_disk_cache_open(const char *dir, const char *account,
					guint64 max_bytes, GError **error);

/* Frees the index and releases the directory. NULL is ignored. */
void imapfs_disk_cache_close(ImapfsDiskCache *dc);

/* The data stored under @key, or NULL on a miss. A hit marks the block
 * for rescue when its segment is evicted. */
GBytes *imapfs_disk_cache_get(ImapfsDiskCache *dc, const ImapfsBlockKey *key);

/* Stores @len bytes at @data under @key, evicting the oldest segments
 * (and rescuing their marked blocks) to make room; does nothing when @key
 * is already stored (or being stored) or the record alone would exceed
 * max_bytes. */
void imapfs_disk_cache_put(ImapfsDiskCache *dc, const ImapfsBlockKey *key,
			   const void *data, gsize len);

/*
 * Forgets the blocks of @mailbox under every UIDVALIDITY but
 * @keep_uidvalidity (0: all of them), e.g. when the server reports a new
 * UIDVALIDITY, and records that in a tombstone for the next open. Their
 * space comes back when their segments are evicted. A put racing with the
 * drop is dropped too if it started first, kept if it started after.
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

/* Bytes of segment files currently held: records, headers and padding,
 * those dropped or replaced but not yet evicted included. */
guint64 imapfs_disk_cache_bytes(ImapfsDiskCache *dc);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(ImapfsDiskCache, imapfs_disk_cache_close)

G_END_DECLS
