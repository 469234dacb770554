/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The disk cache in a fresh temporary directory per test, damaged and
 * prodded from outside the way a crash, a full disk or a user would. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "imapfs/disk-cache.h"
#include "imapfs/error.h"

#define ACCOUNT "alice@imap.example.org:993"
#define BIG (64 * 1024 * 1024)

typedef struct {
	char *dir; /* the cache directory, inside tmp */
	char *tmp;
} Fixture;

static const ImapfsBlockKey key = {"INBOX", 42, 7, "", 0};

static void rm_rf(const char *path)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		return;
	if (S_ISDIR(st.st_mode)) {
		chmod(path, 0700); /* undo a test's read-only directory */
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

static void setup(Fixture *f, gconstpointer data)
{
	GError *error = NULL;

	f->tmp = g_dir_make_tmp("imapfs-dc-XXXXXX", &error);
	g_assert_no_error(error);
	f->dir = g_build_filename(f->tmp, "cache", NULL);
}

static void teardown(Fixture *f, gconstpointer data)
{
	rm_rf(f->tmp);
	g_free(f->tmp);
	g_free(f->dir);
}

static ImapfsDiskCache *open_as(Fixture *f, const char *account,
				guint64 max_bytes)
{
	GError *error = NULL;
	ImapfsDiskCache *dc =
		imapfs_disk_cache_open(f->dir, account, max_bytes, &error);

	g_assert_no_error(error);
	g_assert_nonnull(dc);
	return dc;
}

static ImapfsDiskCache *open_dc(Fixture *f, guint64 max_bytes)
{
	return open_as(f, ACCOUNT, max_bytes);
}

static GBytes *pattern(gsize size, guint seed)
{
	guint8 *p = g_malloc(size);

	for (gsize i = 0; i < size; i++)
		p[i] = (guint8)(i * 7 + i / 251 + seed * 13);
	return g_bytes_new_take(p, size);
}

static void put(ImapfsDiskCache *dc, const ImapfsBlockKey *k, GBytes *data)
{
	gsize len;
	const void *p = g_bytes_get_data(data, &len);

	imapfs_disk_cache_put(dc, k, p, len);
}

static void assert_hit(ImapfsDiskCache *dc, const ImapfsBlockKey *k,
		       GBytes *want)
{
	g_autoptr(GBytes) got = imapfs_disk_cache_get(dc, k);

	g_assert_nonnull(got);
	g_assert_true(g_bytes_equal(got, want));
}

static void assert_miss(ImapfsDiskCache *dc, const ImapfsBlockKey *k)
{
	g_autoptr(GBytes) got = imapfs_disk_cache_get(dc, k);

	g_assert_null(got);
}

static ImapfsBlockKey uid_key(guint32 uid)
{
	ImapfsBlockKey k = key;

	k.uid = uid;
	return k;
}

/* Every file below @dir, dot files included. */
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

static GPtrArray *files_under(Fixture *f, const char *sub)
{
	g_autofree char *dir = g_build_filename(f->dir, sub, NULL);
	GPtrArray *out = g_ptr_array_new_with_free_func(g_free);

	list_files(dir, out);
	g_ptr_array_sort(out, (GCompareFunc)g_strcmp0);
	return out;
}

/* The only block file there is. */
static char *the_block_file(Fixture *f)
{
	g_autoptr(GPtrArray) files = files_under(f, "blocks");

	g_assert_cmpuint(files->len, ==, 1);
	return g_strdup(files->pdata[0]);
}

static guint64 file_size(const char *path)
{
	struct stat st;

	g_assert_cmpint(stat(path, &st), ==, 0);
	return st.st_size;
}

/* Sum of the block files' sizes; asserts that no temporary is left. */
static guint64 bytes_on_disk(Fixture *f)
{
	g_autoptr(GPtrArray) files = files_under(f, "blocks");
	guint64 sum = 0;

	for (guint i = 0; i < files->len; i++) {
		g_autofree char *base = g_path_get_basename(files->pdata[i]);
		g_assert_false(base[0] == '.');
		sum += file_size(files->pdata[i]);
	}
	return sum;
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

static void expect_damage_warning(void)
{
	g_test_expect_message("imapfs", G_LOG_LEVEL_WARNING, "*damaged*");
}

static void test_round_trip(Fixture *f, gconstpointer data)
{
	g_autoptr(ImapfsDiskCache) dc = open_dc(f, BIG);
	g_autoptr(GBytes) empty = g_bytes_new(NULL, 0);
	g_autoptr(GBytes) small = pattern(1000, 1);
	g_autoptr(GBytes) block = pattern(256 * 1024, 2);
	ImapfsBlockKey k1 = key, k2 = key;

	k1.block = 1;
	k2.block = 2;
	put(dc, &key, empty);
	put(dc, &k1, small);
	put(dc, &k2, block);
	assert_hit(dc, &key, empty);
	assert_hit(dc, &k1, small);
	assert_hit(dc, &k2, block);
	guint64 bytes = imapfs_disk_cache_bytes(dc);
	g_assert_cmpuint(bytes, >, 257 * 1024);
	g_assert_cmpuint(bytes, ==, bytes_on_disk(f));
	/* A stored key is never written again: its bytes cannot change. */
	put(dc, &k1, small);
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, bytes);
}

static void test_miss(Fixture *f, gconstpointer data)
{
	g_autoptr(ImapfsDiskCache) dc = open_dc(f, BIG);
	g_autoptr(GBytes) small = pattern(10, 1);
	ImapfsBlockKey next = key;

	assert_miss(dc, &key);
	put(dc, &key, small);
	next.block = 1;
	assert_miss(dc, &next);
	g_assert_null(imapfs_disk_cache_get_meta(dc, "INBOX"));
}

static void test_reopen(Fixture *f, gconstpointer data)
{
	g_autoptr(GBytes) small = pattern(1000, 1);
	ImapfsDiskCache *dc = open_dc(f, BIG);

	put(dc, &key, small);
	guint64 bytes = imapfs_disk_cache_bytes(dc);
	imapfs_disk_cache_close(dc);
	dc = open_dc(f, BIG);
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, bytes);
	assert_hit(dc, &key, small);
	imapfs_disk_cache_close(dc);
	imapfs_disk_cache_close(NULL);
}

