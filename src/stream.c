/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "imapfs/error.h"
#include "imapfs/log.h"
#include "imapfs/net.h"
#include "imapfs/stream.h"

struct ImapfsTlsContext {
	SSL_CTX *ssl_ctx;
	gboolean insecure;
};

struct ImapfsStream {
	int fd;
	SSL *ssl;	   /* NULL while in plain text */
	char *peer;	   /* "host:port", for messages */
	char *server_name; /* the name the certificate must match */
	guint timeout_ms;
	gboolean peer_eof;   /* the socket BIO read end-of-file */
	gboolean tls_broken; /* fatal TLS error: no close_notify on free */
	gint aborted;	     /* atomic: set by imapfs_stream_abort() */
};

static char *format_peer(const char *host, guint16 port)
{
	if (strchr(host, ':'))
		return g_strdup_printf("[%s]:%u", host, port);
	return g_strdup_printf("%s:%u", host, port);
}

/* ---- errors ---- */

/* The oldest queued OpenSSL error (the root cause) as text; then clears
 * the queue so it cannot be blamed on a later call. */
static char *ssl_error_text(void)
{
	unsigned long e = ERR_peek_error();
	const char *reason = e ? ERR_reason_error_string(e) : NULL;
	char buf[256];

	if (ERR_GET_LIB(e) == ERR_LIB_SYS)
		g_strlcpy(buf, g_strerror(ERR_GET_REASON(e)), sizeof(buf));
	else if (reason)
		g_strlcpy(buf, reason, sizeof(buf));
	else if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	else
		g_strlcpy(buf, "unknown error", sizeof(buf));
	ERR_clear_error();
	return g_strdup(buf);
}

static gboolean set_tls_error(ImapfsStream *s, const char *what, GError **error)
{
	g_autofree char *text = ssl_error_text();

	s->tls_broken = TRUE;
	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_TLS,
		    "TLS %s failed with \"%s\": %s", what, s->peer, text);
	return FALSE;
}

/* The connection is gone: by abort, by the server (@errnum 0) or by a
 * socket error. Always FALSE, for tail calls. */
static gboolean set_lost(ImapfsStream *s, int errnum, GError **error)
{
	if (g_atomic_int_get(&s->aborted))
		g_set_error_literal(error, IMAPFS_ERROR,
				    IMAPFS_ERROR_DISCONNECTED,
				    "connection aborted");
	else if (errnum == 0)
		g_set_error_literal(error, IMAPFS_ERROR,
				    IMAPFS_ERROR_DISCONNECTED,
				    "connection closed by server");
	else
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_DISCONNECTED,
			    "connection to \"%s\" lost: %s", s->peer,
			    g_strerror(errnum));
	return FALSE;
}

/* Waits for the socket with the inactivity limit, restarted after every
 * bit of progress so that a slow but moving transfer is never cut. */
static gboolean stream_wait(ImapfsStream *s, gboolean for_write, GError **error)
{
	g_autoptr(GError) local = NULL;

	if (g_atomic_int_get(&s->aborted))
		return set_lost(s, 0, error);
	if (imapfs_net_wait(s->fd, for_write, s->timeout_ms, &local))
		return TRUE;
	if (!g_error_matches(local, IMAPFS_ERROR, IMAPFS_ERROR_TIMEOUT)) {
		g_propagate_error(error, g_steal_pointer(&local));
		return FALSE;
	}
	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_TIMEOUT,
		    "timed out %s \"%s\": no progress for %u ms",
		    for_write ? "writing to" : "reading from", s->peer,
		    s->timeout_ms);
	return FALSE;
}

/* ---- a socket BIO that cannot raise SIGPIPE ---- */

/* OpenSSL's own socket BIO writes with write(2), which raises SIGPIPE on a
 * connection the server has reset; send(MSG_NOSIGNAL) does not. */
static int bio_write(BIO *bio, const char *buf, int len)
{
	ImapfsStream *s = BIO_get_data(bio);
	ssize_t n;

	BIO_clear_retry_flags(bio);
	do
		n = send(s->fd, buf, len, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		BIO_set_retry_write(bio);
	return (int)n;
}

static int bio_read(BIO *bio, char *buf, int len)
{
	ImapfsStream *s = BIO_get_data(bio);
	ssize_t n;

	BIO_clear_retry_flags(bio);
	do
		n = recv(s->fd, buf, len, 0);
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		BIO_set_retry_read(bio);
	if (n == 0)
		s->peer_eof = TRUE;
	return (int)n;
}

static long bio_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
	ImapfsStream *s = BIO_get_data(bio);

	switch (cmd) {
	case BIO_CTRL_FLUSH:
		return 1; /* send() keeps nothing in user space */
	case BIO_CTRL_EOF:
		/* Lets OpenSSL 3 name an EOF without close_notify. */
		return s->peer_eof;
	default:
		return 0;
	}
}

