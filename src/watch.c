/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <string.h>

#include "imapfs/error.h"
#include "imapfs/listing.h"
#include "imapfs/log.h"
#include "imapfs/watch.h"

/* How long one wait inside IDLE lasts: the longest a change of target
 * or a stop goes unnoticed. */
#define SLICE_MS 1000
/* Responses keep coming for a while after the first (a mv of many
 * messages is one EXPUNGE each): gathered this long into one refresh. */
#define SETTLE_MS 150
#define RENEW_US (28 * 60 * G_TIME_SPAN_SECOND)
#define BACKOFF_FIRST_US G_TIME_SPAN_SECOND
#define BACKOFF_MOST_US (60 * G_TIME_SPAN_SECOND)

typedef struct Idler Idler;

struct ImapfsWatch {
	const ImapfsConfig *cfg;
	ImapfsPool *pool;
	ImapfsTree *tree;
	GMutex lock;
	GCond wake;	  /* stop, for the sleepers; with lock */
	gboolean stopped; /* by lock */
	GThread *poller;
	Idler *idlers[IMAPFS_WATCH_IDLERS];
};

struct Idler {
	ImapfsWatch *w;
	guint rank; /* idles on the rank-th most recently used mailbox */
	GThread *thread;
	ImapfsSession *session; /* set and cleared under w->lock */
	char *target;		/* selected on session */
	char *claim;		/* the mailbox it is for; by w->lock */
	gint64 backoff;		/* the next pause after a failure */
};

static gboolean stopped(ImapfsWatch *w)
{
	g_mutex_lock(&w->lock);
	gboolean s = w->stopped;
	g_mutex_unlock(&w->lock);
	return s;
}

/* Sleeps @us unless stopped meanwhile; returns FALSE once stopped. */
static gboolean nap(ImapfsWatch *w, gint64 us)
{
	gint64 until = g_get_monotonic_time() + us;

	g_mutex_lock(&w->lock);
	while (!w->stopped && g_cond_wait_until(&w->wake, &w->lock, until))
		;
	gboolean go_on = !w->stopped;
	g_mutex_unlock(&w->lock);
	return go_on;
}

/* --- polling ---------------------------------------------------------------
 */

static gpointer poll_main(gpointer data)
{
	ImapfsWatch *w = data;
	gboolean failing = FALSE;

	while (nap(w, (gint64)w->cfg->poll * G_TIME_SPAN_SECOND)) {
		g_autoptr(GError) error = NULL;
		gboolean ok = imapfs_tree_poll(w->tree, &error);
		/* Said once per outage; the next poll tries again. */
		if (!ok && !failing && !stopped(w))
			g_message("checking for changes failed: %s",
				  error->message);
		failing = !ok;
	}
	return NULL;
}

/* --- IDLE ------------------------------------------------------------------
 */

/* Whether another idler watches @name. Called with w->lock. */
static gboolean claimed(Idler *id, const char *name)
{
	for (guint i = 0; i < IMAPFS_WATCH_IDLERS; i++) {
		Idler *o = id->w->idlers[i];
		if (o && o != id && g_strcmp0(o->claim, name) == 0)
			return TRUE;
	}
	return FALSE;
}

/* The mailbox this idler should watch now (new string, claimed for it),
 * or NULL: its current one while that stays among the most recently
 * used, else one of those no other idler has claimed, so that using two
 * mailboxes by turns moves nothing. */
