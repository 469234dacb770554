/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "imapfs/error.h"
#include "imapfs/imap-parser.h"
#include "imapfs/log.h"
#include "imapfs/session.h"

#define READ_CHUNK (64 * 1024)
/* How long LOGOUT may take at unmount before we just close. */
#define LOGOUT_TIMEOUT_MS 2000

/* What the command in flight wants to hear about, besides the common
 * untagged responses every command handles. */
typedef void (*UntaggedFunc)(ImapfsSession *s, ImapfsResponse *resp,
			     gpointer ctx);
/* Answers a continuation request ("+ ..."); FALSE aborts the command. */
typedef gboolean (*ContinueFunc)(ImapfsSession *s, ImapfsResponse *resp,
				 gpointer ctx, GError **error);

/* A partial body being received for imapfs_session_fetch_body(). */
typedef struct {
	guint32 uid;
	guint64 offset; /* window wanted: [offset, offset + len) */
	gsize len;
	GByteArray *pending; /* window bytes of the literal in flight */
	guint64 lit_pos;     /* message offset of the next literal byte */
	gboolean found;	     /* a FETCH for uid delivered a body */
	GByteArray *out;
} BodyFetch;

struct ImapfsSession {
	const ImapfsConfig *cfg;
	ImapfsTlsContext *tls;
	const char *password;
	ImapfsSessionState state;
	ImapfsStream *stream;
	ImapfsParser *parser;
	guint8 *rbuf; /* bytes read but not yet parsed */
	gsize rbuf_pos, rbuf_len;
	guint caps;
	gboolean caps_seen; /* caps came from the server since last reset */
	gboolean utf8;
	guint tag_counter;
	char *selected;
	ImapfsMailboxState mbox;
	char *bye_text;	 /* set when the server said BYE */
	BodyFetch *body; /* the body fetch in flight, or NULL */
};

static const char *state_name(ImapfsSessionState state)
{
	static const char *const names[] = {
		"disconnected",	 "connecting", "not-authenticated",
		"authenticated", "selected",   "logout",
		"broken",
	};
	return names[state];
}

static void enter_state(ImapfsSession *s, ImapfsSessionState state)
{
	if (s->state == state)
		return;
	imapfs_trace(IMAPFS_TRACE_NET, "session %p: %s -> %s", (void *)s,
		     state_name(s->state), state_name(state));
	s->state = state;
	if (state != IMAPFS_SESSION_SELECTED)
		g_clear_pointer(&s->selected, g_free);
}

ImapfsSession *imapfs_session_new(const ImapfsConfig *cfg,
				  ImapfsTlsContext *tls, const char *password)
{
	ImapfsSession *s = g_new0(ImapfsSession, 1);

	s->cfg = cfg;
	s->tls = tls;
	s->password = password;
	s->parser = imapfs_parser_new(NULL);
	s->rbuf = g_malloc(READ_CHUNK);
	return s;
}

ImapfsSessionState imapfs_session_get_state(ImapfsSession *s)
{
	return s->state;
}

gboolean imapfs_session_is_usable(ImapfsSession *s)
{
	return s->state == IMAPFS_SESSION_AUTHENTICATED ||
	       s->state == IMAPFS_SESSION_SELECTED;
}

gboolean imapfs_session_has(ImapfsSession *s, ImapfsCapability cap)
{
	return (s->caps & cap) != 0;
}

gboolean imapfs_session_utf8(ImapfsSession *s)
{
	return s->utf8;
}

const char *imapfs_session_selected(ImapfsSession *s)
{
	return s->selected;
}

const ImapfsMailboxState *imapfs_session_state(ImapfsSession *s)
{
	return &s->mbox;
}

void imapfs_session_abort(ImapfsSession *s)
{
	if (s->stream)
		imapfs_stream_abort(s->stream);
}

/* --- transport ----------------------------------------------------------- */

static void set_broken(ImapfsSession *s)
{
	enter_state(s, IMAPFS_SESSION_BROKEN);
}

static gboolean send_raw(ImapfsSession *s, const char *data, gsize len,
			 GError **error)
{
	if (!imapfs_stream_write_all(s->stream, data, len, error)) {
		set_broken(s);
		return FALSE;
	}
	return TRUE;
}

/* Reads until the parser hands out one complete response. */
static ImapfsResponse *read_response(ImapfsSession *s, GError **error)
{
	for (;;) {
		if (s->rbuf_pos == s->rbuf_len) {
			gssize n = imapfs_stream_read(s->stream, s->rbuf,
						      READ_CHUNK, error);
			if (n < 0) {
				set_broken(s);
				return NULL;
			}
			s->rbuf_pos = 0;
			s->rbuf_len = n;
		}
		gsize used = 0;
		ImapfsResponse *resp = NULL;
		const char *why = NULL;
		ImapfsParseResult r = imapfs_parser_feed(
			s->parser, s->rbuf + s->rbuf_pos,
			s->rbuf_len - s->rbuf_pos, &used, &resp, &why);
		s->rbuf_pos += used;
		if (r == IMAPFS_PARSE_RESPONSE)
			return resp;
		if (r == IMAPFS_PARSE_ERROR) {
			g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_PROTOCOL,
				    "malformed reply from \"%s\": %s",
				    s->cfg->host, why);
			set_broken(s);
			return NULL;
		}
	}
}

