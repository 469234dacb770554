# SPDX-License-Identifier: GPL-2.0-or-later
"""A TCP proxy on 127.0.0.1 that can drop every connection at a chosen
moment, to test what imapfs does when a change is cut off half-way.

    proxy = CuttingProxy(target_port).start()
    proxy.arm(rb'UID MOVE ', after=4)       # cut 4 bytes into the command
    proxy.arm(rb'APPEND ', reply=True)     # cut instead of passing its reply
    ...
    proxy.stop()

The trigger is looked for in the client->server stream of each
connection. With `after=N` the proxy forwards N more bytes after the end
of the trigger, then shuts down every connection it carries (both sides);
the server sees the command cut short. With `reply=True` the whole command
reaches the server, but the server's tagged completion of that command is
not forwarded: every connection is shut down instead, so the server has
done the work and the client never learns it. A trigger fires once; new
connections made afterwards are passed through untouched.

Plain threads: one accept loop and two pumps per connection. Everything is
owned by this object and stopped by stop(); nothing is found by name.
"""

import re
import socket
import threading


class _Conn:
    def __init__(self, client, server):
        self.client = client
        self.server = server
        self.c2s_tail = b''     # the end of what the client sent so far
        self.s2c_tail = b''
        self.remaining = None   # bytes still to forward before the cut
        self.tag = None         # tag of the triggering command (reply mode)


class CuttingProxy:
    def __init__(self, target_port, target_host='127.0.0.1'):
        self.target = (target_host, target_port)
        self.lock = threading.Lock()
        self.conns = []             # protected by lock
        self.threads = []
        self.accepted = 0           # connections made through the proxy
        self.cuts = 0               # times every connection was dropped
        self.bytes_up = 0           # client -> server, in all; by lock
        self.bytes_down = 0         # server -> client
        self.fired = threading.Event()
        self._trigger = None
        self._after = None
        self._reply = False
        self._stopping = False
        self.listener = None
        self.port = None

    # -- control -----------------------------------------------------------
    def start(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, daemon=True,
                             name='proxy-accept')
        t.start()
        self.threads.append(t)
        return self

    def arm(self, trigger, after=None, reply=False):
        """Cut once `trigger` (a bytes regex) appears in a client stream:
        `after` bytes later, or (reply=True) when the server answers."""
        if (after is None) == (not reply):
            raise ValueError('give exactly one of after= and reply=True')
        with self.lock:
            self._trigger = re.compile(trigger)
            self._after = after
            self._reply = reply
            self.fired.clear()

    def cut(self):
        """Shut down every connection now (both directions, both sides)."""
        with self.lock:
            # Counted first: whoever the shutdown wakes sees the count.
            self.cuts += 1
            self._trigger = None
            self.fired.set()
            self._shutdown_locked()

    def stop(self):
        self._stopping = True
        with self.lock:
            self._shutdown_locked()
        if self.listener:
            self.listener.close()
        for t in self.threads:
            t.join(timeout=10)
        with self.lock:
            for c in self.conns:
                c.client.close()
                c.server.close()
            self.conns = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- internals -------------------------------------------------------
    def _shutdown_locked(self):
        for c in self.conns:
            for s in (c.client, c.server):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _accept_loop(self):
        while not self._stopping:
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            server.settimeout(None)
            conn = _Conn(client, server)
            with self.lock:
                if self._stopping:
                    client.close()
                    server.close()
                    return
                self.conns.append(conn)
                self.accepted += 1
            for src, dst, up in ((client, server, True),
                                 (server, client, False)):
                t = threading.Thread(target=self._pump,
                                     args=(conn, src, dst, up), daemon=True,
                                     name='proxy-pump')
                t.start()
                self.threads.append(t)

    def _pump(self, conn, src, dst, up):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b''
            if not data:
                break
            with self.lock:
                if up:
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
                fwd, cut = (self._client_data if up else
                            self._server_data)(conn, data)
            if fwd:
                try:
                    dst.sendall(fwd)
                except OSError:
                    break
            if cut:
                self.cut()
                break
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _client_data(self, conn, data):
        """(bytes to forward, cut now?) for client->server `data`."""
        if conn.remaining is not None:
            if len(data) >= conn.remaining:
                fwd = data[:conn.remaining]
                conn.remaining = None
                return fwd, True
            conn.remaining -= len(data)
            return data, False
        if self._trigger is None or conn.tag is not None:
            conn.c2s_tail = (conn.c2s_tail + data)[-4096:]
            return data, False
        old = len(conn.c2s_tail)
        buf = conn.c2s_tail + data
        m = self._trigger.search(buf)
        conn.c2s_tail = buf[-4096:]
        if not m or m.end() <= old:
            return data, False
        end_in_data = m.end() - old
        if self._reply:
            line_start = buf.rfind(b'\n', 0, m.start()) + 1
            conn.tag = buf[line_start:m.start()].split(b' ', 1)[0]
            conn.s2c_tail = b''
            return data, False
        cut_at = end_in_data + self._after
        if cut_at <= len(data):
            return data[:cut_at], True
        conn.remaining = cut_at - len(data)
        return data, False

    def _server_data(self, conn, data):
        if conn.tag is None or self._trigger is None:
            return data, False
        buf = conn.s2c_tail + data
        done = re.search(rb'(?:^|\n)' + re.escape(conn.tag) +
                         rb' (?:OK|NO|BAD)\b', buf)
        if done:
            # The command completed on the server: its answer is lost.
            return b'', True
        conn.s2c_tail = buf[-256:]
        return data, False
