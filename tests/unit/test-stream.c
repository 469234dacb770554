/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The transport against a tiny echo server on 127.0.0.1, plain and TLS, with
 * a throwaway CA made at start-up. SIGPIPE keeps its default action in the
 * client thread, so a write that could raise it would kill the test.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <glib/gstdio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "imapfs/error.h"
#include "imapfs/net.h"
#include "imapfs/stream.h"

#define TIMEOUT_MS 5000	     /* for steps that should just work */
#define SHORT_TIMEOUT_MS 300 /* for steps that must time out */
#define BULK_SIZE (5 * 1024 * 1024)

/* Made once in main(), read-only while the tests run. Nothing is kept on
 * disk: a CA is written out only while a context loads it, so a test that
 * aborts leaves no files behind. */
static struct {
	X509 *ca;	/* signed the server's certificate */
	X509 *wrong_ca; /* unrelated */
	SSL_CTX *server_ctx;
} pki;

/* ---- a throwaway PKI ---- */

static EVP_PKEY *make_key(void)
{
	EVP_PKEY_CTX *kctx = EVP_PKEY_CTX_new_id(EVP_PKEY_EC, NULL);
	EVP_PKEY *key = NULL;

	g_assert_nonnull(kctx);
	g_assert_cmpint(EVP_PKEY_keygen_init(kctx), ==, 1);
	g_assert_cmpint(EVP_PKEY_CTX_set_ec_paramgen_curve_nid(
				kctx, NID_X9_62_prime256v1),
			==, 1);
	g_assert_cmpint(EVP_PKEY_keygen(kctx, &key), ==, 1);
	EVP_PKEY_CTX_free(kctx);
	return key;
}

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *ext;

	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	g_assert_nonnull(ext);
	g_assert_cmpint(X509_add_ext(cert, ext, -1), ==, 1);
	X509_EXTENSION_free(ext);
}

/* A CA certificate when @issuer is NULL, else a server certificate for
 * localhost and 127.0.0.1 signed by @issuer. */
