/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The mount's configuration: the URL and the -o options of DESIGN.md.
 *
 * Everything here runs once at start-up, so it favours precise messages
 * over speed: each one says what is wrong, then quotes what the user typed.
 */
#include <string.h>

#include "imapfs/config.h"
#include "imapfs/error.h"
#include "imapfs/log.h"

#define DEFAULT_CONNECTIONS 4
#define MAX_CONNECTIONS 64
#define DEFAULT_CACHE_SIZE (G_GUINT64_CONSTANT(1) << 30)
#define DEFAULT_TIMEOUT 60
#define MAX_TIMEOUT 86400
#define DEFAULT_POLL 60
#define MAX_SASL_MECH_LEN 20 /* RFC 4422 3.1 */

ImapfsConfig *imapfs_config_new(void)
{
	ImapfsConfig *cfg = g_new0(ImapfsConfig, 1);

	cfg->implicit_tls = TRUE;
	cfg->connections = DEFAULT_CONNECTIONS;
	cfg->cache_size = DEFAULT_CACHE_SIZE;
	cfg->cache = IMAPFS_CACHE_DISK;
	cfg->parts = TRUE;
	cfg->delete_mode = IMAPFS_DELETE_EXPUNGE;
	cfg->timeout = DEFAULT_TIMEOUT;
	cfg->poll = DEFAULT_POLL;
	return cfg;
}

void imapfs_config_free(ImapfsConfig *cfg)
{
	if (!cfg)
		return;
	g_free(cfg->host);
	g_free(cfg->user);
	g_free(cfg->mailbox);
	g_free(cfg->password_command);
	g_free(cfg->password_file);
	g_free(cfg->auth);
	g_free(cfg->oauth_token_command);
	g_free(cfg->cafile);
	g_free(cfg->capath);
	g_free(cfg->cache_dir);
	g_free(cfg);
}

static gboolean has_control_chars(const char *s)
{
	for (const guchar *p = (const guchar *)s; *p; p++) {
		if (*p < 0x20 || *p == 0x7f)
			return TRUE;
	}
	return FALSE;
}

/* Decimal digits only: strtoull alone would take signs, spaces and hex. */
static gboolean parse_uint(const char *s, guint64 min, guint64 max,
			   guint64 *out)
{
	guint64 v = 0;

	if (*s == '\0')
		return FALSE;
	for (const char *p = s; *p; p++) {
		if (!g_ascii_isdigit(*p))
			return FALSE;
		if (v > (G_MAXUINT64 - 9) / 10)
			return FALSE;
		v = v * 10 + (guint64)(*p - '0');
	}
	if (v < min || v > max)
		return FALSE;
	*out = v;
	return TRUE;
}

/* ---- URL ---- */

typedef struct {
	gboolean implicit_tls;
	guint16 port;
	char *host;
	char *user;
	char *mailbox;
} ParsedUrl;

static void parsed_url_clear(ParsedUrl *u)
{
	g_clear_pointer(&u->host, g_free);
	g_clear_pointer(&u->user, g_free);
	g_clear_pointer(&u->mailbox, g_free);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(ParsedUrl, parsed_url_clear)

/* "WHAT "SUBJECT" in URL "URL"", or "WHAT in URL "URL"" without subject. */
static gboolean url_error(GError **error, const char *url, const char *what,
			  const char *subject)
{
	g_autofree char *qurl = imapfs_log_quote(url);
	g_autofree char *qsub = subject ? imapfs_log_quote(subject) : NULL;

	if (qsub)
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "%s \"%s\" in URL \"%s\"", what, qsub, qurl);
	else
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "%s in URL \"%s\"", what, qurl);
	return FALSE;
}

static int hex_value(char c)
{
	return g_ascii_isxdigit(c) ? g_ascii_xdigit_value(c) : -1;
}

/* Percent-decodes @len bytes of @s; NULL on a bad escape, invalid UTF-8
 * or a control character (which includes "%00"). */
