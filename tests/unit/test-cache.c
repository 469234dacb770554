/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The block cache against an in-memory message store standing in for the
 * fetch function (the cache's only way to the server), with a real disk
 * cache in a fresh temporary directory as the persistent tier.
 *
 * Background work (prefetch, readahead) is waited for by bounded polls on
 * the cache's stats or on what the store was asked; "every reader waits
 * for the one fetch" is made a fact by a fetch that returns only once the
 * stats count that many waiting reads.
 */
#include <string.h>
#include <sys/stat.h>

#include <glib/gstdio.h>

#include "imapfs/block-cache.h"
#include "imapfs/disk-cache.h"
#include "imapfs/error.h"

#define BS IMAPFS_BLOCK_SIZE
#define ACCOUNT "alice@imap.example.org:993"
#define DISK_BYTES (64 * 1024 * 1024)
/* How long a poll for background work may take before the test fails. */
#define PATIENCE_US (5 * G_USEC_PER_SEC)
#define ALWAYS G_MAXUINT

/* One window the cache asked the "server" for. */
typedef struct {
	guint32 uid;
	guint64 offset;
	gsize len;
} Asked;

/* What the "server" holds, and what it was asked. */
typedef struct {
	GHashTable *messages; /* uid -> GBytes; not changed while fetching */
	/* uid -> GBytes: the decoded content of part "2" of that message,
	 * sent base64-encoded for BODY[2], as it is for BINARY[2]. */
	GHashTable *parts;
	GMutex lock;
	guint calls;	  /* protected by lock */
	GArray *batches;  /* guint: windows per call; protected by lock */
	GArray *asked;	  /* Asked; protected by lock */
	guint fail_calls; /* the next calls that fail; protected by lock */
	gulong delay_us;  /* protected by lock */
	/* A fetch returns only once this many reads wait for a fetch (0: at
	 * once); polls the stats of cache. Protected by lock. */
	guint64 hold_for_waits;
	ImapfsBlockCache *cache;
} Store;

typedef struct {
	Store st;
	char *tmp;	       /* a temporary directory */
	char *dir;	       /* the disk cache's directory, inside tmp */
	ImapfsDiskCache *disk; /* NULL unless the test opens it */
	ImapfsBlockCache *cache;
} Fixture;

/* --- helpers --- */

#define STAT(field) G_STRUCT_OFFSET(ImapfsBlockCacheStats, field)

static ImapfsBlockCacheStats stats(ImapfsBlockCache *cache)
{
	ImapfsBlockCacheStats s;

	imapfs_block_cache_get_stats(cache, &s);
	return s;
}

/* Waits (bounded) until the stats field at @offset reaches @n. */
static void wait_stat(ImapfsBlockCache *cache, glong offset, guint64 n)
{
	gint64 deadline = g_get_monotonic_time() + PATIENCE_US;

	for (;;) {
		ImapfsBlockCacheStats s = stats(cache);
		if (G_STRUCT_MEMBER(guint64, &s, offset) >= n)
			return;
		g_assert_cmpint(g_get_monotonic_time(), <, deadline);
		g_usleep(1000);
	}
}

static GBytes *pattern(gsize size, guint32 seed)
{
	guint8 *p = g_malloc(size ? size : 1);

	for (gsize i = 0; i < size; i++)
		p[i] = (guint8)(i * 7 + i / 251 + seed * 13);
	return g_bytes_new_take(p, size);
}

static ImapfsMessageKey inbox(guint32 uid)
{
	ImapfsMessageKey key = {"INBOX", 42, uid};

	return key;
}

/* @data in base64, in lines of 76 characters ending in CRLF. */
static GBytes *base64_lines(GBytes *data)
{
	gsize len;
	const guint8 *p = g_bytes_get_data(data, &len);
	g_autofree char *b64 = g_base64_encode(p, len);
	GString *out = g_string_new(NULL);

	for (gsize i = 0; b64[i]; i += MIN(76, strlen(b64 + i))) {
		g_string_append_len(out, b64 + i, MIN(76, strlen(b64 + i)));
		g_string_append(out, "\r\n");
	}
	return g_string_free_to_bytes(out);
}

/* A server answers one window: the bytes that exist, found for a known
 * UID. The cache must send distinct UIDs and fresh windows. */
static void serve_window(Store *st, ImapfsBodyWindow *w, guint i)
{
	for (guint j = 0; j < i; j++)
		g_assert_cmpuint(w[j].uid, !=, w[i].uid);
	g_assert_cmpuint(w[i].out->len, ==, 0);
	g_assert_false(w[i].found);

	g_autoptr(GBytes) encoded = NULL;
	GBytes *msg =
		g_hash_table_lookup(w[i].section ? st->parts : st->messages,
				    GUINT_TO_POINTER(w[i].uid));
	if (msg == NULL)
		return; /* expunged: found stays FALSE */
	if (w[i].section) {
		g_assert_cmpstr(w[i].section, ==, "2");
		if (!w[i].binary)
			msg = encoded = base64_lines(msg);
	}
	gsize size;
	const guint8 *bytes = g_bytes_get_data(msg, &size);
	if (w[i].len == IMAPFS_BODY_ALL) {
		g_assert_cmpuint(w[i].offset, ==, 0);
		g_assert_false(w[i].binary);
	}
	if (w[i].offset < size)
		g_byte_array_append(w[i].out, bytes + w[i].offset,
				    MIN(w[i].len, size - w[i].offset));
	w[i].found = TRUE;
}

static gboolean fake_fetch(gpointer data, const char *mailbox,
			   guint32 uidvalidity, ImapfsBodyWindow *w, guint n,
			   ImapfsBodyDoneFunc done, gpointer done_data,
			   GError **error)
{
	Store *st = data;

	g_assert_nonnull(mailbox);
	g_assert_cmpuint(uidvalidity, !=, 0);
	g_assert_cmpuint(n, >, 0);
	g_mutex_lock(&st->lock);
	st->calls++;
	g_array_append_val(st->batches, n);
	for (guint i = 0; i < n; i++) {
		Asked a = {w[i].uid, w[i].offset, w[i].len};
		g_array_append_val(st->asked, a);
	}
	gboolean fail = st->fail_calls > 0;
	if (fail && st->fail_calls != ALWAYS)
		st->fail_calls--;
	gulong delay = st->delay_us;
	guint64 hold = st->hold_for_waits;
	g_mutex_unlock(&st->lock);

	if (delay)
		g_usleep(delay);
	if (hold)
		wait_stat(st->cache, STAT(waits), hold);
	if (fail) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_TIMEOUT,
			    "no answer");
		return FALSE;
	}
	/* Like the session: each window is announced as it comes. */
	for (guint i = 0; i < n; i++) {
		serve_window(st, w, i);
		if (done)
			done(&w[i], done_data);
	}
	return TRUE;
}

static guint calls(Fixture *f)
{
	g_mutex_lock(&f->st.lock);
	guint n = f->st.calls;
	g_mutex_unlock(&f->st.lock);
	return n;
}

/* The next @fail_calls fetches fail (ALWAYS: all), and each fetch returns
 * only once @hold_for_waits reads wait for one. */