static BIO_METHOD *socket_bio_method(void)
{
	static gsize once;
	static BIO_METHOD *method;

	if (g_once_init_enter(&once)) {
		int type = BIO_get_new_index() | BIO_TYPE_SOURCE_SINK;

		method = BIO_meth_new(type, "imapfs socket");
		g_assert(method);
		BIO_meth_set_write(method, bio_write);
		BIO_meth_set_read(method, bio_read);
		BIO_meth_set_ctrl(method, bio_ctrl);
		g_once_init_leave(&once, 1);
	}
	return method;
}

/* ---- the TLS context ---- */

static gboolean load_trust(SSL_CTX *ssl_ctx, const char *cafile,
			   const char *capath, GError **error)
{
	g_autofree char *text = NULL;

	if (!cafile && !capath) {
		if (SSL_CTX_set_default_verify_paths(ssl_ctx) == 1)
			return TRUE;
		text = ssl_error_text();
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "cannot load the system's CA certificates: %s",
			    text);
		return FALSE;
	}
	/* OpenSSL only looks into capath on demand; check it now. */
	if (capath && !g_file_test(capath, G_FILE_TEST_IS_DIR)) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "cannot use CA directory \"%s\": not a directory",
			    capath);
		return FALSE;
	}
	if (SSL_CTX_load_verify_locations(ssl_ctx, cafile, capath) == 1)
		return TRUE;
	text = ssl_error_text();
	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
		    "cannot load CA certificates from \"%s\": %s",
		    cafile ? cafile : capath, text);
	return FALSE;
}

ImapfsTlsContext *imapfs_tls_context_new(const char *cafile, const char *capath,
					 gboolean insecure, GError **error)
{
	g_autoptr(ImapfsTlsContext) ctx = g_new0(ImapfsTlsContext, 1);
	g_autofree char *text = NULL;
	SSL_CTX *c;

	ERR_clear_error();
	c = ctx->ssl_ctx = SSL_CTX_new(TLS_client_method());
	if (!c) {
		text = ssl_error_text();
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_TLS,
			    "cannot create TLS context: %s", text);
		return NULL;
	}
	ctx->insecure = insecure;
	SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
	/* Partial writes let write_all() restart from where a short write
	 * stopped; the buffer pointer moves as it does. */
	SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE |
				    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* Reading ahead takes several records per recv() instead of two
	 * system calls for each 16 KiB record of a large literal. */
	SSL_CTX_set_read_ahead(c, 1);
	SSL_CTX_set_verify(c, insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER,
			   NULL);
	if (!load_trust(c, cafile, capath, error))
		return NULL;
	return g_steal_pointer(&ctx);
}

const char *imapfs_tls_library_built(void)
{
	return OPENSSL_VERSION_TEXT;
}

const char *imapfs_tls_library_version(void)
{
	return OpenSSL_version(OPENSSL_VERSION);
}

void imapfs_tls_context_free(ImapfsTlsContext *ctx)
{
	if (!ctx)
		return;
	SSL_CTX_free(ctx->ssl_ctx);
	g_free(ctx);
}

/* ---- connecting and the handshake ---- */

ImapfsStream *imapfs_stream_connect(const char *host, guint16 port,
				    guint timeout_ms, GError **error)
{
	ImapfsStream *s;
	int fd = imapfs_net_connect(host, port, timeout_ms, error);

	if (fd < 0)
		return NULL;
	s = g_new0(ImapfsStream, 1);
	s->fd = fd;
	s->peer = format_peer(host, port);
	s->timeout_ms = timeout_ms;
	return s;
}

/* Resets what OpenSSL and errno say before an SSL call, so that whatever
 * they hold afterwards belongs to that call. */
static void tls_call_begin(void)
{
	ERR_clear_error();
	errno = 0;
}

/* OpenSSL 3 reports a peer that closed without close_notify as an error;
 * IMAP replies delimit themselves, so to us it is a plain EOF. */
