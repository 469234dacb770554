/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The IMAP response parser: one state machine fed a byte at a time, so that
 * a response may be cut anywhere without any look-ahead. Only literal bytes
 * are taken in bulk, because they are the only part that can be large.
 *
 * While a response is built, the parser owns it; the lists still open are
 * kept on a stack of borrowed pointers into it, so at every byte the
 * response is a consistent tree that the literal sink may look at.
 */
#include <string.h>

#include "imapfs/imap-parser.h"

const ImapfsParserLimits imapfs_parser_default_limits = {
	/* A BODYSTRUCTURE of the 2000 parts bodystructure.c accepts takes
	 * over 120 KB on one line; max_response bounds the memory. */
	.max_line = 1024 * 1024,
	.max_depth = 64,
	.max_literal = G_GUINT64_CONSTANT(4) << 30,
	.max_inline_literal = 1024 * 1024,
	.max_response = 16 * 1024 * 1024,
	/* The biggest we ask for is a BODYSTRUCTURE of 2000 parts (about
	 * 30,000); every argument costs memory whatever the line limit,
	 * since literals restart the line. */
	.max_args = 100000,
};

typedef enum {
	ST_LINE_START, /* a tag, "*" or "+" */
	ST_TAG,
	ST_STAR,      /* after "*": a space */
	ST_PLUS,      /* after "+": a space or the end of the line */
	ST_ARGS,      /* before an argument, ")" or the end of the line */
	ST_AFTER_ARG, /* right after an argument: a separator */
	ST_ATOM,
	ST_TILDE, /* "~{" of a literal8, or an atom starting with "~" */
	ST_QUOTED,
	ST_QUOTED_ESC,
	ST_LIT_SIZE,
	ST_LIT_BRACE, /* after "{n+": the "}" */
	ST_LIT_CR,    /* after "}": CRLF */
	ST_LIT_LF,
	ST_LIT_DATA,
	ST_STATUS,	/* after the status word: a space or the end */
	ST_STATUS_TEXT, /* "[" opens a response code, else text */
	ST_CODE_END,	/* after the code's "]" */
	ST_TEXT,
	ST_LF,	  /* after a CR that ends the line */
	ST_ERROR, /* until imapfs_parser_reset() */
} State;

typedef enum {
	STEP_OK,    /* byte consumed */
	STEP_AGAIN, /* state changed, the same byte goes to the new one */
	STEP_DONE,  /* byte consumed, the response is complete */
	STEP_ERROR, /* parser->error says why */
} Step;

struct ImapfsParser {
	ImapfsParserLimits limits;
	ImapfsLiteralSink sink;
	gpointer sink_data;
	gboolean has_sink;

	State state;
	const char *error;
	ImapfsResponse *resp;
	GPtrArray *open;     /* lists being filled, innermost last; borrowed */
	GString *tok;	     /* tag, atom, string, inline literal or text */
	gboolean in_code;    /* between "[" and "]" of a status response */
	gboolean first_word; /* the next atom may be the status word */
	guint brackets;	     /* "[" still open in the current atom */
	gsize line_len;
	guint64 kept; /* bytes held by resp, against max_response */
	guint nargs;

	guint64 lit_size;
	guint64 lit_left;
	guint lit_digits;
	gboolean lit8;
	gboolean lit_stream;
};

static const char *const status_names[] = {
	[IMAPFS_STATUS_NONE] = NULL, [IMAPFS_STATUS_OK] = "OK",
	[IMAPFS_STATUS_NO] = "NO",   [IMAPFS_STATUS_BAD] = "BAD",
	[IMAPFS_STATUS_BYE] = "BYE", [IMAPFS_STATUS_PREAUTH] = "PREAUTH",
};

static void arg_free(gpointer data)
{
	ImapfsArg *arg = data;

	g_free(arg->data);
	if (arg->list)
		g_ptr_array_unref(arg->list);
	g_free(arg);
}

static GPtrArray *arg_array_new(void)
{
	return g_ptr_array_new_with_free_func(arg_free);
}

static ImapfsArg *arg_new(ImapfsArgType type)
{
	ImapfsArg *arg = g_new0(ImapfsArg, 1);

	arg->type = type;
	return arg;
}

