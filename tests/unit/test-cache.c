/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The block cache against an in-memory message store standing in for the
 * fetch function (the cache's only way to the server). */
#include <string.h>

#include "imapfs/block-cache.h"
#include "imapfs/error.h"

#define BS IMAPFS_BLOCK_SIZE

typedef struct {
	GBytes *message; /* what the "server" holds */
	guint fetches;
	gboolean fail;
} Store;

static gboolean fake_fetch(gpointer data, const ImapfsMessageKey *key,
			   guint64 offset, gsize len, GByteArray *out,
			   GError **error)
{
	Store *st = data;
	gsize size;
	const guint8 *bytes = g_bytes_get_data(st->message, &size);

	st->fetches++;
	if (st->fail) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_TIMEOUT,
			    "no answer");
		return FALSE;
	}
	g_assert_cmpuint(out->len, ==, 0);
	if (offset < size)
		g_byte_array_append(out, bytes + offset,
				    MIN(len, size - offset));
	return TRUE;
}

static GBytes *pattern(gsize size)
{
	guint8 *p = g_malloc(size);

	for (gsize i = 0; i < size; i++)
		p[i] = (guint8)(i * 7 + i / 251);
	return g_bytes_new_take(p, size);
}

static const ImapfsMessageKey key = {"INBOX", 42, 7};

static void check_read(ImapfsBlockCache *cache, Store *st, guint64 off,
		       gsize len, gsize expect)
{
	g_autofree char *buf = g_malloc(len + 1);
	GError *error = NULL;
	gsize size;
	const guint8 *bytes = g_bytes_get_data(st->message, &size);
	gssize n = imapfs_block_cache_read(cache, &key, off, len, buf, &error);

	g_assert_no_error(error);
	g_assert_cmpint(n, ==, (gssize)expect);
	if (n > 0)
		g_assert_cmpmem(buf, n, bytes + off, n);
}

static void test_small(void)
{
	Store st = {pattern(1000)};
	g_autoptr(ImapfsBlockCache) c =
		imapfs_block_cache_new(4 * BS, fake_fetch, &st);

	check_read(c, &st, 0, 4096, 1000);
	check_read(c, &st, 10, 20, 20);
	check_read(c, &st, 990, 100, 10);
	check_read(c, &st, 1000, 100, 0);
	g_assert_cmpuint(st.fetches, ==, 1);
	g_bytes_unref(st.message);
}

static void test_across_blocks(void)
{
	Store st = {pattern(2 * BS + 123)};
	g_autoptr(ImapfsBlockCache) c =
		imapfs_block_cache_new(4 * BS, fake_fetch, &st);

	check_read(c, &st, BS - 10, 20, 20);
	g_assert_cmpuint(st.fetches, ==, 2);
	check_read(c, &st, 0, 3 * BS, 2 * BS + 123);
	g_assert_cmpuint(st.fetches, ==, 3);
	check_read(c, &st, 2 * BS + 123, 10, 0);
	g_assert_cmpuint(st.fetches, ==, 3);
	g_bytes_unref(st.message);
}

static guint64 true_size(ImapfsBlockCache *c, guint64 hint)
{
	GError *error = NULL;
	guint64 size = 0;

	g_assert_true(imapfs_block_cache_size(c, &key, hint, &size, &error));
	g_assert_no_error(error);
	return size;
}

