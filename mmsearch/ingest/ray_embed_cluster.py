"""Joining a Ray cluster, or starting a private one for one index run (``ray_embed``).

``auto`` starts a local cluster bound to 127.0.0.1 (Ray would otherwise pick the machine's network address
and listen on every interface), without its dashboard, with token authentication on (Ray 2.52+ writes
the token to ~/.ray/auth_token), and shuts it down when the run ends. Any other address goes to
``ray.init(address=...)`` once a TCP connection to it has succeeded within ``CONNECT_TIMEOUT`` seconds (Ray
itself retries an unreachable address for a minute). A cluster that uses token authentication needs the
same mode here: when ``RAY_AUTH_MODE`` is unset and a token is at hand (``RAY_AUTH_TOKEN``,
``RAY_AUTH_TOKEN_PATH`` or ~/.ray/auth_token), token mode is switched on, as Ray does for a cluster it
finds on its own. In a process already connected to Ray (a script's own ``ray.init``), either uses that
connection and leaves it open. Ray's own logging is kept to errors (all of it with mmsearch at debug
level), and the cluster's error messages, which Ray prints on stdout, are logged as warnings instead.
Ray is imported only here, and only when asked for.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any, Iterator

from ..errors import ClusterError

log = logging.getLogger(__name__)

AUTO = "auto"
"""``ray="auto"``: a local cluster for this run only."""
CONNECT_TIMEOUT = 5.0
LOCAL_OBJECT_STORE = 128 << 20
"""Bytes of shared memory for a local cluster's object store: only file lists and vectors cross it."""
DEFAULT_PORT = 6379
MISSING = "{opt:ray} needs Ray: pip install 'mmsearch[ray]'"


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401  (the ``data`` extra)
    except ImportError:
        raise ClusterError(MISSING) from None
    return ray


@dataclass
class Cluster:
    """A connection to a Ray cluster; ``started``: this process started it (and shuts it down)."""

    ray: Any
    address: str
    started: bool
    joined: bool
    """Whether this process called ``ray.init`` (else it was connected already and stays so)."""

    def resources(self) -> dict[str, float]:
        return dict(self.ray.cluster_resources())

    def describe(self) -> str:
        if self.started:
            return "a local Ray cluster on 127.0.0.1"
        return "the Ray cluster this process was connected to" if self.address == AUTO else \
            f"the Ray cluster at {self.address}"

    def close(self) -> None:
        if self.joined:
            self.ray.shutdown()
            self.joined = False


def host_and_port(address: str) -> tuple[str, int]:
    """``ray://host:port``, ``host:port``, ``[v6]:port`` or ``host`` -> (host, port)."""
    rest = address.split("://", 1)[1] if "://" in address else address
    rest = rest.split("/", 1)[0]
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if not host:
        raise ClusterError(f"{{opt:ray}} {address!r}: expected auto or a cluster address such as host:6379 or "
                           f"ray://host:10001")
    try:
        return host, int(port) if port else DEFAULT_PORT
    except ValueError:
        raise ClusterError(f"{{opt:ray}} {address!r}: {port!r} is not a port number") from None


def check_reachable(address: str) -> None:
    """Fail at once, in one line, when nothing listens at ``address`` (before Ray's minute of retries)."""
    host, port = host_and_port(address)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        why = exc.strerror or str(exc) or type(exc).__name__
        raise ClusterError(f"{{opt:ray}} {address}: no Ray cluster answers there ({why})") from None


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


@contextlib.contextmanager
def _on_loopback(ray) -> Iterator[None]:
    """While starting (or joining) a cluster on this machine: make Ray take 127.0.0.1 as the node's address,
    as it does on macOS and Windows (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), so that its servers listen on
    the loopback interface only; Ray turns 127.0.0.1 into the machine's network address otherwise."""
    from ray._private import ray_constants

    saved_env = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    saved_flag = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read by the processes Ray starts
    ray_constants.ENABLE_RAY_CLUSTER = False  # read by this one (ray is imported already)
    try:
        yield
    finally:
        if saved_env is None:
            os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        else:
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = saved_env
        if saved_flag is not None:
            ray_constants.ENABLE_RAY_CLUSTER = saved_flag


