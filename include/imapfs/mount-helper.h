/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * mount.imapfs: mount(8)'s helper calling convention, translated into
 * imapfs's own command line.
 *
 * mount(8) and systemd run /sbin/mount.imapfs (for -t imapfs) or
 * /sbin/mount.fuse.imapfs (for -t fuse.imapfs) as
 *     mount.imapfs SOURCE DIR [-sfnv] [-N NAMESPACE] [-o OPTIONS] [-t TYPE]
 * with the fstab options as one comma-separated string. Options that
 * concern mount(8) or systemd rather than the file system (noauto, user,
 * _netdev, nofail, x-systemd.*, ...) are dropped; fstab's octal escapes
 * (\040 for a space) are decoded, as is a value in double quotes
 * (password_command="a,b"). Pure argument handling: no I/O.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
	char **argv;	  /* imapfs's: PROG -o OPT ... SOURCE DIR; g_strfreev */
	gboolean fake;	  /* -f: check the arguments, mount nothing */
	gboolean verbose; /* -v */
} ImapfsMountArgs;

/* TRUE when @argv0 names the helper (mount.imapfs, mount.fuse.imapfs). */
gboolean imapfs_mount_helper_is_helper(const char *argv0);

/*
 * Translates mount(8)'s @argv into @out (cleared first). Each kept
 * option becomes its own "-o" argument, escaped for libfuse's option
 * parser, so a value may hold ',' or '\'. FALSE with IMAPFS_ERROR_CONFIG
 * on a missing SOURCE or DIR, an unknown flag, or -N (namespaces are not
 * supported).
 */
gboolean imapfs_mount_helper_translate(int argc, char **argv,
				       ImapfsMountArgs *out, GError **error);

/* @opt escaped for libfuse's -o parser, which splits at ',' and takes
 * '\' as an escape; caller frees. */
char *imapfs_mount_helper_escape(const char *opt);

void imapfs_mount_args_clear(ImapfsMountArgs *args);

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(ImapfsMountArgs, imapfs_mount_args_clear)

G_END_DECLS
