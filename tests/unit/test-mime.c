/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests for mime.c: part names, unique names, header decoding and the
 * streaming transfer decoder. */
#include <limits.h>
#include <string.h>

#include "imapfs/mime.h"

#define P(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ---- Helpers ---------------------------------------------------------- */

/* What every part name must be, whatever the server sent. */
static void assert_safe_name(const char *name, const char *section)
{
	g_assert_nonnull(name);
	g_assert_true(g_utf8_validate(name, -1, NULL));
	g_assert_cmpuint(strlen(name), >, 0);
	g_assert_cmpuint(strlen(name), <=, NAME_MAX);
	g_assert_null(strchr(name, '/'));
	g_assert_cmpstr(name, !=, ".");
	g_assert_cmpstr(name, !=, "..");
	g_assert_cmpint(name[0], !=, '.');
	if (section)
		g_assert_true(g_str_has_prefix(name, section));
	for (const char *p = name; *p; p = g_utf8_next_char(p))
		g_assert_false(g_unichar_iscntrl(g_utf8_get_char(p)));
}

static void check_name(const char *section, const char *type,
		       const char *subtype, const char *const *params,
		       const char *const *disposition, const char *expected)
{
	g_autofree char *name = imapfs_mime_part_name(section, type, subtype,
						      params, disposition);

	assert_safe_name(name, section);
	g_assert_cmpstr(name, ==, expected);
}

/* A file name given as the disposition's filename of an application/pdf
 * part at section 2. */
static void check_filename(const char *filename, const char *expected)
{
	check_name("2", "application", "pdf", NULL, P("filename", filename),
		   expected);
}

/* ---- Part names ------------------------------------------------------- */

static void test_name_design_examples(void)
{
	check_name("1", "TEXT", "PLAIN", P("CHARSET", "utf-8"), NULL, "1.txt");
	check_name("2", "text", "html", NULL, NULL, "2.html");
	check_name("3", "application", "pdf", P("name", "x.pdf"),
		   P("filename", "Rechnung März.pdf"), "3-Rechnung März.pdf");
	check_name("2", "application", "pdf", NULL,
		   P("filename", "invoice.pdf"), "2-invoice.pdf");
	check_name("1.1", "text", "plain", NULL, NULL, "1.1.txt");
	check_name("1.2", "text", "html", NULL, NULL, "1.2.html");
	check_name("3", "message", "rfc822", NULL, NULL, "3.eml");
}

static void test_name_type_extensions(void)
{
	static const struct {
		const char *type, *subtype, *ext;
	} cases[] = {
		{"text", "plain", "txt"},
		{"text", "html", "html"},
		{"message", "rfc822", "eml"},
		{"message", "global", "eml"},
		{"image", "jpeg", "jpg"},
		{"image", "png", "png"},
		{"application", "pdf", "pdf"},
		{"Application", "PDF", "pdf"},
		{"text", "calendar", "ics"},
		{"application", "octet-stream", "bin"},
		{"text", "x-something", "txt"},
		{"TEXT", "enriched", "txt"},
		{"application", "x-unknown", "bin"},
		{"image", "x-unknown", "bin"},
		{"audio", "mpeg", "mp3"},
		{"application", "zip", "zip"},
		{NULL, NULL, "bin"},
		{"text", NULL, "bin"},
	};

	for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
		g_autofree char *expected =
			g_strdup_printf("4.%s", cases[i].ext);

		check_name("4", cases[i].type, cases[i].subtype, NULL, NULL,
			   expected);
	}
}

static void test_name_rfc2231_continuation(void)
{
	check_name("3", "application", "pdf", NULL,
		   P("filename*0*", "utf-8''Rechnung%20M", "filename*1*",
		     "%C3%A4rz.pdf"),
		   "3-Rechnung März.pdf");
}

static void test_name_rfc2231_language(void)
{
	check_name("3", "application", "pdf",
		   P("name*0*", "utf-8'de'Rechnung%20M", "name*1*",
		     "%C3%A4rz.pdf"),
		   NULL, "3-Rechnung März.pdf");
	check_name("3", "application", "pdf", NULL,
		   P("filename*", "UTF-8'de-DE'Rechnung%20M%C3%A4rz.pdf"),
		   "3-Rechnung März.pdf");
}

static void test_name_rfc2231_no_charset(void)
{
	check_filename(NULL, "2.pdf");
	check_name("2", "application", "pdf", NULL,
		   P("filename*", "''Rechnung%20Mai.pdf"),
		   "2-Rechnung Mai.pdf");
	/* Unencoded continuations: '%' is literal. */
	check_name("2", "application", "pdf", NULL,
		   P("filename*0", "Rechnung ", "filename*1", "100%.pdf"),
		   "2-Rechnung 100%.pdf");
}