static char *url_decode(const char *s, gsize len)
{
	g_autoptr(GString) out = g_string_sized_new(len);

	for (gsize i = 0; i < len; i++) {
		int hi, lo;

		if (s[i] != '%') {
			g_string_append_c(out, s[i]);
			continue;
		}
		hi = i + 1 < len ? hex_value(s[i + 1]) : -1;
		lo = i + 2 < len ? hex_value(s[i + 2]) : -1;
		if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
			return NULL;
		g_string_append_c(out, (char)(hi << 4 | lo));
		i += 2;
	}
	if (!g_utf8_validate(out->str, -1, NULL) || has_control_chars(out->str))
		return NULL;
	return g_string_free(g_steal_pointer(&out), FALSE);
}

static gboolean url_parse_scheme(ParsedUrl *u, const char *url,
				 const char **rest, GError **error)
{
	const char *sep = strstr(url, "://");
	g_autofree char *scheme = NULL;

	if (!sep) {
		g_autofree char *q = imapfs_log_quote(url);

		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "not an IMAP URL \"%s\": expected "
			    "imaps://[USER@]HOST[:PORT][/MAILBOX]",
			    q);
		return FALSE;
	}
	scheme = g_strndup(url, (gsize)(sep - url));
	if (g_ascii_strcasecmp(scheme, "imaps") == 0) {
		u->implicit_tls = TRUE;
		u->port = 993;
	} else if (g_ascii_strcasecmp(scheme, "imap") == 0) {
		u->implicit_tls = FALSE;
		u->port = 143;
	} else {
		return url_error(error, url, "unsupported scheme", scheme);
	}
	*rest = sep + 3;
	return TRUE;
}

/* Never echo it: what follows the user's ':' is most likely a password.
 * Checked first, as every other message quotes the URL. The user part is
 * found as url_parse() finds it, also without a scheme. */
static gboolean url_check_password(const char *url, GError **error)
{
	const char *sep = strstr(url, "://");
	const char *start = sep ? sep + 3 : url;
	const char *at = g_strrstr_len(start, (gssize)strcspn(start, "/"), "@");

	if (!at || !memchr(start, ':', (gsize)(at - start)))
		return TRUE;
	g_set_error_literal(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "password in the URL refused: use -o "
			    "password_command=..., -o "
			    "password_file=... or IMAPFS_PASSWORD");
	return FALSE;
}

static gboolean url_parse_user(ParsedUrl *u, const char *url, const char *s,
			       gsize len, GError **error)
{
	g_autofree char *raw = g_strndup(s, len);

	if (len == 0)
		return url_error(error, url, "empty user name", NULL);
	u->user = url_decode(s, len);
	if (!u->user)
		return url_error(error, url, "invalid user name", raw);
	return TRUE;
}

static gboolean host_is_valid(const char *host)
{
	if (!g_utf8_validate(host, -1, NULL))
		return FALSE;
	for (const guchar *p = (const guchar *)host; *p; p++) {
		if (!g_ascii_isalnum(*p) && *p != '-' && *p != '.' &&
		    *p != '_' && *p < 0x80)
			return FALSE;
	}
	return TRUE;
}

/* Splits HOST[:PORT] or [IPV6][:PORT]; *port_part is "" or ":...". */
static gboolean url_split_host(ParsedUrl *u, const char *url, const char *s,
			       const char **port_part, GError **error)
{
	const char *end;

	if (*s == '[') {
		end = strchr(s, ']');
		if (!end)
			return url_error(error, url, "unterminated [IPv6] host",
					 NULL);
		u->host = g_strndup(s + 1, (gsize)(end - s - 1));
		*port_part = end + 1;
		if (*u->host && (!strchr(u->host, ':') ||
				 !g_hostname_is_ip_address(u->host)))
			return url_error(error, url, "invalid IPv6 address",
					 u->host);
	} else {
		end = strchr(s, ':');
		if (!end)
			end = s + strlen(s);
		u->host = g_strndup(s, (gsize)(end - s));
		*port_part = end;
		if (!host_is_valid(u->host))
			return url_error(error, url, "invalid host", u->host);
	}
	if (*u->host == '\0')
		return url_error(error, url, "empty host", NULL);
	return TRUE;
}

