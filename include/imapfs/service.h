/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Readiness for a service manager: systemd's notification protocol
 * (sd_notify(3)), spoken without linking libsystemd. A datagram of
 * "KEY=VALUE" lines goes to the socket named by $NOTIFY_SOCKET, so that
 * a Type=notify unit counts as started only once the mount is in place.
 * Without $NOTIFY_SOCKET every call does nothing.
 *
 * imapfs_service_init() runs once at start-up, before any thread; the
 * other calls may come from any thread afterwards.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Takes $NOTIFY_SOCKET and removes it from the environment, so that
 * password and token commands do not inherit it. */
void imapfs_service_init(void);

/* Sends @state ("READY=1\nSTATUS=...", "STOPPING=1"). Failures are
 * ignored, as sd_notify's are by its callers: the mount works anyway. */
void imapfs_service_notify(const char *state);

G_END_DECLS