static void trace_response(const ImapfsResponse *resp)
{
	if (!imapfs_log_tracing(IMAPFS_TRACE_NET))
		return;
	g_autofree char *line = imapfs_response_to_string(resp, 400);
	imapfs_trace(IMAPFS_TRACE_NET, "S: %s", line);
}

/* --- common untagged handling --------------------------------------------- */

static void set_capabilities(ImapfsSession *s, GPtrArray *words, guint first)
{
	static const struct {
		const char *name;
		ImapfsCapability cap;
	} known[] = {
		{"IMAP4rev1", IMAPFS_CAP_IMAP4REV1},
		{"IMAP4rev2", IMAPFS_CAP_IMAP4REV2},
		{"STARTTLS", IMAPFS_CAP_STARTTLS},
		{"LOGINDISABLED", IMAPFS_CAP_LOGINDISABLED},
		{"SASL-IR", IMAPFS_CAP_SASL_IR},
		{"AUTH=PLAIN", IMAPFS_CAP_AUTH_PLAIN},
		{"AUTH=LOGIN", IMAPFS_CAP_AUTH_LOGIN},
		{"ENABLE", IMAPFS_CAP_ENABLE},
		{"UTF8=ACCEPT", IMAPFS_CAP_UTF8_ACCEPT},
		{"CONDSTORE", IMAPFS_CAP_CONDSTORE},
		{"QRESYNC", IMAPFS_CAP_QRESYNC},
		{"UIDPLUS", IMAPFS_CAP_UIDPLUS},
		{"MOVE", IMAPFS_CAP_MOVE},
		{"IDLE", IMAPFS_CAP_IDLE},
		{"BINARY", IMAPFS_CAP_BINARY},
		{"SPECIAL-USE", IMAPFS_CAP_SPECIAL_USE},
		{"LITERAL+", IMAPFS_CAP_LITERAL_PLUS},
	};

	s->caps = 0;
	s->caps_seen = TRUE;
	for (guint i = first; i < words->len; i++)
		for (gsize k = 0; k < G_N_ELEMENTS(known); k++)
			if (imapfs_arg_is_atom(words->pdata[i], known[k].name))
				s->caps |= known[k].cap;
}

static gboolean arg_u32(const ImapfsArg *arg, guint32 *value_r)
{
	guint64 v;

	if (!imapfs_arg_number(arg, &v) || v > G_MAXUINT32)
		return FALSE;
	*value_r = (guint32)v;
	return TRUE;
}

/* Response codes that carry mailbox state or capabilities. */
static void handle_code(ImapfsSession *s, GPtrArray *code)
{
	if (code == NULL || code->len == 0)
		return;
	const ImapfsArg *name = code->pdata[0];
	const ImapfsArg *value = code->len > 1 ? code->pdata[1] : NULL;

	if (imapfs_arg_is_atom(name, "CAPABILITY"))
		set_capabilities(s, code, 1);
	else if (imapfs_arg_is_atom(name, "UIDVALIDITY"))
		arg_u32(value, &s->mbox.uidvalidity);
	else if (imapfs_arg_is_atom(name, "UIDNEXT"))
		arg_u32(value, &s->mbox.uidnext);
	else if (imapfs_arg_is_atom(name, "HIGHESTMODSEQ"))
		imapfs_arg_number(value, &s->mbox.highestmodseq);
}

static void handle_data(ImapfsSession *s, ImapfsResponse *resp)
{
	GPtrArray *a = resp->args;

	if (a->len >= 1 && imapfs_arg_is_atom(a->pdata[0], "CAPABILITY"))
		set_capabilities(s, a, 1);
	else if (a->len >= 1 && imapfs_arg_is_atom(a->pdata[0], "ENABLED")) {
		for (guint i = 1; i < a->len; i++)
			if (imapfs_arg_is_atom(a->pdata[i], "UTF8=ACCEPT"))
				s->utf8 = TRUE;
	} else if (a->len >= 2 && imapfs_arg_is_atom(a->pdata[1], "EXISTS"))
		arg_u32(a->pdata[0], &s->mbox.exists);
	else if (a->len >= 2 && imapfs_arg_is_atom(a->pdata[1], "EXPUNGE") &&
		 s->mbox.exists > 0)
		s->mbox.exists--;
}

/* Untagged responses any command may see. FALSE on BYE. */
static gboolean handle_common(ImapfsSession *s, ImapfsResponse *resp)
{
	handle_code(s, resp->code);
	if (resp->status == IMAPFS_STATUS_BYE) {
		g_free(s->bye_text);
		s->bye_text = imapfs_log_quote(resp->text ? resp->text : "");
		return FALSE;
	}
	if (resp->status == IMAPFS_STATUS_NONE)
		handle_data(s, resp);
	return TRUE;
}

/* --- commands ---------------------------------------------------------------
 */