def _quiet(ray) -> dict[str, Any]:
    """Ray's own logging for ``ray.init``: warnings only unless mmsearch logs at debug level; no worker
    output copied to this process's terminal; no Ray Data progress bars."""
    level = logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.CRITICAL  # failures: our own errors
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(level)
    if not log.isEnabledFor(logging.DEBUG):  # Ray's C++ core writes its own errors to stderr
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    _errors_to_log()
    return {"logging_level": level, "log_to_driver": log.isEnabledFor(logging.DEBUG)}


def _errors_to_log() -> None:
    """Ray prints the cluster's error messages (a worker died, a task is retried) on this process's stdout,
    where they would break ``--json``: log them as warnings instead (on stderr, from the command line)."""
    try:
        from ray._private import worker
    except ImportError:
        return
    if getattr(worker.print_to_stdstream, "mmsearch", False):
        return

    def to_log(data, ignore_prefix: bool = False) -> None:
        for message in data.get("lines", ()):
            lines = str(message).strip().splitlines() or [""]
            log.warning("Ray %s: %s", data.get("pid", ""), lines[0][:300])  # (the rest: a traceback)
            log.debug("%s", message)
    to_log.mmsearch = True
    worker.print_to_stdstream = to_log


def start_local(cpus: int | None = None, gpus: int | None = None) -> Cluster:
    """A new cluster on this machine only (see the module docstring); ``cpus``: what it offers (default all)."""
    ray = import_ray()
    if ray.is_initialized():  # this process is connected already (a script's own ray.init): use that
        return Cluster(ray, AUTO, started=False, joined=False)
    with _on_loopback(ray):  # token authentication: Ray's default for a new cluster (unless RAY_AUTH_MODE says)
        try:
            ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
                     num_cpus=cpus or os.cpu_count() or 1, num_gpus=gpus, object_store_memory=LOCAL_OBJECT_STORE,
                     **_quiet(ray))
        except Exception as exc:
            raise ClusterError(f"{{opt:ray}} auto: cannot start a local Ray cluster: {_first_line(exc)}") from exc
    cluster = Cluster(ray, AUTO, started=True, joined=True)
    node = ray.util.get_node_ip_address()
    if not is_loopback(node):
        cluster.close()
        raise ClusterError(f"{{opt:ray}} auto: the local Ray cluster would listen on {node}, not 127.0.0.1")
    log.info("started a local Ray cluster on 127.0.0.1 (%s)", ray.cluster_resources())
    return cluster


def join(address: str) -> Cluster:
    """Connect to the cluster at ``address`` (checked reachable first)."""
    ray = import_ray()
    check_reachable(address)
    if ray.is_initialized():
        return Cluster(ray, address, started=False, joined=False)
    quiet = _quiet(ray)
    _token_mode_if_token()
    local = is_loopback(host_and_port(address)[0])
    with _on_loopback(ray) if local else contextlib.nullcontext():
        try:
            ray.init(address=address, **quiet)
        except Exception as exc:
            hint = "" if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" else \
                " (a cluster with token authentication, Ray's default, needs RAY_AUTH_MODE=token and its token " \
                "here: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)"
            raise ClusterError(f"{{opt:ray}} {address}: cannot join the Ray cluster: {_first_line(exc)}{hint}") from exc
    return Cluster(ray, address, started=False, joined=True)


def connect(address: str) -> Cluster:
    return start_local() if address == AUTO else join(address)


def _token_mode_if_token() -> None:
    """Token authentication when a token is at hand and ``RAY_AUTH_MODE`` says nothing (see the docstring)."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:  # what ray.init does for a cluster it finds itself; it also refreshes Ray's cached settings
        from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available
    except ImportError:
        log.debug("this Ray has no token authentication")
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__