static void test_keys_distinct(Fixture *f, gconstpointer data)
{
	g_autoptr(GBytes) mine = pattern(100, 1);
	g_autoptr(GBytes) theirs = pattern(100, 2);
	g_autofree char *long_a = g_strnfill(100, '1');
	g_autofree char *long_b = g_strnfill(101, '1');
	ImapfsBlockKey others[] = {
		{"Archive", 42, 7, "", 0},   {"INBOX", 43, 7, "", 0},
		{"INBOX", 42, 8, "", 0},     {"INBOX", 42, 7, "1", 0},
		{"INBOX", 42, 7, "", 1},     {"inbox", 42, 7, "", 0},
		{"INBOX", 42, 7, long_a, 0},
	};
	ImapfsBlockKey long_key = {"INBOX", 42, 7, long_b, 0};
	ImapfsDiskCache *dc = open_dc(f, BIG);

	put(dc, &key, mine);
	put(dc, &long_key, theirs);
	for (gsize i = 0; i < G_N_ELEMENTS(others); i++)
		assert_miss(dc, &others[i]);
	assert_hit(dc, &long_key, theirs);
	imapfs_disk_cache_close(dc);

	/* Another account sharing the directory has its own blocks. */
	dc = open_as(f, "bob@imap.example.org:993", BIG);
	assert_miss(dc, &key);
	put(dc, &key, theirs);
	assert_hit(dc, &key, theirs);
	imapfs_disk_cache_close(dc);
	dc = open_dc(f, BIG);
	assert_hit(dc, &key, mine);
	imapfs_disk_cache_close(dc);
}

