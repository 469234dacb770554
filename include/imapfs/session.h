/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * One IMAP connection: greeting, STARTTLS, capabilities, login, and the
 * commands the upper layers need, each as a blocking call that sends one
 * command and reads until its tagged reply.
 *
 * A session is a state machine (ImapfsSessionState, one enter_state() that
 * traces every transition). A transport failure, a timeout, a BYE or a
 * reply the parser rejects moves it to BROKEN: the command fails with the
 * matching IMAPFS_ERROR code and the session must be discarded (the pool
 * does that). A tagged NO/BAD fails only that command.
 *
 * Threads: a session is used by one thread at a time (the pool hands it
 * out); only imapfs_session_abort() may be called from another thread.
 * Ownership: arguments are borrowed; returned containers belong to the
 * caller.
 */
#pragma once

#include <glib.h>

#include "imapfs/config.h"
#include "imapfs/stream.h"

G_BEGIN_DECLS

typedef struct ImapfsSession ImapfsSession;

typedef enum {
	IMAPFS_SESSION_DISCONNECTED,
	IMAPFS_SESSION_CONNECTING, /* TCP/TLS up, waiting for greeting */
	IMAPFS_SESSION_NOT_AUTHENTICATED,
	IMAPFS_SESSION_AUTHENTICATED,
	IMAPFS_SESSION_SELECTED,
	IMAPFS_SESSION_LOGOUT,
	IMAPFS_SESSION_BROKEN,
} ImapfsSessionState;

/* Capabilities imapfs cares about; the rest are ignored. */
typedef enum {
	IMAPFS_CAP_IMAP4REV1 = 1 << 0,
	IMAPFS_CAP_IMAP4REV2 = 1 << 1,
	IMAPFS_CAP_STARTTLS = 1 << 2,
	IMAPFS_CAP_LOGINDISABLED = 1 << 3,
	IMAPFS_CAP_SASL_IR = 1 << 4,
	IMAPFS_CAP_AUTH_PLAIN = 1 << 5,
	IMAPFS_CAP_ENABLE = 1 << 6,
	IMAPFS_CAP_UTF8_ACCEPT = 1 << 7,
	IMAPFS_CAP_CONDSTORE = 1 << 8,
	IMAPFS_CAP_QRESYNC = 1 << 9,
	IMAPFS_CAP_UIDPLUS = 1 << 10,
	IMAPFS_CAP_MOVE = 1 << 11,
	IMAPFS_CAP_IDLE = 1 << 12,
	IMAPFS_CAP_BINARY = 1 << 13,
	IMAPFS_CAP_SPECIAL_USE = 1 << 14,
	IMAPFS_CAP_LITERAL_PLUS = 1 << 15,
	IMAPFS_CAP_AUTH_LOGIN = 1 << 16,
	IMAPFS_CAP_ESEARCH = 1 << 17,
} ImapfsCapability;

/* LIST attributes imapfs uses. */
typedef enum {
	IMAPFS_MBOX_NOSELECT = 1 << 0,	  /* \Noselect */
	IMAPFS_MBOX_NONEXISTENT = 1 << 1, /* \NonExistent (implies Noselect) */
	IMAPFS_MBOX_NOINFERIORS = 1 << 2,
	IMAPFS_MBOX_HASNOCHILDREN = 1 << 3,
} ImapfsMailboxFlags;

typedef struct {
	char *name;  /* as the server sent it (modified UTF-7 or UTF-8) */
	char delim;  /* hierarchy delimiter, '\0' for NIL */
	guint flags; /* ImapfsMailboxFlags */
} ImapfsListEntry;

/* What EXAMINE/SELECT reported, kept current by untagged EXISTS. */
typedef struct {
	guint32 uidvalidity;
	guint32 uidnext; /* 0 if the server did not say */
	guint32 exists;
	guint64 highestmodseq; /* 0 without CONDSTORE */
} ImapfsMailboxState;

typedef struct {
	guint32 uid;
	guint32 checked;     /* for the listing's owner; the session sets 0 */
	guint64 size;	     /* RFC822.SIZE */
	gint64 internaldate; /* seconds since the epoch, UTC */
	char *flags;	     /* space separated, as sent */
} ImapfsMessageInfo;

/*
 * Prepares a session; nothing is sent yet. @cfg, @tls and @password are
 * borrowed and must outlive the session (the pool owns them).
 */
ImapfsSession *imapfs_session_new(const ImapfsConfig *cfg,
				  ImapfsTlsContext *tls, const char *password);

/* Sends LOGOUT when still usable (without waiting long), closes, frees. */
void imapfs_session_free(ImapfsSession *session);

/*
 * Connects, reads the greeting, negotiates TLS (implicit or STARTTLS; no
 * credential is sent over plain text unless cfg->allow_plaintext), learns
 * the capabilities, logs in (AUTHENTICATE PLAIN, with SASL-IR when offered,
 * else LOGIN) and ENABLEs UTF8=ACCEPT when offered. Errors: CONNECT,
 * RESOLVE, TIMEOUT, TLS, CERTIFICATE, PLAINTEXT, AUTH, BYE, PROTOCOL.
 */