static void test_name_rfc2231_charset(void)
{
	check_name("2", "application", "pdf", NULL,
		   P("filename*", "iso-8859-1''M%E4rz.pdf"), "2-März.pdf");
	/* Declared UTF-8 but Latin-1 bytes: still readable. */
	check_name("2", "application", "pdf", NULL,
		   P("filename*", "utf-8''M%E4rz.pdf"), "2-März.pdf");
	/* A charset nobody knows. */
	check_name("2", "application", "pdf", NULL,
		   P("filename*", "x-unknown''M%E4rz.pdf"), "2-März.pdf");
}

static void test_name_rfc2231_order_and_case(void)
{
	check_name("3", "application", "pdf", NULL,
		   P("filename*1*", "%C3%A4rz.pdf", "FileName*0*",
		     "utf-8''Rechnung%20M"),
		   "3-Rechnung März.pdf");
	/* A repeated index: the first one counts. */
	check_name(
		"3", "application", "pdf", NULL,
		P("filename*0", "a", "filename*0", "b", "filename*1", ".pdf"),
		"3-a.pdf");
	/* Not our parameter. */
	check_name("3", "application", "pdf", NULL,
		   P("filenamex", "a.pdf", "filename*x", "b.pdf",
		     "filename*1234", "c.pdf", "filename**", "d.pdf"),
		   "3.pdf");
}

static void test_name_precedence(void)
{
	/* Disposition filename over type name. */
	check_name("2", "application", "pdf", P("name", "b.pdf"),
		   P("filename", "a.pdf"), "2-a.pdf");
	check_name("2", "application", "pdf", P("name", "b.pdf"), NULL,
		   "2-b.pdf");
	/* RFC 2231 over plain, in either order. */
	check_name(
		"2", "application", "pdf", NULL,
		P("filename", "ueber.pdf", "filename*", "utf-8''%C3%BCber.pdf"),
		"2-über.pdf");
	check_name(
		"2", "application", "pdf", NULL,
		P("filename*", "utf-8''%C3%BCber.pdf", "filename", "ueber.pdf"),
		"2-über.pdf");
	/* An empty filename does not hide the name. */
	check_name("2", "application", "pdf", P("name", "b.pdf"),
		   P("filename", ""), "2-b.pdf");
}

static void test_name_rfc2047_b(void)
{
	check_filename("=?UTF-8?B?UmVjaG51bmcgTcOkcnoucGRm?=",
		       "2-Rechnung März.pdf");
	check_name("2", "application", "pdf",
		   P("name", "=?utf-8?b?UmVjaG51bmcgTcOkcnoucGRm?="), NULL,
		   "2-Rechnung März.pdf");
}

static void test_name_rfc2047_q(void)
{
	check_filename("=?iso-8859-1?Q?Rechnung_M=E4rz.pdf?=",
		       "2-Rechnung März.pdf");
	check_filename("=?windows-1252?q?=80_5.pdf?=", "2-€ 5.pdf");
}

static void test_name_rfc2047_split(void)
{
	/* Split inside "ä", each word padded (GMime #133 territory). */
	check_filename("=?UTF-8?B?UmVjaG51bmcgTcM=?= =?UTF-8?B?pHJ6LnBkZg==?=",
		       "2-Rechnung März.pdf");
	check_filename("=?utf-8?q?Rechnung_M=C3?=\r\n =?utf-8?q?=A4rz.pdf?=",
		       "2-Rechnung März.pdf");
	check_filename("=?UTF-8?B?w6Q=?= =?UTF-8?B?w6Q=?= =?UTF-8?B?LnBkZg==?=",
		       "2-ää.pdf");
}

static void test_name_raw_8bit(void)
{
	check_filename("Rechnung M\xe4rz.pdf", "2-Rechnung März.pdf");
	check_filename("Rechnung M\xc3\xa4rz.pdf", "2-Rechnung März.pdf");
	/* Windows-1252 where Latin-1 has controls; 0x81 is nothing. */
	check_filename("\x80 \x93x\x94 \x81.pdf", "2-€ “x” _.pdf");
	/* Broken UTF-8: truncated sequence, overlong, surrogate. */
	check_filename("a\xc3.pdf", "2-aÃ.pdf");
	check_filename("\xc0\xaf.pdf", "2-À¯.pdf");
	check_filename("\xed\xa0\x80.pdf", "2-í €.pdf"); /* 0xa0: NBSP */
}

static void test_name_missing(void)
{
	check_name("2", "image", "png", NULL, NULL, "2.png");
	check_name("2", "image", "png", P("charset", "x"), P("size", "5"),
		   "2.png");
	/* A name without value is ignored, not read past. */
	check_name("2", "image", "png", (const char *const[]){"name", NULL},
		   (const char *const[]){NULL}, "2.png");
	check_name("2", "image", "png", P("name", "", "filename", "a.png"),
		   NULL, "2.png");
}