/* The size on disk of one 1000-byte block of uid_key(). */
static guint64 entry_size(Fixture *f)
{
	g_autoptr(ImapfsDiskCache) dc = open_dc(f, BIG);
	g_autoptr(GBytes) data = pattern(1000, 0);
	ImapfsBlockKey k = uid_key(9);

	put(dc, &k, data);
	guint64 size = imapfs_disk_cache_bytes(dc);
	imapfs_disk_cache_drop_mailbox(dc, "INBOX", 0);
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, 0);
	return size;
}

static void put_uid(ImapfsDiskCache *dc, guint32 uid)
{
	g_autoptr(GBytes) data = pattern(1000, uid);
	ImapfsBlockKey k = uid_key(uid);

	put(dc, &k, data);
}

static gboolean has_uid(ImapfsDiskCache *dc, guint32 uid)
{
	g_autoptr(GBytes) want = pattern(1000, uid);
	ImapfsBlockKey k = uid_key(uid);
	g_autoptr(GBytes) got = imapfs_disk_cache_get(dc, &k);

	g_assert_true(got == NULL || g_bytes_equal(got, want));
	return got != NULL;
}

static void test_evict_lru(Fixture *f, gconstpointer data)
{
	guint64 s = entry_size(f);
	g_autoptr(ImapfsDiskCache) dc = open_dc(f, 3 * s + s / 2);

	put_uid(dc, 1);
	put_uid(dc, 2);
	put_uid(dc, 3);
	g_assert_true(has_uid(dc, 1)); /* 1 is now the most recent */
	put_uid(dc, 4);		       /* evicts 2, not 1 */
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, 3 * s);
	g_assert_cmpuint(bytes_on_disk(f), ==, 3 * s);
	g_assert_false(has_uid(dc, 2));
	g_assert_true(has_uid(dc, 1));
	g_assert_true(has_uid(dc, 3));
	g_assert_true(has_uid(dc, 4));
}

static void test_evict_reopen(Fixture *f, gconstpointer data)
{
	guint64 s = entry_size(f);
	ImapfsDiskCache *dc = open_dc(f, BIG);

	put_uid(dc, 1);
	put_uid(dc, 2);
	put_uid(dc, 3);
	g_assert_true(has_uid(dc, 1));
	imapfs_disk_cache_close(dc);

	/* The order is in the mtimes: 2, 3, 1 from the oldest. */
	dc = open_dc(f, 3 * s + s / 2);
	put_uid(dc, 4);
	g_assert_false(has_uid(dc, 2));
	imapfs_disk_cache_close(dc);

	/* A smaller limit evicts at open, again oldest first. */
	dc = open_dc(f, s + s / 2);
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, s);
	g_assert_cmpuint(bytes_on_disk(f), ==, s);
	g_assert_false(has_uid(dc, 3));
	g_assert_true(has_uid(dc, 4));
	imapfs_disk_cache_close(dc);
}

static void test_evict_limits(Fixture *f, gconstpointer data)
{
	guint64 s = entry_size(f);
	ImapfsDiskCache *dc = open_dc(f, s - 1);

	put_uid(dc, 1); /* larger than the whole cache */
	g_assert_false(has_uid(dc, 1));
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, 0);
	imapfs_disk_cache_close(dc);

	dc = open_dc(f, 0);
	g_autoptr(GBytes) empty = g_bytes_new(NULL, 0);
	put(dc, &key, empty);
	assert_miss(dc, &key);
	g_assert_cmpuint(bytes_on_disk(f), ==, 0);
	imapfs_disk_cache_close(dc);
}

/* Puts @data under @key in a fresh cache and returns the file's path. */
static char *put_one(Fixture *f, GBytes *data)
{
	g_autoptr(ImapfsDiskCache) dc = open_dc(f, BIG);

	put(dc, &key, data);
	return the_block_file(f);
}

