/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests for config.c (URL, -o options, defaults) and credentials.c. */
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "imapfs/config.h"
#include "imapfs/credentials.h"
#include "imapfs/error.h"

/* ---- URL ---- */

typedef struct {
	const char *url;
	gboolean implicit_tls;
	const char *host;
	guint16 port;
	const char *user;
	const char *mailbox;
} UrlCase;

static const UrlCase good_urls[] = {
	{"imaps://alice@mail.example.com", TRUE, "mail.example.com", 993,
	 "alice", NULL},
	{"imap://mail.example.com:1143/INBOX", FALSE, "mail.example.com", 1143,
	 NULL, "INBOX"},
	{"IMAPS://h", TRUE, "h", 993, NULL, NULL},
	{"imaps://h/", TRUE, "h", 993, NULL, NULL},
	{"imaps://h:1", TRUE, "h", 1, NULL, NULL},
	{"imaps://h:65535", TRUE, "h", 65535, NULL, NULL},
	{"imaps://alice%40example.com@h/Archive/2024/", TRUE, "h", 993,
	 "alice@example.com", "Archive/2024"},
	{"imaps://alice@example.com@h", TRUE, "h", 993, "alice@example.com",
	 NULL},
	{"imaps://b%C3%B6b@[::1]:10993/Entw%C3%BCrfe", TRUE, "::1", 10993,
	 "böb", "Entwürfe"},
	{"imap://[2001:db8::1]", FALSE, "2001:db8::1", 143, NULL, NULL},
	{"imaps://192.0.2.1/Sent%20Items", TRUE, "192.0.2.1", 993, NULL,
	 "Sent Items"},
	{"imaps://h/a%2fb", TRUE, "h", 993, NULL, "a/b"},
	{"imaps://h/Entwürfe", TRUE, "h", 993, NULL, "Entwürfe"},
};

static void test_url_good(void)
{
	for (gsize i = 0; i < G_N_ELEMENTS(good_urls); i++) {
		const UrlCase *c = &good_urls[i];
		g_autoptr(ImapfsConfig) cfg = imapfs_config_new();
		g_autoptr(GError) error = NULL;

		g_test_message("%s", c->url);
		g_assert_true(imapfs_config_set_url(cfg, c->url, &error));
		g_assert_no_error(error);
		g_assert_cmpint(cfg->implicit_tls, ==, c->implicit_tls);
		g_assert_cmpstr(cfg->host, ==, c->host);
		g_assert_cmpuint(cfg->port, ==, c->port);
		g_assert_cmpstr(cfg->user, ==, c->user);
		g_assert_cmpstr(cfg->mailbox, ==, c->mailbox);
	}
}

typedef struct {
	const char *url;
	const char *message_part;
} BadUrl;

static const BadUrl bad_urls[] = {
	{"http://h", "unsupported scheme \"http\""},
	{"imapss://h", "unsupported scheme"},
	{"mail.example.com", "not an IMAP URL"},
	{"", "not an IMAP URL"},
	{"imaps://", "empty host"},
	{"imaps://alice@", "empty host"},
	{"imaps://:993", "empty host"},
	{"imaps://[]", "empty host"},
	{"imaps:///INBOX", "empty host"},
	{"imaps://h:0", "invalid port \"0\""},
	{"imaps://h:65536", "invalid port \"65536\""},
	{"imaps://h:abc", "invalid port \"abc\""},
	{"imaps://h:", "invalid port \"\""},
	{"imaps://h:+1", "invalid port"},
	{"imaps://h:-1", "invalid port"},
	{"imaps://h:99999999999999999999999", "invalid port"},
	{"imaps://[::1]x", "invalid port"},
	{"imaps://h/INBOX?x=1", "query or fragment"},
	{"imaps://h#top", "query or fragment"},
	{"imaps://h/%ff", "invalid mailbox \"%ff\""},
	{"imaps://%C3@h", "invalid user name \"%C3\""},
	{"imaps://h/a%00b", "invalid mailbox"},
	{"imaps://h/a%0Ab", "invalid mailbox"},
	{"imaps://h/%zz", "invalid mailbox"},
	{"imaps://h/a%2", "invalid mailbox"},
	{"imaps://h/a\tb", "control character"},
	{"imaps://h\x7f", "control character"},
	{"imaps://@h", "empty user name"},
	{"imaps://[::1", "unterminated [IPv6] host"},
	{"imaps://[nothex]", "invalid IPv6 address \"nothex\""},
	{"imaps://[192.0.2.1]", "invalid IPv6 address"},
	{"imaps://h/a//b", "empty level in mailbox"},
	{"imaps://h//a", "empty level in mailbox"},
	{"imaps://h/INBOX//", "empty level in mailbox"}, /* fuzz-config */
	{"imaps://h/a%2F/", "empty level in mailbox"},
	{"imaps://ho st", "invalid host \"ho st\""},
	{"imaps://h\xff", "invalid host"},
};