void imapfs_response_free(ImapfsResponse *resp)
{
	if (!resp)
		return;
	g_free(resp->tag);
	g_clear_pointer(&resp->args, g_ptr_array_unref);
	g_clear_pointer(&resp->code, g_ptr_array_unref);
	g_free(resp->text);
	g_free(resp);
}

/* ---- building the response ---- */

static Step fail(ImapfsParser *p, const char *msg)
{
	p->error = msg;
	p->state = ST_ERROR;
	return STEP_ERROR;
}

static Step keep(ImapfsParser *p, guint64 n)
{
	/* kept never exceeds max_response, so the subtraction cannot wrap */
	if (n > p->limits.max_response - p->kept)
		return fail(p, "response too large");
	p->kept += n;
	return STEP_OK;
}

static Step tok_add(ImapfsParser *p, guint8 c)
{
	if (keep(p, 1) != STEP_OK)
		return STEP_ERROR;
	g_string_append_c(p->tok, (char)c);
	return STEP_OK;
}

static char *tok_steal(ImapfsParser *p, guint64 *len_r)
{
	*len_r = p->tok->len;
	char *s = g_string_free(p->tok, FALSE);

	p->tok = g_string_sized_new(32);
	return s;
}

static GPtrArray *current_list(ImapfsParser *p)
{
	if (p->open->len > 0)
		return g_ptr_array_index(p->open, p->open->len - 1);
	return p->in_code ? p->resp->code : p->resp->args;
}

/* Takes @arg; it is owned by the response even when a limit is hit. */
static Step add_arg(ImapfsParser *p, ImapfsArg *arg)
{
	g_ptr_array_add(current_list(p), arg);
	if (p->nargs >= p->limits.max_args)
		return fail(p, "too many arguments");
	p->nargs++;
	return keep(p, sizeof(*arg));
}

static void start_response(ImapfsParser *p)
{
	p->resp = g_new0(ImapfsResponse, 1);
	p->resp->args = arg_array_new();
	g_ptr_array_set_size(p->open, 0);
	g_string_truncate(p->tok, 0);
	p->state = ST_LINE_START;
	p->in_code = FALSE;
	p->first_word = FALSE;
	p->brackets = 0;
	p->line_len = 0;
	p->kept = 0;
	p->nargs = 0;
}

static ImapfsResponse *take_response(ImapfsParser *p)
{
	ImapfsResponse *resp = g_steal_pointer(&p->resp);

	start_response(p);
	return resp;
}

/* ---- lines, lists and response codes ---- */

static Step end_of_line(ImapfsParser *p, guint8 c)
{
	ImapfsResponse *resp = p->resp;
	guint64 len;

	if (p->open->len > 0)
		return fail(p, "missing ')'");
	if (p->in_code)
		return fail(p, "unterminated response code");
	if (resp->kind == IMAPFS_RESP_TAGGED &&
	    resp->status == IMAPFS_STATUS_NONE)
		return fail(p, "tagged response without status");
	if (resp->kind == IMAPFS_RESP_UNTAGGED &&
	    resp->status == IMAPFS_STATUS_NONE && resp->args->len == 0)
		return fail(p, "empty untagged response");
	/* Only text states leave bytes in tok; elsewhere this gives "". */
	resp->text = tok_steal(p, &len);
	if (c == '\n')
		return STEP_DONE;
	p->state = ST_LF;
	return STEP_OK;
}

static Step open_list(ImapfsParser *p)
{
	ImapfsArg *arg;

	if (p->open->len >= p->limits.max_depth)
		return fail(p, "list nesting too deep");
	arg = arg_new(IMAPFS_ARG_LIST);
	arg->list = arg_array_new();
	if (add_arg(p, arg) != STEP_OK)
		return STEP_ERROR;
	g_ptr_array_add(p->open, arg->list);
	p->state = ST_ARGS;
	return STEP_OK;
}

static Step close_list(ImapfsParser *p)
{
	if (p->open->len == 0)
		return fail(p, "unbalanced ')'");
	g_ptr_array_set_size(p->open, p->open->len - 1);
	p->state = ST_AFTER_ARG;
	return STEP_OK;
}

