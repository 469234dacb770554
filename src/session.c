/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "imapfs/bodystructure.h"
#include "imapfs/error.h"
#include "imapfs/imap-parser.h"
#include "imapfs/log.h"
#include "imapfs/session.h"

#define READ_CHUNK (64 * 1024)
/* How long LOGOUT may take at unmount before we just close. */
#define LOGOUT_TIMEOUT_MS 2000

/* Response codes only the command that asked for them may take: a
 * stray COPYUID must not be believed to describe another command's
 * message. */
typedef struct {
	ImapfsNewUid new_uid; /* APPENDUID or COPYUID */
	guint32 store_uid;    /* the UID a conditional STORE is about */
	gboolean modified;    /* [MODIFIED] named store_uid */
} CodeWatch;

/* What the command in flight wants to hear about, besides the common
 * untagged responses every command handles. */
typedef void (*UntaggedFunc)(ImapfsSession *s, ImapfsResponse *resp,
			     gpointer ctx);
/* Answers a continuation request ("+ ..."); FALSE aborts the command. */
typedef gboolean (*ContinueFunc)(ImapfsSession *s, ImapfsResponse *resp,
				 gpointer ctx, GError **error);

struct ImapfsSession {
	const ImapfsConfig *cfg;
	ImapfsTlsContext *tls;
	char *password; /* or the OAuth token; ours, wiped on free */
	ImapfsSessionState state;
	ImapfsStream *stream;
	ImapfsParser *parser;
	guint8 *rbuf; /* bytes read but not yet parsed */
	gsize rbuf_pos, rbuf_len;
	guint caps;
	gboolean caps_seen; /* caps came from the server since last reset */
	gboolean utf8;
	gboolean condstore;   /* ENABLEd */
	guint64 append_limit; /* APPENDLIMIT=n; 0: none or per mailbox */
	guint tag_counter;
	char *selected;
	gboolean writable;  /* selected with SELECT, not EXAMINE */
	CodeWatch *watch;   /* the command in flight's, or NULL */
	char idle_tag[16];  /* IDLE's tag while it runs, else "" */
	gboolean idle_news; /* news came before IDLE's continuation */
	ImapfsMailboxState mbox;
	char *bye_text;	  /* set when the server said BYE */
	gint aborted;	  /* atomic: imapfs_session_abort() was called */
	gint64 heard_at;  /* monotonic: when the server last sent anything */
	guint timeout_ms; /* how long the server may stay silent */
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
	if (state != IMAPFS_SESSION_SELECTED) {
		g_clear_pointer(&s->selected, g_free);
		s->writable = FALSE;
	}
}