static void test_url_bad(void)
{
	for (gsize i = 0; i < G_N_ELEMENTS(bad_urls); i++) {
		g_autoptr(ImapfsConfig) cfg = imapfs_config_new();
		g_autoptr(GError) error = NULL;
		g_autofree char *shown = g_strescape(bad_urls[i].url, NULL);

		g_test_message("%s", shown);
		g_assert_false(
			imapfs_config_set_url(cfg, bad_urls[i].url, &error));
		g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG);
		if (!strstr(error->message, bad_urls[i].message_part))
			g_error("\"%s\": message \"%s\" lacks \"%s\"",
				bad_urls[i].url, error->message,
				bad_urls[i].message_part);
		g_assert_null(strchr(error->message, '\n'));
		g_assert_null(cfg->host);
	}
}

static void test_url_message(void)
{
	g_autoptr(ImapfsConfig) cfg = imapfs_config_new();
	g_autoptr(GError) error = NULL;

	g_assert_false(imapfs_config_set_url(cfg, "imaps://h:99999", &error));
	g_assert_cmpstr(error->message, ==,
			"invalid port \"99999\" in URL \"imaps://h:99999\"");
}

/* The part after ':' is a password: refuse it without echoing it, also
 * when something else is wrong too (found by fuzz-config). */
static void test_url_password(void)
{
	static const char *const urls[] = {
		"imaps://alice:hunter2@h",
		"imaps://alice:hunter2@h/INBOX?x=1", /* query */
		"imaps://alice:hunter2\t@h",	     /* control character */
		"imapx://alice:hunter2@h",	     /* scheme */
		"alice:hunter2@h",		     /* no scheme */
	};

	for (gsize i = 0; i < G_N_ELEMENTS(urls); i++) {
		g_autoptr(ImapfsConfig) cfg = imapfs_config_new();
		g_autoptr(GError) error = NULL;

		g_assert_false(imapfs_config_set_url(cfg, urls[i], &error));
		g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG);
		g_assert_null(strstr(error->message, "hunter2"));
		g_assert_nonnull(strstr(error->message, "password"));
	}
}

/* A failed set_url() leaves the earlier configuration alone, and a URL
 * without a user keeps the one given by -o user=. */
static void test_url_keeps_state(void)
{
	g_autoptr(ImapfsConfig) cfg = imapfs_config_new();
	g_autoptr(GError) error = NULL;

	g_assert_cmpint(imapfs_config_parse_option(cfg, "user=bob", &error), ==,
			IMAPFS_OPTION_OURS);
	g_assert_true(imapfs_config_set_url(cfg, "imap://h/INBOX", &error));
	g_assert_cmpstr(cfg->user, ==, "bob");
	g_assert_false(imapfs_config_set_url(cfg, "imaps://x:0", &error));
	g_assert_cmpstr(cfg->host, ==, "h");
	g_assert_cmpuint(cfg->port, ==, 143);
	g_assert_cmpstr(cfg->mailbox, ==, "INBOX");
}

/* ---- Options ---- */

static void assert_option(ImapfsConfig *cfg, const char *option,
			  ImapfsOptionResult expected)
{
	g_autoptr(GError) error = NULL;
	ImapfsOptionResult r = imapfs_config_parse_option(cfg, option, &error);

	if (r != expected)
		g_error("option \"%s\": got %d, expected %d (%s)", option, r,
			expected, error ? error->message : "no error");
	if (expected == IMAPFS_OPTION_INVALID)
		g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG);
	else
		g_assert_no_error(error);
}

/* INVALID, with a message containing @needle. */
static void assert_invalid_says(const char *option, const char *needle)
{
	g_autoptr(ImapfsConfig) cfg = imapfs_config_new();
	g_autoptr(GError) error = NULL;

	g_assert_cmpint(imapfs_config_parse_option(cfg, option, &error), ==,
			IMAPFS_OPTION_INVALID);
	g_assert_nonnull(error);
	if (!strstr(error->message, needle))
		g_error("\"%s\": message \"%s\" lacks %s", option,
			error->message, needle);
}

