#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""imapfs benchmark: cold and warm grep, listing, rsync and memory of a
mount next to the baselines a user would compare it with, on loopback
and through a 20 ms round-trip latency proxy, in one run.

See bench/README.md for what is measured and how to read the table.

usage (as root, from anywhere):
    bench/run.py                           # full size, both latencies
    bench/run.py --scale 0.1               # 1,000 / 10,000 messages
    bench/run.py --imapfs build/imapfs --json out.json --markdown
"""

import argparse
import atexit
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, 'tests', 'integration'))
sys.path.insert(0, HERE)

import imapfs_fixtures as fx  # noqa: E402
import corpus  # noqa: E402
import delayproxy  # noqa: E402
import rawimap  # noqa: E402

DEFAULT_MESSAGES = 10000
DEFAULT_LISTING = 100000
STATE_DIR = '/var/tmp/imapfs-bench'
USER = 'alice'
MB = 1000 * 1000

# Commands in the -d trace: "imapfs: C: <tag> <command ...>".
_CMD_RE = re.compile(r'^imapfs: C: (\S+)(?: (.*))?$')
# A FETCH that transfers message content (not RFC822.SIZE, not headers
# only): BODY[...] or BINARY[...] of the whole message, a part or TEXT,
# or RFC822 / RFC822.TEXT.
_BODY_RE = re.compile(r'\b(?:BODY|BINARY)(?:\.PEEK)?\[(?:\]|TEXT\]|\d)'
                      r'|\bRFC822(?:\.TEXT)?(?=[\s)])')
_PROBLEM_RE = re.compile(r'^imapfs: (?:error|warning|critical)[: ]|'
                         r'AddressSanitizer|runtime error|Segmentation|'
                         r'Aborted|assertion', re.I)

TOOL_ENV = dict(os.environ, LC_ALL='C')


def log(msg=''):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Cleanup: everything started is registered here and stopped in reverse
# order on exit, failure, ^C or SIGTERM (by pid, never by name).

_cleanups = []


def on_cleanup(fn, *args):
    entry = (fn, args)
    _cleanups.append(entry)
    return entry


def cleanup_now(entry):
    if entry in _cleanups:
        _cleanups.remove(entry)
        entry[0](*entry[1])


def cleanup_all():
    while _cleanups:
        fn, args = _cleanups.pop()
        try:
            fn(*args)
        except BaseException as e:     # keep cleaning up
            log('cleanup %s: %s' % (getattr(fn, '__name__', fn), e))


def _terminate(signum, frame):
    raise KeyboardInterrupt('signal %d' % signum)


# ---------------------------------------------------------------------------
# Timing helpers

class Phases:
    def __init__(self):
        self.items = []     # (name, seconds)

    def run(self, name, fn, *args, **kw):
        log('- %s ...' % name)
        t = time.monotonic()
        try:
            return fn(*args, **kw)
        finally:
            dt = time.monotonic() - t
            self.items.append((name, dt))
            log('  %s: %.2fs' % (name, dt))


def _rchar(pid):
    try:
        with open('/proc/%d/io' % pid) as f:
            for line in f:
                if line.startswith('rchar:'):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def timed_cmd(cmd, timeout=None, out=None, expect_rchar=None, label=None):
    """Run cmd; returns dict(seconds, rc, timed_out, rchar, stderr).

    With a timeout the command is killed when it runs longer; 'estimate'
    then extrapolates from how much it had read (expect_rchar)."""
    errf = tempfile.TemporaryFile()
    outf = open(out, 'wb') if out else subprocess.DEVNULL
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=outf, stderr=errf,
                         stdin=subprocess.DEVNULL, env=TOOL_ENV)
    rchar = 0
    timed_out = False
    next_note = t0 + 20
    try:
        while True:
            try:
                p.wait(0.1)
                break
            except subprocess.TimeoutExpired:
                pass
            r = _rchar(p.pid)
            if r is not None:
                rchar = r
            now = time.monotonic()
            if now >= next_note:
                next_note = now + 20
                pct = (' (%.0f%% of the bytes)' % (100.0 * rchar /
                                                  expect_rchar)
                       if expect_rchar else '')
                log('    %s: %.0fs, read %.1f MiB%s' % (
                    label or cmd[0], now - t0, rchar / 2**20, pct))
            if timeout and now - t0 > timeout:
                timed_out = True
                p.kill()
                p.wait()
                break
    except BaseException:
        p.kill()
        p.wait()
        raise
    finally:
        if out:
            outf.close()
    dt = time.monotonic() - t0
    errf.seek(0)
    err = errf.read().decode(errors='replace')
    errf.close()
    res = {'seconds': dt, 'rc': p.returncode, 'timed_out': timed_out,
           'rchar': rchar, 'stderr': err[-2000:]}
    if timed_out and expect_rchar and rchar:
        res['estimate'] = dt * expect_rchar / rchar
        res['progress'] = rchar / expect_rchar
    return res


# ---------------------------------------------------------------------------
# imapfs: build, mount, trace

def build_imapfs(args):
    if args.imapfs:
        path = os.path.abspath(args.imapfs)
        if not os.access(path, os.X_OK):
            sys.exit('--imapfs %s is not an executable' % path)
        return path, 'given'
    if args.source.lower() == 'head':
        args.source = 'HEAD'
    if args.source != 'worktree':
        r = subprocess.run(['git', '-C', REPO, 'rev-parse', '--verify',
                            args.source + '^{commit}'],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
        if r.returncode != 0:
            sys.exit('--source %s: not a commit: %s' % (args.source,
                                                        r.stderr.strip()))
        commit = r.stdout.strip()
        src = os.path.join(STATE_DIR, 'src-' + commit[:12])
        if not os.path.exists(os.path.join(src, 'meson.build')):
            tmp = src + '.tmp'
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            # git archive only reads the repository (no index, no checkout)
            a = subprocess.Popen(['git', '-C', REPO, 'archive', commit],
                                 stdout=subprocess.PIPE)
            subprocess.run(['tar', '-x', '-C', tmp], stdin=a.stdout,
                           check=True)
            if a.wait() != 0:
                sys.exit('git archive failed')
            os.rename(tmp, src)
        build = args.build_dir or os.path.join(STATE_DIR,
                                               'build-' + commit[:12])
        what = '%s = %s' % (args.source, commit[:12])
    else:
        src = REPO
        build = args.build_dir or os.path.join(REPO, 'build-bench')
        what = 'working tree'
    last = None
    for attempt in range(args.build_retries + 1):
        if attempt:
            log('  build failed; retrying in %ds (someone may be mid-edit)'
                % args.build_retry_wait)
            time.sleep(args.build_retry_wait)
        cmds = []
        if not os.path.exists(os.path.join(build, 'build.ninja')):
            cmds.append(['meson', 'setup', build, '--buildtype=release'])
        cmds.append(['meson', 'compile', '-C', build, 'imapfs'])
        ok = True
        for c in cmds:
            r = subprocess.run(c, cwd=src, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
            if r.returncode != 0:
                last = r.stdout[-3000:]
                ok = False
                break
        if ok:
            return os.path.join(build, 'imapfs'), what
    sys.exit('building imapfs (%s) failed:\n%s\n(use --imapfs PATH or '
             '--source head)' % (what, last))


class Trace:
    """The -d trace of one mount: counts commands between marks."""

    def __init__(self, path, enabled=True):
        self.path = path
        self.enabled = enabled

    def mark(self):
        try:
            return os.path.getsize(self.path)
        except OSError:
            return 0

    def since(self, offset):
        if not self.enabled:
            return None
        with open(self.path, 'rb') as f:
            f.seek(offset)
            text = f.read().decode(errors='replace')
        cmds = []
        for line in text.splitlines():
            m = _CMD_RE.match(line)
            if m:
                cmds.append(m.group(2) or m.group(1))
        verbs = {}
        for c in cmds:
            words = c.split()
            v = ' '.join(words[:2]) if words and words[0] == 'UID' else (
                words[0] if words else '?')
            verbs[v] = verbs.get(v, 0) + 1
        return {'commands': len(cmds), 'by_verb': verbs,
                'body_fetches': sum(1 for c in cmds
                                    if c.startswith('UID FETCH') or
                                    c.startswith('FETCH')
                                    if _BODY_RE.search(c))}

    def problems(self):
        out = []
        try:
            with open(self.path, 'rb') as f:
                for line in f:
                    s = line.decode(errors='replace').rstrip()
                    if _PROBLEM_RE.search(s) and 'C: ' not in s[:12] \
                            and 'S: ' not in s[:12]:
                        out.append(s[:300])
        except OSError:
            pass
        return out


def safe_rmtree(path):
    """Remove the scratch directory, never descending into a mount."""
    mnt = os.path.join(path, 'mnt')
    if fx.is_mounted(mnt):
        fx.fusermount_u(mnt)
    if fx.is_mounted(mnt):
        log('%s is still mounted; leaving %s in place' % (mnt, path))
        return
    shutil.rmtree(path, ignore_errors=True)


def vm_hwm(pid):
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class ImapfsMount:
    """fx.Mount with -d (trace to its stderr file) and our options."""

    def __init__(self, bench, name, port, cache_dir):
        self.bench = bench
        self.name = name
        work = os.path.join(bench.workdir, 'mount-' + name)
        mnt = os.path.join(bench.workdir, 'mnt')
        # parts=no: grep -r would otherwise also read every message's
        # decoded parts, which neither baseline has to.
        opts = ['cafile=' + bench.ca.cert, 'cache_dir=' + cache_dir,
                'parts=no']
        opts += bench.args.imapfs_opt
        url = 'imaps://%s@127.0.0.1:%d' % (USER, port)
        self.traced = not bench.args.no_trace
        self.m = fx.Mount(url, mnt, options=opts, password=fx.USERS[USER],
                          foreground=True, debug=self.traced, workdir=work)
        self.trace = Trace(self.m.stderr_path, self.traced)
        self.mountpoint = mnt
        self.entry = None
        self.hwm = None
        self.exit = None

    def start(self):
        self.m.start(timeout=60)
        self.entry = on_cleanup(self._emergency)
        return self

    def _emergency(self):
        self.m.kill()

    def stop(self):
        self.hwm = vm_hwm(self.m.pid)
        if self.entry:
            _cleanups.remove(self.entry)
            self.entry = None
        self.m.stop(timeout=30, check=False)
        self.exit = self.m.returncode
        probs = self.trace.problems()
        if self.exit not in (0, None):
            probs.insert(0, 'exit status %s' % self.exit)
        for p in probs[:20]:
            self.bench.problem('mount %s: %s' % (self.name, p))
        if len(probs) > 20:
            self.bench.problem('mount %s: ... %d more problem lines in %s'
                               % (self.name, len(probs) - 20,
                                  self.m.stderr_path))
        return self.hwm


# ---------------------------------------------------------------------------
# The benchmark

class Bench:
    def __init__(self, args):
        self.args = args
        self.phases = Phases()
        self.figures = {}       # latency label -> {name: value}
        self.problems = []
        self.checks = []        # correctness notes
        self.workdir = None
        self.dovecot = None
        self.ca = None
        self.loaded = None
        self.imapfs = None

    def problem(self, text):
        log('  PROBLEM: ' + text)
        self.problems.append(text)

    # -- setup --------------------------------------------------------------
    def setup(self):
        a = self.args
        os.makedirs(STATE_DIR, exist_ok=True)
        path, what = self.phases.run('build imapfs', build_imapfs, a)
        self.imapfs = path
        self.imapfs_what = what
        os.environ['IMAPFS_BIN'] = path
        log('  imapfs: %s (%s)' % (path, what))
        self.workdir = a.workdir or tempfile.mkdtemp(
            prefix='run-', dir=STATE_DIR)
        os.makedirs(self.workdir, exist_ok=True)
        if not a.keep and not a.workdir:
            on_cleanup(safe_rmtree, self.workdir)
        os.makedirs(os.path.join(self.workdir, 'mnt'), exist_ok=True)
        self.ca = fx.CA(os.path.join(self.workdir, 'ca'))

        def start_dovecot():
            d = fx.Dovecot(ca=self.ca)
            on_cleanup(d.stop)
            d.start()
            return d
        self.dovecot = self.phases.run('start dovecot', start_dovecot)
        self.loaded = self.phases.run(
            'write corpus into the Maildir', corpus.load, self.dovecot,
            a.messages, a.listing, a.seed, USER, log)
        self.phases.run('index + manifest (IMAP, warms dovecot)',
                        corpus.fetch_manifest, self.dovecot, self.loaded,
                        USER)
        log('  %d marker messages; corpus %.1f MiB, listing %.1f MiB' % (
            len(self.loaded.marker_set), self.loaded.bytes / 2**20,
            self.loaded.listing_bytes / 2**20))
        self.folder_order = [f for f, _ in corpus.FOLDERS
                             if f in self.loaded.uids]

    # -- baselines ----------------------------------------------------------
    def raw_fetch(self, port, nconn):
        shares = rawimap.split_work(self.loaded.uids, nconn,
                                    self.folder_order)
        cmds = [rawimap.fetch_commands(s) for s in shares if s]
        r = rawimap.run_parallel('127.0.0.1', port, self.ca.cert, USER,
                                 fx.USERS[USER], cmds)
        if r['bytes'] != self.loaded.bytes:
            self.problem('raw fetch (%d conn) got %d bytes, corpus has %d'
                         % (nconn, r['bytes'], self.loaded.bytes))
        return r

    def raw_listing(self, port):
        cmds = [[b'EXAMINE ' + corpus.LISTING.encode(),
                 b'UID FETCH 1:* (UID RFC822.SIZE INTERNALDATE FLAGS MODSEQ)']]
        r = rawimap.run_parallel('127.0.0.1', port, self.ca.cert, USER,
                                 fx.USERS[USER], cmds)
        if r['fetches'] != self.loaded.listing:
            self.problem('raw listing: %d FETCH replies for %d messages'
                         % (r['fetches'], self.loaded.listing))
        return r

    def mbsync(self, port, dest):
        os.makedirs(dest)
        conf = os.path.join(dest + '.mbsyncrc')
        pw = fx.USERS[USER].replace('\\', '\\\\').replace('"', '\\"')
        with open(conf, 'w') as f:
            f.write(f'''FSync no

IMAPAccount bench
Host localhost
Port {port}
User {USER}
Pass "{pw}"
SSLType IMAPS
CertificateFile {self.ca.cert}
SystemCertificates no

IMAPStore bench-far
Account bench

MaildirStore bench-near
Path {dest}/
Inbox {dest}/INBOX
SubFolders Verbatim

Channel bench
Far :bench-far:
Near :bench-near:
Patterns * !{corpus.LISTING}
Sync Pull
Create Near
Expunge None
SyncState *
''')
        r = timed_cmd(['mbsync', '-q', '-c', conf, 'bench'],
                      timeout=self.args.phase_timeout * 3, label='mbsync')
        if r['rc'] != 0:
            self.problem('mbsync exited %s: %s' % (r['rc'], r['stderr']))
        return r

    # -- grep ---------------------------------------------------------------
    def grep(self, root, out, expect_rchar=None, timeout=None,
             label='grep'):
        r = timed_cmd(['grep', '-rl', '--line-buffered',
                       '--exclude-dir=' + corpus.LISTING,
                       corpus.MARKER, root], timeout=timeout, out=out,
                      expect_rchar=expect_rchar, label=label)
        with open(out, errors='replace') as f:
            text = f.read()
        if r['timed_out'] and not text.endswith('\n'):
            text = text[:text.rfind('\n') + 1]     # grep was cut off
        r['paths'] = [line for line in text.split('\n') if line.strip()]
        if r['timed_out'] and self.loaded.marker_set:
            # Time per message, not per byte, dominates when every file
            # costs a round trip: also extrapolate from the share of the
            # marker messages found (3 %, spread at random), and keep the
            # larger estimate.
            frac = len(r['paths']) / len(self.loaded.marker_set)
            r['progress_messages'] = frac
            if frac > 0:
                est = r['seconds'] / frac
                r['estimate'] = max(est, r.get('estimate') or 0)
        return r

    def check_grep_mount(self, r, root, what):
        """Compare the files grep found with the manifest."""
        found = set()
        bad = []
        for p in r['paths']:
            rel = os.path.relpath(p, root)
            d, name = os.path.split(rel)
            m = re.match(r'^(\d+)\.eml$', name)
            if not m:
                bad.append(rel)
                continue
            found.add((d, int(m.group(1))))
        want = self.loaded.marker_set
        r['matches_manifest'] = None
        if r.get('timed_out'):
            extra = found - want
            if extra or bad:
                self.problem('%s: files found that should not be: %s' % (
                    what, sorted(extra)[:5] + bad[:5]))
            return
        ok = found == want and not bad
        r['matches_manifest'] = ok
        if r['rc'] not in (0, 1):
            self.problem('%s: grep exited %d: %s' % (what, r['rc'],
                                                    r['stderr'][-500:]))
        if not ok:
            self.problem('%s: grep found %d files, manifest has %d; '
                         'missing %s, extra %s' % (
                             what, len(found), len(want),
                             sorted(want - found)[:5],
                             sorted(found - want)[:5] + bad[:5]))
        self.checks.append('%s: %d of %d marker messages found%s' % (
            what, len(found & want), len(want),
            '' if ok else ' (MISMATCH)'))

    # -- one latency --------------------------------------------------------
    def run_latency(self, rtt_ms):
        label = 'loopback' if rtt_ms == 0 else '%g ms RTT' % rtt_ms
        tag = '[%s] ' % label
        fig = self.figures.setdefault(label, {'rtt_ms': rtt_ms})
        P = lambda name, fn, *x, **k: self.phases.run(tag + name, fn, *x,
                                                      **k)
        port = self.dovecot.imaps_port
        proxy_entry = None
        if rtt_ms:
            proc, port = delayproxy.run_subprocess(
                ('127.0.0.1', self.dovecot.imaps_port), rtt_ms / 2.0)
            proxy_entry = on_cleanup(delayproxy.stop_subprocess, proc)
            fig['proxy_port'] = port
        try:
            self._run_latency(rtt_ms, label, fig, P, port)
        finally:
            if proxy_entry:
                cleanup_now(proxy_entry)

    def _grep_phase(self, P, mount, name, file_tag, work, expect_rchar, tmo,
                    label, what=None, settle=0):
        """One timed grep over `mount` with its trace and checks."""
        off = mount.trace.mark()
        g = P('imapfs ' + name, self.grep, mount.mountpoint,
              os.path.join(work, 'grep-%s.out' % file_tag), expect_rchar,
              tmo, what or name)
        if settle:
            time.sleep(settle)      # let trailing trace lines land
        g['trace'] = mount.trace.since(off)
        self.check_grep_mount(g, mount.mountpoint, '%s %s' % (label, name))
        g.pop('paths')
        return g

    def _run_latency(self, rtt_ms, label, fig, P, port):
        a = self.args
        tmo = a.phase_timeout
        work = os.path.join(self.workdir, 'lat%g' % rtt_ms)
        os.makedirs(work)

        # raw client, best of --baseline-runs
        def best(fn, *x):
            runs = [fn(*x) for _ in range(max(1, a.baseline_runs))]
            r = min(runs, key=lambda d: d['seconds'])
            r['runs'] = [d['seconds'] for d in runs]
            return r
        fig['raw_1conn'] = P('raw fetch, 1 connection', best,
                             self.raw_fetch, port, 1)
        fig['raw_nconn'] = P('raw fetch, %d connections' % a.connections,
                             best, self.raw_fetch, port, a.connections)
        if self.loaded.listing:
            fig['raw_listing'] = P('raw listing FETCH', best,
                                   self.raw_listing, port)
        for k in ('raw_1conn', 'raw_nconn', 'raw_listing'):
            if k in fig:
                log('    %s: %.2fs, %.1f MiB' % (k, fig[k]['seconds'],
                                                 fig[k]['bytes'] / 2**20))

        # mbsync + grep over its Maildir
        md = os.path.join(work, 'maildir')
        fig['mbsync'] = P('mbsync pull', self.mbsync, port, md)
        g1 = P('grep Maildir (after pull)', self.grep, md,
               os.path.join(work, 'grep-md1.out'))
        g2 = None
        for i in range(max(1, a.baseline_runs)):
            g = P('grep Maildir (again)', self.grep, md,
                  os.path.join(work, 'grep-md2.out'))
            if g2 is None or g['seconds'] < g2['seconds']:
                g2 = g
        for g in (g1, g2):
            if len(g['paths']) != len(self.loaded.marker_set):
                self.problem('%s: grep over the mbsync Maildir found %d '
                             'files, manifest has %d' % (
                                 label, len(g['paths']),
                                 len(self.loaded.marker_set)))
            g.pop('paths')
        fig['maildir_grep1'] = g1
        fig['maildir_grep2'] = g2
        expect_rchar = g2['rchar'] or None
        shutil.rmtree(md, ignore_errors=True)

        # imapfs: cold grep, second grep, (unmount) remount grep
        cache = os.path.join(work, 'cache-a')
        ma = P('mount A (fresh cache_dir)', ImapfsMount(
            self, 'A-%s' % fig['rtt_ms'], port, cache).start)
        try:
            g = self._grep_phase(P, ma, 'cold grep', 'cold', work,
                                 expect_rchar, tmo, label)
            fig['cold_grep'] = g
            if not g['timed_out']:
                fig['second_grep'] = self._grep_phase(
                    P, ma, 'second grep', 'second', work, expect_rchar, tmo,
                    label, settle=0.2)
        finally:
            fig['hwm_A'] = P('unmount A', ma.stop)
        if fig['cold_grep']['timed_out']:
            log('  skipping the remount grep: the cold grep did not finish,'
                ' so the cache cannot hold the corpus')
            fig['remount_grep'] = None
            fig['remount_skipped'] = 'cold grep timed out'
            shutil.rmtree(cache, ignore_errors=True)
            return self._listing_phases(rtt_ms, label, fig, P, port, work)
        mb = P('mount B (same cache_dir)', ImapfsMount(
            self, 'B-%s' % fig['rtt_ms'], port, cache).start)
        try:
            fig['remount_grep'] = self._grep_phase(
                P, mb, 'grep after remount', 'remount', work, expect_rchar,
                tmo, label, what='remount grep')
        finally:
            P('unmount B', mb.stop)
        shutil.rmtree(cache, ignore_errors=True)
        self._listing_phases(rtt_ms, label, fig, P, port, work)

    def _listing_phases(self, rtt_ms, label, fig, P, port, work):
        """ls -l of the listing mailbox, rsync, peak RSS."""
        a = self.args
        tmo = a.phase_timeout
        mnt = os.path.join(self.workdir, 'mnt')
        do_rsync = rtt_ms in a.rsync_rtts
        if not self.loaded.listing and not do_rsync:
            return
        cache = os.path.join(work, 'cache-d')
        md_ = P('mount D (fresh cache_dir)', ImapfsMount(
            self, 'D-%s' % fig['rtt_ms'], port, cache).start)
        try:
            if self.loaded.listing:
                lsdir = os.path.join(mnt, corpus.LISTING)
                for which in ('cold', 'warm'):
                    off = md_.trace.mark()
                    out = os.path.join(work, 'ls-%s.out' % which)
                    r = P('imapfs ls -l %s' % which, timed_cmd,
                          ['ls', '-l', '--color=never', lsdir], tmo, out)
                    time.sleep(0.2)
                    r['trace'] = md_.trace.since(off)
                    with open(out, 'rb') as f:
                        r['lines'] = sum(1 for _ in f) - 1
                    if r['lines'] != self.loaded.listing:
                        self.problem('%s ls -l %s: %d entries, expected %d'
                                     % (label, which, r['lines'],
                                        self.loaded.listing))
                    if r['rc'] != 0:
                        self.problem('%s ls -l %s: exit %s: %s' % (
                            label, which, r['rc'], r['stderr'][-300:]))
                    fig['ls_' + which] = r
            if do_rsync:
                dest = os.path.join(work, 'rsync')
                r = P('imapfs rsync -a', timed_cmd,
                      ['rsync', '-a', '--exclude=/' + corpus.LISTING,
                       mnt + '/', dest + '/'], tmo * 2, None,
                      self.loaded.bytes, 'rsync')
                if r['rc'] != 0:
                    self.problem('%s rsync exited %s: %s' % (
                        label, r['rc'], r['stderr'][-500:]))
                else:
                    n = sum(len(fs) for _, _, fs in os.walk(dest))
                    if n != self.loaded.messages:
                        self.problem('%s rsync copied %d files, corpus has '
                                     '%d' % (label, n, self.loaded.messages))
                fig['rsync'] = r
                shutil.rmtree(dest, ignore_errors=True)
        finally:
            hwm = P('unmount D', md_.stop)
        fig['hwm_D'] = hwm
        fig['rss_complete'] = bool(self.loaded.listing and do_rsync and
                                   not fig['rsync']['timed_out'])
        shutil.rmtree(cache, ignore_errors=True)

    def local_ls_reference(self):
        """ls -l of the server's own Listing directory (100k local files):
        what listing that many entries costs without any file system in
        between (for reading the warm ls -l figure)."""
        dirs = corpus.mailbox_dirs(self.dovecot, USER)
        d = os.path.join(dirs[corpus.LISTING], 'cur')
        timed_cmd(['ls', '-l', '--color=never', d])
        return timed_cmd(['ls', '-l', '--color=never', d])

    def run(self):
        self.setup()
        if self.loaded.listing:
            self.local_ls = self.phases.run('local ls -l reference',
                                            self.local_ls_reference)
        else:
            self.local_ls = None
        for rtt in self.args.rtts:
            self.run_latency(rtt)


# ---------------------------------------------------------------------------
# Report

def _s(x):
    if x is None:
        return '-'
    return '%.2fs' % x if x < 100 else '%.0fs' % x


def build_rows(bench):
    """[(measure, latency, imapfs, baseline, ratio, target, verdict)]."""
    rows = []
    a = bench.args
    for label, fig in bench.figures.items():
        rtt = fig['rtt_ms']

        def sec(d):
            return d['seconds'] if d else None

        def imapfs_val(d):
            if d is None:
                return None, ('skipped' if fig.get('remount_skipped')
                              else 'not run')
            if d.get('timed_out'):
                est = d.get('estimate')
                return None, '>%s%s' % (_s(d['seconds']),
                                        ' (~%s est.)' % _s(est)
                                        if est else '')
            return d['seconds'], _s(d['seconds'])

        def ratio_row(measure, d, base, base_desc, limit, strict=False):
            v, vtext = imapfs_val(d)
            b = sec(base)
            if d is None or b is None:
                rows.append((measure, label, vtext, base_desc + ' ' + _s(b),
                             '-', _target(limit, strict), 'n/a'))
                return
            if v is None:
                lo = d['seconds'] / b
                est = d.get('estimate')
                rtext = '>%.2fx' % lo + (' (~%.1fx)' % (est / b)
                                         if est else '')
                verdict = 'MISS'
            else:
                r = v / b
                rtext = '%.2fx' % r
                verdict = 'PASS' if (r < limit if strict else r <= limit) \
                    else 'MISS'
            if limit == float('inf'):
                verdict = 'info'
            if d.get('matches_manifest') is False:
                verdict = 'WRONG'
            rows.append((measure, label, vtext, '%s %s' % (base_desc, _s(b)),
                         rtext, _target(limit, strict), verdict))

        def count_row(measure, d, key, what):
            if d is None or not d.get('trace'):
                rows.append((measure, label, 'not run', '-', '-', '0', 'n/a'))
                return
            n = d['trace'][key]
            rows.append((measure, label, '%d %s' % (n, what), '-', '-',
                         '0', 'PASS' if n == 0 else 'MISS'))

        cold = fig.get('cold_grep')
        raw_n = fig.get('raw_nconn')
        if rtt == 0:
            ratio_row('cold full-mount grep', cold, raw_n,
                      'raw %d-conn fetch' % a.connections,
                      a.target_cold_loopback)
        else:
            # "the raw pipelined fetch": the faster of 1 and N connections
            cands = [(fig.get('raw_1conn'), 1), (raw_n, a.connections)]
            cands = [c for c in cands if c[0]]
            base, n = min(cands, key=lambda c: c[0]['seconds']) \
                if cands else (None, 0)
            ratio_row('cold full-mount grep', cold, base,
                      'raw %d-conn fetch' % n, a.target_cold_latency)
        mb = fig.get('mbsync')
        mbg = None
        if mb and fig.get('maildir_grep1'):
            mbg = {'seconds': mb['seconds'] +
                   fig['maildir_grep1']['seconds']}
        ratio_row('cold grep vs mbsync pull + grep', cold, mbg,
                  'mbsync+grep', 1.0, strict=True)
        second = fig.get('second_grep')
        count_row('second grep, same mount: commands', second, 'commands',
                  'cmds')
        ratio_row('second grep, same mount', second,
                  fig.get('maildir_grep2'), 'Maildir grep', 1.2)
        rem = fig.get('remount_grep')
        count_row('grep after remount: body FETCHes', rem, 'body_fetches',
                  'FETCH')
        ratio_row('grep after remount (disk cache)', rem,
                  fig.get('maildir_grep2'), 'Maildir grep', 2.0)
        if bench.loaded.listing:
            n = bench.loaded.listing
            ratio_row('ls -l %dk mailbox, cold' % (n // 1000),
                      fig.get('ls_cold'), fig.get('raw_listing'),
                      'raw listing', 3.0)
            w = fig.get('ls_warm')
            if w:
                v, vtext = imapfs_val(w)
                ok = v is not None and v <= a.target_ls_warm
                rows.append(('ls -l %dk mailbox, warm' % (n // 1000), label,
                             vtext, 'local ls -l %s' % _s(
                                 bench.local_ls['seconds']
                                 if bench.local_ls else None), '-',
                             '<= %.1fs' % a.target_ls_warm,
                             'PASS' if ok else 'MISS'))
            count_row('ls -l warm: commands', w, 'commands', 'cmds')
        if fig.get('rsync'):
            hwm = fig.get('hwm_D')
            complete = fig.get('rss_complete')
            limit = a.target_rss_mb * MB
            rows.append(('daemon peak RSS, %s' % (
                'listing + whole corpus read' if complete
                else 'listing only (rsync not run)'),
                label, '%.0f MB' % (hwm / MB) if hwm else '?', '-', '-',
                '<= %d MB' % a.target_rss_mb,
                ('PASS' if hwm and hwm <= limit else 'MISS')
                if complete else 'n/a'))
        if fig.get('rsync'):
            ratio_row('rsync -a (info)', fig['rsync'], raw_n,
                      'raw %d-conn fetch' % a.connections, float('inf'))
        r1 = fig.get('raw_1conn')
        if r1 and raw_n:
            rows.append(('raw fetch 1 conn (info)', label, '-',
                         _s(r1['seconds']), '-', '-', 'info'))
    return rows


def _target(limit, strict):
    if limit == float('inf'):
        return '-'
    return ('< %gx' if strict else '<= %gx') % limit


HEADERS = ('measure', 'latency', 'imapfs', 'baseline', 'ratio', 'target',
           'result')


def render_text(rows):
    widths = [max(len(str(r[i])) for r in rows + [HEADERS])
              for i in range(len(HEADERS))]
    lines = []
    fmt = '  '.join('%%-%ds' % w for w in widths)
    lines.append(fmt % HEADERS)
    lines.append('  '.join('-' * w for w in widths))
    for r in rows:
        lines.append(fmt % tuple(r))
    return '\n'.join(lines)


def render_markdown(rows):
    out = ['| ' + ' | '.join(HEADERS) + ' |',
           '|' + '|'.join(['---'] * len(HEADERS)) + '|']
    for r in rows:
        out.append('| ' + ' | '.join(str(x).replace('|', '\\|')
                                     for x in r) + ' |')
    return '\n'.join(out)


def report(bench, wall):
    a = bench.args
    rows = build_rows(bench)
    print()
    print('imapfs benchmark: %d messages (%.0f MiB) in %d mailboxes, '
          'listing mailbox %d messages; seed %d' % (
              bench.loaded.messages, bench.loaded.bytes / 2**20,
              len(bench.loaded.uids), bench.loaded.listing, a.seed))
    print('imapfs: %s (%s)' % (bench.imapfs, bench.imapfs_what))
    print()
    print(render_markdown(rows) if a.markdown else render_text(rows))
    print()
    print('raw baselines and figures (seconds):')
    for label, fig in bench.figures.items():
        parts = []
        for k in ('raw_1conn', 'raw_nconn', 'raw_listing', 'mbsync',
                  'maildir_grep1', 'maildir_grep2', 'cold_grep',
                  'second_grep', 'remount_grep', 'ls_cold', 'ls_warm',
                  'rsync'):
            d = fig.get(k)
            if d:
                parts.append('%s %s%s' % (k, _s(d['seconds']),
                                          '(timeout)' if d.get('timed_out')
                                          else ''))
        for k in ('hwm_A', 'hwm_D'):
            if fig.get(k):
                parts.append('%s %.0fMB' % (k, fig[k] / MB))
        print('  %s: %s' % (label, ', '.join(parts)))
        for k in ('cold_grep', 'second_grep', 'remount_grep', 'ls_cold',
                  'ls_warm'):
            d = fig.get(k)
            if d and d.get('trace'):
                print('    %s IMAP commands: %d %s' % (
                    k, d['trace']['commands'],
                    json.dumps(d['trace']['by_verb'], sort_keys=True)))
    if bench.checks:
        print()
        print('correctness:')
        for c in bench.checks:
            print('  ' + c)
    print()
    print('phase durations:')
    for name, dt in bench.phases.items:
        print('  %7.2fs  %s' % (dt, name))
    print('  %7.2fs  total' % wall)
    if bench.problems:
        print()
        print('problems:')
        for p in bench.problems:
            print('  ' + p)
    if a.json:
        data = {
            'date': datetime.datetime.now(datetime.timezone.utc).isoformat(),
            'imapfs': bench.imapfs, 'imapfs_build': bench.imapfs_what,
            'args': {k: v for k, v in vars(a).items()},
            'corpus': bench.loaded.as_dict(),
            'figures': bench.figures,
            'local_ls': bench.local_ls,
            'rows': [dict(zip(HEADERS, r)) for r in rows],
            'phases': bench.phases.items, 'total_seconds': wall,
            'problems': bench.problems, 'checks': bench.checks,
        }
        with open(a.json, 'w') as f:
            json.dump(data, f, indent=1, default=str)
        print('\nJSON written to %s' % a.json)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description='imapfs benchmark (see bench/README.md)')
    ap.add_argument('--messages', type=int,
                    help='corpus messages (default %d)' % DEFAULT_MESSAGES)
    ap.add_argument('--listing', type=int,
                    help='messages in the listing mailbox (default %d, '
                    '0: none)' % DEFAULT_LISTING)
    ap.add_argument('--scale', type=float, default=1.0,
                    help='multiply both default sizes (0.1: 1000/10000)')
    ap.add_argument('--seed', type=int, default=4711)
    ap.add_argument('--rtt', default='0,20',
                    help='round-trip times to run at, in ms, comma-'
                    'separated; 0 is direct loopback (default 0,20)')
    ap.add_argument('--rsync-at', default='0',
                    help='RTTs (ms) at which to run the rsync + peak RSS '
                    'phase (default 0; "" for none)')
    ap.add_argument('--connections', type=int, default=4,
                    help='connections of the parallel raw client (4)')
    ap.add_argument('--baseline-runs', type=int, default=2,
                    help='run each raw-client baseline this often and '
                    'keep the fastest (default 2)')
    ap.add_argument('--phase-timeout', type=float, default=150,
                    help='stop an imapfs grep or ls that runs longer, '
                    'seconds (rsync gets twice this); the figure is then '
                    'a lower bound with an estimate (default 150)')
    ap.add_argument('--imapfs', help='use this binary, do not build')
    ap.add_argument('--source', default='worktree',
                    help='"worktree": build the checkout into build-bench/ '
                    '(default); or a git revision (HEAD, a commit, a tag): '
                    'export it with git archive and build it under %s'
                    % STATE_DIR)
    ap.add_argument('--build-dir')
    ap.add_argument('--build-retries', type=int, default=2)
    ap.add_argument('--build-retry-wait', type=int, default=60)
    ap.add_argument('-o', '--imapfs-opt', action='append', default=[],
                    help='extra imapfs -o option (repeatable), e.g. '
                    'cache=disk or connections=8')
    ap.add_argument('--no-trace', action='store_true',
                    help='mount with -f instead of -d: no IMAP trace, so no '
                    'command counts (to see what tracing costs)')
    ap.add_argument('--workdir', help='scratch directory, kept afterwards '
                    '(default: a new one under %s, removed at the end)'
                    % STATE_DIR)
    ap.add_argument('--keep', action='store_true',
                    help='keep the scratch directory (mount traces)')
    ap.add_argument('--json', help='write every figure to this file')
    ap.add_argument('--markdown', action='store_true',
                    help='print the table as Markdown')
    ap.add_argument('--target-cold-loopback', type=float, default=1.5)
    ap.add_argument('--target-cold-latency', type=float, default=1.25)
    ap.add_argument('--target-ls-warm', type=float, default=0.3)
    ap.add_argument('--target-rss-mb', type=int, default=150)
    a = ap.parse_args(argv)
    if a.messages is None:
        a.messages = max(10, int(DEFAULT_MESSAGES * a.scale))
    if a.listing is None:
        a.listing = int(DEFAULT_LISTING * a.scale)
    a.rtts = [float(x) for x in a.rtt.split(',') if x.strip()]
    a.rsync_rtts = [float(x) for x in a.rsync_at.split(',') if x.strip()]
    return a


def main(argv=None):
    a = parse_args(argv)
    if os.geteuid() != 0:
        sys.exit('run as root (FUSE mounts, a private Dovecot)')
    for tool in ('mbsync', 'rsync', 'fusermount3', 'doveadm', 'meson'):
        if not shutil.which(tool):
            sys.exit('%s is missing' % tool)
    # ^C must clean up even when started with SIGINT ignored (`cmd &`)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    atexit.register(cleanup_all)
    bench = Bench(a)
    t0 = time.monotonic()
    status = 0
    try:
        bench.run()
    except KeyboardInterrupt:
        log('interrupted; cleaning up')
        cleanup_all()
        return 130
    except Exception:
        import traceback
        text = traceback.format_exc()
        log(text)
        bench.problem('benchmark aborted: ' + text.strip().splitlines()[-1])
        status = 1
    finally:
        cleanup_all()
    if bench.loaded is not None:
        report(bench, time.monotonic() - t0)
    return status


if __name__ == '__main__':
    sys.exit(main())