ImapfsSession *imapfs_session_new(const ImapfsConfig *cfg,
				  ImapfsTlsContext *tls, const char *password)
{
	ImapfsSession *s = g_new0(ImapfsSession, 1);

	s->cfg = cfg;
	s->tls = tls;
	s->password = g_strdup(password);
	s->timeout_ms = cfg->timeout * 1000;
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

gboolean imapfs_session_condstore(ImapfsSession *s)
{
	return s->condstore;
}

gboolean imapfs_session_writable(ImapfsSession *s)
{
	return s->state == IMAPFS_SESSION_SELECTED && s->writable;
}

guint64 imapfs_session_append_limit(ImapfsSession *s)
{
	return s->append_limit;
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
	ImapfsStream *stream = g_atomic_pointer_get(&s->stream);

	/* Also while still connecting: connect_stream() looks at it once
	 * the stream exists. */
	g_atomic_int_set(&s->aborted, 1);
	if (stream)
		imapfs_stream_abort(stream);
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

/* Reads what the server sent next into the empty read buffer. The
 * caller decides whether a failure breaks the session. */
static gboolean fill_rbuf(ImapfsSession *s, GError **error)
{
	gssize n = imapfs_stream_read(s->stream, s->rbuf, READ_CHUNK, error);

	if (n < 0)
		return FALSE;
	s->rbuf_pos = 0;
	s->rbuf_len = n;
	s->heard_at = g_get_monotonic_time();
	return TRUE;
}

/* Reads until the parser hands out one complete response. */
static ImapfsResponse *read_response(ImapfsSession *s, GError **error)
{
	for (;;) {
		if (s->rbuf_pos == s->rbuf_len && !fill_rbuf(s, error)) {
			set_broken(s);
			return NULL;
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

/* "APPENDLIMIT=n" (RFC 7889). A bare "APPENDLIMIT" means limits per
 * mailbox, which only STATUS tells: left as unknown (0), like garbage. */
static void set_append_limit(ImapfsSession *s, const ImapfsArg *word)
{
	static const char prefix[] = "APPENDLIMIT=";
	guint64 v;

	if (word->type != IMAPFS_ARG_ATOM ||
	    g_ascii_strncasecmp(word->data, prefix, strlen(prefix)) != 0)
		return;
	if (g_ascii_string_to_unsigned(word->data + strlen(prefix), 10, 1,
				       G_MAXUINT64, &v, NULL))
		s->append_limit = v;
}

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
		{"AUTH=XOAUTH2", IMAPFS_CAP_AUTH_XOAUTH2},
		{"AUTH=OAUTHBEARER", IMAPFS_CAP_AUTH_OAUTHBEARER},
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
		{"ESEARCH", IMAPFS_CAP_ESEARCH},
		{"LIST-EXTENDED", IMAPFS_CAP_LIST_EXTENDED},
		{"LITERAL-", IMAPFS_CAP_LITERAL_MINUS},
		{"UNSELECT", IMAPFS_CAP_UNSELECT},
		{"OBJECTID", IMAPFS_CAP_OBJECTID},
		{"LIST-STATUS", IMAPFS_CAP_LIST_STATUS},
	};

	s->caps = 0;
	s->caps_seen = TRUE;
	s->append_limit = 0;
	for (guint i = first; i < words->len; i++) {
		for (gsize k = 0; k < G_N_ELEMENTS(known); k++)
			if (imapfs_arg_is_atom(words->pdata[i], known[k].name))
				s->caps |= known[k].cap;
		set_append_limit(s, words->pdata[i]);
	}
}

static gboolean arg_u32(const ImapfsArg *arg, guint32 *value_r)
{
	guint64 v;

	if (!imapfs_arg_number(arg, &v) || v > G_MAXUINT32)
		return FALSE;
	*value_r = (guint32)v;
	return TRUE;
}

/* A non-zero UID, or a set naming exactly one ("5", "5:5"). */
static gboolean arg_one_uid(const ImapfsArg *arg, guint32 *uid_r)
{
	const char *set = imapfs_arg_str(arg);
	guint64 a, b;
	char *end = NULL;

	if (arg == NULL || arg->type != IMAPFS_ARG_ATOM || set == NULL ||
	    !g_ascii_isdigit(*set))
		return FALSE;
	a = b = g_ascii_strtoull(set, &end, 10);
	if (*end == ':') {
		const char *second = end + 1;
		if (!g_ascii_isdigit(*second))
			return FALSE;
		b = g_ascii_strtoull(second, &end, 10);
	}
	if (*end != '\0' || a != b || a == 0 || a > G_MAXUINT32)
		return FALSE;
	*uid_r = (guint32)a;
	return TRUE;
}

/* Whether sequence set @set ("1:5,7") holds @uid. A set we cannot read
 * counts as holding it: for [MODIFIED] that is the cautious answer. */
static gboolean set_contains(const char *set, guint32 uid)
{
	g_auto(GStrv) parts = g_strsplit(set ? set : "", ",", -1);

	for (guint i = 0; parts[i]; i++) {
		char *end = NULL;
		guint64 a = g_ascii_strtoull(parts[i], &end, 10), b = a;
		if (*end == ':')
			b = g_ascii_strtoull(end + 1, &end, 10);
		if (*end != '\0' || !g_ascii_isdigit(parts[i][0]))
			return TRUE;
		if (MIN(a, b) <= uid && uid <= MAX(a, b))
			return TRUE;
	}
	return FALSE;
}

/* "[APPENDUID uidvalidity uid]", "[COPYUID uidvalidity src dst]": only
 * one message is ever appended or copied, so a set of several in the
 * destination is not ours to interpret. */
static void watch_new_uid(CodeWatch *w, GPtrArray *code, guint uid_at)
{
	ImapfsNewUid got = {0};

	if (code->len != uid_at + 1 ||
	    !arg_u32(code->pdata[1], &got.uidvalidity) ||
	    got.uidvalidity == 0 || !arg_one_uid(code->pdata[uid_at], &got.uid))
		return;
	w->new_uid = got;
}

/* Codes that answer the command in flight, for its CodeWatch. */
static void handle_watched_code(CodeWatch *w, GPtrArray *code)
{
	const ImapfsArg *name = code->pdata[0];

	if (imapfs_arg_is_atom(name, "APPENDUID"))
		watch_new_uid(w, code, 2);
	else if (imapfs_arg_is_atom(name, "COPYUID"))
		watch_new_uid(w, code, 3);
	else if (imapfs_arg_is_atom(name, "MODIFIED") && w->store_uid &&
		 set_contains(code->len > 1 ? imapfs_arg_str(code->pdata[1])
					    : NULL,
			      w->store_uid))
		w->modified = TRUE;
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
	else if (imapfs_arg_is_atom(name, "READ-ONLY"))
		s->writable = FALSE; /* a SELECT granted only read access */
	else if (s->watch)
		handle_watched_code(s->watch, code);
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
			else if (imapfs_arg_is_atom(a->pdata[i], "CONDSTORE"))
				s->condstore = TRUE;
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
		{"MODIFIED", IMAPFS_ERROR_MODIFIED},
		{"HASCHILDREN", IMAPFS_ERROR_NOTEMPTY},
		{"INUSE", IMAPFS_ERROR_BUSY},
		{"TOOBIG", IMAPFS_ERROR_TOOBIG},
		/* RFC 5530: a name or request the server cannot take. */
		{"CANNOT", IMAPFS_ERROR_INVALID},
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

/* A command tag; emptied once its tagged reply has come. */
typedef struct {
	char s[16];
} Tag;

typedef struct {
	const char *what; /* the command name, for messages */
	UntaggedFunc untagged;
	ContinueFunc cont;
	gpointer ctx;
} Command;

/* Reads responses until every command in @tags[0..@n) has its tagged
 * reply (pipelined commands may finish in any order). TRUE if all are OK;
 * otherwise @error says why the first one failed. */
static gboolean wait_tags(ImapfsSession *s, Tag *tags, guint n,
			  const Command *cmd, GError **error)
{
	guint left = n;
	gboolean ok = TRUE;

	while (left > 0) {
		g_autoptr(ImapfsResponse) resp = read_response(s, error);
		if (resp == NULL)
			return FALSE;
		trace_response(resp);
		switch (resp->kind) {
		case IMAPFS_RESP_TAGGED:
			for (guint i = 0; i < n; i++) {
				if (tags[i].s[0] == '\0' ||
				    g_strcmp0(resp->tag, tags[i].s) != 0)
					continue;
				tags[i].s[0] = '\0';
				left--;
				if (!tagged_result(s, resp, cmd->what,
						   ok ? error : NULL))
					ok = FALSE;
			}
			break; /* a stray tag is ignored */
		case IMAPFS_RESP_CONTINUATION:
			if (cmd->cont == NULL)
				return fail_continuation(s, error);
			if (!cmd->cont(s, resp, cmd->ctx, error))
				return FALSE;
			break;
		case IMAPFS_RESP_UNTAGGED:
			if (!handle_common(s, resp))
				return fail_bye(s, ok ? error : NULL);
			if (cmd->untagged)
				cmd->untagged(s, resp, cmd->ctx);
			break;
		}
	}
	return ok;
}

static gboolean check_connected(ImapfsSession *s, GError **error)
{
	if (s->stream != NULL && s->state != IMAPFS_SESSION_BROKEN)
		return TRUE;
	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_DISCONNECTED,
		    "not connected to \"%s\"", s->cfg->host);
	return FALSE;
}

static gboolean check_cap(ImapfsSession *s, ImapfsCapability cap,
			  const char *name, GError **error)
{
	if (imapfs_session_has(s, cap))
		return TRUE;
	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_UNSUPPORTED,
		    "\"%s\" does not offer %s", s->cfg->host, name);
	return FALSE;
}

/* Appends "TAG @line\r\n" to @out, with the next tag stored in @tag. */
static void add_command(ImapfsSession *s, GString *out, Tag *tag,
			const char *line)
{
	g_snprintf(tag->s, sizeof(tag->s), "A%u", ++s->tag_counter);
	imapfs_trace(IMAPFS_TRACE_NET, "C: %s %s", tag->s, line);
	g_string_append_printf(out, "%s %s\r\n", tag->s, line);
}

/*
 * Sends "TAG @line" and waits for the tagged reply. @trace_line replaces
 * @line in traces when it holds a secret. @line is wiped afterwards when
 * it is secret, since it lives in the caller's buffer.
 */
static gboolean run(ImapfsSession *s, const char *line, const char *trace_line,
		    const Command *cmd, GError **error)
{
	Tag tag;

	if (!check_connected(s, error))
		return FALSE;
	g_snprintf(tag.s, sizeof(tag.s), "A%u", ++s->tag_counter);
	imapfs_trace(IMAPFS_TRACE_NET, "C: %s %s", tag.s,
		     trace_line ? trace_line : line);
	/* g_strconcat measures, then allocates once: printf-style building
	 * would leave unwiped partial copies of a secret line behind. */
	g_autofree char *full = g_strconcat(tag.s, " ", line, "\r\n", NULL);
	gsize full_len = strlen(full);
	gboolean sent = send_raw(s, full, full_len, error);
	if (trace_line)
		OPENSSL_cleanse(full, full_len);
	return sent && wait_tags(s, &tag, 1, cmd, error);
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

/* @raw of @len bytes in base64; wipes @raw. */
static char *b64_and_wipe(char *raw, gsize len)
{
	char *b64 = g_base64_encode((const guchar *)raw, len);

	OPENSSL_cleanse(raw, len);
	g_free(raw);
	return b64;
}

/* "\0user\0password": the SASL PLAIN message, base64. */
static char *sasl_plain(ImapfsSession *s)
{
	gsize ulen = strlen(s->cfg->user), plen = strlen(s->password);
	gsize len = ulen + plen + 2;
	char *raw = g_malloc(len);

	raw[0] = '\0';
	memcpy(raw + 1, s->cfg->user, ulen);
	raw[1 + ulen] = '\0';
	memcpy(raw + 2 + ulen, s->password, plen);
	return b64_and_wipe(raw, len);
}

/* XOAUTH2 (Google's and Microsoft's): "user=U^Aauth=Bearer T^A^A". */
static char *sasl_xoauth2(ImapfsSession *s)
{
	char *raw = g_strconcat("user=", s->cfg->user, "\001auth=Bearer ",
				s->password, "\001\001", NULL);

	return b64_and_wipe(raw, strlen(raw));
}

/* OAUTHBEARER (RFC 7628): a GS2 header naming the user, where ',' and
 * '=' are escaped (RFC 5801), then host, port and the bearer token. */
static char *sasl_oauthbearer(ImapfsSession *s)
{
	g_autoptr(GString) user = g_string_new(NULL);

	for (const char *p = s->cfg->user; *p; p++) {
		if (*p == ',')
			g_string_append(user, "=2C");
		else if (*p == '=')
			g_string_append(user, "=3D");
		else
			g_string_append_c(user, *p);
	}
	char port[8];

	g_snprintf(port, sizeof(port), "%u", s->cfg->port);
	char *raw = g_strconcat("n,a=", user->str, ",\001host=", s->cfg->host,
				"\001port=", port, "\001auth=Bearer ",
				s->password, "\001\001", NULL);
	return b64_and_wipe(raw, strlen(raw));
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

/* A SASL exchange whose client part is one initial response. */
typedef struct {
	const char *mech;
	char *initial; /* base64; wiped by auth_sasl() */
	gboolean sent;
	/* The answer to a challenge after the response, by which the OAuth
	 * mechanisms hear the server's error and then get its NO: an empty
	 * line (XOAUTH2), a single ^A (OAUTHBEARER). NULL: cancel with "*"
	 * (PLAIN: a second challenge means it failed). */
	const char *error_reply;
	char *error_details; /* that challenge, decoded and made printable */
} Sasl;

/* The server's error challenge (JSON for the OAuth mechanisms) as text
 * safe to print: untrusted bytes, so printable ASCII only, and short. */
static char *printable_challenge(const char *text)
{
	gsize len = 0;
	g_autofree guchar *raw = NULL;
	GString *out = g_string_new(NULL);

	if (strlen(text) <= 4096)
		raw = g_base64_decode(text, &len);
	for (gsize i = 0; i < len && out->len < 200; i++)
		g_string_append_c(out, g_ascii_isprint(raw[i]) ? raw[i] : '?');
	return g_string_free(out, FALSE);
}

static gboolean sasl_continue(ImapfsSession *s, ImapfsResponse *resp,
			      gpointer ctx, GError **error)
{
	Sasl *sasl = ctx;

	if (!sasl->sent) {
		sasl->sent = TRUE;
		return send_secret_line(s, sasl->initial, error);
	}
	if (sasl->error_reply == NULL || sasl->error_details != NULL)
		return send_raw(s, "*\r\n", 3, error);
	sasl->error_details = printable_challenge(resp->text);
	imapfs_trace(IMAPFS_TRACE_NET, "S: (%s challenge) %s", sasl->mech,
		     sasl->error_details);
	g_autofree char *line = g_strconcat(sasl->error_reply, "\r\n", NULL);
	return send_raw(s, line, strlen(line), error);
}

/* AUTHENTICATE @sasl->mech, with the initial response on the command
 * line when the server has SASL-IR (one round trip less). */
static gboolean auth_sasl(ImapfsSession *s, Sasl *sasl, GError **error)
{
	Command cmd = {"AUTHENTICATE", NULL, sasl_continue, sasl};
	g_autofree char *bare = g_strconcat("AUTHENTICATE ", sasl->mech, NULL);
	gboolean ok;

	if (imapfs_session_has(s, IMAPFS_CAP_SASL_IR)) {
		char *line = g_strconcat(bare, " ", sasl->initial, NULL);
		g_autofree char *shown = g_strconcat(bare, " <redacted>", NULL);

		sasl->sent = TRUE;
		ok = run(s, line, shown, &cmd, error);
		OPENSSL_cleanse(line, strlen(line));
		g_free(line);
	} else {
		ok = run(s, bare, NULL, &cmd, error);
	}
	OPENSSL_cleanse(sasl->initial, strlen(sasl->initial));
	g_free(sasl->initial);
	if (!ok && sasl->error_details && error && *error) {
		char *msg =
			g_strdup_printf("%s (the server said %s)",
					(*error)->message, sasl->error_details);
		g_free((*error)->message);
		(*error)->message = msg;
	}
	g_free(sasl->error_details);
	return ok;
}

static gboolean auth_plain(ImapfsSession *s, GError **error)
{
	Sasl sasl = {.mech = "PLAIN", .initial = sasl_plain(s)};

	return auth_sasl(s, &sasl, error);
}

/* With a token: what auth= forces, else OAUTHBEARER, the standard, when
 * offered, else XOAUTH2. */
static gboolean auth_oauth(ImapfsSession *s, GError **error)
{
	const char *mech = s->cfg->auth;

	gboolean bearer_offered =
		imapfs_session_has(s, IMAPFS_CAP_AUTH_OAUTHBEARER);
	gboolean xoauth2_offered =
		imapfs_session_has(s, IMAPFS_CAP_AUTH_XOAUTH2);

	if (mech == NULL)
		mech = bearer_offered	 ? "OAUTHBEARER"
		       : xoauth2_offered ? "XOAUTH2"
					 : NULL;
	if (mech == NULL) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_UNSUPPORTED,
			    "\"%s\" offers neither AUTH=OAUTHBEARER nor "
			    "AUTH=XOAUTH2: log in with a password instead",
			    s->cfg->host);
		return FALSE;
	}
	gboolean bearer = strcmp(mech, "OAUTHBEARER") == 0;
	/* Refused before sending: a NO would count as a bad token and
	 * have the token command run again for nothing. */
	if (!(bearer ? bearer_offered : xoauth2_offered)) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_UNSUPPORTED,
			    "\"%s\" does not offer AUTH=%s", s->cfg->host,
			    mech);
		return FALSE;
	}
	Sasl sasl = {.mech = mech,
		     .initial = bearer ? sasl_oauthbearer(s) : sasl_xoauth2(s),
		     .error_reply = bearer ? "AQ==" : ""};
	return auth_sasl(s, &sasl, error);
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

	if (imapfs_config_uses_oauth(s->cfg))
		return auth_oauth(s, error);
	if (forced && g_ascii_strcasecmp(forced, "PLAIN") == 0)
		return auth_plain(s, error);
	/* auth=login names the SASL mechanism; a server without it still
	 * has the LOGIN command, which carries the same credentials. */
	if (forced && g_ascii_strcasecmp(forced, "LOGIN") == 0)
		return imapfs_session_has(s, IMAPFS_CAP_AUTH_LOGIN)
			       ? auth_sasl_login(s, error)
			       : auth_login(s, error);
	if (forced) { /* imapfs_config_finish() refuses the others */
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_UNSUPPORTED,
			    "authentication mechanism \"%s\" is not supported",
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
	g_autoptr(GString) line = g_string_new("ENABLE");

	if (!s->caps_seen && !refresh_capabilities(s, error))
		return FALSE;
	if (!imapfs_session_has(s, IMAPFS_CAP_ENABLE))
		return TRUE;
	if (imapfs_session_has(s, IMAPFS_CAP_UTF8_ACCEPT))
		g_string_append(line, " UTF8=ACCEPT");
	/* CONDSTORE makes EXAMINE report HIGHESTMODSEQ: flag changes can
	 * then be fetched alone (CHANGEDSINCE). */
	if (imapfs_session_has(s, IMAPFS_CAP_CONDSTORE))
		g_string_append(line, " CONDSTORE");
	if (strchr(line->str, ' ') == NULL)
		return TRUE;
	/* Without them names stay in modified UTF-7 and listings are
	 * refreshed in full: a refusal costs nothing, only a broken
	 * connection matters. */
	GError *local = NULL;
	if (run_simple(s, line->str, &local))
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
	enter_state(s, IMAPFS_SESSION_CONNECTING);
	ImapfsStream *stream = imapfs_stream_connect(s->cfg->host, s->cfg->port,
						     s->timeout_ms, error);
	if (stream == NULL) {
		set_broken(s);
		return FALSE;
	}
	g_atomic_pointer_set(&s->stream, stream);
	if (g_atomic_int_get(&s->aborted))
		imapfs_stream_abort(stream);
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
	if (s->password)
		OPENSSL_cleanse(s->password, strlen(s->password));
	g_free(s->password);
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
	g_free(e->special_use);
	g_free(e);
}

/* Appends @item to the list in @out, after @sep unless it is the first;
 * creates @out when NULL. Returns @out. */
static GString *add_to_list(GString *out, const char *sep, const char *item)
{
	if (out == NULL)
		out = g_string_new(NULL);
	else if (out->len)
		g_string_append(out, sep);
	g_string_append(out, item);
	return out;
}

/* The RFC 6154 attributes among @attrs, in the spelling RFC 6154 gives,
 * separated by spaces; NULL when there is none. */
static char *special_use(GPtrArray *attrs)
{
	static const char *const known[] = {
		"\\All",  "\\Archive", "\\Drafts", "\\Flagged",
		"\\Junk", "\\Sent",    "\\Trash"};
	GString *out = NULL;

	for (guint i = 0; attrs && i < attrs->len; i++)
		for (gsize k = 0; k < G_N_ELEMENTS(known); k++)
			if (imapfs_arg_is_atom(attrs->pdata[i], known[k]))
				out = add_to_list(out, " ", known[k]);
	return out ? g_string_free(out, FALSE) : NULL;
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
		else if (imapfs_arg_is_atom(a, "\\HasChildren"))
			flags |= IMAPFS_MBOX_HASCHILDREN;
		else if (imapfs_arg_is_atom(a, "\\Trash"))
			flags |= IMAPFS_MBOX_TRASH;
	}
	return flags;
}

