"""Run one job's training as several processes under torchrun, serving its callbacks from the worker.

The worker opens a Listener (127.0.0.1, random port, random authkey), writes the TrainingConfig as JSON into
the job directory and starts `python -m torch.distributed.run ... -m tunehouse.training.launch JOB_JSON`. The
main rank connects back and sends every callback as a message; this module answers them with the real
StoreCallbacks in the calling thread (the one that owns the database connection) until the TrainingResult
arrives. A watcher thread follows torchrun: it wakes the Listener when torchrun exits, and when the worker
shuts down it gives the ranks STOP_GRACE_SECONDS to pause (control() answers "pause") before terminating
torchrun. torchrun, ranks included, dies with the worker (PR_SET_PDEATHSIG).

A crashed rank makes torchrun restart all ranks, up to settings.train_max_restarts times; they resume from the
last resumable state. torchrun's and the ranks' output goes to JOB_DIR/torchrun.log; a run that ends without
a result fails the job with torchrun's exit code and its failure summary (which rank ended how).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection, Listener
from pathlib import Path

from tunehouse.base_models import cpu_threads
from tunehouse.config import Settings
from tunehouse.training.config import TrainingResult
from tunehouse.training.launch import ADDRESS_ENV, AUTHKEY_ENV, config_to_json

log = logging.getLogger("tunehouse.worker")
LOG_FILE = "torchrun.log"
JOB_FILE = "torchrun_job.json"
# After the worker's stop signal the ranks get this long to reach control() and save; worker/main.py's own
# SHUTDOWN_GRACE_SECONDS (20 s) must stay longer.
STOP_GRACE_SECONDS = 15.0
KILL_AFTER_SECONDS = 5.0  # torchrun still alive this long after SIGTERM: SIGKILL (its ranks die with it)
EXIT_AFTER_RESULT_SECONDS = 30.0  # the ranks only tear down the process group after sending the result
TAIL_LINES = 12
# A fresh c10d store per rendezvous round: with torchrun's default (one store shared by every round), the ranks
# of a restarted attempt can read the dead attempt's gloo addresses and fail to connect. Other machines joining
# a multi-machine job need the same variable (launch.py refuses to run with restarts without it).
TORCHRUN_ENV = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


class DistributedTrainingError(RuntimeError):
    """torchrun ended without a result: a rank crashed and no restart was left, or torchrun itself failed."""


def train_processes(settings: Settings) -> int:
    """Processes per node: the setting, or for `auto` the number of CUDA devices (1 without CUDA, or on CPU)."""
    if settings.train_processes != "auto":
        return int(settings.train_processes)
    import torch

    return torch.cuda.device_count() if settings.device != "cpu" and torch.cuda.is_available() else 1


def uses_torchrun(settings: Settings) -> bool:
    return settings.train_nnodes > 1 or train_processes(settings) > 1


def torchrun_command(settings: Settings, job_file: Path) -> list[str]:
    """The torchrun command line; with train_nnodes > 1 the other machines run the same rendezvous options."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(train_processes(settings)),
           "--max-restarts", str(settings.train_max_restarts)]
    if settings.train_nnodes > 1:
        if not settings.train_rdzv_endpoint:
            raise DistributedTrainingError("TUNEHOUSE_TRAIN_NNODES > 1 needs TUNEHOUSE_TRAIN_RDZV_ENDPOINT (HOST:PORT)")
        cmd += ["--nnodes", str(settings.train_nnodes), "--rdzv-backend", "c10d",
                "--rdzv-endpoint", settings.train_rdzv_endpoint, "--rdzv-id", "tunehouse"]
    else:
        cmd += ["--standalone"]
    return cmd + ["-m", "tunehouse.training.launch", str(job_file)]