static void set_fail(Fixture *f, guint fail_calls, guint64 hold_for_waits)
{
	g_mutex_lock(&f->st.lock);
	f->st.fail_calls = fail_calls;
	f->st.hold_for_waits = hold_for_waits;
	g_mutex_unlock(&f->st.lock);
}

static void set_delay(Fixture *f, gulong delay_us)
{
	g_mutex_lock(&f->st.lock);
	f->st.delay_us = delay_us;
	g_mutex_unlock(&f->st.lock);
}

/* How many windows asked for so far cover block @index of @uid. */
static guint times_asked(Fixture *f, guint32 uid, guint64 index)
{
	guint n = 0;

	g_mutex_lock(&f->st.lock);
	for (guint i = 0; i < f->st.asked->len; i++) {
		Asked *a = &g_array_index(f->st.asked, Asked, i);
		if (a->uid == uid && a->offset <= index * BS &&
		    index * BS < a->offset + a->len)
			n++;
	}
	g_mutex_unlock(&f->st.lock);
	return n;
}

static void wait_asked(Fixture *f, guint32 uid, guint64 index)
{
	gint64 deadline = g_get_monotonic_time() + PATIENCE_US;

	while (times_asked(f, uid, index) == 0) {
		g_assert_cmpint(g_get_monotonic_time(), <, deadline);
		g_usleep(1000);
	}
}

static GBytes *add_message(Fixture *f, guint32 uid, gsize size)
{
	GBytes *msg = pattern(size, uid);

	g_hash_table_replace(f->st.messages, GUINT_TO_POINTER(uid), msg);
	return msg;
}

static GBytes *message(Fixture *f, guint32 uid)
{
	GBytes *msg =
		g_hash_table_lookup(f->st.messages, GUINT_TO_POINTER(uid));

	g_assert_nonnull(msg);
	return msg;
}

/* Replaces the block cache (its memory tier) by a new one over f->disk. */
static ImapfsBlockCache *new_cache(Fixture *f, guint64 max_bytes)
{
	g_clear_pointer(&f->cache, imapfs_block_cache_free);
	f->cache =
		imapfs_block_cache_new(max_bytes, f->disk, fake_fetch, &f->st);
	f->st.cache = f->cache;
	return f->cache;
}

/* (Re)opens the disk cache; call with no block cache using it. */
static void open_disk(Fixture *f)
{
	GError *error = NULL;

	g_assert_null(f->cache);
	g_clear_pointer(&f->disk, imapfs_disk_cache_close);
	f->disk = imapfs_disk_cache_open(f->dir, ACCOUNT, DISK_BYTES, &error);
	g_assert_no_error(error);
	g_assert_nonnull(f->disk);
}

/* Reads through @ra and checks the bytes against the store; returns the
 * count. */
static gssize read_ra(Fixture *f, const ImapfsMessageKey *key, guint64 off,
		      gsize len, ImapfsReadahead *ra)
{
	g_autofree char *buf = g_malloc(len + 1);
	GError *error = NULL;
	gsize size;
	const guint8 *bytes = g_bytes_get_data(message(f, key->uid), &size);
	gssize n = imapfs_block_cache_read(f->cache, key, off, len, buf, ra,
					   &error);

	g_assert_no_error(error);
	g_assert_cmpint(n, ==, off < size ? (gssize)MIN(len, size - off) : 0);
	if (n > 0)
		g_assert_cmpmem(buf, n, bytes + off, n);
	return n;
}

static void check_read(Fixture *f, const ImapfsMessageKey *key, guint64 off,
		       gsize len, gsize expect)
{
	g_assert_cmpint(read_ra(f, key, off, len, NULL), ==, (gssize)expect);
}

/* Reads all of message @uid through the cache (no readahead). */
static void read_all(Fixture *f, guint32 uid)
{
	ImapfsMessageKey key = inbox(uid);
	gsize size = g_bytes_get_size(message(f, uid));

	check_read(f, &key, 0, size + 1, size);
}

static void expect_read_error(Fixture *f, const ImapfsMessageKey *key,
			      guint64 off, gsize len, gint code)
{
	g_autofree char *buf = g_malloc(len);
	g_autoptr(GError) error = NULL;

	g_assert_cmpint(imapfs_block_cache_read(f->cache, key, off, len, buf,
						NULL, &error),
			==, -1);
	g_assert_error(error, IMAPFS_ERROR, code);
}

static void rm_rf(const char *path)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		return;
	if (S_ISDIR(st.st_mode)) {
		g_autoptr(GDir) d = g_dir_open(path, 0, NULL);
		const char *name;
		while (d && (name = g_dir_read_name(d))) {
			g_autofree char *child =
				g_build_filename(path, name, NULL);
			rm_rf(child);
		}
		g_rmdir(path);
	} else {
		g_unlink(path);
	}
}

static void list_files(const char *dir, GPtrArray *out)
{
	g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
	const char *name;

	while (d && (name = g_dir_read_name(d))) {
		char *path = g_build_filename(dir, name, NULL);
		if (g_file_test(path, G_FILE_TEST_IS_DIR)) {
			list_files(path, out);
			g_free(path);
		} else {
			g_ptr_array_add(out, path);
		}
	}
}

static void flip_byte(const char *path, gsize offset)
{
	g_autofree char *text = NULL;
	gsize len;

	g_assert_true(g_file_get_contents(path, &text, &len, NULL));
	g_assert_cmpuint(offset, <, len);
	text[offset] ^= 0x20;
	g_assert_true(g_file_set_contents(path, text, len, NULL));
}

static void setup(Fixture *f, gconstpointer data)
{
	GError *error = NULL;

	f->st.messages = g_hash_table_new_full(NULL, NULL, NULL,
					       (GDestroyNotify)g_bytes_unref);
	f->st.parts = g_hash_table_new_full(NULL, NULL, NULL,
					    (GDestroyNotify)g_bytes_unref);
	g_mutex_init(&f->st.lock);
	f->st.batches = g_array_new(FALSE, FALSE, sizeof(guint));
	f->st.asked = g_array_new(FALSE, FALSE, sizeof(Asked));
	f->tmp = g_dir_make_tmp("imapfs-cache-XXXXXX", &error);
	g_assert_no_error(error);
	f->dir = g_build_filename(f->tmp, "cache", NULL);
}

static void teardown(Fixture *f, gconstpointer data)
{
	g_clear_pointer(&f->cache, imapfs_block_cache_free);
	g_clear_pointer(&f->disk, imapfs_disk_cache_close);
	rm_rf(f->tmp);
	g_free(f->tmp);
	g_free(f->dir);
	g_hash_table_unref(f->st.messages);
	g_hash_table_unref(f->st.parts);
	g_array_unref(f->st.batches);
	g_array_unref(f->st.asked);
	g_mutex_clear(&f->st.lock);
}

/* --- reading --- */

static void test_small(Fixture *f, gconstpointer data)
{
	ImapfsMessageKey key = inbox(7);

	add_message(f, 7, 1000);
	new_cache(f, 4 * BS);
	check_read(f, &key, 0, 4096, 1000);
	check_read(f, &key, 10, 20, 20);
	check_read(f, &key, 990, 100, 10);
	check_read(f, &key, 1000, 100, 0);
	check_read(f, &key, 5000, 100, 0);
	g_assert_cmpuint(calls(f), ==, 1);
}

