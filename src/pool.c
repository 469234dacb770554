/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <openssl/crypto.h>
#include <string.h>

#include "imapfs/cancel.h"
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
	/* The server could not be reached: requests wait, each until its
	 * deadline, for the keeper to get through. All by lock. */
	gboolean offline;
	char *offline_why; /* the failure that made us offline */
	gint64 retry_at;   /* monotonic: the keeper's next attempt */
	gint64 backoff;	   /* the pause after the next failed attempt */
	gint64 noop_at;	   /* monotonic: the next keepalive round */
	GThread *keeper;   /* reconnects and keeps alive; joined by free */
	GCond keeper_wake;
	/* imapfs_pool_warm() was called: from then on, an unreachable
	 * server is waited for, not reported. By lock. */
	gboolean checked;
	gint64 offline_since; /* monotonic; by lock */
	gint stopping;	      /* atomic copy of shut_down, for the keeper */
};

/* How long a lowered connection limit holds before we try for more. */
#define LIMIT_RETRY (5 * 60 * G_TIME_SPAN_SECOND)
/* How a request is run (run_with()). */
enum {
	RUN_WRITE = 1 << 0,	 /* SELECT, not EXAMINE */
	RUN_IDEMPOTENT = 1 << 1, /* may be repeated whatever happened */
	RUN_CACHED = 1 << 2,	 /* the caller has an older answer: while
				    offline, fail at once */
};

/* Reconnecting: the first pause, doubled after each failure up to the
 * last, each one jittered so that many mounts do not knock at once. */
#define BACKOFF_FIRST (250 * G_TIME_SPAN_MILLISECOND)
#define BACKOFF_MOST (10 * G_TIME_SPAN_SECOND)

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
	g_cond_init(&pool->keeper_wake);
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
	imapfs_pool_shutdown(pool);
	g_mutex_lock(&pool->lock);
	GThread *keeper = g_steal_pointer(&pool->keeper);
	g_mutex_unlock(&pool->lock);
	if (keeper)
		g_thread_join(keeper);
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
	g_cond_clear(&pool->keeper_wake);
	g_free(pool->offline_why);
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
	g_atomic_int_set(&pool->stopping, 1);
	for (guint i = 0; i < pool->busy->len; i++)
		imapfs_session_abort(pool->busy->pdata[i]);
	for (guint i = 0; i < pool->opening->len; i++)
		imapfs_session_abort(pool->opening->pdata[i]);
	g_cond_broadcast(&pool->available);
	g_cond_broadcast(&pool->keeper_wake);
	g_mutex_unlock(&pool->lock);
}

static void release(ImapfsPool *pool, ImapfsSession *s);
static gboolean fail_shut_down(GError **error);

/* The keeper's and warmers' question (imapfs_cancel): unmounting
 * interrupts what they wait for, a connect or a login included. */
static gboolean stopping(gpointer data)
{
	ImapfsPool *pool = data;

	return g_atomic_int_get(&pool->stopping);
}

static gboolean is_offline(ImapfsPool *pool)
{
	g_mutex_lock(&pool->lock);
	gboolean offline = pool->offline;
	g_mutex_unlock(&pool->lock);
	return offline;
}

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

/* The deadline of the request this thread serves (or of one starting
 * now): all its steps share one. */
static gint64 request_deadline(ImapfsPool *pool)
{
	return imapfs_cancel_deadline((gint64)pool->cfg->timeout *
				      G_TIME_SPAN_SECOND);
}

/* How long a session may wait for the server on behalf of a request due
 * at @deadline: the usual limit, or when @hurry (the request already lost
 * the server once) what is left of its time, at least a second, so that
 * a retry or a later step does not start a whole timeout over. A slow
 * transfer that keeps coming is never cut either way: this is a limit on
 * silence. */
