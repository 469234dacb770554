/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <string.h>

#include "imapfs/error.h"
#include "imapfs/listing.h"
#include "imapfs/log.h"

struct ImapfsListingDelta {
	ImapfsMailboxState state; /* as EXAMINE reported it */
	guint32 max_uid;	  /* the base's; survivors cover 1..max_uid */
	GArray *full;		  /* the whole listing, replacing the base */
	GArray *added;		  /* messages above max_uid */
	GArray *survivors;	  /* guint32 UIDs <= max_uid; NULL: none gone */
	GArray *flags;		  /* ImapfsMessageInfo carrying new flags */
};

void imapfs_listing_base(ImapfsListingBase *base,
			 const ImapfsMailboxState *state,
			 const GArray *messages)
{
	memset(base, 0, sizeof(*base));
	if (messages == NULL)
		return;
	base->have = TRUE;
	base->state = *state;
	base->count = messages->len;
	if (messages->len)
		base->max_uid = g_array_index(messages, ImapfsMessageInfo,
					      messages->len - 1)
					.uid;
}

void imapfs_listing_delta_free(ImapfsListingDelta *d)
{
	if (d == NULL)
		return;
	g_clear_pointer(&d->full, g_array_unref);
	g_clear_pointer(&d->added, g_array_unref);
	g_clear_pointer(&d->survivors, g_array_unref);
	g_clear_pointer(&d->flags, g_array_unref);
	g_free(d);
}

const ImapfsMailboxState *imapfs_listing_delta_state(ImapfsListingDelta *d)
{
	return &d->state;
}

gboolean imapfs_listing_delta_is_full(ImapfsListingDelta *d)
{
	return d->full != NULL;
}

gboolean imapfs_listing_state_same(const ImapfsMailboxState *a,
				   const ImapfsMailboxState *b)
{
	return a->uidvalidity == b->uidvalidity && a->uidnext != 0 &&
	       a->uidnext == b->uidnext && a->exists == b->exists &&
	       a->highestmodseq == b->highestmodseq;
}

/* The UIDs of a flags-only listing, for when ESEARCH is missing. */
static GArray *uids_of(const GArray *msgs)
{
	GArray *out =
		g_array_sized_new(FALSE, FALSE, sizeof(guint32), msgs->len);

	for (guint i = 0; i < msgs->len; i++)
		g_array_append_val(
			out, g_array_index(msgs, ImapfsMessageInfo, i).uid);
	return out;
}

/* Expunged messages show only in EXISTS: with the new ones counted, a
 * smaller EXISTS means some of the known ones are gone. */
static gboolean find_expunged(ImapfsSession *s, const ImapfsListingBase *base,
			      ImapfsListingDelta *d, GError **error)
{
	guint added = d->added ? d->added->len : 0;

	if (d->state.exists == base->count + added || base->max_uid == 0)
		return TRUE;
	if (imapfs_session_has(s, IMAPFS_CAP_ESEARCH)) {
		d->survivors =
			imapfs_session_search_uids(s, base->max_uid, error);
		return d->survivors != NULL;
	}
	/* One small FETCH reply per message, but it brings flags too. */
	d->flags = imapfs_session_fetch_index_range(s, 1, base->max_uid, TRUE,
						    0, error);
	if (d->flags)
		d->survivors = uids_of(d->flags);
	return d->flags != NULL;
}

static gboolean fetch_delta(ImapfsSession *s, const ImapfsListingBase *base,
			    ImapfsListingDelta *d, GError **error)
{
	const ImapfsMailboxState *was = &base->state;

	/* UIDNEXT unchanged (and known) means nothing arrived. */
	if (d->state.uidnext == 0 || d->state.uidnext != was->uidnext) {
		d->added = imapfs_session_fetch_index_range(
			s, base->max_uid + 1, 0, FALSE, 0, error);
		if (d->added == NULL)
			return FALSE;
	}
	if (!find_expunged(s, base, d, error))
		return FALSE;
	if (d->flags == NULL && base->max_uid > 0 && was->highestmodseq &&
	    d->state.highestmodseq != was->highestmodseq &&
	    imapfs_session_condstore(s)) {
		d->flags = imapfs_session_fetch_index_range(
			s, 1, base->max_uid, TRUE, was->highestmodseq, error);
		if (d->flags == NULL)
			return FALSE;
	}
	return TRUE;
}

