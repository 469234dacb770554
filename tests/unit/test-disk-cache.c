/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The disk cache in a fresh temporary directory per test, damaged and
 * prodded from outside the way a crash, a full disk or a user would. Some
 * tests know the record format: a 40-byte header, the key, the data, all
 * padded to 8 bytes; segments of max_bytes / 8, at least 1 MiB. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "imapfs/disk-cache.h"
#include "imapfs/error.h"

#define ACCOUNT "alice@imap.example.org:993"
#define MIB (1024 * 1024)
#define BIG (64 * MIB)
#define HDR_LEN 40
/* Blocks of this size fill a 1 MiB segment with 10 records. */
#define BLOCK (100 * 1024)

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

/* Puts a new record and returns its offset: where the cache ended. */
static guint64 put_at(ImapfsDiskCache *dc, const ImapfsBlockKey *k,
		      GBytes *data)
{
	guint64 before = imapfs_disk_cache_bytes(dc);

	put(dc, k, data);
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), >, before);
	return before;
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

static void put_uid(ImapfsDiskCache *dc, guint32 uid, gsize size)
{
	g_autoptr(GBytes) data = pattern(size, uid);
	ImapfsBlockKey k = uid_key(uid);

	put(dc, &k, data);
}

/* Whether @uid is stored; it is a hit only with the right bytes. */
static gboolean has_uid(ImapfsDiskCache *dc, guint32 uid, gsize size)
{
	g_autoptr(GBytes) want = pattern(size, uid);
	ImapfsBlockKey k = uid_key(uid);
	g_autoptr(GBytes) got = imapfs_disk_cache_get(dc, &k);

	g_assert_true(got == NULL || g_bytes_equal(got, want));
	return got != NULL;
}

/* Length of the record of @k holding @len bytes, padding excluded. */
static gsize record_len(const ImapfsBlockKey *k, gsize len)
{
	return HDR_LEN + strlen(ACCOUNT) + 1 + strlen(k->mailbox) + 1 +
	       strlen(k->section) + 1 + 4 + 4 + 8 + len;
}

static char *seg_file(Fixture *f, guint64 number)
{
	g_autofree char *name =
		g_strdup_printf("%016" G_GINT64_MODIFIER "x.seg", number);

	return g_build_filename(f->dir, "segments", name, NULL);
}

static gboolean exists(const char *path)
{
	return g_file_test(path, G_FILE_TEST_EXISTS);
}

static guint64 file_size(const char *path)
{
	struct stat st;

	g_assert_cmpint(stat(path, &st), ==, 0);
	return st.st_size;
}

static gint str_cmp(gconstpointer a, gconstpointer b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names in segments/, sorted. */
static GPtrArray *seg_names(Fixture *f)
{
	g_autofree char *dir = g_build_filename(f->dir, "segments", NULL);
	g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
	GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
	const char *name;

	while (d && (name = g_dir_read_name(d)))
		g_ptr_array_add(out, g_strdup(name));
	g_ptr_array_sort(out, str_cmp);
	return out;
}

/* Sum of the segment files' sizes; asserts nothing else is there. */
static guint64 bytes_on_disk(Fixture *f)
{
	g_autoptr(GPtrArray) names = seg_names(f);
	guint64 sum = 0;

	for (guint i = 0; i < names->len; i++) {
		const char *name = names->pdata[i];
		g_assert_cmpuint(strlen(name), ==, 20);
		g_assert_true(g_str_has_suffix(name, ".seg"));
		g_autofree char *path =
			g_build_filename(f->dir, "segments", name, NULL);
		sum += file_size(path);
	}
	return sum;
}

/* Damages a byte in place, as the disk would: the cache may hold the
 * file open for appending. */
static void flip_at(const char *path, guint64 offset)
{
	int fd = open(path, O_RDWR);
	guint8 c;

	g_assert_cmpint(fd, >=, 0);
	g_assert_cmpint(pread(fd, &c, 1, offset), ==, 1);
	c ^= 0x20;
	g_assert_cmpint(pwrite(fd, &c, 1, offset), ==, 1);
	close(fd);
}

static void expect_damage_warning(void)
{
	g_test_expect_message("imapfs", G_LOG_LEVEL_WARNING, "*damaged*");
}

static ImapfsDiskCache *open_expecting_damage(Fixture *f, guint64 max_bytes)
{
	expect_damage_warning();
	ImapfsDiskCache *dc = open_dc(f, max_bytes);
	g_test_assert_expected_messages();
	return dc;
}

/* --- put and get --- */

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
	g_assert_cmpuint(bytes, ==,
			 (record_len(&key, 0) + 7) / 8 * 8 +
				 (record_len(&k1, 1000) + 7) / 8 * 8 +
				 (record_len(&k2, 256 * 1024) + 7) / 8 * 8);
	g_assert_cmpuint(bytes, ==, bytes_on_disk(f));
	g_autoptr(GPtrArray) names = seg_names(f);
	g_assert_cmpuint(names->len, ==, 1);
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
	put_uid(dc, 8, 5000);
	guint64 bytes = imapfs_disk_cache_bytes(dc);
	imapfs_disk_cache_close(dc);
	dc = open_dc(f, BIG);
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, bytes);
	assert_hit(dc, &key, small);
	g_assert_true(has_uid(dc, 8, 5000));
	/* Appends continue at the end of the last segment. */
	put_uid(dc, 9, 100);
	g_assert_true(has_uid(dc, 9, 100));
	g_autoptr(GPtrArray) names = seg_names(f);
	g_assert_cmpuint(names->len, ==, 1);
	imapfs_disk_cache_close(dc);
	imapfs_disk_cache_close(NULL);
}