static void test_option_defaults(void)
{
	g_autoptr(ImapfsConfig) cfg = imapfs_config_new();

	g_assert_cmpuint(cfg->connections, ==, 4);
	g_assert_cmpuint(cfg->cache_size, ==, G_GUINT64_CONSTANT(1) << 30);
	g_assert_cmpint(cfg->cache, ==, IMAPFS_CACHE_DISK);
	g_assert_true(cfg->parts);
	g_assert_cmpint(cfg->delete_mode, ==, IMAPFS_DELETE_EXPUNGE);
	g_assert_cmpuint(cfg->timeout, ==, 60);
	g_assert_cmpuint(cfg->poll, ==, 60);
	g_assert_false(cfg->read_only);
	g_assert_false(cfg->tls_insecure);
	g_assert_false(cfg->allow_plaintext);
	g_assert_null(cfg->auth);
}

static void test_option_not_ours(void)
{
	g_autoptr(ImapfsConfig) cfg = imapfs_config_new();

	assert_option(cfg, "allow_other", IMAPFS_OPTION_NOT_OURS);
	assert_option(cfg, "uid=1000", IMAPFS_OPTION_NOT_OURS);
	assert_option(cfg, "rw", IMAPFS_OPTION_NOT_OURS);
	assert_option(cfg, "users", IMAPFS_OPTION_NOT_OURS);
	assert_option(cfg, "timeouts=5", IMAPFS_OPTION_NOT_OURS);
	assert_option(cfg, "", IMAPFS_OPTION_NOT_OURS);
	assert_option(cfg, "=x", IMAPFS_OPTION_NOT_OURS);
}

static void test_option_flags(void)
{
	g_autoptr(ImapfsConfig) cfg = imapfs_config_new();

	assert_option(cfg, "ro", IMAPFS_OPTION_OURS);
	assert_option(cfg, "tls_insecure", IMAPFS_OPTION_OURS);
	assert_option(cfg, "allow_plaintext", IMAPFS_OPTION_OURS);
	g_assert_true(cfg->read_only);
	g_assert_true(cfg->tls_insecure);
	g_assert_true(cfg->allow_plaintext);
	assert_invalid_says("ro=1", "option \"ro\" takes no value");
	assert_invalid_says("tls_insecure=yes", "\"tls_insecure\"");
	assert_invalid_says("allow_plaintext=", "\"allow_plaintext\"");
}

static void test_option_need_value(void)
{
	static const char *const names[] = {
		"user",
		"password_command",
		"password_file",
		"auth",
		"oauth_token_command",
		"cafile",
		"capath",
		"connections",
		"cache_dir",
		"cache_size",
		"cache",
		"parts",
		"delete",
		"timeout",
		"poll",
	};

	for (gsize i = 0; i < G_N_ELEMENTS(names); i++) {
		g_autofree char *empty = g_strdup_printf("%s=", names[i]);
		g_autofree char *msg = g_strdup_printf(
			"option \"%s\" needs a value", names[i]);

		assert_invalid_says(names[i], msg);
		assert_invalid_says(empty, msg);
	}
}

static void test_option_strings(void)
{
	g_autoptr(ImapfsConfig) cfg = imapfs_config_new();
	g_autofree char *cwd = g_get_current_dir();
	g_autofree char *abs_ca = g_build_filename(cwd, "ca.pem", NULL);

	assert_option(cfg, "user=alice@example.com", IMAPFS_OPTION_OURS);
	assert_option(cfg, "password_command=pass mail/x=y",
		      IMAPFS_OPTION_OURS);
	assert_option(cfg, "oauth_token_command=oauth2 get",
		      IMAPFS_OPTION_OURS);
	assert_option(cfg, "password_file=/etc/../run/pw", IMAPFS_OPTION_OURS);
	assert_option(cfg, "cafile=ca.pem", IMAPFS_OPTION_OURS);
	assert_option(cfg, "capath=/etc/ssl/certs/", IMAPFS_OPTION_OURS);
	assert_option(cfg, "cache_dir=/var/cache/x", IMAPFS_OPTION_OURS);
	g_assert_cmpstr(cfg->user, ==, "alice@example.com");
	g_assert_cmpstr(cfg->password_command, ==, "pass mail/x=y");
	g_assert_cmpstr(cfg->oauth_token_command, ==, "oauth2 get");
	g_assert_cmpstr(cfg->password_file, ==, "/run/pw");
	g_assert_cmpstr(cfg->cafile, ==, abs_ca);
	g_assert_cmpstr(cfg->capath, ==, "/etc/ssl/certs");
	g_assert_cmpstr(cfg->cache_dir, ==, "/var/cache/x");
	/* The last one given wins. */
	assert_option(cfg, "user=bob", IMAPFS_OPTION_OURS);
	g_assert_cmpstr(cfg->user, ==, "bob");
	assert_option(cfg, "user=a\tb", IMAPFS_OPTION_INVALID);
	assert_option(cfg, "user=a\xff", IMAPFS_OPTION_INVALID);
	g_assert_cmpstr(cfg->user, ==, "bob");
}

