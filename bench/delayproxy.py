#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""A TCP proxy that adds a fixed one-way delay, for latency benchmarks.

Every chunk read from one side is stamped with its arrival time and
written to the other side at arrival + DELAY.  Chunks are queued, not
slept on one after another, so the proxy adds latency but keeps the
throughput: a round trip through it takes 2 * DELAY longer, a bulk
transfer only DELAY longer.  It forwards bytes and nothing else, so TLS
passes through untouched.  Half-closes (EOF one way) are forwarded after
the data queued before them.

Standalone:
    bench/delayproxy.py --target 127.0.0.1:993 --delay-ms 10 \
        [--listen 127.0.0.1:0] [--ready-file FILE]
prints "listening on 127.0.0.1:PORT" (and writes PORT to FILE) once it
accepts connections; SIGTERM or SIGINT close everything and exit 0.

Importable:
    with DelayProxy(('127.0.0.1', 993), delay=0.010) as p:   # a thread
        connect to ('127.0.0.1', p.port)
"""

import argparse
import asyncio
import collections
import contextlib
import os
import signal
import sys
import threading

# Bytes one direction may hold (queued for delay + in the socket buffer)
# before the proxy stops reading from the sender.  Must exceed the
# bandwidth-delay product (1 GB/s * 10 ms = 10 MB) not to cap throughput.
HIGH_WATER = 64 * 1024 * 1024
LOW_WATER = HIGH_WATER // 2


class _Direction:
    """One way of one connection: src transport -> dst transport."""

    __slots__ = ('loop', 'delay', 'src', 'dst', 'queue', 'queued', 'timer',
                 'eof', 'dst_paused', 'src_paused', 'closed', 'on_done',
                 'done')

    def __init__(self, loop, delay, on_done):
        self.loop = loop
        self.delay = delay
        self.src = None
        self.dst = None
        self.queue = collections.deque()   # (deliver_at, bytes or None=EOF)
        self.queued = 0
        self.timer = None
        self.eof = False
        self.dst_paused = False
        self.src_paused = False
        self.closed = False
        self.on_done = on_done
        self.done = False

    def push(self, data):
        """Data (or None: end of stream) arrived from src just now."""
        if self.eof or self.closed:
            return
        self.queue.append((self.loop.time() + self.delay, data))
        if data is None:
            self.eof = True
        else:
            self.queued += len(data)
        self._schedule()
        self._throttle()

    def _schedule(self):
        if (self.timer is None and self.queue and not self.dst_paused
                and self.dst is not None):
            self.timer = self.loop.call_at(self.queue[0][0], self._flush)

    def _flush(self):
        self.timer = None
        if self.closed or self.dst is None:
            return
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now and not self.dst_paused:
            _, data = self.queue.popleft()
            if data is None:
                if not self.dst.is_closing() and self.dst.can_write_eof():
                    try:
                        self.dst.write_eof()
                    except OSError:
                        pass
                self.done = True
                self.on_done()
                return
            self.queued -= len(data)
            if not self.dst.is_closing():
                self.dst.write(data)
        self._schedule()
        self._throttle()

    def _throttle(self):
        if self.src is None or self.src.is_closing():
            return
        backlog = self.queued + (self.dst.get_write_buffer_size()
                                 if self.dst is not None else 0)
        if not self.src_paused and backlog > HIGH_WATER:
            self.src_paused = True
            self.src.pause_reading()
        elif self.src_paused and backlog < LOW_WATER:
            self.src_paused = False
            self.src.resume_reading()

    # flow control from dst's socket buffer
    def pause(self):
        self.dst_paused = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def resume(self):
        self.dst_paused = False
        self._flush()

    def close(self):
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()


class _Side(asyncio.Protocol):
    """The protocol of one socket; `out` carries what it receives,
    `back` what is sent to it."""

    def __init__(self, conn, out, back, is_client):
        self.conn = conn
        self.out = out
        self.back = back
        self.is_client = is_client
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.out.src = transport
        self.back.dst = transport
        if self.is_client:
            self.conn.client_made(transport)

    def data_received(self, data):
        self.out.push(data)

    def eof_received(self):
        self.out.push(None)
        return True         # keep our write half open for the other way

    def connection_lost(self, exc):
        # Reset or closed: what the peer sent is over; what was queued
        # for it can no longer be delivered.
        self.out.push(None)
        self.back.done = True
        self.back.close()
        self.conn.check_done()

    def pause_writing(self):
        self.back.pause()

    def resume_writing(self):
        self.back.resume()


class _Connection:
    def __init__(self, proxy):
        self.proxy = proxy
        loop = proxy.loop
        self.up = _Direction(loop, proxy.delay, self.check_done)
        self.down = _Direction(loop, proxy.delay, self.check_done)
        self.client = _Side(self, self.up, self.down, True)
        self.server = None
        self.finished = False

    def client_made(self, transport):
        transport.pause_reading()       # until the server side is up
        self.proxy.loop.create_task(self._connect(transport))

    async def _connect(self, client_transport):
        try:
            await self.proxy.loop.create_connection(
                lambda: _Side(self, self.down, self.up, False),
                *self.proxy.target)
        except OSError:
            self.close()
            return
        if self.finished:
            self.close()
            return
        client_transport.resume_reading()
        self.up._schedule()     # what the client sent meanwhile

    def check_done(self):
        if self.up.done and self.down.done:
            self.close()

    def close(self):
        if self.finished:
            return
        self.finished = True
        for d in (self.up, self.down):
            d.close()
        for t in (self.up.src, self.down.src):
            if t is not None:
                t.close()
        self.proxy.conns.discard(self)


class DelayProxyServer:
    """The asyncio part; runs in whatever loop calls start()."""

    def __init__(self, target, delay, listen=('127.0.0.1', 0)):
        self.target = target
        self.delay = delay
        self.listen = listen
        self.loop = None
        self.server = None
        self.conns = set()
        self.port = None
        self.accepted = 0

    async def start(self):
        self.loop = asyncio.get_running_loop()
        self.server = await self.loop.create_server(
            self._accept, self.listen[0], self.listen[1], reuse_address=True,
            backlog=256)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def _accept(self):
        conn = _Connection(self)
        self.conns.add(conn)
        self.accepted += 1
        return conn.client

    async def close(self):
        if self.server is not None:
            self.server.close()
        for c in list(self.conns):
            c.close()
        if self.server is not None:
            await self.server.wait_closed()
        await asyncio.sleep(0)


class DelayProxy:
    """A DelayProxyServer in a thread of its own (for use from Python).

    For measurements prefer the standalone process (run_subprocess):
    a thread competes for the GIL with the code being measured."""

    def __init__(self, target, delay, listen=('127.0.0.1', 0)):
        self.srv = DelayProxyServer(target, delay, listen)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever,
                                       daemon=True, name='delayproxy')
        self.port = None

    def start(self):
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.srv.start(), self.loop).result()
        self.port = self.srv.port
        return self

    def stop(self):
        if not self.thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.srv.close(),
                                         self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


@contextlib.contextmanager
def imaps_url(dovecot, rtt_ms):
    """The imaps URL of a fixtures Dovecot, through a DelayProxy adding
    @rtt_ms of round-trip time (none for 0); the proxy stops on exit."""
    if not rtt_ms:
        yield dovecot.url('imaps')
        return
    with DelayProxy(('127.0.0.1', dovecot.imaps_port),
                    delay=rtt_ms / 2000) as proxy:
        yield dovecot.url('imaps', port=proxy.port)


def run_subprocess(target, delay_ms, timeout=10):
    """Start this file as a child process; returns (Popen, port).

    The child runs in a session of its own (a ^C reaches only the caller,
    which stops it by pid); stop it with stop_subprocess()."""
    import subprocess
    import tempfile
    import time
    fd, ready = tempfile.mkstemp(prefix='delayproxy-port-')
    os.close(fd)
    os.unlink(ready)
    p = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__),
         '--target', '%s:%d' % target, '--delay-ms', str(delay_ms),
         '--ready-file', ready, '--quiet'],
        stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError('delayproxy exited %d' % p.returncode)
        try:
            with open(ready) as f:
                text = f.read()
            if text.endswith('\n'):
                os.unlink(ready)
                return p, int(text)
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    p.kill()
    p.wait()
    raise RuntimeError('delayproxy did not start')


def stop_subprocess(p, timeout=10):
    if p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout)
    except Exception:
        p.kill()
        p.wait()


def _hostport(s):
    host, _, port = s.rpartition(':')
    return (host or '127.0.0.1'), int(port)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--target', required=True, help='HOST:PORT to forward to')
    ap.add_argument('--listen', default='127.0.0.1:0',
                    help='HOST:PORT to listen on (default 127.0.0.1:0)')
    ap.add_argument('--delay-ms', type=float, default=10.0,
                    help='one-way delay in milliseconds (default 10, '
                    'i.e. 20 ms added round-trip time)')
    ap.add_argument('--ready-file',
                    help='write the port here once listening')
    ap.add_argument('--quiet', action='store_true')
    a = ap.parse_args(argv)

    async def serve():
        srv = await DelayProxyServer(_hostport(a.target), a.delay_ms / 1000.0,
                                     _hostport(a.listen)).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if not a.quiet:
            print('listening on %s:%d' % (srv.listen[0], srv.port),
                  flush=True)
        if a.ready_file:
            tmp = a.ready_file + '.tmp'
            with open(tmp, 'w') as f:
                f.write('%d\n' % srv.port)
            os.rename(tmp, a.ready_file)
        await stop.wait()
        await srv.close()

    asyncio.run(serve())
    return 0


if __name__ == '__main__':
    sys.exit(main())
