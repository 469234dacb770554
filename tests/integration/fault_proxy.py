# SPDX-License-Identifier: GPL-2.0-or-later
"""A fault-injecting TCP proxy on 127.0.0.1, put between imapfs and the
test Dovecot to show what a bad network does to a mount.

    proxy = FaultProxy(dovecot.imap_port).start()
    url = dovecot.url('imap', port=proxy.port)
    proxy.set_delay(up=0.03, down=0.03)   # latency per chunk, each way
    proxy.drop_every(2 << 20, 3 << 20)    # cut a connection every 2-3 MB
    proxy.drop_after(100000)              # once, 100,000 bytes from now
    proxy.truncate(5000, after=rb'BODY\\[\\] \\{\\d+\\}\\r\\n')
    proxy.stall(); ...; proxy.resume()    # black hole, sockets kept open
    proxy.clear()                         # plain forwarding again
    proxy.stop()

Faults (any may be combined; each applies from the moment it is set):
  delay     every chunk read from one side is written to the other
            `up` (client -> server) or `down` seconds after it arrived.
            Chunks are queued, not slept on in turn: latency is added,
            throughput kept (the idea of bench/delayproxy.py).
  drop      counted on the server -> client bytes of all connections
            together: the connection that carries the byte at the mark
            gets every byte up to the mark, then both its sides are shut
            down (the client sees its reply end mid-stream). One-shot
            (drop_after) or again and again (drop_every), each interval
            drawn from [lo, hi] by a seeded generator.
  truncate  per connection: only `nbytes` of the server's stream reach
            the client, counted from the start of a connection accepted
            later (after=None) or from the end of the first match of the
            regex `after` in the server stream of any connection; then
            the connection is closed. `times` connections are cut so.
  stall     nothing is forwarded any way, on any connection old or new,
            but every socket stays open and new ones are accepted: the
            server looks alive and silent. What arrived meanwhile is held
            (up to a bound per direction, then the proxy stops reading)
            and delivered in order after resume().

Counters (read them under no lock; they only grow): accepted
(connections), bytes_up / bytes_down (forwarded), drops, truncations;
`active` is the number of connections open now. stats() returns them.

Threads: one accept loop, and per connection a reader and a writer for
each direction; all are owned by this object and joined by stop(). The
proxy starts no process and closes only the sockets it made.
"""

import collections
import random
import re
import socket
import threading
import time

import imapfs_fixtures as F

CHUNK = 65536
# Bytes one direction may hold (delayed or stalled) before its reader
# stops reading, so that the sender feels TCP's back pressure.
HIGH_WATER = 4 * 1024 * 1024

_EOF = object()     # queue markers: end of the stream ...
_DROP = 'drop'      # ... or a cut, counted as a drop or a truncation
_TRUNCATE = 'truncate'


class _Pipe:
    """One direction of one connection: src -> queue -> dst."""

    def __init__(self, src, dst, up):
        self.src = src
        self.dst = dst
        self.up = up
        self.queue = collections.deque()    # (due time, bytes or marker)
        self.queued = 0                     # bytes in the queue


