/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The tree's <UID>.parts/ directories: a message's MIME parts as files,
 * transfer-decoded, from its BODYSTRUCTURE (fetched for the whole mailbox
 * with the ENVELOPEs, see tree-xattr.c).
 *
 * A parts directory is listed once per mount and then kept (a message never
 * changes): its names, and each file's exact decoded size. The size of a
 * part in an identity encoding (7bit, 8bit, binary) is its BODYSTRUCTURE
 * size; a base64 or quoted-printable part gets BINARY.SIZE when the server
 * has BINARY (one command for all parts of the message), and is otherwise
 * fetched whole and decoded into the block cache, which then knows its
 * size. Never the encoded size.
 */
#include <string.h>

#include "imapfs/error.h"
#include "imapfs/mime.h"
#include "tree-private.h"

typedef struct {
	guint64 ino;
	guint32 slot, uid;
	char *section; /* absolute; "" for the message's own N.parts/ */
	gboolean dir;
	/* Files: how to read them, and their size. */
	guint64 size;
	gboolean checked;     /* size confirmed by reading */
	char *decode;	      /* Content-Transfer-Encoding undone here */
	guint64 encoded_size; /* with decode: as BODYSTRUCTURE said */
	gboolean binary;      /* read with BINARY.PEEK */
	char *charset;	      /* text parts: as sent */
	/* Directories: ImapfsDirEntry *, NULL until listed. */
	GPtrArray *entries;
} PartNode;

void tree_part_node_free(gpointer p)
{
	PartNode *n = p;

	g_free(n->section);
	g_free(n->decode);
	g_free(n->charset);
	if (n->entries)
		g_ptr_array_unref(n->entries);
	g_free(n);
}

guint64 tree_parts_dir_ino(const Mailbox *m, guint32 uid)
{
	return (guint64)m->slot << SLOT_SHIFT | (guint64)uid << UID_SHIFT |
	       KIND_PARTS_DIR;
}

gboolean tree_is_part(guint64 ino)
{
	return (ino & 0xff) == KIND_PART || (ino & 0xff) == KIND_PARTS_DIR;
}

gboolean imapfs_tree_is_part(ImapfsTree *tree, guint64 ino)
{
	return tree_is_part(ino);
}

gboolean tree_parse_parts_name(const char *name, guint32 *uid_r)
{
	return tree_parse_uid_name(name, ".parts", uid_r);
}

void tree_parts_dir_attr(const Mailbox *m, const ImapfsMessageInfo *info,
			 ImapfsAttr *attr)
{
	attr->ino = tree_parts_dir_ino(m, info->uid);
	attr->kind = IMAPFS_NODE_PART_DIR;
	attr->size = 0;
	attr->mtime = info->internaldate;
}

/* The node @ino names (created for a N.parts/ on first use), with its
 * message's mailbox and listing entry; NULL when the message is gone.
 * Called locked. */
static PartNode *find_node(ImapfsTree *tree, guint64 ino, Mailbox **m_r,
			   ImapfsMessageInfo **info_r)
{
	PartNode *n = g_hash_table_lookup(tree->part_nodes, &ino);
	guint64 slot = ino >> SLOT_SHIFT;

	if (n == NULL && (ino & 0xff) == KIND_PARTS_DIR &&
	    slot < tree->slots->len) {
		n = g_new0(PartNode, 1);
		n->ino = ino;
		n->slot = (guint32)slot;
		n->uid = (guint32)(ino >> UID_SHIFT);
		n->section = g_strdup("");
		n->dir = TRUE;
		g_hash_table_insert(tree->part_nodes, &n->ino, n);
	}
	if (n == NULL || n->slot >= tree->slots->len)
		return NULL;
	Mailbox *m = tree->slots->pdata[n->slot];
	ImapfsMessageInfo *info = tree_find_message(m, n->uid);
	if (info == NULL)
		return NULL;
	*m_r = m;
	*info_r = info;
	return n;
}

static void node_attr(const PartNode *n, const ImapfsMessageInfo *info,
		      ImapfsAttr *attr)
{
	attr->ino = n->ino;
	attr->kind = n->dir ? IMAPFS_NODE_PART_DIR : IMAPFS_NODE_PART;
	attr->size = n->dir ? 0 : n->size;
	attr->mtime = info->internaldate;
}