static void test_across_blocks(Fixture *f, gconstpointer data)
{
	ImapfsMessageKey key = inbox(7);

	add_message(f, 7, 2 * BS + 123);
	new_cache(f, 4 * BS);
	check_read(f, &key, BS - 10, 20, 20);
	g_assert_cmpuint(calls(f), ==, 2);
	check_read(f, &key, 0, 3 * BS, 2 * BS + 123);
	g_assert_cmpuint(calls(f), ==, 3);
	check_read(f, &key, 2 * BS + 123, 10, 0);
	g_assert_cmpuint(calls(f), ==, 3);
	/* The cache asks for whole blocks, one window a call. */
	for (guint i = 0; i < f->st.asked->len; i++) {
		Asked *a = &g_array_index(f->st.asked, Asked, i);
		g_assert_cmpuint(a->offset % BS, ==, 0);
		g_assert_cmpuint(a->len, ==, BS);
		g_assert_cmpuint(g_array_index(f->st.batches, guint, i), ==, 1);
	}
}

/* Messages do not bleed into each other. */
static void test_messages(Fixture *f, gconstpointer data)
{
	static const gsize sizes[] = {10, BS, BS + 1, 3 * BS - 1};

	for (guint i = 0; i < G_N_ELEMENTS(sizes); i++)
		add_message(f, i + 1, sizes[i]);
	new_cache(f, 16 * BS);
	for (guint round = 0; round < 2; round++) {
		for (guint i = 0; i < G_N_ELEMENTS(sizes); i++) {
			ImapfsMessageKey key = inbox(i + 1);
			check_read(f, &key, 0, 3 * BS, sizes[i]);
			check_read(f, &key, sizes[i] - 1, 5, 1);
		}
	}
	/* 1 + 2 + 2 + 3 blocks, fetched once each: a message of exactly
	 * one block ends with the empty block after it. */
	g_assert_cmpuint(calls(f), ==, 8);
}

/* --- size learning --- */

static guint64 true_size(Fixture *f, const ImapfsMessageKey *key, guint64 hint)
{
	GError *error = NULL;
	guint64 size = 0;

	g_assert_true(
		imapfs_block_cache_size(f->cache, key, hint, &size, &error));
	g_assert_no_error(error);
	return size;
}

static void test_size(Fixture *f, gconstpointer data)
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
		{BS + 10, 3 * BS, 3},	     /* overstated, several blocks */
		{2 * BS, 2 * BS, 2},	     /* exact multiple of a block */
		{0, 0, 1},		     /* empty message */
		{0, 5000, 1},		     /* empty, RFC822.SIZE lies */
	};

	for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
		guint32 uid = i + 1;
		ImapfsMessageKey key = inbox(uid);
		gsize actual = cases[i].actual;

		add_message(f, uid, actual);
		new_cache(f, 8 * BS);
		guint before = calls(f);
		g_assert_cmpuint(true_size(f, &key, cases[i].hint), ==, actual);
		g_assert_cmpuint(calls(f) - before, <=, cases[i].max_fetches);
		/* The block that told the size serves the next read. */
		before = calls(f);
		gsize tail = MIN(actual, 1);
		check_read(f, &key, actual - tail, 10, tail);
		g_assert_cmpuint(calls(f), ==, before);
	}
}

/* --- memory tier --- */

static void test_evict(Fixture *f, gconstpointer data)
{
	ImapfsMessageKey key = inbox(7);

	add_message(f, 7, 3 * BS);
	new_cache(f, 2 * BS);
	check_read(f, &key, 0, 1, 1);
	check_read(f, &key, BS, 1, 1);
	check_read(f, &key, 0, 1, 1); /* block 0 is now the most recent */
	g_assert_cmpuint(calls(f), ==, 2);
	check_read(f, &key, 2 * BS, 1, 1); /* evicts block 1, not block 0 */
	check_read(f, &key, 0, 1, 1);
	g_assert_cmpuint(calls(f), ==, 3);
	check_read(f, &key, BS, 1, 1);
	g_assert_cmpuint(calls(f), ==, 4);
}

static void test_no_cache(Fixture *f, gconstpointer data)
{
	ImapfsMessageKey key = inbox(7);

	add_message(f, 7, 100);
	new_cache(f, 0);
	check_read(f, &key, 0, 100, 100);
	check_read(f, &key, 0, 100, 100);
	g_assert_cmpuint(calls(f), ==, 2);
	g_assert_cmpuint(stats(f->cache).memory_hits, ==, 0);
}

static void test_stats_memory(Fixture *f, gconstpointer data)
{
	ImapfsMessageKey key = inbox(7);

	add_message(f, 7, BS + 100);
	new_cache(f, 4 * BS);
	check_read(f, &key, 0, 10, 10);
	ImapfsBlockCacheStats s = stats(f->cache);
	g_assert_cmpuint(s.memory_hits, ==, 0);
	g_assert_cmpuint(s.fetched_blocks, ==, 1);

	check_read(f, &key, 20, 10, 10);
	s = stats(f->cache);
	g_assert_cmpuint(s.memory_hits, ==, 1);
	g_assert_cmpuint(s.fetched_blocks, ==, 1);

	check_read(f, &key, BS - 5, 10, 10); /* a hit and a miss */
	s = stats(f->cache);
	g_assert_cmpuint(s.memory_hits, ==, 2);
	g_assert_cmpuint(s.fetched_blocks, ==, 2);

	check_read(f, &key, 0, 2 * BS, BS + 100); /* two hits */
	s = stats(f->cache);
	g_assert_cmpuint(s.memory_hits, ==, 4);
	g_assert_cmpuint(s.fetched_blocks, ==, 2);
	g_assert_cmpuint(s.disk_hits, ==, 0);
	g_assert_cmpuint(s.prefetched_blocks, ==, 0);
	g_assert_cmpuint(s.waits, ==, 0);
	g_assert_cmpuint(calls(f), ==, 2);
}

/* --- errors --- */

static void test_error(Fixture *f, gconstpointer data)
{
	ImapfsMessageKey key = inbox(7);

	add_message(f, 7, 100);
	new_cache(f, 4 * BS);
	set_fail(f, ALWAYS, 0);
	expect_read_error(f, &key, 0, 10, IMAPFS_ERROR_TIMEOUT);
	/* A failure is not cached: the next read asks again. */
	set_fail(f, 0, 0);
	check_read(f, &key, 0, 10, 10);
	g_assert_cmpuint(calls(f), ==, 2);
}

/* A read whose first block is cached and whose second fails is a failure,
 * not a short count (the kernel would take that for the end of file). */
static void test_error_no_short_count(Fixture *f, gconstpointer data)
{
	ImapfsMessageKey key = inbox(7);

	add_message(f, 7, 2 * BS + 10);
	new_cache(f, 4 * BS);
	check_read(f, &key, 0, 10, 10);
	set_fail(f, ALWAYS, 0);
	expect_read_error(f, &key, BS - 10, 20, IMAPFS_ERROR_TIMEOUT);
	expect_read_error(f, &key, 0, 2 * BS, IMAPFS_ERROR_TIMEOUT);

	g_autoptr(GError) error = NULL;
	guint64 size = 0;
	g_assert_false(imapfs_block_cache_size(f->cache, &key, 2 * BS + 10,
					       &size, &error));
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_TIMEOUT);
}

