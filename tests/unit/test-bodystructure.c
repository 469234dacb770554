/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Tests for bodystructure.c. Inputs are RFC 3501's examples, replies
 * captured from Dovecot 2.3 for messages built to be awkward, and what
 * other servers have been reported to send (Gmail, Exchange). Most tests
 * compare a one-line rendering of the whole tree (dump()), so a wrong
 * section number anywhere shows.
 */
#include <string.h>

#include "imapfs/bodystructure.h"
#include "imapfs/error.h"

/* ---- helpers ---- */

static ImapfsPart *parse(const char *text)
{
	g_autoptr(GError) error = NULL;
	ImapfsPart *root = imapfs_bodystructure_parse_string(text, -1, &error);

	g_assert_no_error(error);
	g_assert_nonnull(root);
	return root;
}

static void assert_fails(const char *text, gssize len)
{
	g_autoptr(GError) error = NULL;
	g_autoptr(ImapfsPart) root =
		imapfs_bodystructure_parse_string(text, len, &error);

	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_PROTOCOL);
	g_assert_null(root);
}

/*
 * "section|name_section type/subtype", a multipart followed by its
 * children in parentheses, an attached message by its body in braces.
 */
static void dump_part(GString *out, const ImapfsPart *part)
{
	g_string_append_printf(out, "%s|%s %s/%s", part->section,
			       part->name_section, part->type, part->subtype);
	if (part->children) {
		g_string_append(out, " (");
		for (guint i = 0; i < part->children->len; i++) {
			if (i > 0)
				g_string_append(out, ", ");
			dump_part(out, part->children->pdata[i]);
		}
		g_string_append(out, ")");
	}
	if (part->message) {
		g_string_append(out, " {");
		dump_part(out, part->message);
		g_string_append(out, "}");
	}
}

static char *dump(const ImapfsPart *part)
{
	GString *out = g_string_new(NULL);

	dump_part(out, part);
	return g_string_free(out, FALSE);
}

/* The sections of the leaves, space-separated. */
static char *leaves(const ImapfsPart *root)
{
	g_autoptr(GPtrArray) list = imapfs_part_leaves(root);
	GString *out = g_string_new(NULL);

	for (guint i = 0; i < list->len; i++) {
		const ImapfsPart *leaf = list->pdata[i];

		g_assert_false(imapfs_part_is_multipart(leaf));
		g_string_append_printf(out, "%s%s", i ? " " : "",
				       leaf->section);
	}
	return g_string_free(out, FALSE);
}

/* "name=value;..." of a parameter list. */
static char *params(const GPtrArray *list)
{
	GString *out = g_string_new(NULL);

	g_assert_nonnull(list);
	for (guint i = 0; i < list->len; i++) {
		const ImapfsParam *param = list->pdata[i];

		g_string_append_printf(out, "%s=%s;", param->name,
				       param->value);
	}
	return g_string_free(out, FALSE);
}

static void assert_dump(const char *text, const char *expected)
{
	g_autoptr(ImapfsPart) root = parse(text);
	g_autofree char *got = dump(root);

	g_assert_cmpstr(got, ==, expected);
}

static void assert_leaves(const ImapfsPart *root, const char *expected)
{
	g_autofree char *got = leaves(root);

	g_assert_cmpstr(got, ==, expected);
}

static void assert_params(const GPtrArray *list, const char *expected)
{
	g_autofree char *got = params(list);

	g_assert_cmpstr(got, ==, expected);
}

static const ImapfsPart *find(const ImapfsPart *root, const char *section)
{
	const ImapfsPart *part = imapfs_part_find(root, section);

	g_assert_nonnull(part);
	g_assert_cmpstr(part->section, ==, section);
	return part;
}

/* ---- real replies ---- */

/* RFC 3501 7.4.2 */
static const char rfc3501_plain[] =
	"(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" "
	"3028 92)";
static const char rfc3501_mixed[] =
	"((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" "
	"1152 23)(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\" \"NAME\" "
	"\"cc.diff\") \"<960723163407.20117h@cac.washington.edu>\" "
	"\"Compiler diff\" \"BASE64\" 4554 73) \"MIXED\")";

/* Dovecot 2.3: multipart/alternative and a PDF in multipart/mixed. */
static const char dovecot_mixed_alt[] =
	"(((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"base64\" 10 "
	"1 NIL NIL NIL NIL)(\"text\" \"html\" (\"charset\" \"utf-8\") NIL NIL "
	"\"base64\" 18 1 NIL NIL NIL NIL) \"alternative\" (\"boundary\" "
	"\"===============2196462368656843580==\") NIL NIL NIL)"
	"(\"application\" \"pdf\" NIL NIL NIL \"base64\" 22 NIL "
	"(\"attachment\" (\"filename*\" \"utf-8'de'Rechnung%20f%C3%BCr%20M%"
	"C3%A4rz%202024%20sehr%20lang.pdf\")) NIL NIL) \"mixed\" "
	"(\"boundary\" \"===============5010596093344956826==\") NIL NIL "
	"NIL)";

/* Dovecot: an attached message/rfc822 that is multipart/mixed itself. */
static const char dovecot_rfc822_multipart[] =
	"((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 14 "
	"1 NIL NIL NIL NIL)(\"text\" \"html\" (\"charset\" \"us-ascii\") NIL "
	"NIL \"7bit\" 8 0 NIL NIL NIL NIL)(\"message\" \"rfc822\" NIL NIL NIL "
	"\"7bit\" 567 (\"Mon, 01 Jan 2024 12:00:00 +0000\" \"inner\" "
	"((\"Alice\" NIL \"alice\" \"example.org\")) ((\"Alice\" NIL "
	"\"alice\" \"example.org\")) ((\"Alice\" NIL \"alice\" "
	"\"example.org\")) ((NIL NIL \"bob\" \"example.org\")) NIL NIL NIL "
	"NIL) ((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL "
	"\"7bit\" 12 1 NIL NIL NIL NIL)(\"application\" \"octet-stream\" "
	"(\"Name\" \"data.bin\") NIL NIL \"base64\" 6 NIL NIL NIL NIL) "
	"\"mixed\" (\"boundary\" \"===============4359855584036375712==\") "
	"NIL NIL NIL) 22 NIL NIL NIL NIL) \"mixed\" (\"boundary\" "
	"\"===============2515128272557973078==\") NIL NIL NIL)";

