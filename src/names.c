/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Mailbox names: modified UTF-7 (RFC 3501 5.1.3), the escaping of one level
 * into a file name, and the split of a server name into levels.
 *
 * The decoder is strict on purpose: a name is accepted only if encoding its
 * decoded form gives back exactly the same bytes. Otherwise the mailbox would
 * be shown under one name and addressed under another, and every command on
 * it would fail with a confusing NONEXISTENT.
 */
#include <string.h>

#include "imapfs/names.h"
#include "imapfs/error.h"
#include "imapfs/log.h"

static const char mutf7_b64[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

static gboolean is_printable_ascii(gunichar c)
{
	return c >= 0x20 && c <= 0x7e;
}

static int mutf7_b64_value(char c)
{
	const char *pos;

	if (c == '\0')
		return -1;
	pos = strchr(mutf7_b64, c);
	return pos ? (int)(pos - mutf7_b64) : -1;
}

/* Adds one UTF-16 unit; @high carries a high surrogate to the next call. */
static gboolean mutf7_put_unit(GString *out, guint unit, guint *high,
			       const char **why)
{
	gunichar c;

	if (*high) {
		if (unit < 0xdc00 || unit > 0xdfff) {
			*why = "unpaired high surrogate";
			return FALSE;
		}
		c = 0x10000 + ((*high - 0xd800) << 10) + (unit - 0xdc00);
		*high = 0;
	} else if (unit >= 0xd800 && unit <= 0xdbff) {
		*high = unit;
		return TRUE;
	} else if (unit >= 0xdc00 && unit <= 0xdfff) {
		*why = "unpaired low surrogate";
		return FALSE;
	} else {
		c = unit;
	}
	if (c == 0) {
		*why = "encoded NUL";
		return FALSE;
	}
	if (is_printable_ascii(c)) {
		*why = "encoded printable ASCII";
		return FALSE;
	}
	g_string_append_unichar(out, c);
	return TRUE;
}

/* Decodes "&...-" starting at *pp (on the '&'), leaves *pp after the '-'. */
static gboolean mutf7_decode_shift(const char **pp, GString *out,
				   const char **why)
{
	const char *p = *pp + 1;
	guint32 bits = 0;
	guint nbits = 0, high = 0;

	for (; *p != '-'; p++) {
		int v = mutf7_b64_value(*p);

		if (*p == '\0') {
			*why = "unterminated shift sequence";
			return FALSE;
		}
		if (v < 0) {
			*why = "bad base64 character";
			return FALSE;
		}
		bits = (bits << 6) | (guint32)v;
		nbits += 6;
		if (nbits >= 16) {
			nbits -= 16;
			if (!mutf7_put_unit(out, (bits >> nbits) & 0xffff,
					    &high, why))
				return FALSE;
		}
	}
	/* A whole spare base64 character, or padding that is not zero,
	 * would decode to the same text as a shorter canonical form. */
	if (nbits >= 6) {
		*why = "base64 sequence of a wrong length";
		return FALSE;
	}
	if (bits & ((1u << nbits) - 1)) {
		*why = "non-zero padding bits";
		return FALSE;
	}
	if (high) {
		*why = "unpaired high surrogate";
		return FALSE;
	}
	*pp = p + 1;
	return TRUE;
}

static gboolean mutf7_decode_into(const char *p, GString *out, const char **why)
{
	gboolean after_shift = FALSE;

	while (*p) {
		guchar c = (guchar)*p;

		if (!is_printable_ascii(c)) {
			*why = "byte outside printable US-ASCII";
			return FALSE;
		}
		if (c != '&' || p[1] == '-') {
			g_string_append_c(out, (char)c);
			p += c == '&' ? 2 : 1;
			after_shift = FALSE;
			continue;
		}
		/* The encoder merges adjacent runs into one shift. */
		if (after_shift) {
			*why = "adjacent shift sequences";
			return FALSE;
		}
		if (!mutf7_decode_shift(&p, out, why))
			return FALSE;
		after_shift = TRUE;
	}
	return TRUE;
}

char *imapfs_mutf7_decode(const char *mutf7, GError **error)
{
	g_autoptr(GString) out = g_string_new(NULL);
	const char *why = NULL;

	if (!mutf7_decode_into(mutf7, out, &why)) {
		g_autofree char *q = imapfs_log_quote(mutf7);

		g_set_error(
			error, IMAPFS_ERROR, IMAPFS_ERROR_PROTOCOL,
			"invalid modified UTF-7 (%s) in mailbox name \"%s\"",
			why, q);
		return NULL;
	}
	return g_string_free(g_steal_pointer(&out), FALSE);
}

typedef struct {
	GString *out;
	guint32 bits;
	guint nbits;
	gboolean shifted;
} Mutf7Encoder;

static void mutf7_put_bits(Mutf7Encoder *e, guint unit)
{
	e->bits = (e->bits << 16) | unit;
	e->nbits += 16;
	while (e->nbits >= 6) {
		e->nbits -= 6;
		g_string_append_c(e->out,
				  mutf7_b64[(e->bits >> e->nbits) & 63]);
	}
}

static void mutf7_end_shift(Mutf7Encoder *e)
{
	if (!e->shifted)
		return;
	if (e->nbits > 0)
		g_string_append_c(e->out,
				  mutf7_b64[(e->bits << (6 - e->nbits)) & 63]);
	g_string_append_c(e->out, '-');
	e->bits = 0;
	e->nbits = 0;
	e->shifted = FALSE;
}

static void mutf7_put_char(Mutf7Encoder *e, gunichar c)
{
	if (is_printable_ascii(c)) {
		mutf7_end_shift(e);
		g_string_append_c(e->out, (char)c);
		if (c == '&')
			g_string_append_c(e->out, '-');
		return;
	}
	if (!e->shifted) {
		g_string_append_c(e->out, '&');
		e->shifted = TRUE;
	}
	if (c >= 0x10000) {
		c -= 0x10000;
		mutf7_put_bits(e, 0xd800 + (c >> 10));
		mutf7_put_bits(e, 0xdc00 + (c & 0x3ff));
	} else {
		mutf7_put_bits(e, c);
	}
}

char *imapfs_mutf7_encode(const char *utf8, GError **error)
{
	Mutf7Encoder e = {.out = g_string_new(NULL)};

	if (!g_utf8_validate(utf8, -1, NULL)) {
		g_autofree char *q = imapfs_log_quote(utf8);

		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "invalid UTF-8 in mailbox name \"%s\"", q);
		g_string_free(e.out, TRUE);
		return NULL;
	}
	for (const char *p = utf8; *p; p = g_utf8_next_char(p))
		mutf7_put_char(&e, g_utf8_get_char(p));
	mutf7_end_shift(&e);
	return g_string_free(e.out, FALSE);
}