static void test_error_expunged(Fixture *f, gconstpointer data)
{
	ImapfsMessageKey gone = inbox(99);
	g_autoptr(GError) error = NULL;
	guint64 size = 0;

	add_message(f, 7, 100);
	new_cache(f, 4 * BS);
	expect_read_error(f, &gone, 0, 10, IMAPFS_ERROR_NONEXISTENT);
	g_assert_false(
		imapfs_block_cache_size(f->cache, &gone, 100, &size, &error));
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_NONEXISTENT);
	read_all(f, 7);
}

/* --- keys --- */

/* Another UIDVALIDITY or mailbox is another message, in memory and on
 * disk. */
static void test_keys(Fixture *f, gconstpointer data)
{
	ImapfsMessageKey key = inbox(7);
	ImapfsMessageKey other_validity = {"INBOX", 43, 7};
	ImapfsMessageKey other_box = {"Archive", 42, 7};

	add_message(f, 7, 100);
	if (data)
		open_disk(f);
	new_cache(f, 4 * BS);
	check_read(f, &key, 0, 10, 10);
	check_read(f, &other_validity, 0, 10, 10);
	check_read(f, &other_box, 0, 10, 10);
	g_assert_cmpuint(calls(f), ==, 3);
	check_read(f, &key, 0, 10, 10);
	check_read(f, &other_validity, 0, 10, 10);
	check_read(f, &other_box, 0, 10, 10);
	g_assert_cmpuint(calls(f), ==, 3);
	g_assert_cmpuint(stats(f->cache).memory_hits, ==, 3);
	if (data) {
		ImapfsMessageKey third = {"INBOX", 44, 7};
		new_cache(f, 4 * BS);
		check_read(f, &third, 0, 10, 10);
		g_assert_cmpuint(calls(f), ==, 4);
		g_assert_cmpuint(stats(f->cache).disk_hits, ==, 0);
	}
}

/* --- disk tier --- */

static void test_disk_survives(Fixture *f, gconstpointer data)
{
	ImapfsMessageKey key = inbox(7);

	add_message(f, 7, BS + 100);
	open_disk(f);
	new_cache(f, 4 * BS);
	read_all(f, 7);
	g_assert_cmpuint(calls(f), ==, 2);

	/* New memory, same disk. */
	new_cache(f, 4 * BS);
	read_all(f, 7);
	g_assert_cmpuint(calls(f), ==, 2);
	ImapfsBlockCacheStats s = stats(f->cache);
	g_assert_cmpuint(s.disk_hits, ==, 2);
	g_assert_cmpuint(s.fetched_blocks, ==, 0);
	g_assert_cmpuint(s.memory_hits, ==, 0);
	check_read(f, &key, BS - 5, 10, 10); /* now from memory */
	g_assert_cmpuint(stats(f->cache).memory_hits, ==, 2);

	/* A remount: the disk cache closed and opened again. */
	g_clear_pointer(&f->cache, imapfs_block_cache_free);
	open_disk(f);
	new_cache(f, 4 * BS);
	read_all(f, 7);
	g_assert_cmpuint(calls(f), ==, 2);
	g_assert_cmpuint(stats(f->cache).disk_hits, ==, 2);

	/* Disk without memory still spares the server. */
	new_cache(f, 0);
	read_all(f, 7);
	read_all(f, 7);
	g_assert_cmpuint(calls(f), ==, 2);
}

/* --- parts --- */

/* Declared (encoded) size: enough for every part these tests make. */
#define PART_DECLARED (4 * BS)

static ImapfsMessageKey part_key(guint32 uid, gboolean binary)
{
	ImapfsMessageKey key = {"INBOX", 42,	 uid,
				"2",	 binary, binary ? NULL : "BASE64"};

	key.encoded_size = PART_DECLARED;
	return key;
}

/* Reads all of @key in reads of @step bytes; checks it against @want. */
static void check_part(Fixture *f, const ImapfsMessageKey *key, GBytes *want,
		       gsize step)
{
	gsize len;
	const guint8 *p = g_bytes_get_data(want, &len);
	g_autofree char *buf = g_malloc(step);
	guint64 off = 0;
	GError *error = NULL;
	gssize n;

	while ((n = imapfs_block_cache_read(f->cache, key, off, step, buf, NULL,
					    &error)) > 0) {
		g_assert_cmpuint(off + n, <=, len);
		g_assert_cmpmem(buf, n, p + off, n);
		off += n;
	}
	g_assert_no_error(error);
	g_assert_cmpuint(off, ==, len);
}

/* Without BINARY: one fetch of the whole encoded part, decoded into every
 * block; the size is the decoded size, never the encoded one. */
static void test_part_decoded(Fixture *f, gconstpointer data)
{
	GBytes *content = pattern(2 * BS + 1000, 3);
	ImapfsMessageKey key = part_key(5, FALSE);
	guint64 size = 0;
	GError *error = NULL;

	g_hash_table_replace(f->st.parts, GUINT_TO_POINTER(5), content);
	add_message(f, 5, 100);
	new_cache(f, 16 * BS);
	g_assert_true(
		imapfs_block_cache_size(f->cache, &key, 0, &size, &error));
	g_assert_no_error(error);
	g_assert_cmpuint(size, ==, g_bytes_get_size(content));
	g_assert_cmpuint(calls(f), ==, 1);
	check_part(f, &key, content, 100000);
	g_assert_cmpuint(calls(f), ==, 1);
	/* The message itself is another key. */
	read_all(f, 5);
	g_assert_cmpuint(calls(f), ==, 2);
}

/* A part far longer than BODYSTRUCTURE said fails rather than being
 * held whole; one a little longer (line ends counted otherwise) reads. */
static void test_part_larger_than_said(Fixture *f, gconstpointer data)
{
	GBytes *content = pattern(2 * BS, 3);
	ImapfsMessageKey key = part_key(5, FALSE);

	g_hash_table_replace(f->st.parts, GUINT_TO_POINTER(5), content);
	new_cache(f, 16 * BS);
	key.encoded_size = 1000;
	expect_read_error(f, &key, 0, 10, IMAPFS_ERROR_PROTOCOL);
	key.encoded_size = 2 * BS * 4 / 3;
	check_part(f, &key, content, 100000);
}

/* With BINARY: block by block, BINARY.PEEK[2]<offset.len>. */
static void test_part_binary(Fixture *f, gconstpointer data)
{
	GBytes *content = pattern(BS + 10, 4);
	ImapfsMessageKey key = part_key(6, TRUE);

	g_hash_table_replace(f->st.parts, GUINT_TO_POINTER(6), content);
	new_cache(f, 16 * BS);
	check_part(f, &key, content, 65536);
	g_assert_cmpuint(calls(f), ==, 2);
	g_assert_cmpuint(times_asked(f, 6, 0), ==, 1);
	g_assert_cmpuint(times_asked(f, 6, 1), ==, 1);
}