static X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer,
		       EVP_PKEY *issuer_key)
{
	static long serial = 1;
	X509 *cert = X509_new();
	X509_NAME *name = X509_get_subject_name(cert);

	X509_set_version(cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(cert), serial++);
	X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
	X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
				   (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(cert,
			     X509_get_subject_name(issuer ? issuer : cert));
	X509_set_pubkey(cert, key);
	if (!issuer) {
		add_ext(cert, cert, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(cert, cert, NID_key_usage, "critical,keyCertSign");
		add_ext(cert, cert, NID_subject_key_identifier, "hash");
	} else {
		add_ext(cert, issuer, NID_basic_constraints, "CA:FALSE");
		add_ext(cert, issuer, NID_ext_key_usage, "serverAuth");
		add_ext(cert, issuer, NID_subject_alt_name,
			"DNS:localhost,IP:127.0.0.1");
		add_ext(cert, issuer, NID_authority_key_identifier, "keyid");
	}
	g_assert_cmpint(
		X509_sign(cert, issuer_key ? issuer_key : key, EVP_sha256()), >,
		0);
	return cert;
}

static char *write_cert(const char *dir, const char *name, X509 *cert)
{
	char *path = g_build_filename(dir, name, NULL);
	FILE *f = g_fopen(path, "w");

	g_assert_nonnull(f);
	g_assert_cmpint(PEM_write_X509(f, cert), ==, 1);
	g_assert_cmpint(fclose(f), ==, 0);
	return path;
}

static char *make_tmp_dir(void)
{
	g_autoptr(GError) error = NULL;
	char *dir = g_dir_make_tmp("test-stream-XXXXXX", &error);

	g_assert_no_error(error);
	return dir;
}

static void pki_init(void)
{
	EVP_PKEY *ca_key = make_key(), *wrong_key = make_key();
	EVP_PKEY *server_key = make_key();
	X509 *server;

	pki.ca = make_cert("imapfs test CA", ca_key, NULL, NULL);
	pki.wrong_ca = make_cert("imapfs wrong CA", wrong_key, NULL, NULL);
	server = make_cert("localhost", server_key, pki.ca, ca_key);
	pki.server_ctx = SSL_CTX_new(TLS_server_method());
	g_assert_nonnull(pki.server_ctx);
	g_assert_cmpint(SSL_CTX_use_certificate(pki.server_ctx, server), ==, 1);
	g_assert_cmpint(SSL_CTX_use_PrivateKey(pki.server_ctx, server_key), ==,
			1);
	X509_free(server);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(wrong_key);
	EVP_PKEY_free(server_key);
}

static void pki_clear(void)
{
	g_clear_pointer(&pki.ca, X509_free);
	g_clear_pointer(&pki.wrong_ca, X509_free);
	g_clear_pointer(&pki.server_ctx, SSL_CTX_free);
}

/* ---- the server: one connection, in its own thread ---- */

typedef enum {
	SERVE_ECHO,	 /* send back what arrives, until EOF */
	SERVE_SILENT,	 /* say nothing, until EOF */
	SERVE_CLOSE,	 /* close at once (TLS: with close_notify) */
	SERVE_CLOSE_RAW, /* close at once, even under TLS */
	SERVE_BULK,	 /* take BULK_SIZE bytes, then send them back */
} ServeMode;

typedef struct {
	int listen_fd;
	guint16 port;
	gboolean tls;
	ServeMode mode;
	GThread *thread;
	char *sni; /* written by the server thread, read after the join */
} TestServer;

static gssize srv_read(SSL *ssl, int fd, void *buf, gsize len)
{
	return ssl ? SSL_read(ssl, buf, (int)len) : recv(fd, buf, len, 0);
}

static gboolean srv_write(SSL *ssl, int fd, const void *buf, gsize len)
{
	if (ssl)
		return SSL_write(ssl, buf, (int)len) == (int)len;
	return send(fd, buf, len, 0) == (gssize)len;
}

static void serve_bulk(SSL *ssl, int fd)
{
	g_autofree char *data = g_malloc(BULK_SIZE);
	gsize got = 0;

	while (got < BULK_SIZE) {
		gssize n = srv_read(ssl, fd, data + got, BULK_SIZE - got);

		if (n <= 0)
			return;
		got += n;
	}
	srv_write(ssl, fd, data, BULK_SIZE);
	/* Wait for the client to close, so nothing is cut short. */
	while (srv_read(ssl, fd, data, 1) > 0)
		;
}

static void serve_mode(TestServer *srv, SSL *ssl, int fd)
{
	char buf[4096];
	gssize n;

	switch (srv->mode) {
	case SERVE_ECHO:
		while ((n = srv_read(ssl, fd, buf, sizeof(buf))) > 0)
			if (!srv_write(ssl, fd, buf, n))
				break;
		break;
	case SERVE_SILENT:
		while (srv_read(ssl, fd, buf, sizeof(buf)) > 0)
			;
		break;
	case SERVE_CLOSE:
		if (ssl)
			SSL_shutdown(ssl);
		break;
	case SERVE_CLOSE_RAW:
		break;
	case SERVE_BULK:
		serve_bulk(ssl, fd);
		break;
	}
}

static gpointer serve(gpointer data)
{
	TestServer *srv = data;
	struct timeval limit = {.tv_sec = 10};
	SSL *ssl = NULL;
	sigset_t sigpipe;
	gboolean ready = TRUE;
	int fd;

	/* The server side is not under test: keep SIGPIPE to the client. */
	sigemptyset(&sigpipe);
	sigaddset(&sigpipe, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &sigpipe, NULL);
	fd = accept(srv->listen_fd, NULL, NULL);
	g_assert_cmpint(fd, >=, 0);
	/* A test gone wrong must not hang the join. */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof(limit));
	if (srv->tls) {
		ssl = SSL_new(pki.server_ctx);
		SSL_set_fd(ssl, fd);
		ready = SSL_accept(ssl) == 1;
		srv->sni = g_strdup(
			SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name));
	}
	if (ready)
		serve_mode(srv, ssl, fd);
	SSL_free(ssl);
	close(fd);
	return NULL;
}