/* Opens the cache, expects a damaged @key, and checks its file is gone. */
static void check_damaged(Fixture *f, const char *path)
{
	g_autoptr(ImapfsDiskCache) dc = open_dc(f, BIG);

	expect_damage_warning();
	assert_miss(dc, &key);
	g_test_assert_expected_messages();
	g_assert_false(g_file_test(path, G_FILE_TEST_EXISTS));
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, 0);
	assert_miss(dc, &key); /* forgotten: quietly */
}

static void test_damage_data(Fixture *f, gconstpointer data)
{
	g_autoptr(GBytes) block = pattern(1000, 1);
	g_autofree char *path = put_one(f, block);

	flip_byte(path, file_size(path) - 500);
	check_damaged(f, path);
}

static void test_damage_truncated(Fixture *f, gconstpointer data)
{
	g_autoptr(GBytes) block = pattern(1000, 1);
	g_autofree char *path = put_one(f, block);

	g_assert_cmpint(truncate(path, file_size(path) - 1), ==, 0);
	check_damaged(f, path);
	g_free(path);
	path = put_one(f, block);
	g_assert_cmpint(truncate(path, 5), ==, 0); /* inside the magic */
	check_damaged(f, path);
}

/* Every single byte of a file matters, header included. */
static void test_damage_every_byte(Fixture *f, gconstpointer data)
{
	g_autoptr(GBytes) block = pattern(16, 1);
	g_autofree char *path = put_one(f, block);
	guint64 size = file_size(path);
	g_autoptr(ImapfsDiskCache) dc = open_dc(f, BIG);

	for (gsize i = 0; i < size; i++) {
		/* Warned about once; the repeats are only traced. */
		if (i == 0)
			expect_damage_warning();
		flip_byte(path, i);
		assert_miss(dc, &key);
		g_test_assert_expected_messages();
		g_assert_false(g_file_test(path, G_FILE_TEST_EXISTS));
		put(dc, &key, block);
		assert_hit(dc, &key, block);
	}
}

/* A file under another key's name (a hash collision, a copy): a miss. */
static void test_damage_wrong_key(Fixture *f, gconstpointer data)
{
	g_autoptr(GBytes) a = pattern(1000, 1);
	g_autoptr(GBytes) b = pattern(1000, 2);
	ImapfsBlockKey other = uid_key(8);
	g_autofree char *path_a = put_one(f, a);
	g_autoptr(ImapfsDiskCache) dc = open_dc(f, BIG);

	put(dc, &other, b);
	g_autoptr(GPtrArray) files = files_under(f, "blocks");
	g_assert_cmpuint(files->len, ==, 2);
	const char *path_b = strcmp(files->pdata[0], path_a) == 0
				     ? files->pdata[1]
				     : files->pdata[0];
	g_autofree char *text = NULL;
	gsize len;
	g_assert_true(g_file_get_contents(path_a, &text, &len, NULL));
	g_assert_true(g_file_set_contents(path_b, text, len, NULL));

	expect_damage_warning();
	assert_miss(dc, &other);
	g_test_assert_expected_messages();
	g_assert_false(g_file_test(path_b, G_FILE_TEST_EXISTS));
	assert_hit(dc, &key, a);
}

static void test_lock_busy(Fixture *f, gconstpointer data)
{
	ImapfsDiskCache *first = open_dc(f, BIG);
	g_autoptr(GError) error = NULL;

	g_assert_null(imapfs_disk_cache_open(f->dir, ACCOUNT, BIG, &error));
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_BUSY);
	g_assert_nonnull(strstr(error->message, f->dir));
	g_assert_nonnull(strstr(error->message, "in use by another imapfs"));
	imapfs_disk_cache_close(first);
	ImapfsDiskCache *second = open_dc(f, BIG);
	imapfs_disk_cache_close(second);
}

static guint mode_of(const char *path)
{
	struct stat st;

	g_assert_cmpint(stat(path, &st), ==, 0);
	return st.st_mode & 07777;
}