char *imapfs_name_escape(const char *level)
{
	GString *out;

	if (strcmp(level, ".") == 0)
		return g_strdup("%2E");
	if (strcmp(level, "..") == 0)
		return g_strdup("%2E%2E");
	out = g_string_sized_new(strlen(level));
	for (const char *p = level; *p; p++) {
		if (*p == '%')
			g_string_append(out, "%25");
		else if (*p == '/')
			g_string_append(out, "%2F");
		else
			g_string_append_c(out, *p);
	}
	return g_string_free(out, FALSE);
}

/* The byte a "%XX" at @p stands for, or 0 if it is not one we produce. */
static char name_unescape_one(const char *p)
{
	if (p[0] != '2' || p[1] == '\0')
		return 0;
	switch (g_ascii_toupper(p[1])) {
	case '5':
		return '%';
	case 'F':
		return '/';
	case 'E':
		return '.';
	default:
		return 0;
	}
}

static gboolean name_unescape_into(const char *name, GString *out)
{
	/* The kernel resolves these itself; no escape produces them. */
	if (*name == '\0' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return FALSE;
	for (const char *p = name; *p; p++) {
		char c = *p;

		if (c == '/')
			return FALSE;
		if (c == '%') {
			c = name_unescape_one(p + 1);
			if (c == 0)
				return FALSE;
			p += 2;
		}
		g_string_append_c(out, c);
	}
	return TRUE;
}

char *imapfs_name_unescape(const char *file_name, GError **error)
{
	g_autoptr(GString) out = g_string_new(NULL);

	if (!name_unescape_into(file_name, out)) {
		g_autofree char *q = imapfs_log_quote(file_name);

		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "invalid mailbox file name \"%s\"", q);
		return NULL;
	}
	return g_string_free(g_steal_pointer(&out), FALSE);
}

