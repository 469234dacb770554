/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <openssl/crypto.h>
#include <string.h>

#include "imapfs/credentials.h"
#include "imapfs/error.h"
#include "imapfs/log.h"
#include "imapfs/pool.h"

struct ImapfsPool {
	const ImapfsConfig *cfg;
	ImapfsTlsContext *tls;
	char *password;	   /* or the OAuth token; protected by lock */
	guint token_gen;   /* bumped by each renewal; protected by lock */
	GMutex renew_lock; /* one token renewal at a time; before lock */
	GMutex lock;
	GCond available;
	GQueue idle;	 /* ImapfsSession *; protected by lock */
	GPtrArray *busy; /* sessions handed out; protected by lock */
	guint count;	 /* idle + busy + being opened; protected by lock */
	/* What the server tolerates: lowered when it refuses a connection
	 * while others are open, retried after LIMIT_RETRY. By lock. */
	guint limit;
	gint64 limit_until; /* monotonic; 0: cfg->connections applies */
	GPtrArray *warmers; /* GThread *, joined by free; protected by lock */
	/* Sessions being opened, so unmounting can abort a login that
	 * waits on a silent server; protected by lock */
	GPtrArray *opening;
	gboolean shut_down; /* protected by lock */
};

/* How long a lowered connection limit holds before we try for more. */
#define LIMIT_RETRY (5 * 60 * G_TIME_SPAN_SECOND)

ImapfsPool *imapfs_pool_new(const ImapfsConfig *cfg, ImapfsTlsContext *tls,
			    char *password)
{
	ImapfsPool *pool = g_new0(ImapfsPool, 1);

	pool->cfg = cfg;
	pool->tls = tls;
	pool->password = password;
	g_mutex_init(&pool->lock);
	g_mutex_init(&pool->renew_lock);
	g_cond_init(&pool->available);
	g_queue_init(&pool->idle);
	pool->busy = g_ptr_array_new();
	pool->warmers = g_ptr_array_new();
	pool->opening = g_ptr_array_new();
	return pool;
}

void imapfs_pool_free(ImapfsPool *pool)
{
	ImapfsSession *s;

	if (pool == NULL)
		return;
	for (guint i = 0; i < pool->warmers->len; i++)
		g_thread_join(pool->warmers->pdata[i]);
	g_ptr_array_unref(pool->warmers);
	g_ptr_array_unref(pool->opening);
	while ((s = g_queue_pop_head(&pool->idle)))
		imapfs_session_free(s);
	g_ptr_array_unref(pool->busy);
	g_mutex_clear(&pool->lock);
	g_mutex_clear(&pool->renew_lock);
	g_cond_clear(&pool->available);
	imapfs_tls_context_free(pool->tls);
	if (pool->password)
		OPENSSL_cleanse(pool->password, strlen(pool->password));
	g_free(pool->password);
	g_free(pool);
}

void imapfs_pool_shutdown(ImapfsPool *pool)
{
	g_mutex_lock(&pool->lock);
	pool->shut_down = TRUE;
	for (guint i = 0; i < pool->busy->len; i++)
		imapfs_session_abort(pool->busy->pdata[i]);
	for (guint i = 0; i < pool->opening->len; i++)
		imapfs_session_abort(pool->opening->pdata[i]);
	g_cond_broadcast(&pool->available);
	g_mutex_unlock(&pool->lock);
}

static void release(ImapfsPool *pool, ImapfsSession *s);
static gboolean fail_shut_down(GError **error);

/* The most connections to have now. Called locked. */
static guint current_limit(ImapfsPool *pool)
{
	if (pool->limit_until && g_get_monotonic_time() >= pool->limit_until)
		pool->limit_until = 0;
	return pool->limit_until ? pool->limit : pool->cfg->connections;
}

/*
 * A server that refuses one more connection while others work (Dovecot's
 * mail_max_userip_connections, [LIMIT], [UNAVAILABLE], "too many
 * connections", whatever the wording) is telling us its limit: stay at
 * the connections we have. Returns TRUE when the caller should wait for
 * one of them rather than fail. Called locked.
 */
static gboolean lower_limit(ImapfsPool *pool, const GError *error)
{
	if (pool->count == 0 || error == NULL ||
	    (error->domain == IMAPFS_ERROR &&
	     error->code == IMAPFS_ERROR_CONFIG))
		return FALSE;
	if (!pool->limit_until || pool->limit != pool->count)
		g_message("\"%s\" refused connection %u (%s): using %u",
			  pool->cfg->host, pool->count + 1, error->message,
			  pool->count);
	pool->limit = pool->count;
	pool->limit_until = g_get_monotonic_time() + LIMIT_RETRY;
	return TRUE;
}