static guint patience_ms(ImapfsPool *pool, gint64 deadline, gboolean hurry)
{
	gint64 left = deadline - g_get_monotonic_time();
	gint64 most = (gint64)pool->cfg->timeout * G_TIME_SPAN_SECOND;

	if (!hurry)
		return (guint)(most / 1000);
	return (guint)(CLAMP(left, G_TIME_SPAN_SECOND, most) / 1000);
}

/* A new session, logged in. A refused OAuth token is renewed and the
 * login tried once more: tokens live an hour, mounts much longer. */
static ImapfsSession *login_new(ImapfsPool *pool, gint64 deadline,
				GError **error)
{
	for (guint attempt = 0;; attempt++) {
		GError *local = NULL;

		g_mutex_lock(&pool->lock);
		ImapfsSession *s = imapfs_session_new(pool->cfg, pool->tls,
						      pool->password);
		guint gen = pool->token_gen;
		g_mutex_unlock(&pool->lock);
		imapfs_session_set_timeout(
			s, patience_ms(pool, deadline, imapfs_cancel_failed()));
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

/* A failure to open a connection that says the server cannot be reached
 * now, rather than that it refuses us. */
static gboolean unreachable(const GError *error)
{
	return g_error_matches(error, IMAPFS_ERROR, IMAPFS_ERROR_CONNECT) ||
	       g_error_matches(error, IMAPFS_ERROR, IMAPFS_ERROR_RESOLVE) ||
	       g_error_matches(error, IMAPFS_ERROR, IMAPFS_ERROR_TIMEOUT) ||
	       g_error_matches(error, IMAPFS_ERROR, IMAPFS_ERROR_TLS);
}

static void start_keeper(ImapfsPool *pool);

/* The server answers again. Called locked. */
static void go_online(ImapfsPool *pool)
{
	g_message("\"%s\" is reachable again", pool->cfg->host);
	pool->offline = FALSE;
	g_cond_broadcast(&pool->available);
}

/* The server cannot be reached: from now on requests wait for the keeper
 * to get through instead of each trying (and each waiting for a connect
 * to time out). Called locked. */
static void go_offline(ImapfsPool *pool, const GError *error)
{
	g_free(pool->offline_why);
	pool->offline_why = g_strdup(error->message);
	if (pool->offline)
		return;
	g_warning("%s; serving what is cached, and trying again",
		  error->message);
	pool->offline = TRUE;
	pool->offline_since = g_get_monotonic_time();
	pool->backoff = BACKOFF_FIRST;
	pool->retry_at = g_get_monotonic_time() + BACKOFF_FIRST / 2;
	start_keeper(pool);
	g_cond_broadcast(&pool->keeper_wake);
}

/* Opens a new session; the caller has already counted it. *wait_r
 * tells, on failure, that the caller should wait for a connection rather
 * than fail: the server's limit was reached, or it is unreachable. */
static ImapfsSession *open_session(ImapfsPool *pool, gint64 deadline,
				   gboolean *wait_r, GError **error)
{
	GError *local = NULL;

	imapfs_trace(IMAPFS_TRACE_POOL, "pool: opening a connection");
	*wait_r = FALSE;
	ImapfsSession *s = login_new(pool, deadline, &local);
	if (s == NULL) {
		g_mutex_lock(&pool->lock);
		pool->count--;
		if (unreachable(local) && pool->checked && !pool->shut_down) {
			go_offline(pool, local);
			*wait_r = TRUE;
		} else if (!g_error_matches(local, IMAPFS_ERROR,
					    IMAPFS_ERROR_INTERRUPTED)) {
			*wait_r = lower_limit(pool, local);
		}
		g_cond_broadcast(&pool->available);
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
	return login_new(pool, request_deadline(pool), error);
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

/* The error for a request that waited until @deadline. Called locked. */
static void fail_deadline(ImapfsPool *pool, GError **error)
{
	if (pool->offline)
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_TIMEOUT,
			    "cannot reach \"%s\" (%s)", pool->cfg->host,
			    pool->offline_why);
	else
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_TIMEOUT,
			    "no connection to \"%s\" became free",
			    pool->cfg->host);
}

/*
 * Hands out a session: an idle one, a new one while under the limit and
 * the server reachable, or the next one released or reconnected before
 * @deadline; while offline, RUN_CACHED in @how fails at once. *fresh_r
 * tells whether it was just opened. Fails early when the request is
 * interrupted or the mount goes.
 */
static ImapfsSession *acquire(ImapfsPool *pool, const char *mailbox,
			      gint64 deadline, guint how, gboolean *fresh_r,
			      GError **error)
{
	ImapfsSession *s = NULL;

	g_mutex_lock(&pool->lock);
	while (!pool->shut_down) {
		if (!imapfs_cancel_check(error)) {
			g_mutex_unlock(&pool->lock);
			return NULL;
		}
		s = take_idle(pool, mailbox);
		if (s) {
			g_ptr_array_add(pool->busy, s);
			g_mutex_unlock(&pool->lock);
			*fresh_r = FALSE;
			return s;
		}
		if (!pool->offline && pool->count < current_limit(pool)) {
			gboolean wait;
			pool->count++;
			g_mutex_unlock(&pool->lock);
			*fresh_r = TRUE;
			s = open_session(pool, deadline, &wait, error);
			if (s || !wait)
				return s;
			g_mutex_lock(&pool->lock);
			continue;
		}
		if (g_get_monotonic_time() >= deadline ||
		    (pool->offline && (how & RUN_CACHED))) {
			fail_deadline(pool, error);
			g_mutex_unlock(&pool->lock);
			return NULL;
		}
		g_cond_wait_until(&pool->available, &pool->lock,
				  imapfs_cancel_slice(deadline));
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
	/* The keeper is not the only one to find the server back: a
	 * connection that lived through the outage may hear from it. */
	if (keep && pool->offline &&
	    imapfs_session_heard_at(s) > pool->offline_since)
		go_online(pool);
	/* All waiters: the one a signal would wake may give up instead. */
	g_cond_broadcast(&pool->available);
	g_mutex_unlock(&pool->lock);
	if (!keep) {
		imapfs_trace(IMAPFS_TRACE_POOL, "pool: dropping a connection");
		imapfs_session_free(s);
	}
}

gboolean imapfs_pool_check(ImapfsPool *pool, GError **error)
{
	gboolean fresh;
	ImapfsSession *s =
		acquire(pool, NULL, request_deadline(pool), 0, &fresh, error);

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
	imapfs_cancel_set(stopping, pool);
	ImapfsSession *s =
		room ? open_session(pool, request_deadline(pool), &wait, &error)
		     : NULL;
	imapfs_cancel_set(NULL, NULL);
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
	/* From now on (after any fork) an unreachable server is waited
	 * for by the keeper, not reported. */
	pool->checked = TRUE;
	start_keeper(pool);
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

/*
 * One attempt: a session, @mailbox selected, then @func; or, with
 * @check, first the question whether an earlier @func whose reply was
 * lost did its work, and @func only if not. *called_r tells whether
 * @func ran: before that, nothing was changed and a retry is safe even
 * for a change.
 */
static gboolean run_once(ImapfsPool *pool, const char *mailbox,
			 guint32 uidvalidity, guint how, gint64 deadline,
			 gboolean hurry, ImapfsPoolFunc func,
			 ImapfsPoolCheckFunc check, gpointer data,
			 gboolean *fresh_r, gboolean *called_r, GError **error)
{
	ImapfsSession *s =
		acquire(pool, mailbox, deadline, how, fresh_r, error);
	ImapfsOutcome outcome = IMAPFS_OUTCOME_NOT_DONE;
	gboolean ok;

	*called_r = FALSE;
	if (s == NULL)
		return FALSE;
	imapfs_session_set_timeout(s, patience_ms(pool, deadline, hurry));
	ok = select_mailbox(s, mailbox, uidvalidity, how & RUN_WRITE, error);
	if (ok && check) {
		outcome = check(s, data, error);
		imapfs_trace(IMAPFS_TRACE_POOL, "pool: the change was %s",
			     outcome == IMAPFS_OUTCOME_DONE	  ? "made"
			     : outcome == IMAPFS_OUTCOME_NOT_DONE ? "not made"
								  : "?");
		ok = outcome != IMAPFS_OUTCOME_UNKNOWN;
	}
	if (ok && outcome == IMAPFS_OUTCOME_NOT_DONE) {
		*called_r = TRUE;
		ok = func(s, data, error);
	}
	imapfs_session_set_timeout(s, pool->cfg->timeout * 1000);
	release(pool, s);
	return ok;
}

/* Sleeps @pause, or until @deadline, the mount goes or the request is
 * interrupted (then FALSE with the error). */
static gboolean pause_until(ImapfsPool *pool, gint64 pause, gint64 deadline,
			    GError **error)
{
	gint64 until = MIN(g_get_monotonic_time() + pause, deadline);

	gboolean live = TRUE;

	g_mutex_lock(&pool->lock);
	while (!pool->shut_down && g_get_monotonic_time() < until &&
	       (live = imapfs_cancel_check(error)))
		g_cond_wait_until(&pool->keeper_wake, &pool->lock,
				  imapfs_cancel_slice(until));
	gboolean shut_down = pool->shut_down;
	g_mutex_unlock(&pool->lock);
	if (live && shut_down)
		fail_shut_down(error);
	return live && !shut_down;
}

/* @pause jittered: between half and all of it. */
static gint64 jitter(gint64 pause)
{
	return pause / 2 + g_random_int_range(0, (gint32)(pause / 2) + 1);
}

/* Whether to try a failed request again. */
static gboolean worth_retrying(ImapfsPool *pool, const GError *error,
			       gboolean fresh, gint64 deadline)
{
	g_mutex_lock(&pool->lock);
	gboolean shut_down = pool->shut_down;
	g_mutex_unlock(&pool->lock);
	if (shut_down || !imapfs_error_is_connection(error) ||
	    g_get_monotonic_time() >= deadline)
		return FALSE;
	/* A server that breaks off or garbles a fresh connection at the
	 * same request will do it again: no use asking until the timeout. */
	return !(fresh && (error->code == IMAPFS_ERROR_PROTOCOL ||
			   error->code == IMAPFS_ERROR_BYE));
}

/*
 * Runs @func until it worked, or failed for a reason other than the
 * connection, or the request's time is up. A dropped connection is
 * replaced (the mailbox selected again and its UIDVALIDITY checked) and
 * the request repeated, when @idempotent or @func had not run yet; a
 * change whose reply was lost is only ever repeated after @check said it
 * was not made. Repeated failures on fresh connections back off.
 */
static gboolean run_with(ImapfsPool *pool, const char *mailbox,
			 guint32 uidvalidity, guint how, ImapfsPoolFunc func,
			 ImapfsPoolCheckFunc check, gpointer data,
			 GError **error)
{
	gboolean idempotent = how & RUN_IDEMPOTENT;
	gboolean checking = FALSE, extended = FALSE;
	gboolean lost = imapfs_cancel_failed();
	/* A request that has not lost the server gets a whole timeout for
	 * this step, so that a slow transfer before it costs nothing; once
	 * lost, all its steps share what is left of its time. */
	gint64 deadline =
		lost ? request_deadline(pool)
		     : g_get_monotonic_time() +
				(gint64)pool->cfg->timeout * G_TIME_SPAN_SECOND;
	gint64 pause = BACKOFF_FIRST / 2;

	/* An earlier step of this request already waited its time out. */
	if (imapfs_cancel_failed() && g_get_monotonic_time() >= deadline) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_TIMEOUT,
			    "gave up waiting for \"%s\"", pool->cfg->host);
		return FALSE;
	}
	for (;;) {
		GError *local = NULL;
		gboolean fresh = FALSE, called;

		if (run_once(pool, mailbox, uidvalidity, how, deadline, lost,
			     func, checking ? check : NULL, data, &fresh,
			     &called, &local))
			return TRUE;
		if (imapfs_error_is_connection(local)) {
			imapfs_cancel_note_failure();
			lost = TRUE;
		}
		if (called && !idempotent && check == NULL) {
			g_propagate_error(error, local);
			return FALSE;
		}
		checking = checking || (called && !idempotent);
		/* The caller has an answer: no use waiting for the server. */
		if ((how & RUN_CACHED) && is_offline(pool)) {
			g_propagate_error(error, local);
			return FALSE;
		}
		/* Whether a change was made must be found out, if it takes
		 * a second timeout: reporting it failed when it was made would
		 * leave, say, a moved message where the user does not look. */
		if (checking && !extended) {
			deadline +=
				(gint64)pool->cfg->timeout * G_TIME_SPAN_SECOND;
			extended = TRUE;
		}
		if (!worth_retrying(pool, local, fresh, deadline)) {
			g_propagate_error(error, local);
			return FALSE;
		}
		drop_idle(pool);
		imapfs_trace(IMAPFS_TRACE_POOL, "pool: %s after: %s",
			     checking ? "checking the change" : "retrying",
			     local->message);
		g_error_free(local);
		if (fresh) {
			pause = MIN(pause * 2, BACKOFF_MOST);
			if (!pause_until(pool, jitter(pause), deadline, error))
				return FALSE;
		}
	}
}

gboolean imapfs_pool_run(ImapfsPool *pool, const char *mailbox,
			 guint32 uidvalidity, gboolean idempotent,
			 ImapfsPoolFunc func, gpointer data, GError **error)
{
	return run_with(pool, mailbox, uidvalidity,
			idempotent ? RUN_IDEMPOTENT : 0, func, NULL, data,
			error);
}

gboolean imapfs_pool_run_cached(ImapfsPool *pool, const char *mailbox,
				guint32 uidvalidity, ImapfsPoolFunc func,
				gpointer data, GError **error)
{
	return run_with(pool, mailbox, uidvalidity, RUN_IDEMPOTENT | RUN_CACHED,
			func, NULL, data, error);
}

static gboolean fail_read_only(ImapfsPool *pool, GError **error)
{
	if (!pool->cfg->read_only)
		return FALSE;
	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_READONLY,
		    "the file system is mounted read-only");
	return TRUE;
}

gboolean imapfs_pool_run_write(ImapfsPool *pool, const char *mailbox,
			       guint32 uidvalidity, ImapfsPoolFunc func,
			       gpointer data, GError **error)
{
	return !fail_read_only(pool, error) &&
	       run_with(pool, mailbox, uidvalidity, RUN_WRITE, func, NULL, data,
			error);
}

gboolean imapfs_pool_run_change(ImapfsPool *pool, const char *mailbox,
				guint32 uidvalidity, ImapfsPoolFunc func,
				ImapfsPoolCheckFunc check, gpointer data,
				GError **error)
{
	return !fail_read_only(pool, error) &&
	       run_with(pool, mailbox, uidvalidity, RUN_WRITE, func, check,
			data, error);
}

/* --- the keeper -----------------------------------------------------------
 *
 * One thread that, while the server is unreachable, tries to reconnect
 * with backoff, and otherwise sends NOOP on every idle connection the
 * server has been silent on for a timeout, so that a connection that died
 * quietly (a suspended laptop, a NAT that forgot it) is found and replaced
 * before a user's request waits on it.
 */

/* One attempt to reach the server again. Called locked; unlocks inside. */
static void reconnect(ImapfsPool *pool)
{
	g_autoptr(GError) error = NULL;

	if (pool->count >= current_limit(pool)) {
		/* Busy sessions will come back (or fail) first. */
		pool->retry_at = g_get_monotonic_time() + BACKOFF_FIRST;
		return;
	}
	pool->count++;
	g_mutex_unlock(&pool->lock);
	imapfs_cancel_set(stopping, pool);
	ImapfsSession *s = login_new(pool, request_deadline(pool), &error);
	imapfs_cancel_set(NULL, NULL);
	g_mutex_lock(&pool->lock);
	if (s == NULL)
		pool->count--;
	if (pool->shut_down) {
		if (s)
			g_queue_push_head(&pool->idle, s); /* freed by free */
		return;
	}
	if (s == NULL && unreachable(error)) {
		g_free(pool->offline_why);
		pool->offline_why = g_strdup(error->message);
		pool->retry_at = g_get_monotonic_time() + jitter(pool->backoff);
		pool->backoff = MIN(pool->backoff * 2, BACKOFF_MOST);
		imapfs_trace(IMAPFS_TRACE_POOL, "pool: still offline: %s",
			     error->message);
		return;
	}
	/* Reached, or refused for another reason, which the requests
	 * waiting now get to see when they try themselves. */
	if (s)
		g_queue_push_head(&pool->idle, s);
	if (pool->offline)
		go_online(pool);
}

/* An idle session the server has been silent on since @before, taken
 * out of the idle list, or NULL. Called locked. */
static ImapfsSession *take_quiet(ImapfsPool *pool, gint64 before)
{
	for (GList *l = pool->idle.head; l; l = l->next) {
		ImapfsSession *s = l->data;
		if (imapfs_session_heard_at(s) >= before)
			continue;
		g_queue_delete_link(&pool->idle, l);
		g_ptr_array_add(pool->busy, s);
		return s;
	}
	return NULL;
}

/* NOOP on the quiet idle sessions, one at a time so that the others stay
 * usable meanwhile; after the first that turns out dead, the rest (as
 * old) are dropped unasked. Called locked; unlocks inside. */
static void keep_alive(ImapfsPool *pool)
{
	gint64 every = (gint64)pool->cfg->timeout * G_TIME_SPAN_SECOND;
	gint64 now = g_get_monotonic_time();
	ImapfsSession *s;

	pool->noop_at = now + every;
	while (!pool->shut_down && (s = take_quiet(pool, now - every))) {
		g_autoptr(GError) error = NULL;
		g_mutex_unlock(&pool->lock);
		imapfs_cancel_set(stopping, pool);
		gboolean alive = imapfs_session_noop(s, &error);
		imapfs_cancel_set(NULL, NULL);
		release(pool, s);
		if (!alive) {
			imapfs_trace(IMAPFS_TRACE_POOL, "pool: keepalive: %s",
				     error->message);
			drop_idle(pool);
		}
		g_mutex_lock(&pool->lock);
		if (!alive)
			break;
	}
}

static gpointer keeper_main(gpointer data)
{
	ImapfsPool *pool = data;

	g_mutex_lock(&pool->lock);
	pool->noop_at = g_get_monotonic_time() +
			(gint64)pool->cfg->timeout * G_TIME_SPAN_SECOND;
	while (!pool->shut_down) {
		gint64 now = g_get_monotonic_time();
		gint64 next = pool->offline ? pool->retry_at : pool->noop_at;
		if (now < next)
			g_cond_wait_until(&pool->keeper_wake, &pool->lock,
					  next);
		else if (pool->offline)
			reconnect(pool);
		else
			keep_alive(pool);
	}
	g_mutex_unlock(&pool->lock);
	return NULL;
}

/* Called locked. */
static void start_keeper(ImapfsPool *pool)
{
	if (pool->keeper == NULL && !pool->shut_down)
		pool->keeper = g_thread_new("pool-keeper", keeper_main, pool);
}