typedef struct {
	GPtrArray *out;	     /* ImapfsListEntry * */
	GHashTable *by_name; /* name -> entry, for LIST-STATUS's STATUS */
} ListReply;

static gboolean parse_status_items(ImapfsSession *s, const ImapfsArg *list,
				   ImapfsMailboxStatus *st);

/* "* STATUS name (...)" after a LIST line (RFC 5819 section 2). */
static void on_list_status(ImapfsSession *s, GPtrArray *a, ListReply *r)
{
	const char *name = imapfs_arg_str(a->pdata[1]);
	ImapfsListEntry *e = NULL;

	if (name && g_ascii_strcasecmp(name, "INBOX") == 0)
		name = "INBOX";
	if (name)
		e = g_hash_table_lookup(r->by_name, name);
	if (e && parse_status_items(s, a->pdata[2], &e->status))
		e->has_status = TRUE;
}

/* "* LIST (attrs) delim name": anything else of that shape is skipped. */
static void on_list(ImapfsSession *s, ImapfsResponse *resp, gpointer ctx)
{
	ListReply *r = ctx;
	GPtrArray *a = resp->args;

	if (a->len == 3 && imapfs_arg_is_atom(a->pdata[0], "STATUS")) {
		on_list_status(s, a, r);
		return;
	}
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
	e->special_use = special_use(imapfs_arg_list(a->pdata[1]));
	g_ptr_array_add(r->out, e);
	g_hash_table_replace(r->by_name, e->name, e);
}

/* The STATUS items imapfs asks for. */
static const char *status_items(ImapfsSession *s)
{
	return imapfs_session_has(s, IMAPFS_CAP_CONDSTORE)
		       ? "MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ"
		       : "MESSAGES UIDNEXT UIDVALIDITY";
}

GPtrArray *imapfs_session_list(ImapfsSession *s, const char *reference,
			       const char *pattern, gboolean status,
			       GError **error)
{
	g_autoptr(GPtrArray) out =
		g_ptr_array_new_with_free_func(imapfs_list_entry_free);
	g_autoptr(GHashTable) by_name =
		g_hash_table_new(g_str_hash, g_str_equal);
	g_autoptr(GString) line = g_string_new("LIST ");
	ListReply r = {out, by_name};
	Command cmd = {"LIST", on_list, NULL, &r};
	GString *ret = NULL;

	if (!build_quoted(s, line, reference, error))
		return NULL;
	g_string_append_c(line, ' ');
	if (!build_quoted(s, line, pattern, error))
		return NULL;
	/* Some servers name special-use mailboxes only when asked to
	 * (RFC 6154 section 2). Once RETURN is given, child information
	 * comes only when asked too (RFC 5258 section 4: Dovecot drops
	 * \HasNoChildren without CHILDREN). */
	if (imapfs_session_has(s, IMAPFS_CAP_SPECIAL_USE) &&
	    imapfs_session_has(s, IMAPFS_CAP_LIST_EXTENDED))
		ret = add_to_list(ret, " ", "CHILDREN SPECIAL-USE");
	if (status && imapfs_session_has(s, IMAPFS_CAP_LIST_STATUS)) {
		ret = add_to_list(ret, " ", "STATUS (");
		g_string_append_printf(ret, "%s)", status_items(s));
	}
	if (ret) {
		g_string_append_printf(line, " RETURN (%s)", ret->str);
		g_string_free(ret, TRUE);
	}
	if (!run(s, line->str, NULL, &cmd, error))
		return NULL;
	return g_steal_pointer(&out);
}

/* --- EXAMINE
 * ------------------------------------------------------------------ */

/* EXAMINE or SELECT (@verb): a failed one leaves no mailbox selected
 * (RFC 3501 6.3.1), so the old one is given up before sending. */