/* A record larger than a segment gets one of its own. */
static void test_large_record(Fixture *f, gconstpointer data)
{
	ImapfsDiskCache *dc = open_dc(f, 16 * MIB); /* 2 MiB segments */

	put_uid(dc, 1, 100);
	put_uid(dc, 2, 3 * MIB);
	put_uid(dc, 3, 100);
	g_autoptr(GPtrArray) names = seg_names(f);
	g_assert_cmpuint(names->len, ==, 3);
	imapfs_disk_cache_close(dc);
	dc = open_dc(f, 16 * MIB);
	g_assert_true(has_uid(dc, 1, 100));
	g_assert_true(has_uid(dc, 2, 3 * MIB));
	g_assert_true(has_uid(dc, 3, 100));
	imapfs_disk_cache_close(dc);
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
	imapfs_disk_cache_drop_mailbox(dc, "INBOX", 0);
	imapfs_disk_cache_close(dc);
	dc = open_dc(f, BIG);
	assert_hit(dc, &key, mine);
	for (gsize i = 0; i < G_N_ELEMENTS(others); i++)
		assert_miss(dc, &others[i]);
	imapfs_disk_cache_close(dc);
}

/* --- eviction --- */

/* Puts BLOCK-sized UIDs from @uid on until the cache shrinks (a segment
 * was evicted) or, with @until, that file has come and gone; the next
 * UID. */
static guint32 put_until_evicted(ImapfsDiskCache *dc, guint32 uid, guint64 max,
				 const char *until)
{
	guint64 prev = imapfs_disk_cache_bytes(dc);
	gboolean seen = until && exists(until);

	for (;; uid++) {
		put_uid(dc, uid, BLOCK);
		guint64 now = imapfs_disk_cache_bytes(dc);
		g_assert_cmpuint(now, <=, max);
		if (until ? seen && !exists(until) : now < prev)
			return uid + 1;
		seen = seen || (until && exists(until));
		prev = now;
	}
}

static void test_evict_oldest(Fixture *f, gconstpointer data)
{
	const guint64 max = 8 * MIB; /* 1 MiB segments */
	g_autoptr(ImapfsDiskCache) dc = open_dc(f, max);
	g_autofree char *first = seg_file(f, 1);
	g_autofree char *second = seg_file(f, 2);

	put_uid(dc, 1, BLOCK);
	guint32 per_seg = MIB / imapfs_disk_cache_bytes(dc);
	g_assert_cmpuint(per_seg, ==, 10);
	guint32 next = put_until_evicted(dc, 2, max, NULL);
	/* A whole segment went, the oldest, nothing else. */
	g_assert_false(exists(first));
	g_assert_true(exists(second));
	for (guint32 uid = 1; uid <= per_seg; uid++)
		g_assert_false(has_uid(dc, uid, BLOCK));
	g_assert_true(has_uid(dc, next - 1, BLOCK));
	g_assert_true(has_uid(dc, per_seg + 1, BLOCK));
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, bytes_on_disk(f));
}

/* A block read since it was written is copied forward when its segment
 * is evicted, once per read; a block not read goes with its segment. */