static void test_name_traversal(void)
{
	check_filename("../../etc/passwd", "2-.._.._etc_passwd");
	check_filename("..\\..\\boot.ini", "2-.._.._boot.ini");
	check_filename("/etc/passwd", "2-_etc_passwd");
	check_name("2", "application", "pdf", NULL,
		   P("filename*", "utf-8''..%2F..%2Fetc%2Fpasswd"),
		   "2-.._.._etc_passwd");
	check_filename("=?utf-8?q?=2E=2E=2Fx?=", "2-.._x");
}

/* @n copies of @s. */
static char *repeat(const char *s, guint n)
{
	GString *out = g_string_new(NULL);

	for (guint i = 0; i < n; i++)
		g_string_append(out, s);
	return g_string_free(out, FALSE);
}

static void test_name_long(void)
{
	/* 132 * 3 + 4 = 400 bytes; "12-" + 82 "€" + ".pdf" is the most
	 * that fits, the 83rd would need 2 bytes more. */
	g_autofree char *euros = repeat("€", 132);
	g_autofree char *file = g_strconcat(euros, ".pdf", NULL);
	g_autofree char *name = imapfs_mime_part_name(
		"12", "application", "pdf", NULL, P("filename", file));
	g_autofree char *kept = repeat("€", 82);
	g_autofree char *expected = g_strconcat("12-", kept, ".pdf", NULL);

	g_assert_cmpuint(strlen(file), ==, 400);
	assert_safe_name(name, "12-");
	g_assert_cmpstr(name, ==, expected);
	g_assert_cmpuint(strlen(name), ==, 253);
}

static void test_name_long_other(void)
{
	g_autofree char *a = repeat("a", 300);
	g_autofree char *long_ext =
		g_strconcat(a, ".averyverylongextension", NULL);
	g_autofree char *pairs = repeat("a ", 200);
	g_autofree char *spaced = g_strconcat(pairs, ".pdf", NULL);
	g_autofree char *n1 = imapfs_mime_part_name("2", "text", "plain", NULL,
						    P("filename", a));
	g_autofree char *n2 = imapfs_mime_part_name("2", "text", "plain", NULL,
						    P("filename", long_ext));
	g_autofree char *n3 = imapfs_mime_part_name("2", "text", "plain", NULL,
						    P("filename", spaced));

	assert_safe_name(n1, "2-");
	g_assert_cmpuint(strlen(n1), ==, NAME_MAX);
	assert_safe_name(n2, "2-");
	g_assert_cmpuint(strlen(n2), ==, NAME_MAX);
	/* No space left dangling before the kept extension. */
	assert_safe_name(n3, "2-");
	g_assert_true(g_str_has_suffix(n3, "a.pdf"));
	g_assert_cmpuint(strlen(n3), <=, NAME_MAX);
}

static void test_name_control(void)
{
	check_filename("a\x01z\x7f"
		       "c\xc2\x85"
		       "d\te\r\nf.txt",
		       "2-a_z_c_d e f.txt");
	check_name("2", "application", "pdf", NULL,
		   P("filename*", "utf-8''a%01b%0D%0Ac%7F.pdf"),
		   "2-a_b c_.pdf");
	check_filename("=?utf-8?q?a=1Bb=7F=C2=9Bc.txt?=", "2-a_b__c.txt");
	/* Bidi override: "gpj.exe" must not pass for "exe.jpg". */
	check_filename("x\u202egpj.exe", "2-x_gpj.exe");
	/* Decoded NULs: the name ends there, or GMime shows '?'. */
	check_name("2", "application", "pdf", NULL,
		   P("filename*", "utf-8''a%00b.pdf"), "2-a");
	{
		g_autofree char *n = imapfs_mime_part_name(
			"2", "application", "pdf", NULL,
			P("filename", "=?utf-8?q?a=00b.pdf?="));

		assert_safe_name(n, "2-a");
	}
}

static void test_name_dots(void)
{
	check_filename(".", "2.pdf");
	check_filename("..", "2.pdf");
	check_filename("...", "2.pdf");
	check_filename(" .. ", "2.pdf");
	check_filename(".hidden", "2-.hidden");
	check_filename("a.", "2-a.");
}

static void test_name_empty_and_spaces(void)
{
	check_filename("", "2.pdf");
	check_filename("   ", "2.pdf");
	check_filename("\t\r\n", "2.pdf");
	check_filename("=?utf-8?q?_?=", "2.pdf");
	check_filename("  a \t  b.pdf  ", "2-a b.pdf");
	check_filename("a\u00a0\u2003b.pdf", "2-a b.pdf");
}