static void test_dir_private(Fixture *f, gconstpointer data)
{
	ImapfsDiskCache *dc;

	/* Created with its parents. */
	g_free(f->dir);
	f->dir = g_build_filename(f->tmp, "a", "b", "cache", NULL);
	dc = open_dc(f, BIG);
	imapfs_disk_cache_close(dc);
	g_assert_cmpuint(mode_of(f->dir), ==, 0700);

	/* Made private when found open to others. */
	g_assert_cmpint(chmod(f->dir, 0755), ==, 0);
	dc = open_dc(f, BIG);
	g_assert_cmpuint(mode_of(f->dir), ==, 0700);
	g_autofree char *lock = g_build_filename(f->dir, "lock", NULL);
	g_assert_cmpuint(mode_of(lock), ==, 0600);
	imapfs_disk_cache_close(dc);
}

static void test_dir_not_a_directory(Fixture *f, gconstpointer data)
{
	g_autofree char *sub = g_build_filename(f->dir, "sub", NULL);
	g_autoptr(GError) error = NULL;

	g_assert_true(g_file_set_contents(f->dir, "x", 1, NULL));
	g_assert_null(imapfs_disk_cache_open(f->dir, ACCOUNT, BIG, &error));
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_FAILED);
	g_assert_nonnull(strstr(error->message, f->dir));
	g_clear_error(&error);
	g_assert_null(imapfs_disk_cache_open(sub, ACCOUNT, BIG, &error));
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_FAILED);
	g_assert_nonnull(strstr(error->message, sub));
}

static void write_file(Fixture *f, const char *name, const char *text)
{
	g_autofree char *path = g_build_filename(f->dir, name, NULL);

	g_assert_true(g_file_set_contents(path, text, -1, NULL));
}

static void fill(Fixture *f)
{
	g_autoptr(ImapfsDiskCache) dc = open_dc(f, BIG);
	g_autoptr(GBytes) data = pattern(100, 1);

	put(dc, &key, data);
	imapfs_disk_cache_put_meta(dc, "INBOX", data);
}

static void check_wiped(Fixture *f)
{
	g_autoptr(ImapfsDiskCache) dc = open_dc(f, BIG);
	g_autofree char *path = g_build_filename(f->dir, "VERSION", NULL);
	g_autofree char *notes = g_build_filename(f->dir, "notes", NULL);
	g_autofree char *text = NULL;

	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, 0);
	assert_miss(dc, &key);
	g_assert_null(imapfs_disk_cache_get_meta(dc, "INBOX"));
	g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
	g_assert_cmpstr(text, ==, "imapfs-cache 1\n");
	g_assert_true(g_file_test(notes, G_FILE_TEST_EXISTS));
}

static void test_version(Fixture *f, gconstpointer data)
{
	g_autofree char *path = g_build_filename(f->dir, "VERSION", NULL);

	fill(f);
	write_file(f, "notes", "not ours: kept");
	write_file(f, "VERSION", "imapfs-cache 0\n");
	check_wiped(f);

	fill(f);
	g_assert_cmpint(g_unlink(path), ==, 0);
	check_wiped(f);
}

static void test_stray_temps(Fixture *f, gconstpointer data)
{
	g_autoptr(GBytes) block = pattern(100, 1);
	g_autofree char *path = put_one(f, block);
	g_autofree char *uv_dir = g_path_get_dirname(path);
	g_autofree char *tmp = g_build_filename(uv_dir, ".tmp-abcdef", NULL);
	g_autofree char *trash =
		g_build_filename(f->dir, "blocks", ".trash-abcdef", "1", NULL);
	g_autofree char *trash_file = g_build_filename(trash, "7-0", NULL);
	g_autofree char *meta_tmp =
		g_build_filename(f->dir, "meta", ".tmp-abcdef", NULL);

	g_assert_true(g_file_set_contents(tmp, "torn", -1, NULL));
	g_assert_cmpint(g_mkdir_with_parents(trash, 0700), ==, 0);
	g_assert_true(g_file_set_contents(trash_file, "dropped", -1, NULL));
	g_assert_true(g_file_set_contents(meta_tmp, "torn", -1, NULL));
	guint64 size = file_size(path);

	g_autoptr(ImapfsDiskCache) dc = open_dc(f, BIG);
	g_assert_false(g_file_test(tmp, G_FILE_TEST_EXISTS));
	g_assert_false(g_file_test(trash_file, G_FILE_TEST_EXISTS));
	g_assert_false(g_file_test(meta_tmp, G_FILE_TEST_EXISTS));
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, size);
	assert_hit(dc, &key, block);
}

