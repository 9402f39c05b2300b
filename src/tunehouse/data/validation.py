"""Validate a training file (and optionally its validation file) in one streaming pass: every problem, stats,
estimates. The same code runs in `tunehouse validate`, at upload time (API) and before training.

Memory stays bounded on any file: one line at a time, at most MAX_ISSUES_PER_CODE stored issues per code
(every occurrence is still counted), duplicate tracking for the first MAX_TRACKED_EXAMPLES examples, and
reservoir-sampled percentiles (tunehouse.data.stats).

`too_few_examples` (fewer than 10, OpenAI's minimum) is an error for `validate`, but OpenAI accepts such a file
at upload and fails the *job* (`invalid_n_examples`); callers that upload use
`report.blocking_errors(ignore=UPLOAD_TOLERATED)` and `report.blocking_error_count(UPLOAD_TOLERATED)`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tunehouse.data.estimates import estimate_training, overfit_risk
from tunehouse.data.formats import check_example, detect_format
from tunehouse.data.jsonl import read_jsonl
from tunehouse.data.quality import scan_example
from tunehouse.data.stats import Distribution
from tunehouse.data.tokens import (
    NON_PREFERRED,
    SHARED,
    TRAINED,
    CountTokens,
    estimate_tokens,
    example_segments,
    pair_sequences,
    preference_segments,
)

MIN_EXAMPLES = 10  # OpenAI's minimum for a training file
# Error codes that do not make an uploaded file unusable: OpenAI uploads it and fails the job instead.
UPLOAD_TOLERATED = frozenset({"too_few_examples"})
MAX_ISSUES_PER_CODE = 100
MAX_TRACKED_EXAMPLES = 1_000_000  # ~100 MB of hashes at most; later examples are not checked for duplicates
MAX_SYSTEM_PROMPTS = 1000
BATCH_TEXTS = 4096  # texts per count_tokens call


@dataclass(frozen=True)
class Issue:
    line: int | None  # 1-based line in its file; None for file-level problems
    code: str
    severity: str  # "error" | "warning"
    message: str

    def to_json(self) -> dict:
        return {"line": self.line, "code": self.code, "message": self.message}


class IssueLog:
    """Keeps the first `cap` issues of each code and counts them all."""

    def __init__(self, cap: int = MAX_ISSUES_PER_CODE):
        self.cap = cap
        self.errors: list[Issue] = []
        self.warnings: list[Issue] = []
        self.counts: dict[str, Counter] = {"error": Counter(), "warning": Counter()}

    def add(self, line: int | None, code: str, severity: str, message: str) -> None:
        counts = self.counts[severity]
        counts[code] += 1
        if counts[code] <= self.cap:
            (self.errors if severity == "error" else self.warnings).append(Issue(line, code, severity, message))


@dataclass
class Report:
    path: str
    format: str  # "chat" | "preference" | "completion"
    examples: int  # non-blank lines
    errors: list[Issue]
    warnings: list[Issue]
    error_counts: dict[str, int]
    warning_counts: dict[str, int]
    stats: dict
    estimate: dict | None  # None for a validation file
    tokens_are_estimates: bool
    validation: Report | None = None
    max_issues_per_code: int = MAX_ISSUES_PER_CODE

    @property
    def ok(self) -> bool:
        """Trainable: no error at all in the training file nor in the validation file."""
        return not self.errors and (self.validation is None or self.validation.ok)

    def blocking_errors(self, ignore: set[str] | frozenset[str] = frozenset()) -> list[Issue]:
        """Errors of this file and its validation file, minus the codes in `ignore`."""
        out = [e for e in self.errors if e.code not in ignore]
        if self.validation is not None:
            out += self.validation.blocking_errors(ignore)
        return out

    def blocking_error_count(self, ignore: set[str] | frozenset[str] = frozenset()) -> int:
        """How many errors `blocking_errors` stands for (every occurrence, also those past the per-code cap)."""
        n = sum(count for code, count in self.error_counts.items() if code not in ignore)
        return n + (self.validation.blocking_error_count(ignore) if self.validation is not None else 0)

    def to_json(self) -> dict:
        """The documented `tunehouse validate --json` object (docs/validate.md)."""
        return {
            "ok": self.ok,
            "file": self.path,
            "format": self.format,
            "examples": self.examples,
            "errors": [e.to_json() for e in self.errors],
            "warnings": [w.to_json() for w in self.warnings],
            "error_counts": dict(self.error_counts),
            "warning_counts": dict(self.warning_counts),
            "max_issues_per_code": self.max_issues_per_code,
            "tokens_are_estimates": self.tokens_are_estimates,
            "stats": self.stats,
            "estimate": self.estimate,
            "validation": self.validation.to_json() if self.validation is not None else None,
        }


class _Scan:
    """Streaming state of one file's validation."""

    def __init__(self, count: CountTokens, counted: bool, context_length: int | None, expected_format: str | None,
                 train_hashes: dict | None):
        self.count, self.counted, self.context_length = count, counted, context_length
        self.format, self.format_line = expected_format, None
        self.train_hashes = train_hashes
        self.log = IssueLog()
        self.examples = self.valid = 0
        self.seen: dict[int, int] = {}
        self.systems: dict[str, list[int]] = {}  # text -> [count, first line]
        self.n_messages, self.tokens, self.trained = Distribution(), Distribution(), Distribution()
        self.preferred, self.non_preferred = Distribution(), Distribution()  # trained tokens of each DPO output
        self.tokens_per_epoch = self.supervised_per_epoch = self.over_context = 0
        self.texts: list[str] = []
        # (line, first text, n texts, segment kinds, overhead, trained overhead, indices of shared texts, is a pair)
        self.pending: list[tuple[int, int, int, tuple[int, ...], int, int, tuple[int, ...], bool]] = []
        self.shared: dict[str, int] = {}  # token counts of repeated system prompts / tool schemas
        self.sharing: dict[str, int] = {}  # shared texts of the current batch -> index in self.texts
        self.fatal = False

    def line(self, item) -> None:
        if item.error:
            self.examples += not item.fatal
            self.log.add(item.line, item.error, "error", item.message)
            self.fatal = self.fatal or item.fatal
            return
        self.examples += 1
        value, n = item.value, item.line
        fmt = detect_format(value)
        if fmt and self.format is None:
            self.format, self.format_line = fmt, n
        if fmt and fmt != self.format:
            where = f"line {self.format_line}" if self.format_line else "the training file"
            self.log.add(n, "mixed_formats", "error",
                         f"a {fmt} example in a {self.format} file (format set by {where})")
            return
        fmt = fmt or self.format or "chat"
        problems = check_example(value, fmt)
        for code, message in problems:
            self.log.add(n, code, "error", message)
        if problems:
            return
        self.valid += 1
        warnings, system = scan_example(value, fmt)
        for code, message in warnings:
            self.log.add(n, code, "warning", message)
        self._track(n, item.raw, value, fmt, system)
        if fmt == "preference":
            segments, overhead = preference_segments(value)
            self._queue(n, segments, overhead, 0, True)
        else:
            segments, overhead, trained_overhead = example_segments(value, fmt)
            self._queue(n, segments, overhead, trained_overhead, False)

    def _queue(self, n: int, segments: list[tuple[str, int]], overhead: int, trained_overhead: int,
               pair: bool) -> None:
        """Queue an example's texts for the next batched count; repeated shared texts are counted once."""
        start, kinds, extra = len(self.texts), [], []
        for text, kind in segments:
            if kind == SHARED:
                known = self.shared.get(text)
                if known is not None:
                    overhead += known
                    continue
                index = self.sharing.get(text)
                if index is not None:
                    extra.append(index)
                    continue
                if len(self.shared) + len(self.sharing) < MAX_SYSTEM_PROMPTS:
                    self.sharing[text] = len(self.texts)
            self.texts.append(text)
            kinds.append(kind)
        self.pending.append((n, start, len(kinds), tuple(kinds), overhead, trained_overhead, tuple(extra), pair))
        if len(self.texts) >= BATCH_TEXTS:
            self.flush()

    def _track(self, n: int, raw: bytes, value: dict, fmt: str, text: str | None) -> None:
        h = hash(raw.strip())
        first = self.seen.get(h)
        if first is not None:
            self.log.add(n, "duplicate_example", "warning", f"exact duplicate of line {first}")
        elif len(self.seen) < MAX_TRACKED_EXAMPLES:
            self.seen[h] = n
        if self.train_hashes is not None and h in self.train_hashes:
            self.log.add(n, "train_valid_overlap", "warning",
                         f"also in the training file (line {self.train_hashes[h]}): validation loss will look "
                         "better than it is")
        if fmt != "completion":
            messages = value["messages"] if fmt == "chat" else value["input"]["messages"]
            self.n_messages.add(len(messages))
        if text is not None:
            entry = self.systems.get(text)
            if entry:
                entry[0] += 1
            elif len(self.systems) < MAX_SYSTEM_PROMPTS:
                self.systems[text] = [1, n]

    def flush(self) -> None:
        if not self.texts:
            return
        counts = self.count(self.texts)
        if len(counts) != len(self.texts):
            raise ValueError(f"count_tokens returned {len(counts)} counts for {len(self.texts)} texts")
        for text, i in self.sharing.items():
            self.shared[text] = counts[i]
        self.sharing = {}
        ctx = self.context_length
        for n, start, size, kinds, overhead, trained_overhead, extra, pair in self.pending:
            chunk = counts[start:start + size]
            untrained = overhead + sum(counts[i] for i in extra)
            if pair:
                self._add_pair(n, chunk, kinds, untrained)
                continue
            total = untrained + sum(chunk)
            trained = trained_overhead + sum(c for c, k in zip(chunk, kinds, strict=True) if k == TRAINED)
            self.tokens.add(total)
            self.trained.add(trained)
            # Truncation keeps the first `ctx` tokens; the trained share of those is approximated by a cap.
            kept = min(total, ctx) if ctx else total
            self.tokens_per_epoch += kept
            self.supervised_per_epoch += min(trained, kept)
            if kept < total:
                self._too_long(n, total, "")
        self.texts, self.pending = [], []

    def _add_pair(self, n: int, chunk: list[int], kinds: tuple[int, ...], prompt: int) -> None:
        """Count a DPO pair as what training runs: two sequences (prompt + each output), each truncated alone."""
        preferred = non_preferred = 0
        for c, k in zip(chunk, kinds, strict=True):
            if k == TRAINED:
                preferred += c
            elif k == NON_PREFERRED:
                non_preferred += c
            else:
                prompt += c
        sides = pair_sequences(prompt, preferred, non_preferred)
        self.preferred.add(sides[0][1])
        self.non_preferred.add(sides[1][1])
        self.tokens.add(sides[0][0] + sides[1][0])
        self.trained.add(sides[0][1] + sides[1][1])
        ctx = self.context_length
        for total, trained in sides:
            kept = min(total, ctx) if ctx else total
            self.tokens_per_epoch += kept
            # The output ends the sequence, so truncation cuts the trained tokens first.
            self.supervised_per_epoch += max(0, trained - (total - kept))
        longest = max(sides[0][0], sides[1][0])
        if ctx and longest > ctx:
            self._too_long(n, longest, " (prompt + the longer output)")

    def _too_long(self, n: int, total: int, what: str) -> None:
        self.over_context += 1
        about = "" if self.counted else "~"
        self.log.add(n, "too_long", "warning", f"{about}{total} tokens{what} > context length {self.context_length}: "
                                               "the example will be truncated")

    def finish(self, path: Path, is_validation: bool) -> None:
        self.flush()
        if self.examples == 0 and not self.fatal:
            empty = path.stat().st_size == 0
            self.log.add(None, "empty_file", "error", "the file is empty" if empty else "the file has only blank lines")
        elif 0 < self.examples < MIN_EXAMPLES and not is_validation:
            self.log.add(None, "too_few_examples", "error",
                         f"{self.examples} example(s); OpenAI requires at least {MIN_EXAMPLES} to start a job")
        if len(self.systems) > 1:
            common = max(self.systems.items(), key=lambda kv: kv[1][0])
            for text, (count, first) in self.systems.items():
                if text != common[0]:
                    self.log.add(first, "inconsistent_system_prompt", "warning",
                                 f"system prompt {text[:50]!r} ({count} example(s)) differs from the most common one "
                                 f"(line {common[1][1]}, {common[1][0]} examples)")


