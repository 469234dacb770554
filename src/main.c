/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * imapfs: start-up. Parses the command line, checks the account (TLS,
 * login, the mailbox) before mounting so that every configuration error is
 * reported on the terminal, then mounts, daemonizes and serves.
 */
#include <errno.h>
#include <fuse_lowlevel.h>
#include <malloc.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imapfs/block-cache.h"
#include "imapfs/config.h"
#include "imapfs/credentials.h"
#include "imapfs/error.h"
#include "imapfs/fuse-ops.h"
#include "imapfs/log.h"
#include "imapfs/mount-helper.h"
#include "imapfs/pool.h"
#include "imapfs/service.h"
#include "imapfs/stream.h"
#include "imapfs/tree.h"
#include "imapfs/watch.h"

/* Memory for cached message blocks (the disk cache comes on top). With
 * cache=none, only enough to serve the blocks being read. */
#define MEMORY_CACHE_BYTES (48 * 1024 * 1024)
#define MEMORY_CACHE_NONE_BYTES (4 * 1024 * 1024)
/* Prefetched bytes not yet read, plus those in flight. */
#define PREFETCH_BUDGET (24 * 1024 * 1024)

typedef struct {
	ImapfsConfig *cfg;
	char *url;
	char *mountpoint;
	gboolean foreground;
	gboolean debug;
	gboolean show_help;
	gboolean show_version;
	ImapfsFsOwner owner;
	GError *error; /* the first bad argument */
} Args;

enum { KEY_HELP, KEY_VERSION, KEY_FOREGROUND, KEY_DEBUG };

static const struct fuse_opt option_spec[] = {
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	FUSE_OPT_KEY("-f", KEY_FOREGROUND),
	FUSE_OPT_KEY("-d", KEY_DEBUG),
	FUSE_OPT_KEY("debug", KEY_DEBUG),
	FUSE_OPT_END,
};

/* One screen: every option, its default in parentheses. */
static void usage(const char *prog)
{
	printf("usage: %s [-f] [-d] [-o OPT[,OPT...]] URL MOUNTPOINT\n"
	       "       %s --help | --version\n"
	       "Mounts an IMAP account: mailboxes are directories, messages "
	       "are files.\n"
	       "URL: imaps://[USER@]HOST[:PORT][/MAILBOX], or imap://... "
	       "with STARTTLS.\n\n"
	       " -f  stay in the foreground  -d  and trace the IMAP "
	       "conversation (no secrets)\n"
	       " -o user=NAME               login name, if not in the URL\n"
	       " -o password_command=CMD    password: the first line CMD "
	       "prints (/bin/sh)\n"
	       " -o password_file=FILE      password: the first line of "
	       "FILE (mode 0600)\n"
	       "                            (else $IMAPFS_PASSWORD, else "
	       "a prompt)\n"
	       " -o auth=MECH               plain, login, xoauth2, "
	       "oauthbearer (best offered)\n"
	       " -o oauth_token_command=CMD OAuth 2.0 access token: the "
	       "first line CMD prints\n"
	       " -o cafile=FILE,capath=DIR  trust anchors (the system's)\n"
	       " -o tls_insecure            do not verify the server "
	       "certificate\n"
	       " -o allow_plaintext         allow imap:// without "
	       "STARTTLS\n"
	       " -o connections=N           IMAP connections at most (4)\n"
	       " -o cache=disk|memory|none  where read mail is kept (disk)\n"
	       " -o cache_dir=DIR           (~/.cache/imapfs/USER@HOST)\n"
	       " -o cache_size=SIZE         disk cache limit, K/M/G "
	       "suffix (1G)\n"
	       " -o parts=yes|no            MIME parts as N.parts/ "
	       "directories (yes)\n"
	       " -o delete=expunge|trash    what rm does (expunge)\n"
	       " -o timeout=SECONDS         longest wait for the server "
	       "(60)\n"
	       " -o poll=SECONDS            look for others' changes; 0: "
	       "never (60)\n"
	       " -o ro                      never change anything on the "
	       "server\n"
	       " -o uid=N,gid=N,umask=M     owner and mode of the files "
	       "(yours, 000)\n"
	       " -o allow_other, default_permissions and other FUSE options: "
	       "see imapfs(1)\n",
	       prog, prog);
}