static void test_drop_mailbox(Fixture *f, gconstpointer data)
{
	g_autoptr(GBytes) block = pattern(100, 1);
	ImapfsBlockKey keys[] = {
		{"INBOX", 1, 7, "", 0},
		{"INBOX", 2, 7, "", 0},
		{"INBOX", 3, 7, "1", 0},
		{"Archive", 1, 7, "", 0},
	};
	ImapfsDiskCache *dc = open_dc(f, BIG);

	guint64 size[G_N_ELEMENTS(keys)]; /* headers differ in size */

	for (gsize i = 0; i < G_N_ELEMENTS(keys); i++) {
		guint64 before = imapfs_disk_cache_bytes(dc);
		put(dc, &keys[i], block);
		size[i] = imapfs_disk_cache_bytes(dc) - before;
	}
	imapfs_disk_cache_drop_mailbox(dc, "INBOX", 2);
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, size[1] + size[3]);
	g_assert_cmpuint(bytes_on_disk(f), ==, size[1] + size[3]);
	assert_miss(dc, &keys[0]);
	assert_hit(dc, &keys[1], block);
	assert_miss(dc, &keys[2]);
	assert_hit(dc, &keys[3], block);
	imapfs_disk_cache_close(dc);

	dc = open_dc(f, BIG);
	assert_hit(dc, &keys[1], block);
	imapfs_disk_cache_drop_mailbox(dc, "INBOX", 0);
	imapfs_disk_cache_drop_mailbox(dc, "Nowhere", 0);
	assert_miss(dc, &keys[1]);
	assert_hit(dc, &keys[3], block);
	g_assert_cmpuint(bytes_on_disk(f), ==, size[3]);
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, size[3]);
	imapfs_disk_cache_close(dc);
}

static char *the_meta_file(Fixture *f)
{
	g_autoptr(GPtrArray) files = files_under(f, "meta");

	g_assert_cmpuint(files->len, ==, 1);
	return g_strdup(files->pdata[0]);
}

static void assert_meta(ImapfsDiskCache *dc, const char *mailbox, GBytes *want)
{
	g_autoptr(GBytes) got = imapfs_disk_cache_get_meta(dc, mailbox);

	if (want == NULL) {
		g_assert_null(got);
		return;
	}
	g_assert_nonnull(got);
	g_assert_true(g_bytes_equal(got, want));
}

static void test_meta(Fixture *f, gconstpointer data)
{
	g_autoptr(GBytes) first = pattern(300, 1);
	g_autoptr(GBytes) second = pattern(20000, 2);
	g_autoptr(GBytes) empty = g_bytes_new(NULL, 0);
	ImapfsDiskCache *dc = open_dc(f, BIG);

	assert_meta(dc, "INBOX", NULL);
	imapfs_disk_cache_put_meta(dc, "INBOX", first);
	assert_meta(dc, "INBOX", first);
	imapfs_disk_cache_put_meta(dc, "INBOX", second);
	assert_meta(dc, "INBOX", second);
	assert_meta(dc, "Archive", NULL);
	imapfs_disk_cache_drop_mailbox(dc, "INBOX", 0);
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, 0);
	imapfs_disk_cache_close(dc);

	dc = open_as(f, "bob", BIG);
	assert_meta(dc, "INBOX", NULL);
	imapfs_disk_cache_close(dc);

	dc = open_dc(f, BIG);
	assert_meta(dc, "INBOX", second);
	g_autofree char *path = the_meta_file(f);
	flip_byte(path, file_size(path) - 1);
	expect_damage_warning();
	assert_meta(dc, "INBOX", NULL);
	g_test_assert_expected_messages();
	g_assert_false(g_file_test(path, G_FILE_TEST_EXISTS));
	imapfs_disk_cache_put_meta(dc, "INBOX", empty);
	assert_meta(dc, "INBOX", empty);
	imapfs_disk_cache_close(dc);
}

