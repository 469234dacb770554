/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libFuzzer target for the mount's configuration: the URL, the -o options
 * and mount(8)'s option string.
 *
 * The first line of the input is the URL, the rest the OPTIONS of
 * "mount.imapfs URL DIR -o OPTIONS" (commas, fstab's octal escapes, double
 * quotes). The helper's translation goes through libfuse's own -o parser,
 * as in the daemon, and each option it yields through
 * imapfs_config_parse_option(); then come the URL and
 * imapfs_config_finish(). After every step the configuration is checked
 * against config.h; a broken promise aborts, so the fuzzer reports it as a
 * crash.
 */
#include <stdlib.h>
#include <string.h>

#include <fuse_opt.h>

#include "imapfs/config.h"
#include "imapfs/error.h"
#include "imapfs/log.h"
#include "imapfs/mount-helper.h"

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size);

static void check(gboolean ok)
{
	if (!ok)
		abort();
}

static const char *or_none(const char *s)
{
	return s ? s : "(none)";
}

/* Every field, so that "nothing changed" is one comparison. */
static char *snapshot(const ImapfsConfig *cfg)
{
	return g_strdup_printf(
		"%d|%s|%u|%s|%s|%s|%s|%s|%s|%s|%s|%d|%d|%d|%u|%s|"
		"%" G_GUINT64_FORMAT "|%d|%d|%d|%u|%u",
		cfg->implicit_tls, or_none(cfg->host), cfg->port,
		or_none(cfg->user), or_none(cfg->mailbox),
		or_none(cfg->password_command), or_none(cfg->password_file),
		or_none(cfg->auth), or_none(cfg->oauth_token_command),
		or_none(cfg->cafile), or_none(cfg->capath), cfg->tls_insecure,
		cfg->allow_plaintext, cfg->read_only, cfg->connections,
		or_none(cfg->cache_dir), cfg->cache_size, cfg->cache,
		cfg->parts, cfg->delete_mode, cfg->timeout, cfg->poll);
}

static gboolean is_clean_text(const char *s)
{
	if (!g_utf8_validate(s, -1, NULL))
		return FALSE;
	for (const guchar *p = (const guchar *)s; *p; p++) {
		if (*p < 0x20 || *p == 0x7f)
			return FALSE;
	}
	return TRUE;
}

static void check_error(const GError *error)
{
	check(g_error_matches(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG));
	check(g_utf8_validate(error->message, -1, NULL));
}

static void check_path(const char *path)
{
	check(path == NULL || g_path_is_absolute(path));
}