static Step close_code(ImapfsParser *p)
{
	if (p->open->len > 0)
		return fail(p, "missing ')' in response code");
	p->in_code = FALSE;
	p->state = ST_CODE_END;
	return STEP_OK;
}

static ImapfsStatus status_from_word(const char *word)
{
	for (guint i = IMAPFS_STATUS_OK; i <= IMAPFS_STATUS_PREAUTH; i++) {
		if (g_ascii_strcasecmp(word, status_names[i]) == 0)
			return (ImapfsStatus)i;
	}
	return IMAPFS_STATUS_NONE;
}

/* ---- atoms and strings ---- */

static Step finish_atom(ImapfsParser *p)
{
	ImapfsArg *arg;

	p->state = ST_AFTER_ARG;
	if (p->first_word) {
		p->first_word = FALSE;
		p->resp->status = status_from_word(p->tok->str);
		if (p->resp->status != IMAPFS_STATUS_NONE) {
			g_string_truncate(p->tok, 0);
			p->state = ST_STATUS;
			return STEP_OK;
		}
		if (p->resp->kind == IMAPFS_RESP_TAGGED)
			return fail(p, "tagged response without status");
	}
	if (g_ascii_strcasecmp(p->tok->str, "NIL") == 0) {
		g_string_truncate(p->tok, 0);
		return add_arg(p, arg_new(IMAPFS_ARG_NIL));
	}
	arg = arg_new(IMAPFS_ARG_ATOM);
	arg->data = tok_steal(p, &arg->len);
	return add_arg(p, arg);
}

static gboolean ends_atom(ImapfsParser *p, guint8 c)
{
	switch (c) {
	case ' ':
	case '\r':
	case '\n':
	case '(':
	case ')':
	case '{':
	case '"':
		return TRUE;
	case ']':
		return p->in_code;
	default:
		return FALSE;
	}
}

/* "BODY[HEADER.FIELDS (A B)]<0>" is one atom: inside brackets spaces and
 * parentheses belong to it, only the end of the line stops it. */
static Step atom_byte(ImapfsParser *p, guint8 c)
{
	Step r;

	if (c == '\r' || c == '\n' || (p->brackets == 0 && ends_atom(p, c))) {
		r = finish_atom(p);
		return r == STEP_OK ? STEP_AGAIN : r;
	}
	if (c == '[')
		p->brackets++;
	else if (c == ']' && p->brackets > 0)
		p->brackets--;
	return tok_add(p, c);
}

static Step start_atom(ImapfsParser *p)
{
	p->brackets = 0;
	p->state = ST_ATOM;
	return STEP_AGAIN;
}

static Step finish_quoted(ImapfsParser *p)
{
	ImapfsArg *arg = arg_new(IMAPFS_ARG_STRING);

	arg->data = tok_steal(p, &arg->len);
	p->state = ST_AFTER_ARG;
	return add_arg(p, arg);
}

static Step quoted_byte(ImapfsParser *p, guint8 c)
{
	switch (c) {
	case '"':
		return finish_quoted(p);
	case '\\':
		p->state = ST_QUOTED_ESC;
		return STEP_OK;
	case '\r':
	case '\n':
		return fail(p, "unterminated quoted string");
	default:
		return tok_add(p, c);
	}
}

/* RFC 9051 only allows \\ and \"; any other escaped byte is kept as is,
 * as Dovecot does, rather than failing a whole response over it. */
static Step quoted_esc_byte(ImapfsParser *p, guint8 c)
{
	if (c == '\r' || c == '\n')
		return fail(p, "unterminated quoted string");
	p->state = ST_QUOTED;
	return tok_add(p, c);
}

/* ---- literals ---- */

static void start_literal(ImapfsParser *p, gboolean lit8)
{
	p->first_word = FALSE;
	p->lit8 = lit8;
	p->lit_size = 0;
	p->lit_digits = 0;
	p->state = ST_LIT_SIZE;
}