static gboolean open_mailbox(ImapfsSession *s, const char *verb,
			     const char *mailbox, ImapfsMailboxState *state_r,
			     GError **error)
{
	g_autoptr(GString) line = g_string_new(verb);
	Command cmd = {.what = verb};

	g_string_append_c(line, ' ');
	if (!build_quoted(s, line, mailbox, error))
		return FALSE;
	memset(&s->mbox, 0, sizeof(s->mbox));
	enter_state(s, IMAPFS_SESSION_AUTHENTICATED);
	/* [READ-ONLY] in the reply takes it back. */
	s->writable = g_str_equal(verb, "SELECT");
	if (!run(s, line->str, NULL, &cmd, error)) {
		s->writable = FALSE;
		return FALSE;
	}
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

gboolean imapfs_session_examine(ImapfsSession *s, const char *mailbox,
				ImapfsMailboxState *state_r, GError **error)
{
	return open_mailbox(s, "EXAMINE", mailbox, state_r, error);
}

gboolean imapfs_session_select(ImapfsSession *s, const char *mailbox,
			       ImapfsMailboxState *state_r, GError **error)
{
	return open_mailbox(s, "SELECT", mailbox, state_r, error);
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

/* "MODSEQ (12345)" (RFC 7162 3.1.4); 0 when absent or malformed. */
static guint64 fetch_modseq(GPtrArray *items)
{
	GPtrArray *list = imapfs_arg_list(fetch_item(items, "MODSEQ"));
	guint64 v;

	if (list == NULL || list->len != 1 ||
	    !imapfs_arg_number(list->pdata[0], &v))
		return 0;
	return v;
}

static char *join_flags(const ImapfsArg *flags)
{
	GPtrArray *list = imapfs_arg_list(flags);
	g_autoptr(GString) out = g_string_new(NULL);

	for (guint i = 0; list && i < list->len; i++) {
		const char *f = imapfs_arg_str(list->pdata[i]);
		if (f)
			add_to_list(out, " ", f);
	}
	return g_string_free(g_steal_pointer(&out), FALSE);
}

/* More FETCH replies than this for one listing is a hostile server. */
#define MAX_INDEX_ENTRIES (16u * 1024 * 1024)

typedef struct {
	GArray *out;
	guint limit;
	guint32 first, last; /* the range asked for; last 0: no end */
	gboolean flags_only;
	gboolean overflow;
} IndexFetch;

static void on_index(ImapfsSession *s, ImapfsResponse *resp, gpointer ctx)
{
	IndexFetch *ix = ctx;
	GPtrArray *items = fetch_items(resp);
	ImapfsMessageInfo info = {0};
	guint64 size = 0;

	/* Replies without UID (and size) are flag updates or noise; "n:*"
	 * also returns the last message when every UID is below n. */
	if (items == NULL || !arg_u32(fetch_item(items, "UID"), &info.uid) ||
	    info.uid < MAX(ix->first, 1) || (ix->last && info.uid > ix->last) ||
	    (!ix->flags_only &&
	     !imapfs_arg_number(fetch_item(items, "RFC822.SIZE"), &size)))
		return;
	if (ix->out->len >= ix->limit) {
		ix->overflow = TRUE;
		return;
	}
	/* A date we cannot read must not hide the message: it shows as 0. */
	if (!ix->flags_only &&
	    !parse_internaldate(
		    imapfs_arg_str(fetch_item(items, "INTERNALDATE")),
		    &info.internaldate))
		info.internaldate = 0;
	info.size = size;
	info.flags = join_flags(fetch_item(items, "FLAGS"));
	info.modseq = fetch_modseq(items);
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

/* More results than a mailbox of @exists messages can hold, with room
 * for messages arriving meanwhile, is a hostile server. */
static guint result_limit(ImapfsSession *s)
{
	return MIN(MAX_INDEX_ENTRIES, s->mbox.exists * 2 + 1024);
}

static gboolean fail_overflow(ImapfsSession *s, GError **error)
{
	set_broken(s);
	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_PROTOCOL,
		    "\"%s\" sent more messages than the mailbox holds",
		    s->cfg->host);
	return FALSE;
}

/* With @modseq (CONDSTORE enabled) each message's MODSEQ comes too: a
 * conditional STORE needs it. */
static char *index_command(guint32 first, guint32 last, gboolean flags_only,
			   gboolean modseq, guint64 changedsince)
{
	GString *line = g_string_new(NULL);

	g_string_printf(line, "UID FETCH %u:", first);
	if (last)
		g_string_append_printf(line, "%u", last);
	else
		g_string_append_c(line, '*');
	g_string_append(line, flags_only ? " (UID FLAGS"
					 : " (UID RFC822.SIZE INTERNALDATE "
					   "FLAGS");
	g_string_append(line, modseq ? " MODSEQ)" : ")");
	if (changedsince)
		g_string_append_printf(line,
				       " (CHANGEDSINCE %" G_GUINT64_FORMAT ")",
				       changedsince);
	return g_string_free(line, FALSE);
}

GArray *imapfs_session_fetch_index_range(ImapfsSession *s, guint32 first,
					 guint32 last, gboolean flags_only,
					 guint64 changedsince, GError **error)
{
	g_autoptr(GArray) out =
		g_array_new(FALSE, TRUE, sizeof(ImapfsMessageInfo));
	IndexFetch ix = {out, result_limit(s), first, last, flags_only, FALSE};
	Command cmd = {"UID FETCH", on_index, NULL, &ix};
	g_autofree char *line = index_command(MAX(first, 1), last, flags_only,
					      s->condstore, changedsince);

	g_array_set_clear_func(out, imapfs_message_info_clear);
	/* "1:*" on an empty mailbox is an error on some servers. */
	if (s->mbox.exists > 0 && !run(s, line, NULL, &cmd, error))
		return NULL;
	if (ix.overflow) {
		fail_overflow(s, error);
		return NULL;
	}
	sort_unique(out);
	return g_steal_pointer(&out);
}

/* --- ENVELOPE and BODYSTRUCTURE ------------------------------------------ */

void imapfs_message_meta_free(gpointer p)
{
	ImapfsMessageMeta *m = p;

	if (m == NULL)
		return;
	g_free(m->envelope.date);
	g_free(m->envelope.subject);
	g_free(m->envelope.message_id);
	g_free(m->envelope.from);
	g_free(m->envelope.to);
	g_free(m->envelope.cc);
	imapfs_part_free(m->structure);
	g_free(m->emailid);
	g_free(m);
}

/* A string field of ENVELOPE: NULL for NIL or anything else odd. */
static char *env_string(const ImapfsArg *arg)
{
	const char *s = arg ? imapfs_arg_str(arg) : NULL;

	return s && *s ? g_strdup(s) : NULL;
}

/* One address (name adl mailbox host) as "name <mailbox@host>"; group
 * markers (host NIL, RFC 3501 7.4.2) give NULL. */
static char *env_address(const ImapfsArg *arg)
{
	GPtrArray *a = imapfs_arg_list(arg);

	if (a == NULL || a->len < 4)
		return NULL;
	const char *name = imapfs_arg_str(a->pdata[0]);
	const char *box = imapfs_arg_str(a->pdata[2]);
	const char *host = imapfs_arg_str(a->pdata[3]);
	if (box == NULL || host == NULL)
		return NULL;
	if (name && *name)
		return g_strdup_printf("%s <%s@%s>", name, box, host);
	return g_strdup_printf("%s@%s", box, host);
}

/* An address list as "a, b"; NULL when it holds none. */
static char *env_addresses(const ImapfsArg *arg)
{
	GPtrArray *list = arg ? imapfs_arg_list(arg) : NULL;
	g_autoptr(GString) out = g_string_new(NULL);

	for (guint i = 0; list && i < list->len; i++) {
		g_autofree char *one = env_address(list->pdata[i]);
		if (one)
			add_to_list(out, ", ", one);
	}
	return out->len ? g_string_free(g_steal_pointer(&out), FALSE) : NULL;
}

/* ENVELOPE: (date subject from sender reply-to to cc bcc in-reply-to
 * message-id); a short or odd one leaves the fields it lacks NULL. */
static void parse_envelope(const ImapfsArg *arg, ImapfsEnvelope *env)
{
	GPtrArray *e = arg ? imapfs_arg_list(arg) : NULL;
	guint n = e ? e->len : 0;

	env->date = n > 0 ? env_string(e->pdata[0]) : NULL;
	env->subject = n > 1 ? env_string(e->pdata[1]) : NULL;
	env->from = n > 2 ? env_addresses(e->pdata[2]) : NULL;
	env->to = n > 5 ? env_addresses(e->pdata[5]) : NULL;
	env->cc = n > 6 ? env_addresses(e->pdata[6]) : NULL;
	env->message_id = n > 9 ? env_string(e->pdata[9]) : NULL;
}

/* "EMAILID (M6d99ac3275bb4e)" (RFC 8474 5.1): an objectid is 1 to 255
 * characters from [A-Za-z0-9_-]; anything else is ignored. */
static char *emailid(const ImapfsArg *arg)
{
	GPtrArray *list = arg ? imapfs_arg_list(arg) : NULL;
	const char *id =
		list && list->len == 1 ? imapfs_arg_str(list->pdata[0]) : NULL;
	gsize len = id ? strlen(id) : 0;

	if (len == 0 || len > 255)
		return NULL;
	for (const char *p = id; *p; p++)
		if (!g_ascii_isalnum(*p) && *p != '_' && *p != '-')
			return NULL;
	return g_strdup(id);
}

typedef struct {
	GPtrArray *out;
	GHashTable *seen; /* UIDs in out */
	guint32 first, last;
	guint limit;
	gboolean overflow;
} MetaFetch;

static void on_meta(ImapfsSession *s, ImapfsResponse *resp, gpointer ctx)
{
	MetaFetch *mf = ctx;
	GPtrArray *items = fetch_items(resp);
	guint32 uid;

	if (items == NULL || !arg_u32(fetch_item(items, "UID"), &uid) ||
	    (fetch_item(items, "ENVELOPE") == NULL &&
	     fetch_item(items, "BODYSTRUCTURE") == NULL))
		return;
	/* "n:*" also returns the last message when all UIDs are below n;
	 * a repeat keeps the first reply. Neither is parsed. */
	if (uid < mf->first || (mf->last && uid > mf->last) ||
	    g_hash_table_contains(mf->seen, GUINT_TO_POINTER(uid)))
		return;
	if (mf->out->len >= mf->limit) {
		mf->overflow = TRUE;
		return;
	}
	g_hash_table_add(mf->seen, GUINT_TO_POINTER(uid));
	ImapfsMessageMeta *m = g_new0(ImapfsMessageMeta, 1);
	m->uid = uid;
	parse_envelope(fetch_item(items, "ENVELOPE"), &m->envelope);
	const ImapfsArg *bs = fetch_item(items, "BODYSTRUCTURE");
	/* A structure the server got wrong costs that message its parts
	 * directory, nothing else. */
	m->structure = bs ? imapfs_bodystructure_parse(bs, NULL) : NULL;
	m->emailid = emailid(fetch_item(items, "EMAILID"));
	g_ptr_array_add(mf->out, m);
}

static gint cmp_meta(gconstpointer a, gconstpointer b)
{
	guint32 x = (*(ImapfsMessageMeta *const *)a)->uid;
	guint32 y = (*(ImapfsMessageMeta *const *)b)->uid;

	return x < y ? -1 : x > y;
}

GPtrArray *imapfs_session_fetch_meta(ImapfsSession *s, guint32 first,
				     guint32 last, GError **error)
{
	g_autoptr(GPtrArray) out =
		g_ptr_array_new_with_free_func(imapfs_message_meta_free);
	g_autoptr(GHashTable) seen = g_hash_table_new(NULL, NULL);
	MetaFetch mf = {out, seen, first, last, result_limit(s), FALSE};
	Command cmd = {"UID FETCH", on_meta, NULL, &mf};

	g_autofree char *line = g_strdup_printf(
		"UID FETCH %u:* (UID ENVELOPE BODYSTRUCTURE%s)", MAX(first, 1),
		imapfs_session_has(s, IMAPFS_CAP_OBJECTID) ? " EMAILID" : "");

	if (s->mbox.exists > 0 && !run(s, line, NULL, &cmd, error))
		return NULL;
	if (mf.overflow) {
		fail_overflow(s, error);
		return NULL;
	}
	g_ptr_array_sort(out, cmp_meta);
	return g_steal_pointer(&out);
}

GArray *imapfs_session_fetch_index(ImapfsSession *s, GError **error)
{
	return imapfs_session_fetch_index_range(s, 1, 0, FALSE, 0, error);
}

typedef struct {
	GArray *uids;
	guint limit;
	gboolean bad; /* malformed set or too many UIDs */
} SearchResult;

/* Adds the UIDs of sequence set @set ("1:5,7") to @r. */
static void add_sequence_set(SearchResult *r, const char *set)
{
	g_auto(GStrv) parts = g_strsplit(set, ",", -1);

	for (guint i = 0; parts[i] && !r->bad; i++) {
		char *end = NULL;
		guint64 a = g_ascii_strtoull(parts[i], &end, 10), b = a;
		if (*end == ':')
			b = g_ascii_strtoull(end + 1, &end, 10);
		if (*end != '\0' || a == 0 || b == 0 || a > G_MAXUINT32 ||
		    b > G_MAXUINT32 || MAX(a, b) - MIN(a, b) >= r->limit ||
		    r->uids->len + (MAX(a, b) - MIN(a, b)) >= r->limit) {
			r->bad = TRUE;
			break;
		}
		for (guint64 u = MIN(a, b); u <= MAX(a, b); u++) {
			guint32 v = (guint32)u;
			g_array_append_val(r->uids, v);
		}
	}
}

/* "* ESEARCH (TAG "A5") UID ALL 1:5,7" */
static void on_esearch(ImapfsSession *s, ImapfsResponse *resp, gpointer ctx)
{
	SearchResult *r = ctx;
	GPtrArray *a = resp->args;

	if (a->len < 1 || !imapfs_arg_is_atom(a->pdata[0], "ESEARCH"))
		return;
	for (guint i = 1; i + 1 < a->len; i++) {
		if (!imapfs_arg_is_atom(a->pdata[i], "ALL"))
			continue;
		const char *set = imapfs_arg_str(a->pdata[i + 1]);
		if (set == NULL)
			r->bad = TRUE;
		else
			add_sequence_set(r, set);
		return;
	}
}

static gint cmp_u32_sort(gconstpointer a, gconstpointer b)
{
	guint32 x = *(const guint32 *)a, y = *(const guint32 *)b;

	return x < y ? -1 : x > y;
}

/* Sorts the UIDs and drops repeats; a malformed or oversized answer
 * breaks the session, as for any listing. */
static gboolean finish_search(ImapfsSession *s, SearchResult *r, GError **error)
{
	GArray *uids = r->uids;
	guint keep = 0;

	if (r->bad)
		return fail_overflow(s, error);
	g_array_sort(uids, cmp_u32_sort);
	for (guint i = 0; i < uids->len; i++) {
		guint32 uid = g_array_index(uids, guint32, i);
		if (keep == 0 || g_array_index(uids, guint32, keep - 1) != uid)
			g_array_index(uids, guint32, keep++) = uid;
	}
	g_array_set_size(uids, keep);
	return TRUE;
}

GArray *imapfs_session_search_uids(ImapfsSession *s, guint32 last,
				   GError **error)
{
	g_autoptr(GArray) uids = g_array_new(FALSE, FALSE, sizeof(guint32));
	SearchResult r = {uids, result_limit(s), FALSE};
	Command cmd = {"UID SEARCH", on_esearch, NULL, &r};
	g_autofree char *line = g_strdup_printf(
		"UID SEARCH RETURN (ALL) UID 1:%u", MAX(last, 1));

	if (!check_cap(s, IMAPFS_CAP_ESEARCH, "ESEARCH", error) ||
	    !run(s, line, NULL, &cmd, error) || !finish_search(s, &r, error))
		return NULL;
	return g_steal_pointer(&uids);
}

/* The origin of "BODY[]<123>", "BODY[1.2]<0>" or "BINARY[2]" (0 when
 * there is none). FALSE if @key is no body or part content. */
static gboolean body_key_origin(const char *key, guint64 *origin_r)
{
	const char *p;

	if (key == NULL)
		return FALSE;
	if (g_ascii_strncasecmp(key, "BODY[", 5) == 0)
		p = key + 5;
	else if (g_ascii_strncasecmp(key, "BINARY[", 7) == 0)
		p = key + 7;
	else
		return FALSE;
	while (g_ascii_isdigit(*p) || *p == '.')
		p++;
	if (*p++ != ']')
		return FALSE;
	*origin_r = 0;
	if (*p == '\0')
		return TRUE;
	if (*p != '<')
		return FALSE;
	char *end = NULL;
	guint64 v = g_ascii_strtoull(p + 1, &end, 10);
	if (end == p + 1 || g_strcmp0(end, ">") != 0)
		return FALSE;
	*origin_r = v;
	return TRUE;
}

/*
 * Body windows being received for imapfs_session_fetch_bodies(). Only one
 * literal is in flight at a time; its bytes collect in @pending. When the
 * FETCH's UID came before the literal (the usual order, since we ask for
 * UID first), only that window's bytes are kept; otherwise the bytes up to
 * the farthest window end, cut when the response is complete.
 */
typedef struct {
	GHashTable *by_uid;    /* uid -> ImapfsBodyWindow * (borrowed) */
	guint64 max_end;       /* farthest offset + len of all windows */
	ImapfsBodyWindow *cur; /* window of the literal in flight, or NULL */
	GByteArray *pending;
	guint64 pending_origin; /* message offset of pending->data[0] */
	guint64 lit_pos;	/* message offset of the next literal byte */
	ImapfsBodyDoneFunc done;
	gpointer done_data;
} BodyBatch;

/* The UID of a FETCH response, even one still being parsed. */
static gboolean fetch_uid(const ImapfsResponse *resp, guint32 *uid_r)
{
	GPtrArray *a = resp->args;

	if (a->len < 3 || !imapfs_arg_is_atom(a->pdata[1], "FETCH"))
		return FALSE;
	GPtrArray *items = imapfs_arg_list(a->pdata[2]);
	return items && arg_u32(fetch_item(items, "UID"), uid_r);
}

static void body_start(BodyBatch *bb, ImapfsBodyWindow *w, guint64 origin)
{
	bb->cur = w;
	g_byte_array_set_size(bb->pending, 0);
	bb->lit_pos = origin;
	bb->pending_origin = w ? MAX(origin, w->offset) : origin;
}

static ImapfsLiteralAction body_begin(gpointer user_data,
				      const ImapfsResponse *resp,
				      const char *key, guint64 size,
				      const char **error_r)
{
	BodyBatch *bb = user_data;
	guint64 origin;
	guint32 uid;

	if (!body_key_origin(key, &origin))
		return size <= imapfs_parser_default_limits.max_inline_literal
			       ? IMAPFS_LITERAL_INLINE
			       : IMAPFS_LITERAL_REJECT;
	ImapfsBodyWindow *w = NULL;
	if (fetch_uid(resp, &uid))
		w = g_hash_table_lookup(bb->by_uid, GUINT_TO_POINTER(uid));
	body_start(bb, w, origin);
	return IMAPFS_LITERAL_STREAM;
}

/* Keeps only bytes inside the wanted window (or, while the UID is not
 * known, before the farthest window end), so memory stays bounded by the
 * request even when a server sends more than asked. */
static gboolean body_data(gpointer user_data, const guint8 *data, gsize len,
			  const char **error_r)
{
	BodyBatch *bb = user_data;
	guint64 start = bb->lit_pos, end = bb->lit_pos + len;
	guint64 want = bb->cur ? bb->cur->offset : 0;
	guint64 want_end =
		bb->cur ? bb->cur->offset + bb->cur->len : bb->max_end;

	bb->lit_pos = end;
	if (end <= want || start >= want_end)
		return TRUE;
	guint64 from = MAX(start, want), to = MIN(end, want_end);
	g_byte_array_append(bb->pending, data + (from - start), to - from);
	return TRUE;
}

/* Moves the part of @pending inside @w's window to @w->out. */
static void body_finish(BodyBatch *bb, ImapfsBodyWindow *w)
{
	guint64 have = bb->pending_origin, have_end = have + bb->pending->len;
	guint64 from = MAX(have, w->offset);
	guint64 to = MIN(have_end, w->offset + w->len);

	w->found = TRUE;
	if (from < to)
		g_byte_array_append(w->out, bb->pending->data + (from - have),
				    to - from);
}

/* What @by_uid (uid -> request) holds for the UID of FETCH response
 * @resp, with its items in *@items_r; NULL for anything else. */
static gpointer fetch_asked(ImapfsResponse *resp, GHashTable *by_uid,
			    GPtrArray **items_r)
{
	guint32 uid;

	*items_r = fetch_items(resp);
	if (*items_r == NULL || !fetch_uid(resp, &uid))
		return NULL;
	return g_hash_table_lookup(by_uid, GUINT_TO_POINTER(uid));
}

static void on_bodies(ImapfsSession *s, ImapfsResponse *resp, gpointer ctx)
{
	BodyBatch *bb = ctx;
	GPtrArray *items;
	ImapfsBodyWindow *w = fetch_asked(resp, bb->by_uid, &items);

	/* Unasked UIDs and repeated replies are ignored. */
	if (w == NULL || w->found)
		return;
	for (guint i = 0; i + 1 < items->len; i += 2) {
		guint64 origin;
		const ImapfsArg *k = items->pdata[i], *v = items->pdata[i + 1];
		if (k->type != IMAPFS_ARG_ATOM ||
		    !body_key_origin(k->data, &origin))
			continue;
		/* NIL or "" (past the end) leave the window empty; a small
		 * inline string is taken like a streamed literal. */
		if (v->type != IMAPFS_ARG_LITERAL) {
			body_start(bb, w, origin);
			if (v->type == IMAPFS_ARG_STRING)
				body_data(bb, (const guint8 *)v->data, v->len,
					  NULL);
		}
		body_finish(bb, w);
		if (bb->done)
			bb->done(w, bb->done_data);
		return;
	}
}

/* "3,5:9,12": @uids sorted ascending. */
static void append_uid_set(GString *out, const guint32 *uids, guint n)
{
	for (guint i = 0; i < n;) {
		guint j = i;
		while (j + 1 < n && uids[j + 1] == uids[j] + 1)
			j++;
		if (i > 0)
			g_string_append_c(out, ',');
		if (j == i)
			g_string_append_printf(out, "%u", uids[i]);
		else
			g_string_append_printf(out, "%u:%u", uids[i], uids[j]);
		i = j + 1;
	}
}

/* Most UIDs named in one command, to keep lines short (RFC 7162 3.2.2
 * asks clients to stay under 8192 octets). */
#define UIDS_PER_COMMAND 256

/* Appends the commands for windows @w[0..@n) sharing one range to @out. */
static guint add_body_commands(ImapfsSession *s, GString *out, Tag *tags,
			       const ImapfsBodyWindow *w, guint n)
{
	g_autofree guint32 *uids = g_new(guint32, n);
	guint cmds = 0;

	for (guint i = 0; i < n; i++)
		uids[i] = w[i].uid;
	qsort(uids, n, sizeof(*uids), cmp_u32_sort);
	for (guint i = 0; i < n; i += UIDS_PER_COMMAND) {
		g_autoptr(GString) line = g_string_new("UID FETCH ");
		append_uid_set(line, uids + i, MIN(UIDS_PER_COMMAND, n - i));
		g_string_append_printf(line, " (UID %s.PEEK[%s]",
				       w[0].binary ? "BINARY" : "BODY",
				       w[0].section ? w[0].section : "");
		if (w[0].len != IMAPFS_BODY_ALL)
			g_string_append_printf(line,
					       "<%" G_GUINT64_FORMAT
					       ".%" G_GSIZE_FORMAT ">",
					       w[0].offset, w[0].len);
		g_string_append_c(line, ')');
		add_command(s, out, &tags[cmds++], line->str);
	}
	return cmds;
}

/* Whether windows @a and @b can share one command. */
static gboolean same_range(const ImapfsBodyWindow *a, const ImapfsBodyWindow *b)
{
	return a->offset == b->offset && a->len == b->len &&
	       a->binary == b->binary && g_strcmp0(a->section, b->section) == 0;
}

/* Builds the pipelined commands: one per run of windows with the same
 * range (a run is split every UIDS_PER_COMMAND UIDs). */
static GString *build_body_commands(ImapfsSession *s, ImapfsBodyWindow *w,
				    guint n, Tag **tags_r, guint *cmds_r)
{
	GString *out = g_string_new(NULL);
	Tag *tags = g_new0(Tag, n);
	guint cmds = 0;

	for (guint i = 0; i < n;) {
		guint j = i + 1;
		while (j < n && same_range(&w[i], &w[j]))
			j++;
		cmds += add_body_commands(s, out, tags + cmds, w + i, j - i);
		i = j;
	}
	*tags_r = tags;
	*cmds_r = cmds;
	return out;
}

static gboolean check_windows(ImapfsSession *s, ImapfsBodyWindow *w, guint n,
			      BodyBatch *bb, GError **error)
{
	for (guint i = 0; i < n; i++) {
		gpointer key = GUINT_TO_POINTER(w[i].uid);
		if (w[i].uid == 0 || w[i].len == 0 ||
		    (w[i].len == IMAPFS_BODY_ALL && w[i].offset != 0) ||
		    g_hash_table_contains(bb->by_uid, key)) {
			g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_FAILED,
				    "bad body window for UID %u", w[i].uid);
			return FALSE;
		}
		g_hash_table_insert(bb->by_uid, key, &w[i]);
		bb->max_end =
			MAX(bb->max_end, w[i].len == IMAPFS_BODY_ALL
						 ? G_MAXUINT64
						 : w[i].offset + w[i].len);
		w[i].found = FALSE;
	}
	return check_connected(s, error);
}

gboolean imapfs_session_fetch_bodies(ImapfsSession *s, ImapfsBodyWindow *w,
				     guint n, ImapfsBodyDoneFunc done,
				     gpointer done_data, GError **error)
{
	static const ImapfsLiteralSink sink = {body_begin, body_data};
	g_autoptr(GHashTable) by_uid = g_hash_table_new(NULL, NULL);
	g_autoptr(GByteArray) pending = g_byte_array_new();
	BodyBatch bb = {by_uid, 0, NULL, pending, 0, 0, done, done_data};
	Command cmd = {"UID FETCH", on_bodies, NULL, &bb};
	g_autofree Tag *tags = NULL;
	guint cmds;

	if (!check_windows(s, w, n, &bb, error))
		return FALSE;
	g_autoptr(GString) lines = build_body_commands(s, w, n, &tags, &cmds);
	imapfs_parser_set_literal_sink(s->parser, &sink, &bb);
	gboolean ok = send_raw(s, lines->str, lines->len, error) &&
		      wait_tags(s, tags, cmds, &cmd, error);
	imapfs_parser_set_literal_sink(s->parser, NULL, NULL);
	return ok;
}

gboolean imapfs_session_fetch_body(ImapfsSession *s, guint32 uid,
				   guint64 offset, gsize len, GByteArray *out,
				   GError **error)
{
	ImapfsBodyWindow w = {uid, offset, len, out, FALSE};

	if (!imapfs_session_fetch_bodies(s, &w, 1, NULL, NULL, error))
		return FALSE;
	if (!w.found) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_NONEXISTENT,
			    "message UID %u is no longer in \"%s\"", uid,
			    s->selected ? s->selected : "?");
		return FALSE;
	}
	return TRUE;
}