static void test_size(void)
{
	static const struct {
		gsize actual;
		guint64 hint;
		guint max_fetches;
	} cases[] = {
		{1000, 1000, 1},	     /* honest, small: one fetch */
		{3 * BS + 5, 3 * BS + 5, 1}, /* honest, large: last block */
		{1000, 100, 1},		     /* understated within a block */
		{2 * BS + 9, 10, 3},	     /* understated by blocks */
		{500, 3 * BS, 2},	     /* overstated: rescan from 0 */
		{2 * BS, 2 * BS, 2},	     /* exact multiple of a block */
		{0, 0, 1},		     /* empty message */
		{0, 5000, 1},		     /* empty, RFC822.SIZE lies */
	};

	for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
		Store st = {pattern(cases[i].actual)};
		g_autoptr(ImapfsBlockCache) c =
			imapfs_block_cache_new(8 * BS, fake_fetch, &st);
		g_assert_cmpuint(true_size(c, cases[i].hint), ==,
				 cases[i].actual);
		g_assert_cmpuint(st.fetches, <=, cases[i].max_fetches);
		/* The block that told the size serves the next read. */
		guint before = st.fetches;
		gsize tail = MIN(cases[i].actual, 1);
		check_read(c, &st, cases[i].actual - tail, 10, tail);
		g_assert_cmpuint(st.fetches, ==, before);
		g_bytes_unref(st.message);
	}
}

static void test_evict(void)
{
	Store st = {pattern(3 * BS)};
	g_autoptr(ImapfsBlockCache) c =
		imapfs_block_cache_new(2 * BS, fake_fetch, &st);

	check_read(c, &st, 0, 1, 1);
	check_read(c, &st, BS, 1, 1);
	check_read(c, &st, 0, 1, 1); /* block 0 is now the most recent */
	g_assert_cmpuint(st.fetches, ==, 2);
	check_read(c, &st, 2 * BS, 1, 1); /* evicts block 1, not block 0 */
	check_read(c, &st, 0, 1, 1);
	g_assert_cmpuint(st.fetches, ==, 3);
	check_read(c, &st, BS, 1, 1);
	g_assert_cmpuint(st.fetches, ==, 4);
	g_bytes_unref(st.message);
}

static void test_no_cache(void)
{
	Store st = {pattern(100)};
	g_autoptr(ImapfsBlockCache) c =
		imapfs_block_cache_new(0, fake_fetch, &st);

	check_read(c, &st, 0, 100, 100);
	check_read(c, &st, 0, 100, 100);
	g_assert_cmpuint(st.fetches, ==, 2);
	g_bytes_unref(st.message);
}

static void test_error(void)
{
	Store st = {pattern(100), .fail = TRUE};
	g_autoptr(ImapfsBlockCache) c =
		imapfs_block_cache_new(4 * BS, fake_fetch, &st);
	g_autoptr(GError) error = NULL;
	char buf[10];

	g_assert_cmpint(imapfs_block_cache_read(c, &key, 0, 10, buf, &error),
			==, -1);
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_TIMEOUT);
	/* A failure is not cached: the next read asks again. */
	st.fail = FALSE;
	check_read(c, &st, 0, 10, 10);
	g_assert_cmpuint(st.fetches, ==, 2);
	g_bytes_unref(st.message);
}

static void test_keys(void)
{
	Store st = {pattern(100)};
	g_autoptr(ImapfsBlockCache) c =
		imapfs_block_cache_new(4 * BS, fake_fetch, &st);
	ImapfsMessageKey other_validity = {"INBOX", 43, 7};
	ImapfsMessageKey other_box = {"Archive", 42, 7};
	char buf[10];

	check_read(c, &st, 0, 10, 10);
	g_assert_cmpint(
		imapfs_block_cache_read(c, &other_validity, 0, 10, buf, NULL),
		==, 10);
	g_assert_cmpint(
		imapfs_block_cache_read(c, &other_box, 0, 10, buf, NULL), ==,
		10);
	g_assert_cmpuint(st.fetches, ==, 3);
	g_bytes_unref(st.message);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/cache/read/small", test_small);
	g_test_add_func("/cache/read/across-blocks", test_across_blocks);
	g_test_add_func("/cache/size/learnt", test_size);
	g_test_add_func("/cache/evict/lru", test_evict);
	g_test_add_func("/cache/none", test_no_cache);
	g_test_add_func("/cache/error/not-cached", test_error);
	g_test_add_func("/cache/key/distinct", test_keys);
	return g_test_run();
}