/* Logs @s in, listed in pool->opening meanwhile so that a shutdown can
 * abort a login that waits on a silent server. */
static gboolean login_tracked(ImapfsPool *pool, ImapfsSession *s,
			      GError **error)
{
	g_mutex_lock(&pool->lock);
	g_ptr_array_add(pool->opening, s);
	if (pool->shut_down)
		imapfs_session_abort(s);
	g_mutex_unlock(&pool->lock);
	gboolean opened = imapfs_session_open(s, error);
	g_mutex_lock(&pool->lock);
	g_ptr_array_remove_fast(pool->opening, s);
	g_mutex_unlock(&pool->lock);
	return opened;
}

/* Runs oauth_token_command again, for a token the server refused: it
 * may have expired since the last run. @seen is the token_gen the
 * refused login used: when several logins fail at once, one runs the
 * command (a command that rotates refresh tokens must not race itself)
 * and the others take its token. Bounded by the timeout, and never
 * while unmounting. TRUE when there is a newer token to try. */
static gboolean renew_token(ImapfsPool *pool, guint seen)
{
	g_autoptr(GError) error = NULL;
	gboolean renewed = FALSE;

	g_mutex_lock(&pool->renew_lock);
	g_mutex_lock(&pool->lock);
	gboolean newer = pool->token_gen != seen, stop = pool->shut_down;
	g_mutex_unlock(&pool->lock);
	char *token = newer || stop
			      ? NULL
			      : imapfs_credentials_token(
					pool->cfg, pool->cfg->timeout, &error);
	if (token) {
		g_mutex_lock(&pool->lock);
		char *old = pool->password;
		pool->password = token;
		pool->token_gen++;
		g_mutex_unlock(&pool->lock);
		OPENSSL_cleanse(old, strlen(old));
		g_free(old);
		renewed = TRUE;
	} else if (error) {
		g_warning("cannot renew the OAuth token: %s", error->message);
	}
	g_mutex_unlock(&pool->renew_lock);
	return newer || renewed;
}

/* A new session, logged in. A refused OAuth token is renewed and the
 * login tried once more: tokens live an hour, mounts much longer. */
static ImapfsSession *login_new(ImapfsPool *pool, GError **error)
{
	for (guint attempt = 0;; attempt++) {
		GError *local = NULL;

		g_mutex_lock(&pool->lock);
		ImapfsSession *s = imapfs_session_new(pool->cfg, pool->tls,
						      pool->password);
		guint gen = pool->token_gen;
		g_mutex_unlock(&pool->lock);
		if (login_tracked(pool, s, &local))
			return s;
		imapfs_session_free(s);
		if (attempt > 0 || !imapfs_config_uses_oauth(pool->cfg) ||
		    !g_error_matches(local, IMAPFS_ERROR, IMAPFS_ERROR_AUTH) ||
		    !renew_token(pool, gen)) {
			g_propagate_error(error, local);
			return NULL;
		}
		imapfs_trace(IMAPFS_TRACE_POOL, "pool: %s; token renewed",
			     local->message);
		g_error_free(local);
	}
}

/* Opens a new session; the caller has already counted it. *wait_r
 * tells, on failure, that the server's limit was reached. */
static ImapfsSession *open_session(ImapfsPool *pool, gboolean *wait_r,
				   GError **error)
{
	GError *local = NULL;

	imapfs_trace(IMAPFS_TRACE_POOL, "pool: opening a connection");
	*wait_r = FALSE;
	ImapfsSession *s = login_new(pool, &local);
	if (s == NULL) {
		g_mutex_lock(&pool->lock);
		pool->count--;
		*wait_r = lower_limit(pool, local);
		g_cond_signal(&pool->available);
		g_mutex_unlock(&pool->lock);
		if (*wait_r)
			g_error_free(local);
		else
			g_propagate_error(error, local);
		return NULL;
	}
	g_mutex_lock(&pool->lock);
	g_ptr_array_add(pool->busy, s);
	gboolean shut_down = pool->shut_down;
	g_mutex_unlock(&pool->lock);
	if (shut_down) {
		/* Unmounting began while this one was being opened. */
		release(pool, s);
		fail_shut_down(error);
		return NULL;
	}
	return s;
}

ImapfsSession *imapfs_pool_open_extra(ImapfsPool *pool, GError **error)
{
	imapfs_trace(IMAPFS_TRACE_POOL, "pool: opening an extra connection");
	return login_new(pool, error);
}