static gboolean url_parse_hostport(ParsedUrl *u, const char *url, const char *s,
				   GError **error)
{
	const char *port_part;
	guint64 port;

	if (!url_split_host(u, url, s, &port_part, error))
		return FALSE;
	if (*port_part == '\0')
		return TRUE;
	if (*port_part != ':' || !parse_uint(port_part + 1, 1, 65535, &port))
		return url_error(error, url, "invalid port",
				 *port_part == ':' ? port_part + 1 : port_part);
	u->port = (guint16)port;
	return TRUE;
}

/* @s is what follows the authority's '/'; the result has no leading,
 * trailing or doubled '/', since each '/' separates two levels. */
static gboolean url_parse_mailbox(ParsedUrl *u, const char *url, const char *s,
				  GError **error)
{
	g_autofree char *name = url_decode(s, strlen(s));
	gsize len;

	if (!name)
		return url_error(error, url, "invalid mailbox", s);
	len = strlen(name);
	if (len > 0 && name[len - 1] == '/')
		name[--len] = '\0';
	if (len == 0)
		return TRUE;
	/* "INBOX//" still ends in '/' after the one above is gone */
	if (name[0] == '/' || name[len - 1] == '/' || strstr(name, "//"))
		return url_error(error, url, "empty level in mailbox", s);
	u->mailbox = g_steal_pointer(&name);
	return TRUE;
}

static gboolean url_check_chars(const char *url, GError **error)
{
	if (has_control_chars(url))
		return url_error(error, url, "control character", NULL);
	if (strpbrk(url, "?#"))
		return url_error(error, url, "query or fragment", NULL);
	return TRUE;
}

static gboolean url_parse(ParsedUrl *u, const char *url, GError **error)
{
	const char *rest = NULL, *slash, *at;
	g_autofree char *authority = NULL;

	if (!url_check_password(url, error) || !url_check_chars(url, error) ||
	    !url_parse_scheme(u, url, &rest, error))
		return FALSE;
	slash = strchr(rest, '/');
	authority =
		slash ? g_strndup(rest, (gsize)(slash - rest)) : g_strdup(rest);
	/* A user name may itself contain '@' (alice@example.com). */
	at = strrchr(authority, '@');
	if (at &&
	    !url_parse_user(u, url, authority, (gsize)(at - authority), error))
		return FALSE;
	if (!url_parse_hostport(u, url, at ? at + 1 : authority, error))
		return FALSE;
	return !slash || url_parse_mailbox(u, url, slash + 1, error);
}

gboolean imapfs_config_set_url(ImapfsConfig *cfg, const char *url,
			       GError **error)
{
	g_auto(ParsedUrl) u = {0};

	if (!url_parse(&u, url, error))
		return FALSE;
	cfg->implicit_tls = u.implicit_tls;
	cfg->port = u.port;
	g_free(cfg->host);
	cfg->host = g_steal_pointer(&u.host);
	g_free(cfg->mailbox);
	cfg->mailbox = g_steal_pointer(&u.mailbox);
	/* Keep a user= given before the URL unless the URL names one. */
	if (u.user) {
		g_free(cfg->user);
		cfg->user = g_steal_pointer(&u.user);
	}
	return TRUE;
}

/* ---- Options ---- */

static gboolean option_error(GError **error, const char *name,
			     const char *value, const char *expected)
{
	g_autofree char *q = imapfs_log_quote(value);

	g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
		    "invalid %s \"%s\": expected %s", name, q, expected);
	return FALSE;
}

static gboolean parse_user(ImapfsConfig *cfg, const char *value, GError **error)
{
	if (!g_utf8_validate(value, -1, NULL) || has_control_chars(value))
		return option_error(error, "user", value,
				    "UTF-8 without control characters");
	g_free(cfg->user);
	cfg->user = g_strdup(value);
	return TRUE;
}