static void test_name_message(void)
{
	check_name("3", "message", "rfc822", P("name", "forwarded.pdf"),
		   P("filename", "x.eml"), "3.eml");
	check_name("3", "MESSAGE", "Global", P("name", "x"), NULL, "3.eml");
	check_name("3", "message", "delivery-status", NULL, NULL, "3.txt");
	g_assert_true(imapfs_mime_is_message("message", "rfc822"));
	g_assert_true(imapfs_mime_is_message("Message", "GLOBAL"));
	g_assert_false(imapfs_mime_is_message("message", "partial"));
	g_assert_false(imapfs_mime_is_message("text", "rfc822"));
	g_assert_false(imapfs_mime_is_message(NULL, NULL));
}

/* ---- Unique names ----------------------------------------------------- */

static void check_unique(const char *const *in, const char *const *expected)
{
	g_auto(GStrv) out = imapfs_mime_unique_names(in);

	g_assert_cmpstrv(out, expected);
}

static void test_unique_basic(void)
{
	check_unique(P("1.txt", "2-a.pdf", "3-a.pdf"),
		     P("1.txt", "2-a.pdf", "3-a.pdf"));
	check_unique(
		P("1.txt", "2-a.pdf", "2-a.pdf", "1.txt", "2-a.pdf"),
		P("1.txt", "2-a.pdf", "2-a~2.pdf", "1~2.txt", "2-a~3.pdf"));
	check_unique(P("1.1.txt", "1.1.txt"), P("1.1.txt", "1.1~2.txt"));
	check_unique(P("2-noext", "2-noext"), P("2-noext", "2-noext~2"));
}

static void test_unique_taken(void)
{
	/* "2-a~2.pdf" exists already, so the copy skips to ~3. */
	check_unique(P("2-a.pdf", "2-a.pdf", "2-a~2.pdf"),
		     P("2-a.pdf", "2-a~3.pdf", "2-a~2.pdf"));
}

static void test_unique_empty(void)
{
	g_auto(GStrv) none = imapfs_mime_unique_names(NULL);
	g_auto(GStrv) empty =
		imapfs_mime_unique_names((const char *const[]){NULL});

	g_assert_nonnull(none);
	g_assert_null(none[0]);
	g_assert_nonnull(empty);
	g_assert_null(empty[0]);
}

static void test_unique_long(void)
{
	/* Within two bytes of NAME_MAX: "~2" forces a cut, which must not
	 * split an "ä". */
	g_autofree char *stem = repeat("ä", 124);
	g_autofree char *name = g_strconcat("2-", stem, ".pdf", NULL);
	const char *in[] = {name, name, name, NULL};
	g_auto(GStrv) out = imapfs_mime_unique_names(in);

	g_assert_cmpuint(strlen(name), ==, NAME_MAX - 1);
	g_assert_cmpstr(out[0], ==, name);
	for (guint i = 1; i < 3; i++) {
		g_autofree char *suffix = g_strdup_printf("~%u.pdf", i + 1);

		assert_safe_name(out[i], "2-ää");
		g_assert_true(g_str_has_suffix(out[i], suffix));
	}
	g_assert_cmpstr(out[1], !=, out[2]);
}

static void test_unique_overlong_input(void)
{
	/* Input beyond NAME_MAX is fitted first; two such names that differ
	 * only after the cut then collide and are told apart. */
	g_autofree char *a = repeat("a", 300);
	g_autofree char *x = g_strconcat(a, "x.pdf", NULL);
	g_autofree char *y = g_strconcat(a, "y.pdf", NULL);
	const char *in[] = {x, y, NULL};
	g_auto(GStrv) out = imapfs_mime_unique_names(in);

	g_assert_cmpuint(strlen(out[0]), ==, NAME_MAX);
	g_assert_cmpuint(strlen(out[1]), ==, NAME_MAX);
	g_assert_true(g_str_has_suffix(out[0], "a.pdf"));
	g_assert_true(g_str_has_suffix(out[1], "~2.pdf"));
}

static void test_unique_many(void)
{
	g_autoptr(GPtrArray) in = g_ptr_array_new();
	g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
	g_auto(GStrv) out = NULL;

	for (guint i = 0; i < 2000; i++)
		g_ptr_array_add(in, i % 3 ? "1.txt" : "1~5.txt");
	g_ptr_array_add(in, NULL);
	out = imapfs_mime_unique_names((const char *const *)in->pdata);
	for (guint i = 0; out[i]; i++) {
		g_assert_false(g_hash_table_contains(seen, out[i]));
		g_hash_table_add(seen, out[i]);
	}
	g_assert_cmpuint(g_hash_table_size(seen), ==, 2000);
}

/* ---- Headers ---------------------------------------------------------- */

static void check_header(const char *in, const char *expected)
{
	g_autofree char *out = imapfs_mime_decode_header(in);

	g_assert_cmpstr(out, ==, expected);
	if (out)
		g_assert_true(g_utf8_validate(out, -1, NULL));
}

