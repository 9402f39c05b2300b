"""Reference engine: transformers + peft, one loaded base with many LoRA adapters on it.

The base is loaded once; adapters are injected into it by peft under their own names and switched with
`set_adapter` (no reload). An LRU bounds how many stay loaded. The engine runs ONE sequence at a time (the
inference service holds a lock around it): `prefill` starts a sequence and returns the next-token logits,
`step` feeds one token. Logits come back as numpy float32 so both engines share the same sampler.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from pathlib import Path

import numpy as np

from tunehouse.config import Settings

log = logging.getLogger("tunehouse.inference")
_SCORE_CHUNK = 128  # positions per LM-head call when scoring a prompt (262k vocab x 128 x 4 B = 128 MB)


def adapter_key(adapter_dir: Path) -> str:
    """A peft adapter name for a directory (peft names cannot contain dots or slashes)."""
    return "a" + hashlib.sha1(str(Path(adapter_dir).resolve()).encode()).hexdigest()[:16]


class HFEngine:
    name = "hf"

    def __init__(self, settings: Settings, base_model: str, model=None, tokenizer=None, family=None):
        if model is None:
            from tunehouse.base_models import load_base_model

            model, tokenizer, family = load_base_model(settings, base_model)
        self.base_model, self.tokenizer, self.family = base_model, tokenizer, family
        self.base = model
        self.peft = None  # PeftModel wrapping self.base once the first adapter is loaded
        self.max_adapters = max(1, settings.max_loaded_adapters)
        self.adapters: OrderedDict[str, Path] = OrderedDict()
        self.adapter_loads = 0  # counted so tests can prove switching does not reload
        self._cache = None
        self.vocab_size = model.get_output_embeddings().weight.shape[0]

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

    # -- decoding ------------------------------------------------------------------------------------------
    def _forward(self, ids: list[int]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.tensor([ids], dtype=torch.long, device=self.base.device)
            out = self._net(input_ids=x, past_key_values=self._cache, use_cache=True, logits_to_keep=1)
            self._cache = out.past_key_values
            return out.logits[0, -1].float().cpu().numpy()

    def prefill(self, ids: list[int], adapter_dir: Path | None) -> np.ndarray:
        self._activate(adapter_dir)
        self._cache = None
        return self._forward(ids)

    def step(self, token: int) -> np.ndarray:
        return self._forward([token])

    def end(self) -> None:
        self._cache = None  # free the KV cache between requests

    def score_rows(self, ids: list[int], adapter_dir: Path | None):
        """Yield (position, log-softmax row) predicting ids[position] for position = 1..len(ids)-1."""
        import torch

        self._activate(adapter_dir)
        base = self.base
        with torch.inference_mode():
            x = torch.tensor([ids], dtype=torch.long, device=base.device)
            # Run the body once, then the 262k-wide head in chunks so memory stays bounded on long prompts.
            hidden = base.base_model(input_ids=x, use_cache=False).last_hidden_state[0]
            head = base.get_output_embeddings()
            cap = getattr(base.config, "final_logit_softcapping", None)
            for start in range(0, len(ids) - 1, _SCORE_CHUNK):
                h = hidden[start : min(start + _SCORE_CHUNK, len(ids) - 1)]
                logits = head(h).float()
                if cap:
                    logits = torch.tanh(logits / cap) * cap
                rows = torch.log_softmax(logits, dim=-1).cpu().numpy()
                for i, row in enumerate(rows):
                    yield start + i + 1, row
