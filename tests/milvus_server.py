"""A real Milvus server for the tests, reachable on 127.0.0.1 only.

The embedded Milvus 2.3.5 (PyPI ``milvus``) binds its ports on every interface. So it is started in
network and PID namespaces of its own (``unshare -rnpm --fork --kill-child --mount-proc``, no privileges needed
where user namespaces are allowed), where the only interface is a loopback nobody else can reach. Inside,
a Unix socket in the shared filesystem is forwarded to the server's port; outside, ``MilvusServer``
listens on 127.0.0.1 and pipes each connection to that socket.

Nothing outlives the session: the process inside the namespaces is its PID 1, so every process of the
server dies with it; it stops the server and exits when its stdin closes (the test process ended, however),
on SIGTERM, or after ``LIFETIME`` seconds; and ``stop`` closes that stdin, then kills ``unshare``
(whose ``--kill-child`` takes PID 1, and so the namespace, with it).

Run as ``python milvus_server.py --inner SOCKET BASE_DIR``: the part inside the namespaces.
"""
from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

NAMESPACES = ("-rnpm", "--fork", "--kill-child", "--mount-proc")
"""User (root inside), network, PID and mount namespaces, with /proc of its own (Milvus reads its memory use
there: without it, loading a sealed segment fails with "get memory failed when checkSegmentSize")."""
LIFETIME = 2 * 3600
"""Seconds after which the server stops whatever happens (a session never lasts that long)."""
START_TIMEOUT = 180.0
TUNING = {"proxy.timeTickInterval": 20, "queryCoord.checkInterval": 100, "queryCoord.distPullInterval": 100}
"""Time ticks every 20 ms instead of 200 (a Strong read waits for the next one: 0.4 s a read otherwise), and
loading checked every 100 ms instead of 1 s (3 s to load a new collection otherwise)."""


class MilvusUnavailable(Exception):
    """The server cannot be started here (package missing, namespaces not allowed...)."""


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            target.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, target):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _forward(listener: socket.socket, connect) -> None:
    """Accept on ``listener`` forever, piping each connection to a new ``connect()`` (threads)."""
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        try:
            upstream = connect()
        except OSError:
            client.close()
            continue
        for end in (client, upstream):  # gRPC's small frames: no Nagle delay (40 ms a request otherwise)
            if end.family != socket.AF_UNIX:
                end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(a, b), daemon=True).start()


# -- inside the namespaces ---------------------------------------------------------------------------------
def _loopback_up() -> None:
    """``ip link set lo up`` without the ``ip`` binary (SIOCGIFFLAGS / SIOCSIFFLAGS)."""
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as handle:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(handle, 0x8913, request))[1]
        fcntl.ioctl(handle, 0x8914, struct.pack("16sH22x", b"lo", flags | 0x1))


def inner(socket_path: str, base_dir: str) -> None:
    _loopback_up()
    from milvus import default_server

    stopping = threading.Event()

    def stop(*_args) -> None:
        if stopping.is_set():
            return
        stopping.set()
        try:
            default_server.stop()
        finally:
            os._exit(0)  # PID 1 of the namespace: every process left in it dies now

    signal.signal(signal.SIGTERM, stop)
    default_server.set_base_dir(base_dir)
    for key, value in TUNING.items():
        default_server.config.set(key, value)
    default_server.start()
    port = default_server.listen_port
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(socket_path)
    listener.listen(64)
    threading.Thread(target=_forward, args=(listener, lambda: socket.create_connection(("127.0.0.1", port))),
                     daemon=True).start()
    print("ready", port, flush=True)
    deadline = time.monotonic() + LIFETIME
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sys.stdin], [], [], 5.0)
        if readable and not sys.stdin.buffer.read1(4096):  # EOF: the test process has gone
            break
    stop()


# -- outside -----------------------------------------------------------------------------------------------
class MilvusServer:
    """One embedded Milvus behind a 127.0.0.1 listener: ``start()``, ``uri``, ``stop()``."""

    def __init__(self, base_dir: Path):
        self.base_dir = Path(base_dir)
        self.uri = ""
        self._process: subprocess.Popen | None = None
        self._listener: socket.socket | None = None
        self._socket_dir = ""

    def start(self) -> str:
        try:
            import milvus  # noqa: F401
            import pymilvus  # noqa: F401
        except Exception as exc:
            raise MilvusUnavailable(f"milvus/pymilvus not installed ({exc}); pip install -e '.[milvus,milvus-server]'")
        unshare = shutil.which("unshare")
        if unshare is None:
            raise MilvusUnavailable("no unshare binary: cannot start Milvus in a namespace of its own")
        probe = subprocess.run([unshare, *NAMESPACES, "true"], capture_output=True, text=True)
        if probe.returncode != 0:
            raise MilvusUnavailable(f"unshare {' '.join(NAMESPACES)} is not allowed here ({probe.stderr.strip()[:200]})")
        self._socket_dir = tempfile.mkdtemp(prefix="mmsearch-milvus-")  # short: a Unix socket path is < 108 bytes
        socket_path = os.path.join(self._socket_dir, "milvus.sock")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [unshare, *NAMESPACES, sys.executable, os.path.abspath(__file__), "--inner", socket_path, str(self.base_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        line = self._first_line(START_TIMEOUT)
        if not line.startswith("ready"):
            self.stop()
            raise MilvusUnavailable(f"the embedded Milvus did not start (said {line!r})")
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self._listener = listener

        def connect() -> socket.socket:
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(socket_path)
            return upstream

        threading.Thread(target=_forward, args=(listener, connect), daemon=True).start()
        self.uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
        return self.uri

    def _first_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        stdout = self._process.stdout
        buffered = b""
        while time.monotonic() < deadline and b"\n" not in buffered:
            readable, _, _ = select.select([stdout], [], [], 1.0)
            if readable:
                chunk = os.read(stdout.fileno(), 4096)
                if not chunk:
                    break
                buffered += chunk
            elif self._process.poll() is not None:
                break
        return buffered.decode(errors="replace").strip()

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        process, self._process = self._process, None
        if process is not None:
            try:
                process.stdin.close()  # the server stops itself on EOF
                process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                pass
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)  # unshare and, by --kill-child, the namespace
                process.wait(timeout=10)
            process.stdout.close()
        if self._socket_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = ""


REQUIRE_ENV = "MMSEARCH_REQUIRE_MILVUS"


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory):
    """The URI of the session's Milvus server, started on first use (skipped where it cannot run, unless
    MMSEARCH_REQUIRE_MILVUS=1 says it must)."""
    server = MilvusServer(tmp_path_factory.mktemp("milvus"))
    try:
        uri = server.start()
    except MilvusUnavailable as exc:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but no Milvus server: {exc}")
        pytest.skip(f"no Milvus server: {exc}")
    try:
        yield uri
    finally:
        server.stop()
        shutil.rmtree(server.base_dir, ignore_errors=True)  # half a gigabyte: the server's binaries and data


if __name__ == "__main__" and sys.argv[1:2] == ["--inner"]:
    inner(sys.argv[2], sys.argv[3])