class _Conn:
    def __init__(self, client, server, trunc_left=None):
        self.client = client
        self.server = server
        self.up = _Pipe(client, server, True)
        self.down = _Pipe(server, client, False)
        self.dead = False           # cut: forward nothing more
        self.threads_left = 4
        self.trunc_left = trunc_left    # server bytes until truncation
        self.down_tail = b''        # end of the server stream, for regexes

    def shutdown(self):
        for s in (self.client, self.server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class FaultProxy:
    def __init__(self, target_port, target_host='127.0.0.1'):
        self.target = (target_host, target_port)
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.conns = []             # open connections; protected by lock
        self.threads = []           # readers and writers
        self.acceptor = None
        self.listener = None
        self.port = None
        self._stopping = False
        # counters, written under lock
        self.accepted = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.drops = 0
        self.truncations = 0
        # faults, protected by lock
        self._delay = {True: 0.0, False: 0.0}   # by direction (up?)
        self._stalled = False
        self._admitted = 0          # server bytes let through, all conns
        self._next_drop = None      # drop when _admitted reaches this
        self._drop_range = None     # (lo, hi) for drop_every
        self._rng = random.Random(0)
        self._trunc = None          # (nbytes, regex or None)
        self._trunc_times = 0

    # -- control -----------------------------------------------------------
    def start(self):
        self.listener = F.local_listener()
        self.port = self.listener.getsockname()[1]
        self.acceptor = threading.Thread(target=self._accept_loop,
                                         daemon=True, name='fault-accept')
        self.acceptor.start()
        return self

    def set_delay(self, up=0.0, down=0.0):
        """Latency in seconds for chunks arriving from now on."""
        with self.lock:
            self._delay = {True: up, False: down}

    def drop_after(self, nbytes):
        """Cut the connection carrying the server's `nbytes`-th byte from
        now (all connections counted together); once."""
        with self.lock:
            self._drop_range = None
            self._next_drop = self._admitted + nbytes

    def drop_every(self, lo, hi=None, seed=0):
        """Cut a connection after every lo..hi server bytes (drawn with
        random.Random(seed)), for as long as the proxy runs."""
        with self.lock:
            self._rng = random.Random(seed)
            self._drop_range = (lo, hi or lo)
            self._next_drop = self._admitted + self._rng.randint(lo, hi or lo)

    def truncate(self, nbytes, after=None, times=1):
        """Close `times` connections once `nbytes` of their server stream
        got through, counted from their start (after=None: connections
        accepted from now on) or from the end of a match of the bytes
        regex `after`."""
        with self.lock:
            self._trunc = (nbytes, re.compile(after) if after else None)
            self._trunc_times = times

    def stall(self):
        """Forward nothing until resume(); keep every socket open."""
        with self.lock:
            self._stalled = True

    def resume(self):
        with self.cond:
            self._stalled = False
            self.cond.notify_all()

    def clear(self):
        """No fault any more: no delay, drop, truncation or stall."""
        with self.cond:
            self._delay = {True: 0.0, False: 0.0}
            self._next_drop = self._drop_range = self._trunc = None
            self._stalled = False
            self.cond.notify_all()

    @property
    def active(self):
        with self.lock:
            return len(self.conns)

    def stats(self):
        with self.lock:
            return {k: getattr(self, k) for k in (
                'accepted', 'bytes_up', 'bytes_down', 'drops',
                'truncations')}

    def stop(self):
        with self.cond:
            self._stopping = True
            for c in self.conns:
                c.dead = True
                c.shutdown()
            self.cond.notify_all()
        if self.acceptor:
            # It sees _stopping within its accept timeout; after it,
            # nobody starts threads any more.
            self.acceptor.join(timeout=10)
        if self.listener:
            self.listener.close()
        for t in self.threads:
            t.join(timeout=10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- connections -------------------------------------------------------
    def _accept_loop(self):
        for client in F.accept_until(self.listener, lambda: self._stopping):
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()      # as if refused: the server is down
                continue
            server.settimeout(None)
            with self.lock:
                if self._stopping:
                    client.close()
                    server.close()
                    return
                conn = _Conn(client, server, self._new_trunc_left())
                self.conns.append(conn)
                self.accepted += 1
            for pipe in (conn.up, conn.down):
                for step in (self._read_once, self._write_once):
                    t = threading.Thread(target=self._pump, daemon=True,
                                         args=(conn, pipe, step),
                                         name='fault-pump')
                    self.threads = [x for x in self.threads
                                    if x.is_alive()] + [t]
                    t.start()

    def _pump(self, conn, pipe, step):
        """Runs step(conn, pipe) until it returns FALSE."""
        try:
            while step(conn, pipe):
                pass
        finally:
            self._thread_done(conn)

    def _new_trunc_left(self):
        """A new connection's truncation budget. Called locked."""
        if self._trunc and self._trunc[1] is None and self._trunc_times:
            self._trunc_times -= 1
            return self._trunc[0]
        return None

    def _thread_done(self, conn):
        with self.lock:
            conn.threads_left -= 1
            if conn.threads_left:
                return
            self.conns.remove(conn)
        conn.client.close()
        conn.server.close()

    def _cut(self, conn, kind):
        with self.cond:
            if kind == _DROP:
                self.drops += 1
            else:
                self.truncations += 1
            conn.dead = True
            conn.shutdown()
            self.cond.notify_all()

    # -- reading: where faults are decided ---------------------------------
    def _read_once(self, conn, pipe):
        """Reads and queues one chunk; FALSE when this direction is over."""
        try:
            data = pipe.src.recv(CHUNK)
        except OSError:
            data = b''
        with self.cond:
            if conn.dead or self._stopping:
                return False
            if not data:
                self._queue(pipe, _EOF)
                return False
            more = self._admit(conn, pipe, data)
            while (more and pipe.queued > HIGH_WATER and not conn.dead
                   and not self._stopping):
                self.cond.wait()
            return more

    def _queue(self, pipe, item):
        """Queues bytes or a marker, due after this direction's delay.
        Called locked."""
        pipe.queue.append((time.monotonic() + self._delay[pipe.up], item))
        if isinstance(item, bytes):
            pipe.queued += len(item)
        self.cond.notify_all()

    def _admit(self, conn, pipe, data):
        """Queues what of `data` goes through, and a cut if one falls in
        it; FALSE after a cut. Called locked."""
        if pipe.up:
            self._queue(pipe, data)
            return True
        self._match_truncation(conn, data)
        at, kind = len(data) + 1, None
        if conn.trunc_left is not None:
            at, kind = conn.trunc_left, _TRUNCATE
        if self._next_drop is not None:
            room = max(self._next_drop - self._admitted, 0)
            if room < at:
                at, kind = room, _DROP
        if at > len(data):
            self._let_through(conn, pipe, data)
            return True
        self._let_through(conn, pipe, data[:at])
        if kind == _DROP:
            self._next_drop = (
                self._next_drop + self._rng.randint(*self._drop_range)
                if self._drop_range else None)
        self._queue(pipe, kind)
        return False

    def _let_through(self, conn, pipe, data):
        self._admitted += len(data)
        if conn.trunc_left is not None:
            conn.trunc_left -= len(data)
        if data:
            self._queue(pipe, data)

    def _match_truncation(self, conn, data):
        """Starts the truncation budget of `conn` at the end of a match of
        the truncation regex in its server stream. Called locked."""
        if not self._trunc or self._trunc[1] is None:
            return
        old = len(conn.down_tail)
        buf = conn.down_tail + data
        conn.down_tail = buf[-512:]
        if conn.trunc_left is not None or not self._trunc_times:
            return
        m = self._trunc[1].search(buf)
        if m and m.end() > old:
            self._trunc_times -= 1
            # Counted from the start of `data`, as _admit() does.
            conn.trunc_left = self._trunc[0] + m.end() - old

    # -- writing: delay and stall ------------------------------------------
    def _write_once(self, conn, pipe):
        item = self._next_item(conn, pipe)
        if item is None:
            return False
        if item is _EOF:
            try:
                pipe.dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            return False
        if not isinstance(item, bytes):
            self._cut(conn, item)
            return False
        try:
            pipe.dst.sendall(item)
        except OSError:
            with self.cond:
                conn.dead = True
                conn.shutdown()
                self.cond.notify_all()
            return False
        with self.lock:
            if pipe.up:
                self.bytes_up += len(item)
            else:
                self.bytes_down += len(item)
        return True

    def _next_item(self, conn, pipe):
        """Waits until the head of the queue is due and nothing stalls;
        pops it. None when the connection or the proxy ends."""
        with self.cond:
            while True:
                if conn.dead or self._stopping:
                    return None
                wait = None
                if pipe.queue and not self._stalled:
                    wait = pipe.queue[0][0] - time.monotonic()
                    if wait <= 0:
                        _, item = pipe.queue.popleft()
                        if isinstance(item, bytes):
                            pipe.queued -= len(item)
                            self.cond.notify_all()
                        return item
                self.cond.wait(wait)
