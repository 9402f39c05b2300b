"""Training data, pure Python (no torch, sqlite or FastAPI; imports nothing else of ours).

jsonl (streaming reader), formats (format rules -> error codes), quality (per-example warnings), tokens
(what is counted and how), stats (bounded-memory distributions), estimates (auto epochs, time, price,
size guidance), validation (validate_file -> Report), split (train/valid split), render (chat rendering and
loss masks). Import the submodule you need; nothing is imported eagerly here.
"""
