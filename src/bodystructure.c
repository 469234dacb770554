/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * BODYSTRUCTURE -> ImapfsPart tree (see the header for the rules).
 *
 * The shapes, RFC 3501 section 9 and RFC 9051 section 9, simplified:
 *   single part  (type subtype params id desc enc octets
 *                 [envelope body lines | lines] [md5 [dsp [lang [loc ...]]]])
 *   multipart    (body body ... subtype [params [dsp [lang [loc ...]]]])
 * Every field is read by position with a default for whatever is missing or
 * of the wrong kind; the few guesses needed for what real servers send
 * are explained where they are made.
 */
#include <string.h>

#include "imapfs/bodystructure.h"
#include "imapfs/error.h"

typedef struct {
	guint parts; /* parts made so far, against the limit */
} Builder;

static ImapfsPart *parse_body(Builder *b, const ImapfsArg *arg, guint depth,
			      const char *section, const char *name_section,
			      GError **error);

/* ---- reading fields ---- */

static const ImapfsArg *nth(const GPtrArray *list, guint i)
{
	return list && i < list->len ? g_ptr_array_index(list, i) : NULL;
}

static gboolean is_list(const ImapfsArg *arg)
{
	return imapfs_arg_list(arg) != NULL;
}

static gboolean is_nil(const ImapfsArg *arg)
{
	return arg && arg->type == IMAPFS_ARG_NIL;
}

/* Lower-cased copy of a word, @fallback when it is NIL, empty or no word. */
static char *dup_lower(const ImapfsArg *arg, const char *fallback)
{
	const char *s = imapfs_arg_str(arg);

	return g_ascii_strdown(s && *s ? s : fallback, -1);
}

/* Numbers are atoms, but some servers quote them. Anything else, an
 * overflow included, counts as missing. */
static gboolean read_number(const ImapfsArg *arg, guint64 *value_r)
{
	ImapfsArg atom;

	if (imapfs_arg_number(arg, value_r))
		return TRUE;
	if (!arg || arg->type != IMAPFS_ARG_STRING || !arg->data)
		return FALSE;
	atom = *arg;
	atom.type = IMAPFS_ARG_ATOM;
	return imapfs_arg_number(&atom, value_r);
}

static void param_free(gpointer data)
{
	ImapfsParam *param = data;

	g_free(param->name);
	g_free(param->value);
	g_free(param);
}

/* Appends the (name value) pairs of @arg to @params. A pair whose name is
 * not a string is dropped, as is the last word of an odd-length list. */
static void read_params(GPtrArray *params, const ImapfsArg *arg)
{
	GPtrArray *list = imapfs_arg_list(arg);

	for (guint i = 0; list && i + 1 < list->len; i += 2) {
		const char *name = imapfs_arg_str(list->pdata[i]);
		const char *value = imapfs_arg_str(list->pdata[i + 1]);
		ImapfsParam *param;

		if (!name || !*name)
			continue;
		param = g_new(ImapfsParam, 1);
		param->name = g_ascii_strdown(name, -1);
		param->value = g_strdup(value ? value : "");
		g_ptr_array_add(params, param);
	}
}

/* ("attachment" (params)) or NIL; a bare word is taken as the kind. */
static void read_disposition(ImapfsPart *part, const ImapfsArg *arg)
{
	GPtrArray *list = imapfs_arg_list(arg);
	const char *kind = imapfs_arg_str(list ? nth(list, 0) : arg);

	if (kind && *kind)
		part->disposition = g_ascii_strdown(kind, -1);
	if (list)
		read_params(part->disposition_params, nth(list, 1));
}

/* An nstring or a list of strings (RFC 3501 body-fld-lang). */
static char *read_language(const ImapfsArg *arg)
{
	GPtrArray *list = imapfs_arg_list(arg);
	g_autoptr(GString) out = NULL;

	if (!list)
		return g_strdup(imapfs_arg_str(arg));
	out = g_string_new(NULL);
	for (guint i = 0; i < list->len; i++) {
		const char *lang = imapfs_arg_str(list->pdata[i]);

		if (!lang || !*lang)
			continue;
		if (out->len > 0)
			g_string_append(out, ", ");
		g_string_append(out, lang);
	}
	return out->len > 0 ? g_string_free(g_steal_pointer(&out), FALSE)
			    : NULL;
}

/* body-ext-1part (@single, starting with md5) or body-ext-mpart (starting
 * with the parameters) from position @i; whatever follows the location is
 * extension data nobody has defined yet, and skipped. */