static ImapfsErrorCode code_to_error(GPtrArray *code, ImapfsErrorCode dflt)
{
	static const struct {
		const char *name;
		ImapfsErrorCode error;
	} map[] = {
		{"NONEXISTENT", IMAPFS_ERROR_NONEXISTENT},
		{"TRYCREATE", IMAPFS_ERROR_NONEXISTENT},
		{"ALREADYEXISTS", IMAPFS_ERROR_ALREADYEXISTS},
		{"OVERQUOTA", IMAPFS_ERROR_OVERQUOTA},
		{"NOPERM", IMAPFS_ERROR_NOPERM},
		{"AUTHENTICATIONFAILED", IMAPFS_ERROR_AUTH},
		{"AUTHORIZATIONFAILED", IMAPFS_ERROR_AUTH},
		{"EXPIRED", IMAPFS_ERROR_AUTH},
	};

	if (code == NULL || code->len == 0)
		return dflt;
	for (gsize i = 0; i < G_N_ELEMENTS(map); i++)
		if (imapfs_arg_is_atom(code->pdata[0], map[i].name))
			return map[i].error;
	return dflt;
}

static gboolean tagged_result(ImapfsSession *s, ImapfsResponse *resp,
			      const char *what, GError **error)
{
	handle_code(s, resp->code);
	if (resp->status == IMAPFS_STATUS_OK)
		return TRUE;
	/* Server text goes into logs: no control characters from it. */
	g_autofree char *text = imapfs_log_quote(resp->text);
	if (resp->status == IMAPFS_STATUS_NO) {
		g_set_error(error, IMAPFS_ERROR,
			    code_to_error(resp->code, IMAPFS_ERROR_NO),
			    "%s refused by \"%s\": %s", what, s->cfg->host,
			    text);
		return FALSE;
	}
	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_BAD,
		    "%s rejected by \"%s\": %s", what, s->cfg->host, text);
	return FALSE;
}

static gboolean fail_bye(ImapfsSession *s, GError **error)
{
	set_broken(s);
	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_BYE,
		    "\"%s\" closed the connection: %s", s->cfg->host,
		    s->bye_text ? s->bye_text : "");
	return FALSE;
}

/* A continuation nobody asked for: the stream is out of step. */
static gboolean fail_continuation(ImapfsSession *s, GError **error)
{
	set_broken(s);
	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_PROTOCOL,
		    "unexpected continuation request from \"%s\"",
		    s->cfg->host);
	return FALSE;
}

typedef struct {
	const char *what; /* the command name, for messages */
	UntaggedFunc untagged;
	ContinueFunc cont;
	gpointer ctx;
} Command;

/* Reads responses until the one tagged @tag; TRUE if it is OK. */
static gboolean wait_tagged(ImapfsSession *s, const char *tag,
			    const Command *cmd, GError **error)
{
	for (;;) {
		g_autoptr(ImapfsResponse) resp = read_response(s, error);
		if (resp == NULL)
			return FALSE;
		trace_response(resp);
		switch (resp->kind) {
		case IMAPFS_RESP_TAGGED:
			if (g_strcmp0(resp->tag, tag) != 0)
				break; /* a stray tag: ignore it */
			return tagged_result(s, resp, cmd->what, error);
		case IMAPFS_RESP_CONTINUATION:
			if (cmd->cont == NULL)
				return fail_continuation(s, error);
			if (!cmd->cont(s, resp, cmd->ctx, error))
				return FALSE;
			break;
		case IMAPFS_RESP_UNTAGGED:
			if (!handle_common(s, resp))
				return fail_bye(s, error);
			if (cmd->untagged)
				cmd->untagged(s, resp, cmd->ctx);
			break;
		}
	}
}

/*
 * Sends "TAG @line" and waits for the tagged reply. @trace_line replaces
 * @line in traces when it holds a secret. @line is wiped afterwards when
 * it is secret, since it lives in the caller's buffer.
 */
static gboolean run(ImapfsSession *s, const char *line, const char *trace_line,
		    const Command *cmd, GError **error)
{
	char tag[16];

	if (s->stream == NULL || s->state == IMAPFS_SESSION_BROKEN) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_DISCONNECTED,
			    "not connected to \"%s\"", s->cfg->host);
		return FALSE;
	}
	g_snprintf(tag, sizeof(tag), "A%u", ++s->tag_counter);
	imapfs_trace(IMAPFS_TRACE_NET, "C: %s %s", tag,
		     trace_line ? trace_line : line);
	g_autofree char *full = g_strdup_printf("%s %s\r\n", tag, line);
	gsize full_len = strlen(full);
	gboolean sent = send_raw(s, full, full_len, error);
	if (trace_line)
		OPENSSL_cleanse(full, full_len);
	return sent && wait_tagged(s, tag, cmd, error);
}

static gboolean run_simple(ImapfsSession *s, const char *line, GError **error)
{
	Command cmd = {.what = line};

	return run(s, line, NULL, &cmd, error);
}

/* Appends @str as an IMAP quoted string. FALSE if it cannot be one (CR,
 * LF, or 8-bit without UTF8=ACCEPT): callers then refuse the name. */
static gboolean append_quoted(ImapfsSession *s, GString *out, const char *str)
{
	g_string_append_c(out, '"');
	for (const char *p = str; *p; p++) {
		guchar c = (guchar)*p;
		if (c == '\r' || c == '\n' || (c >= 0x80 && !s->utf8))
			return FALSE;
		if (c == '"' || c == '\\')
			g_string_append_c(out, '\\');
		g_string_append_c(out, c);
	}
	g_string_append_c(out, '"');
	return TRUE;
}

static gboolean build_quoted(ImapfsSession *s, GString *out, const char *str,
			     GError **error)
{
	if (append_quoted(s, out, str))
		return TRUE;
	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
		    "cannot send \"%s\" to the server as a quoted string", str);
	return FALSE;
}