static void test_evict_lru(Fixture *f, gconstpointer data)
{
	const guint64 max = 8 * MIB;
	ImapfsDiskCache *dc = open_dc(f, max);
	g_autofree char *second = seg_file(f, 2);

	put_uid(dc, 1, BLOCK);
	put_uid(dc, 2, BLOCK);
	/* A hit writes nothing. */
	guint64 before = imapfs_disk_cache_bytes(dc);
	g_assert_true(has_uid(dc, 1, BLOCK));
	g_assert_true(has_uid(dc, 1, BLOCK));
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, before);

	/* Segments 1 and 2 go. */
	guint32 uid = put_until_evicted(dc, 3, max, second);
	g_assert_true(has_uid(dc, 1, BLOCK));
	g_assert_false(has_uid(dc, 2, BLOCK));
	g_assert_true(has_uid(dc, uid - 1, BLOCK));
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, bytes_on_disk(f));
	imapfs_disk_cache_close(dc);

	dc = open_dc(f, max);
	g_assert_true(has_uid(dc, 1, BLOCK)); /* read once more */
	g_assert_false(has_uid(dc, 2, BLOCK));
	/* Two rounds through the cache: rescued in the first, not read
	 * since, gone in the second. */
	for (guint64 n = 0; n < 2 * max + MIB; n += BLOCK)
		put_uid(dc, uid++, BLOCK);
	g_assert_false(has_uid(dc, 1, BLOCK));
	g_assert_true(has_uid(dc, uid - 1, BLOCK));
	imapfs_disk_cache_close(dc);
}

/* With every block read, one put does not rewrite the cache: it rescues
 * about one segment's worth and lets the next segment go unrescued. */
static void test_evict_rescue_budget(Fixture *f, gconstpointer data)
{
	const guint64 max = 8 * MIB; /* 1 MiB segments of 10 blocks */
	g_autoptr(ImapfsDiskCache) dc = open_dc(f, max);
	g_autofree char *second = seg_file(f, 2);
	g_autofree char *third = seg_file(f, 3);

	guint32 uid = put_until_evicted(dc, 1, max, NULL);
	for (guint32 u = 11; u < uid; u++)
		g_assert_true(has_uid(dc, u, BLOCK));
	/* The put that evicts segment 2 (UIDs 11-20) rescues it whole,
	 * which evicts segment 3 (21-30): no budget left for it. */
	uid = put_until_evicted(dc, uid, max, second);
	g_assert_false(exists(third));
	for (guint32 u = 11; u < uid; u++)
		g_assert_true(has_uid(dc, u, BLOCK) == (u <= 20 || u > 30));
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), <=, max);
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, bytes_on_disk(f));
}

static void test_evict_reopen(Fixture *f, gconstpointer data)
{
	ImapfsDiskCache *dc = open_dc(f, 8 * MIB);

	for (guint32 uid = 1; uid <= 40; uid++)
		put_uid(dc, uid, BLOCK);
	imapfs_disk_cache_close(dc);
	g_autoptr(GPtrArray) names = seg_names(f);
	g_assert_cmpuint(names->len, ==, 4);

	/* A smaller limit evicts at open, oldest first. */
	dc = open_dc(f, 2 * MIB + 10);
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), <=, 2 * MIB + 10);
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, bytes_on_disk(f));
	g_autoptr(GPtrArray) left = seg_names(f);
	g_assert_cmpuint(left->len, ==, 2);
	g_assert_false(has_uid(dc, 1, BLOCK));
	g_assert_false(has_uid(dc, 20, BLOCK));
	g_assert_true(has_uid(dc, 40, BLOCK));
	imapfs_disk_cache_close(dc);
}

static void test_evict_limits(Fixture *f, gconstpointer data)
{
	ImapfsDiskCache *dc = open_dc(f, record_len(&key, 1000) - 1);

	put_uid(dc, 7, 1000); /* larger than the whole cache */
	g_assert_false(has_uid(dc, 7, 1000));
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, 0);
	imapfs_disk_cache_close(dc);

	dc = open_dc(f, BIG);
	put_uid(dc, 8, 1000);
	imapfs_disk_cache_close(dc);
	/* 0: nothing, not even what was there. */
	dc = open_dc(f, 0);
	g_assert_false(has_uid(dc, 8, 1000));
	g_autoptr(GBytes) empty = g_bytes_new(NULL, 0);
	put(dc, &key, empty);
	assert_miss(dc, &key);
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, 0);
	g_assert_cmpuint(bytes_on_disk(f), ==, 0);
	imapfs_disk_cache_close(dc);
}

/* --- damage --- */

