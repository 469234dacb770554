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

#include "imapfs/bodystructure.h"
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
	IMAPFS_CAP_LIST_EXTENDED = 1 << 18,
	IMAPFS_CAP_LITERAL_MINUS = 1 << 19,
	IMAPFS_CAP_UNSELECT = 1 << 20,
	IMAPFS_CAP_OBJECTID = 1 << 21,
	IMAPFS_CAP_LIST_STATUS = 1 << 22,
	IMAPFS_CAP_AUTH_XOAUTH2 = 1 << 23,
	IMAPFS_CAP_AUTH_OAUTHBEARER = 1 << 24,
} ImapfsCapability;

/* What STATUS says of a mailbox (RFC 3501 6.3.10). */
typedef struct {
	guint32 messages;
	guint32 uidnext;
	guint32 uidvalidity;
	guint64 highestmodseq; /* 0 without CONDSTORE */
} ImapfsMailboxStatus;

/* LIST attributes imapfs uses. */
typedef enum {
	IMAPFS_MBOX_NOSELECT = 1 << 0,	  /* \Noselect */
	IMAPFS_MBOX_NONEXISTENT = 1 << 1, /* \NonExistent (implies Noselect) */
	IMAPFS_MBOX_NOINFERIORS = 1 << 2,
	IMAPFS_MBOX_HASNOCHILDREN = 1 << 3,
	IMAPFS_MBOX_TRASH = 1 << 4, /* \Trash (RFC 6154 special use) */
	IMAPFS_MBOX_HASCHILDREN = 1 << 5,
} ImapfsMailboxFlags;

typedef struct {
	char *name;	   /* as the server sent it (modified UTF-7 or UTF-8) */
	char delim;	   /* hierarchy delimiter, '\0' for NIL */
	guint flags;	   /* ImapfsMailboxFlags */
	char *special_use; /* "\Sent" etc. (RFC 6154), space separated, or
			      NULL */
	gboolean has_status; /* LIST-STATUS sent one (imapfs_session_list) */
	ImapfsMailboxStatus status;
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
	guint64 modseq;	     /* MODSEQ with CONDSTORE enabled, else 0 */
} ImapfsMessageInfo;

/* Where a message landed, from APPENDUID or COPYUID (UIDPLUS); uid 0
 * when the server did not say. */
typedef struct {
	guint32 uidvalidity;
	guint32 uid;
} ImapfsNewUid;

/* Whether @flag has IMAP's flag syntax: "\" atom / atom (RFC 3501
 * section 9; a keyword is an atom without ']'). */
gboolean imapfs_flag_is_valid(const char *flag);

/*
 * Prepares a session; nothing is sent yet. @cfg and @tls are borrowed and
 * must outlive the session (the pool owns them). @password (the OAuth
 * access token when imapfs_config_uses_oauth()) is copied, and the copy
 * wiped on free, so that the pool may replace an expired token while
 * other sessions log in.
 */
ImapfsSession *imapfs_session_new(const ImapfsConfig *cfg,
				  ImapfsTlsContext *tls, const char *password);

/* Sends LOGOUT when still usable (without waiting long), closes, frees. */
void imapfs_session_free(ImapfsSession *session);

/*
 * Connects, reads the greeting, negotiates TLS (implicit or STARTTLS; no
 * credential is sent over plain text unless cfg->allow_plaintext), learns
 * the capabilities, logs in (AUTHENTICATE PLAIN, with SASL-IR when offered,
 * else LOGIN; with a token OAUTHBEARER, else XOAUTH2, or what auth=
 * forces) and ENABLEs UTF8=ACCEPT and CONDSTORE when offered. Errors: CONNECT,
 * RESOLVE, TIMEOUT, TLS, CERTIFICATE, PLAINTEXT, AUTH, BYE, PROTOCOL.
 */
gboolean imapfs_session_open(ImapfsSession *session, GError **error);

ImapfsSessionState imapfs_session_get_state(ImapfsSession *session);
gboolean imapfs_session_is_usable(ImapfsSession *session);
gboolean imapfs_session_has(ImapfsSession *session, ImapfsCapability cap);

/* TRUE once UTF8=ACCEPT is enabled: mailbox names are UTF-8, not mUTF-7. */
gboolean imapfs_session_utf8(ImapfsSession *session);

/* LIST @reference @pattern: an array of ImapfsListEntry (free with
 * imapfs_list_entry_free as element free func). With SPECIAL-USE and
 * LIST-EXTENDED offered it asks RETURN (CHILDREN SPECIAL-USE), so that
 * \Trash and the child attributes both come. With @status and
 * LIST-STATUS (RFC 5819) offered, each selectable mailbox's STATUS comes
 * in the same command (has_status); without LIST-STATUS none does. */
