/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Tests for the IMAP response parser. Every input goes through parse(),
 * which feeds it whole, one byte at a time and in 7-byte pieces and insists
 * that all three give the same responses, errors and streamed bytes: the
 * parser must not care where the network cut the data.
 */
#include <string.h>

#include "imapfs/imap-parser.h"

/* ---- a literal sink that records what it is given ---- */

typedef struct {
	guint64 stream_over;	/* stream literals larger than this */
	const char *reject_key; /* REJECT literals after this key */
	gboolean inline_always; /* answer INLINE whatever the size */
	GString *keys;		/* "key:size;" per begin() */
	GString *bytes;		/* streamed bytes, concatenated */
	guint data_calls;
} Sink;

static ImapfsLiteralAction sink_begin(gpointer user_data,
				      const ImapfsResponse *resp,
				      const char *key, guint64 size,
				      const char **error_r)
{
	Sink *sink = user_data;

	g_assert_nonnull(resp);
	g_string_append_printf(sink->keys, "%s:%" G_GUINT64_FORMAT ";",
			       key ? key : "-", size);
	if (sink->reject_key && g_strcmp0(key, sink->reject_key) == 0) {
		*error_r = "rejected by test sink";
		return IMAPFS_LITERAL_REJECT;
	}
	if (sink->inline_always || size <= sink->stream_over)
		return IMAPFS_LITERAL_INLINE;
	return IMAPFS_LITERAL_STREAM;
}

static gboolean sink_data(gpointer user_data, const guint8 *data, gsize len,
			  const char **error_r)
{
	Sink *sink = user_data;

	g_assert_cmpuint(len, >, 0);
	g_string_append_len(sink->bytes, (const char *)data, (gssize)len);
	sink->data_calls++;
	return TRUE;
}

static const ImapfsLiteralSink test_sink = {sink_begin, sink_data};

/* ---- an exact rendering of responses, for comparisons ---- */

static void dump_bytes(GString *out, const char *data, gsize len)
{
	for (gsize i = 0; i < len; i++) {
		guint8 c = (guint8)data[i];

		if (c < 0x20 || c >= 0x7f)
			g_string_append_printf(out, "\\x%02x", c);
		else
			g_string_append_c(out, (char)c);
	}
}

static void dump_list(GString *out, const GPtrArray *list);

static void dump_arg(GString *out, const ImapfsArg *arg)
{
	switch (arg->type) {
	case IMAPFS_ARG_ATOM:
		g_assert_cmpuint(strlen(arg->data), ==, arg->len);
		dump_bytes(out, arg->data, arg->len);
		break;
	case IMAPFS_ARG_STRING:
		g_string_append_c(out, '"');
		dump_bytes(out, arg->data, arg->len);
		g_string_append_c(out, '"');
		break;
	case IMAPFS_ARG_LITERAL:
		g_string_append_printf(out, "%s{%" G_GUINT64_FORMAT,
				       arg->literal8 ? "~" : "", arg->len);
		if (arg->data) {
			g_assert_cmpint(arg->data[arg->len], ==, '\0');
			g_string_append_c(out, '=');
			dump_bytes(out, arg->data, arg->len);
		} else {
			g_string_append(out, " streamed");
		}
		g_string_append_c(out, '}');
		break;
	case IMAPFS_ARG_NIL:
		g_assert_null(arg->data);
		g_string_append(out, "NIL");
		break;
	case IMAPFS_ARG_LIST:
		g_string_append_c(out, '(');
		dump_list(out, arg->list);
		g_string_append_c(out, ')');
		break;
	}
}

static void dump_list(GString *out, const GPtrArray *list)
{
	for (guint i = 0; i < list->len; i++) {
		if (i > 0)
			g_string_append_c(out, ' ');
		dump_arg(out, g_ptr_array_index(list, i));
	}
}

static const char *const status_names[] = {"",	  "OK",	 "NO",
					   "BAD", "BYE", "PREAUTH"};

/* "TAG STATUS [code] args |text|"; text only for status and "+". */
static void dump_response(GString *out, const ImapfsResponse *resp)
{
	g_assert_nonnull(resp->args);
	g_assert_nonnull(resp->text);
	if (resp->kind == IMAPFS_RESP_TAGGED)
		g_string_append(out, resp->tag);
	else
		g_string_append(out, resp->kind == IMAPFS_RESP_CONTINUATION
					     ? "+"
					     : "*");
	if (resp->status != IMAPFS_STATUS_NONE)
		g_string_append_printf(out, " %s", status_names[resp->status]);
	if (resp->code) {
		g_string_append(out, " [");
		dump_list(out, resp->code);
		g_string_append_c(out, ']');
	}
	if (resp->args->len > 0) {
		g_assert_cmpint(resp->status, ==, IMAPFS_STATUS_NONE);
		g_string_append_c(out, ' ');
		dump_list(out, resp->args);
	}
	if (resp->status != IMAPFS_STATUS_NONE ||
	    resp->kind == IMAPFS_RESP_CONTINUATION)
		g_string_append_printf(out, " |%s|", resp->text);
}

/* ---- feeding ---- */

typedef struct {
	const ImapfsParserLimits *limits; /* NULL: defaults */
	Sink *sink;			  /* NULL: no sink */
} Setup;

/* Feeds @input in pieces of @chunk bytes and renders everything that came
 * out: one line per response, then "ERROR: msg" or "MORE" if unfinished. */
static char *run(const Setup *setup, const char *input, gsize len, gsize chunk)
{
	g_autoptr(ImapfsParser) parser = imapfs_parser_new(setup->limits);
	g_autoptr(GString) out = g_string_new(NULL);
	gboolean pending = FALSE;

	if (setup->sink)
		imapfs_parser_set_literal_sink(parser, &test_sink, setup->sink);
	for (gsize off = 0; off < len; off += chunk) {
		gsize n = MIN(chunk, len - off), pos = 0;

		while (pos < n) {
			ImapfsResponse *resp;
			const char *error;
			gsize used = G_MAXSIZE;
			ImapfsParseResult r;

			r = imapfs_parser_feed(
				parser, (const guint8 *)input + off + pos,
				n - pos, &used, &resp, &error);
			g_assert_cmpuint(used, <=, n - pos);
			pos += used;
			pending = TRUE;
			if (r == IMAPFS_PARSE_ERROR) {
				g_assert_nonnull(error);
				g_assert_null(resp);
				g_string_append_printf(out, "ERROR: %s", error);
				return g_string_free(g_steal_pointer(&out),
						     FALSE);
			}
			if (r == IMAPFS_PARSE_MORE) {
				g_assert_cmpuint(pos, ==, n);
				g_assert_null(resp);
				continue;
			}
			g_assert_cmpuint(used, >, 0);
			dump_response(out, resp);
			g_string_append_c(out, '\n');
			imapfs_response_free(resp);
			pending = FALSE;
		}
	}
	if (pending)
		g_string_append(out, "MORE");
	return g_string_free(g_steal_pointer(&out), FALSE);
}

