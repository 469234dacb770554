/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests for names.c: modified UTF-7, level escaping, mailbox levels. */
#include <string.h>

#include "imapfs/names.h"
#include "imapfs/error.h"

typedef struct {
	const char *utf8;
	const char *mutf7;
} Pair;

/* Decoding and encoding must be exact inverses on these. */
static const Pair mutf7_pairs[] = {
	{"", ""},
	{"INBOX", "INBOX"},
	{"Sent Items", "Sent Items"},
	{"&", "&-"},
	{"&&x&&", "&-&-x&-&-"},
	{"a&b", "a&-b"},
	{"Entwürfe", "Entw&APw-rfe"},
	{"tietäjä", "tiet&AOQ-j&AOQ-"},
	{"ää", "&AOQA5A-"},
	{"äää", "&AOQA5ADk-"},
	{"日本語", "&ZeVnLIqe-"},
	{"台北", "&U,BTFw-"},
	{"~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"},
	{"\xf0\x9f\x98\x80", "&2D3eAA-"},     /* U+1F600 */
	{"x\xf0\x9f\x93\xa7y", "x&2D3c5w-y"}, /* U+1F4E7 */
	{"ä&\xf0\x9f\x98\x80-", "&AOQ-&-&2D3eAA--"},
	{"tab\there", "tab&AAk-here"}, /* control char */
	{"\x7f", "&AH8-"},
	{"\xef\xbf\xbd", "&,,0-"}, /* U+FFFD */
};

static void test_mutf7_decode(void)
{
	for (gsize i = 0; i < G_N_ELEMENTS(mutf7_pairs); i++) {
		g_autoptr(GError) error = NULL;
		g_autofree char *s =
			imapfs_mutf7_decode(mutf7_pairs[i].mutf7, &error);

		g_assert_no_error(error);
		g_assert_cmpstr(s, ==, mutf7_pairs[i].utf8);
	}
}

static void test_mutf7_encode(void)
{
	for (gsize i = 0; i < G_N_ELEMENTS(mutf7_pairs); i++) {
		g_autoptr(GError) error = NULL;
		g_autofree char *s =
			imapfs_mutf7_encode(mutf7_pairs[i].utf8, &error);

		g_assert_no_error(error);
		g_assert_cmpstr(s, ==, mutf7_pairs[i].mutf7);
	}
}

/* Every code point class through encode then decode, at every length of
 * run so that all three base64 phases and the padding are exercised. */
static void test_mutf7_roundtrip(void)
{
	static const gunichar samples[] = {
		0x01,	0x1f,	0x7f,	0x80,	0xe9,	 0x7ff,	  0x800,
		0x65e5, 0xd7ff, 0xe000, 0xfffd, 0x10000, 0x1f600, 0x10ffff};

	for (gsize i = 0; i < G_N_ELEMENTS(samples); i++) {
		for (int run = 1; run <= 4; run++) {
			g_autoptr(GString) in = g_string_new("a");
			g_autoptr(GError) error = NULL;
			g_autofree char *enc = NULL, *dec = NULL;

			for (int k = 0; k < run; k++)
				g_string_append_unichar(in, samples[i]);
			g_string_append(in, "&z");
			enc = imapfs_mutf7_encode(in->str, &error);
			g_assert_no_error(error);
			dec = imapfs_mutf7_decode(enc, &error);
			g_assert_no_error(error);
			g_assert_cmpstr(dec, ==, in->str);
		}
	}
}

static void assert_decode_fails(const char *mutf7)
{
	g_autoptr(GError) error = NULL;
	g_autofree char *s = imapfs_mutf7_decode(mutf7, &error);

	if (s)
		g_error("\"%s\" decoded to \"%s\", expected an error", mutf7,
			s);
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_PROTOCOL);
}