/* Dovecot: multipart/alternative holding text and a multipart/mixed that
 * holds a single-part message/rfc822. */
static const char dovecot_alt_mixed_rfc822[] =
	"((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 11 "
	"1 NIL NIL NIL NIL)((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL "
	"NIL \"7bit\" 3 1 NIL NIL NIL NIL)(\"message\" \"rfc822\" NIL NIL NIL "
	"\"7bit\" 230 (\"Mon, 01 Jan 2024 12:00:00 +0000\" \"single inner\" "
	"((\"Alice\" NIL \"alice\" \"example.org\")) ((\"Alice\" NIL "
	"\"alice\" \"example.org\")) ((\"Alice\" NIL \"alice\" "
	"\"example.org\")) ((NIL NIL \"bob\" \"example.org\")) NIL NIL NIL "
	"NIL) (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" "
	"14 1 NIL NIL NIL NIL) 9 NIL NIL NIL NIL) \"mixed\" (\"boundary\" "
	"\"===============5159835644154375944==\") NIL NIL NIL) "
	"\"alternative\" (\"boundary\" "
	"\"===============8365427669085023930==\") NIL NIL NIL)";

/* Dovecot: the whole message is message/rfc822. */
static const char dovecot_top_rfc822[] =
	"(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 185 (NIL \"inside\" "
	"((NIL NIL \"c\" \"d\")) ((NIL NIL \"c\" \"d\")) ((NIL NIL \"c\" "
	"\"d\")) NIL NIL NIL NIL NIL) ((\"text\" \"plain\" (\"charset\" "
	"\"us-ascii\") NIL NIL \"7bit\" 3 0 NIL NIL NIL NIL)(\"text\" \"html\" "
	"(\"charset\" \"us-ascii\") NIL NIL \"7bit\" 10 0 NIL NIL NIL NIL) "
	"\"mixed\" (\"boundary\" \"b1\") NIL NIL NIL) 14 NIL NIL NIL NIL)";

/* Dovecot: a message/rfc822 whose body is message/rfc822. */
static const char dovecot_rfc822_in_rfc822[] =
	"((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 5 0 "
	"NIL NIL NIL NIL)(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 104 "
	"(NIL \"mid\" ((NIL NIL \"x\" \"y\")) ((NIL NIL \"x\" \"y\")) ((NIL "
	"NIL \"x\" \"y\")) NIL NIL NIL NIL NIL) (\"message\" \"rfc822\" NIL "
	"NIL NIL \"7bit\" 47 (NIL \"innermost\" ((NIL NIL \"p\" \"q\")) ((NIL "
	"NIL \"p\" \"q\")) ((NIL NIL \"p\" \"q\")) NIL NIL NIL NIL NIL) "
	"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 14 0 "
	"NIL NIL NIL NIL) 3 NIL NIL NIL NIL) 7 NIL NIL NIL NIL) \"mixed\" "
	"(\"boundary\" \"o\") NIL NIL NIL)";

/* Dovecot: every extension field, literals with Latin-1 bytes, an empty
 * subtype, message/global without envelope and body. */
static const char dovecot_nasty[] =
	"((\"TEXT\" \"Plain\" (\"CHARSET\" \"ISO-8859-1\" \"format\" "
	"\"flowed\") \"<id1@x>\" {11}\r\nD\xe9"
	"scription \"QUOTED-PRINTABLE\" 7 0 \"Q2hlY2sgSW50ZWdyaXR5IQ==\" NIL "
	"(\"en\" \"de\") \"http://example.org/x\")(\"application\" "
	"\"octet-stream\" (\"name*\" \"utf-8''%E2%82%AC%20rates.txt\") NIL NIL "
	"\"base64\" 4 NIL (\"ATTACHMENT\" (\"filename\" {10}\r\ncaf\xe9"
	" \xff"
	".txt \"size\" \"3\" \"creation-date\" \"Mon, 1 Jan 2024 00:00:00 "
	"+0000\")) NIL NIL)(\"image\" \"png\" (\"name\" "
	"\"=?utf-8?q?=C3=A4.png?=\") NIL NIL \"7bit\" 2 NIL (\"inline\" NIL) "
	"NIL NIL)(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL "
	"\"7bit\" 17 0 NIL NIL NIL NIL)(\"text\" \"\" (\"charset\" "
	"\"us-ascii\") NIL NIL \"7bit\" 9 0 NIL NIL NIL NIL)(\"message\" "
	"\"global\" NIL NIL NIL \"7bit\" 39 NIL NIL NIL NIL) \"mixed\" "
	"(\"boundary\" \"zz\") NIL NIL NIL)";

/* Dovecot: a multipart whose boundary never appears gets one empty text
 * part. */
static const char dovecot_empty_multipart[] =
	"((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 "
	"NIL NIL NIL NIL) \"mixed\" (\"boundary\" \"XX\") NIL NIL NIL)";

/* Gmail (go-imap #701): a multipart/alternative without children. */
static const char gmail_empty_alternative[] =
	"((\"ALTERNATIVE\" (\"BOUNDARY\" \"e7e3f78cb2\") NIL NIL)"
	"(\"APPLICATION\" \"PDF\" NIL NIL NIL \"BASE64\" 1476806 NIL "
	"(\"ATTACHMENT\" (\"FILENAME\" \"investing-101.pdf\")) NIL) \"MIXED\" "
	"(\"BOUNDARY\" \"7b1fa0fc24\") NIL NIL)";