GPtrArray *imapfs_session_list(ImapfsSession *session, const char *reference,
			       const char *pattern, gboolean status,
			       GError **error);
void imapfs_list_entry_free(gpointer entry);

/* EXAMINE @mailbox (read-only select) and fill @state_r. Re-examines even
 * when already selected, so the state is fresh. */
gboolean imapfs_session_examine(ImapfsSession *session, const char *mailbox,
				ImapfsMailboxState *state_r, GError **error);

/* Leaves the selected mailbox, if any, expunging nothing (UNSELECT, else
 * EXAMINE + CLOSE). */
gboolean imapfs_session_unselect(ImapfsSession *session, GError **error);

/* The mailbox currently selected (server name) or NULL. Borrowed. */
const char *imapfs_session_selected(ImapfsSession *session);

/* The selected mailbox's state, kept current by untagged responses. */
const ImapfsMailboxState *imapfs_session_state(ImapfsSession *session);

/*
 * UID FETCH 1:* (UID RFC822.SIZE INTERNALDATE FLAGS) on the selected
 * mailbox, plus MODSEQ once CONDSTORE is enabled: a GArray of
 * ImapfsMessageInfo in ascending UID order, duplicates dropped (clear
 * with imapfs_message_info_clear, set as clear func).
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

/* What ENVELOPE says, as sent: header values may still hold RFC 2047
 * encoded words. NULL for NIL or empty. */
typedef struct {
	char *date;
	char *subject;
	char *message_id;
	char *from; /* "Name <box@host>, box@host": the names as sent */
	char *to;
	char *cc;
} ImapfsEnvelope;

typedef struct {
	guint32 uid;
	ImapfsEnvelope envelope;
	ImapfsPart *structure; /* NULL when the server's was unreadable */
	char *emailid;	       /* OBJECTID (RFC 8474), or NULL */
} ImapfsMessageMeta;

/*
 * UID FETCH @first:* (UID ENVELOPE BODYSTRUCTURE), with EMAILID when the
 * server has OBJECTID, on the selected mailbox,
 * in one command: a GPtrArray of ImapfsMessageMeta * by ascending UID
 * (free function set), only UIDs from @first to @last (0: no bound), each
 * once (a repeated reply is ignored; others are not even parsed). A
 * BODYSTRUCTURE the parser refuses leaves structure NULL for that message
 * only.
 */
GPtrArray *imapfs_session_fetch_meta(ImapfsSession *session, guint32 first,
				     guint32 last, GError **error);
void imapfs_message_meta_free(gpointer meta);

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
	/* A MIME part instead of the whole message: BODY.PEEK[section], or
	 * with @binary BINARY.PEEK[section] (RFC 3516: decoded by the
	 * server). NULL: the whole message. */
	const char *section;
	gboolean binary;
} ImapfsBodyWindow;

/* A window len that asks for all of the message or part, from offset 0,
 * without a partial range. */
#define IMAPFS_BODY_ALL G_MAXSIZE

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

/* The decoded sizes of some parts of one message (RFC 3516
 * BINARY.SIZE), for imapfs_session_binary_sizes(). */
typedef struct {
	guint32 uid;
	const char *const *sections; /* NULL-terminated; the caller's */
	guint64 *sizes;		     /* one per section; filled */
	gboolean found;		     /* every size came */
} ImapfsBinarySizes;

/*
 * UID FETCH uid (BINARY.SIZE[s1] BINARY.SIZE[s2] ...) for each of @req,
 * pipelined (one round trip). A message the server refuses (NO
 * [UNKNOWN-CTE] for an encoding it cannot decode, or gone) just keeps
 * found FALSE. Fails with UNSUPPORTED without BINARY, or when the
 * connection fails.
 */
gboolean imapfs_session_binary_sizes(ImapfsSession *session,
				     ImapfsBinarySizes *req, guint n,
				     GError **error);

/* --- changes (never used on a read-only mount) ---------------------------- */

/* The commands on messages below that change them (STORE, EXPUNGE,
 * MOVE) fail with READONLY, nothing sent, unless a mailbox is selected
 * with imapfs_session_select() and the server granted read-write. */

/* SELECT @mailbox read-write and fill @state_r (may be NULL); afterwards
 * imapfs_session_writable() is TRUE until the next EXAMINE/SELECT (FALSE
 * when the server answered [READ-ONLY]). */
gboolean imapfs_session_select(ImapfsSession *session, const char *mailbox,
			       ImapfsMailboxState *state_r, GError **error);

