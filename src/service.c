/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * sd_notify(3)'s protocol: one datagram to an AF_UNIX socket whose path
 * is $NOTIFY_SOCKET ('@' first: in the abstract namespace).
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "imapfs/service.h"

static char *notify_socket; /* written once by imapfs_service_init() */

void imapfs_service_init(void)
{
	const char *path = g_getenv("NOTIFY_SOCKET");

	if (path && (path[0] == '/' || path[0] == '@') &&
	    strlen(path) < sizeof(((struct sockaddr_un *)NULL)->sun_path))
		notify_socket = g_strdup(path);
	g_unsetenv("NOTIFY_SOCKET");
}

void imapfs_service_notify(const char *state)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	socklen_t len;
	int fd;

	if (notify_socket == NULL)
		return;
	len = offsetof(struct sockaddr_un, sun_path) + strlen(notify_socket);
	memcpy(addr.sun_path, notify_socket, strlen(notify_socket));
	if (addr.sun_path[0] == '@')
		addr.sun_path[0] = '\0';
	else
		len++; /* a path includes its NUL */
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (sendto(fd, state, strlen(state), MSG_NOSIGNAL,
		   (struct sockaddr *)&addr, len) < 0)
		g_warning("cannot notify the service manager at \"%s\": %s",
			  notify_socket, g_strerror(errno));
	close(fd);
}