static void test_header_decode(void)
{
	check_header(NULL, NULL);
	check_header("", "");
	check_header("Hello", "Hello");
	check_header("=?UTF-8?B?UmVjaG51bmcgTcOkcno=?=", "Rechnung März");
	check_header("=?iso-8859-1?q?Rechnung_M=E4rz?=", "Rechnung März");
	check_header("Re: =?utf-8?q?M=C3?=\r\n =?utf-8?q?=A4rz?= ok",
		     "Re: März ok");
	/* A run of padded B words (GMime #133). */
	check_header("=?UTF-8?B?SGVsbG8=?= =?UTF-8?B?IHdvcmxk?=",
		     "Hello world");
	check_header("=?UTF-8?B?YQ==?= =?UTF-8?B?Yg==?= =?UTF-8?B?Yw==?=",
		     "abc");
	check_header("M\xe4rz", "März");
	check_header("folded\r\n line", "folded line");
	check_header("=?x-bogus?q?x?=", "x");
}

/* ---- Decoder ---------------------------------------------------------- */

/* Decodes @in in chunks of @chunk bytes (0: one step), then finishes;
 * checks that the counts returned add up to what was appended. */
static GByteArray *decode_chunked(const char *encoding, const guint8 *in,
				  gsize len, gsize chunk)
{
	g_autoptr(ImapfsDecoder) dec = imapfs_decoder_new(encoding);
	GByteArray *out = g_byte_array_new();
	gsize total = 0;

	if (chunk == 0)
		chunk = MAX(len, 1);
	for (gsize at = 0; at < len; at += chunk)
		total += imapfs_decoder_step(dec, in + at, MIN(chunk, len - at),
					     out);
	total += imapfs_decoder_finish(dec, out);
	g_assert_cmpuint(total, ==, out->len);
	return out;
}

/* Decodes in two pieces split at @split. */
static GByteArray *decode_split(const char *encoding, const guint8 *in,
				gsize len, gsize split)
{
	g_autoptr(ImapfsDecoder) dec = imapfs_decoder_new(encoding);
	GByteArray *out = g_byte_array_new();
	gsize total;

	total = imapfs_decoder_step(dec, in, split, out);
	total += imapfs_decoder_step(dec, in + split, len - split, out);
	total += imapfs_decoder_finish(dec, out);
	g_assert_cmpuint(total, ==, out->len);
	return out;
}

static void assert_bytes(GByteArray *got, const void *expected, gsize len)
{
	g_assert_cmpmem(got->data, got->len, expected, len);
}

/* Every split point and every small chunk size give @expected. */
static void check_all_splits(const char *encoding, const char *in,
			     const void *expected, gsize expected_len)
{
	gsize len = strlen(in);

	for (gsize split = 0; split <= len; split++) {
		g_autoptr(GByteArray) out =
			decode_split(encoding, (const guint8 *)in, len, split);

		assert_bytes(out, expected, expected_len);
	}
	for (gsize chunk = 0; chunk <= 17; chunk++) {
		g_autoptr(GByteArray) out = decode_chunked(
			encoding, (const guint8 *)in, len, chunk);

		assert_bytes(out, expected, expected_len);
	}
}

/* base64 of @len seeded random bytes, in CRLF lines of 76 characters. */
static char *base64_lines(GRand *rand, gsize len, guint8 **raw)
{
	g_autofree char *b64 = NULL;
	GString *out = g_string_new(NULL);

	*raw = g_malloc(len + 1);
	for (gsize i = 0; i < len; i++)
		(*raw)[i] = g_rand_int_range(rand, 0, 256);
	b64 = g_base64_encode(*raw, len);
	for (gsize i = 0, n = strlen(b64); i < n; i += 76) {
		g_string_append_len(out, b64 + i, MIN(76, n - i));
		g_string_append(out, "\r\n");
	}
	return g_string_free(out, FALSE);
}

static void test_decoder_base64_splits(void)
{
	g_autoptr(GRand) rand = g_rand_new_with_seed(2047);

	for (gsize len = 0; len < 12; len++) {
		g_autofree guint8 *raw = NULL;
		g_autofree char *in = base64_lines(rand, len, &raw);

		check_all_splits("base64", in, raw, len);
	}
	for (gsize len = 200; len < 203; len++) {
		g_autofree guint8 *raw = NULL;
		g_autofree char *in = base64_lines(rand, len, &raw);
		gsize glib_len;
		g_autofree guint8 *glib = g_base64_decode(in, &glib_len);

		/* GLib's one-shot decoder agrees. */
		g_assert_cmpmem(glib, glib_len, raw, len);
		check_all_splits("BASE64", in, raw, len);
	}
}

static void test_decoder_base64_padding_inside(void)
{
	/* Line-by-line encoders pad every line (GMime #150). */
	check_all_splits("base64", "QQ==\r\nQg==\r\nQ0Q=\r\n", "ABCD", 4);
}