/* --- connecting and logging in -------------------------------------------- */

static gboolean read_greeting(ImapfsSession *s, gboolean *preauth_r,
			      GError **error)
{
	g_autoptr(ImapfsResponse) resp = read_response(s, error);

	if (resp == NULL)
		return FALSE;
	trace_response(resp);
	handle_code(s, resp->code);
	if (resp->kind == IMAPFS_RESP_UNTAGGED &&
	    (resp->status == IMAPFS_STATUS_OK ||
	     resp->status == IMAPFS_STATUS_PREAUTH)) {
		*preauth_r = resp->status == IMAPFS_STATUS_PREAUTH;
		return TRUE;
	}
	set_broken(s);
	g_autofree char *text =
		imapfs_log_quote(resp->text ? resp->text : "no IMAP greeting");
	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_BYE,
		    "\"%s\" refused the connection: %s", s->cfg->host, text);
	return FALSE;
}

static gboolean refresh_capabilities(ImapfsSession *s, GError **error)
{
	s->caps = 0;
	return run_simple(s, "CAPABILITY", error);
}

static gboolean tls_handshake(ImapfsSession *s, GError **error)
{
	if (imapfs_stream_start_tls(s->stream, s->tls, s->cfg->host, error))
		return TRUE;
	set_broken(s);
	return FALSE;
}

/* STARTTLS on an imap:// connection. TRUE without TLS only when the
 * server offers none and plain text was allowed. */
static gboolean start_tls(ImapfsSession *s, GError **error)
{
	if (!imapfs_session_has(s, IMAPFS_CAP_STARTTLS)) {
		if (s->cfg->allow_plaintext)
			return TRUE;
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_PLAINTEXT,
			    "\"%s\" does not offer STARTTLS; refusing to log "
			    "in over plain text (use imaps:// or "
			    "-o allow_plaintext)",
			    s->cfg->host);
		return FALSE;
	}
	if (!run_simple(s, "STARTTLS", error))
		return FALSE;
	/* Bytes already buffered after the OK would be an injection attack
	 * on STARTTLS (CVE-2011-0411 class): refuse them. */
	if (s->rbuf_pos != s->rbuf_len) {
		set_broken(s);
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_PROTOCOL,
			    "\"%s\" sent data before the TLS handshake",
			    s->cfg->host);
		return FALSE;
	}
	return tls_handshake(s, error);
}

/* "\0user\0password", base64: the SASL PLAIN message. Wipes its copy. */
static char *sasl_plain(ImapfsSession *s)
{
	gsize ulen = strlen(s->cfg->user), plen = strlen(s->password);
	gsize len = ulen + plen + 2;
	guchar *raw = g_malloc(len);

	raw[0] = '\0';
	memcpy(raw + 1, s->cfg->user, ulen);
	raw[1 + ulen] = '\0';
	memcpy(raw + 2 + ulen, s->password, plen);
	char *b64 = g_base64_encode(raw, len);
	OPENSSL_cleanse(raw, len);
	g_free(raw);
	return b64;
}

static gboolean send_secret_line(ImapfsSession *s, char *b64, GError **error)
{
	gsize len = strlen(b64);
	g_autofree char *line = g_strconcat(b64, "\r\n", NULL);
	gboolean ok = send_raw(s, line, len + 2, error);

	OPENSSL_cleanse(line, len + 2);
	imapfs_trace(IMAPFS_TRACE_NET, "C: <credentials redacted>");
	return ok;
}

static gboolean plain_continue(ImapfsSession *s, ImapfsResponse *resp,
			       gpointer ctx, GError **error)
{
	gboolean *sent = ctx;

	if (*sent) {
		/* A second challenge means the mechanism failed; "*" cancels
		 * it and the server then answers NO. */
		return send_raw(s, "*\r\n", 3, error);
	}
	*sent = TRUE;
	char *b64 = sasl_plain(s);
	gboolean ok = send_secret_line(s, b64, error);
	OPENSSL_cleanse(b64, strlen(b64));
	g_free(b64);
	return ok;
}

static gboolean auth_plain(ImapfsSession *s, GError **error)
{
	gboolean sent = FALSE;
	Command cmd = {"AUTHENTICATE", NULL, plain_continue, &sent};

	if (!imapfs_session_has(s, IMAPFS_CAP_SASL_IR))
		return run(s, "AUTHENTICATE PLAIN", NULL, &cmd, error);
	char *b64 = sasl_plain(s);
	char *line = g_strconcat("AUTHENTICATE PLAIN ", b64, NULL);
	gsize len = strlen(line);
	sent = TRUE;
	gboolean ok =
		run(s, line, "AUTHENTICATE PLAIN <redacted>", &cmd, error);
	OPENSSL_cleanse(b64, strlen(b64));
	OPENSSL_cleanse(line, len);
	g_free(b64);
	g_free(line);
	return ok;
}