/* Checked digit by digit, so no digit string can overflow. */
static Step lit_size_byte(ImapfsParser *p, guint8 c)
{
	guint d;

	if (g_ascii_isdigit(c)) {
		d = c - '0';
		if (d > p->limits.max_literal ||
		    p->lit_size > (p->limits.max_literal - d) / 10)
			return fail(p, "literal too large");
		p->lit_size = p->lit_size * 10 + d;
		p->lit_digits++;
		return STEP_OK;
	}
	if (p->lit_digits > 0 && c == '+') {
		p->state = ST_LIT_BRACE;
		return STEP_OK;
	}
	if (p->lit_digits > 0 && c == '}') {
		p->state = ST_LIT_CR;
		return STEP_OK;
	}
	return fail(p, "bad literal size");
}

static const char *literal_key(ImapfsParser *p)
{
	GPtrArray *list = current_list(p);
	ImapfsArg *last;

	if (list->len == 0)
		return NULL;
	last = g_ptr_array_index(list, list->len - 1);
	return last->type == IMAPFS_ARG_ATOM ? last->data : NULL;
}

static Step finish_literal(ImapfsParser *p)
{
	ImapfsArg *arg = arg_new(IMAPFS_ARG_LITERAL);

	arg->literal8 = p->lit8;
	if (p->lit_stream)
		arg->len = p->lit_size;
	else
		arg->data = tok_steal(p, &arg->len);
	p->state = ST_AFTER_ARG;
	/* What follows a literal is a new line (RFC 9051 section 4.3). */
	p->line_len = 0;
	return add_arg(p, arg);
}

static ImapfsLiteralAction literal_action(ImapfsParser *p, const char **error_r)
{
	if (!p->has_sink) {
		*error_r = "literal too large";
		return p->lit_size > p->limits.max_inline_literal
			       ? IMAPFS_LITERAL_REJECT
			       : IMAPFS_LITERAL_INLINE;
	}
	*error_r = NULL;
	return p->sink.begin(p->sink_data, p->resp, literal_key(p), p->lit_size,
			     error_r);
}

static Step begin_literal(ImapfsParser *p)
{
	const char *err = NULL;

	switch (literal_action(p, &err)) {
	case IMAPFS_LITERAL_INLINE:
		if (p->lit_size > p->limits.max_inline_literal)
			return fail(p, "literal too large to inline");
		/* Counted in full now, so a response over the limit fails
		 * before its bytes are read; the buffer still grows lazily. */
		if (keep(p, p->lit_size) != STEP_OK)
			return STEP_ERROR;
		p->lit_stream = FALSE;
		break;
	case IMAPFS_LITERAL_STREAM:
		p->lit_stream = TRUE;
		break;
	default:
		return fail(p, err ? err : "literal rejected");
	}
	p->lit_left = p->lit_size;
	p->state = ST_LIT_DATA;
	return p->lit_left == 0 ? finish_literal(p) : STEP_OK;
}

static Step lit_crlf_byte(ImapfsParser *p, guint8 c)
{
	if (c == '\n')
		return begin_literal(p);
	if (c == '\r' && p->state == ST_LIT_CR) {
		p->state = ST_LIT_LF;
		return STEP_OK;
	}
	return fail(p, "missing CRLF after literal size");
}

/* Returns the bytes used. A sink without data() just drops them. */
static gsize literal_bytes(ImapfsParser *p, const guint8 *data, gsize len)
{
	gsize n = (gsize)MIN((guint64)len, p->lit_left);
	const char *err = NULL;

	if (!p->lit_stream) {
		g_string_append_len(p->tok, (const char *)data, (gssize)n);
	} else if (p->sink.data && !p->sink.data(p->sink_data, data, n, &err)) {
		fail(p, err ? err : "literal sink failed");
		return n;
	}
	p->lit_left -= n;
	if (p->lit_left == 0)
		finish_literal(p);
	return n;
}

/* ---- the byte dispatch ---- */

static Step line_start_byte(ImapfsParser *p, guint8 c)
{
	switch (c) {
	case '\r':
	case '\n':
		/* Blank lines carry nothing; some servers send them. */
		return STEP_OK;
	case '*':
		p->resp->kind = IMAPFS_RESP_UNTAGGED;
		p->state = ST_STAR;
		return STEP_OK;
	case '+':
		p->resp->kind = IMAPFS_RESP_CONTINUATION;
		p->state = ST_PLUS;
		return STEP_OK;
	}
	if (ends_atom(p, c) || c == '[' || c == ']')
		return fail(p, "bad tag");
	p->resp->kind = IMAPFS_RESP_TAGGED;
	p->state = ST_TAG;
	return STEP_AGAIN;
}

