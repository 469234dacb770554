/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Internals shared by the files of the tree module: tree.c (names,
 * listings, reads) and tree-write.c (changes). Everything marked "Called
 * locked" expects tree->lock held.
 */
#pragma once

#include <glib.h>

#include "imapfs/tree.h"

#define SLOT_SHIFT 40
#define UID_SHIFT 8
#define KIND_MESSAGE 1
#define KIND_PENDING 2
/* A part file, or an attached message's parts directory: numbered in
 * order of first listing (tree->part_seq << UID_SHIFT | KIND_PART). */
#define KIND_PART 3
/* A message's own <UID>.parts/: slot << 40 | uid << 8 | KIND_PARTS_DIR. */
#define KIND_PARTS_DIR 4
/* A directory listing younger than this is reused by lookup without
 * asking the server. */
#define LOOKUP_FRESH_US (2 * G_TIME_SPAN_SECOND)

/* A directory: the mount root, a mailbox, or a level that only exists as
 * the parent of mailboxes. Never freed before the tree, since the kernel
 * may still hold its inode number. */
typedef struct {
	guint32 slot;
	char *path;	   /* escaped names joined by '/'; "" = root */
	char *parent_path; /* NULL for the root */
	char *file_name;   /* last element of path */
	char *server_name; /* NULL: nothing to EXAMINE here */
	char *special_use; /* RFC 6154 attributes from LIST, or NULL */
	gboolean selectable;
	gboolean present; /* in the latest LIST (or the root) */
	GArray *messages; /* ImapfsMessageInfo by UID; NULL: not loaded */
	ImapfsMailboxState state;
	gint64 listed_at; /* monotonic time of the listing */
	/* Bumped by each change made through the mount: a refresh that
	 * began before it must not count as fresh. */
	guint changes;
	/* ENVELOPE and BODYSTRUCTURE by UID (ImapfsMessageMeta *), fetched
	 * for the whole mailbox when first needed; NULL until then. */
	GHashTable *meta;
	guint32 meta_next; /* UIDs below this were asked for */
	/* BINARY.SIZE answers, "uid/section" -> guint64 * (G_MAXUINT64:
	 * the server would not decode it); NULL until first asked. */
	GHashTable *binary_sizes;
	gboolean no_binary; /* the server has no BINARY */
	guint64 opened;	  /* message files opened; see imapfs_tree_dir_reads */
	gint64 used_at;	  /* monotonic: last listed or opened from */
	gboolean renewed; /* replaced by a slot for a new UIDVALIDITY */
	/* Prefetch: messages opened in listing order (by UID, or by name as
	 * rsync and restic sort) make the next ones worth fetching ahead. */
	guint32 *by_name;  /* UIDs sorted by file name; NULL: not built */
	guint32 last_uid;  /* the message opened last */
	guint streak;	   /* opens that followed on in @order */
	int order;	   /* ORDER_UID or ORDER_NAME */
	guint32 ahead_uid; /* prefetch was asked up to here in @order */
} Mailbox;

struct ImapfsTree {
	const ImapfsConfig *cfg;
	ImapfsPool *pool;
	ImapfsBlockCache *cache;
	ImapfsDiskCache *disk; /* listings between mounts; may be NULL */
	gint64 mount_time;
	char **root_levels; /* the URL's /MAILBOX split, or NULL */
	GMutex lock;
	GPtrArray *slots;    /* Mailbox *, index = slot; protected by lock */
	GHashTable *by_path; /* path -> current Mailbox *; protected by lock */
	/* message ino -> the size its data showed, where RFC822.SIZE was
	 * wrong; survives listing refreshes. Protected by lock. */
	GHashTable *corrected;
	GHashTable *warned; /* server names already warned about; by lock */
	gint64 listed_at;   /* last LIST; protected by lock */
	/* What LIST taught about the namespace; protected by lock. */
	char delim;	  /* hierarchy delimiter ('\0': flat) */
	gboolean utf8;	  /* names are UTF-8 (UTF8=ACCEPT), not mUTF-7 */
	char *trash_name; /* server name of the \Trash mailbox, or NULL */
	/* Messages being written (Pending *), by inode number; by lock. */
	GHashTable *pending;
	guint32 pending_seq; /* the last pending inode's number; by lock */
	/* Nodes of the parts directories (tree-parts.c), by inode number
	 * and by "slot/uid/section/d|f"; by lock. */
	GHashTable *part_nodes;
	GHashTable *part_keys;
	guint64 part_seq;
	/* Who hears of changes (imapfs_tree_set_change_func); set before
	 * serving, then read-only. */
	ImapfsChangeFunc change_func;
	gpointer change_data;
};

typedef struct Pending Pending;

guint64 tree_dir_ino(const Mailbox *m);
guint64 tree_message_ino(const Mailbox *m, guint32 uid);
/* The directory @ino names, or NULL. Called locked. */
Mailbox *tree_dir_of(ImapfsTree *tree, guint64 ino);
/* The mailbox and UID of message @ino; FALSE if it is not one. Called
 * locked. */
gboolean tree_decode_message(ImapfsTree *tree, guint64 ino, Mailbox **m_r,
			     guint32 *uid_r);