/* Built against, and running with when that differs. */
static void print_version(void)
{
	g_autofree char *glib_run =
		g_strdup_printf("%u.%u.%u", glib_major_version,
				glib_minor_version, glib_micro_version);
	const char *ssl_run = imapfs_tls_library_version();

	printf("imapfs %s\n", IMAPFS_VERSION);
	printf("libfuse %d.%d (running %s)\n", FUSE_MAJOR_VERSION,
	       FUSE_MINOR_VERSION, fuse_pkgversion());
	printf("%s", imapfs_tls_library_built());
	if (g_strcmp0(ssl_run, imapfs_tls_library_built()) != 0)
		printf(" (running %s)", ssl_run);
	printf("\nGLib %d.%d.%d", GLIB_MAJOR_VERSION, GLIB_MINOR_VERSION,
	       GLIB_MICRO_VERSION);
	if (glib_major_version != GLIB_MAJOR_VERSION ||
	    glib_minor_version != GLIB_MINOR_VERSION ||
	    glib_micro_version != GLIB_MICRO_VERSION)
		printf(" (running %s)", glib_run);
	printf("\n");
}

/* uid=, gid= and umask= are handled by the high-level FUSE API only, so
 * the low-level one needs us to do it. */
static gboolean parse_owner_option(Args *a, const char *opt)
{
	unsigned long v;
	char *end;

	if (g_str_has_prefix(opt, "uid=")) {
		v = strtoul(opt + 4, &end, 10);
		a->owner.uid = v;
	} else if (g_str_has_prefix(opt, "gid=")) {
		v = strtoul(opt + 4, &end, 10);
		a->owner.gid = v;
	} else if (g_str_has_prefix(opt, "umask=")) {
		v = strtoul(opt + 6, &end, 8);
		a->owner.umask = v & 0777;
	} else {
		return FALSE;
	}
	if ((*end != '\0' || end == strchr(opt, '=') + 1) && a->error == NULL)
		g_set_error(&a->error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "invalid value in option \"%s\"", opt);
	return TRUE;
}

static int keep_positional(Args *a, const char *arg)
{
	if (a->url == NULL)
		a->url = g_strdup(arg);
	else if (a->mountpoint == NULL)
		a->mountpoint = g_strdup(arg);
	else if (a->error == NULL)
		g_set_error(&a->error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "unexpected argument \"%s\"", arg);
	return 0;
}

/* Sorts each argument: ours, the kernel's/libfuse's (kept), or an error.
 * Returns 0 to drop it from the FUSE arguments, 1 to keep it. */
static int option_proc(void *data, const char *arg, int key,
		       struct fuse_args *outargs)
{
	Args *a = data;
	GError *error = NULL;

	switch (key) {
	case KEY_HELP:
		a->show_help = TRUE;
		return 0;
	case KEY_VERSION:
		a->show_version = TRUE;
		return 0;
	case KEY_FOREGROUND:
		a->foreground = TRUE;
		return 0;
	case KEY_DEBUG:
		a->debug = a->foreground = TRUE;
		return 1; /* libfuse traces its requests too */
	case FUSE_OPT_KEY_NONOPT:
		return keep_positional(a, arg);
	case FUSE_OPT_KEY_OPT:
		if (parse_owner_option(a, arg))
			return 0;
		switch (imapfs_config_parse_option(a->cfg, arg, &error)) {
		case IMAPFS_OPTION_OURS:
			/* "ro" also makes the kernel refuse writes. */
			return g_strcmp0(arg, "ro") == 0;
		case IMAPFS_OPTION_NOT_OURS:
			return 1;
		case IMAPFS_OPTION_INVALID:
			if (a->error == NULL)
				a->error = error;
			else
				g_error_free(error);
			return 0;
		}
		return 1;
	default:
		return 1;
	}
}

static int fail(const char *what, GError *error)
{
	fprintf(stderr, "%s: %s%s\n", g_get_prgname(), what ? what : "",
		error ? error->message : "");
	g_clear_error(&error);
	return 1;
}

