/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The connection pool: up to cfg->connections logged-in sessions, handed
 * out one caller at a time. A caller runs its work through
 * imapfs_pool_run(), which picks a session already on the wanted mailbox
 * when there is one (EXAMINE otherwise), replaces sessions that broke, and
 * repeats idempotent work on a new connection until it works or the
 * request's time (cfg->timeout from its start) is up.
 *
 * When no connection can be made (refused, unreachable, timed out), the
 * pool is offline: requests wait, each until its deadline, while one
 * keeper thread tries again with jittered exponential backoff; the first
 * connection that gets through ends it. While online, the keeper sends
 * NOOP on idle connections the server has been silent on for a timeout,
 * so that a dead one is replaced before a request waits on it.
 *
 * Every wait honours imapfs_cancel (a FUSE interrupt) and
 * imapfs_pool_shutdown(), except name resolution (getaddrinfo).
 * Threads: every function is thread-safe. pool->lock guards the session
 * lists and counters, the connection limit, the password and the offline
 * state; it is never held across network I/O. Lock order: the token
 * renewal lock, then pool->lock.
 * Ownership: the pool owns its sessions, the password (wiped on free) and
 * the TLS context; @cfg is borrowed and must outlive the pool.
 */
#pragma once

#include <glib.h>

#include "imapfs/config.h"
#include "imapfs/session.h"

G_BEGIN_DECLS

typedef struct ImapfsPool ImapfsPool;

/* Work to run on a session. @session is selected on the mailbox given to
 * imapfs_pool_run() (if any). Return FALSE with @error on failure. */
typedef gboolean (*ImapfsPoolFunc)(ImapfsSession *session, gpointer data,
				   GError **error);

/* Takes ownership of @tls and @password (the OAuth access token when
 * imapfs_config_uses_oauth(): a login refused with it runs
 * oauth_token_command for a new one, once). Opens nothing yet. */
ImapfsPool *imapfs_pool_new(const ImapfsConfig *cfg, ImapfsTlsContext *tls,
			    char *password);

/* Logs out every idle session and frees. No caller may still be inside. */
void imapfs_pool_free(ImapfsPool *pool);

/* Opens the first session now, so start-up can report a bad host,
 * certificate or password before mounting. */
gboolean imapfs_pool_check(ImapfsPool *pool, GError **error);

/* Opens the other connections in the background, one after the other
 * on a thread that ends when they are open (imapfs_pool_free() joins it), so
 * that the first reads after mounting do not each wait for a TLS handshake and
 * a login. Failures are only traced: the connection is then opened on demand.
 * Call it after any fork(). */
void imapfs_pool_warm(ImapfsPool *pool);

/*
 * Runs @func on a session. With @mailbox (server name), the session is
 * EXAMINEd on it first unless it already is; when @uidvalidity is non-zero
 * and the mailbox's UIDVALIDITY differs, fails with
 * IMAPFS_ERROR_UIDVALIDITY_CHANGED without calling @func. When @idempotent
 * and the connection fails (imapfs_error_is_connection()), the whole thing
 * is repeated on a new connection, with backoff after failures of new
 * ones, until cfg->timeout after the call, or, once the FUSE request it
 * serves has lost the server, after that request began
 * (imapfs_cancel_deadline()); then it fails with the last error (TIMEOUT
 * while offline). INTERRUPTED when the request is.
 */
gboolean imapfs_pool_run(ImapfsPool *pool, const char *mailbox,
			 guint32 uidvalidity, gboolean idempotent,
			 ImapfsPoolFunc func, gpointer data, GError **error);

/* imapfs_pool_run() of idempotent work whose answer the caller already
 * has, if older (a listing to refresh): while the server is unreachable
 * (offline) it fails at once with TIMEOUT instead of waiting, so that the
 * caller serves what it has. */
gboolean imapfs_pool_run_cached(ImapfsPool *pool, const char *mailbox,
				guint32 uidvalidity, ImapfsPoolFunc func,
				gpointer data, GError **error);

/*
 * The same for a change: @mailbox (if any) is SELECTed rather than
 * EXAMINEd, and @func is never run twice (a change is not idempotent);
 * only a failure before @func ran is repeated on a new connection. On a
 * read-only mount it fails with IMAPFS_ERROR_READONLY and sends nothing.
 */
gboolean imapfs_pool_run_write(ImapfsPool *pool, const char *mailbox,
			       guint32 uidvalidity, ImapfsPoolFunc func,
			       gpointer data, GError **error);

/* What a change's check found on the server, after the connection broke
 * before the change's reply came (imapfs_pool_run_change()). */
typedef enum {
	IMAPFS_OUTCOME_NOT_DONE, /* nothing happened: safe to send again */
	IMAPFS_OUTCOME_DONE,	 /* the server did it (data filled in) */
	IMAPFS_OUTCOME_UNKNOWN,	 /* cannot tell: the change fails (error) */
} ImapfsOutcome;

/* Looks on @session (another connection, @mailbox SELECTed) whether the
 * change that @data describes was made; on DONE it fills @data in as the
 * change's own function would have (a new UID, ...). */
typedef ImapfsOutcome (*ImapfsPoolCheckFunc)(ImapfsSession *session,
					     gpointer data, GError **error);

/*
 * imapfs_pool_run_write() for a change whose reply may be lost: when
 * @func fails with a connection error after it ran, another connection
 * is taken (waiting for the server within the timeout; it may be an
 * older one that had @mailbox selected before the change, so @check must
 * look afresh), @mailbox SELECTed, and @check asked what happened: DONE is
 * success, NOT_DONE runs @func again on that connection, UNKNOWN fails (a check
 * that loses its own connection is asked again). So a retry can neither
 * duplicate nor lose a message. @func must record in @data, before it sends the
 * change, what @check needs (UIDNEXT, ...).
 */
gboolean imapfs_pool_run_change(ImapfsPool *pool, const char *mailbox,
				guint32 uidvalidity, ImapfsPoolFunc func,
				ImapfsPoolCheckFunc check, gpointer data,
				GError **error);

/* A logged-in connection of its own for a caller that keeps it (the
 * watcher's IDLE): not counted against cfg->connections, never handed to
 * anyone else; free it with imapfs_session_free(). Fails at once after
 * imapfs_pool_shutdown(), and a login under way then is aborted. */
ImapfsSession *imapfs_pool_open_extra(ImapfsPool *pool, GError **error);

/* Makes every blocked call fail promptly, and every later one fail at
 * once (unmount). Thread-safe. */
void imapfs_pool_shutdown(ImapfsPool *pool);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(ImapfsPool, imapfs_pool_free)

G_END_DECLS