static TestServer *server_start(gboolean tls, ServeMode mode)
{
	TestServer *srv = g_new0(TestServer, 1);
	struct sockaddr_in sin = {.sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sin);

	srv->tls = tls;
	srv->mode = mode;
	srv->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	g_assert_cmpint(srv->listen_fd, >=, 0);
	g_assert_cmpint(
		bind(srv->listen_fd, (struct sockaddr *)&sin, sizeof(sin)), ==,
		0);
	g_assert_cmpint(listen(srv->listen_fd, 1), ==, 0);
	g_assert_cmpint(
		getsockname(srv->listen_fd, (struct sockaddr *)&sin, &len), ==,
		0);
	srv->port = ntohs(sin.sin_port);
	srv->thread = g_thread_new("server", serve, srv);
	return srv;
}

/* Joins the server thread (the client must have closed its end first) and
 * hands out the SNI it saw when @sni is not NULL. */
static void server_join(TestServer *srv, char **sni)
{
	g_thread_join(srv->thread);
	close(srv->listen_fd);
	if (sni)
		*sni = g_steal_pointer(&srv->sni);
	g_free(srv->sni);
	g_free(srv);
}

/* ---- client helpers ---- */

static ImapfsStream *connect_to(TestServer *srv, guint timeout_ms)
{
	g_autoptr(GError) error = NULL;
	ImapfsStream *s;

	s = imapfs_stream_connect("127.0.0.1", srv->port, timeout_ms, &error);
	g_assert_no_error(error);
	g_assert_nonnull(s);
	return s;
}

/* A client context trusting @ca (as a cafile). */
static ImapfsTlsContext *context_for(X509 *ca, gboolean insecure)
{
	g_autoptr(GError) error = NULL;
	g_autofree char *dir = make_tmp_dir();
	g_autofree char *path = write_cert(dir, "ca.pem", ca);
	ImapfsTlsContext *ctx;

	ctx = imapfs_tls_context_new(path, NULL, insecure, &error);
	g_assert_cmpint(g_unlink(path), ==, 0);
	g_assert_cmpint(g_rmdir(dir), ==, 0);
	g_assert_no_error(error);
	g_assert_nonnull(ctx);
	return ctx;
}

static void read_exact(ImapfsStream *s, char *buf, gsize len, gsize step)
{
	gsize got = 0;

	while (got < len) {
		g_autoptr(GError) error = NULL;
		gssize n = imapfs_stream_read(s, buf + got,
					      MIN(step, len - got), &error);

		g_assert_no_error(error);
		g_assert_cmpint(n, >, 0);
		got += n;
	}
}

static void check_echo(ImapfsStream *s)
{
	static const char line[] = "a1 NOOP\r\n";
	g_autoptr(GError) error = NULL;
	char buf[sizeof(line)] = "";

	g_assert_true(imapfs_stream_write_all(s, line, strlen(line), &error));
	g_assert_no_error(error);
	read_exact(s, buf, strlen(line), sizeof(buf));
	g_assert_cmpstr(buf, ==, line);
}

/* Runs one TLS handshake (and an echo) with a fresh server; returns the
 * client's error and the SNI the server saw. */
static GError *handshake(ImapfsTlsContext *ctx, const char *name, char **sni)
{
	TestServer *srv = server_start(TRUE, SERVE_ECHO);
	ImapfsStream *s = connect_to(srv, TIMEOUT_MS);
	GError *error = NULL;

	if (imapfs_stream_start_tls(s, ctx, name, &error)) {
		g_assert_no_error(error);
		g_assert_true(imapfs_stream_is_tls(s));
		check_echo(s);
	}
	imapfs_stream_free(s);
	server_join(srv, sni);
	return error;
}

/* ---- the tests ---- */

static void test_net_wait(void)
{
	g_autoptr(GError) error = NULL;
	gint64 start = g_get_monotonic_time();
	int fds[2];

	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), ==, 0);
	g_assert_true(imapfs_net_wait(fds[0], TRUE, 1000, &error));
	g_assert_no_error(error);
	g_assert_false(imapfs_net_wait(fds[0], FALSE, 50, &error));
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_TIMEOUT);
	g_assert_cmpint(g_get_monotonic_time() - start, >=, 50 * 1000);
	g_clear_error(&error);
	g_assert_cmpint(write(fds[1], "x", 1), ==, 1);
	g_assert_true(imapfs_net_wait(fds[0], FALSE, 1000, &error));
	g_assert_no_error(error);
	close(fds[0]);
	close(fds[1]);
}