static gboolean parse_auth(ImapfsConfig *cfg, const char *value, GError **error)
{
	g_autofree char *mech = g_ascii_strup(value, -1);

	if (strlen(mech) > MAX_SASL_MECH_LEN ||
	    strspn(mech, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") !=
		    strlen(mech))
		return option_error(error, "auth", value,
				    "a SASL mechanism name such as plain");
	g_free(cfg->auth);
	cfg->auth = g_steal_pointer(&mech);
	return TRUE;
}

static gboolean parse_connections(ImapfsConfig *cfg, const char *value,
				  GError **error)
{
	guint64 n;

	if (!parse_uint(value, 1, MAX_CONNECTIONS, &n))
		return option_error(error, "connections", value, "1 to 64");
	cfg->connections = (guint)n;
	return TRUE;
}

/* A count of seconds from @min to a day into *@out. */
static gboolean parse_seconds(const char *name, const char *value, guint min,
			      const char *range, guint *out, GError **error)
{
	guint64 n;

	if (!parse_uint(value, min, MAX_TIMEOUT, &n))
		return option_error(error, name, value, range);
	*out = (guint)n;
	return TRUE;
}

static gboolean parse_timeout(ImapfsConfig *cfg, const char *value,
			      GError **error)
{
	return parse_seconds("timeout", value, 1, "1 to 86400 seconds",
			     &cfg->timeout, error);
}

static gboolean parse_poll(ImapfsConfig *cfg, const char *value, GError **error)
{
	return parse_seconds("poll", value, 0, "0 (never) to 86400 seconds",
			     &cfg->poll, error);
}

static guint size_suffix_shift(char c)
{
	switch (c) {
	case 'K':
	case 'k':
		return 10;
	case 'M':
	case 'm':
		return 20;
	case 'G':
	case 'g':
		return 30;
	default:
		return 0;
	}
}

static gboolean parse_cache_size(ImapfsConfig *cfg, const char *value,
				 GError **error)
{
	gsize len = strlen(value);
	guint shift = len ? size_suffix_shift(value[len - 1]) : 0;
	g_autofree char *digits = g_strndup(value, shift ? len - 1 : len);
	guint64 n;

	if (!parse_uint(digits, 1, G_MAXUINT64 >> shift, &n))
		return option_error(error, "cache_size", value,
				    "a positive size with an optional K, M "
				    "or G suffix");
	cfg->cache_size = n << shift;
	return TRUE;
}

/* Maps @value to its index in the NULL-terminated @names, or -1. */
static int lookup_word(const char *value, const char *const *names)
{
	for (int i = 0; names[i]; i++) {
		if (strcmp(value, names[i]) == 0)
			return i;
	}
	return -1;
}

static gboolean parse_cache(ImapfsConfig *cfg, const char *value,
			    GError **error)
{
	static const char *const names[] = {"disk", "memory", "none", NULL};
	static const ImapfsCacheMode modes[] = {
		IMAPFS_CACHE_DISK, IMAPFS_CACHE_MEMORY, IMAPFS_CACHE_NONE};
	int i = lookup_word(value, names);

	if (i < 0)
		return option_error(error, "cache", value,
				    "disk, memory or none");
	cfg->cache = modes[i];
	return TRUE;
}

static gboolean parse_parts(ImapfsConfig *cfg, const char *value,
			    GError **error)
{
	static const char *const names[] = {"no", "yes", NULL};
	int i = lookup_word(value, names);

	if (i < 0)
		return option_error(error, "parts", value, "yes or no");
	cfg->parts = i == 1;
	return TRUE;
}

static gboolean parse_delete(ImapfsConfig *cfg, const char *value,
			     GError **error)
{
	static const char *const names[] = {"expunge", "trash", NULL};
	int i = lookup_word(value, names);

	if (i < 0)
		return option_error(error, "delete", value, "expunge or trash");
	cfg->delete_mode = i == 0 ? IMAPFS_DELETE_EXPUNGE : IMAPFS_DELETE_TRASH;
	return TRUE;
}

typedef enum {
	OPT_FLAG,   /* no value; sets the gboolean at offset */
	OPT_STRING, /* stored as given at offset */
	OPT_PATH,   /* made absolute: the daemon runs from "/" */
	OPT_CUSTOM, /* checked and stored by parse() */
} OptionKind;

typedef struct {
	const char *name;
	OptionKind kind;
	goffset offset;
	gboolean (*parse)(ImapfsConfig *cfg, const char *value, GError **error);
} OptionDesc;

#define FIELD(f) G_STRUCT_OFFSET(ImapfsConfig, f)

static const OptionDesc options[] = {
	{"user", OPT_CUSTOM, 0, parse_user},
	{"password_command", OPT_STRING, FIELD(password_command), NULL},
	{"password_file", OPT_PATH, FIELD(password_file), NULL},
	{"auth", OPT_CUSTOM, 0, parse_auth},
	{"oauth_token_command", OPT_STRING, FIELD(oauth_token_command), NULL},
	{"cafile", OPT_PATH, FIELD(cafile), NULL},
	{"capath", OPT_PATH, FIELD(capath), NULL},
	{"tls_insecure", OPT_FLAG, FIELD(tls_insecure), NULL},
	{"allow_plaintext", OPT_FLAG, FIELD(allow_plaintext), NULL},
	{"ro", OPT_FLAG, FIELD(read_only), NULL},
	{"connections", OPT_CUSTOM, 0, parse_connections},
	{"cache_dir", OPT_PATH, FIELD(cache_dir), NULL},
	{"cache_size", OPT_CUSTOM, 0, parse_cache_size},
	{"cache", OPT_CUSTOM, 0, parse_cache},
	{"parts", OPT_CUSTOM, 0, parse_parts},
	{"delete", OPT_CUSTOM, 0, parse_delete},
	{"timeout", OPT_CUSTOM, 0, parse_timeout},
	{"poll", OPT_CUSTOM, 0, parse_poll},
};

static const OptionDesc *option_lookup(const char *name)
{
	for (gsize i = 0; i < G_N_ELEMENTS(options); i++) {
		if (strcmp(options[i].name, name) == 0)
			return &options[i];
	}
	return NULL;
}

static gboolean option_apply(ImapfsConfig *cfg, const OptionDesc *opt,
			     const char *value, GError **error)
{
	char **field = G_STRUCT_MEMBER_P(cfg, opt->offset);

	switch (opt->kind) {
	case OPT_FLAG:
		G_STRUCT_MEMBER(gboolean, cfg, opt->offset) = TRUE;
		return TRUE;
	case OPT_STRING:
		g_free(*field);
		*field = g_strdup(value);
		return TRUE;
	case OPT_PATH:
		g_free(*field);
		*field = g_canonicalize_filename(value, NULL);
		return TRUE;
	case OPT_CUSTOM:
		return opt->parse(cfg, value, error);
	}
	g_assert_not_reached();
}

ImapfsOptionResult imapfs_config_parse_option(ImapfsConfig *cfg,
					      const char *option,
					      GError **error)
{
	const char *eq = strchr(option, '=');
	g_autofree char *name =
		eq ? g_strndup(option, (gsize)(eq - option)) : g_strdup(option);
	const char *value = eq ? eq + 1 : NULL;
	const OptionDesc *opt = option_lookup(name);

	if (!opt)
		return IMAPFS_OPTION_NOT_OURS;
	if (opt->kind == OPT_FLAG && value) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "option \"%s\" takes no value", name);
		return IMAPFS_OPTION_INVALID;
	}
	if (opt->kind != OPT_FLAG && (!value || *value == '\0')) {
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "option \"%s\" needs a value", name);
		return IMAPFS_OPTION_INVALID;
	}
	if (!option_apply(cfg, opt, value, error))
		return IMAPFS_OPTION_INVALID;
	return IMAPFS_OPTION_OURS;
}

