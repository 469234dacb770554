/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Password sources, in DESIGN.md's order.
 *
 * Secrets are read with read(2) into one fixed buffer that is wiped
 * afterwards: a growing GString or g_spawn_sync()'s capture would realloc
 * and leave unwiped copies of the password in freed memory.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "imapfs/credentials.h"
#include "imapfs/error.h"

/* Longest first line accepted; generous enough for OAuth-sized tokens. */
#define SECRET_MAX 16384

void imapfs_secret_free(char *secret)
{
	if (!secret)
		return;
	OPENSSL_cleanse(secret, strlen(secret));
	g_free(secret);
}

typedef enum {
	READ_OK,
	READ_ERROR,    /* errno is set */
	READ_TOO_LONG, /* no line end within SECRET_MAX bytes */
	READ_TIMEOUT,  /* nothing more came before the deadline */
} ReadResult;

/* Waits until @fd has data or EOF, up to the monotonic @deadline (0: no
 * limit). FALSE when the deadline passed. */
static gboolean wait_readable(int fd, gint64 deadline)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};

	while (deadline) {
		gint64 left = deadline - g_get_monotonic_time();

		if (left <= 0)
			return FALSE;
		int n = poll(&pfd, 1, (int)MIN(left / 1000 + 1, G_MAXINT));
		if (n > 0)
			return TRUE;
		if (n < 0 && errno != EINTR)
			return TRUE; /* read() will say what is wrong */
	}
	return TRUE;
}

/* Reads until the first '\n' or EOF; *len is the line without "\n"/"\r\n".
 * @buf holds SECRET_MAX bytes and may hold more than the line. */
static ReadResult read_first_line(int fd, char *buf, gsize *len,
				  gint64 deadline)
{
	gsize have = 0;
	char *nl = NULL;

	while (!nl && have < SECRET_MAX) {
		if (!wait_readable(fd, deadline))
			return READ_TIMEOUT;
		ssize_t n = read(fd, buf + have, SECRET_MAX - have);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return READ_ERROR;
		if (n == 0)
			break;
		nl = memchr(buf + have, '\n', (gsize)n);
		have += (gsize)n;
	}
	if (!nl && have == SECRET_MAX)
		return READ_TOO_LONG;
	*len = nl ? (gsize)(nl - buf) : have;
	if (*len > 0 && buf[*len - 1] == '\r')
		(*len)--;
	return READ_OK;
}

/* Reads the first line of @fd into a new secret; NULL when reading failed
 * (*result says why, *err holds errno) or the line is empty. */
static char *read_secret(int fd, ReadResult *result, int *err, gint64 deadline)
{
	char *buf = g_malloc(SECRET_MAX);
	char *secret = NULL;
	gsize len = 0;

	*result = read_first_line(fd, buf, &len, deadline);
	*err = errno;
	if (*result == READ_OK && len > 0)
		secret = g_strndup(buf, len);
	OPENSSL_cleanse(buf, SECRET_MAX);
	g_free(buf);
	return secret;
}

/* Why read_secret() gave nothing; @source is the option's name. */
static void set_read_error(GError **error, ReadResult result, int err,
			   const char *source, const char *subject)
{
	if (result == READ_TOO_LONG)
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "first line of %s longer than %d bytes: \"%s\"",
			    source, SECRET_MAX, subject);
	else if (result == READ_ERROR)
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "cannot read %s \"%s\": %s", source, subject,
			    g_strerror(err));
	else
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "%s gave an empty password: \"%s\"", source,
			    subject);
}

/* The rest of the command's output, read so that it does not die of
 * SIGPIPE and look like a failure. It may hold secrets too. FALSE when
 * the output did not end before @deadline. */
static gboolean drain(int fd, gint64 deadline)
{
	char scratch[4096];
	ssize_t n;

	do {
		if (!wait_readable(fd, deadline))
			return FALSE;
		n = read(fd, scratch, sizeof(scratch));
	} while (n > 0 || (n < 0 && errno == EINTR));
	OPENSSL_cleanse(scratch, sizeof(scratch));
	return TRUE;
}

static int wait_child(GPid pid)
{
	int status = 0;

	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	g_spawn_close_pid(pid);
	return status;
}

/* Names the exit status, never the output: that may be the password.
 * @option names the command's option in messages. */
static gboolean command_status_ok(const char *option, const char *cmd,
				  int status, GError **error)
{
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return TRUE;
	if (WIFSIGNALED(status))
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "%s killed by signal %d: \"%s\"", option,
			    WTERMSIG(status), cmd);
	else
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "%s exited with status %d: \"%s\"", option,
			    WEXITSTATUS(status), cmd);
	return FALSE;
}

static gboolean spawn_command(const char *option, const char *cmd, GPid *pid,
			      int *out, GError **error)
{
	const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
	g_autoptr(GError) spawn_error = NULL;

	/* stdin and stderr are inherited: the command may ask for a
	 * passphrase (gpg, pass) and should be able to say why it failed. */
	if (g_spawn_async_with_pipes(
		    NULL, (char **)argv, NULL,
		    G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_CHILD_INHERITS_STDIN,
		    NULL, NULL, pid, NULL, out, NULL, &spawn_error))
		return TRUE;
	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
		    "cannot run %s \"%s\": %s", option, cmd,
		    spawn_error->message);
	return FALSE;
}

/* The first line @cmd prints; @option and @what ("password", "token")
 * name it in messages. With a @timeout_s, a command still running then
 * is killed and the call fails. */
