/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libFuzzer target for mailbox names: modified UTF-7, the escaping of one
 * level into a file name, and the split of a server name into levels.
 *
 * The first byte of the input is the hierarchy delimiter, the rest (up to
 * a NUL) a mailbox name as a server would send it. The name is decoded as
 * modified UTF-7, encoded as if it were UTF-8, escaped, unescaped and split
 * into levels both with and without UTF8=ACCEPT. Every round trip names.h
 * promises is checked; a broken promise aborts, so the fuzzer reports it
 * as a crash.
 */
#include <stdlib.h>
#include <string.h>

#include "imapfs/error.h"
#include "imapfs/names.h"

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size);

static void check(gboolean ok)
{
	if (!ok)
		abort();
}

static void check_error(GError *error, int code)
{
	check(g_error_matches(error, IMAPFS_ERROR, code));
	check(g_utf8_validate(error->message, -1, NULL));
}

/* A decoded name encodes back to exactly @mutf7: the decoder accepts only
 * the canonical form. */
static void check_mutf7_decode(const char *mutf7)
{
	g_autoptr(GError) error = NULL;
	g_autofree char *utf8 = imapfs_mutf7_decode(mutf7, &error);
	g_autofree char *again = NULL;

	if (!utf8) {
		check_error(error, IMAPFS_ERROR_PROTOCOL);
		return;
	}
	check(g_utf8_validate(utf8, -1, NULL));
	again = imapfs_mutf7_encode(utf8, &error);
	check(again && strcmp(again, mutf7) == 0);
}

/* Any UTF-8 encodes to printable US-ASCII that decodes back to it. */
static void check_mutf7_encode(const char *utf8)
{
	g_autoptr(GError) error = NULL;
	g_autofree char *mutf7 = imapfs_mutf7_encode(utf8, &error);
	g_autofree char *again = NULL;

	if (!g_utf8_validate(utf8, -1, NULL)) {
		check(mutf7 == NULL);
		check_error(error, IMAPFS_ERROR_CONFIG);
		return;
	}
	check(mutf7 != NULL);
	for (const char *p = mutf7; *p; p++)
		check(*p >= 0x20 && *p <= 0x7e);
	again = imapfs_mutf7_decode(mutf7, &error);
	check(again && strcmp(again, utf8) == 0);
}

/* What the kernel would not take as one directory name. */
static gboolean is_bad_file_name(const char *name)
{
	return *name == '\0' || strcmp(name, ".") == 0 ||
	       strcmp(name, "..") == 0 || strchr(name, '/') != NULL;
}

/* A level is shown as a file name that means it and nothing else. */
static void check_escape(const char *level)
{
	g_autoptr(GError) error = NULL;
	g_autofree char *file = imapfs_name_escape(level);
	g_autofree char *back = NULL;

	if (*level == '\0') {
		check(*file == '\0');
		return;
	}
	check(!is_bad_file_name(file));
	back = imapfs_name_unescape(file, &error);
	check(back && strcmp(back, level) == 0);
}

/* A file name the user typed: refused with a reason, or a level that
 * escapes to a name meaning the same level. */
static void check_unescape(const char *file)
{
	g_autoptr(GError) error = NULL;
	g_autofree char *level = imapfs_name_unescape(file, &error);

	if (!level) {
		check_error(error, IMAPFS_ERROR_CONFIG);
		return;
	}
	check(!is_bad_file_name(file) && *level != '\0');
	check_escape(level);
}

/* Levels are non-empty UTF-8 without the delimiter, each with a file name,
 * and they join back to the server's very name. */
static void check_levels(const char *name, char delim, gboolean utf8)
{
	g_autoptr(GError) error = NULL;
	g_auto(GStrv) levels =
		imapfs_mailbox_to_levels(name, delim, utf8, &error);
	g_autofree char *joined = NULL;

	if (!levels) {
		check_error(error, IMAPFS_ERROR_PROTOCOL);
		return;
	}
	check(levels[0] != NULL && (guchar)delim < 0x80);
	check(delim != '\0' || levels[1] == NULL);
	for (char **l = levels; *l; l++) {
		check(**l != '\0' && g_utf8_validate(*l, -1, NULL));
		check(delim == '\0' || strchr(*l, delim) == NULL);
		check_escape(*l);
	}
	joined = imapfs_mailbox_from_levels((const char *const *)levels, delim,
					    utf8, &error);
	check(joined && strcmp(joined, name) == 0);
}

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size)
{
	g_autofree char *name = NULL;
	char delim;

	if (size == 0)
		return 0;
	delim = (char)data[0];
	name = g_strndup((const char *)data + 1, size - 1);
	check_mutf7_decode(name);
	check_mutf7_encode(name);
	check_escape(name);
	check_unescape(name);
	check_levels(name, delim, FALSE);
	check_levels(name, delim, TRUE);
	return 0;
}