static void test_mutf7_invalid(void)
{
	static const char *const bad[] = {
		"Entw\xc3\xbcrfe",    /* raw UTF-8 */
		"a\x80",	      /* non-ASCII byte */
		"tab\there",	      /* raw control character */
		"&",		      /* unterminated */
		"&AOQ",		      /* unterminated */
		"x&AOQ-y&",	      /* unterminated at the end */
		"&Jjo!",	      /* bad base64 character */
		"&AO/-",	      /* '/' is not modified base64 */
		"&AO=-",	      /* no '=' padding */
		"&A-",		      /* 6 bits: no whole unit */
		"&AOQA-",	      /* spare base64 character */
		"&AOR-",	      /* non-zero padding bits */
		"&AOQA5B-",	      /* non-zero padding bits, 2 units */
		"&AEE-",	      /* encoded 'A' */
		"&ACY-",	      /* encoded '&' */
		"&ACA-",	      /* encoded space */
		"&AH4-",	      /* encoded '~' */
		"&AAA-",	      /* encoded NUL */
		"&2D0-",	      /* lone high surrogate */
		"&2D3YPQ-",	      /* high surrogate + high surrogate */
		"&3gA-",	      /* lone low surrogate */
		"&2D0AQQ-",	      /* high surrogate + 'A' */
		"&2D3eAA-&2D3eAA-",   /* adjacent shifts */
		"&U,BTFw-&ZeVnLIqe-", /* adjacent shifts (Dovecot's case) */
	};

	for (gsize i = 0; i < G_N_ELEMENTS(bad); i++)
		assert_decode_fails(bad[i]);
}

static void test_mutf7_encode_invalid(void)
{
	g_autoptr(GError) error = NULL;
	g_autofree char *s = imapfs_mutf7_encode("bad\xff", &error);

	g_assert_null(s);
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG);
	/* The raw byte must not reach the message. */
	g_assert_null(strchr(error->message, '\xff'));
}

static void test_escape(void)
{
	static const Pair cases[] = {
		/* { level, file name } */
		{"INBOX", "INBOX"}, {"100%", "100%25"},
		{"a/b", "a%2Fb"},   {"%2F", "%252F"},
		{"/", "%2F"},	    {"%", "%25"},
		{".", "%2E"},	    {"..", "%2E%2E"},
		{"...", "..."},	    {".hidden", ".hidden"},
		{"a.b", "a.b"},	    {"Entwürfe", "Entwürfe"},
	};

	for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
		g_autoptr(GError) error = NULL;
		g_autofree char *esc = imapfs_name_escape(cases[i].utf8);
		g_autofree char *back = NULL;

		g_assert_cmpstr(esc, ==, cases[i].mutf7);
		back = imapfs_name_unescape(esc, &error);
		g_assert_no_error(error);
		g_assert_cmpstr(back, ==, cases[i].utf8);
	}
}

static void test_unescape_case(void)
{
	g_autoptr(GError) error = NULL;
	g_autofree char *a = imapfs_name_unescape("a%2fb%2Fc%25%2e", &error);
	g_autofree char *b = NULL;

	g_assert_no_error(error);
	g_assert_cmpstr(a, ==, "a/b/c%.");
	b = imapfs_name_unescape("%2e%2e", &error);
	g_assert_no_error(error);
	g_assert_cmpstr(b, ==, "..");
}

static void test_unescape_invalid(void)
{
	static const char *const bad[] = {"",	 "%",	"%2",  "a%",
					  "%20", "%41", "%zz", "%3F",
					  ".",	 "..",	"a/b", "%2G"};

	for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
		g_autoptr(GError) error = NULL;
		g_autofree char *s = imapfs_name_unescape(bad[i], &error);

		if (s)
			g_error("\"%s\" unescaped to \"%s\"", bad[i], s);
		g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG);
	}
}

typedef struct {
	const char *server;
	char delim;
	gboolean utf8;
	const char *levels[5];
} LevelCase;

static const LevelCase level_cases[] = {
	{"INBOX", '/', FALSE, {"INBOX"}},
	{"Archive/2024", '/', FALSE, {"Archive", "2024"}},
	{"INBOX.Sent.a/b", '.', FALSE, {"INBOX", "Sent", "a/b"}},
	{"a.b/c", '\0', FALSE, {"a.b/c"}},
	{"~peter/mail/&U,BTFw-/&ZeVnLIqe-",
	 '/',
	 FALSE,
	 {"~peter", "mail", "台北", "日本語"}},
	{"INBOX.Entw&APw-rfe", '.', FALSE, {"INBOX", "Entwürfe"}},
	{"INBOX.Entwürfe", '.', TRUE, {"INBOX", "Entwürfe"}},
	{"A&-B/&-", '/', FALSE, {"A&B", "&"}},
	{"a&b", '/', TRUE, {"a&b"}},
};

