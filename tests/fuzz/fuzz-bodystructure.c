/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libFuzzer target for BODYSTRUCTURE reading.
 *
 * The input is a BODYSTRUCTURE value as a server would send it, literals
 * included. It goes through the real IMAP parser and then
 * imapfs_bodystructure_parse(); the tree is walked with every accessor and
 * its promises (header) are checked. A broken promise aborts, so the fuzzer
 * reports it as a crash.
 */
#include <stdlib.h>
#include <string.h>

#include "imapfs/bodystructure.h"
#include "imapfs/error.h"

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size);

static void check(gboolean ok)
{
	if (!ok)
		abort();
}

static void check_lower(const char *s)
{
	for (; s && *s; s++)
		check(!g_ascii_isupper(*s));
}

static void check_params(const GPtrArray *params)
{
	check(params != NULL);
	for (guint i = 0; i < params->len; i++) {
		const ImapfsParam *param = params->pdata[i];

		check(param->name && *param->name && param->value);
		check_lower(param->name);
		check(imapfs_part_param(params, param->name) != NULL);
	}
}

static char *join(const char *prefix, guint n)
{
	return *prefix ? g_strdup_printf("%s.%u", prefix, n)
		       : g_strdup_printf("%u", n);
}

/* The body of a message at @section must carry the numbers the header
 * promises. */
static void check_body_section(const ImapfsPart *body, const char *section)
{
	g_autofree char *single = join(section, 1);

	if (imapfs_part_is_multipart(body)) {
		check(strcmp(body->section, section) == 0);
		check(strcmp(body->name_section, "") == 0);
	} else {
		check(strcmp(body->section, single) == 0);
		check(strcmp(body->name_section, "1") == 0);
	}
}

/* The leaves of the message whose body is @root. */
static void check_leaves(const ImapfsPart *root)
{
	g_autoptr(GPtrArray) leaves = imapfs_part_leaves(root);

	for (guint i = 0; i < leaves->len; i++) {
		const ImapfsPart *leaf = leaves->pdata[i];

		check(!imapfs_part_is_multipart(leaf));
		check(imapfs_part_find(root, leaf->section) != NULL);
	}
	if (!imapfs_part_is_multipart(root))
		check(leaves->len == 1 && leaves->pdata[0] == root);
}

static guint walk(const ImapfsPart *root, const ImapfsPart *part, guint depth);

static guint walk_children(const ImapfsPart *root, const ImapfsPart *part)
{
	guint count = 0;

	for (guint i = 0; i < part->children->len; i++) {
		const ImapfsPart *child = part->children->pdata[i];
		g_autofree char *section = join(part->section, i + 1);
		g_autofree char *name = join(part->name_section, i + 1);

		check(strcmp(child->section, section) == 0);
		check(strcmp(child->name_section, name) == 0);
		count += walk(root, child, part->depth + 1);
	}
	return count;
}

/* Checks @part and everything under it; returns how many parts that is. */
static guint walk(const ImapfsPart *root, const ImapfsPart *part, guint depth)
{
	const ImapfsPart *found = imapfs_part_find(root, part->section);
	guint count = 1;

	check(part->depth == depth && depth <= IMAPFS_BODYSTRUCTURE_MAX_DEPTH);
	check(part->section && part->name_section);
	check(part->type && part->subtype && part->encoding);
	check_lower(part->type);
	check_lower(part->subtype);
	check_lower(part->encoding);
	check_lower(part->disposition);
	check_params(part->params);
	check_params(part->disposition_params);
	check(found && strcmp(found->section, part->section) == 0);
	check(!(part->children && part->message));
	if (part->children)
		count += walk_children(root, part);
	if (part->message) {
		check_body_section(part->message, part->section);
		check_leaves(part->message);
		count += walk(root, part->message, depth + 1);
	}
	return count;
}

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size)
{
	g_autoptr(GError) error = NULL;
	g_autoptr(ImapfsPart) root = NULL;
	g_autofree char *probe = g_strndup((const char *)data, MIN(size, 12));

	root = imapfs_bodystructure_parse_string((const char *)data,
						 (gssize)size, &error);
	if (!root) {
		check(g_error_matches(error, IMAPFS_ERROR,
				      IMAPFS_ERROR_PROTOCOL));
		return 0;
	}
	check_body_section(root, "");
	check(walk(root, root, 0) <= IMAPFS_BODYSTRUCTURE_MAX_PARTS);
	check_leaves(root);
	/* any string is a fair question */
	imapfs_part_find(root, probe);
	imapfs_part_find(root, "1.2.3");
	return 0;
}
