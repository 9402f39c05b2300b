"""Reference engine: transformers + peft, one loaded base with many LoRA adapters on it.

The base is loaded once; adapters are injected into it by peft under their own names and switched with
`set_adapter` (no reload). An LRU bounds how many stay loaded. Sequences (`open`, see batching.py) decode on the
engine's scheduler thread, each with its own KV cache: on CPU one at a time (one slot: torch already uses every
core for one sequence), on CUDA up to Settings.inference_slots whose single-token steps of one adapter run as
ONE padded forward (`_step_batch`: caches left-padded to a common length, a 4D mask per attention type hiding
the padding). Logits come back as numpy float32 so both engines share the same sampler.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from pathlib import Path

import numpy as np

from tunehouse.config import Settings
from tunehouse.inference.batching import BatchScheduler, SingleSequence, Slot, Work

log = logging.getLogger("tunehouse.inference")


def adapter_key(adapter_dir: Path) -> str:
    """A peft adapter name for a directory (peft names cannot contain dots or slashes)."""
    return "a" + hashlib.sha1(str(Path(adapter_dir).resolve()).encode()).hexdigest()[:16]


class HFEngine(SingleSequence):
    name = "hf"

    def __init__(self, settings: Settings, base_model: str, model=None, tokenizer=None, family=None,
                 batched: bool | None = None):
        if model is None:
            from tunehouse.base_models import load_base_model

            model, tokenizer, family = load_base_model(settings, base_model)
        self.base_model, self.tokenizer, self.family = base_model, tokenizer, family
        self.base = model
        self.peft = None  # PeftModel wrapping self.base once the first adapter is loaded
        self.max_adapters = max(1, settings.max_loaded_adapters)
        self.adapters: OrderedDict[str, Path] = OrderedDict()
        self.adapter_loads = 0  # counted so tests can prove switching does not reload
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        # batched (several slots) on CUDA by default; on CPU only when asked (tests check the batched path there)
        self.batched = model.device.type == "cuda" if batched is None else batched
        self.slots = max(1, settings.inference_slots) if self.batched else 1
        self._caches: dict[int, object] = {}  # slot index -> that sequence's KV cache
        self.scheduler = BatchScheduler(f"hf-{base_model}", self.slots, 512, self._run_batch, self._trim)

    # -- adapters ------------------------------------------------------------------------------------------
    def _activate(self, adapter_dir: Path | None) -> None:
        if adapter_dir is None:
            if self.peft is not None:
                self.peft.base_model.disable_adapter_layers()
            return
        key = adapter_key(adapter_dir)
        if key in self.adapters:
            self.adapters.move_to_end(key)
        else:
            self._load_adapter(key, Path(adapter_dir))
        self.peft.base_model.enable_adapter_layers()
        self.peft.set_adapter(key)

    def _load_adapter(self, key: str, adapter_dir: Path) -> None:
        from peft import PeftModel

        if not (adapter_dir / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{adapter_dir} is not a PEFT adapter directory (no adapter_config.json)")
        if self.peft is None:
            self.peft = PeftModel.from_pretrained(self.base, str(adapter_dir), adapter_name=key)
        else:
            self.peft.load_adapter(str(adapter_dir), adapter_name=key)
        self.peft.eval()
        self.adapter_loads += 1
        self.adapters[key] = adapter_dir
        while len(self.adapters) > self.max_adapters:
            old, path = self.adapters.popitem(last=False)
            self.peft.set_adapter(key)  # peft refuses to delete the active adapter
            self.peft.delete_adapter(old)
            log.info("evicted adapter %s from %s (LRU, max %d)", path, self.base_model, self.max_adapters)

    @property
    def _net(self):
        return self.peft if self.peft is not None else self.base

    # -- sequences -----------------------------------------------------------------------------------------
    def open(self, ids: list[int], adapter_dir: Path | None, reuse: bool = True):
        """A Sequence for this prompt on a free slot (blocks while all are busy). No prefix reuse here: the
        reference engine recomputes every prompt."""
        if not ids:
            raise ValueError("an empty prompt has nothing to continue")
        key = None if adapter_dir is None else str(Path(adapter_dir).resolve())
        return self.scheduler.open(list(ids), key, reuse=False)

    def _trim(self, slot: Slot, keep: int) -> int:
        self._caches.pop(slot.index, None)
        return 0

    def _run_batch(self, adapter: str | None, batch: list[tuple[Work, int, int]]) -> list:
        """Single-token steps of sequences with a cache go through one padded forward; prompts (and scoring
        chunks) run one by one."""
        self._activate(None if adapter is None else Path(adapter))
        steps = [i for i, (w, start, count) in enumerate(batch)
                 if count == 1 and not w.all_logits and w.seq.slot.index in self._caches]
        out: list = [None] * len(batch)
        if len(steps) > 1:
            rows = self._step_batch([batch[i] for i in steps])
            for i, row in zip(steps, rows, strict=True):
                out[i] = row
        for i, (work, start, count) in enumerate(batch):
            if out[i] is None:
                out[i] = self._forward(work, start, count)
        return out

    def _forward(self, work: Work, start: int, count: int) -> np.ndarray:
        """Feed one sequence's tokens on its own cache; rows for every token, or the last one's."""
        import torch

        index = work.seq.slot.index
        with torch.inference_mode():
            x = torch.tensor([work.tokens[start:start + count]], dtype=torch.long, device=self.base.device)
            out = self._net(input_ids=x, past_key_values=self._caches.get(index), use_cache=True,
                            logits_to_keep=0 if work.all_logits else 1)
            self._caches[index] = out.past_key_values
            return out.logits[0].float().cpu().numpy()

    def _step_batch(self, entries: list[tuple[Work, int, int]]) -> list[np.ndarray]:
        """One forward for several sequences' next tokens: see hf_batch.padded_step."""
        from tunehouse.inference.hf_batch import padded_step

        seqs = [w.seq.slot.index for w, _, _ in entries]
        tokens = [w.tokens[start] for w, start, _ in entries]
        positions = [w.seq.n_past for w, _, _ in entries]
        logits, caches = padded_step(self._net, self.base.config, [self._caches[i] for i in seqs], tokens,
                                     positions)
        for i, cache in zip(seqs, caches, strict=True):
            self._caches[i] = cache
        return [row[None, :] for row in logits]