static void test_option_auth(void)
{
	g_autoptr(ImapfsConfig) cfg = imapfs_config_new();

	assert_option(cfg, "auth=plain", IMAPFS_OPTION_OURS);
	g_assert_cmpstr(cfg->auth, ==, "PLAIN");
	assert_option(cfg, "auth=xoauth2", IMAPFS_OPTION_OURS);
	g_assert_cmpstr(cfg->auth, ==, "XOAUTH2");
	assert_option(cfg, "auth=SCRAM-SHA-256", IMAPFS_OPTION_OURS);
	g_assert_cmpstr(cfg->auth, ==, "SCRAM-SHA-256");
	assert_option(cfg, "auth=two words", IMAPFS_OPTION_INVALID);
	assert_option(cfg, "auth=ABCDEFGHIJKLMNOPQRSTU", IMAPFS_OPTION_INVALID);
	g_assert_cmpstr(cfg->auth, ==, "SCRAM-SHA-256");
	assert_invalid_says("auth=pl@in", "invalid auth \"pl@in\"");
}

static void test_option_numbers(void)
{
	g_autoptr(ImapfsConfig) cfg = imapfs_config_new();

	assert_option(cfg, "connections=1", IMAPFS_OPTION_OURS);
	g_assert_cmpuint(cfg->connections, ==, 1);
	assert_option(cfg, "connections=64", IMAPFS_OPTION_OURS);
	g_assert_cmpuint(cfg->connections, ==, 64);
	assert_option(cfg, "connections=0", IMAPFS_OPTION_INVALID);
	assert_option(cfg, "connections=65", IMAPFS_OPTION_INVALID);
	assert_option(cfg, "connections=-1", IMAPFS_OPTION_INVALID);
	assert_option(cfg, "connections=4x", IMAPFS_OPTION_INVALID);
	assert_option(cfg, "connections= 4", IMAPFS_OPTION_INVALID);
	assert_option(cfg, "connections=0x4", IMAPFS_OPTION_INVALID);
	g_assert_cmpuint(cfg->connections, ==, 64);
	assert_invalid_says("connections=100",
			    "invalid connections \"100\": expected 1 to 64");

	assert_option(cfg, "timeout=1", IMAPFS_OPTION_OURS);
	g_assert_cmpuint(cfg->timeout, ==, 1);
	assert_option(cfg, "timeout=86400", IMAPFS_OPTION_OURS);
	g_assert_cmpuint(cfg->timeout, ==, 86400);
	assert_option(cfg, "timeout=0", IMAPFS_OPTION_INVALID);
	assert_option(cfg, "timeout=86401", IMAPFS_OPTION_INVALID);
	assert_option(cfg, "timeout=60s", IMAPFS_OPTION_INVALID);
	g_assert_cmpuint(cfg->timeout, ==, 86400);

	assert_option(cfg, "poll=0", IMAPFS_OPTION_OURS);
	g_assert_cmpuint(cfg->poll, ==, 0);
	assert_option(cfg, "poll=300", IMAPFS_OPTION_OURS);
	g_assert_cmpuint(cfg->poll, ==, 300);
	assert_option(cfg, "poll=-1", IMAPFS_OPTION_INVALID);
	assert_invalid_says("poll=86401", "invalid poll \"86401\": expected "
					  "0 (never) to 86400 seconds");
	g_assert_cmpuint(cfg->poll, ==, 300);
}

static void test_option_cache_size(void)
{
	static const struct {
		const char *value;
		guint64 bytes;
	} good[] = {
		{"1", 1},
		{"1048576", 1048576},
		{"512K", 512 << 10},
		{"512k", 512 << 10},
		{"100M", 100 << 20},
		{"2G", G_GUINT64_CONSTANT(2) << 30},
		{"1g", G_GUINT64_CONSTANT(1) << 30},
		{"17179869183G", G_GUINT64_CONSTANT(17179869183) << 30},
	};
	static const char *const bad[] = {
		"0",
		"0K",
		"1.5G",
		"G",
		"1GB",
		"-1",
		"1T",
		" 1",
		"1 G",
		"17179869184G",
		"99999999999999999999999",
	};
	g_autoptr(ImapfsConfig) cfg = imapfs_config_new();

	for (gsize i = 0; i < G_N_ELEMENTS(good); i++) {
		g_autofree char *opt =
			g_strdup_printf("cache_size=%s", good[i].value);

		assert_option(cfg, opt, IMAPFS_OPTION_OURS);
		g_assert_cmpuint(cfg->cache_size, ==, good[i].bytes);
	}
	for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
		g_autofree char *opt = g_strdup_printf("cache_size=%s", bad[i]);

		assert_option(cfg, opt, IMAPFS_OPTION_INVALID);
	}
}

