/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The file tree: mailboxes as directories, messages as <UID>.eml files,
 * with stable inode numbers and the listings that back readdir.
 *
 * Inode numbers are derived, not allocated: a mailbox directory gets a slot
 * (assigned when first seen, and anew when its UIDVALIDITY changes), and
 *   directory  ino = slot << 40              (the mount root is 1)
 *   message    ino = slot << 40 | uid << 8 | 1
 * so the same message keeps its number for the life of the mount, and a
 * number never names two different messages. The low byte is left for the
 * part files of later versions.
 *
 * Mailbox listings come from one UID FETCH 1:* per mailbox, or from the
 * disk cache of an earlier mount, and are then kept up to date by
 * imapfs_listing_refresh() (only what changed is fetched). readdir reuses
 * a listing for up to 20 seconds without asking the server.
 *
 * Threads: thread-safe. tree->lock guards the mailbox table and listings
 * and is never held across network I/O (lock order: tree, then cache,
 * then pool).
 * Ownership: @cfg, @pool and @cache are borrowed and outlive the tree;
 * results belong to the caller.
 */
#pragma once

#include <glib.h>

#include "imapfs/block-cache.h"
#include "imapfs/config.h"
#include "imapfs/pool.h"

G_BEGIN_DECLS

#define IMAPFS_ROOT_INO 1

typedef struct ImapfsTree ImapfsTree;

typedef enum {
	IMAPFS_NODE_DIR,
	IMAPFS_NODE_MESSAGE,
} ImapfsNodeKind;

typedef struct {
	guint64 ino;
	ImapfsNodeKind kind;
	guint64 size; /* messages: bytes; directories: 0 */
	gint64 mtime; /* messages: INTERNALDATE */
} ImapfsAttr;

typedef struct {
	char *name;
	ImapfsAttr attr;
} ImapfsDirEntry;

/* @disk (may be NULL) keeps listings between mounts. */
ImapfsTree *imapfs_tree_new(const ImapfsConfig *cfg, ImapfsPool *pool,
			    ImapfsBlockCache *cache, ImapfsDiskCache *disk);
void imapfs_tree_free(ImapfsTree *tree);

/* Lists the mailboxes (LIST "" "*"). Fails with NONEXISTENT when the
 * URL's /MAILBOX is neither a mailbox nor a parent of one. */
gboolean imapfs_tree_load(ImapfsTree *tree, GError **error);

/* Attributes of @ino, or NONEXISTENT when it names nothing (any more). */
gboolean imapfs_tree_getattr(ImapfsTree *tree, guint64 ino, ImapfsAttr *attr,
			     GError **error);

/* The entry @name in directory @parent, or NONEXISTENT. */
gboolean imapfs_tree_lookup(ImapfsTree *tree, guint64 parent, const char *name,
			    ImapfsAttr *attr, GError **error);

/* A fresh snapshot of directory @ino: child mailboxes, then messages in
 * ascending UID order (without "." and ".."). Array of ImapfsDirEntry *,
 * with a free function set. */
GPtrArray *imapfs_tree_readdir(ImapfsTree *tree, guint64 ino, GError **error);

/*
 * Prepares message @ino for reading: when messages are opened in listing
 * order (by UID or by name), prefetches the next ones; learns its true
 * size from the data
 * (normally a single fetch that the first read then finds cached) and, if
 * RFC822.SIZE was wrong, corrects the size getattr reports. *size_r gets
 * the true size, *changed_r whether it differed.
 */
gboolean imapfs_tree_open(ImapfsTree *tree, guint64 ino, guint64 *size_r,
			  gboolean *changed_r, GError **error);

/* Reads message @ino; returns bytes copied (0 at the end) or -1. @ra
 * (may be NULL) is the open file's readahead state. */
gssize imapfs_tree_read(ImapfsTree *tree, guint64 ino, guint64 offset,
			gsize len, char *buf, ImapfsReadahead *ra,
			GError **error);

void imapfs_dir_entry_free(gpointer entry);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(ImapfsTree, imapfs_tree_free)

G_END_DECLS