static gboolean auth_login(ImapfsSession *s, GError **error)
{
	/* Sized for the worst case of quoting, so that no reallocation
	 * leaves a copy of the password behind unwiped. */
	g_autoptr(GString) line = g_string_sized_new(
		16 + 2 * (strlen(s->cfg->user) + strlen(s->password)));
	Command cmd = {.what = "LOGIN"};

	g_string_append(line, "LOGIN ");
	gboolean ok;

	if (imapfs_session_has(s, IMAPFS_CAP_LOGINDISABLED)) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_AUTH,
			    "\"%s\" offers neither AUTH=PLAIN nor LOGIN",
			    s->cfg->host);
		return FALSE;
	}
	ok = append_quoted(s, line, s->cfg->user);
	g_string_append_c(line, ' ');
	ok = ok && append_quoted(s, line, s->password);
	if (!ok)
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_AUTH,
			    "the user name or password cannot be sent with "
			    "LOGIN (line breaks or 8-bit characters)");
	else
		ok = run(s, line->str, "LOGIN <redacted>", &cmd, error);
	OPENSSL_cleanse(line->str, line->len);
	return ok;
}

/* SASL LOGIN: the server asks for the user name, then the password,
 * each base64-encoded; anything after that is a failure to cancel. */
static gboolean sasl_login_continue(ImapfsSession *s, ImapfsResponse *resp,
				    gpointer ctx, GError **error)
{
	guint *step = ctx;
	const char *secret = *step == 0 ? s->cfg->user : s->password;

	if ((*step)++ >= 2)
		return send_raw(s, "*\r\n", 3, error);
	char *b64 = g_base64_encode((const guchar *)secret, strlen(secret));
	gboolean ok = send_secret_line(s, b64, error);
	OPENSSL_cleanse(b64, strlen(b64));
	g_free(b64);
	return ok;
}

static gboolean auth_sasl_login(ImapfsSession *s, GError **error)
{
	guint step = 0;
	Command cmd = {"AUTHENTICATE", NULL, sasl_login_continue, &step};

	return run(s, "AUTHENTICATE LOGIN", NULL, &cmd, error);
}

static gboolean choose_and_login(ImapfsSession *s, GError **error)
{
	const char *forced = s->cfg->auth;

	if (forced && g_ascii_strcasecmp(forced, "PLAIN") == 0)
		return auth_plain(s, error);
	/* auth=login names the SASL mechanism; a server without it still
	 * has the LOGIN command, which carries the same credentials. */
	if (forced && g_ascii_strcasecmp(forced, "LOGIN") == 0)
		return imapfs_session_has(s, IMAPFS_CAP_AUTH_LOGIN)
			       ? auth_sasl_login(s, error)
			       : auth_login(s, error);
	if (forced) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_UNSUPPORTED,
			    "authentication mechanism \"%s\" is not supported "
			    "yet",
			    forced);
		return FALSE;
	}
	if (imapfs_session_has(s, IMAPFS_CAP_AUTH_PLAIN))
		return auth_plain(s, error);
	return auth_login(s, error);
}

static gboolean login(ImapfsSession *s, GError **error)
{
	GError *local = NULL;

	if (!choose_and_login(s, &local)) {
		if (local->code == IMAPFS_ERROR_NO ||
		    local->code == IMAPFS_ERROR_BAD ||
		    local->code == IMAPFS_ERROR_AUTH) {
			local->code = IMAPFS_ERROR_AUTH;
			g_prefix_error(&local, "login as \"%s\" failed: ",
				       s->cfg->user);
		}
		g_propagate_error(error, local);
		return FALSE;
	}
	enter_state(s, IMAPFS_SESSION_AUTHENTICATED);
	return TRUE;
}

static gboolean after_login(ImapfsSession *s, GError **error)
{
	if (!s->caps_seen && !refresh_capabilities(s, error))
		return FALSE;
	if (!imapfs_session_has(s, IMAPFS_CAP_ENABLE) ||
	    !imapfs_session_has(s, IMAPFS_CAP_UTF8_ACCEPT))
		return TRUE;
	/* Without UTF8=ACCEPT names stay in modified UTF-7: a refusal
	 * costs nothing, only a broken connection matters. */
	GError *local = NULL;
	if (run_simple(s, "ENABLE UTF8=ACCEPT", &local))
		return TRUE;
	if (imapfs_session_is_usable(s)) {
		g_clear_error(&local);
		return TRUE;
	}
	g_propagate_error(error, local);
	return FALSE;
}

static gboolean connect_stream(ImapfsSession *s, GError **error)
{
	guint timeout_ms = s->cfg->timeout * 1000;

	enter_state(s, IMAPFS_SESSION_CONNECTING);
	s->stream = imapfs_stream_connect(s->cfg->host, s->cfg->port,
					  timeout_ms, error);
	if (s->stream == NULL) {
		set_broken(s);
		return FALSE;
	}
	if (s->cfg->implicit_tls && !tls_handshake(s, error))
		return FALSE;
	return TRUE;
}