/* Fills the sizes of the request for the FETCH's UID; found once every
 * section has one. */
static void on_binary_sizes(ImapfsSession *s, ImapfsResponse *resp,
			    gpointer ctx)
{
	GPtrArray *items;
	ImapfsBinarySizes *r = fetch_asked(resp, ctx, &items);

	if (r == NULL)
		return;
	gboolean all = TRUE;
	for (guint i = 0; r->sections[i]; i++) {
		g_autofree char *key =
			g_strdup_printf("BINARY.SIZE[%s]", r->sections[i]);
		const ImapfsArg *v = fetch_item(items, key);
		if (v == NULL || !imapfs_arg_number(v, &r->sizes[i]))
			all = FALSE;
	}
	r->found = all;
}

gboolean imapfs_session_binary_sizes(ImapfsSession *s, ImapfsBinarySizes *req,
				     guint n, GError **error)
{
	g_autoptr(GHashTable) by_uid = g_hash_table_new(NULL, NULL);
	g_autoptr(GString) lines = g_string_new(NULL);
	g_autofree Tag *tags = g_new0(Tag, MAX(n, 1));
	Command cmd = {"UID FETCH", on_binary_sizes, NULL, by_uid};
	guint cmds = 0;
	GError *local = NULL;

	if (!check_cap(s, IMAPFS_CAP_BINARY, "BINARY", error) ||
	    !check_connected(s, error))
		return FALSE;
	for (guint i = 0; i < n; i++) {
		req[i].found = FALSE;
		if (req[i].uid == 0 || req[i].sections[0] == NULL ||
		    g_hash_table_contains(by_uid, GUINT_TO_POINTER(req[i].uid)))
			continue;
		g_hash_table_insert(by_uid, GUINT_TO_POINTER(req[i].uid),
				    &req[i]);
		g_autoptr(GString) line = g_string_new(NULL);
		g_string_printf(line, "UID FETCH %u (UID", req[i].uid);
		for (guint k = 0; req[i].sections[k]; k++)
			g_string_append_printf(line, " BINARY.SIZE[%s]",
					       req[i].sections[k]);
		g_string_append_c(line, ')');
		add_command(s, lines, &tags[cmds++], line->str);
	}
	if (cmds == 0)
		return TRUE;
	if (!send_raw(s, lines->str, lines->len, error))
		return FALSE;
	if (wait_tags(s, tags, cmds, &cmd, &local))
		return TRUE;
	/* A refused message only misses its sizes; a failed read leaves the
	 * session broken. */
	if (check_connected(s, NULL)) {
		g_error_free(local);
		return TRUE;
	}
	g_propagate_error(error, local);
	return FALSE;
}