def _pdeathsig():
    """preexec_fn for torchrun: SIGTERM it when the worker dies, even by SIGKILL (its ranks die with it). libc is
    loaded here, before the fork: the child of a threaded process should import and allocate as little as
    possible before exec."""
    if sys.platform != "linux":
        return None
    import ctypes

    prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run_distributed(settings: Settings, config, callbacks, stop_event: threading.Event) -> TrainingResult:
    """Train `config` under torchrun with `callbacks` served here; returns the main rank's TrainingResult."""
    out_dir = Path(config.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    job_file, log_path = out_dir / JOB_FILE, out_dir / LOG_FILE
    job_file.write_text(config_to_json(config), encoding="utf-8")
    authkey = os.urandom(32)
    with Listener(("127.0.0.1", 0), authkey=authkey) as listener:
        host, port = listener.address
        env = dict(os.environ, **{ADDRESS_ENV: f"{host}:{port}", AUTHKEY_ENV: authkey.hex(), **TORCHRUN_ENV,
                                  "OMP_NUM_THREADS": str(max(1, cpu_threads() // train_processes(settings)))})
        cmd = torchrun_command(settings, job_file)
        with open(log_path, "ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_pdeathsig())
        log.info("job dir %s: torchrun pid %d (%s)", out_dir, proc.pid, " ".join(cmd[3:]))
        watcher = threading.Thread(target=_watch, args=(proc, listener.address, stop_event), daemon=True)
        watcher.start()
        outcome = None
        try:
            outcome = _serve(listener, proc, callbacks)
        finally:  # after an error (or an exception here) the ranks are ended at once, not restarted
            _end(proc, EXIT_AFTER_RESULT_SECONDS if outcome is not None and outcome[0] == "result" else 0.0)
            watcher.join()
    return _result(outcome, proc.returncode, log_path, stop_event)


def _serve(listener: Listener, proc: subprocess.Popen, callbacks):
    """Serve main-rank connections (a restarted rank connects again) until a result, an error, or torchrun's end."""
    while proc.poll() is None:
        try:
            conn = listener.accept()
        except (EOFError, OSError, AuthenticationError) as e:  # the watcher's wake-up call, or a stray client
            log.debug("listener: connection without a rank: %s", e)
            continue
        with conn:
            outcome = _serve_connection(conn, callbacks)
        if outcome is not None:
            return outcome
    return None


def _serve_connection(conn: Connection, callbacks):
    """One main rank's messages; returns ("result", r) / ("error", ...), or None when the rank went away."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return None  # the rank died; torchrun restarts it (it connects again) or exits
        kind = message[0]
        if kind == "control":
            conn.send(callbacks.control())
        elif kind == "event":
            callbacks.on_event(*message[1:])
        elif kind == "metrics":
            callbacks.on_metrics(message[1])
        elif kind == "checkpoint":
            callbacks.on_checkpoint(message[1])
        elif kind in ("result", "error"):
            return message
        else:
            raise DistributedTrainingError(f"unknown message from the training process: {kind!r}")


def _watch(proc: subprocess.Popen, address, stop_event: threading.Event) -> None:
    """Wait for torchrun; on the worker's shutdown, end it if the ranks do not pause in time; then wake _serve."""
    stopping_since = None
    while True:
        try:
            proc.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            pass
        if stop_event.is_set():
            stopping_since = stopping_since or time.monotonic()
            if time.monotonic() - stopping_since > STOP_GRACE_SECONDS:
                log.warning("torchrun %d did not pause within %.0fs of shutdown: terminating it", proc.pid,
                            STOP_GRACE_SECONDS)
                _terminate(proc)
    try:  # a bare connection makes listener.accept() return (it then fails the handshake), so _serve looks again
        socket.create_connection(address, timeout=5).close()
    except OSError as e:  # the listener is closed already: _serve has returned
        log.debug("listener already closed: %s", e)


def _end(proc: subprocess.Popen, wait: float) -> None:
    """Give torchrun `wait` seconds to exit by itself, then terminate it."""
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        if wait:
            log.warning("torchrun %d still running %.0fs after the result: terminating it", proc.pid, wait)
        _terminate(proc)


def _terminate(proc: subprocess.Popen) -> None:
    """SIGTERM (torchrun passes it on to the ranks), then SIGKILL (the ranks die with torchrun)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=KILL_AFTER_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _result(outcome, returncode: int | None, log_path: Path, stop_event: threading.Event) -> TrainingResult:
    if outcome is not None and outcome[0] == "result":
        return outcome[1]
    if outcome is not None:  # ("error", type name, message): the user's data or model, as train() raises it
        raise ValueError(outcome[2])
    if stop_event.is_set():  # shut down before the ranks could pause: back to the queue, resumed from the last save
        return TrainingResult("paused", None, 0, {}, [])
    raise DistributedTrainingError(f"torchrun exited with code {returncode} without a result (full log: "
                                   f"{log_path}):\n{_tail(log_path)}")


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    """torchrun's failure summary (which rank ended how, each error's last line) when the log ends with one, else
    the log's last lines."""
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 64 * 1024))
        text = f.read().decode("utf-8", errors="replace")
    start = text.rfind("tunehouse.training.launch FAILED")
    if start < 0:
        return "\n".join(text.splitlines()[-lines:])
    noise = ("time", "host", "error_file")  # and traceback frames (indented 4+), and the ----/==== rules
    return "\n".join(line for line in text[start:].splitlines()
                     if line.strip() and not line.startswith("    ") and line.strip("-=")
                     and not line.lstrip().startswith(noise))
