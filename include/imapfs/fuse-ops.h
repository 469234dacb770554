/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The FUSE low-level operations: the only place that speaks errno.
 *
 * Every operation ends in exactly one fuse_reply_*(). Operations run on
 * libfuse's worker threads and may block on the network (never while
 * holding a lock of ours; the layers below guarantee that).
 * The ImapfsFs is the session's userdata; it borrows the tree.
 */
#pragma once

#include <fuse_lowlevel.h>
#include <glib.h>
#include <sys/types.h>

#include "imapfs/tree.h"

G_BEGIN_DECLS

typedef struct ImapfsFs ImapfsFs;

typedef struct {
	uid_t uid;	    /* owner shown for every file (-o uid=) */
	gid_t gid;	    /* -o gid= */
	mode_t umask;	    /* -o umask=, applied to 0755/0644 */
	gboolean read_only; /* -o ro: 0555/0444 instead */
} ImapfsFsOwner;

ImapfsFs *imapfs_fs_new(ImapfsTree *tree, const ImapfsFsOwner *owner);
void imapfs_fs_free(ImapfsFs *fs);

/* The session, for telling the kernel of names that changed (after a
 * rename the kernel's idea of the target name is wrong: a message never
 * replaces another), and of what the tree learns from the server (other
 * clients' changes: this registers the tree's change function). The
 * notices are sent from a thread of their own, started on first use,
 * never from a request handler. */
void imapfs_fs_set_session(ImapfsFs *fs, struct fuse_session *se);

/* Drops the notices not sent yet and sends no more: before the session
 * is unmounted and destroyed, which the notifier thread writes to. */
void imapfs_fs_stop_notices(ImapfsFs *fs);

/* The operations table; its userdata must be an ImapfsFs. */
const struct fuse_lowlevel_ops *imapfs_fs_ops(void);

/* The errno for an IMAPFS_ERROR (EIO for anything unexpected). */
int imapfs_fs_errno(const GError *error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(ImapfsFs, imapfs_fs_free)

G_END_DECLS