/* An idle session, preferring one already on @mailbox. Called locked. */
static ImapfsSession *take_idle(ImapfsPool *pool, const char *mailbox)
{
	for (GList *l = pool->idle.head; mailbox && l; l = l->next) {
		if (g_strcmp0(imapfs_session_selected(l->data), mailbox) == 0) {
			ImapfsSession *s = l->data;
			g_queue_delete_link(&pool->idle, l);
			return s;
		}
	}
	return g_queue_pop_head(&pool->idle);
}

static gboolean fail_shut_down(GError **error)
{
	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_DISCONNECTED,
		    "the file system is being unmounted");
	return FALSE;
}

/*
 * Hands out a session: an idle one (unless @force_new), a new one while
 * under the limit, or the next one released within the timeout. *fresh_r tells
 * whether it was just opened (a failure on it is then not worth a retry).
 */
static ImapfsSession *acquire(ImapfsPool *pool, const char *mailbox,
			      gboolean force_new, gboolean *fresh_r,
			      GError **error)
{
	gint64 deadline = g_get_monotonic_time() +
			  (gint64)pool->cfg->timeout * G_TIME_SPAN_SECOND;
	ImapfsSession *s = NULL;

	g_mutex_lock(&pool->lock);
	while (!pool->shut_down) {
		s = force_new ? NULL : take_idle(pool, mailbox);
		if (s) {
			g_ptr_array_add(pool->busy, s);
			g_mutex_unlock(&pool->lock);
			*fresh_r = FALSE;
			return s;
		}
		if (pool->count < current_limit(pool)) {
			gboolean wait;
			pool->count++;
			g_mutex_unlock(&pool->lock);
			*fresh_r = TRUE;
			s = open_session(pool, &wait, error);
			if (s || !wait)
				return s;
			g_mutex_lock(&pool->lock);
			continue;
		}
		if (!g_cond_wait_until(&pool->available, &pool->lock,
				       deadline)) {
			g_mutex_unlock(&pool->lock);
			g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_TIMEOUT,
				    "no connection to \"%s\" became free",
				    pool->cfg->host);
			return NULL;
		}
	}
	g_mutex_unlock(&pool->lock);
	fail_shut_down(error);
	return NULL;
}

static void release(ImapfsPool *pool, ImapfsSession *s)
{
	gboolean keep;

	g_mutex_lock(&pool->lock);
	g_ptr_array_remove_fast(pool->busy, s);
	keep = imapfs_session_is_usable(s) && !pool->shut_down;
	if (keep)
		g_queue_push_head(&pool->idle, s);
	else
		pool->count--;
	g_cond_signal(&pool->available);
	g_mutex_unlock(&pool->lock);
	if (!keep) {
		imapfs_trace(IMAPFS_TRACE_POOL, "pool: dropping a connection");
		imapfs_session_free(s);
	}
}

gboolean imapfs_pool_check(ImapfsPool *pool, GError **error)
{
	gboolean fresh;
	ImapfsSession *s = acquire(pool, NULL, FALSE, &fresh, error);

	if (s == NULL)
		return FALSE;
	release(pool, s);
	return TRUE;
}

/* Opens one more session for the idle list if under the limit; never
 * waits for one to come free. */
static gboolean warm_one(ImapfsPool *pool)
{
	g_autoptr(GError) error = NULL;
	gboolean wait;

	g_mutex_lock(&pool->lock);
	gboolean room = !pool->shut_down && pool->count < current_limit(pool);
	if (room)
		pool->count++;
	g_mutex_unlock(&pool->lock);
	ImapfsSession *s = room ? open_session(pool, &wait, &error) : NULL;
	if (s)
		release(pool, s);
	else if (error)
		imapfs_trace(IMAPFS_TRACE_POOL, "pool: warming: %s",
			     error->message);
	return s != NULL;
}

/* One connection after the other: a server counting its connections
 * per user (Dovecot's mail_max_userip_connections) may not have counted
 * a login still in progress, and would let a burst of them exceed its
 * limit for a moment. Stops at the first that is not opened. */
static gpointer warm_main(gpointer data)
{
	ImapfsPool *pool = data;

	for (guint i = 1; i < pool->cfg->connections && warm_one(pool); i++)
		;
	return NULL;
}

void imapfs_pool_warm(ImapfsPool *pool)
{
	g_mutex_lock(&pool->lock);
	if (pool->cfg->connections > 1)
		g_ptr_array_add(pool->warmers,
				g_thread_new("pool-warm", warm_main, pool));
	g_mutex_unlock(&pool->lock);
}

