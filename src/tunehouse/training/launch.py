"""torchrun entry point: `torchrun ... -m tunehouse.training.launch [JOB_JSON]` runs one job's training.

Every rank joins the process group. The one rank that holds the job (its JSON path in argv or TUNEHOUSE_TRAIN_JOB,
and LOCAL_RANK 0: the worker's own node) becomes the main rank and broadcasts the TrainingConfig, so the other
ranks, on this node or other nodes, need no job knowledge. The main rank connects back to the worker
(multiprocessing.connection, address and authkey from the environment): each callback is one message, control()
waits for the answer, and the TrainingResult (or a bad-input error) is the last message.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from multiprocessing.connection import Client, Connection
from pathlib import Path

JOB_ENV = "TUNEHOUSE_TRAIN_JOB"
ADDRESS_ENV = "TUNEHOUSE_TRAIN_ADDRESS"  # host:port of the worker's Listener
AUTHKEY_ENV = "TUNEHOUSE_TRAIN_AUTHKEY"  # hex
log = logging.getLogger("tunehouse.training.launch")


class RemoteCallbacks:
    """TrainingCallbacks forwarded to the worker; only control() waits for an answer."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def on_event(self, level, message, data) -> None:
        self.conn.send(("event", level, message, data))

    def on_metrics(self, metrics) -> None:
        self.conn.send(("metrics", metrics))

    def on_checkpoint(self, checkpoint) -> None:
        self.conn.send(("checkpoint", checkpoint))

    def control(self) -> str:
        self.conn.send(("control",))
        return self.conn.recv()


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this rank when torchrun dies, even by SIGKILL (no orphan ranks holding a GPU)."""
    if sys.platform != "linux":
        return
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _config_from_json(text: str):
    from tunehouse.training.config import TrainingConfig

    raw = json.loads(text)
    for key in ("base_model_dir", "training_file", "output_dir", "validation_file", "init_adapter"):
        if raw.get(key) is not None:
            raw[key] = Path(raw[key])
    return TrainingConfig(**raw)


def config_to_json(config) -> str:
    from dataclasses import asdict

    return json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()})


def _connect() -> Connection:
    host, port = os.environ[ADDRESS_ENV].rsplit(":", 1)
    return Client((host, int(port)), authkey=bytes.fromhex(os.environ[AUTHKEY_ENV]))


def main(argv: list[str]) -> int:
    from torch.distributed.elastic.multiprocessing.errors import record

    # record: an exception's traceback goes into torchrun's failure summary, the end of the job's torchrun.log.
    return record(_main)(argv)


def _check_restartable() -> None:
    """torchrun shares one c10d store across restarts by default, and a restarted attempt can then read the
    dead attempt's gloo addresses and fail to connect; TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 gives each attempt
    its own store."""
    shared = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    if shared and int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0:
        raise RuntimeError("torchrun with --max-restarts needs TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in its "
                           "environment (on every machine), so that a restarted attempt gets a fresh store")


def _main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s pid %(process)d %(levelname)s %(message)s")
    _die_with_parent()
    _check_restartable()
    from tunehouse.training import distributed
    from tunehouse.training.engine import train

    job_path = argv[0] if argv else os.environ.get(JOB_ENV)
    distributed.init()
    leader = distributed.elect_main(bool(job_path) and distributed.local_rank() == 0)
    log.info("rank %d of %d (local rank %d), main rank %d", distributed.rank(), distributed.world_size(),
             distributed.local_rank(), leader)
    main_rank = distributed.is_main()
    conn = _connect() if main_rank else None
    config = _config_from_json(distributed.broadcast_from_main(
        Path(job_path).read_text(encoding="utf-8") if main_rank else None))
    try:
        result = train(config, RemoteCallbacks(conn) if conn else distributed.Silent())
    except (ValueError, LookupError) as e:
        # Bad input (the user's data or model): the worker fails the job with this message at once, as it would
        # for an in-process train(). Any other error (a crashed peer, a bug) only ends this process: torchrun
        # restarts the ranks, and when no restart is left the worker reports the exit code and log.
        log.exception("rank %d: training failed", distributed.rank())
        if conn:
            conn.send(("error", type(e).__name__, str(e)))
        raise
    if conn:
        conn.send(("result", result))
        conn.close()
    distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
