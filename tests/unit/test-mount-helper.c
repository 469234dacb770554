/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests for mount-helper.c: mount(8)'s arguments into imapfs's. */
#include <string.h>

#include "imapfs/error.h"
#include "imapfs/mount-helper.h"

/* Translates @args (NULL-terminated, after argv[0]) and joins the result
 * with '|' for comparison. */
static char *translate(const char *const *args, ImapfsMountArgs *out,
		       GError **error)
{
	g_autoptr(GPtrArray) argv = g_ptr_array_new();

	g_ptr_array_add(argv, (char *)"/sbin/mount.imapfs");
	for (gsize i = 0; args[i]; i++)
		g_ptr_array_add(argv, (char *)args[i]);
	if (!imapfs_mount_helper_translate((int)argv->len, (char **)argv->pdata,
					   out, error))
		return NULL;
	return g_strjoinv("|", out->argv);
}

static void check(const char *const *args, const char *want)
{
	g_auto(ImapfsMountArgs) out = {0};
	g_autoptr(GError) error = NULL;
	g_autofree char *got = translate(args, &out, &error);

	g_assert_no_error(error);
	g_assert_cmpstr(got, ==, want);
}

static void test_fstab_options_dropped(void)
{
	/* What mount(8) passes for an fstab line with user,noauto,... */
	const char *args[] = {"imaps://alice@h", "/mnt/m", "-o",
			      "rw,noexec,nosuid,nodev,user,noauto,auto,"
			      "users,nouser,owner,group,_netdev,nofail,"
			      "defaults,x-systemd.automount,"
			      "x-systemd.idle-timeout=60,comment=x,relatime,"
			      "nodiratime,lazytime,helper=x,nousers,ro",
			      NULL};

	check(args, "/sbin/mount.imapfs|-o|noexec|-o|nosuid|-o|nodev|-o|ro|"
		    "imaps://alice@h|/mnt/m");
}

static void test_user_name_kept(void)
{
	const char *args[] = {"imaps://h", "/m", "-o", "user,user=bob@example",
			      NULL};

	check(args, "/sbin/mount.imapfs|-o|user=bob@example|imaps://h|/m");
}

static void test_octal_escapes(void)
{
	const char *args[] = {"imaps://h", "/m", "-o",
			      "password_command=pass\\040show\\011x\\134y,"
			      "cafile=/a\\\\b,x=\\000\\8",
			      NULL};

	/* Decoded, then escaped again for libfuse (',' and '\'). NUL and
	 * non-octal digits stay as written. */
	check(args, "/sbin/mount.imapfs|-o|password_command=pass show\tx\\\\y|"
		    "-o|cafile=/a\\\\\\\\b|-o|x=\\\\000\\\\8|imaps://h|/m");
}

static void test_quoted_value(void)
{
	const char *args[] = {"imaps://h", "/m", "-o",
			      "password_command=\"pass a,b\",ro,"
			      "x=\\042q\\042",
			      NULL};

	check(args, "/sbin/mount.imapfs|-o|password_command=pass a\\,b|-o|ro|"
		    "-o|x=\"q\"|imaps://h|/m");
}

static void test_flags(void)
{
	const char *args[] = {"-sn", "imaps://h",   "-fv",  "/m",
			      "-t",  "fuse.imapfs", "-oro", NULL};
	g_auto(ImapfsMountArgs) out = {0};
	g_autoptr(GError) error = NULL;
	g_autofree char *got = translate(args, &out, &error);

	g_assert_no_error(error);
	g_assert_cmpstr(got, ==, "/sbin/mount.imapfs|-o|ro|imaps://h|/m");
	g_assert_true(out.fake);
	g_assert_true(out.verbose);
}

static void check_refused(const char *const *args, const char *want)
{
	g_auto(ImapfsMountArgs) out = {0};
	g_autoptr(GError) error = NULL;
	g_autofree char *got = translate(args, &out, &error);

	g_assert_null(got);
	g_assert_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG);
	g_assert_nonnull(strstr(error->message, want));
}

static void test_refused(void)
{
	const char *missing[] = {"imaps://h", "-o", "ro", NULL};
	const char *extra[] = {"imaps://h", "/m", "/n", NULL};
	const char *flag[] = {"imaps://h", "/m", "-x", NULL};
	const char *ns[] = {"imaps://h", "/m", "-N", "/proc/1/ns/mnt", NULL};
	const char *novalue[] = {"imaps://h", "/m", "-o", NULL};

	check_refused(missing, "usage: mount.imapfs URL DIR");
	check_refused(extra, "unexpected argument \"/n\"");
	check_refused(flag, "unknown flag \"-x\"");
	check_refused(ns, "namespace");
	check_refused(novalue, "missing after \"-o\"");
}

static void test_is_helper(void)
{
	g_assert_true(imapfs_mount_helper_is_helper("/sbin/mount.imapfs"));
	g_assert_true(imapfs_mount_helper_is_helper("mount.fuse.imapfs"));
	g_assert_false(imapfs_mount_helper_is_helper("/usr/bin/imapfs"));
	g_assert_false(imapfs_mount_helper_is_helper("/mount.d/imapfs"));
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/mount-helper/fstab-options-dropped",
			test_fstab_options_dropped);
	g_test_add_func("/mount-helper/user-name-kept", test_user_name_kept);
	g_test_add_func("/mount-helper/octal-escapes", test_octal_escapes);
	g_test_add_func("/mount-helper/quoted-value", test_quoted_value);
	g_test_add_func("/mount-helper/flags", test_flags);
	g_test_add_func("/mount-helper/refused", test_refused);
	g_test_add_func("/mount-helper/is-helper", test_is_helper);
	return g_test_run();
}