static void sink_clear(Sink *sink)
{
	g_string_truncate(sink->keys, 0);
	g_string_truncate(sink->bytes, 0);
	sink->data_calls = 0;
}

/* Runs @input whole, byte by byte and in 7-byte pieces; all must agree.
 * The sink, if any, is left with what the byte-by-byte run gave it. */
static char *parse_full(const Setup *setup, const char *input, gsize len)
{
	static const gsize chunks[] = {7, G_MAXSIZE, 1};
	g_autofree char *first = NULL;
	g_autofree char *keys = NULL;
	g_autofree char *bytes = NULL;

	for (guint i = 0; i < G_N_ELEMENTS(chunks); i++) {
		g_autofree char *got = NULL;

		if (setup->sink)
			sink_clear(setup->sink);
		got = run(setup, input, len, chunks[i]);
		if (!first) {
			first = g_steal_pointer(&got);
			if (setup->sink) {
				keys = g_strdup(setup->sink->keys->str);
				bytes = g_strndup(setup->sink->bytes->str,
						  setup->sink->bytes->len);
			}
			continue;
		}
		g_assert_cmpstr(got, ==, first);
		if (setup->sink) {
			g_assert_cmpstr(setup->sink->keys->str, ==, keys);
			g_assert_cmpstr(setup->sink->bytes->str, ==, bytes);
		}
	}
	return g_steal_pointer(&first);
}

static char *parse(const char *input)
{
	const Setup setup = {NULL, NULL};

	return parse_full(&setup, input, strlen(input));
}

static void check(const char *input, const char *expected)
{
	g_autofree char *got = parse(input);

	g_assert_cmpstr(got, ==, expected);
}

#define CHECK_BYTES(input, expected)                                   \
	G_STMT_START                                                   \
	{                                                              \
		const Setup setup_ = {NULL, NULL};                     \
		g_autofree char *got_ =                                \
			parse_full(&setup_, input, sizeof(input) - 1); \
		g_assert_cmpstr(got_, ==, expected);                   \
	}                                                              \
	G_STMT_END

static void check_limited(const ImapfsParserLimits *limits, const char *input,
			  const char *expected)
{
	const Setup setup = {limits, NULL};
	g_autofree char *got = parse_full(&setup, input, strlen(input));

	g_assert_cmpstr(got, ==, expected);
}

/* Parses exactly one response from @input, for tests of the structure. */
static ImapfsResponse *parse_one(const char *input)
{
	g_autoptr(ImapfsParser) parser = imapfs_parser_new(NULL);
	ImapfsResponse *resp = NULL;
	const char *error = NULL;
	gsize used = 0;

	g_assert_cmpint(imapfs_parser_feed(parser, (const guint8 *)input,
					   strlen(input), &used, &resp, &error),
			==, IMAPFS_PARSE_RESPONSE);
	g_assert_cmpuint(used, ==, strlen(input));
	return resp;
}

/* ---- responses seen in real sessions ---- */

static void test_greeting(void)
{
	check("* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE "
	      "IDLE LITERAL+ AUTH=PLAIN] Dovecot ready.\r\n",
	      "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE "
	      "IDLE LITERAL+ AUTH=PLAIN] |Dovecot ready.|\n");
	check("* PREAUTH IMAP4rev1 server logged in as Smith\r\n",
	      "* PREAUTH |IMAP4rev1 server logged in as Smith|\n");
	check("* BYE Autologout; idle for too long\r\n",
	      "* BYE |Autologout; idle for too long|\n");
}

static void test_capability(void)
{
	g_autoptr(ImapfsResponse) resp = NULL;

	check("* CAPABILITY IMAP4rev1 STARTTLS AUTH=GSSAPI LOGINDISABLED\r\n",
	      "* CAPABILITY IMAP4rev1 STARTTLS AUTH=GSSAPI LOGINDISABLED\n");
	resp = parse_one("* CAPABILITY IMAP4rev1 IDLE\r\n");
	g_assert_cmpint(resp->kind, ==, IMAPFS_RESP_UNTAGGED);
	g_assert_cmpint(resp->status, ==, IMAPFS_STATUS_NONE);
	g_assert_null(resp->tag);
	g_assert_null(resp->code);
	g_assert_cmpstr(resp->text, ==, "");
	g_assert_cmpuint(resp->args->len, ==, 3);
	g_assert_true(imapfs_arg_is_atom(resp->args->pdata[0], "capability"));
	g_assert_true(imapfs_arg_is_atom(resp->args->pdata[2], "IDLE"));
}