static char *secret_from_command(const char *option, const char *what,
				 const char *cmd, guint timeout_s,
				 GError **error)
{
	gint64 deadline = timeout_s ? g_get_monotonic_time() +
					      timeout_s * G_TIME_SPAN_SECOND
				    : 0;
	ReadResult result;
	char *secret;
	GPid pid;
	int out, err, status;

	if (!spawn_command(option, cmd, &pid, &out, error))
		return NULL;
	secret = read_secret(out, &result, &err, deadline);
	gboolean ended = result != READ_TIMEOUT && drain(out, deadline);
	close(out);
	if (!ended)
		kill(pid, SIGKILL);
	status = wait_child(pid);
	if (!ended) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_TIMEOUT,
			    "%s did not finish within %u s: \"%s\"", option,
			    timeout_s, cmd);
		imapfs_secret_free(secret);
		return NULL;
	}
	if (!command_status_ok(option, cmd, status, error)) {
		imapfs_secret_free(secret);
		return NULL;
	}
	if (!secret && result == READ_OK)
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "%s printed no %s (exit status 0): \"%s\"", option,
			    what, cmd);
	else if (!secret)
		set_read_error(error, result, err, option, cmd);
	return secret;
}

static gboolean check_password_file(const char *path, int fd, GError **error)
{
	struct stat st;

	if (fstat(fd, &st) < 0) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "cannot stat password_file \"%s\": %s", path,
			    g_strerror(errno));
		return FALSE;
	}
	if (!S_ISREG(st.st_mode)) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "password_file is not a regular file: \"%s\"",
			    path);
		return FALSE;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "password_file refused, group or others have "
			    "access (mode %04o): \"%s\"; run chmod 600 on it",
			    (unsigned)(st.st_mode & 07777), path);
		return FALSE;
	}
	return TRUE;
}

static char *password_from_file(const char *path, GError **error)
{
	/* O_NONBLOCK: a FIFO planted there must not hang the mount before
	 * fstat() gets to refuse it. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	ReadResult result;
	char *secret = NULL;
	int err;

	if (fd < 0) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "cannot open password_file \"%s\": %s", path,
			    g_strerror(errno));
		return NULL;
	}
	if (check_password_file(path, fd, error)) {
		secret = read_secret(fd, &result, &err, 0);
		if (!secret)
			set_read_error(error, result, err, "password_file",
				       path);
	}
	close(fd);
	return secret;
}

static char *password_from_env(void)
{
	const char *value = g_getenv("IMAPFS_PASSWORD");
	const char *nl;

	char *secret;

	if (!value || *value == '\0')
		return NULL;
	nl = strchr(value, '\n');
	secret = nl ? g_strndup(value, (gsize)(nl - value)) : g_strdup(value);
	/* Left in place it would show in /proc/PID/environ for the life of
	 * the daemon and reach every child (fusermount3, commands). */
	OPENSSL_cleanse((char *)value, strlen(value));
	g_unsetenv("IMAPFS_PASSWORD");
	return secret;
}

/* Echo stays off only while reading, and is restored even on a read
 * error; the newline the user typed is not echoed either, so print one. */
static char *prompt_on_tty(int tty, const ImapfsConfig *cfg)
{
	g_autofree char *who = imapfs_config_describe(cfg);
	g_autofree char *prompt = g_strdup_printf("Password for %s: ", who);
	struct termios saved, quiet;
	gboolean restore;
	ReadResult result;
	char *secret;
	int err;

	if (write(tty, prompt, strlen(prompt)) < 0)
		return NULL;
	restore = tcgetattr(tty, &saved) == 0;
	quiet = saved;
	quiet.c_lflag &= ~(tcflag_t)ECHO;
	if (restore)
		tcsetattr(tty, TCSAFLUSH, &quiet);
	secret = read_secret(tty, &result, &err, 0);
	if (restore)
		tcsetattr(tty, TCSAFLUSH, &saved);
	/* Best effort: the password was read, the newline is cosmetic. */
	if (write(tty, "\n", 1) < 0)
		g_debug("cannot end the password prompt line");
	return secret;
}

static char *password_from_terminal(const ImapfsConfig *cfg, GError **error)
{
	int tty;
	char *secret;

	tty = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
	if (tty < 0) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "cannot open terminal \"/dev/tty\": %s",
			    g_strerror(errno));
		return NULL;
	}
	secret = prompt_on_tty(tty, cfg);
	close(tty);
	if (!secret)
		g_set_error_literal(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
				    "no password entered on the terminal");
	return secret;
}

char *imapfs_credentials_password(const ImapfsConfig *cfg, GError **error)
{
	/* Taken out of the environment even when another source wins: the
	 * password_command must not inherit it, nor anything run later. */
	char *secret = password_from_env();

	if (cfg->password_command || cfg->password_file)
		g_clear_pointer(&secret, imapfs_secret_free);
	if (cfg->password_command)
		return secret_from_command("password_command", "password",
					   cfg->password_command, 0, error);
	if (cfg->password_file)
		return password_from_file(cfg->password_file, error);
	if (secret)
		return secret;
	if (isatty(STDIN_FILENO))
		return password_from_terminal(cfg, error);
	g_set_error_literal(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "no password: use -o password_command=..., -o "
			    "password_file=..., IMAPFS_PASSWORD, or run on a "
			    "terminal");
	return NULL;
}

char *imapfs_credentials_token(const ImapfsConfig *cfg, guint timeout_s,
			       GError **error)
{
	g_return_val_if_fail(cfg->oauth_token_command != NULL, NULL);
	return secret_from_command("oauth_token_command", "token",
				   cfg->oauth_token_command, timeout_s, error);
}

char *imapfs_credentials_secret(const ImapfsConfig *cfg, GError **error)
{
	if (!imapfs_config_uses_oauth(cfg))
		return imapfs_credentials_password(cfg, error);
	/* Unused, but it must not stay in the environment either. */
	imapfs_secret_free(password_from_env());
	return imapfs_credentials_token(cfg, 0, error);
}