gboolean tree_part_getattr_locked(ImapfsTree *tree, guint64 ino,
				  ImapfsAttr *attr)
{
	Mailbox *m;
	ImapfsMessageInfo *info;
	PartNode *n = find_node(tree, ino, &m, &info);

	if (n)
		node_attr(n, info, attr);
	return n != NULL;
}

/* --- listing a parts directory -------------------------------------------
 */

/* One entry being planned, before nodes exist. */
typedef struct {
	char *name;
	char *section;
	gboolean dir;
	guint64 size;
	char *encoding;	      /* NULL: identity, the size is known */
	guint64 encoded_size; /* as BODYSTRUCTURE said */
	gboolean binary;
	char *charset;
} Plan;

static void plan_clear(gpointer p)
{
	Plan *x = p;

	g_free(x->name);
	g_free(x->section);
	g_free(x->encoding);
	g_free(x->charset);
}

/* "name", "value", ... for imapfs_mime_part_name(). */
static char **param_strv(const GPtrArray *params)
{
	GStrvBuilder *b = g_strv_builder_new();

	for (guint i = 0; i < params->len; i++) {
		const ImapfsParam *p = params->pdata[i];
		g_strv_builder_add(b, p->name);
		g_strv_builder_add(b, p->value);
	}
	char **out = g_strv_builder_end(b);
	g_strv_builder_unref(b);
	return out;
}

static gboolean is_identity(const char *encoding)
{
	g_autoptr(ImapfsDecoder) dec = imapfs_decoder_new(encoding);

	return imapfs_decoder_is_identity(dec);
}

static void plan_leaf(GArray *plan, const ImapfsPart *leaf)
{
	g_auto(GStrv) params = param_strv(leaf->params);
	g_auto(GStrv) disp = param_strv(leaf->disposition_params);
	Plan x = {0};

	x.name = imapfs_mime_part_name(
		*leaf->name_section ? leaf->name_section : "1", leaf->type,
		leaf->subtype, (const char *const *)params,
		(const char *const *)disp);
	x.section = g_strdup(leaf->section);
	x.size = x.encoded_size = leaf->size;
	if (!is_identity(leaf->encoding))
		x.encoding = g_strdup(leaf->encoding);
	if (g_str_equal(leaf->type, "text"))
		x.charset =
			g_strdup(imapfs_part_param(leaf->params, "charset"));
	g_array_append_val(plan, x);
	if (leaf->message == NULL)
		return;
	Plan d = {0};
	/* "3.eml" -> "3.parts" (imapfs_mime_part_name gives .eml). */
	const char *dot = strrchr(x.name, '.');
	int stem = dot ? (int)(dot - x.name) : (int)strlen(x.name);
	d.name = g_strdup_printf("%.*s.parts", stem, x.name);
	d.section = g_strdup(leaf->section);
	d.dir = TRUE;
	g_array_append_val(plan, d);
}

/* The entries of the parts directory of the message part at @section
 * ("": the message itself) in @structure. Called locked (the structure
 * belongs to the mailbox's metadata). */
static GArray *plan_dir(const ImapfsPart *structure, const char *section)
{
	GArray *plan = g_array_new(FALSE, TRUE, sizeof(Plan));
	const ImapfsPart *root = structure;

	g_array_set_clear_func(plan, plan_clear);
	if (root && *section) {
		const ImapfsPart *p = imapfs_part_find(structure, section);
		root = p ? p->message : NULL;
	}
	if (root == NULL)
		return plan;
	g_autoptr(GPtrArray) leaves = imapfs_part_leaves(root);
	for (guint i = 0; i < leaves->len; i++)
		plan_leaf(plan, leaves->pdata[i]);
	g_autofree const char **names = g_new0(const char *, plan->len + 1);
	for (guint i = 0; i < plan->len; i++)
		names[i] = g_array_index(plan, Plan, i).name;
	g_auto(GStrv) unique = imapfs_mime_unique_names(names);
	for (guint i = 0; i < plan->len; i++) {
		Plan *x = &g_array_index(plan, Plan, i);
		g_free(x->name);
		x->name = g_strdup(unique[i]);
	}
	return plan;
}

/* Whether the server decodes @encoding for BINARY (RFC 3516 names only
 * these two; anything else gets NO [UNKNOWN-CTE]). */
static gboolean binary_decodes(const char *encoding)
{
	return g_ascii_strcasecmp(encoding, "base64") == 0 ||
	       g_ascii_strcasecmp(encoding, "quoted-printable") == 0;
}