ImapfsMessageInfo *tree_find_message(Mailbox *m, guint32 uid);
void tree_dir_attr(ImapfsTree *tree, const Mailbox *m, ImapfsAttr *attr);
void tree_message_attr(const Mailbox *m, const ImapfsMessageInfo *info,
		       ImapfsAttr *attr);
gboolean tree_fail_noent(GError **error, const char *what);
char *tree_child_path(const Mailbox *parent, const char *name);
/* "123<suffix>" -> 123; FALSE for anything else, including a leading
 * zero ("0123.eml"). */
gboolean tree_parse_uid_name(const char *name, const char *suffix,
			     guint32 *uid_r);
/* "123.eml" -> 123; FALSE for anything else, including "0123.eml". */
gboolean tree_parse_message_name(const char *name, guint32 *uid_r);
/* Looks @name up among what is already known. Called locked. */
gboolean tree_lookup_locked(ImapfsTree *tree, Mailbox *dir, const char *name,
			    ImapfsAttr *attr);
/* Makes sure the listing of the mailbox at @path is at most @max_age_us
 * old (0: ask the server in any case). */
gboolean tree_refresh_messages(ImapfsTree *tree, const char *path,
			       gint64 max_age_us, GError **error);

/* Makes the next readdir or lookup of @m ask the server, even if a
 * refresh running now finishes later. Called locked. */
void tree_mark_stale(Mailbox *m);

/* Applies a LIST result (array of ImapfsListEntry) like a load does. */
gboolean tree_apply_list(ImapfsTree *tree, GPtrArray *entries, gboolean utf8,
			 GError **error);

/* The path of the present mailbox called @server_name (with @in_use,
 * only one whose listing is loaded), or NULL. */
char *tree_path_of_server_name(ImapfsTree *tree, const char *server_name,
			       gboolean in_use);

/* tree-live.c: changes for the kernel, collected while locked and handed
 * to tree->change_func once unlocked (an array of TreeChange). */
typedef struct {
	ImapfsChangeKind kind;
	guint64 parent, child;
	char *name;
} TreeChange;
GArray *tree_changes_new(void);
void tree_change(GArray *changes, ImapfsChangeKind kind, guint64 parent,
		 guint64 child, const char *name);
/* Hands @changes to the change function and frees them. Call unlocked. */
void tree_changes_emit(ImapfsTree *tree, GArray *changes);
/* The changes for message @uid of @m going away. Called locked. */
void tree_change_message_gone(ImapfsTree *tree, Mailbox *m, guint32 uid,
			      GArray *changes);

/* tree-write.c: messages being written. */
void tree_pending_free(gpointer pending);
/* The pending file @name in @dir (not one already renamed away).
 * Called locked. */
gboolean tree_pending_lookup_locked(ImapfsTree *tree, Mailbox *dir,
				    const char *name, ImapfsAttr *attr);
gboolean tree_pending_getattr_locked(ImapfsTree *tree, guint64 ino,
				     ImapfsAttr *attr);
/* Adds to @out the files of @dir still being written, skipping names in
 * @names (the child mailboxes) and those of messages. Called locked. */
void tree_pending_list_locked(ImapfsTree *tree, Mailbox *dir, GPtrArray *out,
			      GHashTable *names);
/* Reads pending file @ino (its temporary file). */
gssize tree_pending_read(ImapfsTree *tree, guint64 ino, guint64 offset,
			 gsize len, char *buf, GError **error);
void tree_add_entry(GPtrArray *out, char *name, const ImapfsAttr *attr);

/* tree-xattr.c: ENVELOPE and BODYSTRUCTURE of message @ino's mailbox,
 * fetched for all its messages not asked for yet, in one command. */
gboolean tree_load_meta(ImapfsTree *tree, guint64 ino, GError **error);

/* tree-parts.c: the <UID>.parts/ directories. */
void tree_part_node_free(gpointer node);
guint64 tree_parts_dir_ino(const Mailbox *m, guint32 uid);
/* Whether @ino is a part file or a parts directory. */
gboolean tree_is_part(guint64 ino);
/* "123.parts" -> 123; FALSE for anything else. */
gboolean tree_parse_parts_name(const char *name, guint32 *uid_r);
void tree_parts_dir_attr(const Mailbox *m, const ImapfsMessageInfo *info,
			 ImapfsAttr *attr);
/* Called locked. */
gboolean tree_part_getattr_locked(ImapfsTree *tree, guint64 ino,
				  ImapfsAttr *attr);
GPtrArray *tree_part_readdir(ImapfsTree *tree, guint64 ino, GError **error);
gboolean tree_part_lookup(ImapfsTree *tree, guint64 parent, const char *name,
			  ImapfsAttr *attr, GError **error);
gboolean tree_part_open(ImapfsTree *tree, guint64 ino, guint64 *size_r,
			gboolean *changed_r, GError **error);
gssize tree_part_read(ImapfsTree *tree, guint64 ino, guint64 offset, gsize len,
		      char *buf, GError **error);
/* Whether part file or directory @ino exists; *@charset_r gets the
 * charset parameter of a text part (new), else NULL. */
gboolean tree_part_charset(ImapfsTree *tree, guint64 ino, char **charset_r);