/* Gmail (MailKit #1841): ("ALTERNATIVE") as an attached message's body. */
static const char gmail_bare_alternative[] =
	"((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"windows-1252\") NIL NIL "
	"\"QUOTED-PRINTABLE\" 211 5)(\"MESSAGE\" \"DELIVERY-STATUS\" NIL NIL "
	"NIL \"7BIT\" 344)(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 2942 "
	"(\"Sat, 3 Jan 2015 19:26:15 +0100\" \"Re: x\" ((\"c p\" NIL \"x\" "
	"\"gmail.com\")) ((\"c p\" NIL \"x\" \"gmail.com\")) ((\"c p\" NIL "
	"\"x\" \"gmail.com\")) ((\"a\" NIL \"b\" \"c.fr\")) NIL NIL \"<a@b>\" "
	"\"<c@d>\") (\"ALTERNATIVE\") 51) \"REPORT\")";

/* Gmail (MailKit #371): ("RELATED" NIL ("ATTACHMENT" NIL) NIL) stubs. */
static const char gmail_related_stubs[] =
	"(((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"UTF-8\") NIL NIL \"BASE64\" "
	"10418 133 NIL NIL NIL)(\"TEXT\" \"HTML\" (\"CHARSET\" \"UTF-8\") NIL "
	"NIL \"BASE64\" 34544 442 NIL NIL NIL) \"ALTERNATIVE\" (\"BOUNDARY\" "
	"\"94eb\") NIL NIL)(\"RELATED\" NIL (\"ATTACHMENT\" NIL) NIL)"
	"(\"RELATED\" NIL (\"ATTACHMENT\" NIL) NIL) \"MIXED\" (\"BOUNDARY\" "
	"\"94ec\") NIL NIL)";

/* Exchange-like (swift-nio-imap #684): NIL for the encoding. */
static const char nil_encoding[] =
	"(((\"text\" \"plain\" (\"CHARSET\" \"UTF-8\") NIL NIL NIL 1423 44 NIL "
	"NIL NIL NIL)(\"text\" \"html\" (\"CHARSET\" \"UTF-8\") NIL NIL "
	"\"quoted-printable\" 2524 34 NIL NIL NIL NIL) \"alternative\" "
	"(\"BOUNDARY\" \"0000\") NIL NIL NIL)(\"text\" \"plain\" (\"CHARSET\" "
	"\"us-ascii\") NIL NIL \"7bit\" 151 4 NIL NIL NIL NIL) \"mixed\" "
	"(\"BOUNDARY\" \"===\") NIL NIL NIL)";

/* ---- structure and section numbers ---- */

static void test_text_plain(void)
{
	g_autoptr(ImapfsPart) root = parse(rfc3501_plain);

	g_assert_cmpstr(root->section, ==, "1");
	g_assert_cmpstr(root->name_section, ==, "1");
	g_assert_cmpstr(root->type, ==, "text");
	g_assert_cmpstr(root->subtype, ==, "plain");
	assert_params(root->params, "charset=US-ASCII;");
	g_assert_cmpstr(imapfs_part_param(root->params, "Charset"), ==,
			"US-ASCII");
	g_assert_null(imapfs_part_param(root->params, "name"));
	g_assert_cmpstr(root->encoding, ==, "7bit");
	g_assert_cmpuint(root->size, ==, 3028);
	g_assert_cmpuint(root->lines, ==, 92);
	g_assert_cmpuint(root->depth, ==, 0);
	g_assert_null(root->children);
	g_assert_null(root->message);
	g_assert_false(imapfs_part_is_multipart(root));
	assert_leaves(root, "1");
	g_assert_true(imapfs_part_find(root, "1") == root);
	g_assert_null(imapfs_part_find(root, ""));
	g_assert_null(imapfs_part_find(root, "2"));
	g_assert_null(imapfs_part_find(root, "1.1"));
}

static void test_rfc3501_mixed(void)
{
	g_autoptr(ImapfsPart) root = parse(rfc3501_mixed);
	const ImapfsPart *diff;

	assert_dump(rfc3501_mixed,
		    "| multipart/mixed (1|1 text/plain, 2|2 text/plain)");
	g_assert_true(imapfs_part_find(root, "") == root);
	diff = find(root, "2");
	g_assert_cmpuint(diff->depth, ==, 1);
	g_assert_cmpstr(diff->id, ==,
			"<960723163407.20117h@cac.washington.edu>");
	g_assert_cmpstr(diff->description, ==, "Compiler diff");
	g_assert_cmpstr(diff->encoding, ==, "base64");
	g_assert_cmpstr(imapfs_part_param(diff->params, "name"), ==, "cc.diff");
	g_assert_cmpuint(diff->size, ==, 4554);
	g_assert_cmpuint(diff->lines, ==, 73);
	assert_leaves(root, "1 2");
}

static void test_mixed_alternative(void)
{
	g_autoptr(ImapfsPart) root = parse(dovecot_mixed_alt);
	const ImapfsPart *pdf;

	assert_dump(dovecot_mixed_alt,
		    "| multipart/mixed (1|1 multipart/alternative "
		    "(1.1|1.1 text/plain, 1.2|1.2 text/html), "
		    "2|2 application/pdf)");
	assert_leaves(root, "1.1 1.2 2");
	g_assert_cmpuint(find(root, "1.2")->depth, ==, 2);
	g_assert_cmpstr(imapfs_part_param(find(root, "1")->params, "boundary"),
			==, "===============2196462368656843580==");
	pdf = find(root, "2");
	g_assert_cmpstr(pdf->disposition, ==, "attachment");
	assert_params(pdf->disposition_params,
		      "filename*=utf-8'de'Rechnung%20f%C3%BCr%20M%C3%A4rz%"
		      "202024%20sehr%20lang.pdf;");
	g_assert_cmpuint(pdf->lines, ==, 0);
	g_assert_null(imapfs_part_find(root, "1.3"));
	g_assert_null(imapfs_part_find(root, "3"));
}