static void read_extension(ImapfsPart *part, const GPtrArray *list, guint i,
			   gboolean single)
{
	if (single)
		part->md5 = g_strdup(imapfs_arg_str(nth(list, i)));
	else
		read_params(part->params, nth(list, i));
	read_disposition(part, nth(list, i + 1));
	part->language = read_language(nth(list, i + 2));
	part->location = g_strdup(imapfs_arg_str(nth(list, i + 3)));
}

/* ---- telling the shapes apart ---- */

/* Whether @arg could be a body rather than a parameter or disposition
 * list: a multipart starts with a list, a single part has its parameter
 * list (or NIL) third. */
static gboolean looks_like_body(const ImapfsArg *arg)
{
	GPtrArray *list = imapfs_arg_list(arg);
	const ImapfsArg *third = nth(list, 2);

	if (!list)
		return FALSE;
	return is_list(nth(list, 0)) || is_list(third) || is_nil(third);
}

static gboolean is_media_type(const char *type)
{
	static const char *const types[] = {
		"text",	       "image",	    "audio",   "video",
		"application", "font",	    "model",   "haptics",
		"message",     "multipart", "example",
	};

	for (gsize i = 0; i < G_N_ELEMENTS(types); i++) {
		if (g_ascii_strcasecmp(type, types[i]) == 0)
			return TRUE;
	}
	return g_ascii_strncasecmp(type, "x-", 2) == 0;
}

/*
 * A list of children and a subtype. Gmail also sends multiparts without
 * children as their subtype plus extension data, ("ALTERNATIVE" ("BOUNDARY"
 * "x") NIL NIL) or even ("ALTERNATIVE"): that is no single part, whose
 * first word would be a media type and second its subtype, and which would
 * have at least the seven body-type-basic fields.
 */
static gboolean is_multipart_list(const GPtrArray *list)
{
	const char *first = imapfs_arg_str(nth(list, 0));

	if (is_list(nth(list, 0)))
		return TRUE;
	return first && !is_media_type(first) && list->len <= 5 &&
	       !imapfs_arg_str(nth(list, 1));
}

/* A single part that says it is a multipart: an empty multipart whose
 * fields are read like a single part's. */
static gboolean is_typed_multipart(const GPtrArray *list)
{
	const char *first = imapfs_arg_str(nth(list, 0));

	return first && g_ascii_strcasecmp(first, "multipart") == 0;
}

static gboolean is_message(const ImapfsPart *part)
{
	return strcmp(part->type, "message") == 0 &&
	       (strcmp(part->subtype, "rfc822") == 0 ||
		strcmp(part->subtype, "global") == 0);
}

/* Whether a message part carries envelope and body at 7 and 8. Dovecot
 * sends message/global without them, other servers message/rfc822 too;
 * then 7 is md5 and 8 the disposition, which is no body. */
static gboolean has_message_fields(const GPtrArray *list)
{
	const ImapfsArg *envelope = nth(list, 7);

	return is_list(envelope) ||
	       (is_nil(envelope) && looks_like_body(nth(list, 8)));
}

/*
 * Whether body-fld-lines sits at @i. It belongs to text and message parts,
 * but servers send it for others too or leave it out. A number is always
 * lines, as md5 is a string. Where lines are expected a NIL is taken for
 * them too, unless a list follows: that can only be a disposition after
 * md5.
 */
static gboolean has_lines(const GPtrArray *list, guint i, gboolean expected)
{
	const ImapfsArg *arg = nth(list, i);
	guint64 unused;

	if (imapfs_arg_number(arg, &unused))
		return TRUE;
	if (!expected)
		return FALSE;
	return read_number(arg, &unused) ||
	       (is_nil(arg) && !is_list(nth(list, i + 1)));
}

/* ---- building the tree ---- */

static char *section_join(const char *prefix, guint n)
{
	return *prefix ? g_strdup_printf("%s.%u", prefix, n)
		       : g_strdup_printf("%u", n);
}

static gboolean count_part(Builder *b, guint depth, const char *section,
			   GError **error)
{
	if (depth > IMAPFS_BODYSTRUCTURE_MAX_DEPTH) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_PROTOCOL,
			    "BODYSTRUCTURE nested deeper than %d levels at "
			    "part \"%s\"",
			    IMAPFS_BODYSTRUCTURE_MAX_DEPTH, section);
		return FALSE;
	}
	if (b->parts >= IMAPFS_BODYSTRUCTURE_MAX_PARTS) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_PROTOCOL,
			    "BODYSTRUCTURE has more than %d parts",
			    IMAPFS_BODYSTRUCTURE_MAX_PARTS);
		return FALSE;
	}
	b->parts++;
	return TRUE;
}