/* Messages whose BINARY.SIZEs one command batch asks for: the one being
 * listed and those after it, which ls -R lists next. */
#define SIZES_AHEAD 256

static char *size_id(guint32 uid, const char *section)
{
	return g_strdup_printf("%u/%s", uid, section);
}

/* Adds to @out the sections under @root (attached messages' included)
 * that BINARY would decode and whose size is not known yet. Called
 * locked. */
static void unknown_sizes(const Mailbox *m, guint32 uid, const ImapfsPart *root,
			  GPtrArray *out)
{
	g_autoptr(GPtrArray) leaves = imapfs_part_leaves(root);

	for (guint i = 0; i < leaves->len; i++) {
		const ImapfsPart *p = leaves->pdata[i];
		g_autofree char *id = size_id(uid, p->section);
		if (binary_decodes(p->encoding) &&
		    !g_hash_table_contains(m->binary_sizes, id))
			g_ptr_array_add(out, g_strdup(p->section));
		if (p->message)
			unknown_sizes(m, uid, p->message, out);
	}
}

typedef struct {
	GArray *req; /* ImapfsBinarySizes, sections owned */
	gboolean no_binary;
} SizesJob;

static void sizes_clear(gpointer p)
{
	ImapfsBinarySizes *r = p;

	g_strfreev((char **)r->sections);
	g_free(r->sizes);
}

/* The batch for @uid and the messages after it, none when @uid's sizes
 * are known already. Called locked. */
static GArray *plan_batch(Mailbox *m, guint32 uid)
{
	GArray *req = g_array_new(FALSE, TRUE, sizeof(ImapfsBinarySizes));

	g_array_set_clear_func(req, sizes_clear);
	if (m->binary_sizes == NULL)
		m->binary_sizes = g_hash_table_new_full(g_str_hash, g_str_equal,
							g_free, g_free);
	ImapfsMessageInfo *first = tree_find_message(m, uid);
	if (first == NULL || m->meta == NULL)
		return req;
	guint start = first - &g_array_index(m->messages, ImapfsMessageInfo, 0);
	for (guint i = start; i < m->messages->len && req->len < SIZES_AHEAD;
	     i++) {
		guint32 u =
			g_array_index(m->messages, ImapfsMessageInfo, i).uid;
		ImapfsMessageMeta *meta =
			g_hash_table_lookup(m->meta, GUINT_TO_POINTER(u));
		if (meta == NULL || meta->structure == NULL)
			continue;
		GPtrArray *sections = g_ptr_array_new();
		unknown_sizes(m, u, meta->structure, sections);
		if (sections->len == 0) {
			g_ptr_array_unref(sections);
			/* @uid's own are known (an earlier batch asked
			 * for them): nothing to ask now. */
			if (i == start)
				break;
			continue;
		}
		g_ptr_array_add(sections, NULL);
		ImapfsBinarySizes r = {u, NULL, NULL, FALSE};
		r.sizes = g_new0(guint64, sections->len - 1);
		r.sections =
			(const char *const *)g_ptr_array_free(sections, FALSE);
		g_array_append_val(req, r);
	}
	return req;
}

static gboolean sizes_func(ImapfsSession *s, gpointer data, GError **error)
{
	SizesJob *j = data;

	if (!imapfs_session_has(s, IMAPFS_CAP_BINARY)) {
		j->no_binary = TRUE;
		return TRUE;
	}
	return imapfs_session_binary_sizes(
		s, (ImapfsBinarySizes *)(void *)j->req->data, j->req->len,
		error);
}

/* Keeps the answers; a refused message's sections are marked so. Called
 * locked. */
static void store_sizes(Mailbox *m, SizesJob *j)
{
	m->no_binary |= j->no_binary;
	for (guint i = 0; !j->no_binary && i < j->req->len; i++) {
		ImapfsBinarySizes *r =
			&g_array_index(j->req, ImapfsBinarySizes, i);
		for (guint k = 0; r->sections[k]; k++) {
			guint64 *v = g_new(guint64, 1);
			*v = r->found ? r->sizes[k] : G_MAXUINT64;
			g_hash_table_replace(m->binary_sizes,
					     size_id(r->uid, r->sections[k]),
					     v);
		}
	}
}

/* Sets size and binary in @plan for what BINARY.SIZE gave. Called
 * locked. */