static void test_tagged(void)
{
	g_autoptr(ImapfsResponse) resp = NULL;

	check("A1 OK [READ-WRITE] SELECT completed\r\n",
	      "A1 OK [READ-WRITE] |SELECT completed|\n");
	check("A2 NO [NONEXISTENT] Unknown Mailbox: Foo (0.001 + 0.000 "
	      "secs).\r\n",
	      "A2 NO [NONEXISTENT] |Unknown Mailbox: Foo (0.001 + 0.000 "
	      "secs).|\n");
	check("A3 BAD Error in IMAP command: Unknown command [x] \"y\r\n",
	      "A3 BAD |Error in IMAP command: Unknown command [x] \"y|\n");
	check("A4 OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n",
	      "A4 OK [COPYUID 38505 304,319:320 3956:3958] |Done|\n");
	check("A5 NO [ALERT] Mailbox is full\r\n",
	      "A5 NO [ALERT] |Mailbox is full|\n");
	check("A6 OK\r\n", "A6 OK ||\n");
	check("A7 OK [ALERT]\r\n", "A7 OK [ALERT] ||\n");
	check("a8 ok [badcharset (\"UTF-8\" US-ASCII)] nope\r\n",
	      "a8 OK [badcharset (\"UTF-8\" US-ASCII)] |nope|\n");
	check("A9 OK [X]no space\r\n", "A9 OK [X] |no space|\n");

	resp = parse_one("T12 NO [TRYCREATE] no such mailbox\r\n");
	g_assert_cmpint(resp->kind, ==, IMAPFS_RESP_TAGGED);
	g_assert_cmpstr(resp->tag, ==, "T12");
	g_assert_cmpint(resp->status, ==, IMAPFS_STATUS_NO);
	g_assert_cmpuint(resp->code->len, ==, 1);
	g_assert_true(imapfs_arg_is_atom(resp->code->pdata[0], "TRYCREATE"));
	g_assert_cmpuint(resp->args->len, ==, 0);
	g_assert_cmpstr(resp->text, ==, "no such mailbox");
}

static void test_list(void)
{
	check("* LIST (\\HasNoChildren) \"/\" INBOX\r\n",
	      "* LIST (\\HasNoChildren) \"/\" INBOX\n");
	check("* LIST (\\Noselect \\HasChildren) \".\" \"Public Folders\"\r\n",
	      "* LIST (\\Noselect \\HasChildren) \".\" \"Public Folders\"\n");
	check("* LIST () NIL Flat\r\n", "* LIST () NIL Flat\n");
	check("* LIST (\\Sent) \"/\" {11}\r\nSent [Mail]\r\n",
	      "* LIST (\\Sent) \"/\" {11=Sent [Mail]}\n");
	check("* LIST (\\Marked) \"/\" &AMQ-pfel (CHILDINFO "
	      "(\"SUBSCRIBED\"))\r\n",
	      "* LIST (\\Marked) \"/\" &AMQ-pfel (CHILDINFO "
	      "(\"SUBSCRIBED\"))\n");
}

static void test_examine(void)
{
	check("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
	      "* 172 EXISTS\r\n"
	      "* 1 RECENT\r\n"
	      "* OK [UNSEEN 12] Message 12 is first unseen\r\n"
	      "* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"
	      "* OK [UIDNEXT 4392] Predicted next UID\r\n"
	      "* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n"
	      "* OK [HIGHESTMODSEQ 715194045007]\r\n"
	      "A142 OK [READ-ONLY] EXAMINE completed\r\n",
	      "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\n"
	      "* 172 EXISTS\n"
	      "* 1 RECENT\n"
	      "* OK [UNSEEN 12] |Message 12 is first unseen|\n"
	      "* OK [UIDVALIDITY 3857529045] |UIDs valid|\n"
	      "* OK [UIDNEXT 4392] |Predicted next UID|\n"
	      "* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] |Limited|\n"
	      "* OK [HIGHESTMODSEQ 715194045007] ||\n"
	      "A142 OK [READ-ONLY] |EXAMINE completed|\n");
}

static void test_exists_is_data(void)
{
	g_autoptr(ImapfsResponse) exists = parse_one("* 5 EXISTS\r\n");
	g_autoptr(ImapfsResponse) ok = parse_one("* OK [UIDVALIDITY 3] x\r\n");
	guint64 n = 0;

	g_assert_cmpint(exists->status, ==, IMAPFS_STATUS_NONE);
	g_assert_null(exists->code);
	g_assert_true(imapfs_arg_number(exists->args->pdata[0], &n));
	g_assert_cmpuint(n, ==, 5);
	g_assert_cmpint(ok->status, ==, IMAPFS_STATUS_OK);
	g_assert_cmpuint(ok->args->len, ==, 0);
	g_assert_true(imapfs_arg_number(ok->code->pdata[1], &n));
	g_assert_cmpuint(n, ==, 3);
	g_assert_cmpstr(ok->text, ==, "x");
}

static void test_fetch_attributes(void)
{
	check("* 12 FETCH (UID 4827313 RFC822.SIZE 44827 INTERNALDATE "
	      "\"17-Jul-1996 02:44:25 -0700\" FLAGS (\\Seen \\*) MODSEQ "
	      "(12121231000))\r\n",
	      "* 12 FETCH (UID 4827313 RFC822.SIZE 44827 INTERNALDATE "
	      "\"17-Jul-1996 02:44:25 -0700\" FLAGS (\\Seen \\*) MODSEQ "
	      "(12121231000))\n");
	check("* 3 FETCH (ENVELOPE (\"Wed, 17 Jul 1996\" \"IMAP4rev1 WG mtg\" "
	      "((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) NIL NIL "
	      "NIL \"<B27397-0100000@cac.washington.edu>\"))\r\n",
	      "* 3 FETCH (ENVELOPE (\"Wed, 17 Jul 1996\" \"IMAP4rev1 WG mtg\" "
	      "((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\")) NIL NIL "
	      "NIL \"<B27397-0100000@cac.washington.edu>\"))\n");
}

/* RFC 9051 puts no space between adjacent lists in these two. */
static void test_fetch_adjacent_lists(void)
{
	check("* 1 FETCH (ENVELOPE (NIL \"s\" NIL NIL NIL ((NIL NIL \"a\" "
	      "\"x\")(\"B\" NIL \"b\" \"y\")) NIL NIL NIL NIL))\r\n",
	      "* 1 FETCH (ENVELOPE (NIL \"s\" NIL NIL NIL ((NIL NIL \"a\" "
	      "\"x\") (\"B\" NIL \"b\" \"y\")) NIL NIL NIL NIL))\n");
	check("* 2 FETCH (BODYSTRUCTURE ((\"text\" \"plain\" NIL NIL NIL "
	      "\"7bit\" 3 1)(\"text\" \"html\" NIL NIL NIL \"7bit\" 9 1) "
	      "\"alternative\"))\r\n",
	      "* 2 FETCH (BODYSTRUCTURE ((\"text\" \"plain\" NIL NIL NIL "
	      "\"7bit\" 3 1) (\"text\" \"html\" NIL NIL NIL \"7bit\" 9 1) "
	      "\"alternative\"))\n");
}