static void test_decoder_qp(void)
{
	static const char in[] = "Soft=\r\nbreak=\nand =C3=a4=3D end=\r\n"
				 "=41\r\nlast line=20";
	static const char expected[] = "Softbreakand \xc3\xa4= endA\r\n"
				       "last line ";

	check_all_splits("quoted-printable", in, expected, strlen(expected));
	/* Invalid escapes pass through. */
	check_all_splits("Quoted-Printable", "a=ZZb=4", "a=ZZb=4", 7);
}

static void test_decoder_identity(void)
{
	static const char *const encodings[] = {"7bit", "8bit",	   "binary",
						"",	"x-token", "BINARY"};
	static const char in[] = "line one\r\n=41 QUJD \xff\x00"
				 "end";
	gsize len = sizeof(in) - 1;

	for (gsize i = 0; i <= G_N_ELEMENTS(encodings); i++) {
		const char *e =
			i < G_N_ELEMENTS(encodings) ? encodings[i] : NULL;
		g_autoptr(ImapfsDecoder) dec = imapfs_decoder_new(e);

		g_assert_true(imapfs_decoder_is_identity(dec));
		for (gsize split = 0; split <= len; split++) {
			g_autoptr(GByteArray) out =
				decode_split(e, (const guint8 *)in, len, split);

			assert_bytes(out, in, len);
		}
	}
	{
		g_autoptr(ImapfsDecoder) b64 = imapfs_decoder_new("base64");

		g_assert_false(imapfs_decoder_is_identity(b64));
	}
}

static void test_decoder_uuencode(void)
{
	static const char in[] =
		"preamble\r\nbeginning is not begin\r\n"
		"begin 644 hello.txt\r\n"
		"M>'AX>'AX>'AX>'AX>'AX>'AX>'AX>'AX>'AX>'AX>'AX>'AX>'AX>'AX>'AX"
		"\r\n"
		".2&5L;&\\L('=O<FQD(0H \r\n"
		"`\r\nend\r\ntrailer\r\n";
	g_autofree char *expected =
		g_strconcat("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
			    "Hello, world!\n", NULL);

	check_all_splits("x-uuencode", in, expected, strlen(expected));
	check_all_splits("uuencode", in, expected, strlen(expected));
	/* No begin line: nothing. */
	check_all_splits("x-uuencode", "M>'AX\r\n`\r\nend\r\n", "", 0);
}

static void test_decoder_wrong_encoding(void)
{
	static const char text[] = "Hello, this is just text.\r\nNo base64 "
				   "here = really; ==== ? \xc3\xa4\r\n";
	static const char *const encodings[] = {"base64", "quoted-printable",
						"x-uuencode"};

	for (gsize i = 0; i < G_N_ELEMENTS(encodings); i++) {
		g_autoptr(GByteArray) whole = decode_chunked(
			encodings[i], (const guint8 *)text, strlen(text), 0);

		/* Garbage, but the same garbage however it is split. */
		for (gsize split = 0; split <= strlen(text); split++) {
			g_autoptr(GByteArray) out =
				decode_split(encodings[i], (const guint8 *)text,
					     strlen(text), split);

			assert_bytes(out, whole->data, whole->len);
		}
		g_assert_cmpuint(whole->len, <=, strlen(text));
	}
}

static void test_decoder_finish(void)
{
	static const struct {
		const char *encoding, *in, *out;
	} cases[] = {
		{"base64", "QUJDRA", "ABCD"},
		{"base64", "QUJDREU", "ABCDE"},
		{"base64", "QUJDRA=", "ABCD"},
		{"base64", "QUJDRA==", "ABCD"},
		{"base64", "QUJDR", "ABC"},
		{"quoted-printable", "abc=4", "abc=4"},
		{"quoted-printable", "abc=", "abc"},
		{"quoted-printable", "abc=\r", "abc"},
	};

	for (gsize i = 0; i < G_N_ELEMENTS(cases); i++)
		check_all_splits(cases[i].encoding, cases[i].in, cases[i].out,
				 strlen(cases[i].out));
}

static void test_decoder_reuse(void)
{
	g_autoptr(ImapfsDecoder) dec = imapfs_decoder_new("base64");
	g_autoptr(GByteArray) out = g_byte_array_new();

	/* An unpadded tail must not leak into the next body. */
	imapfs_decoder_step(dec, (const guint8 *)"QUJDRA", 6, out);
	g_assert_cmpuint(imapfs_decoder_finish(dec, out), ==, 1);
	imapfs_decoder_step(dec, (const guint8 *)"RUY=", 4, out);
	g_assert_cmpuint(imapfs_decoder_finish(dec, out), ==, 0);
	assert_bytes(out, "ABCDEF", 6);
	g_assert_cmpuint(imapfs_decoder_step(dec, NULL, 0, out), ==, 0);
}