static void test_plain_echo(void)
{
	TestServer *srv = server_start(FALSE, SERVE_ECHO);
	ImapfsStream *s = connect_to(srv, TIMEOUT_MS);

	g_assert_false(imapfs_stream_is_tls(s));
	check_echo(s);
	check_echo(s);
	imapfs_stream_free(s);
	server_join(srv, NULL);
}

static void test_connect_refused(void)
{
	struct sockaddr_in sin = {.sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sin);
	g_autoptr(GError) error = NULL;
	g_autofree char *expected = NULL;
	ImapfsStream *s;
	int fd;

	/* Bound but not listening: the port is ours and refuses. */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	g_assert_cmpint(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), ==, 0);
	g_assert_cmpint(getsockname(fd, (struct sockaddr *)&sin, &len), ==, 0);
	s = imapfs_stream_connect("127.0.0.1", ntohs(sin.sin_port), TIMEOUT_MS,
				  &error);
	g_assert_null(s);
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONNECT);
	expected = g_strdup_printf("cannot connect to \"127.0.0.1:%u\": ",
				   ntohs(sin.sin_port));
	g_assert_true(g_str_has_prefix(error->message, expected));
	close(fd);
}

/* A listener whose accept queue is full drops further SYNs, so the next
 * connection attempt hangs like one to an unreachable host. */
static void test_connect_timeout(void)
{
	struct sockaddr_in sin = {.sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sin);
	g_autoptr(GError) error = NULL;
	g_autoptr(GPtrArray) queued = g_ptr_array_new_with_free_func(
		(GDestroyNotify)imapfs_stream_free);
	gint64 start = 0, elapsed;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	g_assert_cmpint(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), ==, 0);
	g_assert_cmpint(listen(fd, 0), ==, 0);
	g_assert_cmpint(getsockname(fd, (struct sockaddr *)&sin, &len), ==, 0);
	while (!error && queued->len < 8) {
		ImapfsStream *s;

		start = g_get_monotonic_time();
		s = imapfs_stream_connect("127.0.0.1", ntohs(sin.sin_port),
					  SHORT_TIMEOUT_MS, &error);
		if (s)
			g_ptr_array_add(queued, s);
	}
	elapsed = (g_get_monotonic_time() - start) / 1000;
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_TIMEOUT);
	g_test_message("%s", error->message);
	g_assert_true(g_str_has_prefix(error->message,
				       "timed out connecting to \"127.0.0.1:"));
	g_assert_cmpint(elapsed, >=, SHORT_TIMEOUT_MS - 10);
	g_assert_cmpint(elapsed, <, SHORT_TIMEOUT_MS + 1500);
	close(fd);
}

static void test_tls_cafile(void)
{
	g_autoptr(ImapfsTlsContext) ctx = context_for(pki.ca, FALSE);
	g_autofree char *sni = NULL;
	GError *error = handshake(ctx, "localhost", &sni);

	g_assert_no_error(error);
	g_assert_cmpstr(sni, ==, "localhost");
}

/* capath is read during the handshake: the directory lives until then. */
static void test_tls_capath(void)
{
	g_autoptr(GError) error = NULL;
	g_autofree char *dir = make_tmp_dir();
	g_autofree char *name =
		g_strdup_printf("%08lx.0", X509_subject_name_hash(pki.ca));
	g_autofree char *path = write_cert(dir, name, pki.ca);
	ImapfsTlsContext *ctx;

	ctx = imapfs_tls_context_new(NULL, dir, FALSE, &error);
	g_assert_no_error(error);
	error = handshake(ctx, "localhost", NULL);
	imapfs_tls_context_free(ctx);
	g_assert_cmpint(g_unlink(path), ==, 0);
	g_assert_cmpint(g_rmdir(dir), ==, 0);
	g_assert_no_error(error);
}

static void test_tls_ip_literal(void)
{
	g_autoptr(ImapfsTlsContext) ctx = context_for(pki.ca, FALSE);
	g_autofree char *sni = NULL;
	GError *error = handshake(ctx, "127.0.0.1", &sni);

	g_assert_no_error(error);
	g_assert_null(sni); /* no SNI for IP addresses */
}