static void test_damage_data(Fixture *f, gconstpointer data)
{
	ImapfsDiskCache *dc = open_dc(f, BIG);
	g_autofree char *path = seg_file(f, 1);
	g_autoptr(GBytes) block = pattern(1000, 2);
	ImapfsBlockKey k2 = uid_key(2);

	put_uid(dc, 1, 1000);
	guint64 at = put_at(dc, &k2, block);
	put_uid(dc, 3, 1000);
	flip_at(path, at + record_len(&k2, 1000) - 500);

	expect_damage_warning();
	g_assert_false(has_uid(dc, 2, 1000));
	g_test_assert_expected_messages();
	g_assert_false(has_uid(dc, 2, 1000)); /* forgotten: quietly */
	g_assert_true(has_uid(dc, 1, 1000));
	g_assert_true(has_uid(dc, 3, 1000));
	put(dc, &k2, block);
	assert_hit(dc, &k2, block);
	imapfs_disk_cache_close(dc);

	/* The scan does not read data: the good copy is the later one. */
	dc = open_dc(f, BIG);
	assert_hit(dc, &k2, block);
	g_assert_true(has_uid(dc, 1, 1000));
	g_assert_true(has_uid(dc, 3, 1000));
	imapfs_disk_cache_close(dc);
}

/* A bad header in the middle of a segment: a miss at once; at the next
 * open the scan stops there and cuts the file. */
static void test_damage_header(Fixture *f, gconstpointer data)
{
	ImapfsDiskCache *dc = open_dc(f, BIG);
	g_autofree char *path = seg_file(f, 1);
	g_autoptr(GBytes) block = pattern(1000, 3);
	ImapfsBlockKey k3 = uid_key(3);

	put_uid(dc, 1, 1000);
	put_uid(dc, 2, 1000);
	guint64 at = put_at(dc, &k3, block);
	put_uid(dc, 4, 1000);
	put_uid(dc, 5, 1000);
	flip_at(path, at + 16); /* the data length */

	expect_damage_warning();
	g_assert_false(has_uid(dc, 3, 1000));
	g_test_assert_expected_messages();
	for (guint32 uid = 1; uid <= 5; uid++)
		g_assert_true(has_uid(dc, uid, 1000) == (uid != 3));
	imapfs_disk_cache_close(dc);

	dc = open_expecting_damage(f, BIG);
	g_assert_cmpuint(file_size(path), ==, at);
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, at);
	for (guint32 uid = 1; uid <= 5; uid++)
		g_assert_true(has_uid(dc, uid, 1000) == (uid < 3));
	put_uid(dc, 4, 1000);
	g_assert_true(has_uid(dc, 4, 1000));
	imapfs_disk_cache_close(dc);

	dc = open_dc(f, BIG);
	for (guint32 uid = 1; uid <= 5; uid++)
		g_assert_true(has_uid(dc, uid, 1000) == (uid != 3 && uid != 5));
	imapfs_disk_cache_close(dc);
}

/* Each byte of header and key is checked by the scan at open. */
static void test_damage_scan_every_byte(Fixture *f, gconstpointer data)
{
	ImapfsDiskCache *dc = open_dc(f, BIG);
	g_autofree char *path = seg_file(f, 1);
	g_autoptr(GBytes) block = pattern(100, 2);
	ImapfsBlockKey k2 = uid_key(2);
	g_autofree char *pristine = NULL;
	gsize size;

	put_uid(dc, 1, 100);
	guint64 at = put_at(dc, &k2, block);
	put_uid(dc, 3, 100);
	imapfs_disk_cache_close(dc);
	g_assert_true(g_file_get_contents(path, &pristine, &size, NULL));

	for (gsize i = 0; i < record_len(&k2, 0); i++) {
		flip_at(path, at + i);
		dc = open_expecting_damage(f, BIG);
		g_assert_cmpuint(file_size(path), ==, at);
		g_assert_true(has_uid(dc, 1, 100));
		g_assert_false(has_uid(dc, 2, 100));
		g_assert_false(has_uid(dc, 3, 100));
		imapfs_disk_cache_close(dc);
		g_assert_true(g_file_set_contents(path, pristine, size, NULL));
	}
}

/* Every byte of a record matters to a get, header, key and data. */
static void test_damage_every_byte(Fixture *f, gconstpointer data)
{
	g_autoptr(GBytes) block = pattern(16, 1);
	g_autoptr(ImapfsDiskCache) dc = open_dc(f, BIG);
	gsize len = record_len(&key, 16);

	put(dc, &key, block);
	for (gsize i = 0; i < len; i++) {
		/* The record is the last one of the newest segment. */
		g_autoptr(GPtrArray) names = seg_names(f);
		g_autofree char *path = g_build_filename(
			f->dir, "segments", names->pdata[names->len - 1], NULL);
		guint64 at = file_size(path) - (len + 7) / 8 * 8;
		flip_at(path, at + i);
		/* Warned about once; the repeats are only traced. */
		if (i == 0)
			expect_damage_warning();
		assert_miss(dc, &key);
		g_test_assert_expected_messages();
		put(dc, &key, block);
		assert_hit(dc, &key, block);
	}
}