static Step tag_byte(ImapfsParser *p, guint8 c)
{
	guint64 len;

	if (c == ' ') {
		p->resp->tag = tok_steal(p, &len);
		p->first_word = TRUE;
		p->state = ST_ARGS;
		return STEP_OK;
	}
	if (c == '\r' || c == '\n')
		return fail(p, "tagged response without status");
	if (ends_atom(p, c) || c == '[' || c == ']')
		return fail(p, "bad tag");
	return tok_add(p, c);
}

static Step args_byte(ImapfsParser *p, guint8 c)
{
	switch (c) {
	case ' ':
		return STEP_OK;
	case '\r':
	case '\n':
		return end_of_line(p, c);
	case '(':
		p->first_word = FALSE;
		return open_list(p);
	case ')':
		return close_list(p);
	case '"':
		p->first_word = FALSE;
		p->state = ST_QUOTED;
		return STEP_OK;
	case '{':
		start_literal(p, FALSE);
		return STEP_OK;
	case '~':
		p->state = ST_TILDE;
		return STEP_OK;
	case ']':
		if (p->in_code)
			return close_code(p);
		break;
	}
	return start_atom(p);
}

static Step after_arg_byte(ImapfsParser *p, guint8 c)
{
	switch (c) {
	case ' ':
		p->state = ST_ARGS;
		return STEP_OK;
	case '\r':
	case '\n':
		return end_of_line(p, c);
	case '(':
		/* No space between the addresses of an ENVELOPE or the parts
		 * of a multipart BODYSTRUCTURE: "((...)(...) "mixed")". */
		return open_list(p);
	case ')':
		return close_list(p);
	case ']':
		if (p->in_code)
			return close_code(p);
		break;
	}
	return fail(p, "missing space after argument");
}

static Step tilde_byte(ImapfsParser *p, guint8 c)
{
	if (c == '{') {
		start_literal(p, TRUE);
		return STEP_OK;
	}
	if (tok_add(p, '~') != STEP_OK)
		return STEP_ERROR;
	return start_atom(p);
}

static Step status_byte(ImapfsParser *p, guint8 c)
{
	if (c == ' ') {
		p->state = ST_STATUS_TEXT;
		return STEP_OK;
	}
	if (c == '\r' || c == '\n')
		return end_of_line(p, c);
	return fail(p, "bad status response");
}

static Step status_text_byte(ImapfsParser *p, guint8 c)
{
	if (c == '[') {
		p->resp->code = arg_array_new();
		p->in_code = TRUE;
		p->state = ST_ARGS;
		return STEP_OK;
	}
	p->state = ST_TEXT;
	return STEP_AGAIN;
}

/* After "]" a space normally separates the text; tolerate its absence. */
static Step code_end_byte(ImapfsParser *p, guint8 c)
{
	p->state = ST_TEXT;
	return c == ' ' ? STEP_OK : STEP_AGAIN;
}

static Step text_byte(ImapfsParser *p, guint8 c)
{
	if (c == '\r' || c == '\n')
		return end_of_line(p, c);
	return tok_add(p, c);
}