static void apply_sizes(const Mailbox *m, guint32 uid, GArray *plan)
{
	for (guint i = 0; m->binary_sizes && i < plan->len; i++) {
		Plan *x = &g_array_index(plan, Plan, i);
		g_autofree char *id = size_id(uid, x->section);
		const guint64 *v =
			x->dir || x->encoding == NULL
				? NULL
				: g_hash_table_lookup(m->binary_sizes, id);
		if (v && *v != G_MAXUINT64) {
			x->size = *v;
			x->binary = TRUE;
		}
	}
}

/* BINARY.SIZE for the parts in @plan of parts directory @ino, asked
 * together with the messages after it when not known yet. */
static gboolean binary_sizes(ImapfsTree *tree, guint64 ino,
			     const ImapfsMessageKey *key, GArray *plan,
			     GError **error)
{
	SizesJob j = {NULL, FALSE};
	Mailbox *m;
	ImapfsMessageInfo *info;

	g_mutex_lock(&tree->lock);
	if (find_node(tree, ino, &m, &info) && !m->no_binary)
		j.req = plan_batch(m, key->uid);
	g_mutex_unlock(&tree->lock);
	if (j.req && j.req->len > 0 &&
	    !imapfs_pool_run(tree->pool, key->mailbox, key->uidvalidity, TRUE,
			     sizes_func, &j, error)) {
		g_array_unref(j.req);
		return FALSE;
	}
	g_mutex_lock(&tree->lock);
	if (find_node(tree, ino, &m, &info)) {
		if (j.req)
			store_sizes(m, &j);
		apply_sizes(m, key->uid, plan);
	}
	g_mutex_unlock(&tree->lock);
	if (j.req)
		g_array_unref(j.req);
	return TRUE;
}

/* Gives every file of @plan (directory @ino) its decoded size:
 * BINARY.SIZE where the server can, else by fetching and decoding it
 * into the cache. */
static gboolean plan_sizes(ImapfsTree *tree, guint64 ino, ImapfsMessageKey *key,
			   GArray *plan, GError **error)
{
	gboolean any = FALSE;

	for (guint i = 0; i < plan->len; i++)
		any |= g_array_index(plan, Plan, i).encoding != NULL;
	if (!any)
		return TRUE;
	if (!binary_sizes(tree, ino, key, plan, error))
		return FALSE;
	for (guint i = 0; i < plan->len; i++) {
		Plan *x = &g_array_index(plan, Plan, i);
		if (x->dir || x->encoding == NULL || x->binary)
			continue;
		key->section = x->section;
		key->decode = x->encoding;
		key->encoded_size = x->encoded_size;
		if (!imapfs_block_cache_size(tree->cache, key, 0, &x->size,
					     error))
			return FALSE;
	}
	return TRUE;
}

/* The node for @x under directory @d, made on first use. Called locked. */
static PartNode *plan_node(ImapfsTree *tree, const PartNode *d, Plan *x)
{
	g_autofree char *id = g_strdup_printf("%u/%u/%s/%c", d->slot, d->uid,
					      x->section, x->dir ? 'd' : 'f');
	PartNode *n = g_hash_table_lookup(tree->part_keys, id);

	if (n)
		return n;
	n = g_new0(PartNode, 1);
	n->ino = ++tree->part_seq << UID_SHIFT | KIND_PART;
	n->slot = d->slot;
	n->uid = d->uid;
	n->section = g_strdup(x->section);
	n->dir = x->dir;
	n->size = x->size;
	n->binary = x->binary;
	if (!x->binary)
		n->decode = g_strdup(x->encoding);
	n->encoded_size = x->encoded_size;
	n->charset = g_strdup(x->charset);
	g_hash_table_insert(tree->part_nodes, &n->ino, n);
	g_hash_table_insert(tree->part_keys, g_steal_pointer(&id), n);
	return n;
}

/* A copy of a listing, with the sizes opens have corrected since.
 * Called locked. */
static GPtrArray *copy_entries(ImapfsTree *tree, const GPtrArray *entries)
{
	GPtrArray *out =
		g_ptr_array_new_full(entries->len, imapfs_dir_entry_free);

	for (guint i = 0; i < entries->len; i++) {
		const ImapfsDirEntry *e = entries->pdata[i];
		ImapfsAttr attr = e->attr;
		const PartNode *n =
			g_hash_table_lookup(tree->part_nodes, &attr.ino);
		if (n && !n->dir)
			attr.size = n->size;
		tree_add_entry(out, g_strdup(e->name), &attr);
	}
	return out;
}