/* Part 3 is a message whose body is multipart: IMAP sections 3.1 and 3.2,
 * file names 1 and 2 inside 3.parts/. */
static void test_message_multipart(void)
{
	g_autoptr(ImapfsPart) root = parse(dovecot_rfc822_multipart);
	const ImapfsPart *msg;

	assert_dump(dovecot_rfc822_multipart,
		    "| multipart/mixed (1|1 text/plain, 2|2 text/html, "
		    "3|3 message/rfc822 {3| multipart/mixed "
		    "(3.1|1 text/plain, 3.2|2 application/octet-stream)})");
	msg = find(root, "3");
	g_assert_cmpstr(msg->type, ==, "message");
	g_assert_nonnull(msg->message);
	g_assert_cmpuint(msg->size, ==, 567);
	g_assert_cmpuint(msg->lines, ==, 22);
	g_assert_cmpuint(msg->message->depth, ==, 2);
	g_assert_cmpuint(find(root, "3.2")->depth, ==, 3);
	g_assert_cmpstr(find(root, "3.2")->name_section, ==, "2");
	g_assert_cmpstr(imapfs_part_param(find(root, "3.2")->params, "NAME"),
			==, "data.bin");
	/* the attached message counts as one leaf of its own level */
	assert_leaves(root, "1 2 3");
	assert_leaves(msg->message, "3.1 3.2");
}

static void test_message_in_mixed_in_alternative(void)
{
	g_autoptr(ImapfsPart) root = parse(dovecot_alt_mixed_rfc822);
	const ImapfsPart *msg;

	assert_dump(dovecot_alt_mixed_rfc822,
		    "| multipart/alternative (1|1 text/plain, "
		    "2|2 multipart/mixed (2.1|2.1 text/plain, "
		    "2.2|2.2 message/rfc822 {2.2.1|1 text/plain}))");
	assert_leaves(root, "1 2.1 2.2");
	msg = find(root, "2.2");
	assert_leaves(msg->message, "2.2.1");
	g_assert_true(imapfs_part_find(root, "2.2.1") == msg->message);
	g_assert_cmpuint(msg->message->size, ==, 14);
	g_assert_cmpuint(msg->message->depth, ==, 3);
}

/* The whole message is message/rfc822: its body is "1", and the
 * multipart inside shares that section. */
static void test_message_top_level(void)
{
	g_autoptr(ImapfsPart) root = parse(dovecot_top_rfc822);

	assert_dump(dovecot_top_rfc822,
		    "1|1 message/rfc822 {1| multipart/mixed "
		    "(1.1|1 text/plain, 1.2|2 text/html)}");
	g_assert_true(imapfs_part_find(root, "1") == root);
	assert_leaves(root, "1");
	assert_leaves(root->message, "1.1 1.2");
}

static void test_message_nested(void)
{
	assert_dump(dovecot_rfc822_in_rfc822,
		    "| multipart/mixed (1|1 text/plain, 2|2 message/rfc822 "
		    "{2.1|1 message/rfc822 {2.1.1|1 text/plain}})");
}

/* A message part without envelope and body is an ordinary leaf. */
static void test_message_without_body(void)
{
	static const char *const texts[] = {
		"(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 100)",
		"(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 100 NIL NIL "
		"NIL NIL)",
		"(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 100 NIL "
		"(\"attachment\" (\"filename\" \"x.eml\")) NIL NIL)",
		"(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 100 (NIL NIL NIL "
		"NIL NIL NIL NIL NIL NIL NIL) FOO 3)",
		"(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 100 (NIL NIL NIL "
		"NIL NIL NIL NIL NIL NIL NIL) () 3)",
		"(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 100 (NIL NIL NIL "
		"NIL NIL NIL NIL NIL NIL NIL))",
	};

	for (gsize i = 0; i < G_N_ELEMENTS(texts); i++) {
		g_autoptr(ImapfsPart) root = parse(texts[i]);

		g_assert_cmpstr(root->type, ==, "message");
		g_assert_cmpstr(root->subtype, ==, "rfc822");
		g_assert_cmpuint(root->size, ==, 100);
		g_assert_null(root->message);
		assert_leaves(root, "1");
	}
	{
		g_autoptr(ImapfsPart) root = parse(texts[2]);

		g_assert_cmpstr(root->disposition, ==, "attachment");
	}
	{
		g_autoptr(ImapfsPart) root = parse(texts[3]);

		g_assert_cmpuint(root->lines, ==, 3);
	}
}

/* ---- fields ---- */

static void test_params_rfc2231(void)
{
	g_autoptr(ImapfsPart) root =
		parse("(\"APPLICATION\" \"OCTET-STREAM\" (\"NAME*0*\" "
		      "\"utf-8''%E2%82%AC%20rate\" \"name*1*\" \"s.txt\") NIL "
		      "NIL \"BASE64\" 4 NIL (\"ATTACHMENT\" (\"FILENAME*0*\" "
		      "\"utf-8''a%20\" \"FILENAME*1\" \"b.txt\")) NIL NIL)");

	g_assert_cmpstr(root->type, ==, "application");
	g_assert_cmpstr(root->subtype, ==, "octet-stream");
	assert_params(root->params,
		      "name*0*=utf-8''%E2%82%AC%20rate;name*1*=s.txt;");
	g_assert_cmpstr(imapfs_part_param(root->params, "NAME*1*"), ==,
			"s.txt");
	g_assert_cmpstr(root->disposition, ==, "attachment");
	assert_params(root->disposition_params,
		      "filename*0*=utf-8''a%20;filename*1=b.txt;");
}