/* --- changes -------------------------------------------------------------- */

/* Message bytes read and sent at a time by APPEND. */
#define APPEND_CHUNK (64 * 1024)
/* The largest non-synchronizing literal LITERAL- allows (RFC 7888). */
#define LITERAL_MINUS_MAX 4096

/* run() with @w taking the response codes meant for this command. */
static gboolean run_watched(ImapfsSession *s, const char *line,
			    const Command *cmd, CodeWatch *w, GError **error)
{
	s->watch = w;
	gboolean ok = run(s, line, NULL, cmd, error);
	s->watch = NULL;
	return ok;
}

/* Changes to messages need a SELECTed mailbox; on an EXAMINEd one the
 * server would refuse them anyway, after a round trip. */
static gboolean check_writable(ImapfsSession *s, GError **error)
{
	if (imapfs_session_writable(s))
		return TRUE;
	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_READONLY,
		    "no mailbox of \"%s\" is selected read-write",
		    s->cfg->host);
	return FALSE;
}

gboolean imapfs_flag_is_valid(const char *flag)
{
	const char *p = flag[0] == '\\' ? flag + 1 : flag;

	if (*p == '\0')
		return FALSE;
	for (; *p; p++)
		if ((guchar)*p <= 0x20 || (guchar)*p >= 0x7f ||
		    strchr("(){%*\"\\]", *p))
			return FALSE;
	return TRUE;
}

/* Appends @flags (separated by spaces, may be NULL) to @out, separated
 * by one space, without \Recent: only the server sets that one. Returns
 * how many were appended, -1 (with @error) on one that is no flag. */
static int append_flags(GString *out, const char *flags, GError **error)
{
	g_auto(GStrv) words = g_strsplit(flags ? flags : "", " ", -1);
	int n = 0;

	for (guint i = 0; words[i]; i++) {
		if (*words[i] == '\0' ||
		    g_ascii_strcasecmp(words[i], "\\Recent") == 0)
			continue;
		if (!imapfs_flag_is_valid(words[i])) {
			g_autofree char *q = imapfs_log_quote(words[i]);
			g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
				    "not an IMAP flag: \"%s\"", q);
			return -1;
		}
		if (n++ > 0)
			g_string_append_c(out, ' ');
		g_string_append(out, words[i]);
	}
	return n;
}

/* " \"05-Jan-2024 13:04:05 +0000\"" (RFC 3501 date-time) for @t in
 * UTC. Month names are English whatever the locale: no strftime. */
static gboolean append_date_time(GString *out, gint64 t, GError **error)
{
	static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr",
					   "May", "Jun", "Jul", "Aug",
					   "Sep", "Oct", "Nov", "Dec"};
	g_autoptr(GDateTime) dt = g_date_time_new_from_unix_utc(t);

	if (dt == NULL) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_FAILED,
			    "date %" G_GINT64_FORMAT " cannot be sent", t);
		return FALSE;
	}
	g_string_append_printf(
		out, " \"%02d-%s-%04d %02d:%02d:%02d +0000\"",
		g_date_time_get_day_of_month(dt),
		months[g_date_time_get_month(dt) - 1], g_date_time_get_year(dt),
		g_date_time_get_hour(dt), g_date_time_get_minute(dt),
		g_date_time_get_second(dt));
	return TRUE;
}

/* Copies @n bytes of @in to @out (NULL: only counts), every LF not
 * preceded by CR made CRLF; *@prev_cr carries whether the byte before
 * @in was CR, so a CRLF split between two chunks stays as it is.
 * Returns the bytes written; @out needs room for 2 * @n. */
static gsize crlf_convert(const guint8 *in, gsize n, gboolean *prev_cr,
			  guint8 *out)
{
	gsize o = 0;

	for (gsize i = 0; i < n; i++) {
		if (in[i] == '\n' && !*prev_cr) {
			if (out)
				out[o] = '\r';
			o++;
		}
		if (out)
			out[o] = in[i];
		o++;
		*prev_cr = in[i] == '\r';
	}
	return o;
}

/* Reads exactly @len bytes at @offset: the file must still hold the
 * size the literal announces. */
static gboolean pread_all(int fd, guint8 *buf, gsize len, guint64 offset,
			  GError **error)
{
	gsize done = 0;

	while (done < len) {
		gssize n = pread(fd, buf + done, len - done, offset + done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;
			g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_FAILED,
				    "cannot read the message to append: %s",
				    g_strerror(e));
			return FALSE;
		}
		if (n == 0) {
			g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_FAILED,
				    "the message to append ended before byte "
				    "%" G_GUINT64_FORMAT,
				    offset + len);
			return FALSE;
		}
		done += n;
	}
	return TRUE;
}

gboolean imapfs_session_crlf_size(int fd, guint64 size, guint64 *out_r,
				  GError **error)
{
	g_autofree guint8 *buf = g_malloc(APPEND_CHUNK);
	gboolean prev_cr = FALSE;
	guint64 off = 0, total = 0;

	while (off < size) {
		gsize n = MIN(APPEND_CHUNK, size - off);
		if (!pread_all(fd, buf, n, off, error))
			return FALSE;
		total += crlf_convert(buf, n, &prev_cr, NULL);
		off += n;
	}
	*out_r = total;
	return TRUE;
}

typedef struct {
	int fd;
	guint64 size; /* bytes of the file */
	guint64 wire; /* bytes of the literal */
	gboolean sent;
} AppendBody;

/* The literal was announced with a size the file no longer gives. */
static gboolean fail_changed(ImapfsSession *s, GError **error)
{
	set_broken(s);
	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_FAILED,
		    "the message changed while it was sent to \"%s\"",
		    s->cfg->host);
	return FALSE;
}

/* Sends the literal and the CRLF that ends the command line. Once it
 * has begun, any failure leaves the server waiting for the rest of the
 * literal: the session cannot be used again. */
static gboolean send_body(ImapfsSession *s, AppendBody *b, GError **error)
{
	g_autofree guint8 *in = g_malloc(APPEND_CHUNK);
	g_autofree guint8 *out = g_malloc(2 * APPEND_CHUNK);
	gboolean prev_cr = FALSE;
	guint64 off = 0, sent = 0;

	b->sent = TRUE;
	imapfs_trace(IMAPFS_TRACE_NET, "C: <%" G_GUINT64_FORMAT " bytes>",
		     b->wire);
	while (off < b->size) {
		gsize n = MIN(APPEND_CHUNK, b->size - off);
		if (!pread_all(b->fd, in, n, off, error)) {
			set_broken(s);
			return FALSE;
		}
		gsize len = crlf_convert(in, n, &prev_cr, out);
		if (sent + len > b->wire)
			return fail_changed(s, error);
		if (!send_raw(s, (const char *)out, len, error))
			return FALSE;
		sent += len;
		off += n;
	}
	if (sent != b->wire)
		return fail_changed(s, error);
	return send_raw(s, "\r\n", 2, error);
}

/* The server's "+" for a synchronizing literal. */
static gboolean append_continue(ImapfsSession *s, ImapfsResponse *resp,
				gpointer ctx, GError **error)
{
	AppendBody *b = ctx;

	if (b->sent)
		return fail_continuation(s, error);
	return send_body(s, b, error);
}

/* Sends @line (ending in the literal's "{n}" or "{n+}") and the body:
 * right away for a non-synchronizing literal, else once the server
 * says "+". A tagged NO instead of "+" ends the command with nothing
 * sent; with "{n+}" the server can still say NO after the body. */
static gboolean append_run(ImapfsSession *s, const char *line, AppendBody *b,
			   gboolean nonsync, GError **error)
{
	Command cmd = {"APPEND", NULL, nonsync ? NULL : append_continue, b};
	g_autoptr(GString) out = g_string_new(NULL);
	Tag tag;

	if (!check_connected(s, error))
		return FALSE;
	add_command(s, out, &tag, line);
	if (!send_raw(s, out->str, out->len, error))
		return FALSE;
	if (nonsync && !send_body(s, b, error))
		return FALSE;
	return wait_tags(s, &tag, 1, &cmd, error);
}

static gboolean check_append_limit(ImapfsSession *s, guint64 wire,
				   GError **error)
{
	if (s->append_limit == 0 || wire <= s->append_limit)
		return TRUE;
	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_TOOBIG,
		    "the message (%" G_GUINT64_FORMAT " bytes) is above the "
		    "limit of \"%s\" (%" G_GUINT64_FORMAT " bytes)",
		    wire, s->cfg->host, s->append_limit);
	return FALSE;
}

/* Whether a literal of @wire bytes may go without waiting for "+". */
static gboolean literal_nonsync(ImapfsSession *s, guint64 wire)
{
	return imapfs_session_has(s, IMAPFS_CAP_LITERAL_PLUS) ||
	       (imapfs_session_has(s, IMAPFS_CAP_LITERAL_MINUS) &&
		wire <= LITERAL_MINUS_MAX);
}

/* "APPEND "box" (flags) "date" {n}", the flags and date optional. */
static char *append_line(ImapfsSession *s, const char *mailbox,
			 const char *flags, gint64 internaldate, guint64 wire,
			 gboolean nonsync, GError **error)
{
	g_autoptr(GString) line = g_string_new("APPEND ");
	g_autoptr(GString) list = g_string_new(NULL);
	int n = append_flags(list, flags, error);

	if (n < 0 || !build_quoted(s, line, mailbox, error))
		return NULL;
	if (n > 0)
		g_string_append_printf(line, " (%s)", list->str);
	if (internaldate >= 0 && !append_date_time(line, internaldate, error))
		return NULL;
	g_string_append_printf(line, " {%" G_GUINT64_FORMAT "%s}", wire,
			       nonsync ? "+" : "");
	return g_string_free(g_steal_pointer(&line), FALSE);
}

gboolean imapfs_session_append(ImapfsSession *s, const char *mailbox, int fd,
			       guint64 size, const char *flags,
			       gint64 internaldate, ImapfsNewUid *new_r,
			       GError **error)
{
	AppendBody body = {fd, size, 0, FALSE};
	CodeWatch w = {0};

	if (new_r)
		memset(new_r, 0, sizeof(*new_r));
	if (!check_connected(s, error) ||
	    !imapfs_session_crlf_size(fd, size, &body.wire, error) ||
	    !check_append_limit(s, body.wire, error))
		return FALSE;
	gboolean nonsync = literal_nonsync(s, body.wire);
	g_autofree char *line = append_line(s, mailbox, flags, internaldate,
					    body.wire, nonsync, error);
	if (line == NULL)
		return FALSE;
	s->watch = &w;
	gboolean ok = append_run(s, line, &body, nonsync, error);
	s->watch = NULL;
	if (ok && new_r)
		*new_r = w.new_uid;
	return ok;
}

/* The MODSEQ a STORE gave the message: with CONDSTORE enabled it comes
 * in a FETCH even after .SILENT (RFC 7162 3.1.3). FETCHes for other
 * messages are other clients' changes, left to the next refresh. */
typedef struct {
	guint32 uid;
	guint64 modseq;
} StoreReply;

static void on_store(ImapfsSession *s, ImapfsResponse *resp, gpointer ctx)
{
	StoreReply *r = ctx;
	GPtrArray *items = fetch_items(resp);
	guint32 uid;

	if (items && arg_u32(fetch_item(items, "UID"), &uid) && uid == r->uid &&
	    fetch_modseq(items) != 0)
		r->modseq = fetch_modseq(items);
}

/* UNCHANGEDSINCE would enable CONDSTORE on its own (RFC 7162 3.1);
 * the mod-sequences it compares with come from an enabled one. */