/* A record where another key's should be (a bug, a stray write): its own
 * checksums are fine, its key is not the one asked for. */
static void test_damage_wrong_key(Fixture *f, gconstpointer data)
{
	g_autoptr(ImapfsDiskCache) dc = open_dc(f, BIG);
	g_autofree char *path = seg_file(f, 1);
	g_autoptr(GBytes) a = pattern(1000, 1);
	g_autoptr(GBytes) b = pattern(1000, 2);
	ImapfsBlockKey other = uid_key(8);

	guint64 at_a = put_at(dc, &key, a);
	guint64 at_b = put_at(dc, &other, b);
	gsize len = at_b - at_a;
	int fd = open(path, O_RDWR);
	g_autofree guint8 *rec = g_malloc(len);
	g_assert_cmpint(pread(fd, rec, len, at_a), ==, (gssize)len);
	g_assert_cmpint(pwrite(fd, rec, len, at_b), ==, (gssize)len);
	close(fd);

	expect_damage_warning();
	assert_miss(dc, &other);
	g_test_assert_expected_messages();
	assert_hit(dc, &key, a);
}

/* A segment cut in its last record, as by a crash during a write. */
static void check_torn(Fixture *f, gsize cut)
{
	ImapfsDiskCache *dc = open_dc(f, BIG);
	g_autofree char *path = seg_file(f, 1);
	g_autoptr(GBytes) block = pattern(1000, 3);
	ImapfsBlockKey k3 = uid_key(3);

	put_uid(dc, 1, 1000);
	put_uid(dc, 2, 1000);
	guint64 at = put_at(dc, &k3, block);
	imapfs_disk_cache_close(dc);
	g_assert_cmpint(truncate(path, at + cut), ==, 0);

	dc = open_expecting_damage(f, BIG);
	g_assert_cmpuint(file_size(path), ==, at);
	g_assert_true(has_uid(dc, 1, 1000));
	g_assert_true(has_uid(dc, 2, 1000));
	assert_miss(dc, &k3);
	put(dc, &k3, block);
	put_uid(dc, 4, 1000);
	assert_hit(dc, &k3, block);
	g_assert_true(has_uid(dc, 4, 1000));
	imapfs_disk_cache_close(dc);

	dc = open_dc(f, BIG); /* and no warning */
	for (guint32 uid = 1; uid <= 4; uid++)
		g_assert_true(has_uid(dc, uid, 1000));
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, bytes_on_disk(f));
	imapfs_disk_cache_close(dc);
	rm_rf(f->dir);
}

static void test_damage_torn(Fixture *f, gconstpointer data)
{
	check_torn(f, 5);			   /* in the magic */
	check_torn(f, HDR_LEN + 10);		   /* in the key */
	check_torn(f, HDR_LEN + 100 + 500);	   /* in the data */
	check_torn(f, record_len(&key, 1000) + 1); /* in the padding */
}

/* --- the directory --- */

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
	put_uid(dc, 1, 100);
	imapfs_disk_cache_close(dc);
	g_assert_cmpuint(mode_of(f->dir), ==, 0700);
	g_autofree char *seg = seg_file(f, 1);
	g_assert_cmpuint(mode_of(seg), ==, 0600);

	/* Made private when found open to others. */
	g_assert_cmpint(chmod(f->dir, 0755), ==, 0);
	dc = open_dc(f, BIG);
	g_assert_cmpuint(mode_of(f->dir), ==, 0700);
	g_autofree char *lock = g_build_filename(f->dir, "lock", NULL);
	g_assert_cmpuint(mode_of(lock), ==, 0600);
	imapfs_disk_cache_close(dc);

	/* Also when made by someone else before the first open. */
	g_free(f->dir);
	f->dir = g_build_filename(f->tmp, "pre", NULL);
	g_assert_cmpint(g_mkdir(f->dir, 0755), ==, 0);
	g_assert_cmpint(chmod(f->dir, 0755), ==, 0);
	dc = open_dc(f, BIG);
	g_assert_cmpuint(mode_of(f->dir), ==, 0700);
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
	g_autofree char *dir = g_path_get_dirname(path);

	g_assert_cmpint(g_mkdir_with_parents(dir, 0700), ==, 0);
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
	g_autofree char *blocks = g_build_filename(f->dir, "blocks", NULL);
	g_autofree char *text = NULL;

	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, 0);
	g_assert_cmpuint(bytes_on_disk(f), ==, 0);
	assert_miss(dc, &key);
	g_assert_null(imapfs_disk_cache_get_meta(dc, "INBOX"));
	g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
	g_assert_cmpstr(text, ==, "imapfs-cache 2\n");
	g_assert_true(exists(notes));
	g_assert_false(exists(blocks));
}