gboolean imapfs_session_open(ImapfsSession *s, GError **error)
{
	gboolean preauth = FALSE;

	g_return_val_if_fail(s->state == IMAPFS_SESSION_DISCONNECTED, FALSE);
	if (!connect_stream(s, error) || !read_greeting(s, &preauth, error))
		return FALSE;
	enter_state(s, preauth ? IMAPFS_SESSION_AUTHENTICATED
			       : IMAPFS_SESSION_NOT_AUTHENTICATED);
	if (!s->caps_seen && !refresh_capabilities(s, error))
		return FALSE;
	if (preauth) {
		/* STARTTLS is impossible after PREAUTH (RFC 9051 6.2.1). */
		if (!s->cfg->implicit_tls && !s->cfg->allow_plaintext) {
			g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_PLAINTEXT,
				    "\"%s\" pre-authenticated a plain-text "
				    "connection; refusing it without "
				    "-o allow_plaintext",
				    s->cfg->host);
			set_broken(s);
			return FALSE;
		}
		return after_login(s, error);
	}
	if (!s->cfg->implicit_tls) {
		if (!start_tls(s, error))
			return FALSE;
		/* Pre-TLS capabilities may have been forged. */
		if (imapfs_stream_is_tls(s->stream) &&
		    !refresh_capabilities(s, error))
			return FALSE;
	}
	/* Capabilities may change with login; a fresh list usually comes
	 * with the tagged OK ([CAPABILITY ...]), else we ask. */
	s->caps_seen = FALSE;
	if (!login(s, error))
		return FALSE;
	return after_login(s, error);
}

void imapfs_session_free(ImapfsSession *s)
{
	if (s == NULL)
		return;
	if (imapfs_session_is_usable(s)) {
		imapfs_stream_set_timeout(s->stream, LOGOUT_TIMEOUT_MS);
		enter_state(s, IMAPFS_SESSION_LOGOUT);
		Command cmd = {.what = "LOGOUT"};
		/* BYE is expected here; its "failure" is the normal end. */
		run(s, "LOGOUT", NULL, &cmd, NULL);
	}
	imapfs_stream_free(s->stream);
	imapfs_parser_free(s->parser);
	g_free(s->rbuf);
	g_free(s->selected);
	g_free(s->bye_text);
	g_free(s);
}

/* --- LIST -------------------------------------------------------------------
 */

void imapfs_list_entry_free(gpointer p)
{
	ImapfsListEntry *e = p;

	g_free(e->name);
	g_free(e);
}

static guint list_flags(GPtrArray *attrs)
{
	guint flags = 0;

	for (guint i = 0; attrs && i < attrs->len; i++) {
		const ImapfsArg *a = attrs->pdata[i];
		if (imapfs_arg_is_atom(a, "\\Noselect"))
			flags |= IMAPFS_MBOX_NOSELECT;
		else if (imapfs_arg_is_atom(a, "\\NonExistent"))
			flags |= IMAPFS_MBOX_NONEXISTENT | IMAPFS_MBOX_NOSELECT;
		else if (imapfs_arg_is_atom(a, "\\Noinferiors"))
			flags |= IMAPFS_MBOX_NOINFERIORS;
		else if (imapfs_arg_is_atom(a, "\\HasNoChildren"))
			flags |= IMAPFS_MBOX_HASNOCHILDREN;
	}
	return flags;
}

/* "* LIST (attrs) delim name": anything else of that shape is skipped. */
static void on_list(ImapfsSession *s, ImapfsResponse *resp, gpointer ctx)
{
	GPtrArray *out = ctx, *a = resp->args;

	if (a->len < 4 || !imapfs_arg_is_atom(a->pdata[0], "LIST"))
		return;
	const char *delim = imapfs_arg_str(a->pdata[2]);
	const char *name = imapfs_arg_str(a->pdata[3]);
	const ImapfsArg *name_arg = a->pdata[3];
	if (name == NULL || strlen(name) != name_arg->len || *name == '\0')
		return; /* NUL inside a name cannot be shown */
	if (delim && strlen(delim) > 1)
		return;
	ImapfsListEntry *e = g_new0(ImapfsListEntry, 1);
	/* INBOX is case-insensitive; one spelling keeps lookups simple. */
	e->name = g_ascii_strcasecmp(name, "INBOX") == 0 ? g_strdup("INBOX")
							 : g_strdup(name);
	e->delim = delim ? delim[0] : '\0';
	e->flags = list_flags(imapfs_arg_list(a->pdata[1]));
	g_ptr_array_add(out, e);
}

GPtrArray *imapfs_session_list(ImapfsSession *s, const char *reference,
			       const char *pattern, GError **error)
{
	g_autoptr(GPtrArray) out =
		g_ptr_array_new_with_free_func(imapfs_list_entry_free);
	g_autoptr(GString) line = g_string_new("LIST ");
	Command cmd = {"LIST", on_list, NULL, out};

	if (!build_quoted(s, line, reference, error))
		return NULL;
	g_string_append_c(line, ' ');
	if (!build_quoted(s, line, pattern, error))
		return NULL;
	if (!run(s, line->str, NULL, &cmd, error))
		return NULL;
	return g_steal_pointer(&out);
}

/* --- EXAMINE
 * ------------------------------------------------------------------ */

gboolean imapfs_session_examine(ImapfsSession *s, const char *mailbox,
				ImapfsMailboxState *state_r, GError **error)
{
	g_autoptr(GString) line = g_string_new("EXAMINE ");
	Command cmd = {.what = "EXAMINE"};

	if (!build_quoted(s, line, mailbox, error))
		return FALSE;
	memset(&s->mbox, 0, sizeof(s->mbox));
	enter_state(s, IMAPFS_SESSION_AUTHENTICATED);
	if (!run(s, line->str, NULL, &cmd, error))
		return FALSE;
	if (s->mbox.uidvalidity == 0) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_PROTOCOL,
			    "\"%s\" sent no UIDVALIDITY for \"%s\"",
			    s->cfg->host, mailbox);
		return FALSE;
	}
	enter_state(s, IMAPFS_SESSION_SELECTED);
	s->selected = g_strdup(mailbox);
	if (state_r)
		*state_r = s->mbox;
	return TRUE;
}