/* Everything that can go wrong with the account, found before mounting. */
static ImapfsPool *connect_account(ImapfsConfig *cfg, GError **error)
{
	char *password = imapfs_credentials_secret(cfg, error);

	if (password == NULL)
		return NULL;
	ImapfsTlsContext *tls = imapfs_tls_context_new(
		cfg->cafile, cfg->capath, cfg->tls_insecure, error);
	if (tls == NULL) {
		imapfs_secret_free(password);
		return NULL;
	}
	if (cfg->tls_insecure)
		g_warning("the server certificate is not verified "
			  "(tls_insecure): anyone on the path can read and "
			  "change the mail and the password");
	ImapfsPool *pool = imapfs_pool_new(cfg, tls, password);
	if (!imapfs_pool_check(pool, error)) {
		imapfs_pool_free(pool);
		return NULL;
	}
	return pool;
}

/* The URL as given, so that mount(8) and df show it and "mount -a" finds
 * an fstab line already mounted; subtype makes the type fuse.imapfs. */
static char *fsname_option(const char *url)
{
	g_autofree char *escaped = imapfs_mount_helper_escape(url);

	return g_strconcat("-ofsname=", escaped, ",subtype=imapfs", NULL);
}

typedef struct {
	struct fuse_session *se;
	ImapfsPool *pool;
	gint stop; /* atomic */
} ExitWatch;

/* libfuse waits for every request in progress before its loop returns;
 * one stuck on a silent server would hold up an unmount or SIGTERM for
 * the whole timeout. This thread notices that the session ended and makes
 * such requests fail at once. */
static gpointer watch_exit(gpointer data)
{
	ExitWatch *w = data;

	while (!g_atomic_int_get(&w->stop)) {
		if (fuse_session_exited(w->se)) {
			imapfs_pool_shutdown(w->pool);
			break;
		}
		g_usleep(100 * 1000);
	}
	return NULL;
}

static int loop(struct fuse_session *se, ImapfsPool *pool)
{
	struct fuse_loop_config config = {.clone_fd = 0,
					  .max_idle_threads = 10};
	ExitWatch watch = {se, pool, 0};
	/* Started only now: threads do not survive fuse_daemonize()'s fork. */
	GThread *watcher = g_thread_new("exit-watch", watch_exit, &watch);
	int ret = fuse_session_loop_mt(se, &config);

	g_atomic_int_set(&watch.stop, 1);
	g_thread_join(watcher);
	/* libfuse reports the signal that ended the loop; being told to
	 * stop is a clean end for us. */
	return ret != 0 && ret != SIGTERM && ret != SIGINT && ret != SIGHUP;
}

/* Threads that must not start before fuse_daemonize()'s fork. */
static void start_threads(const ImapfsConfig *cfg, ImapfsBlockCache *cache,
			  ImapfsPool *pool)
{
	/* One connection stays free of prefetch for what a reader waits
	 * for; without a cache, prefetched data would have nowhere to go. */
	if (cfg->cache != IMAPFS_CACHE_NONE)
		imapfs_block_cache_start_prefetch(
			cache, MAX(cfg->connections, 2) - 1, PREFETCH_BUDGET);
	imapfs_pool_warm(pool);
}

/* For a Type=notify unit: the mount is in place and answers (requests
 * wait in the kernel until the loop below takes them). */
static void notify_ready(const Args *a)
{
	g_autofree char *state = g_strdup_printf(
		"READY=1\nSTATUS=%s mounted on %s", a->url, a->mountpoint);

	imapfs_service_notify(state);
}