static void test_version(Fixture *f, gconstpointer data)
{
	g_autofree char *path = g_build_filename(f->dir, "VERSION", NULL);

	fill(f);
	write_file(f, "notes", "not ours: kept");
	write_file(f, "VERSION", "imapfs-cache 0\n");
	check_wiped(f);

	/* The layout of version 1: a file per block. */
	fill(f);
	write_file(f, "VERSION", "imapfs-cache 1\n");
	write_file(f, "blocks/0123abcd/42/7-0", "IMFSBLK1...");
	write_file(f, "blocks/.trash-abcdef/1/7-0", "dropped");
	check_wiped(f);

	fill(f);
	g_assert_cmpint(g_unlink(path), ==, 0);
	check_wiped(f);
}

static void test_stray_files(Fixture *f, gconstpointer data)
{
	g_autoptr(GBytes) block = pattern(100, 1);
	const char *strays[] = {
		"segments/junk",
		"segments/0000000000000001.seg.tmp",
		"segments/000000000000000A.seg",
		"segments/000000000000001.seg",
		"segments/sub/0000000000000002.seg",
		"meta/.tmp-abcdef",
	};
	ImapfsDiskCache *dc = open_dc(f, BIG);

	put(dc, &key, block);
	guint64 size = imapfs_disk_cache_bytes(dc);
	imapfs_disk_cache_close(dc);
	for (gsize i = 0; i < G_N_ELEMENTS(strays); i++)
		write_file(f, strays[i], "stray");

	dc = open_dc(f, BIG);
	for (gsize i = 0; i < G_N_ELEMENTS(strays); i++) {
		g_autofree char *path =
			g_build_filename(f->dir, strays[i], NULL);
		g_assert_false(exists(path));
	}
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, size);
	g_assert_cmpuint(bytes_on_disk(f), ==, size);
	assert_hit(dc, &key, block);
	imapfs_disk_cache_close(dc);
}

/* --- drop --- */

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

	for (gsize i = 0; i < G_N_ELEMENTS(keys); i++)
		put(dc, &keys[i], block);
	guint64 bytes = imapfs_disk_cache_bytes(dc);
	imapfs_disk_cache_drop_mailbox(dc, "INBOX", 2);
	assert_miss(dc, &keys[0]);
	assert_hit(dc, &keys[1], block);
	assert_miss(dc, &keys[2]);
	assert_hit(dc, &keys[3], block);
	/* The space stays until eviction; the tombstone takes some. */
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), >, bytes);
	bytes = imapfs_disk_cache_bytes(dc);
	g_assert_cmpuint(bytes, ==, bytes_on_disk(f));
	/* Nothing to drop: no tombstone. */
	imapfs_disk_cache_drop_mailbox(dc, "INBOX", 2);
	imapfs_disk_cache_drop_mailbox(dc, "Nowhere", 0);
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, bytes);
	imapfs_disk_cache_close(dc);

	/* The tombstone drops them again at open. */
	dc = open_dc(f, BIG);
	assert_miss(dc, &keys[0]);
	assert_hit(dc, &keys[1], block);
	assert_miss(dc, &keys[2]);
	assert_hit(dc, &keys[3], block);
	imapfs_disk_cache_drop_mailbox(dc, "INBOX", 0);
	assert_miss(dc, &keys[1]);
	assert_hit(dc, &keys[3], block);
	/* A put after a drop counts. */
	put(dc, &keys[0], block);
	assert_hit(dc, &keys[0], block);
	imapfs_disk_cache_close(dc);

	dc = open_dc(f, BIG);
	assert_hit(dc, &keys[0], block);
	assert_miss(dc, &keys[1]);
	assert_miss(dc, &keys[2]);
	assert_hit(dc, &keys[3], block);
	imapfs_disk_cache_close(dc);
}

/* --- meta --- */