static void test_option_words(void)
{
	g_autoptr(ImapfsConfig) cfg = imapfs_config_new();

	assert_option(cfg, "cache=memory", IMAPFS_OPTION_OURS);
	g_assert_cmpint(cfg->cache, ==, IMAPFS_CACHE_MEMORY);
	assert_option(cfg, "cache=none", IMAPFS_OPTION_OURS);
	g_assert_cmpint(cfg->cache, ==, IMAPFS_CACHE_NONE);
	assert_option(cfg, "cache=disk", IMAPFS_OPTION_OURS);
	g_assert_cmpint(cfg->cache, ==, IMAPFS_CACHE_DISK);
	assert_option(cfg, "cache=ssd", IMAPFS_OPTION_INVALID);

	assert_option(cfg, "parts=no", IMAPFS_OPTION_OURS);
	g_assert_false(cfg->parts);
	assert_option(cfg, "parts=yes", IMAPFS_OPTION_OURS);
	g_assert_true(cfg->parts);
	assert_option(cfg, "parts=true", IMAPFS_OPTION_INVALID);

	assert_option(cfg, "delete=trash", IMAPFS_OPTION_OURS);
	g_assert_cmpint(cfg->delete_mode, ==, IMAPFS_DELETE_TRASH);
	assert_option(cfg, "delete=expunge", IMAPFS_OPTION_OURS);
	g_assert_cmpint(cfg->delete_mode, ==, IMAPFS_DELETE_EXPUNGE);
	assert_option(cfg, "delete=rm", IMAPFS_OPTION_INVALID);
	assert_invalid_says("cache=ssd", "invalid cache \"ssd\"");
}

/* ---- Finish ---- */

static ImapfsConfig *config_for(const char *url)
{
	ImapfsConfig *cfg = imapfs_config_new();
	g_autoptr(GError) error = NULL;

	g_assert_true(imapfs_config_set_url(cfg, url, &error));
	g_assert_no_error(error);
	return cfg;
}

static void test_finish_no_user(void)
{
	g_autoptr(ImapfsConfig) cfg = config_for("imaps://h");
	g_autoptr(GError) error = NULL;

	g_assert_false(imapfs_config_finish(cfg, &error));
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG);
	g_assert_cmpstr(error->message, ==,
			"no user name: give it in the URL (imaps://USER@HOST) "
			"or with -o user=NAME");
}

static void test_finish_no_url(void)
{
	g_autoptr(ImapfsConfig) cfg = imapfs_config_new();
	g_autoptr(GError) error = NULL;

	assert_option(cfg, "user=alice", IMAPFS_OPTION_OURS);
	g_assert_false(imapfs_config_finish(cfg, &error));
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG);
}

/* Finishing imaps://alice@h with @options (comma separated) fails
 * with a message holding @want; @want NULL: it succeeds. */
static void assert_finish(const char *options, const char *want)
{
	g_autoptr(ImapfsConfig) cfg = config_for("imaps://alice@h");
	g_auto(GStrv) opts = g_strsplit(options, ",", -1);
	g_autoptr(GError) error = NULL;

	for (guint i = 0; opts[i]; i++)
		assert_option(cfg, opts[i], IMAPFS_OPTION_OURS);
	g_test_message("%s", options);
	if (want == NULL) {
		g_assert_true(imapfs_config_finish(cfg, &error));
		g_assert_no_error(error);
		return;
	}
	g_assert_false(imapfs_config_finish(cfg, &error));
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG);
	g_assert_nonnull(strstr(error->message, want));
}

static void test_finish_auth(void)
{
	assert_finish("auth=plain", NULL);
	assert_finish("auth=login,password_command=x", NULL);
	assert_finish("oauth_token_command=x", NULL);
	assert_finish("oauth_token_command=x,auth=xoauth2", NULL);
	assert_finish("oauth_token_command=x,auth=OAuthBearer", NULL);
	assert_finish("auth=cram-md5", "\"CRAM-MD5\" is not supported");
	assert_finish("auth=xoauth2", "needs -o oauth_token_command");
	assert_finish("auth=oauthbearer,password_command=x",
		      "needs -o oauth_token_command");
	assert_finish("oauth_token_command=x,auth=plain", "not auth=PLAIN");
	assert_finish("oauth_token_command=x,password_file=/f", "not both");
}