static ImapfsPart *part_new(guint depth, const char *section,
			    const char *name_section)
{
	ImapfsPart *part = g_new0(ImapfsPart, 1);

	part->section = g_strdup(section);
	part->name_section = g_strdup(name_section);
	part->params = g_ptr_array_new_with_free_func(param_free);
	part->disposition_params = g_ptr_array_new_with_free_func(param_free);
	part->depth = depth;
	return part;
}

static GPtrArray *children_new(void)
{
	return g_ptr_array_new_with_free_func((GDestroyNotify)imapfs_part_free);
}

/*
 * The body of a message whose section is @msg_section: a multipart takes
 * the message's own section, a single part is its ".1" (RFC 3501 6.4.5).
 * The file names count from the message, hence "" and "1".
 */
static ImapfsPart *parse_message_body(Builder *b, const ImapfsArg *arg,
				      guint depth, const char *msg_section,
				      GError **error)
{
	GPtrArray *list = imapfs_arg_list(arg);
	g_autofree char *section = NULL;

	if (list && (is_multipart_list(list) || is_typed_multipart(list)))
		return parse_body(b, arg, depth, msg_section, "", error);
	section = section_join(msg_section, 1);
	return parse_body(b, arg, depth, section, "1", error);
}

static gboolean add_child(Builder *b, ImapfsPart *part, const ImapfsArg *arg,
			  GError **error)
{
	guint n = part->children->len + 1;
	g_autofree char *section = section_join(part->section, n);
	g_autofree char *name = section_join(part->name_section, n);
	ImapfsPart *child =
		parse_body(b, arg, part->depth + 1, section, name, error);

	if (!child)
		return FALSE;
	g_ptr_array_add(part->children, child);
	return TRUE;
}

/* The leading lists are the children. A stray word between two of them is
 * skipped; the first word not followed by a body is the subtype. */
static gboolean parse_multipart(Builder *b, ImapfsPart *part,
				const GPtrArray *list, GError **error)
{
	guint i = 0;

	part->children = children_new();
	for (; i < list->len; i++) {
		const ImapfsArg *arg = list->pdata[i];

		if (!is_list(arg)) {
			if (looks_like_body(nth(list, i + 1)))
				continue;
			break;
		}
		if (!add_child(b, part, arg, error))
			return FALSE;
	}
	part->type = g_strdup("multipart");
	part->subtype = dup_lower(nth(list, i), "mixed");
	part->encoding = g_strdup("7bit"); /* RFC 2045 6.4 */
	read_extension(part, list, i + 1, FALSE);
	return TRUE;
}

static const char *default_subtype(const char *type)
{
	if (strcmp(type, "text") == 0)
		return "plain";
	if (strcmp(type, "multipart") == 0)
		return "mixed";
	return "octet-stream";
}

/* The body of an attached message, at 8 after the envelope (which is not
 * kept: ENVELOPE of the top message is fetched on its own). */
static gboolean read_attached(Builder *b, ImapfsPart *part,
			      const GPtrArray *list, GError **error)
{
	const ImapfsArg *body = nth(list, 8);

	/* () as the body says as little as no body */
	if (!is_list(body) || imapfs_arg_list(body)->len == 0)
		return TRUE;
	part->message = parse_message_body(b, body, part->depth + 1,
					   part->section, error);
	return part->message != NULL;
}

static gboolean parse_single(Builder *b, ImapfsPart *part,
			     const GPtrArray *list, GError **error)
{
	gboolean message;
	guint i = 7;

	part->type = dup_lower(nth(list, 0), "text");
	part->subtype = dup_lower(nth(list, 1), default_subtype(part->type));
	read_params(part->params, nth(list, 2));
	part->id = g_strdup(imapfs_arg_str(nth(list, 3)));
	part->description = g_strdup(imapfs_arg_str(nth(list, 4)));
	part->encoding = dup_lower(nth(list, 5), "7bit");
	read_number(nth(list, 6), &part->size);

	message = is_message(part) && has_message_fields(list);
	if (message) {
		if (!read_attached(b, part, list, error))
			return FALSE;
		i = 9;
	}
	if (has_lines(list, i, message || strcmp(part->type, "text") == 0))
		read_number(nth(list, i++), &part->lines);
	read_extension(part, list, i, TRUE);
	if (strcmp(part->type, "multipart") == 0)
		part->children = children_new();
	return TRUE;
}

static ImapfsPart *parse_body(Builder *b, const ImapfsArg *arg, guint depth,
			      const char *section, const char *name_section,
			      GError **error)
{
	GPtrArray *list = imapfs_arg_list(arg);
	g_autoptr(ImapfsPart) part = NULL;
	gboolean ok;

	if (!list || list->len == 0) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_PROTOCOL,
			    "invalid BODYSTRUCTURE part \"%s\": not a "
			    "non-empty list",
			    section);
		return NULL;
	}
	if (!count_part(b, depth, section, error))
		return NULL;
	part = part_new(depth, section, name_section);
	if (is_multipart_list(list))
		ok = parse_multipart(b, part, list, error);
	else
		ok = parse_single(b, part, list, error);
	return ok ? g_steal_pointer(&part) : NULL;
}