static char *the_meta_file(Fixture *f)
{
	g_autofree char *dir = g_build_filename(f->dir, "meta", NULL);
	g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
	const char *name = d ? g_dir_read_name(d) : NULL;

	g_assert_nonnull(name);
	char *path = g_build_filename(dir, name, NULL);
	g_assert_null(g_dir_read_name(d));
	return path;
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
	assert_meta(dc, "INBOX", second);
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, 0);
	imapfs_disk_cache_close(dc);

	dc = open_as(f, "bob", BIG);
	assert_meta(dc, "INBOX", NULL);
	imapfs_disk_cache_close(dc);

	dc = open_dc(f, BIG);
	assert_meta(dc, "INBOX", second);
	g_autofree char *path = the_meta_file(f);
	flip_at(path, file_size(path) - 1);
	expect_damage_warning();
	assert_meta(dc, "INBOX", NULL);
	g_test_assert_expected_messages();
	g_assert_false(exists(path));
	imapfs_disk_cache_put_meta(dc, "INBOX", empty);
	assert_meta(dc, "INBOX", empty);
	g_assert_cmpint(truncate(path, file_size(path) - 1), ==, 0);
	assert_meta(dc, "INBOX", NULL); /* traced only */
	imapfs_disk_cache_close(dc);
}

/* --- write failures --- */

/* Root ignores modes, so the segment cannot be created because its
 * directory is a file. */
static void test_put_cannot_create(Fixture *f, gconstpointer data)
{
	g_autoptr(GBytes) block = pattern(100, 1);
	g_autofree char *dir = g_build_filename(f->dir, "segments", NULL);
	g_autoptr(ImapfsDiskCache) dc = open_dc(f, BIG);

	g_assert_cmpint(g_rmdir(dir), ==, 0);
	g_assert_true(g_file_set_contents(dir, "in the way", -1, NULL));
	g_test_expect_message("imapfs", G_LOG_LEVEL_WARNING, "*cannot create*");
	put(dc, &key, block);
	g_test_assert_expected_messages();
	put(dc, &key, block); /* traced only */
	assert_miss(dc, &key);
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, 0);

	g_assert_cmpint(g_unlink(dir), ==, 0);
	g_assert_cmpint(g_mkdir(dir, 0700), ==, 0);
	put(dc, &key, block);
	assert_hit(dc, &key, block);
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, bytes_on_disk(f));
}

/* A write cut short, as by a full disk: RLIMIT_FSIZE makes pwritev() fail
 * with EFBIG half-way through the record. */
static void test_put_disk_full(Fixture *f, gconstpointer data)
{
	g_autoptr(GBytes) big = pattern(8000, 1);
	g_autoptr(GBytes) small = pattern(10, 2);
	ImapfsBlockKey k2 = uid_key(8), k3 = uid_key(9);
	ImapfsDiskCache *dc = open_dc(f, BIG);
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
	/* The torn parts were cut off again. */
	g_assert_cmpuint(bytes_on_disk(f), ==, imapfs_disk_cache_bytes(dc));
	/* With room again, the cache works as before. */
	put(dc, &key, big);
	assert_hit(dc, &key, big);
	imapfs_disk_cache_close(dc);

	dc = open_dc(f, BIG); /* no damage found */
	assert_hit(dc, &k3, small);
	assert_hit(dc, &key, big);
	imapfs_disk_cache_close(dc);
}

/* --- threads --- */

#define N_THREADS 4
#define N_KEYS 24

typedef struct {
	ImapfsDiskCache *dc;
	guint seed;
} Worker;

static ImapfsBlockKey thread_key(guint i)
{
	ImapfsBlockKey k = {"INBOX", 1 + i % 2, i % 8, i / 12 ? "1" : "",
			    i % 3};

	return k;
}

static GBytes *thread_data(guint i)
{
	return pattern(1000 + 9000 * i, i);
}

/* Gets a key, checks it, puts it on a miss; now and then a drop. A small
 * limit keeps segments rotating and evicting, and hits rescued. */
static gpointer worker(gpointer data)
{
	Worker *w = data;
	g_autoptr(GRand) rand = g_rand_new_with_seed(w->seed);

	for (guint n = 0; n < 600; n++) {
		guint i = g_rand_int_range(rand, 0, N_KEYS);
		ImapfsBlockKey k = thread_key(i);
		g_autoptr(GBytes) want = thread_data(i);
		g_autoptr(GBytes) got = imapfs_disk_cache_get(w->dc, &k);
		if (got)
			g_assert_true(g_bytes_equal(got, want));
		else
			put(w->dc, &k, want);
		if (w->seed == 0 && n % 37 == 36)
			imapfs_disk_cache_drop_mailbox(w->dc, "INBOX", 0);
		if (w->seed == 1 && n % 29 == 28)
			imapfs_disk_cache_drop_mailbox(w->dc, "INBOX", 2);
	}
	return NULL;
}