static gboolean check_condstore(ImapfsSession *s, GError **error)
{
	if (s->condstore)
		return TRUE;
	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_UNSUPPORTED,
		    "CONDSTORE is not enabled on \"%s\"", s->cfg->host);
	return FALSE;
}

static char *store_line(guint32 uid, const char *flags, guint64 unchangedsince,
			GError **error)
{
	g_autoptr(GString) line = g_string_new(NULL);

	g_string_printf(line, "UID STORE %u ", uid);
	if (unchangedsince > 0)
		g_string_append_printf(
			line, "(UNCHANGEDSINCE %" G_GUINT64_FORMAT ") ",
			unchangedsince);
	g_string_append(line, "FLAGS.SILENT (");
	if (append_flags(line, flags, error) < 0)
		return NULL;
	g_string_append_c(line, ')');
	return g_string_free(g_steal_pointer(&line), FALSE);
}

gboolean imapfs_session_store_flags(ImapfsSession *s, guint32 uid,
				    const char *flags, guint64 unchangedsince,
				    guint64 *modseq_r, GError **error)
{
	StoreReply r = {uid, 0};
	CodeWatch w = {.store_uid = uid};
	Command cmd = {"UID STORE", on_store, NULL, &r};

	if (modseq_r)
		*modseq_r = 0;
	if (!check_writable(s, error) ||
	    (unchangedsince > 0 && !check_condstore(s, error)))
		return FALSE;
	g_autofree char *line = store_line(uid, flags, unchangedsince, error);
	if (line == NULL || !run_watched(s, line, &cmd, &w, error))
		return FALSE;
	/* The OK covers the set; [MODIFIED] names what was left alone. */
	if (w.modified) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_MODIFIED,
			    "message UID %u in \"%s\" was changed meanwhile",
			    uid, s->selected);
		return FALSE;
	}
	if (modseq_r)
		*modseq_r = r.modseq;
	return TRUE;
}

gboolean imapfs_session_set_deleted(ImapfsSession *s, guint32 uid, gboolean add,
				    GError **error)
{
	Command cmd = {.what = "UID STORE"};
	g_autofree char *line =
		g_strdup_printf("UID STORE %u %cFLAGS.SILENT (\\Deleted)", uid,
				add ? '+' : '-');

	return check_writable(s, error) && run(s, line, NULL, &cmd, error);
}

/* Untagged EXPUNGE keeps the mailbox's EXISTS right (handle_data). */
gboolean imapfs_session_uid_expunge(ImapfsSession *s, guint32 uid,
				    GError **error)
{
	Command cmd = {.what = "UID EXPUNGE"};
	g_autofree char *line = g_strdup_printf("UID EXPUNGE %u", uid);

	return check_cap(s, IMAPFS_CAP_UIDPLUS, "UIDPLUS", error) &&
	       check_writable(s, error) && run(s, line, NULL, &cmd, error);
}

gboolean imapfs_session_expunge(ImapfsSession *s, GError **error)
{
	return check_writable(s, error) && run_simple(s, "EXPUNGE", error);
}

/* "* SEARCH 2 5 7", perhaps ending in "(MODSEQ n)" (RFC 7162 3.1.5); an
 * ESEARCH reply is read as well, should a server send one. */
static void on_search(ImapfsSession *s, ImapfsResponse *resp, gpointer ctx)
{
	SearchResult *r = ctx;
	GPtrArray *a = resp->args;

	if (a->len < 1 || !imapfs_arg_is_atom(a->pdata[0], "SEARCH")) {
		on_esearch(s, resp, ctx);
		return;
	}
	for (guint i = 1; i < a->len && !r->bad; i++) {
		const ImapfsArg *arg = a->pdata[i];
		guint32 uid;
		if (arg->type == IMAPFS_ARG_LIST)
			continue;
		if (!arg_u32(arg, &uid) || uid == 0 || r->uids->len >= r->limit)
			r->bad = TRUE;
		else
			g_array_append_val(r->uids, uid);
	}
}

GArray *imapfs_session_uid_search(ImapfsSession *s, const char *criteria,
				  GError **error)
{
	g_autoptr(GArray) uids = g_array_new(FALSE, FALSE, sizeof(guint32));
	SearchResult r = {uids, result_limit(s), FALSE};
	Command cmd = {"UID SEARCH", on_search, NULL, &r};
	g_autofree char *line = g_strconcat("UID SEARCH ", criteria, NULL);

	/* A line break would end the command and start another. */
	if (*criteria == '\0' || strpbrk(criteria, "\r\n")) {
		g_autofree char *q = imapfs_log_quote(criteria);
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "bad search criteria \"%s\"", q);
		return NULL;
	}
	if (!run(s, line, NULL, &cmd, error) || !finish_search(s, &r, error))
		return NULL;
	return g_steal_pointer(&uids);
}

/* UID MOVE or UID COPY (@verb) of @uid to @dest. */
static gboolean transfer(ImapfsSession *s, const char *verb, guint32 uid,
			 const char *dest, ImapfsNewUid *new_r, GError **error)
{
	g_autoptr(GString) line = g_string_new(NULL);
	Command cmd = {.what = verb};
	CodeWatch w = {0};

	if (new_r)
		memset(new_r, 0, sizeof(*new_r));
	g_string_printf(line, "%s %u ", verb, uid);
	if (!build_quoted(s, line, dest, error) ||
	    !run_watched(s, line->str, &cmd, &w, error))
		return FALSE;
	if (new_r)
		*new_r = w.new_uid;
	return TRUE;
}

/* COPYUID comes in an untagged OK before the EXPUNGE (RFC 6851 4.3),
 * which handle_code() takes like a tagged one. */
gboolean imapfs_session_move(ImapfsSession *s, guint32 uid, const char *dest,
			     ImapfsNewUid *new_r, GError **error)
{
	if (new_r)
		memset(new_r, 0, sizeof(*new_r));
	return check_cap(s, IMAPFS_CAP_MOVE, "MOVE", error) &&
	       check_writable(s, error) &&
	       transfer(s, "UID MOVE", uid, dest, new_r, error);
}

gboolean imapfs_session_copy(ImapfsSession *s, guint32 uid, const char *dest,
			     ImapfsNewUid *new_r, GError **error)
{
	return transfer(s, "UID COPY", uid, dest, new_r, error);
}

/* --- mailboxes ------------------------------------------------------------ */

/* INBOX is case-insensitive (RFC 3501 5.1); other names are not. */
static gboolean same_mailbox(const char *a, const char *b)
{
	if (g_ascii_strcasecmp(a, "INBOX") == 0)
		return g_ascii_strcasecmp(b, "INBOX") == 0;
	return strcmp(a, b) == 0;
}

/* Whether a DELETE or RENAME of @mailbox concerns the selected one:
 * itself or, as RENAME takes the children along, one below it. The
 * delimiter is not known here; the usual two are tried, and a wrong
 * guess costs only a needless UNSELECT. */
static gboolean touches_selected(ImapfsSession *s, const char *mailbox,
				 gboolean children)
{
	const char *sel = s->selected;
	gsize len = strlen(mailbox);

	if (sel == NULL)
		return FALSE;
	if (same_mailbox(sel, mailbox))
		return TRUE;
	return children && strncmp(sel, mailbox, len) == 0 &&
	       (sel[len] == '.' || sel[len] == '/');
}

/* Leaves the selected mailbox without expunging anything: CLOSE would
 * expunge the \Deleted messages of a SELECTed one, so without UNSELECT
 * (RFC 3691) it is first re-opened read-only. */
static gboolean leave_selected(ImapfsSession *s, GError **error)
{
	g_autofree char *mailbox = g_strdup(s->selected);
	GError *local = NULL;

	if (imapfs_session_has(s, IMAPFS_CAP_UNSELECT)) {
		if (!run_simple(s, "UNSELECT", error))
			return FALSE;
	} else if (open_mailbox(s, "EXAMINE", mailbox, NULL, &local)) {
		if (!run_simple(s, "CLOSE", error))
			return FALSE;
	} else if (!imapfs_session_is_usable(s)) {
		g_propagate_error(error, local);
		return FALSE;
	} else {
		/* A refused EXAMINE leaves no mailbox selected either. */
		g_clear_error(&local);
	}
	memset(&s->mbox, 0, sizeof(s->mbox));
	enter_state(s, IMAPFS_SESSION_AUTHENTICATED);
	return TRUE;
}

gboolean imapfs_session_unselect(ImapfsSession *s, GError **error)
{
	return s->selected == NULL || leave_selected(s, error);
}

/* "@verb "@a"" or "@verb "@a" "@b"". */
static gboolean run_named(ImapfsSession *s, const char *verb, const char *a,
			  const char *b, GError **error)
{
	g_autoptr(GString) line = g_string_new(verb);
	Command cmd = {.what = verb};

	g_string_append_c(line, ' ');
	if (!build_quoted(s, line, a, error))
		return FALSE;
	if (b) {
		g_string_append_c(line, ' ');
		if (!build_quoted(s, line, b, error))
			return FALSE;
	}
	return run(s, line->str, NULL, &cmd, error);
}

gboolean imapfs_session_create(ImapfsSession *s, const char *mailbox,
			       GError **error)
{
	return run_named(s, "CREATE", mailbox, NULL, error);
}

gboolean imapfs_session_delete(ImapfsSession *s, const char *mailbox,
			       GError **error)
{
	if (touches_selected(s, mailbox, FALSE) && !leave_selected(s, error))
		return FALSE;
	return run_named(s, "DELETE", mailbox, NULL, error);
}

gboolean imapfs_session_rename(ImapfsSession *s, const char *from,
			       const char *to, GError **error)
{
	if (touches_selected(s, from, TRUE) && !leave_selected(s, error))
		return FALSE;
	return run_named(s, "RENAME", from, to, error);
}

gboolean imapfs_session_noop(ImapfsSession *s, GError **error)
{
	return run_simple(s, "NOOP", error);
}

gint64 imapfs_session_heard_at(ImapfsSession *s)
{
	return s->heard_at;
}

void imapfs_session_set_timeout(ImapfsSession *s, guint timeout_ms)
{
	s->timeout_ms = timeout_ms;
	if (s->stream)
		imapfs_stream_set_timeout(s->stream, timeout_ms);
}

gboolean imapfs_session_catch_up(ImapfsSession *s, guint32 uid, GError **error)
{
	if (s->selected == NULL || (s->mbox.uidnext && uid < s->mbox.uidnext))
		return TRUE;
	if (s->mbox.uidnext == 0)
		return run_simple(s, "NOOP", error);
	g_autofree char *mailbox = g_strdup(s->selected);
	return s->writable ? imapfs_session_select(s, mailbox, NULL, error)
			   : imapfs_session_examine(s, mailbox, NULL, error);
}

/* "(MESSAGES 3 UIDNEXT 9 UIDVALIDITY 1 [HIGHESTMODSEQ 7])". */
static gboolean parse_status_items(ImapfsSession *s, const ImapfsArg *list,
				   ImapfsMailboxStatus *st)
{
	GPtrArray *items = imapfs_arg_list(list);

	(void)s;
	memset(st, 0, sizeof(*st));
	if (items == NULL)
		return FALSE;
	const ImapfsArg *modseq = fetch_item(items, "HIGHESTMODSEQ");
	if (modseq)
		imapfs_arg_number(modseq, &st->highestmodseq);
	return arg_u32(fetch_item(items, "MESSAGES"), &st->messages) &&
	       arg_u32(fetch_item(items, "UIDNEXT"), &st->uidnext) &&
	       arg_u32(fetch_item(items, "UIDVALIDITY"), &st->uidvalidity);
}