/* --- FETCH
 * -------------------------------------------------------------------- */

void imapfs_message_info_clear(gpointer p)
{
	ImapfsMessageInfo *info = p;

	g_clear_pointer(&info->flags, g_free);
}

/* "17-Jul-1996 02:44:25 -0700" -> seconds since the epoch. */
static gboolean parse_internaldate(const char *str, gint64 *time_r)
{
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	char mon[4];
	int day, year, hh, mm, ss, zone;
	char sign;

	if (str == NULL ||
	    sscanf(str, "%d-%3s-%d %d:%d:%d %c%4d", &day, mon, &year, &hh, &mm,
		   &ss, &sign, &zone) != 8 ||
	    (sign != '+' && sign != '-'))
		return FALSE;
	int month = 0;
	while (month < 12 && g_ascii_strncasecmp(months + 3 * month, mon, 3))
		month++;
	if (month == 12 || strlen(mon) != 3 || day < 1 || day > 31 || hh > 23 ||
	    mm > 59 || ss > 60 || year < 1 || year > 9999)
		return FALSE;
	/* A leap second is taken as the second before it. */
	g_autoptr(GDateTime) utc =
		g_date_time_new_utc(year, month + 1, day, hh, mm, MIN(ss, 59));
	if (utc == NULL)
		return FALSE;
	gint64 offset = (zone / 100) * 3600 + (zone % 100) * 60;
	*time_r = g_date_time_to_unix(utc) - (sign == '+' ? offset : -offset);
	return TRUE;
}

/* The (key value ...) list of "* n FETCH (...)", or NULL. */
static GPtrArray *fetch_items(ImapfsResponse *resp)
{
	GPtrArray *a = resp->args;

	if (a->len != 3 || !imapfs_arg_is_atom(a->pdata[1], "FETCH"))
		return NULL;
	return imapfs_arg_list(a->pdata[2]);
}

static const ImapfsArg *fetch_item(GPtrArray *items, const char *key)
{
	for (guint i = 0; i + 1 < items->len; i += 2)
		if (imapfs_arg_is_atom(items->pdata[i], key))
			return items->pdata[i + 1];
	return NULL;
}

static char *join_flags(const ImapfsArg *flags)
{
	GPtrArray *list = imapfs_arg_list(flags);
	g_autoptr(GString) out = g_string_new(NULL);

	for (guint i = 0; list && i < list->len; i++) {
		const char *f = imapfs_arg_str(list->pdata[i]);
		if (f == NULL)
			continue;
		if (out->len)
			g_string_append_c(out, ' ');
		g_string_append(out, f);
	}
	return g_string_free(g_steal_pointer(&out), FALSE);
}

/* More FETCH replies than this for one listing is a hostile server. */
#define MAX_INDEX_ENTRIES (16u * 1024 * 1024)

typedef struct {
	GArray *out;
	guint limit;
	gboolean overflow;
} IndexFetch;

static void on_index(ImapfsSession *s, ImapfsResponse *resp, gpointer ctx)
{
	IndexFetch *ix = ctx;
	GPtrArray *items = fetch_items(resp);
	ImapfsMessageInfo info = {0};
	guint64 size;

	/* Replies without UID and size are flag updates or noise. */
	if (items == NULL || !arg_u32(fetch_item(items, "UID"), &info.uid) ||
	    info.uid == 0 ||
	    !imapfs_arg_number(fetch_item(items, "RFC822.SIZE"), &size))
		return;
	if (ix->out->len >= ix->limit) {
		ix->overflow = TRUE;
		return;
	}
	/* A date we cannot read must not hide the message: it shows as 0. */
	if (!parse_internaldate(
		    imapfs_arg_str(fetch_item(items, "INTERNALDATE")),
		    &info.internaldate))
		info.internaldate = 0;
	info.size = size;
	info.flags = join_flags(fetch_item(items, "FLAGS"));
	g_array_append_val(ix->out, info);
}

static gint cmp_uid(gconstpointer a, gconstpointer b)
{
	guint32 x = ((const ImapfsMessageInfo *)a)->uid;
	guint32 y = ((const ImapfsMessageInfo *)b)->uid;

	return x < y ? -1 : x > y;
}

static void sort_unique(GArray *msgs)
{
	guint keep = 0;

	g_array_sort(msgs, cmp_uid);
	for (guint i = 0; i < msgs->len; i++) {
		ImapfsMessageInfo *m =
			&g_array_index(msgs, ImapfsMessageInfo, i);
		if (keep > 0 &&
		    g_array_index(msgs, ImapfsMessageInfo, keep - 1).uid ==
			    m->uid) {
			imapfs_message_info_clear(m);
			continue;
		}
		if (keep != i) {
			g_array_index(msgs, ImapfsMessageInfo, keep) = *m;
			/* The tail is cleared by set_size: it must not free
			 * what the kept copy now owns. */
			memset(m, 0, sizeof(*m));
		}
		keep++;
	}
	g_array_set_size(msgs, keep);
}