/* The listing of parts directory @ino, when already made. Fills @key
 * (mailbox name to free) and *@section_r otherwise. Called locked. */
static GPtrArray *known_entries(ImapfsTree *tree, guint64 ino,
				ImapfsMessageKey *key, char **section_r,
				gboolean *gone_r)
{
	Mailbox *m;
	ImapfsMessageInfo *info;
	PartNode *d = find_node(tree, ino, &m, &info);

	*gone_r = d == NULL || !d->dir;
	if (*gone_r)
		return NULL;
	if (d->entries)
		return copy_entries(tree, d->entries);
	key->mailbox = g_strdup(m->server_name);
	key->uidvalidity = m->state.uidvalidity;
	key->uid = d->uid;
	*section_r = g_strdup(d->section);
	return NULL;
}

/* Makes the nodes and the listing of @ino from @plan. Called locked. */
static GPtrArray *install_plan(ImapfsTree *tree, guint64 ino, GArray *plan)
{
	Mailbox *m;
	ImapfsMessageInfo *info;
	PartNode *d = find_node(tree, ino, &m, &info);

	if (d == NULL)
		return NULL;
	if (d->entries == NULL) {
		d->entries =
			g_ptr_array_new_with_free_func(imapfs_dir_entry_free);
		for (guint i = 0; i < plan->len; i++) {
			Plan *x = &g_array_index(plan, Plan, i);
			ImapfsAttr attr;
			node_attr(plan_node(tree, d, x), info, &attr);
			tree_add_entry(d->entries, g_strdup(x->name), &attr);
		}
	}
	return copy_entries(tree, d->entries);
}

/* The plan of directory @ino from the message's BODYSTRUCTURE (loaded
 * with the mailbox's metadata if need be); an unreadable structure
 * gives an empty directory. */
static GArray *load_plan(ImapfsTree *tree, guint64 ino, const char *section,
			 GError **error)
{
	guint64 msg_ino = ino;
	Mailbox *m;
	ImapfsMessageInfo *info;

	g_mutex_lock(&tree->lock);
	PartNode *d = find_node(tree, ino, &m, &info);
	if (d)
		msg_ino = tree_message_ino(m, d->uid);
	g_mutex_unlock(&tree->lock);
	if (d == NULL) {
		tree_fail_noent(error, "parts");
		return NULL;
	}
	if (!tree_load_meta(tree, msg_ino, error))
		return NULL;
	GArray *plan = NULL;
	guint32 uid;
	g_mutex_lock(&tree->lock);
	if (tree_decode_message(tree, msg_ino, &m, &uid) && m->meta) {
		ImapfsMessageMeta *meta =
			g_hash_table_lookup(m->meta, GUINT_TO_POINTER(uid));
		plan = plan_dir(meta ? meta->structure : NULL, section);
	}
	g_mutex_unlock(&tree->lock);
	if (plan == NULL)
		tree_fail_noent(error, "parts");
	return plan;
}

GPtrArray *tree_part_readdir(ImapfsTree *tree, guint64 ino, GError **error)
{
	ImapfsMessageKey key = {0};
	g_autofree char *section = NULL;
	gboolean gone;

	g_mutex_lock(&tree->lock);
	GPtrArray *out = known_entries(tree, ino, &key, &section, &gone);
	g_mutex_unlock(&tree->lock);
	g_autofree char *mailbox = (char *)key.mailbox;
	if (out || gone) {
		if (gone)
			tree_fail_noent(error, "parts");
		return out;
	}
	g_autoptr(GArray) plan = load_plan(tree, ino, section, error);
	if (plan == NULL || !plan_sizes(tree, ino, &key, plan, error))
		return NULL;
	g_mutex_lock(&tree->lock);
	out = install_plan(tree, ino, plan);
	g_mutex_unlock(&tree->lock);
	if (out == NULL)
		tree_fail_noent(error, "parts");
	return out;
}

/* @name in the listing of parts directory @ino, if it was made; on a
 * match fills @attr with the size as now known. Called locked. */