/* Decoded parts reach the disk cache too, under their own key. */
static void test_part_disk(Fixture *f, gconstpointer data)
{
	GBytes *content = pattern(BS + 77, 5);
	ImapfsMessageKey key = part_key(7, FALSE);

	g_hash_table_replace(f->st.parts, GUINT_TO_POINTER(7), content);
	add_message(f, 7, BS + 5);
	open_disk(f);
	new_cache(f, 16 * BS);
	check_part(f, &key, content, 4096);
	read_all(f, 7);
	g_assert_cmpuint(calls(f), ==, 3);
	imapfs_block_cache_sync(f->cache);
	new_cache(f, 16 * BS);
	check_part(f, &key, content, 4096);
	read_all(f, 7);
	g_assert_cmpuint(calls(f), ==, 3);
}

static void test_disk_corrupt(Fixture *f, gconstpointer data)
{
	g_autoptr(GPtrArray) files = g_ptr_array_new_with_free_func(g_free);
	g_autofree char *blocks = NULL;

	add_message(f, 7, 1000);
	open_disk(f);
	new_cache(f, 4 * BS);
	read_all(f, 7);
	g_assert_cmpuint(calls(f), ==, 1);

	/* Blocks reach the disk on a thread of their own. */
	imapfs_block_cache_sync(f->cache);
	blocks = g_build_filename(f->dir, "segments", NULL);
	list_files(blocks, files);
	g_assert_cmpuint(files->len, ==, 1);
	flip_byte(files->pdata[0], 500);

	new_cache(f, 4 * BS);
	g_test_expect_message("imapfs", G_LOG_LEVEL_WARNING, "*damaged*");
	read_all(f, 7); /* checks the bytes */
	g_test_assert_expected_messages();
	g_assert_cmpuint(calls(f), ==, 2);
	ImapfsBlockCacheStats s = stats(f->cache);
	g_assert_cmpuint(s.disk_hits, ==, 0);
	g_assert_cmpuint(s.fetched_blocks, ==, 1);

	/* The refetched block went back to disk, sound. */
	new_cache(f, 4 * BS);
	read_all(f, 7);
	g_assert_cmpuint(calls(f), ==, 2);
	g_assert_cmpuint(stats(f->cache).disk_hits, ==, 1);
}

/* Prefetch takes what the disk has without asking the server. */
static void test_disk_prefetch(Fixture *f, gconstpointer data)
{
	ImapfsPrefetchItem items[3];

	open_disk(f);
	new_cache(f, 16 * BS);
	for (guint i = 0; i < G_N_ELEMENTS(items); i++) {
		items[i] = (ImapfsPrefetchItem){i + 1, 1000 * (i + 1)};
		add_message(f, i + 1, items[i].size);
		read_all(f, i + 1);
	}
	g_assert_cmpuint(calls(f), ==, 3);

	new_cache(f, 16 * BS);
	imapfs_block_cache_start_prefetch(f->cache, 2, 16 * BS);
	g_assert_cmpuint(
		imapfs_block_cache_prefetch(f->cache, "INBOX", 42, items, 3),
		==, 3);
	wait_stat(f->cache, STAT(disk_hits), 3);
	for (guint i = 0; i < G_N_ELEMENTS(items); i++)
		read_all(f, i + 1);
	ImapfsBlockCacheStats s = stats(f->cache);
	g_assert_cmpuint(s.memory_hits, ==, 3);
	g_assert_cmpuint(s.disk_hits, ==, 3);
	g_assert_cmpuint(s.fetched_blocks, ==, 0);
	g_assert_cmpuint(calls(f), ==, 3);
}

/* --- UIDVALIDITY drop --- */

static void test_drop(Fixture *f, gconstpointer data)
{
	ImapfsMessageKey old = {"INBOX", 41, 1};
	ImapfsMessageKey older = {"INBOX", 40, 2};
	ImapfsMessageKey kept = {"INBOX", 42, 1};
	ImapfsMessageKey elsewhere = {"Archive", 41, 1};

	add_message(f, 1, 1000);
	add_message(f, 2, BS + 5);
	open_disk(f);
	new_cache(f, 16 * BS);
	check_read(f, &old, 0, 10, 10);
	check_read(f, &older, BS, 10, 5);
	check_read(f, &kept, 0, 10, 10);
	check_read(f, &elsewhere, 0, 10, 10);
	g_assert_cmpuint(calls(f), ==, 4);

	imapfs_block_cache_drop_mailbox(f->cache, "INBOX", 42);
	check_read(f, &kept, 0, 10, 10);
	check_read(f, &elsewhere, 0, 10, 10);
	g_assert_cmpuint(calls(f), ==, 4);
	g_assert_cmpuint(stats(f->cache).memory_hits, ==, 2);
	/* Gone from memory and disk: fetched again. */
	check_read(f, &old, 0, 10, 10);
	check_read(f, &older, BS, 10, 5);
	g_assert_cmpuint(calls(f), ==, 6);
	g_assert_cmpuint(stats(f->cache).disk_hits, ==, 0);

	/* What was kept is still on disk. */
	new_cache(f, 16 * BS);
	check_read(f, &kept, 0, 10, 10);
	check_read(f, &elsewhere, 0, 10, 10);
	g_assert_cmpuint(calls(f), ==, 6);
	g_assert_cmpuint(stats(f->cache).disk_hits, ==, 2);

	/* 0 keeps nothing. */
	imapfs_block_cache_drop_mailbox(f->cache, "Archive", 0);
	check_read(f, &elsewhere, 0, 10, 10);
	check_read(f, &kept, 0, 10, 10);
	g_assert_cmpuint(calls(f), ==, 7);
}

/* --- concurrency --- */

#define READERS 8

typedef struct {
	Fixture *f;
	ImapfsMessageKey key;
	guint64 offset;
	gsize len;
	gssize n;
	char *buf;
	GError *error;
} Reader;

static gpointer reader_thread(gpointer data)
{
	Reader *r = data;

	r->buf = g_malloc(r->len);
	r->n = imapfs_block_cache_read(r->f->cache, &r->key, r->offset, r->len,
				       r->buf, NULL, &r->error);
	return NULL;
}

/* @n readers of the same bytes at once; joins them. */
static void run_readers(Fixture *f, Reader *r, guint n, guint64 offset,
			gsize len)
{
	GThread *threads[READERS];

	g_assert_cmpuint(n, <=, READERS);
	for (guint i = 0; i < n; i++) {
		r[i] = (Reader){f, inbox(7), offset, len, 0, NULL, NULL};
		threads[i] = g_thread_new("reader", reader_thread, &r[i]);
	}
	for (guint i = 0; i < n; i++)
		g_thread_join(threads[i]);
}

static void test_concurrent_one_fetch(Fixture *f, gconstpointer data)
{
	Reader r[READERS];
	const guint8 *bytes = g_bytes_get_data(add_message(f, 7, BS + 9), NULL);

	new_cache(f, 4 * BS);
	/* Rather than a slow fetch and hope: the fetch ends once the stats
	 * count every other reader waiting for it. */
	set_fail(f, 0, READERS - 1);
	run_readers(f, r, READERS, 100, 1000);
	for (guint i = 0; i < READERS; i++) {
		g_assert_no_error(r[i].error);
		g_assert_cmpint(r[i].n, ==, 1000);
		g_assert_cmpmem(r[i].buf, 1000, bytes + 100, 1000);
		g_free(r[i].buf);
	}
	g_assert_cmpuint(calls(f), ==, 1);
	ImapfsBlockCacheStats s = stats(f->cache);
	g_assert_cmpuint(s.fetched_blocks, ==, 1);
	g_assert_cmpuint(s.waits, ==, READERS - 1);
}