static void test_tls_wrong_ca(void)
{
	g_autoptr(ImapfsTlsContext) ctx = context_for(pki.wrong_ca, FALSE);
	g_autoptr(GError) error = handshake(ctx, "localhost", NULL);

	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CERTIFICATE);
	g_test_message("%s", error->message);
	g_assert_true(g_str_has_prefix(
		error->message,
		"certificate verify failed for \"localhost\": "));
}

static void test_tls_name_mismatch(void)
{
	g_autoptr(ImapfsTlsContext) ctx = context_for(pki.ca, FALSE);
	g_autoptr(GError) error = NULL;

	error = handshake(ctx, "wronghost.example", NULL);
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CERTIFICATE);
	g_test_message("%s", error->message);
	g_assert_nonnull(strstr(error->message, "wronghost.example"));
	g_clear_error(&error);
	/* Only verified as an address, never connected to. */
	error = handshake(ctx, "127.0.0.2", NULL);
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CERTIFICATE);
	g_test_message("%s", error->message);
}

static void test_tls_insecure(void)
{
	g_autoptr(ImapfsTlsContext) ctx = context_for(pki.wrong_ca, TRUE);
	g_autoptr(GError) error = handshake(ctx, "wronghost.example", NULL);

	g_assert_no_error(error);
}

static void test_tls_bad_trust(void)
{
	g_autoptr(GError) error = NULL;
	g_autofree char *dir = make_tmp_dir();
	g_autofree char *path = write_cert(dir, "ca.pem", pki.ca);
	g_autofree char *missing = g_build_filename(dir, "nope.pem", NULL);
	ImapfsTlsContext *ctx;

	ctx = imapfs_tls_context_new(missing, NULL, FALSE, &error);
	g_assert_null(ctx);
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG);
	g_test_message("%s", error->message);
	g_clear_error(&error);
	ctx = imapfs_tls_context_new(NULL, path, FALSE, &error);
	g_assert_null(ctx);
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG);
	g_test_message("%s", error->message);
	g_assert_cmpint(g_unlink(path), ==, 0);
	g_assert_cmpint(g_rmdir(dir), ==, 0);
}

/* A stream to a fresh server in @mode, over TLS when @tls. */
static ImapfsStream *open_stream(TestServer **srv, gboolean tls, ServeMode mode,
				 guint timeout_ms, ImapfsTlsContext *ctx)
{
	g_autoptr(GError) error = NULL;
	ImapfsStream *s;

	*srv = server_start(tls, mode);
	s = connect_to(*srv, timeout_ms);
	if (tls) {
		g_assert_true(
			imapfs_stream_start_tls(s, ctx, "localhost", &error));
		g_assert_no_error(error);
	}
	return s;
}

static void test_read_timeout(gconstpointer data)
{
	gboolean tls = GPOINTER_TO_INT(data);
	g_autoptr(ImapfsTlsContext) ctx = context_for(pki.ca, FALSE);
	g_autoptr(GError) error = NULL;
	TestServer *srv;
	ImapfsStream *s;
	gint64 start, elapsed;
	char c;

	s = open_stream(&srv, tls, SERVE_SILENT, TIMEOUT_MS, ctx);
	imapfs_stream_set_timeout(s, SHORT_TIMEOUT_MS);
	start = g_get_monotonic_time();
	g_assert_cmpint(imapfs_stream_read(s, &c, 1, &error), ==, -1);
	elapsed = (g_get_monotonic_time() - start) / 1000;
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_TIMEOUT);
	g_test_message("%s", error->message);
	g_assert_cmpint(elapsed, >=, SHORT_TIMEOUT_MS - 10);
	g_assert_cmpint(elapsed, <, SHORT_TIMEOUT_MS + 1500);
	imapfs_stream_free(s);
	server_join(srv, NULL);
}

static void test_tls_handshake_timeout(void)
{
	g_autoptr(ImapfsTlsContext) ctx = context_for(pki.ca, FALSE);
	g_autoptr(GError) error = NULL;
	TestServer *srv = server_start(FALSE, SERVE_SILENT);
	ImapfsStream *s = connect_to(srv, SHORT_TIMEOUT_MS);

	g_assert_false(imapfs_stream_start_tls(s, ctx, "localhost", &error));
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_TIMEOUT);
	imapfs_stream_free(s);
	server_join(srv, NULL);
}