/* Root ignores directory modes, so the failing directory is a file. */
static void test_put_not_a_directory(Fixture *f, gconstpointer data)
{
	g_autoptr(GBytes) block = pattern(100, 1);
	ImapfsBlockKey other = {"Archive", 1, 1, "", 0};
	g_autofree char *path = put_one(f, block);
	g_autofree char *uv_dir = g_path_get_dirname(path);
	g_autofree char *mb_dir = g_path_get_dirname(uv_dir);
	g_autoptr(ImapfsDiskCache) dc = open_dc(f, BIG);

	imapfs_disk_cache_drop_mailbox(dc, "INBOX", 0);
	g_assert_true(g_file_set_contents(mb_dir, "in the way", -1, NULL));
	g_test_expect_message("imapfs", G_LOG_LEVEL_WARNING,
			      "*cannot create a file in*");
	put(dc, &key, block);
	g_test_assert_expected_messages();
	put(dc, &key, block); /* traced only */
	assert_miss(dc, &key);
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, 0);
	put(dc, &other, block);
	assert_hit(dc, &other, block);
}

static void test_put_read_only(Fixture *f, gconstpointer data)
{
	if (geteuid() == 0) {
		g_test_skip("root ignores directory modes; "
			    "/disk-cache/put/not-a-directory covers this");
		return;
	}
	g_autoptr(GBytes) block = pattern(100, 1);
	ImapfsBlockKey next = uid_key(8);
	g_autofree char *path = put_one(f, block);
	g_autofree char *uv_dir = g_path_get_dirname(path);
	g_autoptr(ImapfsDiskCache) dc = open_dc(f, BIG);

	g_assert_cmpint(chmod(uv_dir, 0500), ==, 0);
	g_test_expect_message("imapfs", G_LOG_LEVEL_WARNING,
			      "*cannot create a file in*");
	put(dc, &next, block);
	g_test_assert_expected_messages();
	assert_miss(dc, &next);
	assert_hit(dc, &key, block);
	g_assert_cmpint(chmod(uv_dir, 0700), ==, 0);
}

/* A write cut short, as by a full disk: RLIMIT_FSIZE makes write() fail
 * with EFBIG half-way through the file. */
static void test_put_disk_full(Fixture *f, gconstpointer data)
{
	g_autoptr(GBytes) big = pattern(8000, 1);
	g_autoptr(GBytes) small = pattern(10, 2);
	ImapfsBlockKey k2 = uid_key(8), k3 = uid_key(9);
	g_autoptr(ImapfsDiskCache) dc = open_dc(f, BIG);
	struct rlimit old, lim;

	g_assert_cmpint(getrlimit(RLIMIT_FSIZE, &old), ==, 0);
	lim = old;
	lim.rlim_cur = 4000;
	signal(SIGXFSZ, SIG_IGN);
	g_assert_cmpint(setrlimit(RLIMIT_FSIZE, &lim), ==, 0);
	g_test_expect_message("imapfs", G_LOG_LEVEL_WARNING, "*cannot write*");
	put(dc, &key, big);
	g_test_assert_expected_messages();
	put(dc, &k2, big); /* traced only */
	put(dc, &k3, small);
	g_assert_cmpint(setrlimit(RLIMIT_FSIZE, &old), ==, 0);
	signal(SIGXFSZ, SIG_DFL);

	assert_miss(dc, &key);
	assert_miss(dc, &k2);
	assert_hit(dc, &k3, small);
	g_assert_cmpuint(bytes_on_disk(f), ==, imapfs_disk_cache_bytes(dc));
	/* With room again, the cache works as before. */
	put(dc, &key, big);
	assert_hit(dc, &key, big);
}

