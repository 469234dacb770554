/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The live view: what other clients change on the server (a phone reading
 * mail, a filter filing it) reaches the tree, and through it the kernel,
 * within seconds and without rescanning.
 *
 * - IDLE (RFC 2177), when the server offers it: up to IMAPFS_WATCH_IDLERS
 *   connections of their own, each idling on one of the mailboxes used
 *   most recently (listed or read from). Whatever the server says there
 *   (EXISTS, EXPUNGE, FETCH) makes the tree refresh that mailbox, which
 *   fetches only what changed. IDLE is begun anew every 28 minutes, before
 *   servers drop a silent client (RFC 2177 asks for 29 at most).
 * - Polling, always, every cfg->poll seconds (0: never): one LIST, with
 *   LIST-STATUS the state of every mailbox in the same command (else one
 *   pipelined STATUS per mailbox in use). It picks up mailboxes created,
 *   deleted or renamed elsewhere, and changes in the mailboxes no IDLE
 *   watches; an unchanged account costs that one round trip.
 *
 * A connection that breaks is opened again after a jittered, growing
 * pause (1 s doubling to 60 s); nothing here ever blocks a file operation.
 *
 * Threads: its own (a poller and the idlers), started by
 * imapfs_watch_start() and stopped by imapfs_watch_free(). Nothing else
 * is shared: the tree and pool are thread-safe.
 * Ownership: @cfg, @pool and @tree are borrowed and outlive the watch;
 * the watch owns its IDLE connections.
 */
#pragma once

#include <glib.h>

#include "imapfs/config.h"
#include "imapfs/pool.h"
#include "imapfs/tree.h"

G_BEGIN_DECLS

/* Mailboxes watched with IDLE at once (one connection each): a mv
 * between two of them shows on both sides at once. */
#define IMAPFS_WATCH_IDLERS 2

typedef struct ImapfsWatch ImapfsWatch;

ImapfsWatch *imapfs_watch_new(const ImapfsConfig *cfg, ImapfsPool *pool,
			      ImapfsTree *tree);

/* Starts the threads (after any fork). */
void imapfs_watch_start(ImapfsWatch *watch);

/* Stops the threads (their connections are cut, so at once), logs out
 * and frees. NULL is fine. */
void imapfs_watch_free(ImapfsWatch *watch);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(ImapfsWatch, imapfs_watch_free)

G_END_DECLS