/* Whether the selected mailbox was SELECTed (not EXAMINEd). */
gboolean imapfs_session_writable(ImapfsSession *session);

/* The server's APPENDLIMIT (RFC 7889) from CAPABILITY; 0: none given. */
guint64 imapfs_session_append_limit(ImapfsSession *session);

/*
 * The bytes APPEND sends for the @size bytes at the start of @fd: every
 * bare LF (not preceded by CR) counts as CRLF. Reads @fd with pread.
 */
gboolean imapfs_session_crlf_size(int fd, guint64 size, guint64 *out_r,
				  GError **error);

/*
 * APPEND to @mailbox the @size bytes at the start of @fd (read with
 * pread, in chunks: a 50 MB message is never in memory), bare LF sent as
 * CRLF, with @flags (IMAP flags separated by spaces, may be NULL or "";
 * \Recent is dropped) and @internaldate (seconds since the epoch, UTC;
 * < 0: the server picks). The literal is sent with LITERAL+ (or
 * LITERAL- when small enough) or after the server's continuation; a NO
 * instead of a continuation fails cleanly, with nothing sent. Fails with
 * TOOBIG above APPENDLIMIT (checked before anything is sent), OVERQUOTA,
 * NONEXISTENT ([TRYCREATE]), CONFIG (a flag that is no IMAP flag, a
 * name that cannot be quoted: nothing sent), NO, and the transport
 * errors. If @fd turns out shorter than @size once the literal has begun,
 * the session is broken. *new_r (may be NULL) gets APPENDUID, zeroed when
 * the server did not send one.
 */
gboolean imapfs_session_append(ImapfsSession *session, const char *mailbox,
			       int fd, guint64 size, const char *flags,
			       gint64 internaldate, ImapfsNewUid *new_r,
			       GError **error);

/*
 * UID STORE @uid FLAGS.SILENT (@flags) on the selected, writable mailbox:
 * replaces all flags. With @unchangedsince > 0 (CONDSTORE enabled) the
 * store is conditional and fails with MODIFIED when the message changed
 * after that mod-sequence (UNSUPPORTED, nothing sent, when CONDSTORE is
 * not enabled). *modseq_r (may be NULL) gets the message's new MODSEQ
 * when the server reports it, else 0. \Recent is dropped from @flags;
 * anything else that is no IMAP flag fails with CONFIG. (A UID expunged
 * meanwhile makes the server succeed silently: callers check the
 * listing.)
 */
gboolean imapfs_session_store_flags(ImapfsSession *session, guint32 uid,
				    const char *flags, guint64 unchangedsince,
				    guint64 *modseq_r, GError **error);

/* UID STORE @uid +FLAGS.SILENT (\Deleted), or -FLAGS.SILENT with
 * @add FALSE; on the selected, writable mailbox. */
gboolean imapfs_session_set_deleted(ImapfsSession *session, guint32 uid,
				    gboolean add, GError **error);

/* UID EXPUNGE @uid (UIDPLUS): removes that message only, if \Deleted.
 * UNSUPPORTED without UIDPLUS. */
gboolean imapfs_session_uid_expunge(ImapfsSession *session, guint32 uid,
				    GError **error);

/* A bare EXPUNGE: every \Deleted message of the selected mailbox goes.
 * Only for the fallback without UIDPLUS, after checking that @uid is the
 * only one flagged. */
gboolean imapfs_session_expunge(ImapfsSession *session, GError **error);

/* UID SEARCH @criteria (an IMAP search key, e.g. "DELETED" or
 * "UID 5:*"; CONFIG on a line break), with or without ESEARCH: the
 * UIDs, ascending. */
GArray *imapfs_session_uid_search(ImapfsSession *session, const char *criteria,
				  GError **error);

/* UID MOVE @uid to @dest (RFC 6851; UNSUPPORTED without MOVE), or UID
 * COPY @uid to @dest; on the selected mailbox. *new_r (may be NULL) gets
 * the destination UID from COPYUID (tagged or untagged), zeroed when
 * the server sent none, as for a UID no longer there (the server then
 * succeeds having done nothing). [TRYCREATE] fails with NONEXISTENT. */
gboolean imapfs_session_move(ImapfsSession *session, guint32 uid,
			     const char *dest, ImapfsNewUid *new_r,
			     GError **error);
gboolean imapfs_session_copy(ImapfsSession *session, guint32 uid,
			     const char *dest, ImapfsNewUid *new_r,
			     GError **error);

