/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Where the password comes from, in DESIGN.md's order: password_command,
 * password_file (refused when group or others may read it), the
 * IMAPFS_PASSWORD environment variable, or a prompt without echo when stdin
 * is a terminal. Secrets are returned in memory the caller must release with
 * imapfs_secret_free(), which wipes it. Nothing here logs a secret.
 * IMAPFS_PASSWORD is always wiped and removed from the environment, even
 * when another source wins, so that no command run later inherits it.
 */
#pragma once

#include <glib.h>
#include "imapfs/config.h"

G_BEGIN_DECLS

/* The password, without its line ending. NULL with IMAPFS_ERROR_CONFIG and
 * a one-line reason (command failed or printed nothing, file unreadable or
 * too open, no terminal to prompt on). Only the first line is used. */
char *imapfs_credentials_password(const ImapfsConfig *cfg, GError **error);

/* The OAuth 2.0 access token: the first line oauth_token_command prints,
 * run anew on each call (tokens expire; the command refreshes them). NULL
 * with IMAPFS_ERROR_CONFIG and a reason, as for the password. A command
 * still running after @timeout_s seconds (0: no limit, for the first run,
 * which may wait for the user) is killed: IMAPFS_ERROR_TIMEOUT. */
char *imapfs_credentials_token(const ImapfsConfig *cfg, guint timeout_s,
			       GError **error);

/* The secret a login needs: the token when the configuration uses OAuth
 * (imapfs_config_uses_oauth()), else the password. */
char *imapfs_credentials_secret(const ImapfsConfig *cfg, GError **error);

/* Wipes and frees a secret; NULL is fine. */
void imapfs_secret_free(char *secret);

G_END_DECLS