static gboolean is_unexpected_eof(unsigned long e)
{
#ifdef SSL_R_UNEXPECTED_EOF_WHILE_READING
	return ERR_GET_LIB(e) == ERR_LIB_SSL &&
	       ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
#else
	return FALSE;
#endif
}

/* After an SSL call returned @ret <= 0: waits for the socket when OpenSSL
 * asks for it and returns TRUE to retry; else FALSE with @error. */
static gboolean tls_continue(ImapfsStream *s, int ret, const char *what,
			     GError **error)
{
	int saved_errno = errno;
	int err = SSL_get_error(s->ssl, ret);
	unsigned long e = ERR_peek_error();

	if (err == SSL_ERROR_WANT_READ)
		return stream_wait(s, FALSE, error);
	if (err == SSL_ERROR_WANT_WRITE)
		return stream_wait(s, TRUE, error);
	if (err == SSL_ERROR_ZERO_RETURN)
		return set_lost(s, 0, error);
	s->tls_broken = TRUE;
	if (g_atomic_int_get(&s->aborted) || is_unexpected_eof(e))
		return set_lost(s, 0, error);
	if (err == SSL_ERROR_SYSCALL && e == 0)
		return set_lost(s, saved_errno, error);
	if (ERR_GET_LIB(e) == ERR_LIB_SYS)
		return set_lost(s, ERR_GET_REASON(e), error);
	return set_tls_error(s, what, error);
}

/* Whether the name to check is an IP literal decides how: RFC 6066 forbids
 * IP addresses in SNI, and they match iPAddress SANs, not DNS names. */
static gboolean set_server_name(SSL *ssl, const char *name)
{
	if (g_hostname_is_ip_address(name))
		return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl),
						     name) == 1;
	SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	return SSL_set_tlsext_host_name(ssl, name) == 1 &&
	       SSL_set1_host(ssl, name) == 1;
}

static gboolean tls_setup(ImapfsStream *s, ImapfsTlsContext *ctx,
			  const char *server_name, GError **error)
{
	BIO *bio;

	tls_call_begin();
	s->ssl = SSL_new(ctx->ssl_ctx);
	bio = s->ssl ? BIO_new(socket_bio_method()) : NULL;
	if (!bio || !set_server_name(s->ssl, server_name)) {
		BIO_free(bio);
		g_clear_pointer(&s->ssl, SSL_free);
		return set_tls_error(s, "setup", error);
	}
	BIO_set_data(bio, s);
	BIO_set_init(bio, 1);
	SSL_set_bio(s->ssl, bio, bio); /* the SSL now owns the BIO */
	s->server_name = g_strdup(server_name);
	return TRUE;
}

/* A handshake that failed because the certificate was not trusted gets
 * its own code: the user must fix trust, not retry. */
static gboolean verify_failed(ImapfsStream *s, ImapfsTlsContext *ctx, int ret,
			      GError **error)
{
	long result;

	if (ctx->insecure || SSL_get_error(s->ssl, ret) != SSL_ERROR_SSL)
		return FALSE;
	result = SSL_get_verify_result(s->ssl);
	if (result == X509_V_OK)
		return FALSE;
	s->tls_broken = TRUE;
	ERR_clear_error();
	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CERTIFICATE,
		    "certificate verify failed for \"%s\": %s", s->server_name,
		    X509_verify_cert_error_string(result));
	return TRUE;
}

gboolean imapfs_stream_start_tls(ImapfsStream *s, ImapfsTlsContext *ctx,
				 const char *server_name, GError **error)
{
	g_return_val_if_fail(s != NULL && ctx != NULL, FALSE);
	g_return_val_if_fail(server_name != NULL && s->ssl == NULL, FALSE);

	if (!tls_setup(s, ctx, server_name, error))
		return FALSE;
	for (;;) {
		int ret;

		tls_call_begin();
		ret = SSL_connect(s->ssl);
		if (ret == 1)
			break;
		if (verify_failed(s, ctx, ret, error))
			return FALSE;
		if (!tls_continue(s, ret, "handshake", error))
			return FALSE;
	}
	imapfs_trace(IMAPFS_TRACE_NET, "TLS with \"%s\": %s, %s", s->peer,
		     SSL_get_version(s->ssl), SSL_get_cipher(s->ssl));
	return TRUE;
}

gboolean imapfs_stream_is_tls(ImapfsStream *s)
{
	return s->ssl != NULL;
}

/* ---- reading and writing ---- */