typedef struct {
	const char *const *mailboxes;
	guint n;
	ImapfsMailboxStatus *st;
	gboolean *found;
} StatusReply;

/* "* STATUS name (MESSAGES 3 UIDNEXT 9 UIDVALIDITY 1)": lines about
 * mailboxes not asked for are not this command's answer. */
static void on_status(ImapfsSession *s, ImapfsResponse *resp, gpointer ctx)
{
	StatusReply *r = ctx;
	GPtrArray *a = resp->args;

	if (a->len != 3 || !imapfs_arg_is_atom(a->pdata[0], "STATUS"))
		return;
	const ImapfsArg *name_arg = a->pdata[1];
	const char *name = imapfs_arg_str(name_arg);
	if (name == NULL || strlen(name) != name_arg->len)
		return;
	for (guint i = 0; i < r->n; i++)
		if (same_mailbox(name, r->mailboxes[i]) &&
		    parse_status_items(s, a->pdata[2], &r->st[i]))
			r->found[i] = TRUE;
}

/* Whether one of @mailboxes is the selected one. */
static gboolean asks_selected(ImapfsSession *s, const char *const *mailboxes,
			      guint n)
{
	for (guint i = 0; s->selected && i < n; i++)
		if (same_mailbox(s->selected, mailboxes[i]))
			return TRUE;
	return FALSE;
}

gboolean imapfs_session_status_many(ImapfsSession *s,
				    const char *const *mailboxes, guint n,
				    ImapfsMailboxStatus *st, gboolean *found,
				    GError **error)
{
	g_autoptr(GString) out = g_string_new(NULL);
	g_autofree Tag *tags = g_new0(Tag, MAX(n, 1));
	StatusReply r = {mailboxes, n, st, found};
	Command cmd = {"STATUS", on_status, NULL, &r};
	guint sent = 0;

	memset(st, 0, n * sizeof(*st));
	memset(found, 0, n * sizeof(*found));
	/* On the selected mailbox STATUS may answer from this session's
	 * view, missing what other clients just did (RFC 3501 6.3.10 says
	 * not to ask it there): rmdir would then DELETE a mailbox that has
	 * just received mail. */
	if (!check_connected(s, error) ||
	    (asks_selected(s, mailboxes, n) && !leave_selected(s, error)))
		return FALSE;
	for (guint i = 0; i < n; i++) {
		g_autoptr(GString) line = g_string_new("STATUS ");
		/* A name that cannot be sent is not asked (stays not found). */
		if (!append_quoted(s, line, mailboxes[i]))
			continue;
		g_string_append_printf(line, " (%s)", status_items(s));
		add_command(s, out, &tags[sent++], line->str);
	}
	if (sent == 0)
		return TRUE;
	if (!send_raw(s, out->str, out->len, error))
		return FALSE;
	/* A refused STATUS (a mailbox deleted meanwhile) is no failure. */
	g_autoptr(GError) local = NULL;
	if (wait_tags(s, tags, sent, &cmd, &local) ||
	    imapfs_session_is_usable(s))
		return TRUE;
	g_propagate_error(error, g_steal_pointer(&local));
	return FALSE;
}

gboolean imapfs_session_status(ImapfsSession *s, const char *mailbox,
			       ImapfsMailboxStatus *st, GError **error)
{
	gboolean found = FALSE;
	g_autoptr(GString) line = g_string_new(NULL);
	StatusReply r = {&mailbox, 1, st, &found};
	Command cmd = {"STATUS", on_status, NULL, &r};

	memset(st, 0, sizeof(*st));
	if (!check_connected(s, error) ||
	    (asks_selected(s, &mailbox, 1) && !leave_selected(s, error)))
		return FALSE;
	g_string_append(line, "STATUS ");
	if (!build_quoted(s, line, mailbox, error))
		return FALSE;
	g_string_append_printf(line, " (%s)", status_items(s));
	if (!run(s, line->str, NULL, &cmd, error))
		return FALSE;
	if (!found) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_PROTOCOL,
			    "\"%s\" sent no STATUS for \"%s\"", s->cfg->host,
			    mailbox);
		return FALSE;
	}
	return TRUE;
}

/* --- IDLE ------------------------------------------------------------------
 */

/* Whether an untagged response says the selected mailbox changed. */
static gboolean is_mailbox_news(const ImapfsResponse *resp)
{
	GPtrArray *a = resp->args;

	if (resp->kind != IMAPFS_RESP_UNTAGGED ||
	    resp->status != IMAPFS_STATUS_NONE || a->len == 0)
		return FALSE;
	if (imapfs_arg_is_atom(a->pdata[0], "VANISHED"))
		return TRUE;
	return a->len >= 2 && (imapfs_arg_is_atom(a->pdata[1], "EXISTS") ||
			       imapfs_arg_is_atom(a->pdata[1], "EXPUNGE") ||
			       imapfs_arg_is_atom(a->pdata[1], "FETCH"));
}

/* Reads until the continuation (IDLE running) or a tagged reply (refused).
 * Unlike wait_tags(), returns as soon as the continuation came. */
static gboolean wait_idle_start(ImapfsSession *s, GError **error)
{
	for (;;) {
		g_autoptr(ImapfsResponse) resp = read_response(s, error);
		if (resp == NULL)
			return FALSE;
		trace_response(resp);
		if (resp->kind == IMAPFS_RESP_CONTINUATION)
			return TRUE;
		if (resp->kind == IMAPFS_RESP_TAGGED) {
			if (g_strcmp0(resp->tag, s->idle_tag) != 0)
				continue;
			s->idle_tag[0] = '\0';
			if (tagged_result(s, resp, "IDLE", error))
				g_set_error(error, IMAPFS_ERROR,
					    IMAPFS_ERROR_PROTOCOL,
					    "\"%s\" ended IDLE at once",
					    s->cfg->host);
			return FALSE;
		}
		if (!handle_common(s, resp))
			return fail_bye(s, error);
		if (is_mailbox_news(resp))
			s->idle_news = TRUE;
	}
}

gboolean imapfs_session_idle_begin(ImapfsSession *s, GError **error)
{
	g_autoptr(GString) out = g_string_new(NULL);
	Tag tag;

	if (!check_connected(s, error) ||
	    !check_cap(s, IMAPFS_CAP_IDLE, "IDLE", error))
		return FALSE;
	add_command(s, out, &tag, "IDLE");
	g_strlcpy(s->idle_tag, tag.s, sizeof(s->idle_tag));
	return send_raw(s, out->str, out->len, error) &&
	       wait_idle_start(s, error);
}

/* One response while idling: news noted, BYE fatal, a tagged reply (the
 * server ended IDLE by itself) only noted as the end. */
static gboolean idle_response(ImapfsSession *s, ImapfsResponse *resp,
			      gboolean *changed_r, GError **error)
{
	trace_response(resp);
	if (resp->kind == IMAPFS_RESP_CONTINUATION)
		return TRUE; /* some servers repeat "+ idling" */
	if (resp->kind == IMAPFS_RESP_TAGGED) {
		/* The server ended IDLE by itself: the caller begins anew. */
		if (g_strcmp0(resp->tag, s->idle_tag) == 0) {
			s->idle_tag[0] = '\0';
			*changed_r = TRUE;
		}
		return TRUE;
	}
	if (!handle_common(s, resp))
		return fail_bye(s, error);
	if (is_mailbox_news(resp))
		*changed_r = TRUE;
	return TRUE;
}

gboolean imapfs_session_idle_wait(ImapfsSession *s, guint wait_ms,
				  gboolean *changed_r, GError **error)
{
	if (!check_connected(s, error))
		return FALSE;
	if (s->idle_news) {
		s->idle_news = FALSE;
		*changed_r = TRUE;
	}
	if (s->rbuf_pos == s->rbuf_len) {
		/* Silence is the normal case here, not a dead server: the
		 * first bytes are waited for with @wait_ms, the rest of a
		 * response with the usual limit. */
		g_autoptr(GError) local = NULL;
		imapfs_stream_set_timeout(s->stream, wait_ms);
		gboolean got = fill_rbuf(s, &local);
		imapfs_stream_set_timeout(s->stream, s->timeout_ms);
		if (!got &&
		    g_error_matches(local, IMAPFS_ERROR, IMAPFS_ERROR_TIMEOUT))
			return TRUE;
		if (!got) {
			set_broken(s);
			g_propagate_error(error, g_steal_pointer(&local));
			return FALSE;
		}
	}
	/* Everything that came, up to a complete response. */
	do {
		g_autoptr(ImapfsResponse) resp = read_response(s, error);
		if (resp == NULL || !idle_response(s, resp, changed_r, error))
			return FALSE;
	} while (s->rbuf_pos < s->rbuf_len);
	return TRUE;
}

gboolean imapfs_session_idle_end(ImapfsSession *s, gboolean *changed_r,
				 GError **error)
{
	if (!check_connected(s, error))
		return FALSE;
	if (s->idle_tag[0] != '\0') {
		imapfs_trace(IMAPFS_TRACE_NET, "C: DONE");
		if (!send_raw(s, "DONE\r\n", 6, error))
			return FALSE;
	}
	while (s->idle_tag[0] != '\0') {
		g_autoptr(ImapfsResponse) resp = read_response(s, error);
		if (resp == NULL)
			return FALSE;
		if (resp->kind == IMAPFS_RESP_TAGGED &&
		    g_strcmp0(resp->tag, s->idle_tag) == 0) {
			trace_response(resp);
			s->idle_tag[0] = '\0';
			return tagged_result(s, resp, "IDLE", error);
		}
		if (!idle_response(s, resp, changed_r, error))
			return FALSE;
	}
	return TRUE;
}

/* --- checking a change whose reply was lost -------------------------------
 */

gboolean imapfs_session_is_selected(ImapfsSession *s, const char *mailbox)
{
	return s->selected && mailbox && same_mailbox(s->selected, mailbox);
}

/* File bytes compared at a time by imapfs_session_same_body(). */
#define SAME_CHUNK (256 * 1024)

/* Whether the window of @uid at @offset holds @want (@len bytes) and,
 * with @last, nothing after it. */
static gboolean same_window(ImapfsSession *s, guint32 uid, guint64 offset,
			    const guint8 *want, gsize len, gboolean last,
			    gboolean *same_r, GError **error)
{
	g_autoptr(GByteArray) got = g_byte_array_sized_new(len + 1);
	GError *local = NULL;

	/* One byte more on the last window: the message must end there. */
	if (!imapfs_session_fetch_body(s, uid, offset, len + (last ? 1 : 0),
				       got, &local)) {
		if (!g_error_matches(local, IMAPFS_ERROR,
				     IMAPFS_ERROR_NONEXISTENT)) {
			g_propagate_error(error, local);
			return FALSE;
		}
		g_error_free(local);
		*same_r = FALSE;
		return TRUE;
	}
	*same_r = got->len == len && memcmp(got->data, want, len) == 0;
	return TRUE;
}

gboolean imapfs_session_same_body(ImapfsSession *s, guint32 uid, int fd,
				  guint64 size, gboolean *same_r,
				  GError **error)
{
	g_autofree guint8 *in = g_malloc(SAME_CHUNK);
	g_autofree guint8 *want = g_malloc(2 * SAME_CHUNK);
	gboolean prev_cr = FALSE;
	guint64 off = 0, wire = 0;

	*same_r = TRUE;
	do {
		gsize n = MIN(SAME_CHUNK, size - off);
		if (!pread_all(fd, in, n, off, error))
			return FALSE;
		gsize len = crlf_convert(in, n, &prev_cr, want);
		off += n;
		if (!same_window(s, uid, wire, want, len, off == size, same_r,
				 error))
			return FALSE;
		wire += len;
	} while (*same_r && off < size);
	return TRUE;
}