static void test_fetch_body_literal(void)
{
	check("* 1 FETCH (UID 7 BODY[]<0> {12}\r\nSubject: x\r\n)\r\n"
	      "A5 OK Fetch completed.\r\n",
	      "* 1 FETCH (UID 7 BODY[]<0> {12=Subject: x\\x0d\\x0a})\n"
	      "A5 OK |Fetch completed.|\n");
}

static void test_fetch_section_atom(void)
{
	g_autoptr(ImapfsResponse) resp = NULL;
	GPtrArray *items;

	check("* 2 FETCH (BODY[HEADER.FIELDS (SUBJECT FROM)] {5}\r\nS: "
	      "x\n)\r\n",
	      "* 2 FETCH (BODY[HEADER.FIELDS (SUBJECT FROM)] {5=S: x\\x0a})\n");
	check("* 2 FETCH (BODY[HEADER.FIELDS (A B)]<0> \"\" BINARY[1.2] "
	      "NIL)\r\n",
	      "* 2 FETCH (BODY[HEADER.FIELDS (A B)]<0> \"\" BINARY[1.2] "
	      "NIL)\n");
	resp = parse_one("* 2 FETCH (BODY[HEADER.FIELDS (A B)] NIL)\r\n");
	items = imapfs_arg_list(resp->args->pdata[2]);
	g_assert_nonnull(items);
	g_assert_cmpuint(items->len, ==, 2);
	g_assert_cmpstr(imapfs_arg_str(items->pdata[0]), ==,
			"BODY[HEADER.FIELDS (A B)]");
	g_assert_cmpint(((ImapfsArg *)items->pdata[1])->type, ==,
			IMAPFS_ARG_NIL);
}

/* Replies to changes: the session reads UIDs and sets out of these
 * response codes and data, so their shape is pinned here. */
static void test_change_replies(void)
{
	g_autoptr(ImapfsResponse) copy = NULL;
	g_autoptr(ImapfsResponse) status = NULL;

	check("A1 OK [APPENDUID 38505 3955] APPEND completed\r\n",
	      "A1 OK [APPENDUID 38505 3955] |APPEND completed|\n");
	check("A2 OK [MODIFIED 7,9] Conditional STORE failed\r\n",
	      "A2 OK [MODIFIED 7,9] |Conditional STORE failed|\n");
	check("* 4 FETCH (UID 7 MODSEQ (12121231777))\r\n",
	      "* 4 FETCH (UID 7 MODSEQ (12121231777))\n");
	check("* SEARCH 2 5 6 (MODSEQ 917162500)\r\n",
	      "* SEARCH 2 5 6 (MODSEQ 917162500)\n");
	check("* SEARCH\r\n", "* SEARCH\n");
	check("* LIST (\\HasNoChildren \\Trash) \".\" Trash\r\n",
	      "* LIST (\\HasNoChildren \\Trash) \".\" Trash\n");

	copy = parse_one("* OK [COPYUID 9 4:4 12] Moved UIDs.\r\n");
	g_assert_cmpint(copy->kind, ==, IMAPFS_RESP_UNTAGGED);
	g_assert_cmpint(copy->status, ==, IMAPFS_STATUS_OK);
	g_assert_cmpuint(copy->code->len, ==, 4);
	g_assert_true(imapfs_arg_is_atom(copy->code->pdata[0], "COPYUID"));
	g_assert_cmpstr(imapfs_arg_str(copy->code->pdata[2]), ==, "4:4");
	g_assert_cmpstr(imapfs_arg_str(copy->code->pdata[3]), ==, "12");

	status = parse_one("* STATUS {7}\r\nA \"b\" c (MESSAGES 3)\r\n");
	g_assert_cmpuint(status->args->len, ==, 3);
	g_assert_cmpstr(imapfs_arg_str(status->args->pdata[1]), ==,
			"A \"b\" c");
	g_assert_cmpuint(imapfs_arg_list(status->args->pdata[2])->len, ==, 2);
}

/* ---- literals ---- */

static void test_literal8(void)
{
	g_autoptr(ImapfsResponse) resp = NULL;
	ImapfsArg *arg;

	CHECK_BYTES("* 4 FETCH (BINARY[1] ~{4}\r\na\x00\xff"
		    "b)\r\n",
		    "* 4 FETCH (BINARY[1] ~{4=a\\x00\\xffb})\n");
	/* A '~' not before '{' is an ordinary atom character. */
	check("* LIST () \"/\" ~user/mail\r\n", "* LIST () \"/\" ~user/mail\n");
	resp = parse_one("* 4 FETCH (BINARY[1] ~{2}\r\nab)\r\n");
	arg = imapfs_arg_list(resp->args->pdata[2])->pdata[1];
	g_assert_cmpint(arg->type, ==, IMAPFS_ARG_LITERAL);
	g_assert_true(arg->literal8);
	g_assert_cmpuint(arg->len, ==, 2);
}

static void test_literal_nonsync(void)
{
	check("* LIST () \"/\" {3+}\r\nabc\r\n", "* LIST () \"/\" {3=abc}\n");
}

static void test_literal_empty(void)
{
	check("* 1 FETCH (BODY[] {0}\r\n)\r\n", "* 1 FETCH (BODY[] {0=})\n");
	check("* LIST () \"/\" {0}\r\n\r\n", "* LIST () \"/\" {0=}\n");
}

static void test_literal_end_of_line(void)
{
	check("* 1 FETCH (BODY[] {3}\r\nabc)\r\n",
	      "* 1 FETCH (BODY[] {3=abc})\n");
	check("* 1 FETCH (BODY[1] {2}\r\nab BODY[2] {2}\r\ncd)\r\n",
	      "* 1 FETCH (BODY[1] {2=ab} BODY[2] {2=cd})\n");
}

