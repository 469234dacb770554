/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The one GError domain used below the FUSE layer.
 *
 * Every layer reports failures as GError in IMAPFS_ERROR. The FUSE layer is
 * the only place that turns these codes into errno values
 * (imapfs_fuse_errno() in fuse-ops.c).
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define IMAPFS_ERROR (imapfs_error_quark())

typedef enum {
	IMAPFS_ERROR_FAILED,	    /* anything not listed below */
	IMAPFS_ERROR_CONFIG,	    /* bad URL, option or credentials source */
	IMAPFS_ERROR_RESOLVE,	    /* host name could not be resolved */
	IMAPFS_ERROR_CONNECT,	    /* TCP connection refused or unreachable */
	IMAPFS_ERROR_TLS,	    /* TLS handshake or I/O failure */
	IMAPFS_ERROR_CERTIFICATE,   /* server certificate not trusted */
	IMAPFS_ERROR_PLAINTEXT,	    /* would send credentials in clear */
	IMAPFS_ERROR_TIMEOUT,	    /* peer silent for longer than allowed */
	IMAPFS_ERROR_DISCONNECTED,  /* EOF, reset, or connection unusable */
	IMAPFS_ERROR_PROTOCOL,	    /* malformed or unexpected server data */
	IMAPFS_ERROR_BYE,	    /* server sent BYE */
	IMAPFS_ERROR_AUTH,	    /* login refused */
	IMAPFS_ERROR_NO,	    /* tagged NO without a more precise code */
	IMAPFS_ERROR_BAD,	    /* tagged BAD */
	IMAPFS_ERROR_NONEXISTENT,   /* [NONEXISTENT] / [TRYCREATE] */
	IMAPFS_ERROR_ALREADYEXISTS, /* [ALREADYEXISTS] */
	IMAPFS_ERROR_OVERQUOTA,	    /* [OVERQUOTA] */
	IMAPFS_ERROR_NOPERM,	    /* [NOPERM] */
	IMAPFS_ERROR_UIDVALIDITY_CHANGED, /* mailbox recreated under us */
	IMAPFS_ERROR_UNSUPPORTED,	  /* server lacks a needed capability */
	IMAPFS_ERROR_BUSY,     /* resource in use by another process */
	IMAPFS_ERROR_TOOBIG,   /* above the server's APPENDLIMIT */
	IMAPFS_ERROR_MODIFIED, /* [MODIFIED]: changed by another client */
	IMAPFS_ERROR_READONLY, /* a change on a read-only mount */
	IMAPFS_ERROR_NOTEMPTY, /* mailbox still holds messages or children */
	IMAPFS_ERROR_INVALID,  /* a name or value the server cannot take */
	IMAPFS_ERROR_NOTPERMITTED, /* never possible: messages are immutable,
				      INBOX stays */
	IMAPFS_ERROR_CROSSDEVICE,  /* cannot move on the server: copy instead */
	IMAPFS_ERROR_INTERRUPTED,  /* the user gave up (a FUSE interrupt) */
} ImapfsErrorCode;

GQuark imapfs_error_quark(void);

/* Whether @error says the connection failed (the same request may work
 * on another one): DISCONNECTED, TIMEOUT, BYE, PROTOCOL, TLS, CONNECT,
 * RESOLVE. */
gboolean imapfs_error_is_connection(const GError *error);

G_END_DECLS
