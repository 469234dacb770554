/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * An incremental, I/O-free parser for IMAP server responses (RFC 9051 /
 * RFC 3501 grammar, plus literal8 "~{n}" and non-synchronizing "{n+}").
 *
 * Bytes are fed in pieces of any size, down to one byte at a time; the parser
 * keeps its state between calls and hands out one complete response at a
 * time. It never reads or writes anything itself.
 *
 * Everything the server sends is untrusted: a line, a nesting depth, a
 * literal and a whole response each have a hard limit (ImapfsParserLimits).
 * Memory is never allocated by an announced literal size; literals grow as
 * their bytes arrive, and large ones can be streamed to a sink instead of
 * being kept at all.
 *
 * After IMAPFS_PARSE_ERROR the stream can no longer be trusted to be in
 * sync: the caller fails the affected command and drops the connection.
 * imapfs_parser_reset() makes the parser usable for a new connection.
 *
 * Threads: an ImapfsParser belongs to one connection and is used by one
 * thread at a time. Responses are plain data, owned by whoever received them.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
	IMAPFS_ARG_ATOM,    /* atom or number; may contain "[...]" sections */
	IMAPFS_ARG_STRING,  /* quoted string, unescaped */
	IMAPFS_ARG_LITERAL, /* {n} or ~{n}; data NULL when it was streamed */
	IMAPFS_ARG_NIL,
	IMAPFS_ARG_LIST, /* parenthesized list */
} ImapfsArgType;

typedef struct ImapfsArg ImapfsArg;
struct ImapfsArg {
	ImapfsArgType type;
	/* ATOM/STRING/LITERAL: the bytes, always NUL-terminated (a literal may
	 * also contain NULs; use len). NULL for NIL and LIST, and for a literal
	 * that went to the literal sink. */
	char *data;
	/* Bytes in data, or a streamed literal's size. 0 for NIL. */
	guint64 len;
	/* LIST: the elements (ImapfsArg *), owned; NULL otherwise. */
	GPtrArray *list;
	gboolean literal8; /* LITERAL sent as ~{n} */
};

typedef enum {
	IMAPFS_RESP_UNTAGGED,	  /* "* ..." */
	IMAPFS_RESP_TAGGED,	  /* "A1 OK ..." */
	IMAPFS_RESP_CONTINUATION, /* "+ ..." */
} ImapfsRespKind;

typedef enum {
	IMAPFS_STATUS_NONE, /* not a status response (data, or "+") */
	IMAPFS_STATUS_OK,
	IMAPFS_STATUS_NO,
	IMAPFS_STATUS_BAD,
	IMAPFS_STATUS_BYE,
	IMAPFS_STATUS_PREAUTH,
} ImapfsStatus;

typedef struct {
	ImapfsRespKind kind;
	char *tag;	     /* TAGGED: the tag; NULL otherwise */
	ImapfsStatus status; /* OK/NO/BAD/BYE/PREAUTH, or NONE */
	/*
	 * Data responses: every word after "*", e.g. "* 12 FETCH (UID 7)"
	 * gives [ATOM "12", ATOM "FETCH", LIST (ATOM "UID", ATOM "7")] and
	 * "* CAPABILITY IMAP4rev1 IDLE" gives [CAPABILITY, IMAP4rev1, IDLE].
	 * Empty (never NULL) for status responses and continuations.
	 */
	GPtrArray *args;
	/* Status responses: the response code "[UIDVALIDITY 3]" as
	 * [ATOM "UIDVALIDITY", ATOM "3"]; NULL when there is none. */
	GPtrArray *code;
	/* Status responses: the human-readable text after the code.
	 * Continuations: everything after "+ " (may be base64). Never NULL. */
	char *text;
} ImapfsResponse;

typedef struct {
	gsize max_line;	     /* bytes of one line, literals excluded */
	guint max_depth;     /* parenthesis nesting */
	guint64 max_literal; /* largest literal accepted, streamed or not */
	gsize max_inline_literal; /* largest literal kept in an ImapfsArg */
	gsize max_response;	  /* all bytes kept for one response */
	guint max_args;		  /* words and list elements in one response */
} ImapfsParserLimits;