def _summaries(scan: _Scan, counted: bool) -> dict:
    stats = {
        "examples": scan.examples,
        "valid_examples": scan.valid,
        "messages_per_example": scan.n_messages.summary(),
        "tokens_per_example": scan.tokens.summary(),
        "trained_tokens_per_example": scan.trained.summary(),
        "total_tokens": scan.tokens.total,
        "total_trained_tokens": scan.trained.total,
        "tokens_counted_with": "tokenizer" if counted else "estimate (4 characters per token)",
        "context_length": scan.context_length,
        "examples_over_context": scan.over_context,
        "distinct_system_prompts": len(scan.systems),
        "duplicates": scan.log.counts["warning"]["duplicate_example"],
        "percentiles_sampled": not scan.tokens.exact,
    }
    if scan.format == "preference":
        # A pair is two sequences: tokens_per_example counts the prompt twice; trained = preferred + non-preferred.
        stats["preferred_tokens_per_example"] = scan.preferred.summary()
        stats["non_preferred_tokens_per_example"] = scan.non_preferred.summary()
    return stats


def _scan_file(path: Path, count: CountTokens, counted: bool, context_length: int | None,
               expected_format: str | None, train_hashes: dict | None, is_validation: bool) -> tuple[Report, _Scan]:
    scan = _Scan(count, counted, context_length, expected_format, train_hashes)
    for item in read_jsonl(path):
        scan.line(item)
    scan.finish(path, is_validation)
    report = Report(
        path=str(path), format=scan.format or expected_format or "chat", examples=scan.examples,
        errors=scan.log.errors, warnings=scan.log.warnings, error_counts=dict(scan.log.counts["error"]),
        warning_counts=dict(scan.log.counts["warning"]), stats=_summaries(scan, counted), estimate=None,
        tokens_are_estimates=not counted,
    )
    return report, scan


