/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * TCP: resolving, connecting with a time limit, and waiting on a socket.
 * Knows nothing of TLS or IMAP. Stateless; every function is thread-safe.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/*
 * Resolves @host (name or numeric address; IPv6 without brackets) and
 * connects to @port, trying each address in turn until one answers, for at
 * most @timeout_ms in all. Returns a connected, non-blocking, close-on-exec
 * socket the caller owns, or -1 with IMAPFS_ERROR_RESOLVE, _CONNECT or
 * _TIMEOUT and a message naming "host:port".
 */
int imapfs_net_connect(const char *host, guint16 port, guint timeout_ms,
		       GError **error);

/* Waits until @fd is readable (or writable when @for_write), at most
 * @timeout_ms. FALSE with IMAPFS_ERROR_TIMEOUT, or _DISCONNECTED on poll
 * errors. EINTR is retried against the same deadline. */
gboolean imapfs_net_wait(int fd, gboolean for_write, guint timeout_ms,
			 GError **error);

G_END_DECLS