/* How the server ends the connection, for the EOF tests. */
typedef struct {
	gboolean tls;
	ServeMode mode;
} Variant;

static const Variant plain_close = {FALSE, SERVE_CLOSE};
static const Variant tls_close = {TRUE, SERVE_CLOSE};
static const Variant tls_close_raw = {TRUE, SERVE_CLOSE_RAW};

static void test_eof(gconstpointer data)
{
	const Variant *v = data;
	g_autoptr(ImapfsTlsContext) ctx = context_for(pki.ca, FALSE);
	g_autoptr(GError) error = NULL;
	TestServer *srv;
	ImapfsStream *s;
	char c;

	s = open_stream(&srv, v->tls, v->mode, TIMEOUT_MS, ctx);
	g_assert_cmpint(imapfs_stream_read(s, &c, 1, &error), ==, -1);
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_DISCONNECTED);
	g_assert_cmpstr(error->message, ==, "connection closed by server");
	imapfs_stream_free(s);
	server_join(srv, NULL);
}

static gpointer abort_soon(gpointer data)
{
	g_usleep(100 * 1000);
	imapfs_stream_abort(data);
	return NULL;
}

static void test_abort(gconstpointer data)
{
	gboolean tls = GPOINTER_TO_INT(data);
	g_autoptr(ImapfsTlsContext) ctx = context_for(pki.ca, FALSE);
	g_autoptr(GError) error = NULL;
	TestServer *srv;
	ImapfsStream *s;
	GThread *aborter;
	gint64 start, elapsed;
	char c;

	/* Without the abort, the read would wait for ten seconds. */
	s = open_stream(&srv, tls, SERVE_SILENT, 10000, ctx);
	start = g_get_monotonic_time();
	aborter = g_thread_new("abort", abort_soon, s);
	g_assert_cmpint(imapfs_stream_read(s, &c, 1, &error), ==, -1);
	elapsed = (g_get_monotonic_time() - start) / 1000;
	g_thread_join(aborter);
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_DISCONNECTED);
	g_assert_cmpstr(error->message, ==, "connection aborted");
	g_assert_cmpint(elapsed, <, 3000);
	g_clear_error(&error);
	g_assert_false(imapfs_stream_write_all(s, "x", 1, &error));
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_DISCONNECTED);
	imapfs_stream_free(s);
	server_join(srv, NULL);
}

/* Reads with ever-changing sizes, many smaller than a TLS record. */
static void read_in_odd_steps(ImapfsStream *s, char *buf, gsize len)
{
	static const gsize steps[] = {1, 7, 1000, 16384, 100000, 3};
	gsize got = 0;

	for (guint i = 0; got < len; i++) {
		g_autoptr(GError) error = NULL;
		gsize want = MIN(steps[i % G_N_ELEMENTS(steps)], len - got);
		gssize n = imapfs_stream_read(s, buf + got, want, &error);

		g_assert_no_error(error);
		g_assert_cmpint(n, >, 0);
		g_assert_cmpint(n, <=, want);
		got += n;
	}
}

static void test_bulk(gconstpointer data)
{
	gboolean tls = GPOINTER_TO_INT(data);
	g_autoptr(ImapfsTlsContext) ctx = context_for(pki.ca, FALSE);
	g_autoptr(GError) error = NULL;
	g_autoptr(GRand) rand = g_rand_new_with_seed(42);
	g_autofree guint32 *out = g_new(guint32, BULK_SIZE / 4);
	g_autofree char *in = g_malloc0(BULK_SIZE);
	TestServer *srv;
	ImapfsStream *s;

	for (gsize i = 0; i < BULK_SIZE / 4; i++)
		out[i] = g_rand_int(rand);
	s = open_stream(&srv, tls, SERVE_BULK, TIMEOUT_MS, ctx);
	g_assert_true(imapfs_stream_write_all(s, out, BULK_SIZE, &error));
	g_assert_no_error(error);
	read_in_odd_steps(s, in, BULK_SIZE);
	g_assert_true(memcmp(in, out, BULK_SIZE) == 0);
	imapfs_stream_free(s);
	server_join(srv, NULL);
}

