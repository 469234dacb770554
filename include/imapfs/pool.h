/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The connection pool: up to cfg->connections logged-in sessions, handed
 * out one caller at a time. A caller runs its work through
 * imapfs_pool_run(), which picks a session already on the wanted mailbox
 * when there is one (EXAMINE otherwise), replaces sessions that broke, and
 * retries idempotent work once on a fresh connection when a reused one
 * turns out to be dead.
 *
 * Threads: every function is thread-safe. pool->lock guards only the idle
 * list and counters; it is never held across network I/O. Callers wait at
 * most cfg->timeout for a free session.
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
 * and a reused session fails with DISCONNECTED, TIMEOUT, BYE or PROTOCOL,
 * the whole thing is retried once on a new connection.
 */
gboolean imapfs_pool_run(ImapfsPool *pool, const char *mailbox,
			 guint32 uidvalidity, gboolean idempotent,
			 ImapfsPoolFunc func, gpointer data, GError **error);

/*
 * The same for a change: @mailbox (if any) is SELECTed rather than
 * EXAMINEd, and @func is never run twice (a change is not idempotent);
 * only a failure before @func ran is retried on a new connection. On a
 * read-only mount it fails with IMAPFS_ERROR_READONLY and sends nothing.
 */
gboolean imapfs_pool_run_write(ImapfsPool *pool, const char *mailbox,
			       guint32 uidvalidity, ImapfsPoolFunc func,
			       gpointer data, GError **error);

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