ImapfsPart *imapfs_bodystructure_parse(const ImapfsArg *arg, GError **error)
{
	Builder b = {0};

	return parse_message_body(&b, arg, 0, "", error);
}

/* The value in "* 1 FETCH (BODYSTRUCTURE value)", or NULL. */
static const ImapfsArg *wrapped_value(const ImapfsResponse *resp)
{
	GPtrArray *items = resp->args->len == 3
				   ? imapfs_arg_list(resp->args->pdata[2])
				   : NULL;

	if (!items || items->len != 2 ||
	    !imapfs_arg_is_atom(items->pdata[0], "BODYSTRUCTURE"))
		return NULL;
	return items->pdata[1];
}

ImapfsPart *imapfs_bodystructure_parse_string(const char *text, gssize len,
					      GError **error)
{
	static const char head[] = "* 1 FETCH (BODYSTRUCTURE ";
	g_autoptr(ImapfsParser) parser = imapfs_parser_new(NULL);
	g_autoptr(ImapfsResponse) resp = NULL;
	g_autoptr(GByteArray) line = g_byte_array_new();
	const ImapfsArg *value = NULL;
	const char *why = "not one value";
	gsize used = 0;

	if (len < 0)
		len = (gssize)strlen(text);
	g_byte_array_append(line, (const guint8 *)head, sizeof(head) - 1);
	g_byte_array_append(line, (const guint8 *)text, (guint)len);
	g_byte_array_append(line, (const guint8 *)")\r\n", 3);
	if (imapfs_parser_feed(parser, line->data, line->len, &used, &resp,
			       &why) == IMAPFS_PARSE_RESPONSE &&
	    used == line->len)
		value = wrapped_value(resp);
	if (!value) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_PROTOCOL,
			    "invalid BODYSTRUCTURE text: %s", why);
		return NULL;
	}
	return imapfs_bodystructure_parse(value, error);
}

/* ---- using the tree ---- */

void imapfs_part_free(ImapfsPart *part)
{
	if (!part)
		return;
	g_free(part->section);
	g_free(part->name_section);
	g_free(part->type);
	g_free(part->subtype);
	g_clear_pointer(&part->params, g_ptr_array_unref);
	g_free(part->id);
	g_free(part->description);
	g_free(part->encoding);
	g_free(part->md5);
	g_free(part->disposition);
	g_clear_pointer(&part->disposition_params, g_ptr_array_unref);
	g_free(part->language);
	g_free(part->location);
	g_clear_pointer(&part->children, g_ptr_array_unref);
	g_clear_pointer(&part->message, imapfs_part_free);
	g_free(part);
}

gboolean imapfs_part_is_multipart(const ImapfsPart *part)
{
	return part->children != NULL;
}

/* Every section under a part starts with the part's own, so only one
 * branch per level needs a look. */
static gboolean section_under(const char *section, const char *prefix)
{
	gsize len = strlen(prefix);

	return len == 0 || (strncmp(section, prefix, len) == 0 &&
			    (section[len] == '\0' || section[len] == '.'));
}

const ImapfsPart *imapfs_part_find(const ImapfsPart *root, const char *section)
{
	const ImapfsPart *found = NULL;

	if (!root || !section || !section_under(section, root->section))
		return NULL;
	if (strcmp(root->section, section) == 0)
		return root;
	if (root->message)
		found = imapfs_part_find(root->message, section);
	for (guint i = 0; !found && root->children && i < root->children->len;
	     i++)
		found = imapfs_part_find(root->children->pdata[i], section);
	return found;
}

static void collect_leaves(const ImapfsPart *part, GPtrArray *leaves)
{
	if (!part->children) {
		g_ptr_array_add(leaves, (gpointer)part);
		return;
	}
	for (guint i = 0; i < part->children->len; i++)
		collect_leaves(part->children->pdata[i], leaves);
}

GPtrArray *imapfs_part_leaves(const ImapfsPart *root)
{
	GPtrArray *leaves = g_ptr_array_new();

	collect_leaves(root, leaves);
	return leaves;
}

const char *imapfs_part_param(const GPtrArray *params, const char *name)
{
	for (guint i = 0; params && i < params->len; i++) {
		const ImapfsParam *param = params->pdata[i];

		if (g_ascii_strcasecmp(param->name, name) == 0)
			return param->value;
	}
	return NULL;
}