static void test_params_odd(void)
{
	g_autoptr(ImapfsPart) root =
		parse("(\"TEXT\" \"PLAIN\" (\"A\" \"1\" NIL \"2\" \"b\" NIL "
		      "(\"x\") \"3\" \"c\" (\"4\") \"dangling\") NIL NIL NIL "
		      "0 0)");

	/* NIL or list names are dropped, a NIL value is "", and so is a
	 * list value; the odd word at the end goes */
	assert_params(root->params, "a=1;b=;c=;");
}

static void test_disposition(void)
{
	g_autoptr(ImapfsPart) root = parse(dovecot_nasty);
	const ImapfsPart *file = find(root, "2");
	const ImapfsPart *image = find(root, "3");
	g_autoptr(ImapfsPart) bare =
		parse("(\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 1 1 NIL "
		      "\"INLINE\")");

	g_assert_cmpstr(file->disposition, ==, "attachment");
	/* bytes kept as they came, in a literal */
	assert_params(file->disposition_params,
		      "filename=caf\xe9 \xff.txt;size=3;creation-date=Mon, 1 "
		      "Jan 2024 00:00:00 +0000;");
	assert_params(file->params, "name*=utf-8''%E2%82%AC%20rates.txt;");
	g_assert_cmpstr(image->disposition, ==, "inline");
	g_assert_cmpuint(image->disposition_params->len, ==, 0);
	g_assert_cmpstr(imapfs_part_param(image->params, "name"), ==,
			"=?utf-8?q?=C3=A4.png?=");
	g_assert_cmpstr(bare->disposition, ==, "inline");
}

static void test_extension_present(void)
{
	g_autoptr(ImapfsPart) root = parse(dovecot_nasty);
	const ImapfsPart *text = find(root, "1");

	g_assert_cmpstr(text->type, ==, "text");
	g_assert_cmpstr(text->subtype, ==, "plain");
	assert_params(text->params, "charset=ISO-8859-1;format=flowed;");
	g_assert_cmpstr(text->id, ==, "<id1@x>");
	g_assert_cmpstr(text->description, ==, "D\xe9scription");
	g_assert_cmpstr(text->encoding, ==, "quoted-printable");
	g_assert_cmpuint(text->size, ==, 7);
	g_assert_cmpuint(text->lines, ==, 0);
	g_assert_cmpstr(text->md5, ==, "Q2hlY2sgSW50ZWdyaXR5IQ==");
	g_assert_null(text->disposition);
	g_assert_cmpstr(text->language, ==, "en, de");
	g_assert_cmpstr(text->location, ==, "http://example.org/x");
	/* an empty subtype is a missing one */
	g_assert_cmpstr(find(root, "5")->subtype, ==, "plain");
	/* message/global without envelope and body */
	g_assert_cmpstr(find(root, "6")->subtype, ==, "global");
	g_assert_null(find(root, "6")->message);
	g_assert_cmpuint(find(root, "6")->size, ==, 39);
	assert_leaves(root, "1 2 3 4 5 6");
	g_assert_cmpstr(imapfs_part_param(root->params, "boundary"), ==, "zz");
}

static void test_extension_absent(void)
{
	g_autoptr(ImapfsPart) root = parse(rfc3501_mixed);

	for (guint i = 0; i < root->children->len; i++) {
		const ImapfsPart *part = root->children->pdata[i];

		g_assert_null(part->md5);
		g_assert_null(part->disposition);
		g_assert_cmpuint(part->disposition_params->len, ==, 0);
		g_assert_null(part->language);
		g_assert_null(part->location);
	}
	g_assert_cmpuint(root->params->len, ==, 0);
	g_assert_null(root->disposition);
}

/* Fields after the location are extension data nobody has defined yet. */
static void test_extension_unknown(void)
{
	g_autoptr(ImapfsPart) single = parse(
		"(\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 1 1 \"md5\" NIL "
		"\"en\" \"loc\" (1 (2 (3 \"x\")) NIL) \"x\" FOO {3}\r\n"
		"abc)");
	g_autoptr(ImapfsPart) multi = parse(
		"((\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 1 1) \"MIXED\" "
		"(\"BOUNDARY\" \"b\") (\"INLINE\" NIL) (\"en\" NIL \"fr\") "
		"\"loc\" ((1) 2) \"more\")");

	g_assert_cmpstr(single->md5, ==, "md5");
	g_assert_cmpstr(single->language, ==, "en");
	g_assert_cmpstr(single->location, ==, "loc");
	g_assert_cmpstr(multi->disposition, ==, "inline");
	g_assert_cmpstr(multi->language, ==, "en, fr");
	g_assert_cmpstr(multi->location, ==, "loc");
	g_assert_null(multi->md5);
	assert_params(multi->params, "boundary=b;");
}

/* body-fld-lines: missing for text, sent for non-text, or quoted. */
static void test_lines(void)
{
	g_autoptr(ImapfsPart) no_lines =
		parse("(\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 5 NIL "
		      "(\"attachment\" NIL) NIL \"loc\")");
	g_autoptr(ImapfsPart) md5_no_lines =
		parse("(\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 5 \"sum\" "
		      "(\"attachment\" NIL))");
	g_autoptr(ImapfsPart) other_lines =
		parse("(\"IMAGE\" \"GIF\" NIL NIL NIL \"BASE64\" 5 12 \"sum\" "
		      "(\"inline\" NIL))");
	g_autoptr(ImapfsPart) quoted =
		parse("(\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" \"5\" \"12\" "
		      "\"sum\")");

	g_assert_cmpuint(no_lines->lines, ==, 0);
	g_assert_null(no_lines->md5);
	g_assert_cmpstr(no_lines->disposition, ==, "attachment");
	g_assert_cmpstr(no_lines->location, ==, "loc");
	g_assert_cmpstr(md5_no_lines->md5, ==, "sum");
	g_assert_cmpstr(md5_no_lines->disposition, ==, "attachment");
	g_assert_cmpuint(other_lines->lines, ==, 12);
	g_assert_cmpstr(other_lines->md5, ==, "sum");
	g_assert_cmpstr(other_lines->disposition, ==, "inline");
	g_assert_cmpuint(quoted->size, ==, 5);
	g_assert_cmpuint(quoted->lines, ==, 12);
	g_assert_cmpstr(quoted->md5, ==, "sum");
}