/* What the options may have stored. */
static void check_options(const ImapfsConfig *cfg)
{
	check(cfg->connections >= 1 && cfg->connections <= 64);
	check(cfg->timeout >= 1 && cfg->timeout <= 86400);
	check(cfg->poll <= 86400 && cfg->cache_size >= 1);
	check(cfg->cache <= IMAPFS_CACHE_NONE);
	check(cfg->delete_mode <= IMAPFS_DELETE_TRASH);
	check(cfg->user == NULL || (*cfg->user && is_clean_text(cfg->user)));
	check(cfg->auth == NULL ||
	      (*cfg->auth && strlen(cfg->auth) <= 20 &&
	       strspn(cfg->auth, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") ==
		       strlen(cfg->auth)));
	check(cfg->password_command == NULL || *cfg->password_command);
	check(cfg->oauth_token_command == NULL || *cfg->oauth_token_command);
	check_path(cfg->password_file);
	check_path(cfg->cafile);
	check_path(cfg->capath);
	check_path(cfg->cache_dir);
}

static void apply_option(ImapfsConfig *cfg, const char *option)
{
	g_autoptr(GError) error = NULL;
	g_autofree char *before = snapshot(cfg);
	g_autofree char *after = NULL;
	ImapfsOptionResult result =
		imapfs_config_parse_option(cfg, option, &error);

	check(result <= IMAPFS_OPTION_INVALID);
	if (result == IMAPFS_OPTION_INVALID)
		check_error(error);
	else
		check(error == NULL);
	/* an option left to FUSE, or refused, stores nothing */
	after = snapshot(cfg);
	check(result == IMAPFS_OPTION_OURS || strcmp(before, after) == 0);
	check_options(cfg);
}

typedef struct {
	guint count;
	char *option; /* the last one */
} FuseOpts;

static int collect_option(void *data, const char *arg, int key,
			  struct fuse_args *outargs)
{
	FuseOpts *opts = data;

	check(key == FUSE_OPT_KEY_OPT);
	opts->count++;
	g_free(opts->option);
	opts->option = g_strdup(arg);
	return 0;
}

/* One "-o" argument of the helper is one option for libfuse, which gives
 * it to imapfs with the helper's escapes undone. */
static void apply_helper_option(ImapfsConfig *cfg, const char *escaped)
{
	char *argv[] = {"imapfs", "-o", (char *)escaped, NULL};
	struct fuse_args args = FUSE_ARGS_INIT(3, argv);
	FuseOpts opts = {0, NULL};
	g_autofree char *again = NULL;

	check(fuse_opt_parse(&args, &opts, NULL, collect_option) == 0);
	fuse_opt_free_args(&args);
	check(opts.count == 1 && *opts.option != '\0');
	again = imapfs_mount_helper_escape(opts.option);
	check(strcmp(again, escaped) == 0);
	apply_option(cfg, opts.option);
	g_free(opts.option);
}

/* mount(8) passes SOURCE DIR -o OPTIONS; the helper only reorders them. */
static void apply_mount_options(ImapfsConfig *cfg, char *url, char *opts)
{
	char *argv[] = {"mount.imapfs", url, "/mnt", "-o", opts, NULL};
	g_auto(ImapfsMountArgs) out = {0};
	g_autoptr(GError) error = NULL;
	guint argc;

	if (!imapfs_mount_helper_translate(5, argv, &out, &error)) {
		/* only a URL that looks like a flag can go wrong; the
		 * message quotes it raw, not always as UTF-8 */
		check(url[0] == '-' && url[1] != '\0');
		check(g_error_matches(error, IMAPFS_ERROR,
				      IMAPFS_ERROR_CONFIG));
		return;
	}
	argc = g_strv_length(out.argv);
	check(argc >= 3 && argc % 2 == 1 && !out.fake && !out.verbose);
	check(strcmp(out.argv[0], argv[0]) == 0);
	check(strcmp(out.argv[argc - 2], url) == 0);
	check(strcmp(out.argv[argc - 1], "/mnt") == 0);
	for (guint i = 1; i + 2 < argc; i += 2) {
		check(strcmp(out.argv[i], "-o") == 0);
		apply_helper_option(cfg, out.argv[i + 1]);
	}
}

/* The password of scheme://USER:PASSWORD@HOST, split as config.c splits,
 * or NULL. */
static char *url_password(const char *url)
{
	const char *sep = strstr(url, "://");
	const char *start = sep ? sep + 3 : url;
	gsize len = strcspn(start, "/");
	const char *at = g_strrstr_len(start, (gssize)len, "@");
	const char *colon;

	if (!at)
		return NULL;
	colon = memchr(start, ':', (gsize)(at - start));
	return colon ? g_strndup(colon + 1, (gsize)(at - colon - 1)) : NULL;
}

/* A refused URL is never echoed with its password in the message. */
static void check_url_error(const GError *error, const char *url)
{
	g_autofree char *password = url_password(url);
	g_autofree char *quoted = NULL;
	g_autofree char *needle = NULL;

	check_error(error);
	if (!password || *password == '\0')
		return;
	needle = g_strdup_printf(":%s@", password);
	quoted = imapfs_log_quote(needle);
	check(strstr(error->message, needle) == NULL);
	check(strstr(error->message, quoted) == NULL);
}

static void check_mailbox(const char *mailbox)
{
	gsize len;

	if (!mailbox)
		return;
	len = strlen(mailbox);
	check(len > 0 && is_clean_text(mailbox));
	check(mailbox[0] != '/' && mailbox[len - 1] != '/');
	check(strstr(mailbox, "//") == NULL);
}

static void check_url(const ImapfsConfig *cfg, const char *url)
{
	const char *host = cfg->host;

	check(host && *host && cfg->port != 0);
	check(cfg->implicit_tls ==
	      (g_ascii_strncasecmp(url, "imaps://", 8) == 0));
	if (strchr(host, ':'))
		check(g_hostname_is_ip_address(host));
	else
		check(g_utf8_validate(host, -1, NULL) &&
		      strcspn(host, ":/@[]") == strlen(host));
	check_mailbox(cfg->mailbox);
}

static void apply_url(ImapfsConfig *cfg, const char *url)
{
	g_autoptr(GError) error = NULL;
	g_autofree char *before = snapshot(cfg);
	g_autofree char *after = NULL;

	if (imapfs_config_set_url(cfg, url, &error)) {
		check(error == NULL);
		check_url(cfg, url);
	} else {
		check_url_error(error, url);
		after = snapshot(cfg);
		check(strcmp(before, after) == 0);
	}
	check_options(cfg);
}

static void finish(ImapfsConfig *cfg)
{
	g_autoptr(GError) error = NULL;
	g_autofree char *described = NULL;

	if (imapfs_config_finish(cfg, &error)) {
		check(cfg->host && cfg->user && cfg->cache_dir);
		check_options(cfg);
	} else {
		check_error(error);
	}
	described = imapfs_config_describe(cfg);
	check(described != NULL);
	imapfs_config_uses_oauth(cfg);
}

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size)
{
	g_autoptr(ImapfsConfig) cfg = imapfs_config_new();
	g_autofree char *text = g_strndup((const char *)data, size);
	char *options = strchr(text, '\n');

	if (options)
		*options++ = '\0';
	else
		options = text + strlen(text);
	/* the daemon's order: options, then the URL, then the checks */
	check_options(cfg);
	apply_mount_options(cfg, text, options);
	apply_url(cfg, text);
	finish(cfg);
	return 0;
}
