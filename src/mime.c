/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * MIME: part file names, header decoding, transfer decoding (see mime.h).
 *
 * GMime does the RFC 2047 / RFC 2231 work (charset aliases, encoded-words
 * split inside a character, continuations) and the quoted-printable and
 * uuencode decoding. Two things work around GMime 3.2.10 to 3.2.13, which
 * Debian 12 ships, whose base64 decoder stops at the first '=':
 *  - a run of B encoded-words loses every word after the first padded one
 *    (GMime issue #133, fixed in 3.2.14), so B words are re-encoded as Q
 *    words carrying the same bytes before GMime sees them;
 *  - a body in which padding appears before the end (mailers that encode
 *    line by line) would lose the rest (GMime #150, fixed in 3.2.14), so
 *    bodies go through GLib's base64 decoder, the algorithm GMime returned
 *    to in 3.2.14.
 */
#include <limits.h>
#include <string.h>

#include <gmime/gmime.h>

#include "imapfs/mime.h"

/* The longest tail after the last '.' that counts as an extension worth
 * keeping when a name is shortened. */
#define EXT_MAX 16

/* RFC 2231 continuations accepted per parameter (name*0 .. name*999). */
#define RFC2231_INDEX_DIGITS 3

static gpointer init_gmime(gpointer data)
{
	g_mime_init();
	return NULL;
}

/* g_mime_init() is not thread-safe and must run once per process. */
static void mime_init(void)
{
	static GOnce once = G_ONCE_INIT;

	g_once(&once, init_gmime, NULL);
}

/* ---- Text clean-up ---------------------------------------------------- */

/* Windows-1252 for 0x80..0x9f; 0 where it has no character. Mailers that
 * send raw 8-bit in headers mostly mean it, and it agrees with Latin-1 on
 * every other byte. */
static const gunichar cp1252_c1[32] = {
	0x20ac, 0,	0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021,
	0x02c6, 0x2030, 0x0160, 0x2039, 0x0152, 0,	0x017d, 0,
	0,	0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014,
	0x02dc, 0x2122, 0x0161, 0x203a, 0x0153, 0,	0x017e, 0x0178,
};

static gunichar cp1252_to_unichar(guint8 byte)
{
	if (byte >= 0x80 && byte < 0xa0 && cp1252_c1[byte - 0x80])
		return cp1252_c1[byte - 0x80];
	return byte;
}

/* Valid UTF-8 is kept; each byte that is not part of a valid sequence is
 * read as Windows-1252, so nothing is lost and the result is valid. */
static char *utf8_repair(const char *s)
{
	const char *end = s + strlen(s), *bad;
	GString *out;

	if (g_utf8_validate(s, end - s, NULL))
		return g_strdup(s);
	out = g_string_sized_new((end - s) * 2);
	while (!g_utf8_validate(s, end - s, &bad)) {
		g_string_append_len(out, s, bad - s);
		g_string_append_unichar(out, cp1252_to_unichar(*bad));
		s = bad + 1;
	}
	g_string_append_len(out, s, end - s);
	return g_string_free(out, FALSE);
}

/* Bidi controls let "gpj.exe" display as "exe.jpg". */
static gboolean is_bidi_control(gunichar c)
{
	return c == 0x061c || c == 0x200e || c == 0x200f ||
	       (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

static gboolean is_unsafe_in_name(gunichar c)
{
	return c == '/' || c == '\\' || g_unichar_iscntrl(c) ||
	       is_bidi_control(c);
}

/* A decoded file name -> one safe path element (see mime.h). */
static char *sanitize_file_name(const char *raw)
{
	g_autofree char *utf8 = utf8_repair(raw);
	GString *out = g_string_sized_new(strlen(utf8));
	gboolean space = FALSE;

	for (const char *p = utf8; *p; p = g_utf8_next_char(p)) {
		gunichar c = g_utf8_get_char(p);

		if (g_unichar_isspace(c)) {
			space = out->len > 0;
			continue;
		}
		if (space)
			g_string_append_c(out, ' ');
		space = FALSE;
		if (is_unsafe_in_name(c))
			g_string_append_c(out, '_');
		else
			g_string_append_unichar(out, c);
	}
	return g_string_free(out, FALSE);
}

/* Names that carry nothing: "", ".", "..", "...". */
static gboolean is_void_name(const char *name)
{
	return name[strspn(name, ".")] == '\0';
}

/* ---- Length limit ----------------------------------------------------- */

/* The longest prefix of @s (@len bytes) of at most @max bytes that does not
 * end inside a UTF-8 sequence. */
static gsize utf8_fit(const char *s, gsize len, gsize max)
{
	if (len <= max)
		return len;
	while (max > 0 && ((guchar)s[max] & 0xc0) == 0x80)
		max--;
	return max;
}

/* Where the extension of @name starts ("a.pdf" -> 1), or @len if it has
 * none worth keeping: a leading dot, a long or spaced tail is no
 * extension. */
static gsize extension_offset(const char *name, gsize len)
{
	const char *dot = memrchr(name, '.', len);
	gsize ext_len;

	if (!dot || dot == name)
		return len;
	ext_len = len - (dot - name);
	if (ext_len < 2 || ext_len > EXT_MAX || memchr(dot, ' ', ext_len))
		return len;
	return dot - name;
}

/* @head + @stem (@stem_len bytes) + @tail, the stem shortened so that the
 * whole fits NAME_MAX. Only if head and tail alone do not fit is the whole
 * cut instead. */
static char *compose_name(const char *head, const char *stem, gsize stem_len,
			  const char *tail)
{
	gsize fixed = strlen(head) + strlen(tail);
	GString *s = g_string_new(head);
	gsize keep;

	if (fixed >= NAME_MAX) {
		g_string_append_len(s, stem, stem_len);
		g_string_append(s, tail);
		g_string_truncate(s, utf8_fit(s->str, s->len, NAME_MAX));
		return g_string_free(s, FALSE);
	}
	keep = utf8_fit(stem, stem_len, NAME_MAX - fixed);
	/* A cut inside "Rechnung März" should not leave "Rechnung .pdf". */
	while (keep < stem_len && keep > 0 && stem[keep - 1] == ' ')
		keep--;
	g_string_append_len(s, stem, keep);
	g_string_append(s, tail);
	return g_string_free(s, FALSE);
}

/* ---- RFC 2047 --------------------------------------------------------- */

static gboolean is_base64_text(const char *s, gsize len)
{
	for (gsize i = 0; i < len; i++) {
		if (!g_ascii_isalnum(s[i]) && !strchr("+/=", s[i]))
			return FALSE;
	}
	return TRUE;
}

/* The bytes of an unpadded base64 tail left in g_base64_decode_step()'s
 * state: abs(state) sextets in the low bits of save, the last one '=' if
 * state < 0. */
static gsize base64_tail(int state, guint save, guint8 *out)
{
	int n = ABS(state);

	if (state < 0) {
		n--;
		save >>= 6;
	}
	switch (n) {
	case 2:
		out[0] = save >> 4;
		return 1;
	case 3:
		out[0] = save >> 10;
		out[1] = save >> 2;
		return 2;
	default: /* a lone sextet holds no whole byte */
		return 0;
	}
}

/* Appends "=?@charset?Q?=XX...?=" for the bytes of B payload @b64. */
static void append_as_q_word(GString *out, const char *charset,
			     gsize charset_len, const char *b64, gsize len)
{
	g_autofree guint8 *bytes = g_malloc(len / 4 * 3 + 3);
	int state = 0;
	guint save = 0;
	gsize n;

	n = g_base64_decode_step(b64, len, bytes, &state, &save);
	n += base64_tail(state, save, bytes + n);
	g_string_append(out, "=?");
	g_string_append_len(out, charset, charset_len);
	g_string_append(out, "?Q?");
	for (gsize i = 0; i < n; i++)
		g_string_append_printf(out, "=%02X", bytes[i]);
	g_string_append(out, "?=");
}

/* If @word starts a B encoded-word, appends it as a Q word and returns the
 * length it had; else 0. */
static gsize convert_b_word(GString *out, const char *word)
{
	const char *charset = word + 2, *charset_end, *payload, *end;

	charset_end = strchr(charset, '?');
	if (!charset_end || charset_end == charset ||
	    strcspn(charset, " \t\r\n") < (gsize)(charset_end - charset))
		return 0;
	if (g_ascii_toupper(charset_end[1]) != 'B' || charset_end[2] != '?')
		return 0;
	payload = charset_end + 3;
	end = strstr(payload, "?=");
	if (!end || !is_base64_text(payload, end - payload))
		return 0;
	append_as_q_word(out, charset, charset_end - charset, payload,
			 end - payload);
	return end + 2 - word;
}

/* Rewrites every B encoded-word of @text as a Q word with the same bytes,
 * so that GMime 3.2.10-3.2.13 decode runs of them whole (see the top). */
static char *rfc2047_b_to_q(const char *text)
{
	GString *out;
	const char *word;

	if (!strstr(text, "=?"))
		return g_strdup(text);
	out = g_string_sized_new(strlen(text) * 2);
	while ((word = strstr(text, "=?"))) {
		gsize used;

		g_string_append_len(out, text, word - text);
		used = convert_b_word(out, word);
		if (used == 0) {
			g_string_append(out, "=?");
			used = 2;
		}
		text = word + used;
	}
	g_string_append(out, text);
	return g_string_free(out, FALSE);
}

/* ---- Parameters (RFC 2231) -------------------------------------------- */

enum {
	PARAM_OTHER = -2,
	PARAM_PLAIN = -1,
};

typedef struct {
	int index; /* PARAM_PLAIN or the RFC 2231 section */
	gboolean extended;
	guint order; /* position in the list, to keep the first duplicate */
	const char *value;
} ParamPiece;

/* How parameter @name relates to @key: PARAM_OTHER, PARAM_PLAIN ("key"), or
 * the index of an RFC 2231 piece ("key*" is 0, "key*1", "key*1*"), with
 * *@extended set when the value is charset'lang'%XX encoded. */
static int param_match(const char *name, const char *key, gboolean *extended)
{
	gsize key_len = strlen(key), digits = 0;
	const char *p = name + key_len;
	int index = 0;

	if (g_ascii_strncasecmp(name, key, key_len) != 0)
		return PARAM_OTHER;
	if (*p == '\0')
		return PARAM_PLAIN;
	if (*p++ != '*')
		return PARAM_OTHER;
	*extended = TRUE;
	if (*p == '\0')
		return 0;
	for (; g_ascii_isdigit(*p); p++) {
		if (++digits > RFC2231_INDEX_DIGITS)
			return PARAM_OTHER;
		index = index * 10 + (*p - '0');
	}
	*extended = *p == '*';
	if (*p == '*')
		p++;
	return digits > 0 && *p == '\0' ? index : PARAM_OTHER;
}

static int param_piece_cmp(gconstpointer a, gconstpointer b)
{
	const ParamPiece *x = a, *y = b;

	if (x->index != y->index)
		return x->index < y->index ? -1 : 1;
	return x->order < y->order ? -1 : x->order > y->order;
}

/* The pieces of @key in @params, plain first, then RFC 2231 by index. */
static GArray *param_pieces(const char *const *params, const char *key)
{
	GArray *pieces = g_array_new(FALSE, FALSE, sizeof(ParamPiece));

	for (guint i = 0; params && params[i] && params[i + 1]; i += 2) {
		ParamPiece piece = {.order = i, .value = params[i + 1]};

		piece.index = param_match(params[i], key, &piece.extended);
		if (piece.index != PARAM_OTHER)
			g_array_append_val(pieces, piece);
	}
	g_array_sort(pieces, param_piece_cmp);
	return pieces;
}

static void append_quoted(GString *s, const char *value)
{
	g_string_append_c(s, '"');
	for (const char *p = value; *p; p++) {
		if (*p == '"' || *p == '\\')
			g_string_append_c(s, '\\');
		g_string_append_c(s, *p);
	}
	g_string_append(s, "\"; ");
}

/* Writes the pieces back as a header parameter list for GMime to decode:
 * the RFC 2231 ones in order, first of each index only, else the plain. */
static char *param_list_text(GArray *pieces, const char *key)
{
	GString *s = g_string_new(NULL);
	int last = PARAM_OTHER;
	gboolean rfc2231 =
		pieces->len > 0 &&
		g_array_index(pieces, ParamPiece, pieces->len - 1).index >= 0;

	for (guint i = 0; i < pieces->len; i++) {
		const ParamPiece *p = &g_array_index(pieces, ParamPiece, i);
		g_autofree char *value = NULL;

		if (p->index == last || (rfc2231 && p->index == PARAM_PLAIN))
			continue;
		last = p->index;
		value = p->extended ? g_strdup(p->value)
				    : rfc2047_b_to_q(p->value);
		if (p->index == PARAM_PLAIN)
			g_string_append_printf(s, "%s=", key);
		else
			g_string_append_printf(s, "%s*%d%s=", key, p->index,
					       p->extended ? "*" : "");
		append_quoted(s, value);
	}
	return g_string_free(s, FALSE);
}

static char *gmime_param_value(const char *list_text, const char *key)
{
	GMimeParamList *list = g_mime_param_list_parse(NULL, list_text);
	GMimeParam *param;
	char *value = NULL;

	if (!list)
		return NULL;
	param = g_mime_param_list_get_parameter(list, key);
	if (param && g_mime_param_get_value(param))
		value = g_strdup(g_mime_param_get_value(param));
	g_object_unref(list);
	return value;
}

static char *decode_pieces(GArray *pieces, const char *key)
{
	g_autofree char *text = param_list_text(pieces, key);

	return gmime_param_value(text, key);
}

/* The decoded value of parameter @key (any form), or NULL. */
static char *param_value(const char *const *params, const char *key)
{
	g_autoptr(GArray) pieces = param_pieces(params, key);
	char *value;

	if (pieces->len == 0)
		return NULL;
	value = decode_pieces(pieces, key);
	if (value && *value)
		return value;
	/* Empty or undecodable RFC 2231 pieces: the plain form may help. */
	if (g_array_index(pieces, ParamPiece, 0).index == PARAM_PLAIN &&
	    g_array_index(pieces, ParamPiece, pieces->len - 1).index >= 0) {
		g_free(value);
		g_array_set_size(pieces, 1);
		value = decode_pieces(pieces, key);
	}
	return value;
}

/* ---- Part names ------------------------------------------------------- */

typedef struct {
	const char *type;
	const char *subtype;
	const char *ext;
} TypeExtension;

/* Common types; any other text/... is "txt", anything else "bin". */
static const TypeExtension type_extensions[] = {
	{"text", "plain", "txt"},
	{"text", "html", "html"},
	{"text", "calendar", "ics"},
	{"text", "csv", "csv"},
	{"text", "xml", "xml"},
	{"text", "markdown", "md"},
	{"text", "vcard", "vcf"},
	{"text", "x-vcard", "vcf"},
	{"text", "x-diff", "diff"},
	{"text", "x-patch", "patch"},
	{"message", "rfc822", "eml"},
	{"message", "global", "eml"},
	{"message", "delivery-status", "txt"},
	{"message", "disposition-notification", "txt"},
	{"image", "jpeg", "jpg"},
	{"image", "jpg", "jpg"},
	{"image", "pjpeg", "jpg"},
	{"image", "png", "png"},
	{"image", "gif", "gif"},
	{"image", "webp", "webp"},
	{"image", "svg+xml", "svg"},
	{"image", "tiff", "tif"},
	{"image", "bmp", "bmp"},
	{"image", "heic", "heic"},
	{"audio", "mpeg", "mp3"},
	{"audio", "ogg", "ogg"},
	{"audio", "wav", "wav"},
	{"video", "mp4", "mp4"},
	{"video", "mpeg", "mpg"},
	{"application", "pdf", "pdf"},
	{"application", "octet-stream", "bin"},
	{"application", "zip", "zip"},
	{"application", "gzip", "gz"},
	{"application", "x-gzip", "gz"},
	{"application", "x-tar", "tar"},
	{"application", "x-7z-compressed", "7z"},
	{"application", "json", "json"},
	{"application", "xml", "xml"},
	{"application", "ics", "ics"},
	{"application", "rtf", "rtf"},
	{"application", "msword", "doc"},
	{"application", "vnd.ms-excel", "xls"},
	{"application", "vnd.ms-powerpoint", "ppt"},
	{"application",
	 "vnd.openxmlformats-officedocument.wordprocessingml.document", "docx"},
	{"application", "vnd.openxmlformats-officedocument.spreadsheetml.sheet",
	 "xlsx"},
	{"application",
	 "vnd.openxmlformats-officedocument.presentationml.presentation",
	 "pptx"},
	{"application", "vnd.oasis.opendocument.text", "odt"},
	{"application", "vnd.oasis.opendocument.spreadsheet", "ods"},
	{"application", "pgp-signature", "asc"},
	{"application", "pgp-encrypted", "asc"},
	{"application", "pgp-keys", "asc"},
	{"application", "pkcs7-signature", "p7s"},
	{"application", "x-pkcs7-signature", "p7s"},
	{"application", "pkcs7-mime", "p7m"},
	{"application", "x-pkcs7-mime", "p7m"},
};

static const char *type_extension(const char *type, const char *subtype)
{
	if (!type || !subtype)
		return "bin";
	for (gsize i = 0; i < G_N_ELEMENTS(type_extensions); i++) {
		const TypeExtension *t = &type_extensions[i];

		if (!g_ascii_strcasecmp(type, t->type) &&
		    !g_ascii_strcasecmp(subtype, t->subtype))
			return t->ext;
	}
	return g_ascii_strcasecmp(type, "text") == 0 ? "txt" : "bin";
}

gboolean imapfs_mime_is_message(const char *type, const char *subtype)
{
	return type && subtype && !g_ascii_strcasecmp(type, "message") &&
	       (!g_ascii_strcasecmp(subtype, "rfc822") ||
		!g_ascii_strcasecmp(subtype, "global"));
}

/* The safe file name of a part, or NULL when it has none. */
static char *part_file_name(const char *const *params,
			    const char *const *disposition_params)
{
	const char *const *lists[] = {disposition_params, params};
	const char *keys[] = {"filename", "name"};

	for (gsize i = 0; i < G_N_ELEMENTS(keys); i++) {
		g_autofree char *raw = param_value(lists[i], keys[i]);
		g_autofree char *name = NULL;

		if (!raw)
			continue;
		name = sanitize_file_name(raw);
		if (!is_void_name(name))
			return g_steal_pointer(&name);
	}
	return NULL;
}

char *imapfs_mime_part_name(const char *section, const char *type,
			    const char *subtype, const char *const *params,
			    const char *const *disposition_params)
{
	g_autofree char *file = NULL;
	g_autofree char *head = NULL;
	g_autofree char *ext = NULL;
	gsize len, ext_at;

	g_return_val_if_fail(section && *section, NULL);
	mime_init();
	if (!imapfs_mime_is_message(type, subtype))
		file = part_file_name(params, disposition_params);
	if (!file) {
		ext = g_strconcat(".", type_extension(type, subtype), NULL);
		return compose_name(section, "", 0, ext);
	}
	head = g_strconcat(section, "-", NULL);
	len = strlen(file);
	ext_at = extension_offset(file, len);
	return compose_name(head, file, ext_at, file + ext_at);
}

/* ---- Unique names ----------------------------------------------------- */

/* @name with "~@n" before its extension, within NAME_MAX. */
static char *numbered_name(const char *name, guint n)
{
	gsize len = strlen(name), ext_at = extension_offset(name, len);
	g_autofree char *tail = g_strdup_printf("~%u%s", n, name + ext_at);

	return compose_name("", name, ext_at, tail);
}

static char *fit_name(const char *name)
{
	gsize len = strlen(name), ext_at = extension_offset(name, len);

	return compose_name("", name, ext_at, name + ext_at);
}

/* The first "~n" variant of @name, from *@n on, that is not taken. */
static char *free_numbered_name(GHashTable *taken, const char *name, guint *n)
{
	for (;;) {
		char *candidate = numbered_name(name, (*n)++);

		if (!g_hash_table_contains(taken, candidate))
			return candidate;
		g_free(candidate);
	}
}

char **imapfs_mime_unique_names(const char *const *names)
{
	g_autoptr(GHashTable) taken =
		g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	/* name -> next number to try, so k copies cost O(k), not O(k^2) */
	g_autoptr(GHashTable) next =
		g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
	guint count = names ? g_strv_length((char **)names) : 0;
	char **out = g_new0(char *, count + 1);

	for (guint i = 0; i < count; i++) {
		out[i] = fit_name(names[i]);
		g_hash_table_add(taken, g_strdup(out[i]));
	}
	for (guint i = 0; i < count; i++) {
		guint n = GPOINTER_TO_UINT(g_hash_table_lookup(next, out[i]));
		char *unique;

		if (n == 0) { /* the first occurrence keeps its name */
			g_hash_table_insert(next, g_strdup(out[i]),
					    GUINT_TO_POINTER(2));
			continue;
		}
		unique = free_numbered_name(taken, out[i], &n);
		g_hash_table_insert(next, g_strdup(out[i]),
				    GUINT_TO_POINTER(n));
		g_hash_table_add(taken, g_strdup(unique));
		g_free(out[i]);
		out[i] = unique;
	}
	return out;
}

/* ---- Headers ---------------------------------------------------------- */

char *imapfs_mime_decode_header(const char *value)
{
	g_autofree char *q = NULL;
	g_autofree char *decoded = NULL;
	char *w;

	if (!value)
		return NULL;
	mime_init();
	q = rfc2047_b_to_q(value);
	decoded = g_mime_utils_header_decode_text(NULL, q);
	if (!decoded)
		return g_strdup("");
	/* Unfold: drop CR and LF, keep the white space after them. */
	w = decoded;
	for (const char *r = decoded; *r; r++) {
		if (*r != '\r' && *r != '\n')
			*w++ = *r;
	}
	*w = '\0';
	return utf8_repair(decoded);
}

/* ---- Transfer decoding ------------------------------------------------ */

typedef enum {
	DECODER_IDENTITY,
	DECODER_BASE64,
	DECODER_QP,
	DECODER_UU,
} DecoderKind;

/* Where a uuencoded body stands before GMime may see it. */
typedef enum {
	UU_LINE_START, /* matching "begin " at the start of a line */
	UU_OTHER_LINE, /* in a line before the begin line */
	UU_BEGIN_LINE, /* in the begin line */
	UU_DATA,       /* after the begin line */
} UuState;

struct ImapfsDecoder {
	DecoderKind kind;
	GMimeEncoding gmime; /* DECODER_QP, DECODER_UU */
	int b64_state;	     /* DECODER_BASE64, as g_base64_decode_step() */
	guint b64_save;
	UuState uu;
	gsize uu_matched; /* bytes of "begin " seen in UU_LINE_START */
};

static const char uu_begin[] = "begin ";

static void decoder_reset(ImapfsDecoder *dec)
{
	g_mime_encoding_reset(&dec->gmime);
	dec->b64_state = 0;
	dec->b64_save = 0;
	dec->uu = UU_LINE_START;
	dec->uu_matched = 0;
}

ImapfsDecoder *imapfs_decoder_new(const char *encoding)
{
	ImapfsDecoder *dec = g_new0(ImapfsDecoder, 1);
	GMimeContentEncoding e = GMIME_CONTENT_ENCODING_DEFAULT;

	mime_init();
	if (encoding)
		e = g_mime_content_encoding_from_string(encoding);
	switch (e) {
	case GMIME_CONTENT_ENCODING_BASE64:
		dec->kind = DECODER_BASE64;
		break;
	case GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE:
		dec->kind = DECODER_QP;
		break;
	case GMIME_CONTENT_ENCODING_UUENCODE:
		dec->kind = DECODER_UU;
		break;
	default:
		dec->kind = DECODER_IDENTITY;
		break;
	}
	g_mime_encoding_init_decode(&dec->gmime, e);
	decoder_reset(dec);
	return dec;
}

gboolean imapfs_decoder_is_identity(const ImapfsDecoder *dec)
{
	return dec->kind == DECODER_IDENTITY;
}

/* Skips a uuencoded body up to the line after "begin ..."; returns the
 * bytes consumed. Works across blocks: the state survives in @dec. */
static gsize uu_skip_to_data(ImapfsDecoder *dec, const guint8 *in, gsize len)
{
	gsize i = 0;

	while (i < len && dec->uu != UU_DATA) {
		guint8 c = in[i++];

		if (c == '\n') {
			dec->uu = dec->uu == UU_BEGIN_LINE ? UU_DATA
							   : UU_LINE_START;
			dec->uu_matched = 0;
		} else if (dec->uu == UU_LINE_START) {
			if (c != (guint8)uu_begin[dec->uu_matched])
				dec->uu = UU_OTHER_LINE;
			else if (++dec->uu_matched == sizeof(uu_begin) - 1)
				dec->uu = UU_BEGIN_LINE;
		}
	}
	if (dec->uu == UU_DATA)
		dec->gmime.state |= GMIME_UUDECODE_STATE_BEGIN;
	return i;
}

/* The most bytes decoding @len input bytes can write. */
static gsize decoded_bound(ImapfsDecoder *dec, gsize len)
{
	switch (dec->kind) {
	case DECODER_BASE64:
		return len / 4 * 3 + 3;
	case DECODER_IDENTITY:
		return len;
	default:
		return g_mime_encoding_outlen(&dec->gmime, len);
	}
}

/* GMime's uudecoder keeps no "at a line start" between calls, only the
 * bytes left in the current line (bits 8-15 of its state). After a block
 * that ends in a newline, saying none are left makes the next block start
 * a line, as a single call would: CRLF lines otherwise decode differently
 * when split after the LF. */
static gsize uu_step(GMimeEncoding *uu, const guint8 *in, gsize len,
		     guint8 *out)
{
	gsize n = g_mime_encoding_step(uu, (const char *)in, len, (char *)out);

	if (in[len - 1] == '\n')
		uu->state &= ~0xff00;
	return n;
}

static gsize decode_block(ImapfsDecoder *dec, const guint8 *in, gsize len,
			  guint8 *out)
{
	switch (dec->kind) {
	case DECODER_BASE64:
		return g_base64_decode_step((const char *)in, len, out,
					    &dec->b64_state, &dec->b64_save);
	case DECODER_IDENTITY:
		memcpy(out, in, len);
		return len;
	case DECODER_UU:
		return uu_step(&dec->gmime, in, len, out);
	default:
		return g_mime_encoding_step(&dec->gmime, (const char *)in, len,
					    (char *)out);
	}
}

gsize imapfs_decoder_step(ImapfsDecoder *dec, const guint8 *in, gsize len,
			  GByteArray *out)
{
	guint old = out->len;
	gsize bound, n;

	g_return_val_if_fail(in || len == 0, 0);
	if (dec->kind == DECODER_UU && dec->uu != UU_DATA) {
		gsize skipped = uu_skip_to_data(dec, in, len);

		in += skipped;
		len -= skipped;
	}
	if (len == 0)
		return 0;
	/* A GByteArray holds at most G_MAXUINT bytes. */
	g_return_val_if_fail(len <= G_MAXUINT, 0);
	bound = decoded_bound(dec, len);
	g_return_val_if_fail(bound <= G_MAXUINT - old, 0);
	g_byte_array_set_size(out, old + bound);
	n = decode_block(dec, in, len, out->data + old);
	g_assert(n <= bound);
	g_byte_array_set_size(out, old + n);
	return n;
}

/* What GMime's quoted-printable decoder holds at the end: after "=" (state
 * 1) it is a soft break, as is "=\r"; any other "=X" (state 2, X in save)
 * is no escape and is passed through like the ones GMime meets mid-body.
 * The state values are GMime's, unchanged since GMime 2. */
static gsize qp_tail(const GMimeEncoding *qp, guint8 *out)
{
	if (qp->state != 2 || qp->save == '\r')
		return 0;
	out[0] = '=';
	out[1] = qp->save;
	return 2;
}

gsize imapfs_decoder_finish(ImapfsDecoder *dec, GByteArray *out)
{
	guint8 tail[3];
	gsize n = 0;

	if (dec->kind == DECODER_BASE64)
		n = base64_tail(dec->b64_state, dec->b64_save, tail);
	else if (dec->kind == DECODER_QP)
		n = qp_tail(&dec->gmime, tail);
	g_byte_array_append(out, tail, n);
	decoder_reset(dec);
	return n;
}

void imapfs_decoder_free(ImapfsDecoder *dec)
{
	g_free(dec);
}
