/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * BODYSTRUCTURE (RFC 3501 7.4.2, RFC 9051 7.5.2) -> a tree of MIME parts.
 *
 * Pure data in, pure data out: the input is the value after the
 * BODYSTRUCTURE key of a FETCH response, as the IMAP parser gives it; the
 * output is a tree of plain structs that the caller walks directly.
 *
 * Servers get BODYSTRUCTURE wrong in many ways (NIL where a string belongs,
 * numbers as strings, missing or extra fields, multiparts without children,
 * mixed case), so the reading is liberal: whatever can be understood is
 * kept, a missing field gets its documented default, and unknown extension
 * data is skipped. Only a value that is not a body at all, or one beyond the
 * hard limits below, is refused with IMAPFS_ERROR_PROTOCOL.
 *
 * Ownership: a tree belongs to whoever parsed it and is freed with
 * imapfs_part_free() on its root; every string, array and child in it is
 * owned by the tree. Nothing is shared between trees, so a tree may move
 * between threads; it is not locked.
 */
#pragma once

#include <glib.h>

#include "imapfs/imap-parser.h"

G_BEGIN_DECLS

/* Deeper parts (the root is at depth 0) make the whole structure an error,
 * as do more parts in total, containers and attached messages' parts
 * included. They bound both recursion and memory. */
#define IMAPFS_BODYSTRUCTURE_MAX_DEPTH 32
#define IMAPFS_BODYSTRUCTURE_MAX_PARTS 2000

/* One "attribute value" pair of a parameter list (Content-Type or
 * Content-Disposition), in the order the server sent them. */
typedef struct {
	char *name;  /* lower-cased ASCII, never NULL; may end in "*" or
			"*0*" etc. (RFC 2231 pieces are not joined) */
	char *value; /* as sent, raw RFC 2231 / RFC 2047 included; "" for
			NIL; bytes kept, not necessarily UTF-8 */
} ImapfsParam;

typedef struct ImapfsPart ImapfsPart;

/*
 * One MIME part. Strings are NUL-terminated copies of what the server sent,
 * cut at the first NUL byte; they are not necessarily valid UTF-8.
 *
 * Section numbers, without "BODY[" and "]":
 * - section: the absolute IMAP section, relative to the top message, as
 *   FETCH BODY[section] / BINARY[section] needs it. A non-multipart message
 *   body is "1" (RFC 3501 6.4.5: BODY[1] of a single-part message is its
 *   body). Children of a multipart are its section plus ".1", ".2", ...
 *   A multipart that is itself the body of a message has that message's
 *   section: "" for the top message, "3" for the body of the message
 *   attached as part 3 (fetch "3.TEXT" for it without the headers); its
 *   children are "3.1", "3.2". A single-part body of the message attached
 *   at 3 is "3.1".
 * - name_section: the same numbering restarted inside the innermost
 *   enclosing message, as the file names in N.parts/ use it: the parts of
 *   the message attached at 3 are "1", "2", ... ("" for its multipart body).
 *   Outside attached messages it equals section.
 */
struct ImapfsPart {
	char *section;	    /* never NULL; see above */
	char *name_section; /* never NULL; see above */

	char *type;	   /* lower-cased, never NULL: "text" when missing */
	char *subtype;	   /* lower-cased, never NULL: when missing "plain" for
			      text, "mixed" for multipart, else "octet-stream" */
	GPtrArray *params; /* ImapfsParam *, never NULL, maybe empty */

	char *id;	   /* Content-ID, NULL if NIL or absent */
	char *description; /* Content-Description, NULL if NIL or absent */
	char *encoding; /* Content-Transfer-Encoding, lower-cased, "7bit" when
			   NIL or absent (Exchange has sent NIL) */
	guint64 size;	/* body-fld-octets, the encoded size; 0 if missing
			   and for multiparts, which have none */
	guint64 lines;	/* body-fld-lines of text and message parts; 0 if
			   missing or not sent */

	/* Extension data, each NULL (or empty) when absent. */
	char *md5;	   /* Content-MD5, single parts only */
	char *disposition; /* lower-cased: "attachment", "inline", ... */
	GPtrArray *disposition_params; /* ImapfsParam *, never NULL */
	char *language; /* Content-Language; several joined with ", " */
	char *location; /* Content-Location */

	/* Multipart: the children in order, maybe none (a multipart without
	 * parts, as Gmail sends them). NULL for every other part, so a part is
	 * a multipart exactly when children != NULL. */
	GPtrArray *children; /* ImapfsPart *, owned */

	/* message/rfc822 or message/global with its envelope and body: the
	 * attached message's body, whose name_section numbering restarts (see
	 * above). NULL otherwise, also when the server left those fields out;
	 * the part is then an ordinary leaf. Never set together with
	 * children. */
	ImapfsPart *message;

	guint depth; /* 0 for the root, +1 per child and per attached body */
};

/*
 * Parses the BODYSTRUCTURE (or BODY) value @arg into a new tree; the caller
 * owns it. NULL with IMAPFS_ERROR_PROTOCOL when @arg, or a child inside a
 * multipart, is not a non-empty list, or when the limits above are
 * exceeded. @arg is only read.
 */
ImapfsPart *imapfs_bodystructure_parse(const ImapfsArg *arg, GError **error);

/*
 * The same from text such as
 *   ("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 12 1)
 * (@len bytes, or up to a NUL when -1), run through the real IMAP parser
 * inside a fake "* 1 FETCH (BODYSTRUCTURE ...)" line; literals ("{5}\r\n")
 * are allowed. For tests and fuzzing. Also IMAPFS_ERROR_PROTOCOL when the
 * text is not exactly one IMAP value.
 */
ImapfsPart *imapfs_bodystructure_parse_string(const char *text, gssize len,
					      GError **error);

/* Frees @part and everything below it (children, attached message).
 * NULL is allowed. Only for the root of a tree: other parts belong to
 * their parent. */
void imapfs_part_free(ImapfsPart *part);

/* TRUE for a multipart (children != NULL). */
gboolean imapfs_part_is_multipart(const ImapfsPart *part);

/*
 * The part with the absolute IMAP @section (see above) in the tree under
 * @root, attached messages included; NULL if there is none. Where a
 * message/rfc822 part and its multipart body share a section, the
 * message/rfc822 part is returned. Borrowed from the tree.
 */
const ImapfsPart *imapfs_part_find(const ImapfsPart *root, const char *section);

/*
 * The leaves of the message whose body is @root, in order: every part under
 * @root that is not a multipart, @root itself if it is none. An attached
 * message counts as one leaf; its own parts are not included (call this
 * again on its ->message). An empty multipart gives an empty array.
 * The array is the caller's (g_ptr_array_unref), the parts are borrowed
 * from the tree (const ImapfsPart *).
 */
GPtrArray *imapfs_part_leaves(const ImapfsPart *root);

/* The value of the first parameter in @params (ImapfsParam *) named @name,
 * compared ignoring ASCII case; NULL if there is none. Borrowed. */
const char *imapfs_part_param(const GPtrArray *params, const char *name);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(ImapfsPart, imapfs_part_free)

G_END_DECLS
