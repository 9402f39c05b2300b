"""Run the tunehouse API (and optionally a training worker) inside this process, on a loopback port.

Used by `tunehouse eval` when no --base-url is given, by `tunehouse quickstart`, and by tests that need a live
server: everything then goes through the real HTTP API and the official `openai` SDK, exactly as a user's
code would, without a second terminal.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tunehouse.config import Settings

log = logging.getLogger("tunehouse.local_server")


class ServerUnavailable(RuntimeError):
    """The service or worker modules are missing or the app failed to start."""


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        if port == 0:
            raise
        sock.bind((host, 0))  # the asked port is taken: any free one will do, the URL says which
    sock.listen(128)
    return sock


@contextmanager
def local_server(settings: Settings, worker: bool = False, port: int = 0, host: str = "127.0.0.1",
                 startup_timeout: float = 60.0) -> Iterator[str]:
    """Yield the base URL (`http://127.0.0.1:PORT/v1`) of an in-process server; stop it on exit.

    The socket is bound before uvicorn starts, so there is no window in which another process takes the port.
    With `worker=True` a training worker runs in a thread of this process until the block exits.
    """
    try:
        import uvicorn

        from tunehouse.api.app import create_app
    except ImportError as e:
        raise ServerUnavailable(f"the tunehouse API is not available in this install ({e})") from None
    app = create_app(settings)
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="tunehouse-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise ServerUnavailable("the in-process tunehouse server did not start")
        time.sleep(0.02)
    stop = threading.Event()
    worker_thread = None
    if worker:
        from tunehouse.worker.main import run_worker

        def work() -> None:
            # Server and worker live and die together: a dead worker would leave jobs queued and a client
            # following one waiting forever, while a stopped server makes the client fail with an error.
            try:
                run_worker(settings, stop_event=stop)
            except Exception:
                log.exception("the in-process training worker failed; stopping the in-process server")
                server.should_exit = True

        worker_thread = threading.Thread(target=work, name="tunehouse-worker", daemon=True)
        worker_thread.start()
    try:
        yield f"http://{host}:{bound_port}/v1"
    finally:
        stop.set()
        server.should_exit = True
        thread.join(timeout=30)
        if worker_thread is not None:
            # A worker in the middle of a training step finishes it first; don't hang forever on exit.
            worker_thread.join(timeout=120)
        sock.close()
