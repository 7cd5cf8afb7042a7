"""A TCP forwarder a test controls, to take a real server away from chain429 and give it back.

    with TcpProxy(("127.0.0.1", 5432)) as proxy:   # listens on 127.0.0.1:<proxy.port>
        proxy.cut()         # every open connection dies, new ones are refused
        proxy.restore()     # accepting again, on the same port
        proxy.cut_after(b"COMMIT")  # let the next COMMIT through, then kill its
                                    # connection before the answer comes back

The shared PostgreSQL is never touched: only the proxy's own sockets close.
One thread accepts, two per connection pump bytes; everything is a daemon and
`close()` ends it all.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Self

_CHUNK = 65536
_COMMIT_GRACE_S = 0.3  # time the server gets to act on a forwarded COMMIT before the cut


class _Pair:
    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client, self.server = client, server
        self.mute = False  # the server's answers are swallowed (the cut is coming)

    def close(self) -> None:
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class TcpProxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._pairs: set[_Pair] = set()
        self._listener: socket.socket | None = None
        self._trigger: bytes | None = None
        self.port = 0
        self.connections = 0  # accepted so far
        self.triggered = threading.Event()

    def __enter__(self) -> Self:
        self.restore()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ control

    def restore(self) -> None:
        """Listen (again, on the same port once one was picked) and forward."""
        with self._lock:
            if self._listener is not None:
                return
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            sock.listen(64)
            self.port = sock.getsockname()[1]
            self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def cut(self) -> None:
        """Kill every connection and refuse new ones (nothing listens) until `restore`."""
        with self._lock:
            listener, self._listener = self._listener, None
            pairs, self._pairs = self._pairs, set()
        if listener is not None:
            listener.close()
        for pair in pairs:
            pair.close()

    def cut_after(self, marker: bytes) -> None:
        """The next client message holding `marker` reaches the server; its answer does not:
        that connection dies a moment later (the server has acted on it by then)."""
        self.triggered.clear()
        self._trigger = marker

    def close(self) -> None:
        self.cut()

    # ------------------------------------------------------------ forwarding

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut or closed
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            pair = _Pair(client, server)
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    pair.close()
                    return
                self._pairs.add(pair)
                self.connections += 1
            threading.Thread(target=self._pump, args=(pair, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(pair, False), daemon=True).start()

    def _pump(self, pair: _Pair, upstream: bool) -> None:
        source, sink = (pair.client, pair.server) if upstream else (pair.server, pair.client)
        try:
            while data := source.recv(_CHUNK):
                marker = self._trigger
                if upstream and marker is not None and marker in data:
                    self._trigger = None
                    pair.mute = True
                    sink.sendall(data)
                    time.sleep(_COMMIT_GRACE_S)
                    self._drop(pair)
                    self.triggered.set()
                    return
                if not upstream and pair.mute:
                    continue
                sink.sendall(data)
        except OSError:
            pass
        self._drop(pair)

    def _drop(self, pair: _Pair) -> None:
        with self._lock:
            self._pairs.discard(pair)
        pair.close()
