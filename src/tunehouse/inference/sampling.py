"""Next-token choice from raw logits, shared by every engine so both sample identically.

Works on one numpy float32 vector of vocabulary logits per step. Penalties follow OpenAI's definition
(logit -= count * frequency_penalty + (count > 0) * presence_penalty over the completion so far); reported
logprobs are those of the model's own distribution (before penalties and temperature), which is what
likelihood scoring needs. A seeded request draws from its own numpy Generator, so the same seed gives the
same sample whatever else the server is doing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    stop: list[str] = field(default_factory=list)
    logit_bias: dict[int, float] = field(default_factory=dict)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass
class TokenChoice:
    token: int
    logprob: float | None  # None when logprobs were not asked for (computing them costs a softmax)
    top: list[tuple[int, float]]  # (token, logprob), most likely first


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float32, copy=False)
    m = float(x.max())
    return x - (m + np.log(np.exp(x - m).sum(dtype=np.float64)))


def top_entries(logprobs: np.ndarray, k: int) -> list[tuple[int, float]]:
    if k <= 0:
        return []
    idx = np.argpartition(-logprobs, k - 1)[:k] if k < logprobs.shape[0] else np.arange(logprobs.shape[0])
    idx = idx[np.argsort(-logprobs[idx], kind="stable")]
    return [(int(i), float(logprobs[i])) for i in idx]


def _nucleus(probs: np.ndarray, top_p: float) -> np.ndarray:
    """Indices of the smallest most-likely set whose mass reaches top_p (exact, without a full sort)."""
    n = probs.shape[0]
    k = 64
    while True:
        k = min(k, n)
        idx = np.argpartition(-probs, k - 1)[:k] if k < n else np.arange(n)
        idx = idx[np.argsort(-probs[idx], kind="stable")]
        cum = np.cumsum(probs[idx], dtype=np.float64)
        if cum[-1] >= top_p or k == n:
            cut = int(np.searchsorted(cum, top_p * cum[-1] if k == n else top_p)) + 1
            return idx[: min(cut, k)]
        k *= 8


class Sampler:
    """Chooses tokens for one sequence; keeps the completion's token counts for the penalties."""

    def __init__(self, params: SamplingParams, rng: np.random.Generator | None = None):
        self.params = params
        self.rng = rng if rng is not None else np.random.default_rng(params.seed)
        self.counts: dict[int, int] = {}

    def choose(self, logits: np.ndarray) -> TokenChoice:
        p = self.params
        want_lp = p.logprobs
        lp = log_softmax(logits) if want_lp else None
        adjusted = logits
        if self.counts and (p.presence_penalty or p.frequency_penalty) or p.logit_bias:
            adjusted = logits.astype(np.float32, copy=True)
            for tok, c in self.counts.items():
                adjusted[tok] -= c * p.frequency_penalty + p.presence_penalty
            for tok, bias in p.logit_bias.items():
                adjusted[tok] += bias
        if p.greedy:
            token = int(np.argmax(adjusted))
        else:
            scaled = log_softmax(adjusted / np.float32(p.temperature))
            probs = np.exp(scaled, dtype=np.float64)
            if p.top_p < 1.0:
                keep = _nucleus(probs, p.top_p)
                sub = probs[keep] / probs[keep].sum()
                token = int(keep[self._draw(sub)])
            else:
                token = self._draw(probs / probs.sum())
        self.counts[token] = self.counts.get(token, 0) + 1
        if lp is None:
            return TokenChoice(token, None, [])
        return TokenChoice(token, float(lp[token]), top_entries(lp, p.top_logprobs))

    def _draw(self, probs: np.ndarray) -> int:
        # Inverse-CDF: one uniform per token, so a seed fixes the whole sample.
        u = self.rng.random()
        return min(int(np.searchsorted(np.cumsum(probs), u, side="right")), probs.shape[0] - 1)


def choice_rng(seed: int | None, index: int) -> np.random.Generator:
    """The random stream of a request's choice `index`: choice 0 draws from the seed itself (so n=1 and the first
    of n choices agree), the others from streams derived from (seed, index). A request's choices decode
    concurrently, so each needs a stream of its own to stay reproducible."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng(seed if index == 0 else [seed, index])