/* ---- Finishing ---- */

/* One path component, and a different one for every user name. */
static char *cache_leaf(const ImapfsConfig *cfg)
{
	GString *leaf = g_string_new(NULL);

	for (const char *p = cfg->user; *p; p++) {
		if (*p == '%')
			g_string_append(leaf, "%25");
		else if (*p == '/')
			g_string_append(leaf, "%2F");
		else
			g_string_append_c(leaf, *p);
	}
	g_string_append_printf(leaf, "@%s", cfg->host);
	return g_string_free(leaf, FALSE);
}

/* Read from the environment each time rather than g_get_user_cache_dir(),
 * which caches its first answer; the XDG spec says to ignore a relative
 * XDG_CACHE_HOME. */
static char *default_cache_dir(const ImapfsConfig *cfg)
{
	const char *xdg = g_getenv("XDG_CACHE_HOME");
	const char *home = g_getenv("HOME");
	g_autofree char *leaf = cache_leaf(cfg);

	if (xdg && g_path_is_absolute(xdg))
		return g_build_filename(xdg, "imapfs", leaf, NULL);
	if (!home || *home == '\0')
		home = g_get_home_dir();
	return g_build_filename(home, ".cache", "imapfs", leaf, NULL);
}

/* @mech (upper case, or NULL) takes an OAuth token, not a password. */
static gboolean is_oauth_mech(const char *mech)
{
	return g_strcmp0(mech, "XOAUTH2") == 0 ||
	       g_strcmp0(mech, "OAUTHBEARER") == 0;
}

