/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "imapfs/error.h"

G_DEFINE_QUARK(imapfs - error - quark, imapfs_error)

gboolean imapfs_error_is_connection(const GError *error)
{
	if (error == NULL || error->domain != IMAPFS_ERROR)
		return FALSE;
	switch ((ImapfsErrorCode)error->code) {
	case IMAPFS_ERROR_DISCONNECTED:
	case IMAPFS_ERROR_TIMEOUT:
	case IMAPFS_ERROR_BYE:
	case IMAPFS_ERROR_PROTOCOL:
	case IMAPFS_ERROR_TLS:
	case IMAPFS_ERROR_CONNECT:
	case IMAPFS_ERROR_RESOLVE:
		return TRUE;
	default:
		return FALSE;
	}
}
