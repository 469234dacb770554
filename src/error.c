/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "imapfs/error.h"

G_DEFINE_QUARK(imapfs - error - quark, imapfs_error)
