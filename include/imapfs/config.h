/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The mount's configuration: the URL and the -o options of DESIGN.md.
 *
 * Filled once at start-up (URL, then options, then imapfs_config_finish())
 * and read-only afterwards, so any thread may read it without a lock.
 * Holds no secret: passwords are fetched on demand (credentials.h).
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
	IMAPFS_CACHE_DISK,
	IMAPFS_CACHE_MEMORY,
	IMAPFS_CACHE_NONE,
} ImapfsCacheMode;

typedef enum {
	IMAPFS_DELETE_EXPUNGE,
	IMAPFS_DELETE_TRASH,
} ImapfsDeleteMode;

typedef struct {
	/* From the URL. */
	gboolean implicit_tls; /* imaps:// (TLS from the first byte) */
	char *host;	       /* without brackets for IPv6 */
	guint16 port;	       /* 993 / 143 unless given */
	char *user;	       /* URL user or user=; NULL until one is given */
	/* The URL's /MAILBOX, percent-decoded, as UTF-8 levels joined by
	 * '/', without leading or trailing '/'; NULL for the whole account. */
	char *mailbox;

	/* Options. */
	char *password_command;
	char *password_file;
	char *auth; /* forced SASL mechanism, upper case, or NULL */
	char *oauth_token_command;
	char *cafile;
	char *capath;
	gboolean tls_insecure;
	gboolean allow_plaintext;
	gboolean read_only;    /* "ro" */
	guint connections;     /* default 4 */
	char *cache_dir;       /* default set by imapfs_config_finish() */
	guint64 cache_size;    /* bytes, default 1 GiB */
	ImapfsCacheMode cache; /* default disk */
	gboolean parts;	       /* default TRUE */
	ImapfsDeleteMode delete_mode;
	guint timeout; /* seconds, default 60 */
	guint poll;    /* seconds between checks for changes, default 60;
			  0: never (IDLE only) */
} ImapfsConfig;

typedef enum {
	IMAPFS_OPTION_OURS,	/* recognized and stored */
	IMAPFS_OPTION_NOT_OURS, /* leave it to FUSE */
	IMAPFS_OPTION_INVALID,	/* ours, but the value is wrong: see error */
} ImapfsOptionResult;

ImapfsConfig *imapfs_config_new(void);
void imapfs_config_free(ImapfsConfig *cfg);

/*
 * Parses imaps://[USER@]HOST[:PORT][/MAILBOX] or imap://... . The user part
 * and the mailbox are percent-decoded; the last '@' before the host ends the
 * user; an IPv6 host is written in brackets. FALSE with IMAPFS_ERROR_CONFIG
 * and a message naming the problem on anything malformed (other scheme,
 * empty host, bad port, query or fragment, invalid UTF-8 after decoding).
 */
gboolean imapfs_config_set_url(ImapfsConfig *cfg, const char *url,
			       GError **error);

/* One "key" or "key=value" from -o. "ro" is ours too. */
ImapfsOptionResult imapfs_config_parse_option(ImapfsConfig *cfg,
					      const char *option,
					      GError **error);

/* Checks the whole (a user name is required; auth= names a mechanism
 * imapfs speaks, and OAuth ones come with oauth_token_command) and fills
 * defaults that
 * depend on other fields: cache_dir =
 * $XDG_CACHE_HOME/imapfs/<user@host> (or ~/.cache/...). */
gboolean imapfs_config_finish(ImapfsConfig *cfg, GError **error);

/* TRUE when logins use an OAuth 2.0 token (XOAUTH2 or OAUTHBEARER):
 * oauth_token_command is given, or auth= names one of them. */
gboolean imapfs_config_uses_oauth(const ImapfsConfig *cfg);

/* "user@host:port" for messages, caller frees. */
char *imapfs_config_describe(const ImapfsConfig *cfg);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(ImapfsConfig, imapfs_config_free)

G_END_DECLS
