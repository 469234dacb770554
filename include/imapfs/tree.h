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
 * number never names two different messages. The low byte tells the kind:
 * message, file being written, part file or N.parts/ directory (see
 * tree-private.h).
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
	IMAPFS_NODE_PENDING,  /* a new message being written (see below) */
	IMAPFS_NODE_PART_DIR, /* <UID>.parts/ or an attached message's */
	IMAPFS_NODE_PART,     /* a MIME part, transfer-decoded; read-only */
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

/* --- changes ---------------------------------------------------------------
 *
 * Every change goes to the server at once (or at close, for a new
 * message) and either happens completely or fails with the reason; none
 * is ever queued. On a read-only mount each fails with READONLY before
 * anything is sent. Afterwards the tree shows the change at once: a
 * removed name is gone, and the listing of each mailbox involved is
 * asked again on its next readdir.
 *
 * A new message is a "pending" file: its bytes go to a private temporary
 * file (unlinked at once) and are APPENDed when the file is flushed
 * (close()), with the mtime and user.imap.flags set on it before. It then
 * shows as <UID>.eml; the name it was written under stays reachable by
 * lookup (not by readdir) for a few seconds, so that rsync can rename its
 * temporary file, and a rename of it within its directory just drops that
 * name.
 */

typedef struct {
	gboolean set_size;
	guint64 size;
	gboolean set_mtime;
	gint64 mtime;
	gboolean set_other; /* mode or owner: messages have none to change */
} ImapfsSetAttr;

/* Creates the pending file @name in mailbox directory @parent, open once.
 * NOTPERMITTED where no message can be stored (the root, \Noselect). */
gboolean imapfs_tree_create(ImapfsTree *tree, guint64 parent, const char *name,
			    ImapfsAttr *attr, GError **error);

/* Opens an existing file: for writing (@write), only a pending one not
 * stored yet (@trunc empties it); a message is never written
 * (NOTPERMITTED). Pending files count their opens. */
gboolean imapfs_tree_open_pending(ImapfsTree *tree, guint64 ino, gboolean write,
				  gboolean trunc, GError **error);

/* Whether @ino is a part file or a parts directory (read-only). */
gboolean imapfs_tree_is_part(ImapfsTree *tree, guint64 ino);

/* Whether @ino is a pending file (opened with imapfs_tree_open_pending,
 * released with imapfs_tree_release). */
gboolean imapfs_tree_is_pending(ImapfsTree *tree, guint64 ino);

/* Writes into pending file @ino. Returns bytes written or -1. */
gssize imapfs_tree_write(ImapfsTree *tree, guint64 ino, guint64 offset,
			 const char *buf, gsize len, GError **error);

/* Stores pending file @ino on the server if it holds news (close()):
 * APPEND, or UID COPY for a whole message copied with
 * imapfs_tree_copy_range(). Fails with what the server said (OVERQUOTA,
 * TOOBIG, NONEXISTENT, ...): the message is then not on the server. A
 * file that was never written is not stored. Without @retry, a file whose
 * store failed before is not tried again. */
gboolean imapfs_tree_flush(ImapfsTree *tree, guint64 ino, gboolean retry,
			   GError **error);

/* One open of pending file @ino ends. */
void imapfs_tree_release(ImapfsTree *tree, guint64 ino);

/* setattr: size and mtime of a pending file; for a message only an
 * unchanged size passes (NOTPERMITTED otherwise). @attr gets the result. */
gboolean imapfs_tree_setattr(ImapfsTree *tree, guint64 ino,
			     const ImapfsSetAttr *set, ImapfsAttr *attr,
			     GError **error);

/*
 * copy_file_range from message @in at @off_in to pending file @out at
 * @off_out: a whole message copied to the start of an empty pending file
 * is only noted, and stored with UID COPY at flush (no download, no
 * upload); anything else is copied through the cache. *copied_r gets the
 * bytes copied (0 at the end of @in).
 */
gboolean imapfs_tree_copy_range(ImapfsTree *tree, guint64 in, guint64 off_in,
				guint64 out, guint64 off_out, gsize len,
				gsize *copied_r, GError **error);

/* rm: the message expunged (UID STORE \Deleted + UID EXPUNGE of that
 * UID only), or with delete=trash moved to the \Trash mailbox. */
gboolean imapfs_tree_unlink(ImapfsTree *tree, guint64 parent, const char *name,
			    GError **error);

/* mv: a message to another mailbox (UID MOVE, else COPY + STORE +
 * UID EXPUNGE; CROSSDEVICE without UIDPLUS), or a mailbox directory
 * (RENAME). Never replaces what is at the target: the message shows
 * under its new UID. NOTPERMITTED within one mailbox and for INBOX. */
gboolean imapfs_tree_rename(ImapfsTree *tree, guint64 parent, const char *name,
			    guint64 newparent, const char *newname,
			    GError **error);

/* mkdir = CREATE; rmdir = DELETE, NOTEMPTY while the server says the
 * mailbox has messages or children. */