static Step step(ImapfsParser *p, guint8 c)
{
	switch (p->state) {
	case ST_LINE_START:
		return line_start_byte(p, c);
	case ST_TAG:
		return tag_byte(p, c);
	case ST_STAR:
		if (c != ' ')
			return fail(p, "missing space after '*'");
		p->first_word = TRUE;
		p->state = ST_ARGS;
		return STEP_OK;
	case ST_PLUS:
		return code_end_byte(p, c);
	case ST_ARGS:
		return args_byte(p, c);
	case ST_AFTER_ARG:
		return after_arg_byte(p, c);
	case ST_ATOM:
		return atom_byte(p, c);
	case ST_TILDE:
		return tilde_byte(p, c);
	case ST_QUOTED:
		return quoted_byte(p, c);
	case ST_QUOTED_ESC:
		return quoted_esc_byte(p, c);
	case ST_LIT_SIZE:
		return lit_size_byte(p, c);
	case ST_LIT_BRACE:
		if (c != '}')
			return fail(p, "bad literal size");
		p->state = ST_LIT_CR;
		return STEP_OK;
	case ST_LIT_CR:
	case ST_LIT_LF:
		return lit_crlf_byte(p, c);
	case ST_STATUS:
		return status_byte(p, c);
	case ST_STATUS_TEXT:
		return status_text_byte(p, c);
	case ST_CODE_END:
		return code_end_byte(p, c);
	case ST_TEXT:
		return text_byte(p, c);
	case ST_LF:
		if (c != '\n')
			return fail(p, "CR without LF");
		return STEP_DONE;
	case ST_LIT_DATA: /* handled in bulk by the caller */
	case ST_ERROR:
		break;
	}
	return fail(p, "internal parser error");
}

static Step feed_byte(ImapfsParser *p, guint8 c)
{
	Step r;

	if (c == '\0')
		return fail(p, "NUL byte outside a literal");
	if (++p->line_len > p->limits.max_line)
		return fail(p, "line too long");
	do {
		r = step(p, c);
	} while (r == STEP_AGAIN);
	return r;
}

/* ---- public API ---- */

ImapfsParser *imapfs_parser_new(const ImapfsParserLimits *limits)
{
	ImapfsParser *p = g_new0(ImapfsParser, 1);

	p->limits = limits ? *limits : imapfs_parser_default_limits;
	p->open = g_ptr_array_new();
	p->tok = g_string_sized_new(32);
	start_response(p);
	return p;
}

void imapfs_parser_free(ImapfsParser *parser)
{
	if (!parser)
		return;
	imapfs_response_free(parser->resp);
	g_ptr_array_unref(parser->open);
	g_string_free(parser->tok, TRUE);
	g_free(parser);
}

void imapfs_parser_reset(ImapfsParser *parser)
{
	imapfs_response_free(parser->resp);
	parser->error = NULL;
	start_response(parser);
}

void imapfs_parser_set_literal_sink(ImapfsParser *parser,
				    const ImapfsLiteralSink *sink,
				    gpointer user_data)
{
	parser->has_sink = sink != NULL;
	parser->sink = sink ? *sink : (ImapfsLiteralSink){0};
	parser->sink_data = user_data;
}

ImapfsParseResult imapfs_parser_feed(ImapfsParser *parser, const guint8 *data,
				     gsize len, gsize *consumed_r,
				     ImapfsResponse **resp_r,
				     const char **error_r)
{
	gsize i = 0;

	*resp_r = NULL;
	*error_r = NULL;
	while (i < len && parser->state != ST_ERROR) {
		if (parser->state == ST_LIT_DATA) {
			i += literal_bytes(parser, data + i, len - i);
		} else if (feed_byte(parser, data[i++]) == STEP_DONE) {
			*consumed_r = i;
			*resp_r = take_response(parser);
			return IMAPFS_PARSE_RESPONSE;
		}
	}
	*consumed_r = i;
	if (parser->state != ST_ERROR)
		return IMAPFS_PARSE_MORE;
	*error_r = parser->error;
	return IMAPFS_PARSE_ERROR;
}

/* ---- rendering and argument helpers ---- */

static void append_escaped(GString *out, const char *data, gsize len,
			   gboolean quoted)
{
	for (gsize i = 0; i < len; i++) {
		guint8 c = (guint8)data[i];

		if (c < 0x20 || c >= 0x7f)
			g_string_append_printf(out, "\\x%02x", c);
		else if (quoted && (c == '"' || c == '\\'))
			g_string_append_printf(out, "\\%c", c);
		else
			g_string_append_c(out, (char)c);
	}
}

static void append_list(GString *out, const GPtrArray *list, gsize max_len);

/* Enough of a literal to recognise it in a trace, not to flood it. */
#define LITERAL_PREVIEW 16