static char *wanted(Idler *id, ImapfsMailboxState *state_r)
{
	g_autoptr(GPtrArray) in_use =
		imapfs_tree_in_use(id->w->tree, IMAPFS_WATCH_IDLERS);
	ImapfsMailboxInUse *pick = NULL;
	char *want = NULL;

	g_mutex_lock(&id->w->lock);
	for (guint i = 0; pick == NULL && i < in_use->len; i++) {
		const char *name =
			((ImapfsMailboxInUse *)in_use->pdata[i])->server_name;
		if (g_strcmp0(name, id->claim) == 0)
			pick = in_use->pdata[i];
	}
	for (guint i = 0; pick == NULL && i < in_use->len; i++) {
		const char *name =
			((ImapfsMailboxInUse *)in_use->pdata[i])->server_name;
		if (!claimed(id, name))
			pick = in_use->pdata[i];
	}
	if (pick) {
		want = g_strdup(pick->server_name);
		if (state_r)
			*state_r = pick->state;
	}
	g_free(id->claim);
	id->claim = g_strdup(want);
	g_mutex_unlock(&id->w->lock);
	return want;
}

static void set_target(Idler *id, const char *name)
{
	g_free(id->target);
	id->target = g_strdup(name);
}

static void drop_session(Idler *id)
{
	g_mutex_lock(&id->w->lock);
	ImapfsSession *s = g_steal_pointer(&id->session);
	g_mutex_unlock(&id->w->lock);
	imapfs_session_free(s);
	set_target(id, NULL);
}

/* The pause before the next try: nothing the first time after a success,
 * then doubling from a second to a minute, jittered. */
static gint64 next_pause(Idler *id)
{
	gint64 pause = id->backoff + g_random_int_range(0, 250) * 1000;

	id->backoff = CLAMP(id->backoff * 2, BACKOFF_FIRST_US, BACKOFF_MOST_US);
	return pause;
}

/*
 * A broken connection is opened again at once the first time (a server
 * drops an IDLE on a mailbox deleted under it), then after the growing
 * pause. Whatever broke it may have changed the mailbox: it is checked
 * now, not at the next poll.
 */
static void back_off(Idler *id, const GError *error)
{
	g_autofree char *target = g_strdup(id->target);

	imapfs_trace(IMAPFS_TRACE_POOL, "idle %u: %s", id->rank,
		     error ? error->message : "failed");
	drop_session(id);
	if (target)
		imapfs_tree_refresh(id->w->tree, target, NULL);
	nap(id->w, next_pause(id));
}

static gboolean connect_idler(Idler *id, GError **error)
{
	ImapfsSession *s = imapfs_pool_open_extra(id->w->pool, error);

	if (s == NULL)
		return FALSE;
	g_mutex_lock(&id->w->lock);
	id->session = s;
	if (id->w->stopped)
		imapfs_session_abort(s);
	g_mutex_unlock(&id->w->lock);
	return TRUE;
}

/* Selects @want (EXAMINE, so nothing changes on the server) and, when the
 * state there moved since the tree listed it (@known), refreshes at once:
 * what happened while no IDLE ran would not be announced. Without
 * CONDSTORE a flag change shows in no state: then always. */
static gboolean retarget(Idler *id, const char *want,
			 const ImapfsMailboxState *known, GError **error)
{
	ImapfsMailboxState st;

	set_target(id, NULL);
	if (!imapfs_session_examine(id->session, want, &st, error))
		return FALSE;
	set_target(id, want);
	if (st.highestmodseq && imapfs_listing_state_same(known, &st))
		return TRUE;
	return imapfs_tree_refresh(id->w->tree, want, error);
}

/* Waits inside IDLE until something changed, the target should change, a
 * renewal is due or the watch stops. Returns FALSE on a broken session;
 * *changed_r tells whether to refresh. */
static gboolean idle_until_news(Idler *id, gboolean *changed_r, GError **error)
{
	gint64 renew_at = g_get_monotonic_time() + RENEW_US;

	*changed_r = FALSE;
	if (!imapfs_session_idle_begin(id->session, error))
		return FALSE;
	while (!*changed_r && !stopped(id->w) &&
	       g_get_monotonic_time() < renew_at) {
		if (!imapfs_session_idle_wait(id->session, SLICE_MS, changed_r,
					      error))
			return FALSE;
		g_autofree char *want = wanted(id, NULL);
		if (g_strcmp0(want, id->target) != 0)
			break;
	}
	/* Let the rest of a burst arrive, so one refresh covers it. */
	if (*changed_r &&
	    !imapfs_session_idle_wait(id->session, SETTLE_MS, changed_r, error))
		return FALSE;
	return imapfs_session_idle_end(id->session, changed_r, error);
}

