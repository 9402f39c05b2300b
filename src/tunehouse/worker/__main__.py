"""`python -m tunehouse.worker [--data-dir DIR]`: what `tunehouse serve` starts as its worker child process."""

from __future__ import annotations

import argparse

from tunehouse.config import Settings
from tunehouse.worker.main import serve_worker

parser = argparse.ArgumentParser(prog="python -m tunehouse.worker")
parser.add_argument("--data-dir", default=None)
args = parser.parse_args()
serve_worker(Settings(data_dir=args.data_dir) if args.data_dir else Settings())