/* ---- Robustness ------------------------------------------------------- */

static const char *const fuzz_tokens[] = {
	"=?utf-8?b?",
	"=?UTF-8?Q?",
	"=?iso-8859-1?q?",
	"=?x-bogus?b?",
	"=?",
	"?=",
	"?",
	"utf-8''",
	"'de'",
	"''",
	"%C3",
	"%A4",
	"%00",
	"%",
	"%2F",
	"=",
	"=C3",
	"=00",
	"==",
	"..",
	".",
	"/",
	"\\",
	"\"",
	";",
	"\r\n",
	" ",
	"\t",
	".pdf",
	"ä",
	"€",
	"\xe4",
	"\xff",
	"\xc3",
	"\x01",
	"\x7f",
	"\xc2\x85",
	"\u202e",
	"w6Q=",
	"UmVjaG51bmc",
	"name",
	"filename*0*=",
};

static const char *const fuzz_param_names[] = {
	"name",	     "filename",    "NAME",	  "name*",
	"name*0*",   "name*1*",	    "name*0",	  "name*1",
	"filename*", "filename*0*", "filename*1", "FILENAME*2*",
	"charset",   "x",	    "filename*9", "name*999*",
};

static char *fuzz_string(GRand *rand)
{
	GString *s = g_string_new(NULL);
	guint n = g_rand_int_range(rand, 0, 10);

	if (g_rand_int_range(rand, 0, 20) == 0)
		n = g_rand_int_range(rand, 100, 400);
	for (guint i = 0; i < n; i++) {
		if (g_rand_boolean(rand)) {
			g_string_append(
				s,
				fuzz_tokens[g_rand_int_range(
					rand, 0, G_N_ELEMENTS(fuzz_tokens))]);
		} else {
			guint8 c = g_rand_int_range(rand, 1, 256);

			g_string_append_c(s, c);
		}
	}
	return g_string_free(s, FALSE);
}

/* A random NULL-terminated name/value array; *@owned keeps the strings. */
static const char **fuzz_params(GRand *rand, GPtrArray *owned)
{
	guint pairs = g_rand_int_range(rand, 0, 6);
	const char **params = g_new0(const char *, 2 * pairs + 1);

	for (guint i = 0; i < pairs; i++) {
		char *value = fuzz_string(rand);

		params[2 * i] = fuzz_param_names[g_rand_int_range(
			rand, 0, G_N_ELEMENTS(fuzz_param_names))];
		params[2 * i + 1] = value;
		g_ptr_array_add(owned, value);
	}
	g_ptr_array_add(owned, params);
	return params;
}

static void test_fuzz_names(void)
{
	static const char *const types[][2] = {
		{"application", "pdf"}, {"text", "plain"},
		{"message", "rfc822"},	{NULL, NULL},
		{"x\xff", "y/z"},
	};
	static const char *const sections[] = {"1", "2.3", "1.2.3.4.5"};
	g_autoptr(GRand) rand = g_rand_new_with_seed(0x1ba9f5);

	for (guint round = 0; round < 300; round++) {
		g_autoptr(GPtrArray) owned =
			g_ptr_array_new_with_free_func(g_free);
		g_autoptr(GPtrArray) names =
			g_ptr_array_new_with_free_func(g_free);
		g_auto(GStrv) unique = NULL;
		g_autoptr(GHashTable) seen =
			g_hash_table_new(g_str_hash, g_str_equal);

		for (guint i = 0; i < 20; i++) {
			guint t =
				g_rand_int_range(rand, 0, G_N_ELEMENTS(types));
			const char *section = sections[g_rand_int_range(
				rand, 0, G_N_ELEMENTS(sections))];
			char *name = imapfs_mime_part_name(
				section, types[t][0], types[t][1],
				fuzz_params(rand, owned),
				fuzz_params(rand, owned));

			assert_safe_name(name, section);
			g_ptr_array_add(names, name);
		}
		g_ptr_array_add(names, NULL);
		unique = imapfs_mime_unique_names(
			(const char *const *)names->pdata);
		for (guint i = 0; unique[i]; i++) {
			assert_safe_name(unique[i], NULL);
			g_assert_false(g_hash_table_contains(seen, unique[i]));
			g_hash_table_add(seen, unique[i]);
		}
	}
}

static void test_fuzz_headers(void)
{
	g_autoptr(GRand) rand = g_rand_new_with_seed(5322);

	for (guint i = 0; i < 3000; i++) {
		g_autofree char *in = fuzz_string(rand);
		g_autofree char *out = imapfs_mime_decode_header(in);

		g_assert_nonnull(out);
		g_assert_true(g_utf8_validate(out, -1, NULL));
		g_assert_null(strpbrk(out, "\r\n"));
	}
}