/* Once a whole record has arrived, the socket stays quiet while its bytes
 * are read one by one: waiting on the socket first would time out. */
static void test_tls_pending(void)
{
	static const char line[] = "* OK one record, read byte by byte\r\n";
	g_autoptr(ImapfsTlsContext) ctx = context_for(pki.ca, FALSE);
	g_autoptr(GError) error = NULL;
	char buf[sizeof(line)] = "";
	TestServer *srv;
	ImapfsStream *s;

	s = open_stream(&srv, TRUE, SERVE_ECHO, SHORT_TIMEOUT_MS, ctx);
	g_assert_true(imapfs_stream_write_all(s, line, strlen(line), &error));
	g_assert_no_error(error);
	read_exact(s, buf, strlen(line), 1);
	g_assert_cmpstr(buf, ==, line);
	imapfs_stream_free(s);
	server_join(srv, NULL);
}

/* Writing into a connection the server has closed must fail, not kill the
 * process with SIGPIPE (whose default action this program keeps). */
static void test_no_sigpipe(gconstpointer data)
{
	gboolean tls = GPOINTER_TO_INT(data);
	g_autoptr(ImapfsTlsContext) ctx = context_for(pki.ca, FALSE);
	g_autoptr(GError) error = NULL;
	static const char chunk[16384];
	gboolean ok = TRUE;
	TestServer *srv;
	ImapfsStream *s;

	s = open_stream(&srv, tls, SERVE_CLOSE_RAW, TIMEOUT_MS, ctx);
	server_join(srv, NULL);
	for (int i = 0; i < 200 && ok; i++) {
		ok = imapfs_stream_write_all(s, chunk, sizeof(chunk), &error);
		if (ok)
			g_usleep(5 * 1000);
	}
	g_assert_false(ok);
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_DISCONNECTED);
	g_test_message("%s", error->message);
	imapfs_stream_free(s);
}

int main(int argc, char **argv)
{
	gconstpointer plain = GINT_TO_POINTER(FALSE);
	gconstpointer tls = GINT_TO_POINTER(TRUE);
	int rc;

	g_test_init(&argc, &argv, NULL);
	pki_init();
	g_test_add_func("/stream/net/wait", test_net_wait);
	g_test_add_func("/stream/plain/echo", test_plain_echo);
	g_test_add_func("/stream/plain/connect-refused", test_connect_refused);
	g_test_add_func("/stream/plain/connect-timeout", test_connect_timeout);
	g_test_add_data_func("/stream/plain/timeout", plain, test_read_timeout);
	g_test_add_data_func("/stream/plain/eof", &plain_close, test_eof);
	g_test_add_data_func("/stream/plain/abort", plain, test_abort);
	g_test_add_data_func("/stream/plain/bulk", plain, test_bulk);
	g_test_add_data_func("/stream/plain/no-sigpipe", plain,
			     test_no_sigpipe);
	g_test_add_func("/stream/tls/cafile", test_tls_cafile);
	g_test_add_func("/stream/tls/capath", test_tls_capath);
	g_test_add_func("/stream/tls/ip-literal", test_tls_ip_literal);
	g_test_add_func("/stream/tls/wrong-ca", test_tls_wrong_ca);
	g_test_add_func("/stream/tls/name-mismatch", test_tls_name_mismatch);
	g_test_add_func("/stream/tls/insecure", test_tls_insecure);
	g_test_add_func("/stream/tls/bad-trust", test_tls_bad_trust);
	g_test_add_func("/stream/tls/handshake-timeout",
			test_tls_handshake_timeout);
	g_test_add_data_func("/stream/tls/timeout", tls, test_read_timeout);
	g_test_add_data_func("/stream/tls/eof", &tls_close, test_eof);
	g_test_add_data_func("/stream/tls/eof-unclean", &tls_close_raw,
			     test_eof);
	g_test_add_data_func("/stream/tls/abort", tls, test_abort);
	g_test_add_data_func("/stream/tls/bulk", tls, test_bulk);
	g_test_add_func("/stream/tls/pending", test_tls_pending);
	g_test_add_data_func("/stream/tls/no-sigpipe", tls, test_no_sigpipe);
	rc = g_test_run();
	pki_clear();
	return rc;
}