static void test_concurrent_error(Fixture *f, gconstpointer data)
{
	Reader r[READERS];

	add_message(f, 7, 1000);
	new_cache(f, 4 * BS);
	set_fail(f, ALWAYS, READERS - 1);
	run_readers(f, r, READERS, 0, 100);
	for (guint i = 0; i < READERS; i++) {
		g_assert_cmpint(r[i].n, ==, -1);
		g_assert_error(r[i].error, IMAPFS_ERROR, IMAPFS_ERROR_TIMEOUT);
		g_clear_error(&r[i].error);
		g_free(r[i].buf);
	}
	g_assert_cmpuint(calls(f), ==, 1);
	g_assert_cmpuint(stats(f->cache).waits, ==, READERS - 1);
	/* Not cached: the next read succeeds. */
	set_fail(f, 0, 0);
	read_all(f, 7);
	g_assert_cmpuint(calls(f), ==, 2);
}

#define MIXED_MESSAGES 5

typedef struct {
	Fixture *f;
	guint seed;
} Mixer;

/* Reads one message sequentially with readahead, then jumps around. */
static gpointer mixer_thread(gpointer data)
{
	Mixer *m = data;
	g_autoptr(GRand) rand = g_rand_new_with_seed(m->seed);
	guint32 uid = m->seed % MIXED_MESSAGES + 1;
	ImapfsMessageKey key = inbox(uid);
	ImapfsReadahead ra = {0};
	gsize size = g_bytes_get_size(message(m->f, uid));

	for (guint64 off = 0; off < size; off += 100 * 1000)
		read_ra(m->f, &key, off, 100 * 1000, &ra);
	for (guint i = 0; i < 100; i++) {
		key.uid = g_rand_int_range(rand, 1, MIXED_MESSAGES + 1);
		size = g_bytes_get_size(message(m->f, key.uid));
		guint64 off = g_rand_int_range(rand, 0, size + 1);
		gsize len = g_rand_int_range(rand, 1, BS + 2);
		read_ra(m->f, &key, off, len, NULL);
	}
	return NULL;
}

/* Readers, readahead, prefetch and eviction at once: the bytes are right
 * (and ASan/UBSan see no misuse). */
static void test_concurrent_mixed(Fixture *f, gconstpointer data)
{
	ImapfsPrefetchItem items[MIXED_MESSAGES];
	GThread *threads[READERS];
	Mixer mixers[READERS];

	for (guint i = 0; i < MIXED_MESSAGES; i++) {
		gsize size = (i * 7919 * 97) % (3 * BS) + i;
		add_message(f, i + 1, size);
		items[i] = (ImapfsPrefetchItem){i + 1, size};
	}
	new_cache(f, 3 * BS);
	imapfs_block_cache_start_prefetch(f->cache, 2, 4 * BS);
	imapfs_block_cache_prefetch(f->cache, "INBOX", 42, items,
				    MIXED_MESSAGES);
	for (guint i = 0; i < READERS; i++) {
		mixers[i] = (Mixer){f, i};
		threads[i] = g_thread_new("mixer", mixer_thread, &mixers[i]);
	}
	for (guint i = 0; i < READERS; i++)
		g_thread_join(threads[i]);
	/* Jobs run in order: once one pushed now has started, no readahead
	 * is left queued. */
	ImapfsPrefetchItem last = {MIXED_MESSAGES + 1, 1000};
	add_message(f, last.uid, last.size);
	g_assert_cmpuint(
		imapfs_block_cache_prefetch(f->cache, "INBOX", 42, &last, 1),
		==, 1);
	wait_asked(f, last.uid, 0);
}

/* --- prefetch --- */

#define PREFETCHED 10

static void add_small_items(Fixture *f, ImapfsPrefetchItem *items, guint n,
			    gsize size)
{
	for (guint i = 0; i < n; i++) {
		items[i] = (ImapfsPrefetchItem){i + 1, size ? size : 1000 + i};
		add_message(f, i + 1, items[i].size);
	}
}

static void test_prefetch(Fixture *f, gconstpointer data)
{
	ImapfsPrefetchItem items[PREFETCHED];

	add_small_items(f, items, PREFETCHED, 0);
	new_cache(f, 64 * BS);
	imapfs_block_cache_start_prefetch(f->cache, 2, 64 * BS);
	g_assert_cmpuint(imapfs_block_cache_prefetch(f->cache, "INBOX", 42,
						     items, PREFETCHED),
			 ==, PREFETCHED);
	wait_stat(f->cache, STAT(prefetched_blocks), PREFETCHED);

	/* Batched: fewer calls than messages, every window asked once. */
	guint n_calls = calls(f);
	guint windows = 0;
	g_assert_cmpuint(n_calls, <, PREFETCHED);
	for (guint i = 0; i < n_calls; i++)
		windows += g_array_index(f->st.batches, guint, i);
	g_assert_cmpuint(windows, ==, PREFETCHED);

	for (guint i = 0; i < PREFETCHED; i++)
		read_all(f, i + 1);
	g_assert_cmpuint(calls(f), ==, n_calls);
	ImapfsBlockCacheStats s = stats(f->cache);
	g_assert_cmpuint(s.memory_hits, ==, PREFETCHED);
	g_assert_cmpuint(s.fetched_blocks, ==, 0);

	/* What is cached is not asked for again, but counts as done. */
	g_assert_cmpuint(imapfs_block_cache_prefetch(f->cache, "INBOX", 42,
						     items, PREFETCHED),
			 ==, PREFETCHED);
	g_assert_cmpuint(calls(f), ==, n_calls);
}

/* Large messages (over 4 MiB): their first and last block (two windows of one
 * UID, so two rounds); reads then need no fetch, and the size is known. */
static void test_prefetch_first_last(Fixture *f, gconstpointer data)
{
	ImapfsPrefetchItem items[] = {{1, 20 * BS + 5}, {2, 1000}};
	ImapfsMessageKey big = inbox(1);

	for (guint i = 0; i < G_N_ELEMENTS(items); i++)
		add_message(f, items[i].uid, items[i].size);
	new_cache(f, 64 * BS);
	imapfs_block_cache_start_prefetch(f->cache, 2, 64 * BS);
	g_assert_cmpuint(
		imapfs_block_cache_prefetch(f->cache, "INBOX", 42, items, 2),
		==, 2);
	wait_stat(f->cache, STAT(prefetched_blocks), 3);
	g_assert_cmpuint(calls(f), ==, 2);
	g_assert_cmpuint(times_asked(f, 1, 0), ==, 1);
	g_assert_cmpuint(times_asked(f, 1, 20), ==, 1);
	g_assert_cmpuint(times_asked(f, 1, 3), ==, 0);

	g_assert_cmpuint(true_size(f, &big, 20 * BS + 5), ==, 20 * BS + 5);
	check_read(f, &big, 0, 100, 100);
	check_read(f, &big, 20 * BS, 100, 5);
	read_all(f, 2);
	ImapfsBlockCacheStats s = stats(f->cache);
	g_assert_cmpuint(s.fetched_blocks, ==, 0);
	g_assert_cmpuint(s.memory_hits, ==, 4);
	g_assert_cmpuint(calls(f), ==, 2);
}