def validate_file(path: str | Path, *, validation_path: str | Path | None = None,
                  count_tokens: CountTokens | None = None, context_length: int | None = None,
                  model: str | None = None, device: str = "cpu", n_epochs: int | None = None) -> Report:
    """Validate `path` (and `validation_path`): every problem, stats and estimates, in bounded memory.

    count_tokens: batched counter (texts -> counts), e.g. tokens.counter_from_tokenizer(tok); None estimates.
    context_length: examples longer than this get a `too_long` warning and count as truncated in estimates.
    model/device: which throughput figure estimates the training time. n_epochs: an explicit epoch count
    (None = auto); past the auto rule it gets an `overfit_risk` warning. Raises jsonl.JsonlFileError (an
    OSError) only when a file cannot be opened.
    """
    counted = count_tokens is not None
    count = count_tokens or estimate_tokens
    report, scan = _scan_file(Path(path), count, counted, context_length, None, None, False)
    report.estimate = estimate_training(scan.valid, scan.tokens_per_epoch, scan.supervised_per_epoch,
                                        model=model, device=device, n_epochs=n_epochs,
                                        has_validation_file=validation_path is not None,
                                        method="dpo" if report.format == "preference" else "supervised")
    risk = overfit_risk(scan.valid, n_epochs) if n_epochs is not None else None
    if risk:
        report.warnings.append(Issue(None, "overfit_risk", "warning", risk))
        report.warning_counts["overfit_risk"] = 1
    if validation_path is not None:
        report.validation, _ = _scan_file(Path(validation_path), count, counted, context_length,
                                          scan.format, scan.seen, True)
    return report