/* ---- what servers get wrong ---- */

static void test_nil_heavy(void)
{
	g_autoptr(ImapfsPart) all_nil = parse("(NIL NIL NIL NIL NIL NIL NIL)");
	g_autoptr(ImapfsPart) short_part = parse("(\"IMAGE\")");
	g_autoptr(ImapfsPart) no_subtype =
		parse("(\"APPLICATION\" NIL NIL NIL NIL NIL 12)");
	g_autoptr(ImapfsPart) exchange = parse(nil_encoding);
	g_autoptr(ImapfsPart) words =
		parse("(TEXT HTML (CHARSET UTF-8) NIL NIL QUOTED-PRINTABLE 5)");
	g_autoptr(ImapfsPart) big = parse("(\"TEXT\" \"PLAIN\" NIL NIL NIL NIL "
					  "99999999999999999999999 -1)");

	g_assert_cmpstr(all_nil->type, ==, "text");
	g_assert_cmpstr(all_nil->subtype, ==, "plain");
	g_assert_cmpstr(all_nil->encoding, ==, "7bit");
	g_assert_null(all_nil->id);
	g_assert_null(all_nil->description);
	g_assert_cmpuint(all_nil->size, ==, 0);
	g_assert_cmpuint(all_nil->params->len, ==, 0);
	g_assert_cmpstr(short_part->type, ==, "image");
	g_assert_cmpstr(short_part->subtype, ==, "octet-stream");
	g_assert_cmpstr(short_part->encoding, ==, "7bit");
	g_assert_cmpstr(no_subtype->subtype, ==, "octet-stream");
	g_assert_cmpuint(no_subtype->size, ==, 12);
	g_assert_cmpstr(find(exchange, "1.1")->encoding, ==, "7bit");
	g_assert_cmpuint(find(exchange, "1.1")->lines, ==, 44);
	g_assert_cmpstr(find(exchange, "1.2")->encoding, ==,
			"quoted-printable");
	g_assert_cmpstr(words->subtype, ==, "html");
	g_assert_cmpstr(imapfs_part_param(words->params, "charset"), ==,
			"UTF-8");
	g_assert_cmpstr(words->encoding, ==, "quoted-printable");
	g_assert_cmpuint(big->size, ==, 0);
	g_assert_cmpuint(big->lines, ==, 0);
}

static void test_case(void)
{
	g_autoptr(ImapfsPart) root =
		parse("((\"TeXt\" \"HtMl\" (\"ChArSeT\" \"Utf-8\") NIL NIL "
		      "\"Base64\" 1 1)(\"Message\" \"RFC822\" NIL NIL NIL "
		      "\"7Bit\" 1 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) "
		      "(\"text\" \"PLAIN\" NIL NIL NIL \"8BIT\" 1 1) 1) "
		      "\"ALTernative\" (\"Boundary\" \"AbC\") (\"ATTACHment\" "
		      "NIL))");

	g_assert_cmpstr(root->subtype, ==, "alternative");
	assert_params(root->params, "boundary=AbC;");
	g_assert_cmpstr(root->disposition, ==, "attachment");
	g_assert_cmpstr(find(root, "1")->type, ==, "text");
	g_assert_cmpstr(find(root, "1")->subtype, ==, "html");
	g_assert_cmpstr(find(root, "1")->encoding, ==, "base64");
	assert_params(find(root, "1")->params, "charset=Utf-8;");
	g_assert_nonnull(find(root, "2")->message);
	g_assert_cmpstr(find(root, "2.1")->encoding, ==, "8bit");
}

static void test_gmail_empty_multipart(void)
{
	g_autoptr(ImapfsPart) root = parse(gmail_empty_alternative);
	g_autoptr(ImapfsPart) report = parse(gmail_bare_alternative);
	g_autoptr(ImapfsPart) stubs = parse(gmail_related_stubs);
	const ImapfsPart *empty = find(root, "1");
	const ImapfsPart *msg = find(report, "3");

	assert_dump(gmail_empty_alternative,
		    "| multipart/mixed (1|1 multipart/alternative (), "
		    "2|2 application/pdf)");
	g_assert_cmpuint(empty->children->len, ==, 0);
	g_assert_cmpstr(imapfs_part_param(empty->params, "boundary"), ==,
			"e7e3f78cb2");
	assert_leaves(root, "2");

	assert_dump(gmail_bare_alternative,
		    "| multipart/report (1|1 text/plain, "
		    "2|2 message/delivery-status, 3|3 message/rfc822 "
		    "{3| multipart/alternative ()})");
	g_assert_cmpuint(msg->lines, ==, 51);
	assert_leaves(msg->message, "");
	g_assert_cmpuint(find(report, "2")->size, ==, 344);

	assert_dump(gmail_related_stubs,
		    "| multipart/mixed (1|1 multipart/alternative "
		    "(1.1|1.1 text/plain, 1.2|1.2 text/html), "
		    "2|2 multipart/related (), 3|3 multipart/related ())");
	g_assert_cmpstr(find(stubs, "2")->disposition, ==, "attachment");
	assert_leaves(stubs, "1.1 1.2");
}

/* A single part typed multipart is an empty multipart; Dovecot instead
 * makes up an empty text part. */