static gboolean select_mailbox(ImapfsSession *s, const char *mailbox,
			       guint32 uidvalidity, gboolean write,
			       GError **error)
{
	if (mailbox == NULL)
		return TRUE;
	gboolean there = g_strcmp0(imapfs_session_selected(s), mailbox) == 0;
	/* Reads are fine on a SELECTed mailbox (BODY.PEEK sets no flag);
	 * changes need SELECT. */
	if (write && !(there && imapfs_session_writable(s))) {
		if (!imapfs_session_select(s, mailbox, NULL, error))
			return FALSE;
	} else if (!there && !imapfs_session_examine(s, mailbox, NULL, error))
		return FALSE;
	if (uidvalidity &&
	    imapfs_session_state(s)->uidvalidity != uidvalidity) {
		g_set_error(error, IMAPFS_ERROR,
			    IMAPFS_ERROR_UIDVALIDITY_CHANGED,
			    "mailbox \"%s\" was recreated on the server "
			    "(UIDVALIDITY changed)",
			    mailbox);
		return FALSE;
	}
	return TRUE;
}

/* Errors after which the same request may succeed on a new connection. */
static gboolean connection_error(const GError *error)
{
	return error->domain == IMAPFS_ERROR &&
	       (error->code == IMAPFS_ERROR_DISCONNECTED ||
		error->code == IMAPFS_ERROR_TIMEOUT ||
		error->code == IMAPFS_ERROR_BYE ||
		error->code == IMAPFS_ERROR_PROTOCOL ||
		error->code == IMAPFS_ERROR_TLS);
}

/* After one connection turned out dead, the idle ones, as old, likely
 * are too (a suspended laptop, a NAT timeout): drop them all rather
 * than discover it one timeout at a time. */
static void drop_idle(ImapfsPool *pool)
{
	GQueue dead = G_QUEUE_INIT;
	ImapfsSession *s;

	g_mutex_lock(&pool->lock);
	dead = pool->idle;
	g_queue_init(&pool->idle);
	pool->count -= dead.length;
	g_cond_broadcast(&pool->available);
	g_mutex_unlock(&pool->lock);
	while ((s = g_queue_pop_head(&dead)))
		imapfs_session_free(s);
}

/* *called_r tells whether @func ran: before that, nothing was changed
 * and a retry is safe even for a change. */
static gboolean run_once(ImapfsPool *pool, const char *mailbox,
			 guint32 uidvalidity, gboolean write,
			 gboolean force_new, ImapfsPoolFunc func, gpointer data,
			 gboolean *fresh_r, gboolean *called_r, GError **error)
{
	ImapfsSession *s = acquire(pool, mailbox, force_new, fresh_r, error);
	gboolean ok;

	*called_r = FALSE;
	if (s == NULL)
		return FALSE;
	ok = select_mailbox(s, mailbox, uidvalidity, write, error);
	if (ok) {
		*called_r = TRUE;
		ok = func(s, data, error);
	}
	release(pool, s);
	return ok;
}

static gboolean run_with(ImapfsPool *pool, const char *mailbox,
			 guint32 uidvalidity, gboolean idempotent,
			 gboolean write, ImapfsPoolFunc func, gpointer data,
			 GError **error)
{
	GError *local = NULL;
	gboolean fresh = FALSE, called;

	if (run_once(pool, mailbox, uidvalidity, write, FALSE, func, data,
		     &fresh, &called, &local))
		return TRUE;
	if (!fresh && connection_error(local)) {
		drop_idle(pool);
		if (idempotent || !called) {
			imapfs_trace(IMAPFS_TRACE_POOL,
				     "pool: retrying after: %s",
				     local->message);
			g_clear_error(&local);
			return run_once(pool, mailbox, uidvalidity, write, TRUE,
					func, data, &fresh, &called, error);
		}
	}
	g_propagate_error(error, local);
	return FALSE;
}

gboolean imapfs_pool_run(ImapfsPool *pool, const char *mailbox,
			 guint32 uidvalidity, gboolean idempotent,
			 ImapfsPoolFunc func, gpointer data, GError **error)
{
	return run_with(pool, mailbox, uidvalidity, idempotent, FALSE, func,
			data, error);
}

gboolean imapfs_pool_run_write(ImapfsPool *pool, const char *mailbox,
			       guint32 uidvalidity, ImapfsPoolFunc func,
			       gpointer data, GError **error)
{
	if (pool->cfg->read_only) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_READONLY,
			    "the file system is mounted read-only");
		return FALSE;
	}
	return run_with(pool, mailbox, uidvalidity, FALSE, TRUE, func, data,
			error);
}