/* The literal header, its CRLF and its bytes cut at every offset. */
static void test_literal_split(void)
{
	const char *input = "* 9 FETCH (BODY[] {10}\r\n0123456789)\r\n";
	gsize len = strlen(input);

	for (gsize cut = 1; cut < len; cut++) {
		g_autoptr(ImapfsParser) parser = imapfs_parser_new(NULL);
		g_autoptr(ImapfsResponse) resp = NULL;
		const char *error = NULL;
		gsize used = 0;

		g_assert_cmpint(imapfs_parser_feed(parser,
						   (const guint8 *)input, cut,
						   &used, &resp, &error),
				==, IMAPFS_PARSE_MORE);
		g_assert_cmpuint(used, ==, cut);
		g_assert_cmpint(
			imapfs_parser_feed(parser, (const guint8 *)input + cut,
					   len - cut, &used, &resp, &error),
			==, IMAPFS_PARSE_RESPONSE);
		g_assert_cmpuint(used, ==, len - cut);
		g_assert_cmpstr(
			imapfs_arg_str(imapfs_arg_list(resp->args->pdata[2])
					       ->pdata[1]),
			==, "0123456789");
	}
}

static Sink *sink_new(void)
{
	Sink *sink = g_new0(Sink, 1);

	sink->keys = g_string_new(NULL);
	sink->bytes = g_string_new(NULL);
	return sink;
}