#define N_THREADS 4
#define N_KEYS 16

typedef struct {
	ImapfsDiskCache *dc;
	guint seed;
} Worker;

static ImapfsBlockKey thread_key(guint i)
{
	ImapfsBlockKey k = {"INBOX", 1, i % 8, i / 8 ? "1" : "", i % 3};

	return k;
}

/* Gets a key, checks it, puts it on a miss; now and then thread 0 drops
 * the whole mailbox. Small limits keep eviction busy. */
static gpointer worker(gpointer data)
{
	Worker *w = data;
	g_autoptr(GRand) rand = g_rand_new_with_seed(w->seed);

	for (guint n = 0; n < 400; n++) {
		guint i = g_rand_int_range(rand, 0, N_KEYS);
		ImapfsBlockKey k = thread_key(i);
		g_autoptr(GBytes) want = pattern(1000 + 100 * i, i);
		g_autoptr(GBytes) got = imapfs_disk_cache_get(w->dc, &k);
		if (got)
			g_assert_true(g_bytes_equal(got, want));
		else
			put(w->dc, &k, want);
		if (w->seed == 0 && n % 37 == 36)
			imapfs_disk_cache_drop_mailbox(w->dc, "INBOX", 0);
	}
	return NULL;
}

static void test_threads(Fixture *f, gconstpointer data)
{
	const guint64 max = 12000;
	g_autoptr(ImapfsDiskCache) dc = open_dc(f, max);
	Worker workers[N_THREADS];
	GThread *threads[N_THREADS];

	for (guint t = 0; t < N_THREADS; t++) {
		workers[t] = (Worker){dc, t};
		threads[t] = g_thread_new("worker", worker, &workers[t]);
	}
	for (guint t = 0; t < N_THREADS; t++)
		g_thread_join(threads[t]);
	/* The index and the directory agree: no lost file, no temp. */
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), <=, max);
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, bytes_on_disk(f));
	for (guint i = 0; i < N_KEYS; i++) {
		ImapfsBlockKey k = thread_key(i);
		g_autoptr(GBytes) want = pattern(1000 + 100 * i, i);
		g_autoptr(GBytes) got = imapfs_disk_cache_get(dc, &k);
		g_assert_true(got == NULL || g_bytes_equal(got, want));
	}
}

static void add(const char *path, void (*func)(Fixture *, gconstpointer))
{
	g_test_add(path, Fixture, NULL, setup, func, teardown);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	add("/disk-cache/put-get/round-trip", test_round_trip);
	add("/disk-cache/put-get/miss", test_miss);
	add("/disk-cache/put-get/reopen", test_reopen);
	add("/disk-cache/key/distinct", test_keys_distinct);
	add("/disk-cache/evict/lru", test_evict_lru);
	add("/disk-cache/evict/reopen", test_evict_reopen);
	add("/disk-cache/evict/limits", test_evict_limits);
	add("/disk-cache/damage/data", test_damage_data);
	add("/disk-cache/damage/truncated", test_damage_truncated);
	add("/disk-cache/damage/every-byte", test_damage_every_byte);
	add("/disk-cache/damage/wrong-key", test_damage_wrong_key);
	add("/disk-cache/open/busy", test_lock_busy);
	add("/disk-cache/open/private", test_dir_private);
	add("/disk-cache/open/not-a-directory", test_dir_not_a_directory);
	add("/disk-cache/open/version", test_version);
	add("/disk-cache/open/stray-temps", test_stray_temps);
	add("/disk-cache/drop/mailbox", test_drop_mailbox);
	add("/disk-cache/meta", test_meta);
	add("/disk-cache/put/not-a-directory", test_put_not_a_directory);
	add("/disk-cache/put/read-only", test_put_read_only);
	add("/disk-cache/put/disk-full", test_put_disk_full);
	add("/disk-cache/threads", test_threads);
	return g_test_run();
}