static void test_fuzz_decoders(void)
{
	static const char *const encodings[] = {
		"base64", "quoted-printable", "x-uuencode", "7bit", NULL,
		"bogus"};
	/* Bytes that mean something to one decoder or another. */
	static const char alphabet[] = "=\r\n\r\nAQ+/09 `M!begin end";
	g_autoptr(GRand) rand = g_rand_new_with_seed(2045);

	for (guint i = 0; i < 3000; i++) {
		const char *e = encodings[i % G_N_ELEMENTS(encodings)];
		gsize len = g_rand_int_range(rand, 0, 300);
		g_autofree guint8 *in = g_malloc(len + 1);
		g_autoptr(GByteArray) whole = NULL;
		g_autoptr(GByteArray) chunked = NULL;

		if (i % 7 == 0)
			memcpy(in, "begin 6 x\n", MIN(len, 10));
		for (gsize j = i % 7 == 0 ? MIN(len, 10) : 0; j < len; j++)
			in[j] = g_rand_boolean(rand)
					? g_rand_int_range(rand, 0, 256)
					: alphabet[g_rand_int_range(
						  rand, 0,
						  sizeof(alphabet) - 1)];
		whole = decode_chunked(e, in, len, 0);
		chunked = decode_chunked(e, in, len,
					 g_rand_int_range(rand, 1, 9));
		assert_bytes(chunked, whole->data, whole->len);
		if (e && !strcmp(e, "base64"))
			g_assert_cmpuint(whole->len, <=, len / 4 * 3 + 2);
		else
			g_assert_cmpuint(whole->len, <=, len + 2);
	}
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);

	g_test_add_func("/mime/name/design-examples",
			test_name_design_examples);
	g_test_add_func("/mime/name/type-extensions",
			test_name_type_extensions);
	g_test_add_func("/mime/name/rfc2231/continuation",
			test_name_rfc2231_continuation);
	g_test_add_func("/mime/name/rfc2231/language",
			test_name_rfc2231_language);
	g_test_add_func("/mime/name/rfc2231/no-charset",
			test_name_rfc2231_no_charset);
	g_test_add_func("/mime/name/rfc2231/charset",
			test_name_rfc2231_charset);
	g_test_add_func("/mime/name/rfc2231/order-and-case",
			test_name_rfc2231_order_and_case);
	g_test_add_func("/mime/name/precedence", test_name_precedence);
	g_test_add_func("/mime/name/rfc2047/b", test_name_rfc2047_b);
	g_test_add_func("/mime/name/rfc2047/q", test_name_rfc2047_q);
	g_test_add_func("/mime/name/rfc2047/split", test_name_rfc2047_split);
	g_test_add_func("/mime/name/raw-8bit", test_name_raw_8bit);
	g_test_add_func("/mime/name/missing", test_name_missing);
	g_test_add_func("/mime/name/traversal", test_name_traversal);
	g_test_add_func("/mime/name/long", test_name_long);
	g_test_add_func("/mime/name/long-other", test_name_long_other);
	g_test_add_func("/mime/name/control", test_name_control);
	g_test_add_func("/mime/name/dots", test_name_dots);
	g_test_add_func("/mime/name/empty-and-spaces",
			test_name_empty_and_spaces);
	g_test_add_func("/mime/name/message", test_name_message);
	g_test_add_func("/mime/unique/basic", test_unique_basic);
	g_test_add_func("/mime/unique/taken", test_unique_taken);
	g_test_add_func("/mime/unique/empty", test_unique_empty);
	g_test_add_func("/mime/unique/long", test_unique_long);
	g_test_add_func("/mime/unique/overlong-input",
			test_unique_overlong_input);
	g_test_add_func("/mime/unique/many", test_unique_many);
	g_test_add_func("/mime/header/decode", test_header_decode);
	g_test_add_func("/mime/decoder/base64/splits",
			test_decoder_base64_splits);
	g_test_add_func("/mime/decoder/base64/padding-inside",
			test_decoder_base64_padding_inside);
	g_test_add_func("/mime/decoder/quoted-printable", test_decoder_qp);
	g_test_add_func("/mime/decoder/identity", test_decoder_identity);
	g_test_add_func("/mime/decoder/uuencode", test_decoder_uuencode);
	g_test_add_func("/mime/decoder/wrong-encoding",
			test_decoder_wrong_encoding);
	g_test_add_func("/mime/decoder/finish", test_decoder_finish);
	g_test_add_func("/mime/decoder/reuse", test_decoder_reuse);
	g_test_add_func("/mime/fuzz/names", test_fuzz_names);
	g_test_add_func("/mime/fuzz/headers", test_fuzz_headers);
	g_test_add_func("/mime/fuzz/decoders", test_fuzz_decoders);
	return g_test_run();
}
