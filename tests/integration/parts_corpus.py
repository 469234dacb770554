# SPDX-License-Identifier: GPL-2.0-or-later
"""Messages with the classic MIME hard cases, as raw bytes (CRLF), for the
parts tests: each is (key, raw). Written out by hand rather than built with
the email package, since the point is to compare against what that
package derives from bytes it did not produce."""

import base64
import quopri
import zlib


def _b64(data, width=76):
    s = base64.b64encode(data).decode()
    return '\n'.join(s[i:i + width] for i in range(0, len(s), width))


def _crlf(text):
    return text.replace('\r\n', '\n').replace('\n', '\r\n').encode('utf-8')


PDF = b'%PDF-1.4\n' + bytes(range(256)) * 9 + b'\n%%EOF\n'
UMLAUT_TEXT = 'Grüße aus München, schöne Tage.\n' * 3
LONG_QP_LINE = 'x' * 100 + ' = a long line that needs soft breaks ' + \
    'y' * 80 + '\n'


def _header(subject, ctype, extra=''):
    return ('From: =?UTF-8?Q?J=C3=B6rg_M=C3=BCller?= <joerg@example.org>\n'
            'To: Bob <bob@example.org>\n'
            'Subject: %s\n'
            'Date: Tue, 4 Jun 2024 10:00:00 +0200\n'
            'Message-ID: <parts-%s@imapfs.test>\n'
            'MIME-Version: 1.0\n'
            'Content-Type: %s\n%s\n'
            % (subject, zlib.crc32(subject.encode()), ctype, extra))


SIMPLE = _header('plain', 'text/plain; charset=us-ascii') + \
    'Just one part.\nTwo lines.\n'

# multipart/mixed: alternative (QP text, base64 html), then a PDF whose
# RFC 2231 file name has a UTF-8 umlaut.
INVOICE = _header('=?UTF-8?Q?Rechnung_f=C3=BCr_M=C3=A4rz?=',
                  'multipart/mixed; boundary="outer"') + '''\
This is a multi-part message in MIME format.

--outer
Content-Type: multipart/alternative; boundary="alt"

--alt
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: quoted-printable

%s
--alt
Content-Type: text/html; charset=UTF-8
Content-Transfer-Encoding: base64

%s
--alt--

--outer
Content-Type: application/pdf
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename*=UTF-8''Rechnung%%20M%%C3%%A4rz.pdf

%s
--outer--
''' % (quopri.encodestring((UMLAUT_TEXT + LONG_QP_LINE).encode()).decode(),
       _b64('<p>Grüße <b>aus</b> München</p>\n'.encode()),
       _b64(PDF))

# The attached message: mixed, with a base64 attachment named in RFC 2047.
INNER = '''\
From: Inner <inner@example.org>
Subject: inner message
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="inner"

--inner
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: 8bit

Inner text.
--inner
Content-Type: application/octet-stream; name="=?UTF-8?B?w6TDtsO8LmJpbg==?="
Content-Transfer-Encoding: base64

%s
--inner--
''' % _b64(bytes(range(200)))

# message/rfc822 inside multipart/mixed inside multipart/alternative.
NESTED = _header('nested', 'multipart/alternative; boundary="a1"') + '''\
--a1
Content-Type: text/plain; charset=us-ascii

Plain alternative.
--a1
Content-Type: multipart/mixed; boundary="m1"

--m1
Content-Type: text/html; charset=us-ascii

<p>html alternative</p>
--m1
Content-Type: message/rfc822

%s
--m1--

--a1--
''' % INNER

# RFC 2231 continuations with a charset, RFC 2047 in a file name, a part
# without any name, duplicate names, a hostile name, an empty part.
NAMES = _header('names', 'multipart/mixed; boundary="n"') + '''\
--n
Content-Type: text/plain; charset=iso-8859-1
Content-Disposition: attachment;
 filename*0*=iso-8859-1''Gr%%FC;
 filename*1*=%%DFe%%20und;
 filename*2=" Kuesse.txt"
Content-Transfer-Encoding: quoted-printable

Gr=FC=DFe
--n
Content-Type: text/plain; charset=UTF-8;
 name="=?UTF-8?Q?=C3=BCbersicht?= =?UTF-8?B?LnR4dA==?="
Content-Transfer-Encoding: base64

%s
--n
Content-Type: application/octet-stream
Content-Transfer-Encoding: base64

%s
--n
Content-Type: text/plain
Content-Disposition: attachment; filename="same.txt"

first
--n
Content-Type: text/plain
Content-Disposition: attachment; filename="same.txt"

second
--n
Content-Type: text/plain
Content-Disposition: attachment; filename="../../etc/passwd"

root:x:0:0
--n
Content-Type: text/plain

--n--
''' % (_b64('Übersicht\n'.encode()), _b64(b'\x00\x01\x02binary\xff'))

# Declared encodings that do not fit the content: 7bit over 8-bit bytes,
# and quoted-printable with '=' signs that are no escapes.
WRONG = _header('wrong encodings', 'multipart/mixed; boundary="w"') + '''\
--w
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: 7bit

Grüße, declared 7bit.
--w
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: quoted-printable

a=b and 100% =ZZ sure=3D
--w--
'''

# A single part in base64: its file is 1.<ext> with the decoded bytes.
SINGLE_B64 = _header('single base64', 'image/png',
                     'Content-Transfer-Encoding: base64\n') + \
    _b64(b'\x89PNG\r\n\x1a\n' + bytes(range(64)) * 4) + '\n'

MESSAGES = [
    ('simple', _crlf(SIMPLE)),
    ('invoice', _crlf(INVOICE)),
    ('nested', _crlf(NESTED)),
    ('names', _crlf(NAMES)),
    ('wrong', _crlf(WRONG)),
    ('single_b64', _crlf(SINGLE_B64)),
]