static void test_uses_oauth(void)
{
	g_autoptr(ImapfsConfig) cfg = config_for("imaps://alice@h");

	g_assert_false(imapfs_config_uses_oauth(cfg));
	assert_option(cfg, "auth=xoauth2", IMAPFS_OPTION_OURS);
	g_assert_true(imapfs_config_uses_oauth(cfg));
	assert_option(cfg, "auth=plain", IMAPFS_OPTION_OURS);
	g_assert_false(imapfs_config_uses_oauth(cfg));
	assert_option(cfg, "oauth_token_command=x", IMAPFS_OPTION_OURS);
	g_assert_true(imapfs_config_uses_oauth(cfg));
}

static char *finished_cache_dir(const char *url)
{
	g_autoptr(ImapfsConfig) cfg = config_for(url);
	g_autoptr(GError) error = NULL;

	g_assert_true(imapfs_config_finish(cfg, &error));
	g_assert_no_error(error);
	return g_steal_pointer(&cfg->cache_dir);
}

static void test_finish_cache_dir(void)
{
	g_autofree char *xdg = NULL, *home = NULL, *rel = NULL, *esc = NULL;

	g_setenv("HOME", "/home/t", TRUE);
	g_setenv("XDG_CACHE_HOME", "/xdg", TRUE);
	xdg = finished_cache_dir("imaps://alice@mail.example.com");
	g_assert_cmpstr(xdg, ==, "/xdg/imapfs/alice@mail.example.com");
	g_unsetenv("XDG_CACHE_HOME");
	home = finished_cache_dir("imaps://alice@h");
	g_assert_cmpstr(home, ==, "/home/t/.cache/imapfs/alice@h");
	/* The XDG spec says a relative value is to be ignored. */
	g_setenv("XDG_CACHE_HOME", "relative", TRUE);
	rel = finished_cache_dir("imaps://alice@h");
	g_assert_cmpstr(rel, ==, "/home/t/.cache/imapfs/alice@h");
	/* The leaf stays one path component. */
	esc = finished_cache_dir("imaps://dom%2Fu%25@h");
	g_assert_cmpstr(esc, ==, "/home/t/.cache/imapfs/dom%2Fu%25@h");
	g_unsetenv("XDG_CACHE_HOME");
}

static void test_finish_keeps_cache_dir(void)
{
	g_autoptr(ImapfsConfig) cfg = config_for("imaps://alice@h");
	g_autoptr(GError) error = NULL;

	assert_option(cfg, "cache_dir=/srv/c", IMAPFS_OPTION_OURS);
	g_assert_true(imapfs_config_finish(cfg, &error));
	g_assert_cmpstr(cfg->cache_dir, ==, "/srv/c");
}

static void test_describe(void)
{
	g_autoptr(ImapfsConfig) a = config_for("imaps://alice@h");
	g_autoptr(ImapfsConfig) b = config_for("imap://[::1]");
	g_autofree char *da = imapfs_config_describe(a);
	g_autofree char *db = imapfs_config_describe(b);

	g_assert_cmpstr(da, ==, "alice@h:993");
	g_assert_cmpstr(db, ==, "[::1]:143");
}

/* ---- Credentials ---- */

static char *password_with(const char *option, GError **error)
{
	g_autoptr(ImapfsConfig) cfg = config_for("imaps://alice@h");

	if (option)
		assert_option(cfg, option, IMAPFS_OPTION_OURS);
	return imapfs_credentials_password(cfg, error);
}

static void assert_password(const char *option, const char *expected)
{
	g_autoptr(GError) error = NULL;
	char *pw = password_with(option, &error);

	g_assert_no_error(error);
	g_assert_cmpstr(pw, ==, expected);
	imapfs_secret_free(pw);
}

/* Fails, with a message containing @part and never @secret. */
static void assert_no_password(const char *option, const char *part,
			       const char *secret)
{
	g_autoptr(GError) error = NULL;
	char *pw = password_with(option, &error);

	g_assert_null(pw);
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG);
	if (!strstr(error->message, part))
		g_error("%s: message \"%s\" lacks \"%s\"", option,
			error->message, part);
	if (secret)
		g_assert_null(strstr(error->message, secret));
	g_assert_null(strchr(error->message, '\n'));
}

static void test_password_command(void)
{
	g_setenv("IMAPFS_PASSWORD", "from-env", TRUE);
	assert_password("password_command=printf 'secret\\nsecond\\n'",
			"secret");
	assert_password("password_command=printf 'pw\\r\\n'", "pw");
	assert_password("password_command=printf nonl", "nonl");
	assert_password("password_command=echo 'p w=,x'", "p w=,x");
	/* Output after the first line is read, so the writer does not die
	 * of SIGPIPE and fail the command. */
	assert_password("password_command=echo pw; head -c 1000000 /dev/zero",
			"pw");
	g_unsetenv("IMAPFS_PASSWORD");
}