static void check_all(ImapfsDiskCache *dc)
{
	for (guint i = 0; i < N_KEYS; i++) {
		ImapfsBlockKey k = thread_key(i);
		g_autoptr(GBytes) want = thread_data(i);
		g_autoptr(GBytes) got = imapfs_disk_cache_get(dc, &k);
		g_assert_true(got == NULL || g_bytes_equal(got, want));
	}
}

static void test_threads(Fixture *f, gconstpointer data)
{
	const guint64 max = 2 * MIB;
	ImapfsDiskCache *dc = open_dc(f, max);
	Worker workers[N_THREADS];
	GThread *threads[N_THREADS];

	for (guint t = 0; t < N_THREADS; t++) {
		workers[t] = (Worker){dc, t};
		threads[t] = g_thread_new("worker", worker, &workers[t]);
	}
	for (guint t = 0; t < N_THREADS; t++)
		g_thread_join(threads[t]);
	/* The counts and the directory agree. */
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), <=, max);
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, bytes_on_disk(f));
	check_all(dc);
	imapfs_disk_cache_close(dc);

	dc = open_dc(f, max); /* no damage found */
	g_assert_cmpuint(imapfs_disk_cache_bytes(dc), ==, bytes_on_disk(f));
	check_all(dc);
	imapfs_disk_cache_close(dc);
}

/* Not an assertion on time: the number, for whoever reads the log. */
static void test_open_timing(Fixture *f, gconstpointer data)
{
	const guint n = 4000, size = 16 * 1024;
	ImapfsDiskCache *dc = open_dc(f, 1024 * MIB);
	g_autoptr(GBytes) block = pattern(size, 1);
	gsize len;
	const void *p = g_bytes_get_data(block, &len);

	gint64 t0 = g_get_monotonic_time();
	for (guint32 uid = 1; uid <= n; uid++) {
		ImapfsBlockKey k = uid_key(uid);
		imapfs_disk_cache_put(dc, &k, p, len);
	}
	gint64 t1 = g_get_monotonic_time();
	imapfs_disk_cache_close(dc);
	gint64 t2 = g_get_monotonic_time();
	dc = open_dc(f, 1024 * MIB);
	gint64 t3 = g_get_monotonic_time();
	g_test_message("%u puts of %u bytes: %.1f ms; open: %.1f ms", n, size,
		       (t1 - t0) / 1000.0, (t3 - t2) / 1000.0);
	ImapfsBlockKey last = uid_key(n);
	assert_hit(dc, &last, block);
	imapfs_disk_cache_close(dc);
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
	add("/disk-cache/put-get/large-record", test_large_record);
	add("/disk-cache/key/distinct", test_keys_distinct);
	add("/disk-cache/evict/oldest-segment", test_evict_oldest);
	add("/disk-cache/evict/lru", test_evict_lru);
	add("/disk-cache/evict/rescue-budget", test_evict_rescue_budget);
	add("/disk-cache/evict/reopen", test_evict_reopen);
	add("/disk-cache/evict/limits", test_evict_limits);
	add("/disk-cache/damage/data", test_damage_data);
	add("/disk-cache/damage/header", test_damage_header);
	add("/disk-cache/damage/scan-every-byte", test_damage_scan_every_byte);
	add("/disk-cache/damage/every-byte", test_damage_every_byte);
	add("/disk-cache/damage/wrong-key", test_damage_wrong_key);
	add("/disk-cache/damage/torn", test_damage_torn);
	add("/disk-cache/open/busy", test_lock_busy);
	add("/disk-cache/open/private", test_dir_private);
	add("/disk-cache/open/not-a-directory", test_dir_not_a_directory);
	add("/disk-cache/open/version", test_version);
	add("/disk-cache/open/stray-files", test_stray_files);
	add("/disk-cache/open/timing", test_open_timing);
	add("/disk-cache/drop/mailbox", test_drop_mailbox);
	add("/disk-cache/meta", test_meta);
	add("/disk-cache/put/cannot-create", test_put_cannot_create);
	add("/disk-cache/put/disk-full", test_put_disk_full);
	add("/disk-cache/threads", test_threads);
	return g_test_run();
}
