/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A byte stream to the server: a TCP socket, plain or wrapped in TLS
 * (OpenSSL), with an inactivity limit on every read and write. Knows nothing
 * of IMAP: STARTTLS is negotiated by the session, which then calls
 * imapfs_stream_start_tls().
 *
 * Threads: an ImapfsStream is used by one thread at a time, except
 * imapfs_stream_abort(), which any thread may call to make a blocked read or
 * write fail promptly. An ImapfsTlsContext is immutable after creation and
 * shared by all streams of a mount.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct ImapfsTlsContext ImapfsTlsContext;
typedef struct ImapfsStream ImapfsStream;

/*
 * The trust settings for every connection: certificates are verified against
 * @cafile and/or @capath when given, else the system's default store, and
 * the name checked against the host (DNS name or IP address). TLS 1.2 is
 * the minimum. @insecure skips verification entirely (the caller warns).
 * NULL with IMAPFS_ERROR_CONFIG if a file or directory cannot be loaded.
 */
ImapfsTlsContext *imapfs_tls_context_new(const char *cafile, const char *capath,
					 gboolean insecure, GError **error);
void imapfs_tls_context_free(ImapfsTlsContext *ctx);

/* The TLS library's version as built against ("OpenSSL 3.0.x ...") and
 * as loaded at run time; static strings, for --version. */
const char *imapfs_tls_library_built(void);
const char *imapfs_tls_library_version(void);

/* Connects over TCP (net.h); the stream starts in plain text.
 * @timeout_ms is the connect limit and the inactivity limit thereafter. */
ImapfsStream *imapfs_stream_connect(const char *host, guint16 port,
				    guint timeout_ms, GError **error);

/*
 * Performs the TLS handshake as client over the connected socket, with SNI
 * @server_name (not sent for IP addresses) and verification per @ctx.
 * FALSE with IMAPFS_ERROR_CERTIFICATE (the message says why, e.g.
 * "certificate verify failed: self-signed certificate"), or _TLS, _TIMEOUT,
 * _DISCONNECTED. @ctx must outlive the stream.
 */
gboolean imapfs_stream_start_tls(ImapfsStream *stream, ImapfsTlsContext *ctx,
				 const char *server_name, GError **error);

gboolean imapfs_stream_is_tls(ImapfsStream *stream);

/* Reads at least 1 and at most @len bytes. Returns the count, or -1 with
 * IMAPFS_ERROR_DISCONNECTED (EOF, reset, abort), _TLS or _TIMEOUT when
 * nothing arrived for the inactivity limit. */
gssize imapfs_stream_read(ImapfsStream *stream, void *buf, gsize len,
			  GError **error);

/* Writes all of @buf, or FALSE with the same errors as reading. */
gboolean imapfs_stream_write_all(ImapfsStream *stream, const void *buf,
				 gsize len, GError **error);

void imapfs_stream_set_timeout(ImapfsStream *stream, guint timeout_ms);

/* Makes pending and future reads/writes fail with DISCONNECTED (shuts the
 * socket down). Thread-safe; the stream must still be freed by its user. */
void imapfs_stream_abort(ImapfsStream *stream);

/* Closes the connection (a TLS close_notify is attempted, not waited for)
 * and frees. NULL is fine. */
void imapfs_stream_free(ImapfsStream *stream);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(ImapfsTlsContext, imapfs_tls_context_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(ImapfsStream, imapfs_stream_free)

G_END_DECLS