static void append_arg(GString *out, const ImapfsArg *arg, gsize max_len)
{
	switch (arg->type) {
	case IMAPFS_ARG_ATOM:
		append_escaped(out, arg->data, arg->len, FALSE);
		break;
	case IMAPFS_ARG_STRING:
		g_string_append_c(out, '"');
		append_escaped(out, arg->data, arg->len, TRUE);
		g_string_append_c(out, '"');
		break;
	case IMAPFS_ARG_LITERAL:
		g_string_append_printf(out, "%s{%" G_GUINT64_FORMAT "}",
				       arg->literal8 ? "~" : "", arg->len);
		if (!arg->data)
			break;
		append_escaped(out, arg->data, MIN(arg->len, LITERAL_PREVIEW),
			       FALSE);
		if (arg->len > LITERAL_PREVIEW)
			g_string_append(out, "...");
		break;
	case IMAPFS_ARG_NIL:
		g_string_append(out, "NIL");
		break;
	case IMAPFS_ARG_LIST:
		g_string_append_c(out, '(');
		append_list(out, arg->list, max_len);
		g_string_append_c(out, ')');
		break;
	}
}

/* Stops early once past @max_len: a 16 MiB response is cut anyway. */
static void append_list(GString *out, const GPtrArray *list, gsize max_len)
{
	for (guint i = 0; i < list->len && out->len <= max_len; i++) {
		if (i > 0)
			g_string_append_c(out, ' ');
		append_arg(out, g_ptr_array_index(list, i), max_len);
	}
}

static void append_head(GString *out, const ImapfsResponse *resp)
{
	if (resp->kind == IMAPFS_RESP_CONTINUATION)
		g_string_append_c(out, '+');
	else if (resp->kind == IMAPFS_RESP_TAGGED && resp->tag)
		append_escaped(out, resp->tag, strlen(resp->tag), FALSE);
	else
		g_string_append_c(out, '*');
	if (resp->status > IMAPFS_STATUS_NONE &&
	    resp->status <= IMAPFS_STATUS_PREAUTH)
		g_string_append_printf(out, " %s", status_names[resp->status]);
}

char *imapfs_response_to_string(const ImapfsResponse *resp, gsize max_len)
{
	GString *out = g_string_new(NULL);

	append_head(out, resp);
	if (resp->code) {
		g_string_append(out, " [");
		append_list(out, resp->code, max_len);
		g_string_append_c(out, ']');
	}
	if (resp->args && resp->args->len > 0) {
		g_string_append_c(out, ' ');
		append_list(out, resp->args, max_len);
	}
	if (resp->text && resp->text[0]) {
		g_string_append_c(out, ' ');
		append_escaped(out, resp->text, strlen(resp->text), FALSE);
	}
	if (out->len > max_len) {
		g_string_truncate(out, max_len);
		g_string_append(out, "...");
	}
	return g_string_free(out, FALSE);
}

gboolean imapfs_arg_is_atom(const ImapfsArg *arg, const char *name)
{
	return arg && arg->type == IMAPFS_ARG_ATOM &&
	       g_ascii_strcasecmp(arg->data, name) == 0;
}

const char *imapfs_arg_str(const ImapfsArg *arg)
{
	if (!arg)
		return NULL;
	switch (arg->type) {
	case IMAPFS_ARG_ATOM:
	case IMAPFS_ARG_STRING:
	case IMAPFS_ARG_LITERAL:
		return arg->data;
	default:
		return NULL;
	}
}

gboolean imapfs_arg_number(const ImapfsArg *arg, guint64 *value_r)
{
	guint64 value = 0;
	guint d;

	if (!arg || arg->type != IMAPFS_ARG_ATOM || arg->len == 0 ||
	    arg->len > 20)
		return FALSE;
	for (gsize i = 0; i < arg->len; i++) {
		if (!g_ascii_isdigit(arg->data[i]))
			return FALSE;
		d = arg->data[i] - '0';
		if (value > (G_MAXUINT64 - d) / 10)
			return FALSE;
		value = value * 10 + d;
	}
	*value_r = value;
	return TRUE;
}

GPtrArray *imapfs_arg_list(const ImapfsArg *arg)
{
	return arg && arg->type == IMAPFS_ARG_LIST ? arg->list : NULL;
}