ImapfsListingDelta *imapfs_listing_refresh(ImapfsSession *s,
					   const char *mailbox,
					   const ImapfsListingBase *base,
					   GError **error)
{
	g_autoptr(ImapfsListingDelta) d = g_new0(ImapfsListingDelta, 1);

	d->max_uid = base->max_uid;
	if (!imapfs_session_examine(s, mailbox, &d->state, error))
		return NULL;
	if (base->have && imapfs_listing_state_same(&base->state, &d->state))
		return g_steal_pointer(&d);
	if (!base->have || base->state.uidvalidity != d->state.uidvalidity) {
		d->full = imapfs_session_fetch_index(s, error);
		return d->full ? g_steal_pointer(&d) : NULL;
	}
	imapfs_trace(IMAPFS_TRACE_CACHE,
		     "listing: refreshing \"%s\" from UID %u, EXISTS %u -> %u",
		     mailbox, base->max_uid, base->state.exists,
		     d->state.exists);
	return fetch_delta(s, base, d, error) ? g_steal_pointer(&d) : NULL;
}

/* --- applying ----------------------------------------------------------- */

ImapfsMessageInfo *imapfs_listing_find(GArray *msgs, guint32 uid)
{
	guint lo = 0, hi = msgs->len;

	while (lo < hi) {
		guint mid = lo + (hi - lo) / 2;
		ImapfsMessageInfo *info =
			&g_array_index(msgs, ImapfsMessageInfo, mid);
		if (info->uid == uid)
			return info;
		if (info->uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* Who hears of each change while a delta is applied. */
typedef struct {
	ImapfsListingChangeFunc func; /* may be NULL */
	gpointer data;
} Report;

static void report(const Report *r, guint32 uid, ImapfsListingChange what)
{
	if (r->func)
		r->func(uid, what, r->data);
}

/* Drops the messages up to max_uid that are not among the survivors
 * (both sorted by UID). */
static gboolean apply_survivors(ImapfsListingDelta *d, GArray *msgs,
				const Report *r)
{
	guint keep = 0, s = 0;
	guint before = msgs->len;

	for (guint i = 0; i < msgs->len; i++) {
		ImapfsMessageInfo *m =
			&g_array_index(msgs, ImapfsMessageInfo, i);
		while (s < d->survivors->len &&
		       g_array_index(d->survivors, guint32, s) < m->uid)
			s++;
		gboolean alive =
			m->uid > d->max_uid ||
			(s < d->survivors->len &&
			 g_array_index(d->survivors, guint32, s) == m->uid);
		if (!alive) {
			report(r, m->uid, IMAPFS_LISTING_REMOVED);
			imapfs_message_info_clear(m);
			continue;
		}
		if (keep != i) {
			g_array_index(msgs, ImapfsMessageInfo, keep) = *m;
			memset(m, 0, sizeof(*m));
		}
		keep++;
	}
	g_array_set_size(msgs, keep);
	return keep != before;
}

static gboolean apply_flags(ImapfsListingDelta *d, GArray *msgs,
			    const Report *r)
{
	gboolean changed = FALSE;

	for (guint i = 0; i < d->flags->len; i++) {
		ImapfsMessageInfo *u =
			&g_array_index(d->flags, ImapfsMessageInfo, i);
		ImapfsMessageInfo *m = imapfs_listing_find(msgs, u->uid);
		if (m == NULL || (g_strcmp0(m->flags, u->flags) == 0 &&
				  m->modseq == u->modseq))
			continue;
		g_free(m->flags);
		m->flags = g_steal_pointer(&u->flags);
		/* A conditional STORE compares with it: kept current even
		 * when the flags came back as they were. */
		m->modseq = u->modseq;
		report(r, m->uid, IMAPFS_LISTING_FLAGS);
		changed = TRUE;
	}
	return changed;
}

/* Appends the new messages, which all lie above the known ones. */
static gboolean apply_added(ImapfsListingDelta *d, GArray *msgs,
			    const Report *r)
{
	guint32 max = msgs->len ? g_array_index(msgs, ImapfsMessageInfo,
						msgs->len - 1)
					  .uid
				: 0;
	gboolean changed = FALSE;

	for (guint i = 0; i < d->added->len; i++) {
		ImapfsMessageInfo *a =
			&g_array_index(d->added, ImapfsMessageInfo, i);
		if (a->uid <= max)
			continue;
		report(r, a->uid, IMAPFS_LISTING_ADDED);
		g_array_append_val(msgs, *a);
		max = a->uid;
		memset(a, 0, sizeof(*a));
		changed = TRUE;
	}
	return changed;
}

/* What a whole new listing changes against the old one (both by UID). */
static void report_replaced(const GArray *old, const GArray *now,
			    const Report *r)
{
	guint i = 0, j = 0;

	while (r->func && (i < old->len || j < now->len)) {
		const ImapfsMessageInfo *a =
			i < old->len ? &g_array_index(old, ImapfsMessageInfo, i)
				     : NULL;
		const ImapfsMessageInfo *b =
			j < now->len ? &g_array_index(now, ImapfsMessageInfo, j)
				     : NULL;
		if (b == NULL || (a && a->uid < b->uid)) {
			report(r, a->uid, IMAPFS_LISTING_REMOVED);
			i++;
		} else if (a == NULL || b->uid < a->uid) {
			report(r, b->uid, IMAPFS_LISTING_ADDED);
			j++;
		} else {
			if (g_strcmp0(a->flags, b->flags) != 0)
				report(r, a->uid, IMAPFS_LISTING_FLAGS);
			i++;
			j++;
		}
	}
}

gboolean imapfs_listing_delta_apply(ImapfsListingDelta *d, GArray **messages,
				    ImapfsListingChangeFunc func, gpointer data)
{
	Report r = {func, data};
	gboolean changed = FALSE;

	if (d->full) {
		if (*messages) {
			report_replaced(*messages, d->full, &r);
			g_array_unref(*messages);
		}
		*messages = g_steal_pointer(&d->full);
		return TRUE;
	}
	if (*messages == NULL)
		return FALSE;
	if (d->survivors)
		changed |= apply_survivors(d, *messages, &r);
	if (d->flags)
		changed |= apply_flags(d, *messages, &r);
	if (d->added)
		changed |= apply_added(d, *messages, &r);
	return changed;
}

/* --- on disk -------------------------------------------------------------- */

#define LISTING_FORMAT 3
/* (format, uidvalidity, uidnext, exists, highestmodseq,
 *  uids, sizes, internaldates, distinct flag strings, flags index per
 *  message, modseqs): column arrays serialize without an object per
 *  message, which matters at 100,000 messages. */
#define LISTING_TYPE   \
	"(uuuutauatax" \
	"asauat)"

static GVariant *column(const GVariantType *type, gconstpointer data, gsize n,
			gsize size)
{
	return g_variant_new_fixed_array(type, data, n, size);
}

GBytes *imapfs_listing_serialize(const ImapfsMailboxState *state,
				 const GArray *messages)
{
	guint n = messages->len;
	g_autofree guint32 *uids = g_new(guint32, MAX(n, 1));
	g_autofree guint64 *sizes = g_new(guint64, MAX(n, 1));
	g_autofree gint64 *dates = g_new(gint64, MAX(n, 1));
	g_autofree guint32 *flag_of = g_new(guint32, MAX(n, 1));
	g_autofree guint64 *modseqs = g_new(guint64, MAX(n, 1));
	g_autoptr(GHashTable) index = g_hash_table_new(g_str_hash, g_str_equal);
	g_autoptr(GPtrArray) table = g_ptr_array_new();

	for (guint i = 0; i < n; i++) {
		const ImapfsMessageInfo *m =
			&g_array_index(messages, ImapfsMessageInfo, i);
		const char *flags = m->flags ? m->flags : "";
		gpointer k;
		if (!g_hash_table_lookup_extended(index, flags, NULL, &k)) {
			k = GUINT_TO_POINTER(table->len);
			g_hash_table_insert(index, (gpointer)flags, k);
			g_ptr_array_add(table, (gpointer)flags);
		}
		uids[i] = m->uid;
		sizes[i] = m->size;
		dates[i] = m->internaldate;
		flag_of[i] = GPOINTER_TO_UINT(k);
		modseqs[i] = m->modseq;
	}
	g_autoptr(GVariant) v = g_variant_ref_sink(g_variant_new(
		"(uuuut@au@at@ax@as@au@at)", LISTING_FORMAT, state->uidvalidity,
		state->uidnext, state->exists, state->highestmodseq,
		column(G_VARIANT_TYPE_UINT32, uids, n, 4),
		column(G_VARIANT_TYPE_UINT64, sizes, n, 8),
		column(G_VARIANT_TYPE_INT64, dates, n, 8),
		g_variant_new_strv((const char *const *)table->pdata,
				   table->len),
		column(G_VARIANT_TYPE_UINT32, flag_of, n, 4),
		column(G_VARIANT_TYPE_UINT64, modseqs, n, 8)));
	return g_variant_get_data_as_bytes(v);
}

typedef struct {
	const guint32 *uids;
	const guint64 *sizes;
	const gint64 *dates;
	const guint32 *flag_of;
	const guint64 *modseqs;
	const char **table;
	gsize n, flags_n;
} Columns;

/* Sorted and unique UIDs, flag indexes within the table: as written. */
static gboolean add_entries(const Columns *c, GArray *out)
{
	for (gsize i = 0; i < c->n; i++) {
		if ((i > 0 && c->uids[i] <= c->uids[i - 1]) ||
		    c->flag_of[i] >= c->flags_n)
			return FALSE;
		ImapfsMessageInfo m = {
			.uid = c->uids[i],
			.size = c->sizes[i],
			.internaldate = c->dates[i],
			.flags = g_strdup(c->table[c->flag_of[i]]),
			.modseq = c->modseqs[i],
		};
		g_array_append_val(out, m);
	}
	return TRUE;
}

GArray *imapfs_listing_deserialize(GBytes *bytes, ImapfsMailboxState *state_r)
{
	g_autoptr(GVariant) v = g_variant_ref_sink(g_variant_new_from_bytes(
		G_VARIANT_TYPE(LISTING_TYPE), bytes, FALSE));
	g_autoptr(GVariant) u = NULL, sz = NULL, d = NULL, t = NULL, f = NULL,
			    ms = NULL;
	g_autoptr(GArray) out =
		g_array_new(FALSE, TRUE, sizeof(ImapfsMessageInfo));
	g_autofree const char **table = NULL;
	Columns c = {0};
	gsize nu, ns, nd, nf, nm;
	guint32 format;

	g_array_set_clear_func(out, imapfs_message_info_clear);
	/* The disk cache checksums the bytes; this guards the format. */
	if (!g_variant_is_normal_form(v))
		return NULL;
	g_variant_get(v, "(uuuut@au@at@ax@as@au@at)", &format,
		      &state_r->uidvalidity, &state_r->uidnext,
		      &state_r->exists, &state_r->highestmodseq, &u, &sz, &d,
		      &t, &f, &ms);
	c.uids = g_variant_get_fixed_array(u, &nu, 4);
	c.sizes = g_variant_get_fixed_array(sz, &ns, 8);
	c.dates = g_variant_get_fixed_array(d, &nd, 8);
	c.flag_of = g_variant_get_fixed_array(f, &nf, 4);
	c.modseqs = g_variant_get_fixed_array(ms, &nm, 8);
	table = g_variant_get_strv(t, &c.flags_n);
	c.table = table;
	c.n = nu;
	if (format != LISTING_FORMAT || ns != nu || nd != nu || nf != nu ||
	    nm != nu || !add_entries(&c, out))
		return NULL;
	return g_steal_pointer(&out);
}