gboolean imapfs_config_uses_oauth(const ImapfsConfig *cfg)
{
	return cfg->oauth_token_command != NULL || is_oauth_mech(cfg->auth);
}

/* auth= and oauth_token_command= agree, and name what we speak. */
static gboolean check_auth(const ImapfsConfig *cfg, GError **error)
{
	static const char *const spoken[] = {"PLAIN", "LOGIN", "XOAUTH2",
					     "OAUTHBEARER", NULL};
	gboolean oauth_mech = is_oauth_mech(cfg->auth);

	if (cfg->auth && !g_strv_contains(spoken, cfg->auth))
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "authentication mechanism \"%s\" is not "
			    "supported: use plain, login, xoauth2 or "
			    "oauthbearer",
			    cfg->auth);
	else if (oauth_mech && !cfg->oauth_token_command)
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "auth=%s needs -o oauth_token_command=CMD, a "
			    "command that prints an access token",
			    cfg->auth);
	else if (cfg->auth && !oauth_mech && cfg->oauth_token_command)
		g_set_error(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
			    "oauth_token_command is for auth=xoauth2 or "
			    "auth=oauthbearer, not auth=%s",
			    cfg->auth);
	else if (cfg->oauth_token_command &&
		 (cfg->password_command || cfg->password_file))
		g_set_error_literal(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
				    "give either oauth_token_command or a "
				    "password option, not both");
	else
		return TRUE;
	return FALSE;
}

gboolean imapfs_config_finish(ImapfsConfig *cfg, GError **error)
{
	if (!check_auth(cfg, error))
		return FALSE;
	if (!cfg->host) {
		g_set_error_literal(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
				    "no server: give a URL such as "
				    "imaps://USER@HOST");
		return FALSE;
	}
	if (!cfg->user) {
		g_set_error_literal(error, IMAPFS_ERROR, IMAPFS_ERROR_CONFIG,
				    "no user name: give it in the URL "
				    "(imaps://USER@HOST) or with -o user=NAME");
		return FALSE;
	}
	if (!cfg->cache_dir)
		cfg->cache_dir = default_cache_dir(cfg);
	return TRUE;
}

char *imapfs_config_describe(const ImapfsConfig *cfg)
{
	const char *host = cfg->host ? cfg->host : "";
	gboolean v6 = strchr(host, ':') != NULL;

	return g_strdup_printf("%s%s%s%s%s:%u", cfg->user ? cfg->user : "",
			       cfg->user ? "@" : "", v6 ? "[" : "", host,
			       v6 ? "]" : "", cfg->port);
}