/* CREATE, DELETE and RENAME of mailboxes (server names). Before a DELETE
 * or RENAME of the selected mailbox (or a RENAME of one above it) the
 * session leaves it without expunging anything: UNSELECT when offered
 * (RFC 3691), else EXAMINE then CLOSE (CLOSE on a read-only mailbox
 * expunges nothing); no mailbox is selected afterwards. Errors besides
 * NO: ALREADYEXISTS, NONEXISTENT, NOTEMPTY ([HASCHILDREN]), BUSY
 * ([INUSE]). Servers delete a mailbox that still holds messages: check
 * first. */
gboolean imapfs_session_create(ImapfsSession *session, const char *mailbox,
			       GError **error);
gboolean imapfs_session_delete(ImapfsSession *session, const char *mailbox,
			       GError **error);
gboolean imapfs_session_rename(ImapfsSession *session, const char *from,
			       const char *to, GError **error);

/* NOOP: the server's chance to say what changed, and proof that the
 * connection still works (keepalive). */
gboolean imapfs_session_noop(ImapfsSession *session, GError **error);

/* When the server last sent anything (monotonic µs; 0: never). */
gint64 imapfs_session_heard_at(ImapfsSession *session);

/* How long the server may stay silent on a command from now on (the
 * default is cfg->timeout), and before imapfs_session_open() how long
 * connecting and each step of the login may take: the pool shortens it
 * for a request that has little of its time left. */
void imapfs_session_set_timeout(ImapfsSession *session, guint timeout_ms);

/*
 * A session that has had a mailbox open for a while has not heard of the
 * messages added since (on another connection, or by another client) and
 * a UID command naming one of them silently does nothing. When @uid is
 * not below the UIDNEXT this session knows, the mailbox is opened again
 * (SELECT or EXAMINE, as before; NOOP when the server gave no UIDNEXT).
 */
gboolean imapfs_session_catch_up(ImapfsSession *session, guint32 uid,
				 GError **error);

/*
 * STATUS @mailbox (MESSAGES UIDNEXT UIDVALIDITY), plus HIGHESTMODSEQ
 * when the server has CONDSTORE. STATUS lines about other mailboxes are
 * ignored; PROTOCOL when none is about @mailbox.
 */
gboolean imapfs_session_status(ImapfsSession *session, const char *mailbox,
			       ImapfsMailboxStatus *status, GError **error);

/*
 * The same for @n mailboxes at once, pipelined (one round trip):
 * @found[i] tells whether @status[i] came. A mailbox the server refuses
 * (deleted meanwhile) just stays not found; only a broken connection
 * fails the call.
 */
gboolean imapfs_session_status_many(ImapfsSession *session,
				    const char *const *mailboxes, guint n,
				    ImapfsMailboxStatus *status,
				    gboolean *found, GError **error);

/* --- checking a change whose reply was lost -------------------------------
 */

/* Whether @mailbox (a server name; INBOX in any case) is the selected
 * one. */
gboolean imapfs_session_is_selected(ImapfsSession *session,
				    const char *mailbox);

/*
 * Whether message @uid of the selected mailbox holds exactly the bytes
 * imapfs_session_append() sends for the @size bytes at the start of @fd
 * (bare LF as CRLF): the test of whether an APPEND whose reply was lost
 * was made. Compared window by window (BODY.PEEK, never \Seen), so that
 * memory stays bounded whatever the size. *@same_r is FALSE from the
 * first difference on, and for a message no longer there.
 */
gboolean imapfs_session_same_body(ImapfsSession *session, guint32 uid, int fd,
				  guint64 size, gboolean *same_r,
				  GError **error);

/* --- waiting for news (IDLE, RFC 2177) -------------------------------------
 *
 * While idling the session takes no other command: begin, wait as often
 * as needed, then end before anything else.
 */

/* Sends IDLE on the selected mailbox and waits for the continuation.
 * UNSUPPORTED without IDLE. */
gboolean imapfs_session_idle_begin(ImapfsSession *session, GError **error);

/*
 * Waits up to @wait_ms for the server to speak. *@changed_r is set when
 * what came says the selected mailbox changed (EXISTS, EXPUNGE, FETCH,
 * VANISHED); left alone otherwise. Silence is no failure: FALSE only with
 * a broken connection (or BYE).
 */
gboolean imapfs_session_idle_wait(ImapfsSession *session, guint wait_ms,
				  gboolean *changed_r, GError **error);

/* Sends DONE and reads up to the tagged reply (*@changed_r as above). */
gboolean imapfs_session_idle_end(ImapfsSession *session, gboolean *changed_r,
				 GError **error);

/* Makes a blocked call fail promptly (unmount). Any thread. */
void imapfs_session_abort(ImapfsSession *session);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(ImapfsSession, imapfs_session_free)

G_END_DECLS