static int serve(struct fuse_args *fargs, Args *a, ImapfsTree *tree,
		 ImapfsBlockCache *cache, ImapfsPool *pool)
{
	g_autoptr(ImapfsFs) fs = imapfs_fs_new(tree, &a->owner);
	struct fuse_session *se;
	int ret = 1;

	se = fuse_session_new(fargs, imapfs_fs_ops(),
			      sizeof(struct fuse_lowlevel_ops), fs);
	if (se == NULL)
		return 1; /* libfuse said why */
	imapfs_fs_set_session(fs, se);
	if (fuse_set_signal_handlers(se) != 0)
		goto out_destroy;
	if (fuse_session_mount(se, a->mountpoint) != 0)
		goto out_handlers;
	if (fuse_daemonize(a->foreground) != 0)
		goto out_unmount;
	if (!a->foreground)
		imapfs_log_use_syslog();
	start_threads(a->cfg, cache, pool);
	/* Stopped before fs goes: it hands changes to fs. */
	ImapfsWatch *watch = imapfs_watch_new(a->cfg, pool, tree);
	imapfs_watch_start(watch);
	notify_ready(a);
	ret = loop(se, pool);
	imapfs_service_notify("STOPPING=1");
	imapfs_watch_free(watch);
	imapfs_fs_stop_notices(fs);
out_unmount:
	fuse_session_unmount(se);
out_handlers:
	fuse_remove_signal_handlers(se);
out_destroy:
	fuse_session_destroy(se);
	return ret;
}

/* The persistent cache, with cache=disk; locked against other mounts. */
static gboolean open_disk_cache(const ImapfsConfig *cfg,
				ImapfsDiskCache **disk_r, GError **error)
{
	*disk_r = NULL;
	if (cfg->cache != IMAPFS_CACHE_DISK)
		return TRUE;
	g_autofree char *account =
		g_strdup_printf("%s@%s:%u", cfg->user, cfg->host, cfg->port);
	*disk_r = imapfs_disk_cache_open(cfg->cache_dir, account,
					 cfg->cache_size, error);
	return *disk_r != NULL;
}

static ImapfsBlockCache *new_block_cache(const ImapfsConfig *cfg,
					 ImapfsDiskCache *disk,
					 ImapfsPool *pool)
{
	gboolean none = cfg->cache == IMAPFS_CACHE_NONE;

	return imapfs_block_cache_new(
		none ? MEMORY_CACHE_NONE_BYTES : MEMORY_CACHE_BYTES, disk,
		imapfs_block_cache_fetch_from_pool, pool);
}

/* libfuse judges the options we leave to it only when a session is
 * made: made here on a copy, so that a typo costs no login. It says
 * which option it refused. */
static gboolean fuse_options_valid(const struct fuse_args *fargs)
{
	static const struct fuse_lowlevel_ops no_ops;
	struct fuse_args copy = FUSE_ARGS_INIT(0, NULL);
	struct fuse_session *se;

	for (int i = 0; i < fargs->argc; i++)
		fuse_opt_add_arg(&copy, fargs->argv[i]);
	se = fuse_session_new(&copy, &no_ops, sizeof(no_ops), NULL);
	fuse_opt_free_args(&copy);
	if (se == NULL)
		return FALSE;
	fuse_session_destroy(se);
	return TRUE;
}

/* Connects, then mounts and serves until unmounted. */
static int run(struct fuse_args *fargs, Args *a)
{
	g_autofree char *fsname = fsname_option(a->url);
	GError *error = NULL;
	ImapfsDiskCache *disk;
	int ret;

	fuse_opt_add_arg(fargs, fsname);
	/* Before logging in: a second mount on one cache fails at once. */
	if (!open_disk_cache(a->cfg, &disk, &error))
		return fail(NULL, error);
	ImapfsPool *pool = connect_account(a->cfg, &error);
	if (pool == NULL) {
		imapfs_disk_cache_close(disk);
		return fail(NULL, error);
	}
	ImapfsBlockCache *cache = new_block_cache(a->cfg, disk, pool);
	ImapfsTree *tree = imapfs_tree_new(a->cfg, pool, cache, disk);
	if (!imapfs_tree_load(tree, &error))
		ret = fail(NULL, error);
	else
		ret = serve(fargs, a, tree, cache, pool);
	imapfs_tree_free(tree);
	imapfs_block_cache_free(cache);
	imapfs_pool_free(pool);
	imapfs_disk_cache_close(disk);
	return ret;
}

/* Checked before connecting, so a typo costs no login. */
static gboolean check_mountpoint(const char *path, GError **error)
{
	struct stat st;

	if (stat(path, &st) != 0) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "cannot use mount point \"%s\": %s", path,
			    g_strerror(errno));
		return FALSE;
	}
	if (!S_ISDIR(st.st_mode)) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "mount point \"%s\" is not a directory", path);
		return FALSE;
	}
	return TRUE;
}