static void test_levels_good(void)
{
	for (gsize i = 0; i < G_N_ELEMENTS(level_cases); i++) {
		const LevelCase *c = &level_cases[i];
		g_autoptr(GError) error = NULL;
		g_auto(GStrv) levels = imapfs_mailbox_to_levels(
			c->server, c->delim, c->utf8, &error);
		g_autofree char *back = NULL;

		g_assert_no_error(error);
		g_assert_nonnull(levels);
		g_assert_true(
			g_strv_equal((const char *const *)levels, c->levels));
		back = imapfs_mailbox_from_levels(c->levels, c->delim, c->utf8,
						  &error);
		g_assert_no_error(error);
		g_assert_cmpstr(back, ==, c->server);
	}
}

static void test_levels_to_invalid(void)
{
	static const LevelCase bad[] = {
		{"", '/', FALSE, {NULL}},
		{"a//b", '/', FALSE, {NULL}},
		{"a/", '/', FALSE, {NULL}},
		{"/a", '/', FALSE, {NULL}},
		{"INBOX.", '.', FALSE, {NULL}},
		{"", '\0', FALSE, {NULL}},
		{"a/&AOQ", '/', FALSE, {NULL}},
		{"Entwürfe", '/', FALSE, {NULL}},
		{"bad\xff", '/', TRUE, {NULL}},
		{"a\x80"
		 "b",
		 (char)0x80,
		 TRUE,
		 {NULL}},
	};

	for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
		g_autoptr(GError) error = NULL;
		g_auto(GStrv) levels = imapfs_mailbox_to_levels(
			bad[i].server, bad[i].delim, bad[i].utf8, &error);

		if (levels)
			g_error("case %" G_GSIZE_FORMAT ": \"%s\" split", i,
				bad[i].server);
		g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_PROTOCOL);
	}
}

static void assert_from_levels_fails(const char *const *levels, char delim,
				     gboolean utf8)
{
	g_autoptr(GError) error = NULL;
	g_autofree char *s =
		imapfs_mailbox_from_levels(levels, delim, utf8, &error);

	g_assert_null(s);
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG);
}

static void test_levels_from_invalid(void)
{
	const char *none[] = {NULL};
	const char *empty[] = {"a", "", NULL};
	const char *slash[] = {"a", "b/c", NULL};
	const char *dot[] = {"INBOX", "a.b", NULL};
	const char *nested[] = {"a", "b", NULL};
	const char *bad_utf8[] = {"a\xff", NULL};

	assert_from_levels_fails(none, '/', FALSE);
	assert_from_levels_fails(empty, '/', FALSE);
	assert_from_levels_fails(slash, '/', FALSE);
	assert_from_levels_fails(dot, '.', FALSE);
	assert_from_levels_fails(dot, '.', TRUE);
	assert_from_levels_fails(nested, '\0', FALSE);
	assert_from_levels_fails(bad_utf8, '/', TRUE);
	assert_from_levels_fails(bad_utf8, '/', FALSE);
}

/* A level holding the other namespace's delimiter is fine. */
static void test_levels_from_foreign_delim(void)
{
	const char *levels[] = {"a/b", "c", NULL};
	g_autoptr(GError) error = NULL;
	g_autofree char *s =
		imapfs_mailbox_from_levels(levels, '.', FALSE, &error);

	g_assert_no_error(error);
	g_assert_cmpstr(s, ==, "a/b.c");
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/names/mutf7/decode", test_mutf7_decode);
	g_test_add_func("/names/mutf7/encode", test_mutf7_encode);
	g_test_add_func("/names/mutf7/roundtrip", test_mutf7_roundtrip);
	g_test_add_func("/names/mutf7/invalid", test_mutf7_invalid);
	g_test_add_func("/names/mutf7/encode-invalid",
			test_mutf7_encode_invalid);
	g_test_add_func("/names/escape/roundtrip", test_escape);
	g_test_add_func("/names/escape/case", test_unescape_case);
	g_test_add_func("/names/escape/invalid", test_unescape_invalid);
	g_test_add_func("/names/levels/good", test_levels_good);
	g_test_add_func("/names/levels/to-invalid", test_levels_to_invalid);
	g_test_add_func("/names/levels/from-invalid", test_levels_from_invalid);
	g_test_add_func("/names/levels/foreign-delim",
			test_levels_from_foreign_delim);
	return g_test_run();
}