/* The limits imapfs uses: 64 KiB lines, depth 64, 4 GiB literals,
 * 1 MiB inline literals, 16 MiB responses, 1,000,000 arguments. */
extern const ImapfsParserLimits imapfs_parser_default_limits;

typedef enum {
	IMAPFS_LITERAL_INLINE, /* keep it in the response (size <= inline limit)
				*/
	IMAPFS_LITERAL_STREAM, /* hand its bytes to sink->data */
	IMAPFS_LITERAL_REJECT, /* parse error */
} ImapfsLiteralAction;

/*
 * Where literal bytes go instead of the response. begin() is called for each
 * literal once its size is known: @resp is the response built so far and
 * @key the atom just before the literal in the same list (e.g. "BODY[]<0>"),
 * or NULL. data() then receives the bytes in order, in pieces of any size.
 * Either may set *error_r (static string) and return a failure, which
 * makes imapfs_parser_feed() fail with that message.
 */
typedef struct {
	ImapfsLiteralAction (*begin)(gpointer user_data,
				     const ImapfsResponse *resp,
				     const char *key, guint64 size,
				     const char **error_r);
	gboolean (*data)(gpointer user_data, const guint8 *data, gsize len,
			 const char **error_r);
} ImapfsLiteralSink;

typedef struct ImapfsParser ImapfsParser;

typedef enum {
	IMAPFS_PARSE_MORE,     /* all input consumed, response not complete */
	IMAPFS_PARSE_RESPONSE, /* *resp_r holds a complete response */
	IMAPFS_PARSE_ERROR,    /* *error_r says why; see above */
} ImapfsParseResult;

/* @limits: NULL for imapfs_parser_default_limits. Copied. */
ImapfsParser *imapfs_parser_new(const ImapfsParserLimits *limits);
void imapfs_parser_free(ImapfsParser *parser);

/* Forgets any partial response; for a fresh connection or after an error. */
void imapfs_parser_reset(ImapfsParser *parser);

/* Installs (or with NULL removes) the literal sink. Without a sink, literals
 * up to max_inline_literal are inlined and larger ones are an error. @sink
 * is copied; @user_data is borrowed. */
void imapfs_parser_set_literal_sink(ImapfsParser *parser,
				    const ImapfsLiteralSink *sink,
				    gpointer user_data);

/*
 * Feeds @len bytes. Sets *consumed_r to how many were used: on
 * IMAPFS_PARSE_RESPONSE the rest belongs to the next response and must be
 * fed again; on IMAPFS_PARSE_MORE it is @len. On RESPONSE, *resp_r receives
 * a response the caller owns. On ERROR, *error_r receives a static message.
 */
ImapfsParseResult imapfs_parser_feed(ImapfsParser *parser, const guint8 *data,
				     gsize len, gsize *consumed_r,
				     ImapfsResponse **resp_r,
				     const char **error_r);

void imapfs_response_free(ImapfsResponse *resp);

/* A one-line rendering for traces: literals as "{n}" plus at most a short
 * prefix of their bytes, strings quoted, the whole cut at @max_len bytes
 * with "...". Non-printable bytes are shown as "\xNN". */
char *imapfs_response_to_string(const ImapfsResponse *resp, gsize max_len);

/* Helpers for reading arguments; all tolerate NULL @arg. */

/* TRUE if @arg is an atom equal to @name, ignoring ASCII case. */
gboolean imapfs_arg_is_atom(const ImapfsArg *arg, const char *name);

/* The bytes of an atom, string or inlined literal; NULL for NIL, lists and
 * streamed literals. Borrowed from @arg. */
const char *imapfs_arg_str(const ImapfsArg *arg);

/* Parses an atom holding a decimal number (no sign, at most 20 digits, no
 * overflow). FALSE if it is anything else. */
gboolean imapfs_arg_number(const ImapfsArg *arg, guint64 *value_r);

/* The list of a LIST argument, or NULL. Borrowed. */
GPtrArray *imapfs_arg_list(const ImapfsArg *arg);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(ImapfsParser, imapfs_parser_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(ImapfsResponse, imapfs_response_free)

G_END_DECLS