/* Small messages of several blocks come whole, in one window each; the
 * empty block after an exact multiple of the block size included. */
static void test_prefetch_whole(Fixture *f, gconstpointer data)
{
	ImapfsPrefetchItem items[] = {{1, 2 * BS + 9}, {2, 2 * BS}};

	for (guint i = 0; i < G_N_ELEMENTS(items); i++)
		add_message(f, items[i].uid, items[i].size);
	new_cache(f, 64 * BS);
	imapfs_block_cache_start_prefetch(f->cache, 1, 64 * BS);
	g_assert_cmpuint(
		imapfs_block_cache_prefetch(f->cache, "INBOX", 42, items, 2),
		==, 2);
	wait_stat(f->cache, STAT(prefetched_blocks), 1); /* one round */
	g_assert_cmpuint(calls(f), ==, 1);
	g_assert_cmpuint(g_array_index(f->st.batches, guint, 0), ==, 2);
	for (guint32 uid = 1; uid <= 2; uid++)
		for (guint64 i = 0; i < 3; i++)
			g_assert_cmpuint(times_asked(f, uid, i), ==, 1);

	read_all(f, 1);
	read_all(f, 2);
	ImapfsBlockCacheStats s = stats(f->cache);
	g_assert_cmpuint(calls(f), ==, 1);
	g_assert_cmpuint(s.fetched_blocks, ==, 0);
	g_assert_cmpuint(s.memory_hits, ==, 6);
	g_assert_cmpuint(s.prefetched_blocks, ==, 6); /* blocks, not windows */
}

/* An expunged message in a batch: the prefetch fails quietly, the read
 * sees it. */
static void test_prefetch_expunged(Fixture *f, gconstpointer data)
{
	ImapfsPrefetchItem items[] = {{1, 1000}, {99, 1000}};
	ImapfsMessageKey gone = inbox(99);

	add_message(f, 1, 1000);
	new_cache(f, 64 * BS);
	imapfs_block_cache_start_prefetch(f->cache, 2, 64 * BS);
	g_assert_cmpuint(
		imapfs_block_cache_prefetch(f->cache, "INBOX", 42, items, 2),
		==, 2);
	wait_stat(f->cache, STAT(prefetched_blocks), 1);
	read_all(f, 1);
	expect_read_error(f, &gone, 0, 10, IMAPFS_ERROR_NONEXISTENT);
	g_assert_cmpuint(calls(f), ==, 2);
}

/* A failed prefetch is silent: the reader waiting for it fetches the
 * block itself. */
static void test_prefetch_failed(Fixture *f, gconstpointer data)
{
	ImapfsPrefetchItem items[] = {{1, 1000}};

	add_message(f, 1, 1000);
	new_cache(f, 64 * BS);
	imapfs_block_cache_start_prefetch(f->cache, 1, 1000);
	ImapfsMessageKey key = inbox(1);

	set_fail(f, 1, 1); /* the prefetch fails once the read waits */
	g_assert_cmpuint(
		imapfs_block_cache_prefetch(f->cache, "INBOX", 42, items, 1),
		==, 1);
	/* It failed for want of the server, after trying for a whole
	 * timeout: the reader waiting on it fails too rather than wait
	 * again; the next read asks afresh. */
	expect_read_error(f, &key, 0, 10, IMAPFS_ERROR_TIMEOUT);
	read_all(f, 1);
	ImapfsBlockCacheStats s = stats(f->cache);
	g_assert_cmpuint(s.waits, ==, 1);
	g_assert_cmpuint(s.fetched_blocks, ==, 1);
	g_assert_cmpuint(calls(f), ==, 2);
	/* The failure gave its budget back. */
	set_fail(f, 0, 0);
	add_message(f, 2, 1000);
	items[0].uid = 2;
	g_assert_cmpuint(
		imapfs_block_cache_prefetch(f->cache, "INBOX", 42, items, 1),
		==, 1);
	wait_asked(f, 2, 0); /* not left queued at the end */
}

static void test_prefetch_budget(Fixture *f, gconstpointer data)
{
	ImapfsPrefetchItem items[PREFETCHED];

	add_small_items(f, items, PREFETCHED, 1000);
	new_cache(f, 64 * BS);
	imapfs_block_cache_start_prefetch(f->cache, 2, 3000);
	g_assert_cmpuint(imapfs_block_cache_prefetch(f->cache, "INBOX", 42,
						     items, PREFETCHED),
			 ==, 3);
	wait_stat(f->cache, STAT(prefetched_blocks), 3);
	/* Prefetched but unread blocks hold the budget... */
	g_assert_cmpuint(imapfs_block_cache_prefetch(f->cache, "INBOX", 42,
						     items + 3, PREFETCHED - 3),
			 ==, 0);
	/* ...until read. */
	for (guint i = 0; i < 3; i++)
		read_all(f, i + 1);
	g_assert_cmpuint(stats(f->cache).memory_hits, ==, 3);
	g_assert_cmpuint(imapfs_block_cache_prefetch(f->cache, "INBOX", 42,
						     items + 3, PREFETCHED - 3),
			 ==, 3);
	wait_stat(f->cache, STAT(prefetched_blocks), 6);
	for (guint i = 0; i < PREFETCHED; i++)
		read_all(f, i + 1);
	g_assert_cmpuint(stats(f->cache).fetched_blocks, ==, 4);
}

/* A read that waited for a prefetch has read the block, which then no
 * longer holds the budget. */
static void test_prefetch_budget_waited(Fixture *f, gconstpointer data)
{
	ImapfsPrefetchItem items[] = {{1, 1000}, {2, 1000}};

	add_message(f, 1, 1000);
	add_message(f, 2, 1000);
	new_cache(f, 64 * BS);
	imapfs_block_cache_start_prefetch(f->cache, 1, 1000);
	set_fail(f, 0, 1); /* the prefetch returns once the read waits */
	g_assert_cmpuint(
		imapfs_block_cache_prefetch(f->cache, "INBOX", 42, items, 2),
		==, 1);
	read_all(f, 1);
	set_fail(f, 0, 0);
	g_assert_cmpuint(stats(f->cache).waits, ==, 1);
	g_assert_cmpuint(imapfs_block_cache_prefetch(f->cache, "INBOX", 42,
						     items + 1, 1),
			 ==, 1);
	read_all(f, 2);
	g_assert_cmpuint(stats(f->cache).fetched_blocks, ==, 0);
}

/* Freeing the cache with prefetch jobs still queued ends them without
 * fetching and without a leak. Run in a subprocess, where LeakSanitizer (in an
 * ASan build) fails the exit. */
