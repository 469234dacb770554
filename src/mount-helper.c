/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * mount.imapfs: mount(8)'s arguments into imapfs's. See mount-helper.h.
 */
#include <string.h>

#include "imapfs/error.h"
#include "imapfs/mount-helper.h"

/* Options meant for mount(8), systemd or other tools: libfuse would
 * refuse them. "user" alone lets users mount an fstab line; "user=NAME"
 * is our login name and is kept. */
static const char *const dropped[] = {
	"user",
	"users",
	"nouser",
	"nousers",
	"owner",
	"noowner",
	"group",
	"nogroup",
	"auto",
	"noauto",
	"_netdev",
	"nofail",
	"defaults",
	"rw",
	/* Access time policies, which libfuse refuses: FUSE file systems
	 * keep their own times. */
	"relatime",
	"norelatime",
	"strictatime",
	"nostrictatime",
	"diratime",
	"nodiratime",
	"lazytime",
	"nolazytime",
	NULL,
};

static gboolean is_dropped(const char *opt)
{
	/* x-systemd.automount, x-gvfs-show, ...: for other programs;
	 * helper= and uhelper= name mount(8)'s helpers. */
	if (g_str_has_prefix(opt, "x-") || g_str_has_prefix(opt, "comment=") ||
	    g_str_has_prefix(opt, "helper=") ||
	    g_str_has_prefix(opt, "uhelper="))
		return TRUE;
	return g_strv_contains(dropped, opt);
}

/* fstab's escapes: a backslash and three octal digits is one byte
 * (\040 space, \011 tab, \012 newline, \134 backslash). */
static char *decode_octal(const char *s)
{
	GString *out = g_string_sized_new(strlen(s));

	for (const char *p = s; *p; p++) {
		if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' &&
		    p[2] <= '7' && p[3] >= '0' && p[3] <= '7' &&
		    (p[1] != '0' || p[2] != '0' || p[3] != '0')) {
			g_string_append_c(out, (char)((p[1] - '0') * 64 +
						      (p[2] - '0') * 8 +
						      (p[3] - '0')));
			p += 3;
		} else {
			g_string_append_c(out, *p);
		}
	}
	return g_string_free(out, FALSE);
}

/* name="a,b" -> name=a,b: libmount keeps a quoted value whole. */
static void strip_quotes(char *opt)
{
	char *eq = strchr(opt, '=');
	gsize len;

	if (eq == NULL || eq[1] != '"')
		return;
	len = strlen(eq + 1);
	if (len < 2 || eq[len] != '"')
		return;
	memmove(eq + 1, eq + 2, len - 2);
	eq[len - 1] = '\0';
}

char *imapfs_mount_helper_escape(const char *opt)
{
	GString *out = g_string_sized_new(strlen(opt) + 8);

	for (const char *p = opt; *p; p++) {
		if (*p == ',' || *p == '\\')
			g_string_append_c(out, '\\');
		g_string_append_c(out, *p);
	}
	return g_string_free(out, FALSE);
}

static void keep_option(GPtrArray *argv, char *raw)
{
	/* Quotes first: a decoded \042 is a character, not a quote. */
	strip_quotes(raw);
	g_autofree char *opt = decode_octal(raw);

	if (*opt == '\0' || is_dropped(opt))
		return;
	g_ptr_array_add(argv, g_strdup("-o"));
	g_ptr_array_add(argv, imapfs_mount_helper_escape(opt));
}

/* Splits at the commas outside double quotes. */
static void add_options(GPtrArray *argv, const char *list)
{
	g_autoptr(GString) cur = g_string_new(NULL);
	gboolean quoted = FALSE;

	for (const char *p = list;; p++) {
		if (*p == '\0' || (*p == ',' && !quoted)) {
			keep_option(argv, cur->str);
			g_string_truncate(cur, 0);
			if (*p == '\0')
				return;
			continue;
		}
		if (*p == '"')
			quoted = !quoted;
		g_string_append_c(cur, *p);
	}
}

static gboolean config_error(GError **error, const char *what, const char *arg)
{
	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG, "%s%s%s%s", what,
		    arg ? " \"" : "", arg ? arg : "", arg ? "\"" : "");
	return FALSE;
}

/* One of -s -f -n -v (mount(8) may bundle them: -fv). */
static gboolean apply_flags(const char *flags, ImapfsMountArgs *out,
			    GError **error)
{
	for (const char *p = flags; *p; p++) {
		switch (*p) {
		case 's': /* sloppy: unknown options are libfuse's to judge */
		case 'n': /* no mtab: there is none to write */
			break;
		case 'f':
			out->fake = TRUE;
			break;
		case 'v':
			out->verbose = TRUE;
			break;
		default:
			return config_error(error, "unknown flag", flags - 1);
		}
	}
	return TRUE;
}

/* Flags that take a value: -o OPTIONS, -t TYPE, -N NAMESPACE. */
static gboolean apply_valued(char flag, const char *value, GPtrArray *opts,
			     GError **error)
{
	switch (flag) {
	case 'o':
		add_options(opts, value);
		return TRUE;
	case 't': /* imapfs or fuse.imapfs: we are what was asked for */
		return TRUE;
	default:
		return config_error(
			error,
			"mounting in another mount namespace is not "
			"supported: -N",
			value);
	}
}

static gboolean parse(int argc, char **argv, GPtrArray *opts, char **source_dir,
		      ImapfsMountArgs *out, GError **error)
{
	guint positional = 0;

	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];

		if (arg[0] != '-' || arg[1] == '\0') {
			if (positional == 2)
				return config_error(error,
						    "unexpected argument", arg);
			source_dir[positional++] = argv[i];
		} else if (strchr("otN", arg[1]) && arg[2] == '\0') {
			if (i + 1 == argc)
				return config_error(
					error, "a value is missing after", arg);
			if (!apply_valued(arg[1], argv[++i], opts, error))
				return FALSE;
		} else if (strchr("otN", arg[1])) {
			if (!apply_valued(arg[1], arg + 2, opts, error))
				return FALSE;
		} else if (!apply_flags(arg + 1, out, error)) {
			return FALSE;
		}
	}
	if (positional < 2)
		return config_error(error,
				    "usage: mount.imapfs URL DIR [-o OPTIONS]",
				    NULL);
	return TRUE;
}

gboolean imapfs_mount_helper_translate(int argc, char **argv,
				       ImapfsMountArgs *out, GError **error)
{
	g_autoptr(GPtrArray) opts = g_ptr_array_new_with_free_func(g_free);
	char *source_dir[2] = {NULL, NULL};

	imapfs_mount_args_clear(out);
	if (!parse(argc, argv, opts, source_dir, out, error))
		return FALSE;
	g_ptr_array_insert(opts, 0, g_strdup(argc > 0 ? argv[0] : "imapfs"));
	g_ptr_array_add(opts, g_strdup(source_dir[0]));
	g_ptr_array_add(opts, g_strdup(source_dir[1]));
	g_ptr_array_add(opts, NULL);
	out->argv = (char **)g_ptr_array_free(g_steal_pointer(&opts), FALSE);
	return TRUE;
}

gboolean imapfs_mount_helper_is_helper(const char *argv0)
{
	g_autofree char *base = g_path_get_basename(argv0);

	return g_str_has_prefix(base, "mount.");
}

void imapfs_mount_args_clear(ImapfsMountArgs *args)
{
	g_clear_pointer(&args->argv, g_strfreev);
	args->fake = args->verbose = FALSE;
}