static void test_password_command_fails(void)
{
	assert_no_password("password_command=echo hunter$((1+1)); exit 3",
			   "exited with status 3", "hunter2");
	assert_no_password("password_command=true", "no password", NULL);
	assert_no_password("password_command=echo; echo hunter$((1+1))",
			   "no password", "hunter2");
	assert_no_password("password_command=echo hunter$((1+1)); kill -9 $$",
			   "signal 9", "hunter2");
	assert_no_password("password_command=exit 127", "status 127", NULL);
	assert_no_password("password_command=head -c 20000 /dev/zero | "
			   "tr '\\0' a",
			   "longer than", "aaaa");
}

static void test_token_command(void)
{
	g_autoptr(ImapfsConfig) cfg = config_for("imaps://alice@h");
	g_autoptr(GError) error = NULL;
	char *token;

	/* A real token is a long line; the secret source is the command
	 * whatever the password options say. */
	assert_option(cfg,
		      "oauth_token_command=printf 'ya29.%02000d\\nrest\\n' 7",
		      IMAPFS_OPTION_OURS);
	g_setenv("IMAPFS_PASSWORD", "from-env", TRUE);
	token = imapfs_credentials_secret(cfg, &error);
	g_unsetenv("IMAPFS_PASSWORD");
	g_assert_no_error(error);
	g_assert_cmpuint(strlen(token), ==, 2005);
	g_assert_true(g_str_has_prefix(token, "ya29.0000"));
	g_assert_true(g_str_has_suffix(token, "07"));
	imapfs_secret_free(token);
	assert_option(cfg, "oauth_token_command=echo tok$((1+1)); exit 2",
		      IMAPFS_OPTION_OURS);
	g_assert_null(imapfs_credentials_token(cfg, 0, &error));
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG);
	g_assert_cmpstr(error->message, ==,
			"oauth_token_command exited with status 2: "
			"\"echo tok$((1+1)); exit 2\"");
	g_clear_error(&error);
	assert_option(cfg, "oauth_token_command=true", IMAPFS_OPTION_OURS);
	g_assert_null(imapfs_credentials_token(cfg, 0, &error));
	g_assert_nonnull(strstr(error->message, "printed no token"));
	g_clear_error(&error);
	/* A renewal is bounded: silent, or printing and never ending. */
	for (guint i = 0; i < 2; i++) {
		gint64 start = g_get_monotonic_time();

		assert_option(cfg,
			      i ? "oauth_token_command=echo t; exec sleep 60"
				: "oauth_token_command=exec sleep 60",
			      IMAPFS_OPTION_OURS);
		g_assert_null(imapfs_credentials_token(cfg, 1, &error));
		g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_TIMEOUT);
		g_assert_nonnull(strstr(error->message, "within 1 s"));
		g_assert_cmpint(g_get_monotonic_time() - start, <,
				5 * G_TIME_SPAN_SECOND);
		g_clear_error(&error);
	}
}

typedef struct {
	char *dir;
} TmpDir;

static void tmp_setup(TmpDir *t, gconstpointer data)
{
	g_autoptr(GError) error = NULL;

	t->dir = g_dir_make_tmp("imapfs-test-XXXXXX", &error);
	g_assert_no_error(error);
}

static void tmp_teardown(TmpDir *t, gconstpointer data)
{
	g_autoptr(GDir) d = g_dir_open(t->dir, 0, NULL);
	const char *name;

	while (d && (name = g_dir_read_name(d))) {
		g_autofree char *path = g_build_filename(t->dir, name, NULL);

		g_assert_cmpint(g_remove(path), ==, 0);
	}
	g_assert_cmpint(g_rmdir(t->dir), ==, 0);
	g_free(t->dir);
}

/* Writes @content to DIR/@name with @mode; returns the option. */
static char *password_file_option(TmpDir *t, const char *name,
				  const char *content, int mode)
{
	g_autofree char *path = g_build_filename(t->dir, name, NULL);
	g_autoptr(GError) error = NULL;

	g_assert_true(g_file_set_contents(path, content, -1, &error));
	g_assert_cmpint(g_chmod(path, mode), ==, 0);
	return g_strdup_printf("password_file=%s", path);
}

