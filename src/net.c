/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "imapfs/cancel.h"
#include "imapfs/error.h"
#include "imapfs/log.h"
#include "imapfs/net.h"

/* "host:port", with brackets around IPv6 literals so the port stays clear. */
static char *format_peer(const char *host, guint16 port)
{
	if (strchr(host, ':'))
		return g_strdup_printf("[%s]:%u", host, port);
	return g_strdup_printf("%s:%u", host, port);
}

/* Milliseconds left until @deadline (monotonic, in µs), rounded up so that
 * poll() never wakes a hair early and spins. */
static int ms_left(gint64 deadline)
{
	gint64 left = deadline - g_get_monotonic_time();

	if (left <= 0)
		return 0;
	return (int)MIN((left + 999) / 1000, G_MAXINT);
}

/* 1 when ready (or in error: the caller's next call tells which), 0 on
 * timeout, -1 with errno when poll() itself fails, or ECANCELED when the
 * request this thread serves was interrupted. */
static int poll_until(int fd, short events, gint64 deadline)
{
	struct pollfd pfd = {.fd = fd, .events = events};

	for (;;) {
		gint64 slice = imapfs_cancel_slice(deadline);
		int n = poll(&pfd, 1, ms_left(slice));

		if (n > 0 && (pfd.revents & POLLNVAL)) {
			errno = EBADF;
			return -1;
		}
		if (n == 0 && slice < deadline) {
			if (imapfs_cancel_check(NULL))
				continue;
			errno = ECANCELED;
			return -1;
		}
		if (n >= 0)
			return n;
		if (errno != EINTR)
			return -1;
	}
}

gboolean imapfs_net_wait(int fd, gboolean for_write, guint timeout_ms,
			 GError **error)
{
	gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
	int n = poll_until(fd, for_write ? POLLOUT : POLLIN, deadline);

	if (n > 0)
		return TRUE;
	if (n == 0)
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_TIMEOUT,
			    "timed out after %u ms waiting to %s", timeout_ms,
			    for_write ? "write" : "read");
	else if (errno == ECANCELED)
		imapfs_cancel_check(error);
	else
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_DISCONNECTED,
			    "cannot wait on socket: %s", g_strerror(errno));
	return FALSE;
}

/* Connects one socket to @ai. Returns the fd, or -1 with errno; ETIMEDOUT
 * means the overall deadline passed. */
static int connect_one(const struct addrinfo *ai, gint64 deadline)
{
	int fd, err = 0, one = 1;
	socklen_t len = sizeof(err);

	fd = socket(ai->ai_family,
		    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    ai->ai_protocol);
	if (fd < 0)
		return -1;
	/* A non-blocking connect interrupted by a signal carries on in the
	 * background, exactly like EINPROGRESS. */
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		if (errno != EINPROGRESS && errno != EINTR)
			goto fail;
		err = poll_until(fd, POLLOUT, deadline);
		if (err <= 0) {
			errno = err == 0 ? ETIMEDOUT : errno;
			goto fail;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			goto fail;
		if (err != 0) {
			errno = err;
			goto fail;
		}
	}
	/* IMAP commands are small and each waits for an answer: don't let
	 * Nagle hold them back. Failure only costs latency. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
fail:
	err = errno;
	close(fd);
	errno = err;
	return -1;
}

static struct addrinfo *resolve(const char *host, guint16 port, GError **error)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	char service[8];
	int rc;

	g_snprintf(service, sizeof(service), "%u", port);
	rc = getaddrinfo(host, service, &hints, &res);
	if (rc == 0)
		return res;
	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_RESOLVE,
		    "cannot resolve \"%s\": %s", host,
		    rc == EAI_SYSTEM ? g_strerror(errno) : gai_strerror(rc));
	return NULL;
}

static guint count_addresses(const struct addrinfo *ai)
{
	guint n = 0;

	for (; ai; ai = ai->ai_next)
		n++;
	return n;
}

int imapfs_net_connect(const char *host, guint16 port, guint timeout_ms,
		       GError **error)
{
	gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
	g_autofree char *peer = format_peer(host, port);
	struct addrinfo *res, *ai;
	int fd = -1, err = ECONNREFUSED;

	res = resolve(host, port, error);
	if (!res)
		return -1;
	guint left = count_addresses(res);
	for (ai = res; ai && fd < 0; ai = ai->ai_next, left--) {
		if (ms_left(deadline) == 0) {
			err = ETIMEDOUT;
			break;
		}
		/* A dead first address (often IPv6) must leave time for the
		 * others: each gets an equal share of what remains. */
		gint64 now = g_get_monotonic_time();
		gint64 attempt_deadline = now + (deadline - now) / left;
		imapfs_trace(IMAPFS_TRACE_NET, "connecting to \"%s\" over %s",
			     peer, ai->ai_family == AF_INET6 ? "IPv6" : "IPv4");
		fd = connect_one(ai, attempt_deadline);
		if (fd < 0)
			err = errno;
		if (err == ECANCELED)
			break;
	}
	freeaddrinfo(res);
	if (fd >= 0)
		return fd;
	if (err == ECANCELED)
		imapfs_cancel_check(error);
	else if (err == ETIMEDOUT)
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_TIMEOUT,
			    "timed out connecting to \"%s\"", peer);
	else
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONNECT,
			    "cannot connect to \"%s\": %s", peer,
			    g_strerror(err));
	return -1;
}
