/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Replays fuzz inputs without libFuzzer: runs LLVMFuzzerTestOneInput over
 * every file named on the command line, and over every file in a directory
 * named there, so that the corpus and past crashes are regression tests in
 * the ordinary gcc build.
 */
#include <stdio.h>
#include <string.h>

#include <glib.h>

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size);

static gboolean replay_file(const char *path)
{
	g_autofree char *data = NULL;
	g_autoptr(GError) error = NULL;
	gsize len = 0;

	if (!g_file_get_contents(path, &data, &len, &error)) {
		fprintf(stderr, "cannot read \"%s\": %s\n", path,
			error->message);
		return FALSE;
	}
	LLVMFuzzerTestOneInput((const guint8 *)data, len);
	return TRUE;
}

static int compare_paths(gconstpointer a, gconstpointer b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted, so that a failure always shows up at the same input. */
static int replay_dir(const char *path, guint *count)
{
	g_autoptr(GError) error = NULL;
	g_autoptr(GDir) dir = g_dir_open(path, 0, &error);
	g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
	const char *name;
	int failed = 0;

	if (!dir) {
		fprintf(stderr, "cannot open \"%s\": %s\n", path,
			error->message);
		return 1;
	}
	while ((name = g_dir_read_name(dir)))
		g_ptr_array_add(names, g_build_filename(path, name, NULL));
	g_ptr_array_sort(names, compare_paths);
	for (guint i = 0; i < names->len; i++) {
		(*count)++;
		failed |= !replay_file(names->pdata[i]);
	}
	return failed;
}

int main(int argc, char **argv)
{
	guint count = 0;
	int failed = 0;

	for (int i = 1; i < argc; i++) {
		if (g_file_test(argv[i], G_FILE_TEST_IS_DIR)) {
			failed |= replay_dir(argv[i], &count);
		} else {
			count++;
			failed |= !replay_file(argv[i]);
		}
	}
	printf("replayed %u input(s)\n", count);
	return failed || count == 0;
}
