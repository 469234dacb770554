/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The listing kept on disk between mounts: what is written comes back,
 * and damaged or foreign bytes are refused rather than believed. */
#include <string.h>

#include "imapfs/listing.h"

static GArray *sample(guint n)
{
	GArray *a = g_array_new(FALSE, TRUE, sizeof(ImapfsMessageInfo));

	g_array_set_clear_func(a, imapfs_message_info_clear);
	for (guint i = 0; i < n; i++) {
		ImapfsMessageInfo m = {
			.uid = 3 * i + 1,
			.size = 1000 + i,
			.internaldate = -5 + (gint64)i * 86400,
			.flags = g_strdup(i % 2 ? "\\Seen $Label1" : ""),
			.modseq = i % 3 ? 0 : G_MAXUINT64 - i,
		};
		g_array_append_val(a, m);
	}
	return a;
}

static const ImapfsMailboxState state = {77, 301, 100, 123456789012ULL};

static void test_round_trip(void)
{
	g_autoptr(GArray) in = sample(100);
	g_autoptr(GBytes) bytes = imapfs_listing_serialize(&state, in);
	ImapfsMailboxState got;
	g_autoptr(GArray) out = imapfs_listing_deserialize(bytes, &got);

	g_assert_nonnull(out);
	g_assert_cmpuint(got.uidvalidity, ==, state.uidvalidity);
	g_assert_cmpuint(got.uidnext, ==, state.uidnext);
	g_assert_cmpuint(got.exists, ==, state.exists);
	g_assert_cmpuint(got.highestmodseq, ==, state.highestmodseq);
	g_assert_cmpuint(out->len, ==, in->len);
	for (guint i = 0; i < in->len; i++) {
		ImapfsMessageInfo *a = &g_array_index(in, ImapfsMessageInfo, i);
		ImapfsMessageInfo *b =
			&g_array_index(out, ImapfsMessageInfo, i);
		g_assert_cmpuint(a->uid, ==, b->uid);
		g_assert_cmpuint(a->size, ==, b->size);
		g_assert_cmpint(a->internaldate, ==, b->internaldate);
		g_assert_cmpstr(a->flags, ==, b->flags);
		g_assert_cmpuint(a->modseq, ==, b->modseq);
	}
}

/* A listing saved in @v is not taken. */
static void assert_refused(GVariant *v)
{
	g_autoptr(GBytes) bytes = g_variant_get_data_as_bytes(v);
	ImapfsMailboxState got;
	g_autoptr(GArray) out = imapfs_listing_deserialize(bytes, &got);

	g_assert_null(out);
}

/* A listing written before MODSEQ was kept (format 2, one column
 * fewer) is refused: its messages would all seem to have modseq 0. */
static void test_old_format(void)
{
	static const guint32 uids[] = {1, 4}, flag_of[] = {0, 0};
	static const guint64 sizes[] = {10, 20};
	static const gint64 dates[] = {0, 86400};
	static const char *const table[] = {"\\Seen"};
	g_autoptr(GVariant) v = g_variant_ref_sink(g_variant_new(
		"(uuuut@au@at@ax@as@au)", 2, 77, 5, 2, G_GUINT64_CONSTANT(0),
		g_variant_new_fixed_array(G_VARIANT_TYPE_UINT32, uids, 2, 4),
		g_variant_new_fixed_array(G_VARIANT_TYPE_UINT64, sizes, 2, 8),
		g_variant_new_fixed_array(G_VARIANT_TYPE_INT64, dates, 2, 8),
		g_variant_new_strv(table, 1),
		g_variant_new_fixed_array(G_VARIANT_TYPE_UINT32, flag_of, 2,
					  4)));
	assert_refused(v);
}

/* The current layout with another version number is refused too. */
static void test_other_version(void)
{
	g_autoptr(GArray) in = sample(3);
	g_autoptr(GBytes) bytes = imapfs_listing_serialize(&state, in);
	g_autoptr(GVariant) v = g_variant_ref_sink(
		g_variant_new_from_bytes(G_VARIANT_TYPE("(uuuutauatax"
							"asauat)"),
					 bytes, FALSE));
	gsize n = g_variant_n_children(v);
	g_autofree GVariant **kids = g_new(GVariant *, n);

	for (gsize i = 0; i < n; i++)
		kids[i] = i == 0 ? g_variant_new_uint32(99)
				 : g_variant_get_child_value(v, i);
	g_autoptr(GVariant) w =
		g_variant_ref_sink(g_variant_new_tuple(kids, n));
	for (gsize i = 1; i < n; i++)
		g_variant_unref(kids[i]);
	assert_refused(w);
}

static void test_empty(void)
{
	g_autoptr(GArray) in = sample(0);
	g_autoptr(GBytes) bytes = imapfs_listing_serialize(&state, in);
	ImapfsMailboxState got;
	g_autoptr(GArray) out = imapfs_listing_deserialize(bytes, &got);

	g_assert_nonnull(out);
	g_assert_cmpuint(out->len, ==, 0);
}

/* Every truncation and many byte flips: refused or well-formed, never
 * a crash or a listing out of order. */
static void test_damage(void)
{
	g_autoptr(GArray) in = sample(20);
	g_autoptr(GBytes) bytes = imapfs_listing_serialize(&state, in);
	gsize len;
	const guint8 *data = g_bytes_get_data(bytes, &len);

	for (gsize cut = 0; cut < len; cut++) {
		g_autoptr(GBytes) b = g_bytes_new(data, cut);
		ImapfsMailboxState got;
		g_autoptr(GArray) out = imapfs_listing_deserialize(b, &got);
		g_assert_true(out == NULL || out->len < in->len);
	}
	for (gsize i = 0; i < len; i++) {
		g_autofree guint8 *copy = g_memdup2(data, len);
		copy[i] ^= 0x5a;
		g_autoptr(GBytes) b = g_bytes_new(copy, len);
		ImapfsMailboxState got;
		g_autoptr(GArray) out = imapfs_listing_deserialize(b, &got);
		for (guint k = 1; out && k < out->len; k++)
			g_assert_cmpuint(
				g_array_index(out, ImapfsMessageInfo, k - 1)
					.uid,
				<,
				g_array_index(out, ImapfsMessageInfo, k).uid);
	}
}

static void test_find(void)
{
	g_autoptr(GArray) in = sample(50);

	g_assert_cmpuint(imapfs_listing_find(in, 1)->uid, ==, 1);
	g_assert_cmpuint(imapfs_listing_find(in, 148)->uid, ==, 148);
	g_assert_null(imapfs_listing_find(in, 2));
	g_assert_null(imapfs_listing_find(in, 149));
	g_assert_null(imapfs_listing_find(in, 0));
}

static void test_base(void)
{
	g_autoptr(GArray) in = sample(10);
	ImapfsListingBase base;

	imapfs_listing_base(&base, &state, in);
	g_assert_true(base.have);
	g_assert_cmpuint(base.count, ==, 10);
	g_assert_cmpuint(base.max_uid, ==, 28);
	imapfs_listing_base(&base, &state, NULL);
	g_assert_false(base.have);
	g_assert_cmpuint(base.max_uid, ==, 0);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/listing/serialize/round-trip", test_round_trip);
	g_test_add_func("/listing/serialize/empty", test_empty);
	g_test_add_func("/listing/serialize/old-format", test_old_format);
	g_test_add_func("/listing/serialize/other-version", test_other_version);
	g_test_add_func("/listing/serialize/damage", test_damage);
	g_test_add_func("/listing/find", test_find);
	g_test_add_func("/listing/base", test_base);
	return g_test_run();
}