static void test_empty_multipart(void)
{
	g_autoptr(ImapfsPart) typed =
		parse("(\"MULTIPART\" \"MIXED\" (\"BOUNDARY\" \"x\") NIL NIL "
		      "\"7BIT\" 0)");

	g_assert_true(imapfs_part_is_multipart(typed));
	g_assert_cmpstr(typed->section, ==, "");
	g_assert_cmpstr(typed->subtype, ==, "mixed");
	g_assert_cmpstr(imapfs_part_param(typed->params, "boundary"), ==, "x");
	assert_leaves(typed, "");
	assert_dump(dovecot_empty_multipart, "| multipart/mixed "
					     "(1|1 text/plain)");
	assert_dump("((\"text\" \"plain\" NIL NIL NIL \"7bit\" 0 0) NIL NIL "
		    "NIL NIL)",
		    "| multipart/mixed (1|1 text/plain)");
	assert_dump("((\"text\" \"plain\" NIL NIL NIL \"7bit\" 0 0))",
		    "| multipart/mixed (1|1 text/plain)");
}

static void test_interrupted_children(void)
{
	assert_dump("((\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 1 1) NIL "
		    "(\"TEXT\" \"HTML\" NIL NIL NIL \"7BIT\" 2 1) FOO "
		    "((\"IMAGE\" \"GIF\" NIL NIL NIL \"BASE64\" 3)) "
		    "\"ALTERNATIVE\" (\"BOUNDARY\" \"x\") NIL NIL)",
		    "| multipart/alternative (1|1 text/plain, 2|2 text/html, "
		    "3|3 multipart/mixed (3.1|3.1 image/gif))");
	/* a word followed by what is no body ends the children */
	assert_dump("((\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 1 1) 12 "
		    "(\"charset\" \"x\"))",
		    "| multipart/12 (1|1 text/plain)");
}

/* A bare "" inside a quoted string (go-imap #659) already breaks the IMAP
 * syntax: the parser refuses it, and that comes back as PROTOCOL. */
static void test_unescaped_quotes(void)
{
	assert_fails("((\"text\" \"html\" (\"charset\" \"UTF-8\") NIL NIL "
		     "\"quoted-printable\" 1224 16)(\"application\" "
		     "\"octet-stream\" (\"name\" \"2154973550.pdf\") NIL "
		     "\"\"\"\" \"base64\" 65322) \"MIXED\")",
		     -1);
}

static void test_nul_and_bytes(void)
{
	static const char text[] = "(\"TEXT\" \"PLAIN\" (\"NAME\" {5}\r\n"
				   "a\0b\xff"
				   "c) NIL {3}\r\n\xfe\xfd\x80 \"8BIT\" 5 1)";
	g_autoptr(GError) error = NULL;
	g_autoptr(ImapfsPart) root = imapfs_bodystructure_parse_string(
		text, sizeof(text) - 1, &error);

	g_assert_no_error(error);
	/* cut at the NUL */
	g_assert_cmpstr(imapfs_part_param(root->params, "name"), ==, "a");
	g_assert_cmpstr(root->description, ==, "\xfe\xfd\x80");
}

/* ---- limits and garbage ---- */

/* @depth multiparts nested around one text part, which is at @depth. */
static char *nested(guint depth)
{
	GString *s = g_string_new(NULL);

	for (guint i = 0; i < depth; i++)
		g_string_append_c(s, '(');
	g_string_append(s, "(\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 1 1)");
	for (guint i = 0; i < depth; i++)
		g_string_append(s, " \"MIXED\")");
	return g_string_free(s, FALSE);
}

/* A chain of @depth attached messages around one text part. */
static char *nested_messages(guint depth)
{
	GString *s = g_string_new(NULL);

	for (guint i = 0; i < depth; i++)
		g_string_append(s, "(\"MESSAGE\" \"RFC822\" NIL NIL NIL "
				   "\"7BIT\" 1 (NIL NIL NIL NIL NIL NIL NIL "
				   "NIL NIL NIL) ");
	g_string_append(s, "(\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 1 1)");
	for (guint i = 0; i < depth; i++)
		g_string_append(s, " 1)");
	return g_string_free(s, FALSE);
}

static void test_depth_limit(void)
{
	g_autofree char *ok = nested(IMAPFS_BODYSTRUCTURE_MAX_DEPTH);
	g_autofree char *deep = nested(IMAPFS_BODYSTRUCTURE_MAX_DEPTH + 1);
	g_autofree char *msg_ok =
		nested_messages(IMAPFS_BODYSTRUCTURE_MAX_DEPTH);
	g_autofree char *msg_deep =
		nested_messages(IMAPFS_BODYSTRUCTURE_MAX_DEPTH + 1);
	g_autofree char *dovecot = nested(40); /* as Dovecot sent it */
	g_autoptr(ImapfsPart) root = parse(ok);
	g_autoptr(ImapfsPart) chain = parse(msg_ok);
	g_autoptr(GPtrArray) list = imapfs_part_leaves(root);
	const ImapfsPart *leaf;

	g_assert_cmpuint(list->len, ==, 1);
	leaf = list->pdata[0];
	g_assert_cmpuint(leaf->depth, ==, IMAPFS_BODYSTRUCTURE_MAX_DEPTH);
	g_assert_true(imapfs_part_find(root, leaf->section) == leaf);
	g_assert_cmpuint(strlen(leaf->section), ==,
			 2 * IMAPFS_BODYSTRUCTURE_MAX_DEPTH - 1);
	assert_fails(deep, -1);
	assert_fails(msg_deep, -1);
	assert_fails(dovecot, -1);
	for (leaf = chain; leaf->message; leaf = leaf->message)
		g_assert_cmpstr(leaf->name_section, ==, "1");
	g_assert_cmpuint(leaf->depth, ==, IMAPFS_BODYSTRUCTURE_MAX_DEPTH);
	g_assert_cmpuint(strlen(leaf->section), ==,
			 2 * (IMAPFS_BODYSTRUCTURE_MAX_DEPTH + 1) - 1);
}