GArray *imapfs_session_fetch_index(ImapfsSession *s, GError **error)
{
	g_autoptr(GArray) out =
		g_array_new(FALSE, TRUE, sizeof(ImapfsMessageInfo));
	/* Room for messages arriving meanwhile, but not without bound. */
	IndexFetch ix = {out, MIN(MAX_INDEX_ENTRIES, s->mbox.exists * 2 + 1024),
			 FALSE};
	Command cmd = {"UID FETCH", on_index, NULL, &ix};

	g_array_set_clear_func(out, imapfs_message_info_clear);
	/* "1:*" on an empty mailbox is an error on some servers. */
	if (s->mbox.exists > 0 &&
	    !run(s, "UID FETCH 1:* (UID RFC822.SIZE INTERNALDATE FLAGS)", NULL,
		 &cmd, error))
		return NULL;
	if (ix.overflow) {
		set_broken(s);
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_PROTOCOL,
			    "\"%s\" sent more messages than the mailbox holds",
			    s->cfg->host);
		return NULL;
	}
	sort_unique(out);
	return g_steal_pointer(&out);
}

/* The origin of "BODY[]<123>", 0 when there is none. FALSE if @key is
 * not the whole-message body. */
static gboolean body_key_origin(const char *key, guint64 *origin_r)
{
	if (key == NULL || g_ascii_strncasecmp(key, "BODY[]", 6) != 0)
		return FALSE;
	*origin_r = 0;
	if (key[6] == '\0')
		return TRUE;
	if (key[6] != '<')
		return FALSE;
	char *end = NULL;
	guint64 v = g_ascii_strtoull(key + 7, &end, 10);
	if (end == key + 7 || g_strcmp0(end, ">") != 0)
		return FALSE;
	*origin_r = v;
	return TRUE;
}

static ImapfsLiteralAction body_begin(gpointer user_data,
				      const ImapfsResponse *resp,
				      const char *key, guint64 size,
				      const char **error_r)
{
	BodyFetch *bf = user_data;
	guint64 origin;

	if (!body_key_origin(key, &origin))
		return size <= imapfs_parser_default_limits.max_inline_literal
			       ? IMAPFS_LITERAL_INLINE
			       : IMAPFS_LITERAL_REJECT;
	g_byte_array_set_size(bf->pending, 0);
	bf->lit_pos = origin;
	return IMAPFS_LITERAL_STREAM;
}

/* Keeps only the bytes inside the wanted window, so memory stays bounded
 * by the request even when a server sends more than asked. */
static gboolean body_data(gpointer user_data, const guint8 *data, gsize len,
			  const char **error_r)
{
	BodyFetch *bf = user_data;
	guint64 start = bf->lit_pos, end = bf->lit_pos + len;
	guint64 want_end = bf->offset + bf->len;

	bf->lit_pos = end;
	if (end <= bf->offset || start >= want_end)
		return TRUE;
	guint64 from = MAX(start, bf->offset), to = MIN(end, want_end);
	g_byte_array_append(bf->pending, data + (from - start), to - from);
	return TRUE;
}

static void on_body(ImapfsSession *s, ImapfsResponse *resp, gpointer ctx)
{
	BodyFetch *bf = ctx;
	GPtrArray *items = fetch_items(resp);
	guint32 uid;

	if (items == NULL || !arg_u32(fetch_item(items, "UID"), &uid) ||
	    uid != bf->uid || bf->found)
		return;
	for (guint i = 0; i + 1 < items->len; i += 2) {
		guint64 origin;
		const ImapfsArg *k = items->pdata[i], *v = items->pdata[i + 1];
		if (k->type != IMAPFS_ARG_ATOM ||
		    !body_key_origin(k->data, &origin))
			continue;
		bf->found = TRUE;
		/* NIL or "" (past the end) leave the window empty; a small
		 * inline string is taken like a streamed literal. */
		if (v->type == IMAPFS_ARG_STRING) {
			g_byte_array_set_size(bf->pending, 0);
			bf->lit_pos = origin;
			body_data(bf, (const guint8 *)v->data, v->len, NULL);
		}
		g_byte_array_append(bf->out, bf->pending->data,
				    bf->pending->len);
		return;
	}
}

gboolean imapfs_session_fetch_body(ImapfsSession *s, guint32 uid,
				   guint64 offset, gsize len, GByteArray *out,
				   GError **error)
{
	static const ImapfsLiteralSink sink = {body_begin, body_data};
	g_autoptr(GByteArray) pending = g_byte_array_new();
	BodyFetch bf = {uid, offset, len, pending, 0, FALSE, out};
	Command cmd = {"UID FETCH", on_body, NULL, &bf};
	g_autofree char *line = g_strdup_printf(
		"UID FETCH %u (UID BODY.PEEK[]<%" G_GUINT64_FORMAT
		".%" G_GSIZE_FORMAT ">)",
		uid, offset, len);

	imapfs_parser_set_literal_sink(s->parser, &sink, &bf);
	gboolean ok = run(s, line, NULL, &cmd, error);
	imapfs_parser_set_literal_sink(s->parser, NULL, NULL);
	if (ok && !bf.found) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_NONEXISTENT,
			    "message UID %u is no longer in \"%s\"", uid,
			    s->selected ? s->selected : "?");
		return FALSE;
	}
	return ok;
}
