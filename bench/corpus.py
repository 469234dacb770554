# SPDX-License-Identifier: GPL-2.0-or-later
"""The benchmark's mail: a seeded, deterministic corpus written straight
into the private Dovecot's Maildir, and the manifest the results are
checked against.

Corpus (`messages` messages, default 10,000) spread over five mailboxes:
  INBOX 35 %, Archive 25 %, Archive.2024 20 %, Lists.dev 15 %, Sent 5 %
  (shown by imapfs as INBOX, Archive, Archive/2024, Lists/dev, Sent)
  - text/plain, 2-30 KiB (log-uniform): the bulk of the messages;
  - 5 %: multipart/mixed, a text part and a base64 attachment, the whole
    message 100 KiB - 2 MiB (log-uniform), some with a text trailer part
    after the attachment;
  - one in a thousand (at least one): 5-10 MiB with a base64 attachment.
  3 % of the messages contain the marker word (MARKER) once: in the body
  (anywhere, also after a big attachment) or in the Subject. The word
  occurs nowhere else (base64 of random bytes could hold it by chance
  with a probability of about 1e-8).

Listing mailbox (`listing` messages, default 100,000): small messages
(300-900 bytes) in the mailbox "Listing", for `ls -l`.

Loading: APPENDing 100,000 messages costs minutes; writing Maildir files
costs seconds. The mailboxes are CREATEd over IMAP, their directories
found with `doveadm mailbox status guid` (the fixture's Dovecot uses
maildir:~/Maildir:LAYOUT=index, so a mailbox lives in Maildir/<GUID>/),
and the messages written into cur/ with S= and W= sizes in their names
(Dovecot then need not read them to know RFC822.SIZE) and the Date as
mtime (their INTERNALDATE). Dovecot assigns UIDs when a client next
selects the mailbox; the manifest maps each Message-ID to the UID the
server gave it, fetched back over IMAP, so it is the server's truth.
"""

import base64
import datetime
import email.utils
import grp
import math
import os
import pwd
import random
import re
import subprocess
import time

MARKER = 'zebracorn'
CRLF = b'\r\n'
KIB = 1024
MIB = 1024 * 1024

# (server name, share of the corpus)
FOLDERS = (('INBOX', 0.35), ('Archive', 0.25), ('Archive.2024', 0.20),
           ('Lists.dev', 0.15), ('Sent', 0.05))
LISTING = 'Listing'
SEP = '.'

ATTACH_SHARE = 0.05
MARKER_SHARE = 0.03

_VOCAB = ('the of and to in is was for on that with as by at from his her '
          'which or be an were are this have had not but they all one their '
          'been has more when who will would there can out about other into '
          'meeting report budget release kernel patch review merge branch '
          'server client latency cache block folder message thread build '
          'invoice payment schedule quarterly project deadline proposal '
          'network storage backup restore mount index query result table '
          'alpha bravo charlie delta echo foxtrot golf hotel india juliet '
          'kilo lima mike november oscar papa quebec romeo sierra tango '
          'uniform victor whiskey xray yankee zulu').split()
_NAMES = ('Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory '
          'Niaj Olivia Peggy Rupert Sybil Trent Victor Walter').split()


def display_path(server_name):
    """How imapfs shows a mailbox: the hierarchy as directories."""
    return server_name.replace(SEP, '/')


class Spec:
    """What one corpus message will be (decided before any is written)."""
    __slots__ = ('index', 'folder', 'kind', 'size', 'marker', 'where',
                 'msgid', 'seed')

    def __init__(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)