/* A multipart with @children children: @children + 1 parts. */
static char *wide(guint children)
{
	GString *s = g_string_new("(");

	for (guint i = 0; i < children; i++)
		g_string_append(s, "(\"A\" \"B\")");
	g_string_append(s, " \"MIXED\")");
	return g_string_free(s, FALSE);
}

static void test_parts_limit(void)
{
	g_autofree char *ok = wide(IMAPFS_BODYSTRUCTURE_MAX_PARTS - 1);
	g_autofree char *many = wide(IMAPFS_BODYSTRUCTURE_MAX_PARTS);
	g_autoptr(ImapfsPart) root = parse(ok);
	g_autofree char *last =
		g_strdup_printf("%u", IMAPFS_BODYSTRUCTURE_MAX_PARTS - 1);
	g_autoptr(GPtrArray) list = imapfs_part_leaves(root);

	g_assert_cmpuint(list->len, ==, IMAPFS_BODYSTRUCTURE_MAX_PARTS - 1);
	g_assert_cmpstr(find(root, last)->type, ==, "a");
	g_assert_cmpstr(find(root, "1")->subtype, ==, "b");
	g_assert_cmpstr(find(root, "10")->section, ==, "10");
	g_assert_null(imapfs_part_find(root, "1.0"));
	g_assert_null(imapfs_part_find(root, "01"));
	assert_fails(many, -1);
}

static void test_garbage(void)
{
	static const char *const fail[] = {
		"FOO",
		"\"text\"",
		"NIL",
		"{3}\r\nabc",
		"()",
		"(() \"MIXED\")",
		"((\"TEXT\" \"PLAIN\") () \"MIXED\")",
		"(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 1 (NIL) (()) 1)",
		"",
		"(\"TEXT\"",
		"(\"TEXT\"))",
		"(\"A\") (\"B\")",
		"(\"TEXT\" \"PLAIN\")\r\n* 2 FETCH (UID 1)",
	};
	/* liberal reading, but no crash and no nonsense */
	static const char *const odd[] = {
		"(FOO BAR)",
		"((FOO) BAR)",
		"(1 2 3 4 5 6 7 8 9 10 11 12)",
		"((((NIL))))",
		"((NIL) (NIL) NIL NIL NIL NIL NIL NIL)",
		"(\"TEXT\" (\"PLAIN\") (1 2) (3) (4) (5) (6) (7) (8) (9))",
		"(\"MULTIPART\")",
		"(\"X-FOO\" NIL)",
	};

	for (gsize i = 0; i < G_N_ELEMENTS(fail); i++)
		assert_fails(fail[i], -1);
	for (gsize i = 0; i < G_N_ELEMENTS(odd); i++) {
		g_autoptr(ImapfsPart) root = parse(odd[i]);
		g_autoptr(GPtrArray) list = imapfs_part_leaves(root);

		g_assert_nonnull(root->type);
		g_assert_nonnull(root->encoding);
		g_assert_nonnull(list);
	}
	assert_fails("(\"TEXT\" \"PLAIN\")", 5);
}

static void test_direct_arg(void)
{
	g_autoptr(GError) error = NULL;
	ImapfsArg nil = {IMAPFS_ARG_NIL, NULL, 0, NULL, FALSE};

	g_assert_null(imapfs_bodystructure_parse(&nil, &error));
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_PROTOCOL);
	g_clear_error(&error);
	g_assert_null(imapfs_bodystructure_parse(NULL, &error));
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_PROTOCOL);
	g_assert_null(imapfs_part_find(NULL, "1"));
	imapfs_part_free(NULL);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/bodystructure/simple/text-plain", test_text_plain);
	g_test_add_func("/bodystructure/simple/rfc3501-mixed",
			test_rfc3501_mixed);
	g_test_add_func("/bodystructure/nested/mixed-alternative",
			test_mixed_alternative);
	g_test_add_func("/bodystructure/message/multipart",
			test_message_multipart);
	g_test_add_func("/bodystructure/message/in-mixed-in-alternative",
			test_message_in_mixed_in_alternative);
	g_test_add_func("/bodystructure/message/top-level",
			test_message_top_level);
	g_test_add_func("/bodystructure/message/nested", test_message_nested);
	g_test_add_func("/bodystructure/message/without-body",
			test_message_without_body);
	g_test_add_func("/bodystructure/params/rfc2231-raw",
			test_params_rfc2231);
	g_test_add_func("/bodystructure/params/odd", test_params_odd);
	g_test_add_func("/bodystructure/disposition", test_disposition);
	g_test_add_func("/bodystructure/extension/present",
			test_extension_present);
	g_test_add_func("/bodystructure/extension/absent",
			test_extension_absent);
	g_test_add_func("/bodystructure/extension/unknown",
			test_extension_unknown);
	g_test_add_func("/bodystructure/lines", test_lines);
	g_test_add_func("/bodystructure/quirks/nil-heavy", test_nil_heavy);
	g_test_add_func("/bodystructure/quirks/case", test_case);
	g_test_add_func("/bodystructure/quirks/gmail-empty-multipart",
			test_gmail_empty_multipart);
	g_test_add_func("/bodystructure/quirks/empty-multipart",
			test_empty_multipart);
	g_test_add_func("/bodystructure/quirks/interrupted-children",
			test_interrupted_children);
	g_test_add_func("/bodystructure/quirks/unescaped-quotes",
			test_unescaped_quotes);
	g_test_add_func("/bodystructure/quirks/nul-and-bytes",
			test_nul_and_bytes);
	g_test_add_func("/bodystructure/limits/depth", test_depth_limit);
	g_test_add_func("/bodystructure/limits/parts", test_parts_limit);
	g_test_add_func("/bodystructure/garbage", test_garbage);
	g_test_add_func("/bodystructure/direct-arg", test_direct_arg);
	return g_test_run();
}