static void test_password_file(TmpDir *t, gconstpointer data)
{
	g_autofree char *ok =
		password_file_option(t, "ok", "filepw\nsecond\n", 0600);
	g_autofree char *ro =
		password_file_option(t, "ro", "filepw2\r\n", 0400);

	g_setenv("IMAPFS_PASSWORD", "from-env", TRUE);
	assert_password(ok, "filepw");
	assert_password(ro, "filepw2");
	g_unsetenv("IMAPFS_PASSWORD");
}

static void test_password_file_refused(TmpDir *t, gconstpointer data)
{
	g_autofree char *open_g =
		password_file_option(t, "g", "hunter2\n", 0640);
	g_autofree char *open_o =
		password_file_option(t, "o", "hunter2\n", 0602);
	g_autofree char *empty = password_file_option(t, "e", "\nx\n", 0600);
	g_autofree char *missing =
		g_strdup_printf("password_file=%s/none", t->dir);
	g_autofree char *dir = g_strdup_printf("password_file=%s", t->dir);

	assert_no_password(open_g, "chmod 600", "hunter2");
	assert_no_password(open_g, "0640", NULL);
	assert_no_password(open_o, "chmod 600", "hunter2");
	assert_no_password(empty, "empty password", NULL);
	assert_no_password(missing, "cannot open password_file", NULL);
	assert_no_password(dir, "not a regular file", NULL);
}

static void test_password_env(void)
{
	g_setenv("IMAPFS_PASSWORD", "env secret", TRUE);
	assert_password(NULL, "env secret");
	/* Used once, it leaves the environment (and children). */
	g_assert_null(g_getenv("IMAPFS_PASSWORD"));
}

/* meson may hand us a terminal on stdin when run by hand: take it away. */
static void test_password_no_terminal(void)
{
	int saved = dup(STDIN_FILENO);
	int null = open("/dev/null", O_RDONLY);
	g_autoptr(GError) error = NULL;
	char *pw;

	g_assert_cmpint(saved, >=, 0);
	g_assert_cmpint(null, >=, 0);
	g_assert_cmpint(dup2(null, STDIN_FILENO), ==, STDIN_FILENO);
	g_unsetenv("IMAPFS_PASSWORD");
	g_setenv("IMAPFS_PASSWORD", "", TRUE);
	pw = password_with(NULL, &error);
	g_assert_cmpint(dup2(saved, STDIN_FILENO), ==, STDIN_FILENO);
	close(saved);
	close(null);
	g_unsetenv("IMAPFS_PASSWORD");

	g_assert_null(pw);
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG);
	g_assert_cmpstr(error->message, ==,
			"no password: use -o password_command=..., "
			"-o password_file=..., IMAPFS_PASSWORD, or run on a "
			"terminal");
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/config/url/good", test_url_good);
	g_test_add_func("/config/url/bad", test_url_bad);
	g_test_add_func("/config/url/message", test_url_message);
	g_test_add_func("/config/url/password", test_url_password);
	g_test_add_func("/config/url/keeps-state", test_url_keeps_state);
	g_test_add_func("/config/option/defaults", test_option_defaults);
	g_test_add_func("/config/option/not-ours", test_option_not_ours);
	g_test_add_func("/config/option/flags", test_option_flags);
	g_test_add_func("/config/option/need-value", test_option_need_value);
	g_test_add_func("/config/option/strings", test_option_strings);
	g_test_add_func("/config/option/auth", test_option_auth);
	g_test_add_func("/config/option/numbers", test_option_numbers);
	g_test_add_func("/config/option/cache-size", test_option_cache_size);
	g_test_add_func("/config/option/words", test_option_words);
	g_test_add_func("/config/finish/no-user", test_finish_no_user);
	g_test_add_func("/config/finish/no-url", test_finish_no_url);
	g_test_add_func("/config/finish/cache-dir", test_finish_cache_dir);
	g_test_add_func("/config/finish/keeps-cache-dir",
			test_finish_keeps_cache_dir);
	g_test_add_func("/config/finish/auth", test_finish_auth);
	g_test_add_func("/config/uses-oauth", test_uses_oauth);
	g_test_add_func("/config/describe", test_describe);
	g_test_add_func("/credentials/token-command", test_token_command);
	g_test_add_func("/credentials/command", test_password_command);
	g_test_add_func("/credentials/command-fails",
			test_password_command_fails);
	g_test_add("/credentials/file", TmpDir, NULL, tmp_setup,
		   test_password_file, tmp_teardown);
	g_test_add("/credentials/file-refused", TmpDir, NULL, tmp_setup,
		   test_password_file_refused, tmp_teardown);
	g_test_add_func("/credentials/env", test_password_env);
	g_test_add_func("/credentials/no-terminal", test_password_no_terminal);
	return g_test_run();
}