static void sink_free(Sink *sink)
{
	g_string_free(sink->keys, TRUE);
	g_string_free(sink->bytes, TRUE);
	g_free(sink);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(Sink, sink_free)

static void test_literal_stream(void)
{
	static const char input[] =
		"* 3 FETCH (UID 9 BODY[]<0> {20}\r\nFrom: a\r\n\r\nhello!!\r\n"
		" FLAGS (\\Seen) BODY[HEADER] {4}\r\nX: y)\r\n";
	g_autoptr(Sink) sink = sink_new();
	const Setup setup = {NULL, sink};
	g_autofree char *got = NULL;

	sink->stream_over = 4;
	got = parse_full(&setup, input, sizeof(input) - 1);
	g_assert_cmpstr(got, ==,
			"* 3 FETCH (UID 9 BODY[]<0> {20 streamed} FLAGS "
			"(\\Seen) BODY[HEADER] {4=X: y})\n");
	g_assert_cmpstr(sink->keys->str, ==, "BODY[]<0>:20;BODY[HEADER]:4;");
	g_assert_cmpuint(sink->bytes->len, ==, 20);
	g_assert_cmpstr(sink->bytes->str, ==, "From: a\r\n\r\nhello!!\r\n");
	/* parse_full ends with the byte-by-byte run */
	g_assert_cmpuint(sink->data_calls, ==, 20);
}

static void test_literal_stream_whole(void)
{
	static const char input[] = "* 3 FETCH (BODY[] {5}\r\nabcde)\r\n";
	g_autoptr(ImapfsParser) parser = imapfs_parser_new(NULL);
	g_autoptr(Sink) sink = sink_new();
	g_autoptr(ImapfsResponse) resp = NULL;
	const char *error = NULL;
	ImapfsArg *arg;
	gsize used = 0;

	imapfs_parser_set_literal_sink(parser, &test_sink, sink);
	g_assert_cmpint(imapfs_parser_feed(parser, (const guint8 *)input,
					   sizeof(input) - 1, &used, &resp,
					   &error),
			==, IMAPFS_PARSE_RESPONSE);
	arg = imapfs_arg_list(resp->args->pdata[2])->pdata[1];
	g_assert_cmpint(arg->type, ==, IMAPFS_ARG_LITERAL);
	g_assert_null(arg->data);
	g_assert_null(imapfs_arg_str(arg));
	g_assert_cmpuint(arg->len, ==, 5);
	g_assert_cmpuint(sink->data_calls, ==, 1);
	g_assert_cmpstr(sink->bytes->str, ==, "abcde");
}

static void test_literal_sink_key(void)
{
	g_autoptr(Sink) sink = sink_new();
	const Setup setup = {NULL, sink};
	const char *input = "* LIST () \"/\" {3}\r\nabc\r\n"
			    "* 1 FETCH ({2}\r\nxy)\r\n";
	g_autofree char *got = parse_full(&setup, input, strlen(input));

	g_assert_cmpstr(got, ==,
			"* LIST () \"/\" {3 streamed}\n"
			"* 1 FETCH ({2 streamed})\n");
	g_assert_cmpstr(sink->keys->str, ==, "-:3;-:2;");
	g_assert_cmpstr(sink->bytes->str, ==, "abcxy");
}

static void test_literal_sink_reject(void)
{
	g_autoptr(Sink) sink = sink_new();
	const Setup setup = {NULL, sink};
	const char *input = "* 1 FETCH (BODY[] {3}\r\nabc)\r\n";
	g_autofree char *got = NULL;

	sink->reject_key = "BODY[]";
	got = parse_full(&setup, input, strlen(input));
	g_assert_cmpstr(got, ==, "ERROR: rejected by test sink");
}

static void test_literal_sink_inline_too_large(void)
{
	const ImapfsParserLimits limits = {1024, 8, 1000, 4, 4096, 100};
	g_autoptr(Sink) sink = sink_new();
	const Setup setup = {&limits, sink};
	const char *small = "* 1 FETCH (BODY[] {4}\r\nabcd)\r\n";
	const char *big = "* 1 FETCH (BODY[] {5}\r\nabcde)\r\n";
	g_autofree char *got_small = NULL;
	g_autofree char *got_big = NULL;

	sink->inline_always = TRUE;
	got_small = parse_full(&setup, small, strlen(small));
	g_assert_cmpstr(got_small, ==, "* 1 FETCH (BODY[] {4=abcd})\n");
	got_big = parse_full(&setup, big, strlen(big));
	g_assert_cmpstr(got_big, ==, "ERROR: literal too large to inline");
}

/* ---- continuations, framing ---- */

static void test_continuation(void)
{
	g_autoptr(ImapfsResponse) resp = NULL;

	check("+ \r\n", "+ ||\n");
	check("+\r\n", "+ ||\n");
	check("+ Ready for literal data\r\n", "+ |Ready for literal data|\n");
	check("+ YGgGCSqGSIb3EgECAgIBAAD/////6jcyG4GE3KkTzmeTxl==\r\n",
	      "+ |YGgGCSqGSIb3EgECAgIBAAD/////6jcyG4GE3KkTzmeTxl==|\n");
	resp = parse_one("+ base64==\r\n");
	g_assert_cmpint(resp->kind, ==, IMAPFS_RESP_CONTINUATION);
	g_assert_cmpint(resp->status, ==, IMAPFS_STATUS_NONE);
	g_assert_cmpstr(resp->text, ==, "base64==");
	g_assert_cmpuint(resp->args->len, ==, 0);
}

static void test_multiple(void)
{
	static const char input[] =
		"* 2 EXISTS\r\n* 1 EXPUNGE\r\nA1 OK done\r\n";
	g_autoptr(ImapfsParser) parser = imapfs_parser_new(NULL);
	const char *expect[] = {"* 2 EXISTS", "* 1 EXPUNGE", "A1 OK done"};
	const gsize ends[] = {12, 25, sizeof(input) - 1};
	gsize pos = 0;

	for (guint i = 0; i < G_N_ELEMENTS(expect); i++) {
		g_autoptr(ImapfsResponse) resp = NULL;
		g_autofree char *str = NULL;
		const char *error = NULL;
		gsize used = 0;

		g_assert_cmpint(imapfs_parser_feed(parser,
						   (const guint8 *)input + pos,
						   sizeof(input) - 1 - pos,
						   &used, &resp, &error),
				==, IMAPFS_PARSE_RESPONSE);
		pos += used;
		g_assert_cmpuint(pos, ==, ends[i]);
		str = imapfs_response_to_string(resp, 100);
		g_assert_cmpstr(str, ==, expect[i]);
	}
}

static void test_bare_lf(void)
{
	check("* 3 EXISTS\n* OK [UIDNEXT 5] x\nA1 OK\n* 1 FETCH (BODY[] "
	      "{2}\nab)\n",
	      "* 3 EXISTS\n* OK [UIDNEXT 5] |x|\nA1 OK ||\n"
	      "* 1 FETCH (BODY[] {2=ab})\n");
	/* blank lines between responses are skipped */
	check("\r\n\n* 3 EXISTS\r\n", "* 3 EXISTS\n");
	check("* 3 EXISTS\r\n* 4", "* 3 EXISTS\nMORE");
}

static void test_nil_and_quoted(void)
{
	check("* X nil NiL \"NIL\" NILS\r\n", "* X NIL NIL \"NIL\" NILS\n");
	check("* X \"a \\\"b\\\" \\\\c\" \"\" \"(x) [y]\"\r\n",
	      "* X \"a \"b\" \\c\" \"\" \"(x) [y]\"\n");
	check("* OK [X] text with \"quotes\", (parens) and [brackets]\r\n",
	      "* OK [X] |text with \"quotes\", (parens) and [brackets]|\n");
	check("* SEARCH 2 84 882 \r\n", "* SEARCH 2 84 882\n");
	check("* no nothing\r\n", "* NO |nothing|\n");
}

/* ---- limits ---- */

static void test_limit_line(void)
{
	const ImapfsParserLimits limits = {32, 8, 1000, 1000, 4096, 100};
	g_autofree char *long_line = NULL;

	check_limited(&limits, "* OK 0123456789012345678901234\r\n",
		      "* OK |0123456789012345678901234|\n");
	check_limited(&limits, "* OK 01234567890123456789012345\r\n",
		      "ERROR: line too long");
	/* literal bytes do not count against the line */
	check_limited(&limits,
		      "* 1 FETCH (BODY[] {40}\r\n"
		      "0123456789012345678901234567890123456789)\r\n",
		      "* 1 FETCH (BODY[] "
		      "{40=0123456789012345678901234567890123456789})\n");
	/* each line between literals has the whole limit */
	check_limited(&limits,
		      "* 1 FETCH (A {1}\r\nx B 0123456789012 {1}\r\n"
		      "y C 0123456789012)\r\n",
		      "* 1 FETCH (A {1=x} B 0123456789012 {1=y} C "
		      "0123456789012)\n");
	long_line = g_strnfill(1100000, 'x');
	long_line[0] = '*';
	long_line[1] = ' ';
	check(long_line, "ERROR: line too long");
}

static char *nested(guint depth)
{
	GString *s = g_string_new("* X ");

	for (guint i = 0; i < depth; i++)
		g_string_append_c(s, '(');
	for (guint i = 0; i < depth; i++)
		g_string_append_c(s, ')');
	g_string_append(s, "\r\n");
	return g_string_free(s, FALSE);
}

static void test_limit_depth(void)
{
	g_autofree char *ok = nested(64);
	g_autofree char *deep = nested(65);
	g_autofree char *got = parse(ok);

	g_assert_true(g_str_has_prefix(got, "* X (((((((("));
	g_assert_true(g_str_has_suffix(got, "))))\n"));
	check(deep, "ERROR: list nesting too deep");
	g_autofree char *parens = g_strnfill(65, '(');
	g_autofree char *code = g_strdup_printf("* OK [X %s] x\r\n", parens);
	check(code, "ERROR: list nesting too deep");
}

static void test_limit_literal(void)
{
	const ImapfsParserLimits limits = {1024, 8, 100, 100, 4096, 100};

	check("* 1 FETCH (BODY[] {9223372036854775808}\r\n",
	      "ERROR: literal too large");
	check("* 1 FETCH (BODY[] {99999999999999999999999}\r\n",
	      "ERROR: literal too large");
	check("* 1 FETCH (BODY[] ~{18446744073709551616}\r\n",
	      "ERROR: literal too large");
	check("* 1 FETCH (BODY[] {4294967297}\r\n", "ERROR: literal too large");
	check_limited(&limits, "* 1 FETCH (BODY[] {101}\r\n",
		      "ERROR: literal too large");
	/* leading zeros are digits, not size */
	check_limited(&limits, "* 1 X {000000000000000000000000002}\r\nab\r\n",
		      "* 1 X {2=ab}\n");
}

static void test_limit_literal_stream(void)
{
	const ImapfsParserLimits limits = {1024, 8, 100, 10, 4096, 100};
	g_autoptr(Sink) sink = sink_new();
	const Setup setup = {&limits, sink};
	const char *input = "* 1 FETCH (BODY[] {101}\r\n";
	g_autofree char *got = parse_full(&setup, input, strlen(input));

	/* the sink is never asked about a literal over max_literal */
	g_assert_cmpstr(got, ==, "ERROR: literal too large");
	g_assert_cmpstr(sink->keys->str, ==, "");
}

static void test_limit_inline(void)
{
	const ImapfsParserLimits limits = {1024, 8, 1000, 4, 4096, 100};

	check_limited(&limits, "* 1 FETCH (BODY[] {4}\r\nabcd)\r\n",
		      "* 1 FETCH (BODY[] {4=abcd})\n");
	check_limited(&limits, "* 1 FETCH (BODY[] {5}\r\nabcde)\r\n",
		      "ERROR: literal too large");
	check("* 1 FETCH (BODY[] {1048577}\r\n", "ERROR: literal too large");
}

static void test_limit_response(void)
{
	const ImapfsParserLimits limits = {4096, 8, 1000, 1000, 256, 100};
	g_autofree char *filler = g_strnfill(300, 'a');
	g_autofree char *text = g_strdup_printf("* OK %s\r\n", filler);
	g_autofree char *atom = g_strdup_printf("* X %s\r\n", filler);

	check_limited(&limits, "* OK fits\r\n", "* OK |fits|\n");
	check_limited(&limits, text, "ERROR: response too large");
	check_limited(&limits, atom, "ERROR: response too large");
	check_limited(&limits, "* 1 FETCH (BODY[] {300}\r\n",
		      "ERROR: response too large");
}

static void test_limit_args(void)
{
	const ImapfsParserLimits limits = {4096, 8, 1000, 1000, 65536, 5};

	check_limited(&limits, "* SEARCH 1 2 3 4\r\n", "* SEARCH 1 2 3 4\n");
	check_limited(&limits, "* SEARCH 1 2 3 4 5\r\n",
		      "ERROR: too many arguments");
	check_limited(&limits, "* X (1 (2 (3 NIL)))\r\n",
		      "ERROR: too many arguments");
	/* the count starts again with each response */
	check_limited(&limits, "* SEARCH 1 2 3 4\r\n* SEARCH 1 2 3 4\r\n",
		      "* SEARCH 1 2 3 4\n* SEARCH 1 2 3 4\n");
}

/* ---- malformed input ---- */

static void test_malformed(void)
{
	check("* X (a))\r\n", "ERROR: unbalanced ')'");
	check("* X )\r\n", "ERROR: unbalanced ')'");
	check("* X (a (b)\r\n", "ERROR: missing ')'");
	check("* X \"abc\"def\r\n", "ERROR: missing space after argument");
	check("* X (a)b\r\n", "ERROR: missing space after argument");
	check("* X (a)\"b\"\r\n", "ERROR: missing space after argument");
	check("* X {1}\r\nab\r\n", "ERROR: missing space after argument");
	check("* X \"abc\r\n", "ERROR: unterminated quoted string");
	check("* X \"abc\\\r\n", "ERROR: unterminated quoted string");
	check("* X {}\r\n", "ERROR: bad literal size");
	check("* X {abc}\r\n", "ERROR: bad literal size");
	check("* X {+}\r\n", "ERROR: bad literal size");
	check("* X {3+x\r\n", "ERROR: bad literal size");
	check("* X {3}abc\r\n", "ERROR: missing CRLF after literal size");
	check("* X {3}\rabc\r\n", "ERROR: missing CRLF after literal size");
	check("* X a\rb\r\n", "ERROR: CR without LF");
	check("* OK [ALERT x\r\n", "ERROR: unterminated response code");
	check("* OK [X (a] x\r\n", "ERROR: missing ')' in response code");
	check("* OK [X (a)) x\r\n", "ERROR: unbalanced ')'");
	check("*\r\n", "ERROR: missing space after '*'");
	check("* \r\n", "ERROR: empty untagged response");
	check("A1\r\n", "ERROR: tagged response without status");
	check("A1 \r\n", "ERROR: tagged response without status");
	check("A1 FOO bar\r\n", "ERROR: tagged response without status");
	check("A1 (OK)\r\n", "ERROR: tagged response without status");
	check("(A1 OK\r\n", "ERROR: bad tag");
	check("A\"1 OK\r\n", "ERROR: bad tag");
	check("* OK(x)\r\n", "ERROR: bad status response");
}

static void test_malformed_nul(void)
{
	CHECK_BYTES("* X a\x00"
		    "b\r\n",
		    "ERROR: NUL byte outside a literal");
	CHECK_BYTES("\x00", "ERROR: NUL byte outside a literal");
	/* inside a literal a NUL is just a byte */
	CHECK_BYTES("* X {3}\r\na\x00"
		    "b\r\n",
		    "* X {3=a\\x00b}\n");
}

/* After an error the parser stays failed until reset. */
static void test_error_sticky(void)
{
	g_autoptr(ImapfsParser) parser = imapfs_parser_new(NULL);
	g_autoptr(ImapfsResponse) resp = NULL;
	const char *error = NULL;
	gsize used = 0;

	g_assert_cmpint(imapfs_parser_feed(parser, (const guint8 *)"* X )\r\n",
					   7, &used, &resp, &error),
			==, IMAPFS_PARSE_ERROR);
	g_assert_cmpstr(error, ==, "unbalanced ')'");
	g_assert_cmpuint(used, ==, 5);
	g_assert_cmpint(imapfs_parser_feed(parser, (const guint8 *)"A1 OK\r\n",
					   7, &used, &resp, &error),
			==, IMAPFS_PARSE_ERROR);
	g_assert_cmpuint(used, ==, 0);
	imapfs_parser_reset(parser);
	g_assert_cmpint(imapfs_parser_feed(parser, (const guint8 *)"A1 OK\r\n",
					   7, &used, &resp, &error),
			==, IMAPFS_PARSE_RESPONSE);
	g_assert_cmpstr(resp->tag, ==, "A1");
}

/* Half a response, then a reset: the next one starts clean. */
static void test_reset_partial(void)
{
	g_autoptr(ImapfsParser) parser = imapfs_parser_new(NULL);
	g_autoptr(ImapfsResponse) resp = NULL;
	const char *error = NULL;
	gsize used = 0;

	g_assert_cmpint(imapfs_parser_feed(
				parser, (const guint8 *)"* 1 FETCH ({5}\r\nab",
				18, &used, &resp, &error),
			==, IMAPFS_PARSE_MORE);
	imapfs_parser_reset(parser);
	g_assert_cmpint(imapfs_parser_feed(parser,
					   (const guint8 *)"* 2 EXISTS\r\n", 12,
					   &used, &resp, &error),
			==, IMAPFS_PARSE_RESPONSE);
	g_assert_cmpuint(resp->args->len, ==, 2);
}

/* ---- rendering and helpers ---- */

static void test_to_string(void)
{
	g_autoptr(ImapfsResponse) fetch = parse_one(
		"* 1 FETCH (BODY[] {28}\r\n0123456789abcdef\r\n0123456789 "
		"FLAGS (\\Seen) X \"a\\\"b\" Y NIL Z ~{2}\r\n\x01\xff)\r\n");
	g_autoptr(ImapfsResponse) status =
		parse_one("A7 NO [NOPERM] Permission denied\r\n");
	g_autoptr(ImapfsResponse) cont = parse_one("+ abc\r\n");
	g_autofree char *full = imapfs_response_to_string(fetch, 1000);
	g_autofree char *cut = imapfs_response_to_string(fetch, 12);
	g_autofree char *st = imapfs_response_to_string(status, 1000);
	g_autofree char *co = imapfs_response_to_string(cont, 1000);

	g_assert_cmpstr(full, ==,
			"* 1 FETCH (BODY[] {28}0123456789abcdef... FLAGS "
			"(\\Seen) X \"a\\\"b\" Y NIL Z ~{2}\\x01\\xff)");
	g_assert_cmpstr(cut, ==, "* 1 FETCH (B...");
	g_assert_cmpstr(st, ==, "A7 NO [NOPERM] Permission denied");
	g_assert_cmpstr(co, ==, "+ abc");
}

static void test_arg_helpers(void)
{
	g_autoptr(ImapfsResponse) resp =
		parse_one("* X 0 18446744073709551615 18446744073709551616 "
			  "000000000000000000001 12a \"7\" NIL (1)\r\n");
	ImapfsArg **a = (ImapfsArg **)resp->args->pdata;
	guint64 n = 1;

	g_assert_true(imapfs_arg_number(a[1], &n));
	g_assert_cmpuint(n, ==, 0);
	g_assert_true(imapfs_arg_number(a[2], &n));
	g_assert_cmpuint(n, ==, G_MAXUINT64);
	g_assert_false(imapfs_arg_number(a[3], &n));
	g_assert_false(imapfs_arg_number(a[4], &n));
	g_assert_false(imapfs_arg_number(a[5], &n));
	g_assert_false(imapfs_arg_number(a[6], &n)); /* a string */
	g_assert_false(imapfs_arg_number(NULL, &n));
	g_assert_cmpstr(imapfs_arg_str(a[6]), ==, "7");
	g_assert_null(imapfs_arg_str(a[7]));
	g_assert_null(imapfs_arg_str(a[8]));
	g_assert_null(imapfs_arg_str(NULL));
	g_assert_false(imapfs_arg_is_atom(a[6], "7"));
	g_assert_false(imapfs_arg_is_atom(NULL, "X"));
	g_assert_true(imapfs_arg_is_atom(a[0], "x"));
	g_assert_null(imapfs_arg_list(a[0]));
	g_assert_null(imapfs_arg_list(NULL));
	g_assert_cmpuint(imapfs_arg_list(a[8])->len, ==, 1);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/parser/greeting", test_greeting);
	g_test_add_func("/parser/capability", test_capability);
	g_test_add_func("/parser/tagged", test_tagged);
	g_test_add_func("/parser/list", test_list);
	g_test_add_func("/parser/examine", test_examine);
	g_test_add_func("/parser/exists-is-data", test_exists_is_data);
	g_test_add_func("/parser/fetch/attributes", test_fetch_attributes);
	g_test_add_func("/parser/fetch/adjacent-lists",
			test_fetch_adjacent_lists);
	g_test_add_func("/parser/fetch/body-literal", test_fetch_body_literal);
	g_test_add_func("/parser/fetch/section-atom", test_fetch_section_atom);
	g_test_add_func("/parser/change-replies", test_change_replies);
	g_test_add_func("/parser/literal/literal8", test_literal8);
	g_test_add_func("/parser/literal/non-sync", test_literal_nonsync);
	g_test_add_func("/parser/literal/empty", test_literal_empty);
	g_test_add_func("/parser/literal/end-of-line",
			test_literal_end_of_line);
	g_test_add_func("/parser/literal/split", test_literal_split);
	g_test_add_func("/parser/literal/stream", test_literal_stream);
	g_test_add_func("/parser/literal/stream-whole",
			test_literal_stream_whole);
	g_test_add_func("/parser/literal/sink-key", test_literal_sink_key);
	g_test_add_func("/parser/literal/sink-reject",
			test_literal_sink_reject);
	g_test_add_func("/parser/literal/sink-inline-too-large",
			test_literal_sink_inline_too_large);
	g_test_add_func("/parser/continuation", test_continuation);
	g_test_add_func("/parser/multiple", test_multiple);
	g_test_add_func("/parser/bare-lf", test_bare_lf);
	g_test_add_func("/parser/nil-and-quoted", test_nil_and_quoted);
	g_test_add_func("/parser/limit/line", test_limit_line);
	g_test_add_func("/parser/limit/depth", test_limit_depth);
	g_test_add_func("/parser/limit/literal", test_limit_literal);
	g_test_add_func("/parser/limit/literal-stream",
			test_limit_literal_stream);
	g_test_add_func("/parser/limit/inline", test_limit_inline);
	g_test_add_func("/parser/limit/response", test_limit_response);
	g_test_add_func("/parser/limit/args", test_limit_args);
	g_test_add_func("/parser/malformed", test_malformed);
	g_test_add_func("/parser/malformed/nul", test_malformed_nul);
	g_test_add_func("/parser/error-sticky", test_error_sticky);
	g_test_add_func("/parser/reset-partial", test_reset_partial);
	g_test_add_func("/parser/to-string", test_to_string);
	g_test_add_func("/parser/arg-helpers", test_arg_helpers);
	return g_test_run();
}
