/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libFuzzer target for the file names of parts: RFC 2231 and RFC 2047
 * decoding of Content-Type name= and Content-Disposition filename=, and
 * the sanitising that keeps a name inside its parts directory.
 *
 * The input is text, one item a line:
 *     type/subtype
 *     C name=value        a Content-Type parameter
 *     D filename*0*=...   a Content-Disposition parameter
 * A line without '=' adds a name alone, so the lists may be odd, as a
 * server may send them. Every promise of mime.h about the name is checked,
 * and that the name does not change when the media type and parameter
 * names change case; the values also go through the header decoder. A
 * broken promise aborts, so the fuzzer reports it as a crash.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "imapfs/mime.h"

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size);

typedef struct {
	char *type;
	char *subtype;
	GPtrArray *params;	/* of char *, NULL-terminated */
	GPtrArray *disposition; /* of char *, NULL-terminated */
} FuzzPart;

static void check(gboolean ok)
{
	if (!ok)
		abort();
}

static GPtrArray *new_list(void)
{
	GPtrArray *list = g_ptr_array_new_with_free_func(g_free);

	g_ptr_array_add(list, NULL);
	return list;
}

static void list_add(GPtrArray *list, char *s)
{
	list->pdata[list->len - 1] = s;
	g_ptr_array_add(list, NULL);
}

static const char *const *list_strv(GPtrArray *list)
{
	return (const char *const *)list->pdata;
}

/* "C name=value" or "D name=value"; other lines are skipped. */
static void parse_param(FuzzPart *part, const char *line)
{
	GPtrArray *list;
	const char *eq;

	if (strlen(line) < 2 || line[1] != ' ')
		return;
	if (line[0] == 'C')
		list = part->params;
	else if (line[0] == 'D')
		list = part->disposition;
	else
		return;
	line += 2;
	eq = strchr(line, '=');
	list_add(list, eq ? g_strndup(line, eq - line) : g_strdup(line));
	if (eq)
		list_add(list, g_strdup(eq + 1));
}

static void parse_part(FuzzPart *part, const char *text)
{
	g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
	char *slash;

	part->params = new_list();
	part->disposition = new_list();
	if (!lines[0])
		return;
	slash = strchr(lines[0], '/');
	if (slash) {
		part->type = g_strndup(lines[0], slash - lines[0]);
		part->subtype = g_strdup(slash + 1);
	} else if (*lines[0]) {
		part->type = g_strdup(lines[0]);
	}
	for (guint i = 1; lines[i]; i++)
		parse_param(part, lines[i]);
}

static void fuzz_part_clear(FuzzPart *part)
{
	g_clear_pointer(&part->type, g_free);
	g_clear_pointer(&part->subtype, g_free);
	g_clear_pointer(&part->params, g_ptr_array_unref);
	g_clear_pointer(&part->disposition, g_ptr_array_unref);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(FuzzPart, fuzz_part_clear)

static void to_upper(char **s)
{
	char *upper = *s ? g_ascii_strup(*s, -1) : NULL;

	g_free(*s);
	*s = upper;
}

/* Media type and parameter names in upper case: they match in any case. */
static void upper_part(FuzzPart *part)
{
	GPtrArray *lists[] = {part->params, part->disposition};

	to_upper(&part->type);
	to_upper(&part->subtype);
	for (guint l = 0; l < G_N_ELEMENTS(lists); l++) {
		for (guint i = 0; i + 1 < lists[l]->len; i += 2)
			to_upper((char **)&lists[l]->pdata[i]);
	}
}

static gboolean is_bidi_control(gunichar c)
{
	return c == 0x061c || c == 0x200e || c == 0x200f ||
	       (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

/* One path element that shows what it is. */
static void check_safe(const char *name)
{
	gsize len = strlen(name);

	check(len > 0 && len <= NAME_MAX);
	check(g_utf8_validate(name, -1, NULL));
	check(name[0] != '.' && !strpbrk(name, "/\\"));
	for (const char *p = name; *p; p = g_utf8_next_char(p)) {
		gunichar c = g_utf8_get_char(p);

		check(!g_unichar_iscntrl(c) && !is_bidi_control(c));
		check(c == ' ' || !g_unichar_isspace(c));
	}
}

/* "<section>-<file name>", or "<section>.<ext>" with a short lower case
 * extension; attached messages always the latter, as "<section>.eml". */
static void check_part_name(const char *name, const char *section,
			    const FuzzPart *part)
{
	static const char ext_chars[] = "abcdefghijklmnopqrstuvwxyz0123456789";
	gsize n = strlen(section);
	const char *rest = name + n + 1;

	check_safe(name);
	check(strncmp(name, section, n) == 0);
	check(name[n] == '-' || name[n] == '.');
	if (imapfs_mime_is_message(part->type, part->subtype))
		check(strcmp(rest - 1, ".eml") == 0);
	if (name[n] == '.') {
		check(*rest && strspn(rest, ext_chars) == strlen(rest));
		return;
	}
	/* white space folded and trimmed */
	check(*rest && *rest != ' ' && !strstr(rest, "  "));
	check(name[strlen(name) - 1] != ' ');
}

/* Three copies of one name become three names, the first unchanged. */
static void check_unique(const char *name)
{
	const char *const names[] = {name, name, name, NULL};
	g_auto(GStrv) unique = imapfs_mime_unique_names(names);

	check(g_strv_length(unique) == 3);
	check(strcmp(unique[0], name) == 0);
	check(strcmp(unique[0], unique[1]) != 0);
	check(strcmp(unique[0], unique[2]) != 0);
	check(strcmp(unique[1], unique[2]) != 0);
	for (guint i = 0; i < 3; i++)
		check_safe(unique[i]);
}

/* Each value, read as a header: UTF-8 without line breaks. */
static void check_header_decode(GPtrArray *list)
{
	for (guint i = 1; i + 1 < list->len; i += 2) {
		g_autofree char *text =
			imapfs_mime_decode_header(list->pdata[i]);

		check(text && g_utf8_validate(text, -1, NULL));
		check(!strpbrk(text, "\r\n"));
	}
}

static char *part_name(const char *section, const FuzzPart *part)
{
	return imapfs_mime_part_name(section, part->type, part->subtype,
				     list_strv(part->params),
				     list_strv(part->disposition));
}

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size)
{
	static const char *const sections[] = {"1", "2", "1.2",
					       "3.1.4.1.5.9.2.6"};
	const char *section = sections[size % G_N_ELEMENTS(sections)];
	g_autofree char *text = g_strndup((const char *)data, size);
	g_auto(FuzzPart) part = {0};
	g_autofree char *name = NULL;
	g_autofree char *upper = NULL;

	parse_part(&part, text);
	name = part_name(section, &part);
	check(name != NULL);
	check_part_name(name, section, &part);
	check_unique(name);
	check_header_decode(part.params);
	check_header_decode(part.disposition);
	upper_part(&part);
	upper = part_name(section, &part);
	check(strcmp(name, upper) == 0);
	return 0;
}