static gssize plain_read(ImapfsStream *s, void *buf, gsize len, GError **error)
{
	for (;;) {
		gssize n = recv(s->fd, buf, len, 0);

		if (n > 0)
			return n;
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
			set_lost(s, n == 0 ? 0 : errno, error);
			return -1;
		}
		if (!stream_wait(s, FALSE, error))
			return -1;
	}
}

/* Adds to the @got bytes already in @buf whatever OpenSSL holds
 * without touching the socket: one SSL_read() gives one record. */
static gsize tls_read_buffered(ImapfsStream *s, char *buf, gsize got, gsize len)
{
	while (got < len && SSL_has_pending(s->ssl)) {
		tls_call_begin();
		int n = SSL_read(s->ssl, buf + got,
				 (int)MIN(len - got, G_MAXINT));
		if (n <= 0) {
			/* Whatever went wrong shows again on the next call. */
			ERR_clear_error();
			break;
		}
		got += n;
	}
	return got;
}

/* SSL_read() is always tried before waiting: a record already decrypted
 * (SSL_pending) or buffered would leave the socket silent. */
static gssize tls_read(ImapfsStream *s, void *buf, gsize len, GError **error)
{
	int want = (int)MIN(len, G_MAXINT);

	for (;;) {
		int n;

		tls_call_begin();
		n = SSL_read(s->ssl, buf, want);
		if (n > 0)
			return tls_read_buffered(s, buf, n, len);
		if (!tls_continue(s, n, "read", error))
			return -1;
	}
}

gssize imapfs_stream_read(ImapfsStream *s, void *buf, gsize len, GError **error)
{
	g_return_val_if_fail(s != NULL && buf != NULL && len > 0, -1);

	if (g_atomic_int_get(&s->aborted)) {
		set_lost(s, 0, error);
		return -1;
	}
	if (s->ssl)
		return tls_read(s, buf, len, error);
	return plain_read(s, buf, len, error);
}

/* Writes some of @buf: returns a count > 0, or -1 with @error. */
static gssize plain_write(ImapfsStream *s, const void *buf, gsize len,
			  GError **error)
{
	for (;;) {
		gssize n = send(s->fd, buf, len, MSG_NOSIGNAL);

		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			set_lost(s, errno, error);
			return -1;
		}
		if (!stream_wait(s, TRUE, error))
			return -1;
	}
}

/* With SSL_MODE_ENABLE_PARTIAL_WRITE, SSL_write() returns after each
 * record; a retry after WANT_* repeats the same arguments, as required. */
static gssize tls_write(ImapfsStream *s, const void *buf, gsize len,
			GError **error)
{
	int want = (int)MIN(len, G_MAXINT);

	for (;;) {
		int n;

		tls_call_begin();
		n = SSL_write(s->ssl, buf, want);
		if (n > 0)
			return n;
		if (!tls_continue(s, n, "write", error))
			return -1;
	}
}

gboolean imapfs_stream_write_all(ImapfsStream *s, const void *buf, gsize len,
				 GError **error)
{
	const char *p = buf;

	g_return_val_if_fail(s != NULL && (buf != NULL || len == 0), FALSE);

	while (len > 0) {
		gssize n;

		if (g_atomic_int_get(&s->aborted))
			return set_lost(s, 0, error);
		n = s->ssl ? tls_write(s, p, len, error)
			   : plain_write(s, p, len, error);
		if (n < 0)
			return FALSE;
		p += n;
		len -= n;
	}
	return TRUE;
}

void imapfs_stream_set_timeout(ImapfsStream *s, guint timeout_ms)
{
	s->timeout_ms = timeout_ms;
}

/* ---- ending ---- */

void imapfs_stream_abort(ImapfsStream *s)
{
	/* The flag first: the reader that the shutdown wakes must see it,
	 * to report an abort rather than the server closing. */
	g_atomic_int_set(&s->aborted, TRUE);
	shutdown(s->fd, SHUT_RDWR);
}

void imapfs_stream_free(ImapfsStream *s)
{
	if (!s)
		return;
	if (s->ssl) {
		/* close_notify is a courtesy: one non-blocking attempt, and
		 * none at all on a connection that is already broken. */
		if (!s->tls_broken && !g_atomic_int_get(&s->aborted) &&
		    SSL_is_init_finished(s->ssl)) {
			tls_call_begin();
			(void)SSL_shutdown(s->ssl);
		}
		SSL_free(s->ssl);
		ERR_clear_error();
	}
	close(s->fd);
	g_free(s->peer);
	g_free(s->server_name);
	g_free(s);
}