static char *mailbox_decode(const char *server_name, gboolean utf8,
			    GError **error)
{
	g_autofree char *q = NULL;

	if (!utf8)
		return imapfs_mutf7_decode(server_name, error);
	if (g_utf8_validate(server_name, -1, NULL))
		return g_strdup(server_name);
	q = imapfs_log_quote(server_name);
	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_PROTOCOL,
		    "invalid UTF-8 in mailbox name \"%s\"", q);
	return NULL;
}

char **imapfs_mailbox_to_levels(const char *server_name, char delim,
				gboolean utf8, GError **error)
{
	const char delim_str[2] = {delim, '\0'};
	g_autofree char *decoded = NULL;
	g_auto(GStrv) levels = NULL;

	if ((guchar)delim >= 0x80) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_PROTOCOL,
			    "non-ASCII hierarchy delimiter 0x%02x",
			    (guchar)delim);
		return NULL;
	}
	decoded = mailbox_decode(server_name, utf8, error);
	if (!decoded)
		return NULL;
	/* A printable delimiter is never encoded, so splitting the decoded
	 * name cuts exactly where the server's name has the delimiter. */
	if (delim != '\0' && *decoded != '\0')
		levels = g_strsplit(decoded, delim_str, -1);
	else
		levels = g_strdupv((char *[]){decoded, NULL});
	for (char **l = levels; *l; l++) {
		if (**l == '\0') {
			g_autofree char *q = imapfs_log_quote(server_name);

			g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_PROTOCOL,
				    "empty level in mailbox name \"%s\"", q);
			return NULL;
		}
	}
	return g_steal_pointer(&levels);
}

static gboolean mailbox_check_level(const char *level, char delim,
				    GError **error)
{
	g_autofree char *q = imapfs_log_quote(level);

	if (*level == '\0') {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "empty mailbox level");
		return FALSE;
	}
	if (delim != '\0' && strchr(level, delim)) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "hierarchy delimiter '%c' inside mailbox level "
			    "\"%s\"",
			    delim, q);
		return FALSE;
	}
	if (!g_utf8_validate(level, -1, NULL)) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "invalid UTF-8 in mailbox level \"%s\"", q);
		return FALSE;
	}
	return TRUE;
}

char *imapfs_mailbox_from_levels(const char *const *levels, char delim,
				 gboolean utf8, GError **error)
{
	const char delim_str[2] = {delim, '\0'};
	g_autofree char *joined = NULL;

	if (!levels[0]) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "empty mailbox name");
		return NULL;
	}
	if (delim == '\0' && levels[1]) {
		g_autofree char *q = imapfs_log_quote(levels[1]);

		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "nested mailbox level \"%s\" on a server without "
			    "hierarchy",
			    q);
		return NULL;
	}
	for (const char *const *l = levels; *l; l++) {
		if (!mailbox_check_level(*l, delim, error))
			return NULL;
	}
	joined = g_strjoinv(delim_str, (char **)levels);
	if (utf8)
		return g_steal_pointer(&joined);
	return imapfs_mutf7_encode(joined, error);
}
