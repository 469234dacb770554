/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libFuzzer target for the IMAP response parser.
 *
 * The input is a server transcript. It is fed several times: whole, one
 * byte at a time and in pieces whose sizes come from the data itself, with
 * and without a literal sink, under the default and under tiny limits. For
 * one configuration every split must give the same transcript of responses
 * and errors; a difference aborts, so the fuzzer reports it as a crash.
 */
#include <stdlib.h>
#include <string.h>

#include "imapfs/imap-parser.h"

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size);

typedef struct {
	GString *log; /* what the sink saw */
} FuzzSink;

static ImapfsLiteralAction fuzz_begin(gpointer user_data,
				      const ImapfsResponse *resp,
				      const char *key, guint64 size,
				      const char **error_r)
{
	FuzzSink *sink = user_data;
	g_autofree char *partial = imapfs_response_to_string(resp, 64);

	g_string_append_printf(sink->log, "<%s %s %" G_GUINT64_FORMAT ">",
			       key ? key : "-", partial, size);
	if (key && g_ascii_strcasecmp(key, "REJECT") == 0) {
		*error_r = "rejected";
		return IMAPFS_LITERAL_REJECT;
	}
	if (key && g_ascii_strcasecmp(key, "INLINE") == 0)
		return IMAPFS_LITERAL_INLINE; /* even when too large */
	return size > 8 ? IMAPFS_LITERAL_STREAM : IMAPFS_LITERAL_INLINE;
}

static gboolean fuzz_data(gpointer user_data, const guint8 *data, gsize len,
			  const char **error_r)
{
	FuzzSink *sink = user_data;

	/* Logged in one run, so every split must give the same bytes. */
	for (gsize i = 0; i < len; i++)
		g_string_append_printf(sink->log, "%02x", data[i]);
	return TRUE;
}

static const ImapfsLiteralSink fuzz_sink = {fuzz_begin, fuzz_data};

static const ImapfsParserLimits tiny_limits = {
	.max_line = 200,
	.max_depth = 4,
	.max_literal = 300,
	.max_inline_literal = 20,
	.max_response = 1500,
	.max_args = 30,
};

/* Uses every helper on every argument, so that all of them are fuzzed. */
static void walk_args(const GPtrArray *args, GString *out)
{
	for (guint i = 0; args && i < args->len; i++) {
		const ImapfsArg *arg = g_ptr_array_index(args, i);
		const char *str = imapfs_arg_str(arg);
		guint64 n;

		if (imapfs_arg_number(arg, &n))
			g_string_append_printf(out, "#%" G_GUINT64_FORMAT, n);
		if (imapfs_arg_is_atom(arg, "NIL") ||
		    (str && strlen(str) > arg->len))
			abort();
		walk_args(imapfs_arg_list(arg), out);
	}
}

static void record(GString *out, ImapfsResponse *resp)
{
	g_autofree char *full = imapfs_response_to_string(resp, G_MAXSIZE - 4);
	g_autofree char *cut = imapfs_response_to_string(resp, 10);

	if (strlen(cut) > 13 || !resp->args || !resp->text)
		abort();
	g_string_append_printf(out, "%s\n", full);
	walk_args(resp->args, out);
	walk_args(resp->code, out);
	imapfs_response_free(resp);
}

/* The size of the next piece: 0 means "all the rest". */
static gsize piece(const guint8 *data, size_t size, gsize off, guint mode)
{
	if (mode == 0)
		return 0;
	if (mode == 1)
		return 1;
	return 1 + data[(off * 31 + 7) % size] % 23;
}

static char *run(const guint8 *data, size_t size, guint mode,
		 const ImapfsParserLimits *limits, gboolean with_sink)
{
	g_autoptr(ImapfsParser) parser = imapfs_parser_new(limits);
	FuzzSink sink = {g_string_new(NULL)};
	GString *out = g_string_new(NULL);
	gsize off = 0;

	if (with_sink)
		imapfs_parser_set_literal_sink(parser, &fuzz_sink, &sink);
	while (off < size) {
		gsize n = piece(data, size, off, mode), used = 0;
		ImapfsResponse *resp = NULL;
		const char *error = NULL;

		n = n == 0 ? size - off : MIN(n, size - off);
		/* the split points may fall anywhere in a response */
		while (n > 0) {
			switch (imapfs_parser_feed(parser, data + off, n, &used,
						   &resp, &error)) {
			case IMAPFS_PARSE_RESPONSE:
				record(out, resp);
				break;
			case IMAPFS_PARSE_ERROR:
				g_string_append_printf(out, "ERROR %s @%zu\n",
						       error, off + used);
				imapfs_parser_reset(parser);
				break;
			case IMAPFS_PARSE_MORE:
				if (used != n)
					abort();
				break;
			}
			if (used > n || (used == 0 && n > 0))
				abort();
			off += used;
			n -= used;
		}
	}
	g_string_append(out, sink.log->str);
	g_string_free(sink.log, TRUE);
	return g_string_free(out, FALSE);
}

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size)
{
	const ImapfsParserLimits *limits[] = {NULL, &tiny_limits};

	if (size == 0)
		return 0;
	for (guint l = 0; l < G_N_ELEMENTS(limits); l++) {
		for (guint s = 0; s < 2; s++) {
			g_autofree char *whole =
				run(data, size, 0, limits[l], s);

			for (guint mode = 1; mode <= 2; mode++) {
				g_autofree char *split =
					run(data, size, mode, limits[l], s);

				if (strcmp(whole, split) != 0)
					abort();
			}
		}
	}
	return 0;
}