gboolean imapfs_session_open(ImapfsSession *session, GError **error);

ImapfsSessionState imapfs_session_get_state(ImapfsSession *session);
gboolean imapfs_session_is_usable(ImapfsSession *session);
gboolean imapfs_session_has(ImapfsSession *session, ImapfsCapability cap);

/* TRUE once UTF8=ACCEPT is enabled: mailbox names are UTF-8, not mUTF-7. */
gboolean imapfs_session_utf8(ImapfsSession *session);

/* LIST @reference @pattern: an array of ImapfsListEntry (free with
 * imapfs_list_entry_free as element free func). */
GPtrArray *imapfs_session_list(ImapfsSession *session, const char *reference,
			       const char *pattern, GError **error);
void imapfs_list_entry_free(gpointer entry);

/* EXAMINE @mailbox (read-only select) and fill @state_r. Re-examines even
 * when already selected, so the state is fresh. */
gboolean imapfs_session_examine(ImapfsSession *session, const char *mailbox,
				ImapfsMailboxState *state_r, GError **error);

/* The mailbox currently selected (server name) or NULL. Borrowed. */
const char *imapfs_session_selected(ImapfsSession *session);

/* The selected mailbox's state, kept current by untagged responses. */
const ImapfsMailboxState *imapfs_session_state(ImapfsSession *session);

/*
 * UID FETCH 1:* (UID RFC822.SIZE INTERNALDATE FLAGS) on the selected
 * mailbox: a GArray of ImapfsMessageInfo in ascending UID order, duplicates
 * dropped (clear with imapfs_message_info_clear, set as clear func).
 */
GArray *imapfs_session_fetch_index(ImapfsSession *session, GError **error);

/*
 * The same for UIDs @first to @last (0: to the end) only. With
 * @flags_only, only UID and FLAGS are asked (size and date stay 0); with
 * @changedsince (needs CONDSTORE enabled), only messages whose flags
 * changed after that mod-sequence are returned.
 */
GArray *imapfs_session_fetch_index_range(ImapfsSession *session, guint32 first,
					 guint32 last, gboolean flags_only,
					 guint64 changedsince, GError **error);

/*
 * The UIDs of the selected mailbox from 1 to @last, ascending, from one
 * "UID SEARCH RETURN (ALL)" (ESEARCH, RFC 4731: a compact answer however
 * many messages there are). Fails with UNSUPPORTED without ESEARCH.
 */
GArray *imapfs_session_search_uids(ImapfsSession *session, guint32 last,
				   GError **error);

/* TRUE once CONDSTORE is enabled: EXAMINE reports HIGHESTMODSEQ. */
gboolean imapfs_session_condstore(ImapfsSession *session);

void imapfs_message_info_clear(gpointer info);

/*
 * UID FETCH @uid BODY.PEEK[]<@offset.@len> on the selected mailbox (never
 * sets \Seen). Appends to @out the message bytes from @offset, at most @len:
 * fewer means the message ends there. A server that ignores the partial
 * range is handled by cutting the window out of what it sends. Fails with
 * NONEXISTENT when the server returns no data for @uid.
 */
gboolean imapfs_session_fetch_body(ImapfsSession *session, guint32 uid,
				   guint64 offset, gsize len, GByteArray *out,
				   GError **error);

/* One window of one message for imapfs_session_fetch_bodies(). */
typedef struct {
	guint32 uid;
	guint64 offset;
	gsize len;
	GByteArray *out; /* caller's; the window's bytes are appended */
	gboolean found;	 /* set when the server sent a body for uid */
} ImapfsBodyWindow;

/* Called as soon as the reply for one window is complete (with found
 * set), while the rest of the batch is still coming. */
typedef void (*ImapfsBodyDoneFunc)(ImapfsBodyWindow *window, gpointer data);

/*
 * Fetches windows of many messages at once: windows with the same range
 * share one "UID FETCH set (UID BODY.PEEK[]<offset.len>)", and all the
 * commands are pipelined, so the whole batch costs one round trip. Each
 * window's bytes are appended to its out (fewer than len: the message
 * ends there); found stays FALSE for a UID the server returned nothing
 * for (expunged). UIDs must be distinct and non-zero; keep windows with
 * the same range next to each other for fewer commands. Never sets \Seen.
 * @done (may be NULL) hears of each window that came.
 */
gboolean imapfs_session_fetch_bodies(ImapfsSession *session,
				     ImapfsBodyWindow *windows, guint n,
				     ImapfsBodyDoneFunc done,
				     gpointer done_data, GError **error);

/* Makes a blocked call fail promptly (unmount). Any thread. */
void imapfs_session_abort(ImapfsSession *session);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(ImapfsSession, imapfs_session_free)

G_END_DECLS