static gboolean known_entry(ImapfsTree *tree, guint64 ino, const char *name,
			    ImapfsAttr *attr, gboolean *listed_r)
{
	const PartNode *d = g_hash_table_lookup(tree->part_nodes, &ino);

	*listed_r = d && d->entries;
	for (guint i = 0; *listed_r && i < d->entries->len; i++) {
		const ImapfsDirEntry *e = d->entries->pdata[i];
		if (strcmp(e->name, name) != 0)
			continue;
		*attr = e->attr;
		const PartNode *n =
			g_hash_table_lookup(tree->part_nodes, &attr->ino);
		if (n && !n->dir)
			attr->size = n->size;
		return TRUE;
	}
	return FALSE;
}

gboolean tree_part_lookup(ImapfsTree *tree, guint64 parent, const char *name,
			  ImapfsAttr *attr, GError **error)
{
	gboolean listed = FALSE, found;
	Mailbox *m;
	ImapfsMessageInfo *info;

	g_mutex_lock(&tree->lock);
	/* The message must still be there, as for every part inode. */
	found = find_node(tree, parent, &m, &info) &&
		known_entry(tree, parent, name, attr, &listed);
	g_mutex_unlock(&tree->lock);
	if (found)
		return TRUE;
	if (!listed) {
		g_autoptr(GPtrArray) entries =
			tree_part_readdir(tree, parent, error);
		if (entries == NULL)
			return FALSE;
		g_mutex_lock(&tree->lock);
		found = known_entry(tree, parent, name, attr, &listed);
		g_mutex_unlock(&tree->lock);
	}
	return found || tree_fail_noent(error, name);
}

/* --- reading -------------------------------------------------------------- */

/* How to read part file @ino; the strings in @key are the caller's to
 * free (mailbox, section, decode). */
static gboolean part_key(ImapfsTree *tree, guint64 ino, ImapfsMessageKey *key,
			 PartNode *copy, GError **error)
{
	Mailbox *m;
	ImapfsMessageInfo *info;

	g_mutex_lock(&tree->lock);
	PartNode *n = find_node(tree, ino, &m, &info);
	if (n && !n->dir) {
		*copy = *n;
		key->mailbox = g_strdup(m->server_name);
		key->uidvalidity = m->state.uidvalidity;
		key->uid = n->uid;
		key->section = g_strdup(n->section);
		key->binary = n->binary;
		key->decode = g_strdup(n->decode);
		key->encoded_size = n->encoded_size;
	}
	g_mutex_unlock(&tree->lock);
	return (n && !n->dir) || tree_fail_noent(error, "part");
}

static void key_clear(ImapfsMessageKey *key)
{
	g_free((char *)key->mailbox);
	g_free((char *)key->section);
	g_free((char *)key->decode);
}

gboolean tree_part_open(ImapfsTree *tree, guint64 ino, guint64 *size_r,
			gboolean *changed_r, GError **error)
{
	ImapfsMessageKey key = {0};
	PartNode n;

	if (!part_key(tree, ino, &key, &n, error))
		return FALSE;
	*size_r = n.size;
	*changed_r = FALSE;
	gboolean ok =
		n.checked || imapfs_block_cache_size(tree->cache, &key, n.size,
						     size_r, error);
	key_clear(&key);
	if (!ok || n.checked)
		return ok;
	Mailbox *m;
	ImapfsMessageInfo *info;
	g_mutex_lock(&tree->lock);
	PartNode *node = find_node(tree, ino, &m, &info);
	if (node) {
		/* A server's BODYSTRUCTURE size may be off: the data wins. */
		*changed_r = node->size != *size_r;
		node->size = *size_r;
		node->checked = TRUE;
	}
	g_mutex_unlock(&tree->lock);
	return TRUE;
}

gssize tree_part_read(ImapfsTree *tree, guint64 ino, guint64 offset, gsize len,
		      char *buf, GError **error)
{
	ImapfsMessageKey key = {0};
	PartNode n;

	if (!part_key(tree, ino, &key, &n, error))
		return -1;
	gssize got = imapfs_block_cache_read(tree->cache, &key, offset, len,
					     buf, NULL, error);
	key_clear(&key);
	return got;
}

gboolean tree_part_charset(ImapfsTree *tree, guint64 ino, char **charset_r)
{
	Mailbox *m;
	ImapfsMessageInfo *info;

	g_mutex_lock(&tree->lock);
	PartNode *n = find_node(tree, ino, &m, &info);
	*charset_r = n ? g_strdup(n->charset) : NULL;
	g_mutex_unlock(&tree->lock);
	return n != NULL;
}
