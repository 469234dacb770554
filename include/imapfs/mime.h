/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * MIME pieces of a message as the server describes them in BODYSTRUCTURE:
 * the file name a part gets in N.parts/, header decoding (RFC 2047), and a
 * streaming Content-Transfer-Encoding decoder.
 *
 * Built on GMime 3, which is initialised on first use (g_mime_init() once
 * per process, under g_once) and never shut down; callers need not do
 * anything. No I/O, no shared state: any thread may call these functions,
 * though one decoder serves one thread at a time.
 *
 * Ownership: returned strings and arrays belong to the caller (g_free,
 * g_strfreev); arguments are only borrowed. Everything that comes from the
 * server may be hostile: no input makes these functions crash, read out of
 * bounds, or hand out a name that breaks the guarantees below.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/*
 * The file name of one part in a N.parts/ directory (DESIGN.md, "The tree").
 *
 * @section: the part's IMAP section number relative to its message ("1",
 *   "1.2"); trusted, non-empty, and short (the parser bounds nesting).
 * @type, @subtype: the media type as sent, any case; NULL counts as
 *   application/octet-stream.
 * @params: Content-Type parameters, @disposition_params: Content-Disposition
 *   parameters, each a NULL-terminated array of alternating name, value
 *   exactly as BODYSTRUCTURE carries them (either may be NULL; a trailing
 *   name without value is ignored).
 *
 * The file name is the disposition's "filename", else the type's "name".
 * Each may be plain, raw 8-bit, RFC 2047 encoded-words (also several, also
 * split inside a character), or RFC 2231 ("filename*", "filename*0*",
 * "filename*1", ... in any order, with or without charset and language);
 * parameter names match case-insensitively and RFC 2231 wins over plain.
 *
 * Result: "<section>-<file name>" when there is a file name, else
 * "<section>.<ext>" with the extension from the media type (txt, html, ics,
 * pdf, jpg, ..., "bin" when unknown; text/... is "txt"). An attached
 * message (message/rfc822 or message/global) is always "<section>.eml",
 * since the file holds its raw bytes, whatever its name parameter says.
 *
 * The file name is made safe, keeping as much of it as possible:
 *  - bytes that are not valid UTF-8 (raw 8-bit, an unknown or wrong charset)
 *    are read as Windows-1252 (Latin-1 with the printable characters
 *    Windows puts at 0x80-0x9f), so the result is always valid UTF-8;
 *  - '/' and '\\' become '_' ("../../etc/passwd" -> "2-.._.._etc_passwd");
 *  - control characters (C0, DEL, C1) and the bidi controls that can make a
 *    name display differently from what it is become '_';
 *  - runs of white space become one space, leading and trailing space goes;
 *  - a decoded NUL ends the name (RFC 2231 "%00") or becomes '?' (RFC 2047
 *    "=00"), as GMime works on C strings;
 *  - a name that is then empty or only dots ("", "  ", ".", "..") counts as
 *    no file name.
 * The result is at most NAME_MAX (255) bytes: a longer file name is cut on
 * a UTF-8 character boundary, keeping its extension (the part from the last
 * '.', if at most 16 bytes). It never contains '/', NUL or control
 * characters, and since it starts with the section it is never "." or ".."
 * nor hidden. Never NULL.
 */
char *imapfs_mime_part_name(const char *section, const char *type,
			    const char *subtype, const char *const *params,
			    const char *const *disposition_params);

/* Whether a part of this media type is an attached message, shown as
 * "<section>.eml" plus its own "<section>.parts/": message/rfc822 and
 * message/global, any case. */
gboolean imapfs_mime_is_message(const char *type, const char *subtype);

/*
 * Makes the names of one parts directory unique, the safety net behind the
 * section prefixes (which differ unless a name was cut to NAME_MAX). @names
 * is NULL-terminated, in listing order. Returns a new array of the same
 * length (g_strfreev): the first occurrence of a name keeps it, each later
 * one gets "~2", "~3", ... before its extension ("2-a.pdf" -> "2-a~2.pdf"),
 * skipping any name already in @names. The same input always gives the
 * same output, and every result stays within NAME_MAX bytes (cut on a UTF-8
 * boundary). @names should be valid UTF-8, as imapfs_mime_part_name()
 * returns.
 */
char **imapfs_mime_unique_names(const char *const *names);

/*
 * An unstructured header value (Subject) -> UTF-8: RFC 2047 encoded-words
 * are decoded, folding (CR, LF) is removed, invalid bytes are read as
 * Windows-1252 as above. Other characters, controls included, are kept.
 * NULL for NULL.
 */
char *imapfs_mime_decode_header(const char *value);

/*
 * A Content-Transfer-Encoding decoder that runs block by block, so a part
 * can be fetched in cache blocks and decoded as it arrives; the sum of what
 * step and finish return is the exact decoded size.
 *
 * Lenient, never failing: it decodes what it can and skips what it cannot.
 *  - base64: characters outside the alphabet (line breaks, junk) are
 *    skipped; data after padding is decoded too (some mailers pad each
 *    line); an unpadded tail is flushed by finish.
 *  - quoted-printable: "=XY" and soft line breaks ("=\n", "=\r\n") may be
 *    split anywhere between blocks; an invalid escape is passed through as
 *    is, also when it ends the body; a final lone "=" is a soft break.
 *  - uuencode ("x-uuencode", "uuencode", "x-uue"): decoding starts after
 *    the "begin " line and stops at the end line; without a begin line the
 *    output is empty.
 *  - "7bit", "8bit", "binary", NULL or an unknown name: identity.
 * A wrongly declared encoding (say "base64" over plain text) gives garbage
 * or nothing, never a crash or an access outside the buffers.
 *
 * Not thread-safe: one decoder per stream, used by one thread at a time.
 */
typedef struct ImapfsDecoder ImapfsDecoder;

/* @encoding: the body-fld-enc of BODYSTRUCTURE, any case; NULL for NIL. */
ImapfsDecoder *imapfs_decoder_new(const char *encoding);

/* Whether the decoder copies its input unchanged, so the decoded size is
 * the encoded size and decoding can be skipped. */
gboolean imapfs_decoder_is_identity(const ImapfsDecoder *dec);

/* Decodes the next @len bytes of the body (@in may be NULL when @len is 0)
 * and appends the result to @out. Returns the number of bytes appended. */
gsize imapfs_decoder_step(ImapfsDecoder *dec, const guint8 *in, gsize len,
			  GByteArray *out);

/* Ends the body: appends what the decoder still holds (an unpadded base64
 * tail, a quoted-printable escape cut short) to @out and returns its
 * length. The decoder is then back in its initial state, ready for another
 * body in the same encoding. */
gsize imapfs_decoder_finish(ImapfsDecoder *dec, GByteArray *out);

void imapfs_decoder_free(ImapfsDecoder *dec);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(ImapfsDecoder, imapfs_decoder_free)

G_END_DECLS