def _log_uniform(rng, lo, hi):
    return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def plan(messages, seed):
    """The list of Specs for a corpus of `messages` messages."""
    rng = random.Random('plan-%d' % seed)
    counts = [int(round(messages * share)) for _, share in FOLDERS]
    counts[0] += messages - sum(counts)
    folders = []
    for (name, _), n in zip(FOLDERS, counts):
        folders += [name] * n
    n_huge = max(1, messages // 1000)
    huge = set(rng.sample(range(messages), n_huge))
    specs = []
    for i in range(messages):
        if i in huge:
            kind, size = 'huge', rng.randint(5 * MIB, 10 * MIB)
        elif rng.random() < ATTACH_SHARE:
            kind, size = 'attach', _log_uniform(rng, 100 * KIB, 2 * MIB)
        else:
            kind, size = 'text', _log_uniform(rng, 2 * KIB, 30 * KIB)
        marker = rng.random() < MARKER_SHARE
        where = None
        if marker:
            if kind == 'text':
                where = 'subject' if rng.random() < 0.25 else 'body'
            else:
                where = 'trailer' if rng.random() < 0.5 else 'body'
        specs.append(Spec(index=i, folder=folders[i], kind=kind, size=size,
                          marker=marker, where=where,
                          msgid='<bench-%06d@imapfs.bench>' % i,
                          seed=rng.getrandbits(64)))
    return specs


class _Text:
    """Random text lines, made once per corpus (choosing lines from a pool
    is ~50x faster than choosing words)."""

    def __init__(self, seed):
        rng = random.Random('lines-%d' % seed)
        self.lines = []
        for _ in range(4096):
            words = []
            n = 0
            limit = rng.randint(40, 76)
            while True:
                w = rng.choice(_VOCAB)
                if n + len(w) + 1 > limit:
                    break
                words.append(w)
                n += len(w) + 1
            self.lines.append(' '.join(words).encode() + CRLF)

    def block(self, rng, nbytes):
        """About nbytes of CRLF lines (at least one line)."""
        k = max(1, nbytes // 60)
        return b''.join(rng.choices(self.lines, k=k))


def _header(rng, spec, date, subject_extra='', content_type=None):
    frm = rng.choice(_NAMES)
    to = rng.choice(_NAMES)
    subject = ' '.join(rng.choices(_VOCAB, k=rng.randint(3, 8)))
    if subject_extra:
        subject += ' ' + subject_extra
    lines = ['Return-Path: <%s@example.org>' % frm.lower(),
             'From: %s <%s@example.org>' % (frm, frm.lower()),
             'To: %s <%s@example.net>' % (to, to.lower()),
             'Subject: ' + subject,
             'Date: ' + email.utils.format_datetime(date),
             'Message-ID: ' + spec.msgid,
             'MIME-Version: 1.0']
    lines.append(content_type or 'Content-Type: text/plain; charset=us-ascii')
    return CRLF.join(x.encode() for x in lines) + CRLF + CRLF


def _with_marker(rng, text):
    """text with MARKER put in a random line."""
    lines = text.split(CRLF)
    i = rng.randrange(max(1, len(lines) - 1))
    words = lines[i].split(b' ')
    words.insert(rng.randint(0, len(words)), MARKER.encode())
    lines[i] = b' '.join(words)
    return CRLF.join(lines)


def _b64(data):
    return base64.encodebytes(data).replace(b'\n', CRLF)


def render(spec, text, date):
    """The bytes of one corpus message (CRLF line ends)."""
    rng = random.Random(spec.seed)
    if spec.kind == 'text':
        head = _header(rng, spec, date,
                       MARKER if spec.where == 'subject' else '')
        body = text.block(rng, max(60, spec.size - len(head)))
        if spec.where == 'body':
            body = _with_marker(rng, body)
        return head + body
    boundary = '=_bench_%016x' % spec.seed
    head = _header(rng, spec, date, content_type=(
        'Content-Type: multipart/mixed; boundary="%s"' % boundary))
    b = boundary.encode()
    intro = text.block(rng, rng.randint(500, 4000))
    if spec.where == 'body':
        intro = _with_marker(rng, intro)
    trailer = b''
    if spec.where == 'trailer' or rng.random() < 0.3:
        t = text.block(rng, rng.randint(200, 1500))
        if spec.where == 'trailer':
            t = _with_marker(rng, t)
        trailer = (b'--' + b + CRLF +
                   b'Content-Type: text/plain; charset=us-ascii' + CRLF +
                   CRLF + t)
    fname = 'file-%d.bin' % spec.index
    att_head = (b'--' + b + CRLF +
                b'Content-Type: application/octet-stream; name="%s"'
                % fname.encode() + CRLF +
                b'Content-Disposition: attachment; filename="%s"'
                % fname.encode() + CRLF +
                b'Content-Transfer-Encoding: base64' + CRLF + CRLF)
    pre = (head + b'This is a multi-part message in MIME format.' + CRLF +
           b'--' + b + CRLF +
           b'Content-Type: text/plain; charset=us-ascii' + CRLF + CRLF +
           intro + att_head)
    post = trailer + b'--' + b + b'--' + CRLF
    # base64 with CRLF lines: 78 bytes for every 57 of payload
    raw = max(57, (spec.size - len(pre) - len(post)) * 57 // 78)
    return pre + _b64(rng.randbytes(raw)) + post


def render_listing(i, rng, date):
    frm = _NAMES[i % len(_NAMES)]
    words = ' '.join(rng.choices(_VOCAB, k=rng.randint(20, 110)))
    return ('From: %s <%s@example.org>\r\nTo: list@example.net\r\n'
            'Subject: listing %d\r\nDate: %s\r\n'
            'Message-ID: <list-%06d@imapfs.bench>\r\n\r\n%s\r\n'
            % (frm, frm.lower(), i, email.utils.format_datetime(date), i,
               words)).encode()


# ---------------------------------------------------------------------------
# Writing into Dovecot

BASE_TIME = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def _flags(rng):
    r = rng.random()
    return 'S' if r < 0.7 else ('FS' if r < 0.75 else '')


class Loaded:
    """What was loaded; after fetch_manifest() also the server's UIDs."""

    def __init__(self):
        self.messages = 0
        self.listing = 0
        self.bytes = 0
        self.listing_bytes = 0
        self.by_folder = {}         # server name -> [(msgid, size, marker)]
        self.uids = {}              # server name -> [(uid, size)] by uid
        self.marker_set = set()     # {(display path, uid)}
        self.kinds = {}
        self.marker_count = 0

    def as_dict(self):
        return {'messages': self.messages, 'listing': self.listing,
                'bytes': self.bytes, 'listing_bytes': self.listing_bytes,
                'folders': {k: len(v) for k, v in self.by_folder.items()},
                'kinds': self.kinds, 'marker_messages': self.marker_count}


def mailbox_dirs(dovecot, user='alice'):
    """{server name: maildir directory} from doveadm (LAYOUT=index)."""
    r = subprocess.run(['doveadm', '-c', dovecot.conf, 'mailbox', 'status',
                        '-u', user, 'guid', '*'], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, check=True)
    out = {}
    for line in r.stdout.splitlines():
        m = re.match(r'^(.*) guid=([0-9a-f]{32})$', line.strip())
        if m:
            out[m.group(1)] = os.path.join(dovecot.home, user, 'Maildir',
                                           m.group(2))
    return out


def create_mailboxes(dovecot, names, user='alice'):
    c = dovecot.client(user)
    try:
        for n in names:
            if n == 'INBOX':
                continue
            typ, data = c._simple_command('CREATE', '"%s"' % n)
            if typ != 'OK':
                raise RuntimeError('CREATE %s: %r' % (n, data))
        c.select('INBOX')     # makes sure INBOX exists
        c.logout()
    except Exception:
        c.shutdown()
        raise


def _writer():
    uid = pwd.getpwnam('dovecot').pw_uid
    gid = grp.getgrnam('dovecot').gr_gid

    def write(directory, name, data, mtime):
        path = os.path.join(directory, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fchown(fd, uid, gid)
        finally:
            os.close(fd)
        os.utime(path, (mtime, mtime))
    return write


def load(dovecot, messages, listing, seed, user='alice', log=print):
    """Create the mailboxes and write the corpus and the listing mailbox
    into `dovecot`'s Maildir. Returns a Loaded (no UIDs yet)."""
    names = [f for f, _ in FOLDERS] + ([LISTING] if listing else [])
    create_mailboxes(dovecot, names, user)
    dirs = mailbox_dirs(dovecot, user)
    missing = [n for n in names if n not in dirs]
    if missing:
        raise RuntimeError('doveadm does not show %r: %r' % (missing, dirs))
    write = _writer()
    out = Loaded()
    text = _Text(seed)
    frng = random.Random('flags-%d' % seed)
    t0 = time.monotonic()
    specs = plan(messages, seed)
    for spec in specs:
        date = BASE_TIME + datetime.timedelta(minutes=37 * spec.index)
        data = render(spec, text, date)
        n = len(data)
        name = '%d.M%dP1.bench,S=%d,W=%d:2,%s' % (
            1700000000 + spec.index, spec.index, n, n, _flags(frng))
        write(os.path.join(dirs[spec.folder], 'cur'), name, data,
              date.timestamp())
        out.by_folder.setdefault(spec.folder, []).append(
            (spec.msgid, n, spec.marker))
        out.bytes += n
        out.messages += 1
        out.kinds[spec.kind] = out.kinds.get(spec.kind, 0) + 1
        out.marker_count += spec.marker
    log('  corpus: %d messages, %.1f MiB written in %.1fs' % (
        out.messages, out.bytes / MIB, time.monotonic() - t0))
    t0 = time.monotonic()
    if listing:
        lrng = random.Random('listing-%d' % seed)
        d = os.path.join(dirs[LISTING], 'cur')
        for i in range(listing):
            date = BASE_TIME + datetime.timedelta(minutes=3 * i)
            data = render_listing(i, lrng, date)
            n = len(data)
            name = '%d.M%dP2.bench,S=%d,W=%d:2,%s' % (
                1600000000 + i, i, n, n, _flags(lrng))
            write(d, name, data, date.timestamp())
            out.listing_bytes += n
        out.listing = listing
        log('  listing: %d messages, %.1f MiB written in %.1fs' % (
            listing, out.listing_bytes / MIB, time.monotonic() - t0))
    return out


_FETCH_RE = re.compile(rb'\* \d+ FETCH \(.*?\bUID (\d+)', re.S)


def fetch_manifest(dovecot, loaded, user='alice'):
    """EXAMINE each mailbox and fetch UID, size and Message-ID of every
    message: the server's UIDs for the manifest. This is also the warm-up:
    Dovecot indexes the new files and caches the listing fields."""
    c = dovecot.client(user)
    try:
        for folder, msgs in loaded.by_folder.items():
            typ, data = c.select('"%s"' % folder, readonly=True)
            if typ != 'OK' or int(data[0]) != len(msgs):
                raise RuntimeError('EXAMINE %s: %r, expected %d messages'
                                   % (folder, data, len(msgs)))
            typ, data = c.uid('FETCH', '1:*', '(UID RFC822.SIZE INTERNALDATE '
                              'FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])')
            by_id = {m[0]: (m[1], m[2]) for m in msgs}
            uids = []
            for item in data:
                if not isinstance(item, tuple):
                    continue
                uid = int(re.search(rb'\bUID (\d+)', item[0]).group(1))
                size = int(re.search(rb'RFC822\.SIZE (\d+)',
                                     item[0]).group(1))
                mid = re.search(rb'<[^>]+>', item[1]).group(0).decode()
                want_size, marker = by_id.pop(mid)
                if want_size != size:
                    raise RuntimeError('%s UID %d: RFC822.SIZE %d, wrote %d'
                                       % (folder, uid, size, want_size))
                uids.append((uid, size))
                if marker:
                    loaded.marker_set.add((display_path(folder), uid))
            if by_id:
                raise RuntimeError('%s: %d messages not found by Message-ID'
                                   % (folder, len(by_id)))
            uids.sort()
            loaded.uids[folder] = uids
            c.close()
        if loaded.listing:
            typ, data = c.select('"%s"' % LISTING, readonly=True)
            if typ != 'OK' or int(data[0]) != loaded.listing:
                raise RuntimeError('EXAMINE %s: %r' % (LISTING, data))
            typ, data = c.uid('FETCH', '1:*',
                              '(UID RFC822.SIZE INTERNALDATE FLAGS)')
            n = sum(1 for d in data if d and b'UID ' in d)
            if n != loaded.listing:
                raise RuntimeError('%s: %d FETCH replies for %d messages'
                                   % (LISTING, n, loaded.listing))
            c.close()
        c.logout()
    except Exception:
        c.shutdown()
        raise
    return loaded
