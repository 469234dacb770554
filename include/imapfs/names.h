/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Mailbox names: between the server's form (modified UTF-7 per RFC 3501
 * 5.1.3, or UTF-8 once UTF8=ACCEPT is enabled, levels joined by the
 * hierarchy delimiter) and the file names shown in the mount.
 *
 * One level of a mailbox name becomes one directory name. Inside a level,
 * '%' is shown as "%25" and '/' as "%2F", so the mapping is reversible; a
 * level that is exactly "." or ".." is shown as "%2E" / "%2E%2E" (the kernel
 * would otherwise treat it as a path element). Pure functions, no state;
 * callers own every returned string.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Modified UTF-7 -> UTF-8. NULL with IMAPFS_ERROR_PROTOCOL on input that is
 * not valid modified UTF-7 (bad base64, unterminated shift, non-ASCII bytes,
 * encoded printable ASCII, broken surrogates, NUL) or not in the canonical
 * form imapfs_mutf7_encode() produces (non-zero padding bits, adjacent shift
 * sequences), so that decoding and re-encoding give back the same name. */
char *imapfs_mutf7_decode(const char *mutf7, GError **error);

/* UTF-8 -> modified UTF-7. NULL with IMAPFS_ERROR_CONFIG if @utf8 is not
 * valid UTF-8 or contains NUL. */
char *imapfs_mutf7_encode(const char *utf8, GError **error);

/* One decoded level -> a file name (see above). */
char *imapfs_name_escape(const char *level);

/* A file name -> one decoded level. NULL with IMAPFS_ERROR_CONFIG on a bad
 * escape ('%' not followed by 25, 2F, 2E in either case), an empty name,
 * "." or "..", or a raw '/': no level escapes to those. */
char *imapfs_name_unescape(const char *file_name, GError **error);

/*
 * A server mailbox name -> its decoded levels (NULL-terminated, free with
 * g_strfreev). @delim is the hierarchy delimiter, or '\0' for a flat
 * namespace (the whole name is one level). @utf8: the name is UTF-8 already
 * (UTF8=ACCEPT), else modified UTF-7. Empty levels ("a//b", a trailing
 * delimiter) make the name unrepresentable: NULL with IMAPFS_ERROR_PROTOCOL,
 * as does invalid encoding.
 */
char **imapfs_mailbox_to_levels(const char *server_name, char delim,
				gboolean utf8, GError **error);

/* The reverse: decoded levels -> the server's name. NULL with
 * IMAPFS_ERROR_CONFIG when a level contains @delim or is empty, when
 * @levels is empty, or when it has several levels and @delim is '\0'. */
char *imapfs_mailbox_from_levels(const char *const *levels, char delim,
				 gboolean utf8, GError **error);

G_END_DECLS