/* One round: connect if needed, select the wanted mailbox, idle, refresh.
 * FALSE with @error when the connection failed. */
static gboolean idle_round(Idler *id, GError **error)
{
	ImapfsMailboxState known;
	g_autofree char *want = wanted(id, &known);
	gboolean changed;

	if (want == NULL)
		return nap(id->w, SLICE_MS * 1000), TRUE;
	if (id->session == NULL && !connect_idler(id, error))
		return FALSE;
	if (!imapfs_session_has(id->session, IMAPFS_CAP_IDLE)) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_UNSUPPORTED,
			    "no IDLE: changes are polled for");
		return FALSE;
	}
	if (g_strcmp0(want, id->target) != 0 &&
	    !retarget(id, want, &known, error))
		return FALSE;
	if (!idle_until_news(id, &changed, error))
		return FALSE;
	id->backoff = 0;
	return !changed || imapfs_tree_refresh(id->w->tree, id->target, error);
}

static gpointer idle_main(gpointer data)
{
	Idler *id = data;

	while (!stopped(id->w)) {
		g_autoptr(GError) error = NULL;
		if (idle_round(id, &error))
			continue;
		/* Without IDLE the poll is all there is. */
		if (g_error_matches(error, IMAPFS_ERROR,
				    IMAPFS_ERROR_UNSUPPORTED))
			break;
		/* A refused EXAMINE (mailbox deleted meanwhile) is no reason
		 * to reconnect; it is tried again less and less often until
		 * a poll's LIST drops the mailbox. */
		if (id->session && imapfs_session_is_usable(id->session)) {
			set_target(id, NULL);
			nap(id->w, MAX(next_pause(id), SLICE_MS * 1000));
			continue;
		}
		back_off(id, error);
	}
	drop_session(id);
	return NULL;
}

/* --- life ------------------------------------------------------------------
 */

ImapfsWatch *imapfs_watch_new(const ImapfsConfig *cfg, ImapfsPool *pool,
			      ImapfsTree *tree)
{
	ImapfsWatch *w = g_new0(ImapfsWatch, 1);

	w->cfg = cfg;
	w->pool = pool;
	w->tree = tree;
	g_mutex_init(&w->lock);
	g_cond_init(&w->wake);
	return w;
}

void imapfs_watch_start(ImapfsWatch *w)
{
	if (w->cfg->poll)
		w->poller = g_thread_new("poll", poll_main, w);
	for (guint i = 0; i < IMAPFS_WATCH_IDLERS; i++) {
		Idler *id = g_new0(Idler, 1);
		id->w = w;
		id->rank = i;
		w->idlers[i] = id;
		id->thread = g_thread_new("idle", idle_main, id);
	}
}

void imapfs_watch_free(ImapfsWatch *w)
{
	if (w == NULL)
		return;
	g_mutex_lock(&w->lock);
	w->stopped = TRUE;
	g_cond_broadcast(&w->wake);
	for (guint i = 0; i < IMAPFS_WATCH_IDLERS; i++)
		if (w->idlers[i] && w->idlers[i]->session)
			imapfs_session_abort(w->idlers[i]->session);
	g_mutex_unlock(&w->lock);
	if (w->poller)
		g_thread_join(w->poller);
	for (guint i = 0; i < IMAPFS_WATCH_IDLERS; i++) {
		if (w->idlers[i] == NULL)
			continue;
		g_thread_join(w->idlers[i]->thread);
		g_free(w->idlers[i]->claim);
		g_free(w->idlers[i]);
	}
	g_cond_clear(&w->wake);
	g_mutex_clear(&w->lock);
	g_free(w);
}