gboolean imapfs_tree_mkdir(ImapfsTree *tree, guint64 parent, const char *name,
			   ImapfsAttr *attr, GError **error);
gboolean imapfs_tree_rmdir(ImapfsTree *tree, guint64 parent, const char *name,
			   GError **error);

/* user.imap.flags of message or pending file @ino, from memory (no
 * round trip): a new string, flags separated by single spaces. NONEXISTENT
 * for anything else. */
char *imapfs_tree_get_flags(ImapfsTree *tree, guint64 ino, GError **error);

/* Replaces the flags (UID STORE FLAGS, conditional with CONDSTORE:
 * MODIFIED when another client changed the message meanwhile). INVALID
 * for bad flag syntax. "" clears them. */
gboolean imapfs_tree_set_flags(ImapfsTree *tree, guint64 ino, const char *flags,
			       GError **error);

/* --- extended attributes ---------------------------------------------------
 */

typedef struct {
	char *name; /* "user.imap.uid", ... */
	char *value;
} ImapfsXattr;

/*
 * The extended attributes @ino has, exactly those with a value, from what
 * the listing already holds (no round trip, except to load the listing
 * of a mailbox directory not listed yet): on a message user.imap.flags,
 * .uid, .uidvalidity, .internaldate (RFC 3339, UTC) and .modseq (with
 * CONDSTORE); on a file being written user.imap.flags; on a mailbox
 * directory user.imap.uidvalidity, .uidnext, .messages, .unseen and
 * .special-use (when LIST gave one). An array of ImapfsXattr * (free
 * function set), possibly empty; NULL with NONEXISTENT for no such inode.
 * With @wanted (one name, for getxattr), ENVELOPE is only fetched when
 * that name comes from it; the others may then be missing.
 */
GPtrArray *imapfs_tree_xattrs(ImapfsTree *tree, guint64 ino, const char *wanted,
			      GError **error);

/* How many message files of directory @ino were opened so far. Reading a
 * file makes the kernel forget its atime, and then a stat of it (grep
 * does one per file) costs a GETATTR round trip, unless a fresh listing
 * (readdirplus) brought the attributes again. */
guint64 imapfs_tree_dir_reads(ImapfsTree *tree, guint64 ino);

/* --- staying current --------------------------------------------------------
 *
 * What other clients change reaches the tree through the refreshes below
 * (watch.c calls them when IDLE or a poll says a mailbox moved), and the
 * tree passes on to the kernel's caches what each refresh changed.
 */

typedef enum {
	/* Directory @child's listing changed (its cached pages go). */
	IMAPFS_CHANGE_DIR,
	/* @name in @parent means something else now, or nothing: the
	 * kernel forgets the name (a directory with all below it). */
	IMAPFS_CHANGE_ENTRY,
	/* @child, called @name in @parent, is gone. */
	IMAPFS_CHANGE_GONE,
	/* @child's attributes (flags) changed. */
	IMAPFS_CHANGE_ATTR,
	/* @child means nothing any more (its mailbox was recreated): what
	 * the kernel keeps of its data goes too, so that reads of a file
	 * still open reach the tree and fail. */
	IMAPFS_CHANGE_STALE,
} ImapfsChangeKind;

/* Hears of one change. Called without any tree lock held, on whatever
 * thread made the refresh (a FUSE request handler too): it must not
 * wait for the kernel there. */
typedef void (*ImapfsChangeFunc)(ImapfsChangeKind kind, guint64 parent,
				 guint64 child, const char *name,
				 gpointer data);

/* Sets who hears of changes; before the mount serves requests. */
void imapfs_tree_set_change_func(ImapfsTree *tree, ImapfsChangeFunc func,
				 gpointer data);

typedef struct {
	char *server_name;
	ImapfsMailboxState state; /* what its listing was made from */
} ImapfsMailboxInUse;

/* The mailboxes whose listing is loaded, the most recently used (listed
 * or read from) first: an array of ImapfsMailboxInUse * (free function
 * set), at most @max (0: all). */
GPtrArray *imapfs_tree_in_use(ImapfsTree *tree, guint max);

/* Brings the listing of mailbox @server_name up to date now (only what
 * changed is fetched); nothing if it is not in use. */
gboolean imapfs_tree_refresh(ImapfsTree *tree, const char *server_name,
			     GError **error);

/*
 * One poll: LIST again, with the STATUS of every mailbox when the server
 * has LIST-STATUS (else STATUS of each mailbox in use, pipelined), and a
 * refresh of each mailbox in use whose UIDVALIDITY, UIDNEXT, MESSAGES or
 * HIGHESTMODSEQ moved. An unchanged account costs one or two commands,
 * whatever its size.
 */
gboolean imapfs_tree_poll(ImapfsTree *tree, GError **error);

void imapfs_dir_entry_free(gpointer entry);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(ImapfsTree, imapfs_tree_free)

G_END_DECLS