static void test_prefetch_free_queued(Fixture *f, gconstpointer data)
{
	enum { N = 200 }; /* several jobs */
	ImapfsPrefetchItem items[N];

	if (!g_test_subprocess()) {
		g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
		g_test_trap_assert_passed();
		return;
	}
	/* Not in the store: each fetch finds nothing, after a while. */
	for (guint i = 0; i < N; i++)
		items[i] = (ImapfsPrefetchItem){i + 1, 1000};
	new_cache(f, 64 * BS);
	imapfs_block_cache_start_prefetch(f->cache, 1, 64 * BS);
	set_delay(f, 50 * 1000);
	g_assert_cmpuint(
		imapfs_block_cache_prefetch(f->cache, "INBOX", 42, items, N),
		==, N);
	g_clear_pointer(&f->cache, imapfs_block_cache_free);
}

/* --- readahead --- */

#define RA_SIZE (3 * 1024 * 1024)
#define RA_CHUNK (64 * 1024)

/* Each read starts background fetches of later blocks: every block but
 * the first is asked for before the reader gets there, and only once. */
static void test_readahead_sequential(Fixture *f, gconstpointer data)
{
	ImapfsMessageKey key = inbox(1);
	ImapfsReadahead ra = {.size = RA_SIZE};
	guint64 blocks = RA_SIZE / BS;

	add_message(f, 1, RA_SIZE);
	new_cache(f, 16 * BS);
	imapfs_block_cache_start_prefetch(f->cache, 2, 16 * BS);
	for (guint64 off = 0; off < RA_SIZE; off += RA_CHUNK) {
		guint64 index = off / BS;
		if (index > 0)
			g_assert_cmpuint(times_asked(f, 1, index), ==, 1);
		g_assert_cmpint(read_ra(f, &key, off, RA_CHUNK, &ra), ==,
				RA_CHUNK);
		if (index + 1 < blocks)
			wait_asked(f, 1, index + 1);
	}
	for (guint64 i = 0; i < blocks; i++)
		g_assert_cmpuint(times_asked(f, 1, i), ==, 1);
	g_assert_cmpuint(times_asked(f, 1, blocks), ==, 0);
	ImapfsBlockCacheStats s = stats(f->cache);
	g_assert_cmpuint(s.fetched_blocks, ==, 1); /* block 0 */
	g_assert_cmpuint(s.prefetched_blocks, >, 0);
}

/* Reads jumping about (here backwards by more than a megabyte, and then
 * far forwards) start no readahead. */
static void test_readahead_random(Fixture *f, gconstpointer data)
{
	static const guint64 offsets[] = {11 * BS + 100, 6 * BS + 200,
					  1 * BS + 300, 9 * BS + 400};
	ImapfsMessageKey key = inbox(1);
	ImapfsReadahead ra = {.size = RA_SIZE};

	add_message(f, 1, RA_SIZE);
	new_cache(f, 16 * BS);
	imapfs_block_cache_start_prefetch(f->cache, 2, 16 * BS);
	for (guint i = 0; i < G_N_ELEMENTS(offsets); i++)
		g_assert_cmpint(read_ra(f, &key, offsets[i], 1000, &ra), ==,
				1000);
	/* Readahead would have been queued by now; give it time to show. */
	g_usleep(50 * 1000);
	g_assert_cmpuint(calls(f), ==, G_N_ELEMENTS(offsets));
	ImapfsBlockCacheStats s = stats(f->cache);
	g_assert_cmpuint(s.prefetched_blocks, ==, 0);
	g_assert_cmpuint(s.fetched_blocks, ==, G_N_ELEMENTS(offsets));
	for (guint i = 0; i < G_N_ELEMENTS(offsets); i++)
		g_assert_cmpuint(g_array_index(f->st.batches, guint, i), ==, 1);
}

/* Readahead dropped for want of budget is asked for again as the reader
 * advances (block-cache.h: "the reader asks again as it advances"). */
static void test_readahead_budget(Fixture *f, gconstpointer data)
{
	ImapfsMessageKey key = inbox(1);
	ImapfsReadahead ra = {.size = 4 * BS};

	add_message(f, 1, 4 * BS);
	new_cache(f, 16 * BS);
	imapfs_block_cache_start_prefetch(f->cache, 1, BS);
	read_ra(f, &key, 0, 100, &ra); /* claims block 1: budget spent */
	wait_stat(f->cache, STAT(prefetched_blocks), 1);
	read_ra(f, &key, 100, 100, &ra);      /* block 2: no budget */
	read_ra(f, &key, BS, 100, &ra);	      /* reads block 1: budget back */
	read_ra(f, &key, BS + 100, 100, &ra); /* may claim block 2 now */
	read_ra(f, &key, 2 * BS, 100, &ra);
	g_assert_cmpuint(stats(f->cache).fetched_blocks, ==, 1);
	g_assert_cmpuint(times_asked(f, 1, 2), ==, 1);
}

static void add(const char *path, void (*func)(Fixture *, gconstpointer),
		gconstpointer data)
{
	g_test_add(path, Fixture, data, setup, func, teardown);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	add("/cache/read/small", test_small, NULL);
	add("/cache/read/across-blocks", test_across_blocks, NULL);
	add("/cache/read/messages", test_messages, NULL);
	add("/cache/size/learnt", test_size, NULL);
	add("/cache/evict/lru", test_evict, NULL);
	add("/cache/none", test_no_cache, NULL);
	add("/cache/stats/memory", test_stats_memory, NULL);
	add("/cache/error/not-cached", test_error, NULL);
	add("/cache/error/no-short-count", test_error_no_short_count, NULL);
	add("/cache/error/expunged", test_error_expunged, NULL);
	add("/cache/key/distinct", test_keys, NULL);
	add("/cache/key/distinct-on-disk", test_keys, "disk");
	add("/cache/disk/survives", test_disk_survives, NULL);
	add("/cache/part/decoded", test_part_decoded, NULL);
	add("/cache/part/larger-than-said", test_part_larger_than_said, NULL);
	add("/cache/part/binary", test_part_binary, NULL);
	add("/cache/part/disk", test_part_disk, NULL);
	add("/cache/disk/corrupt", test_disk_corrupt, NULL);
	add("/cache/disk/prefetch", test_disk_prefetch, NULL);
	add("/cache/drop/uidvalidity", test_drop, NULL);
	add("/cache/concurrent/one-fetch", test_concurrent_one_fetch, NULL);
	add("/cache/concurrent/error", test_concurrent_error, NULL);
	add("/cache/concurrent/mixed", test_concurrent_mixed, NULL);
	add("/cache/prefetch/batched", test_prefetch, NULL);
	add("/cache/prefetch/first-last", test_prefetch_first_last, NULL);
	add("/cache/prefetch/whole", test_prefetch_whole, NULL);
	add("/cache/prefetch/expunged", test_prefetch_expunged, NULL);
	add("/cache/prefetch/failed", test_prefetch_failed, NULL);
	add("/cache/prefetch/budget", test_prefetch_budget, NULL);
	add("/cache/prefetch/budget-waited", test_prefetch_budget_waited, NULL);
	add("/cache/prefetch/free-queued", test_prefetch_free_queued, NULL);
	add("/cache/readahead/sequential", test_readahead_sequential, NULL);
	add("/cache/readahead/random", test_readahead_random, NULL);
	add("/cache/readahead/budget", test_readahead_budget, NULL);
	return g_test_run();
}
