/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A mailbox's message listing (UID -> size, date, flags, and MODSEQ with
 * CONDSTORE) and how to bring
 * one up to date cheaply, and to keep it on disk between mounts.
 *
 * A refresh EXAMINEs the mailbox and, when its state moved, asks only for
 * what changed: new messages from the highest known UID on; expunges
 * (only when EXISTS shows some) by one ESEARCH, else by a flags-only
 * listing; flag changes by CONDSTORE's CHANGEDSINCE. An unchanged
 * mailbox costs the EXAMINE alone, whatever its size. A new UIDVALIDITY,
 * or no listing to start from, means a full listing.
 *
 * Threads: a refresh runs on the session the pool hands out; the delta it
 * returns is applied by the caller under its own lock. Nothing here locks.
 * Ownership: arguments are borrowed; results belong to the caller.
 */
#pragma once

#include <glib.h>

#include "imapfs/session.h"

G_BEGIN_DECLS

/* What the caller knows of a mailbox before a refresh. */
typedef struct {
	gboolean have;		  /* FALSE: no listing yet */
	ImapfsMailboxState state; /* what EXAMINE said back then */
	guint32 max_uid;	  /* highest UID listed (0: none) */
	guint count;		  /* messages listed */
} ImapfsListingBase;

typedef struct ImapfsListingDelta ImapfsListingDelta;

/* Fills @base from a listing (@messages may be NULL: none). */
void imapfs_listing_base(ImapfsListingBase *base,
			 const ImapfsMailboxState *state,
			 const GArray *messages);

/* Whether two EXAMINEs of a mailbox saw it unchanged (a server that
 * gives no UIDNEXT never counts as unchanged). */
gboolean imapfs_listing_state_same(const ImapfsMailboxState *a,
				   const ImapfsMailboxState *b);

/* EXAMINEs @mailbox on @session and fetches what changed since @base. */
ImapfsListingDelta *imapfs_listing_refresh(ImapfsSession *session,
					   const char *mailbox,
					   const ImapfsListingBase *base,
					   GError **error);

/* The mailbox state the refresh saw. Borrowed from @delta. */
const ImapfsMailboxState *imapfs_listing_delta_state(ImapfsListingDelta *delta);

/* TRUE when the listing must be replaced, not patched (a new UIDVALIDITY
 * or no base). */
gboolean imapfs_listing_delta_is_full(ImapfsListingDelta *delta);

typedef enum {
	IMAPFS_LISTING_ADDED,
	IMAPFS_LISTING_REMOVED,
	IMAPFS_LISTING_FLAGS, /* flags (or MODSEQ) changed */
} ImapfsListingChange;

/* Hears of one message that a delta changes, while it is applied. */
typedef void (*ImapfsListingChangeFunc)(guint32 uid, ImapfsListingChange what,
					gpointer data);

/*
 * Applies @delta to *@messages (an array of ImapfsMessageInfo by UID, or
 * NULL), replacing the array when the delta is full. Returns whether
 * anything changed. @func (may be NULL) hears of each message added,
 * removed or with new flags; a full delta over an existing listing is
 * compared with it. @delta may be applied once.
 */
gboolean imapfs_listing_delta_apply(ImapfsListingDelta *delta,
				    GArray **messages,
				    ImapfsListingChangeFunc func,
				    gpointer data);

void imapfs_listing_delta_free(ImapfsListingDelta *delta);

/* The entry for @uid in @messages (sorted by UID), or NULL. Borrowed. */
ImapfsMessageInfo *imapfs_listing_find(GArray *messages, guint32 uid);

/* A listing as bytes for the disk cache, and back. deserialize fails (NULL)
 * on anything damaged or from another format version. */
GBytes *imapfs_listing_serialize(const ImapfsMailboxState *state,
				 const GArray *messages);
GArray *imapfs_listing_deserialize(GBytes *bytes, ImapfsMailboxState *state_r);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(ImapfsListingDelta, imapfs_listing_delta_free)

G_END_DECLS