static gboolean finish_args(Args *a, GError **error)
{
	if (a->error) {
		g_propagate_error(error, g_steal_pointer(&a->error));
		return FALSE;
	}
	if (a->url == NULL || a->mountpoint == NULL) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "need a URL and a mount point (see --help)");
		return FALSE;
	}
	return imapfs_config_set_url(a->cfg, a->url, error) &&
	       imapfs_config_finish(a->cfg, error) &&
	       check_mountpoint(a->mountpoint, error);
}

static void args_clear(Args *a)
{
	imapfs_config_free(a->cfg);
	g_free(a->url);
	g_free(a->mountpoint);
	g_clear_error(&a->error);
}

/* Parses, checks and mounts; @helper is set when called as mount(8)'s
 * helper: -f (fake) then stops after the checks. */
static int mount_main(int argc, char **argv, const ImapfsMountArgs *helper)
{
	struct fuse_args fargs = FUSE_ARGS_INIT(argc, argv);
	Args a = {.cfg = imapfs_config_new()};
	GError *error = NULL;
	int ret;

	a.owner.uid = getuid();
	a.owner.gid = getgid();
	if (fuse_opt_parse(&fargs, &a, option_spec, option_proc) != 0) {
		ret = fail("invalid arguments", NULL);
		goto out;
	}
	if (a.show_help || a.show_version) {
		if (a.show_help)
			usage(g_get_prgname());
		else
			print_version();
		ret = 0;
		goto out;
	}
	imapfs_log_init(a.debug ? IMAPFS_TRACE_ALL : 0);
	if (!finish_args(&a, &error)) {
		ret = fail(NULL, error);
		goto out;
	}
	if (!fuse_options_valid(&fargs)) {
		ret = fail("invalid options (see --help)", NULL);
		goto out;
	}
	if (helper && helper->verbose)
		fprintf(stderr, "%s: mounting %s on %s%s\n", g_get_prgname(),
			a.url, a.mountpoint, helper->fake ? " (fake)" : "");
	if (helper && helper->fake) {
		ret = 0;
		goto out;
	}
	/* The kernel then refuses changes itself, and mount(8) shows ro. */
	a.owner.read_only = a.cfg->read_only;
	if (a.cfg->read_only)
		fuse_opt_add_arg(&fargs, "-oro");
	ret = run(&fargs, &a);
out:
	fuse_opt_free_args(&fargs);
	args_clear(&a);
	return ret;
}

int main(int argc, char **argv)
{
	g_auto(ImapfsMountArgs) helper = {0};
	g_autofree char *prog = g_path_get_basename(argv[0]);
	GError *error = NULL;

	g_set_prgname(prog);
	/* First, as IMAPFS_PASSWORD may be in our environment already: no
	 * core dump, and no ptrace or /proc/PID/{mem,environ} for the
	 * user's other processes. Commands we run are dumpable again from
	 * their execve(); fusermount3 is set-user-ID anyway. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		return fail("cannot make the process non-dumpable", NULL);
	imapfs_service_init();
	/* A server closing the socket must not kill us mid-write. */
	signal(SIGPIPE, SIG_IGN);
	/* Cache blocks come and go by the thousand on many threads; with an
	 * arena per thread, glibc keeps freed memory in each of them and
	 * the footprint drifts far above what is live (130 MB against 115
	 * for a 10,000-message grep). */
	mallopt(M_ARENA_MAX, 2);
	imapfs_log_init(0);
	/* mount.imapfs --help is the same help. */
	if (!imapfs_mount_helper_is_helper(argv[0]) ||
	    (argc == 2 && argv[1][0] == '-' && argv[1][1] != '\0' &&
	     strchr("-hV", argv[1][1])))
		return mount_main(argc, argv, NULL);
	if (!imapfs_mount_helper_translate(argc, argv, &helper, &error))
		return fail(NULL, error);
	return mount_main((int)g_strv_length(helper.argv), helper.argv,
			  &helper);
}
