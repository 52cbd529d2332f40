"""Dataset validation: every check the trainer makes, up front, with a report of what the data looks like.

`validate_dataset` runs on each row what the trainer runs (`dmpo_trl.core.rows.checks.prepare_pair`): `check_pair` (structure:
roles, emptiness, text content, the prompt shared by both sides), the core tokenizer (`tokenize_pair`: chat-template
alignment, per-token turn ids) and the truncation at `max_length` (`truncate_trajectory`: a side that keeps no action,
or a pair whose kept trajectories are the same, is an error). Files are read by the loader `dmpo-trl train` uses
(`dmpo_trl.data.loading`), so the report counts the rows and tokens the trainer will train on. It reports pairs,
actions per side, tokens, the share of action tokens and what truncation costs.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dmpo_trl.core.errors import DMPODataError
from dmpo_trl.core.rows.checks import check_pair, prepare_pair
from dmpo_trl.core.rows.preparation import refusal
from dmpo_trl.core.rows.tokenization import NOT_ACTION, truncate_trajectory
from dmpo_trl.data.common import SkippedRow
from dmpo_trl.data.io import expand_data_paths
from dmpo_trl.data.loading import LoadedData, RowSource, checked_rows


__all__ = [
    "Distribution",
    "ValidationReport",
    "check_pair",
    "scan_files",
    "validate_dataset",
    "validate_files",
    "validate_row",
]


@dataclass
class Distribution:
    """min / mean / max of a count over pairs, and its histogram (value -> how many)."""

    count: int = 0
    min: int = 0
    mean: float = 0.0
    max: int = 0
    histogram: dict[int, int] = field(default_factory=dict)

    @classmethod
    def of(cls, values: list[int]) -> Distribution:
        return cls.of_counts(Counter(values))

    @classmethod
    def of_counts(cls, counts: Counter) -> Distribution:
        """From a histogram (value -> how many): what `of` gives for the values it counts."""
        n = sum(counts.values())
        if not n:
            return cls()
        mean = sum(v * k for v, k in counts.items()) / n
        return cls(n, min(counts), mean, max(counts), dict(sorted(counts.items())))

    def line(self) -> str:
        return f"min {self.min}, mean {self.mean:.2f}, max {self.max}"


@dataclass
class ValidationReport:
    """What `validate_dataset` found. All counts are over the valid pairs unless named otherwise."""

    rows: int
    """Rows read (valid + skipped)."""
    pairs: int
    """Valid pairs."""
    max_length: int | None
    actions: dict[str, Distribution]
    """Actions (assistant messages, `T`) per side: `chosen`, `rejected`."""
    tokens: dict[str, Distribution]
    """Token lengths before truncation: `prompt`, and whole trajectories (prompt + side) `chosen`, `rejected`."""
    total_tokens: int
    """Tokens of both trajectories of every pair (prompt counted once per side), before truncation."""
    action_tokens: int
    """Of those, tokens that carry weight (action tokens, end-of-turn included)."""
    pairs_truncated: int
    """Pairs where `max_length` cuts at least one action from a side."""
    actions_total: int
    """Actions on both sides of all pairs."""
    actions_dropped: int
    """Actions cut by `max_length` (they keep no weight)."""
    tokens_dropped: int
    """Tokens cut by `max_length`."""
    skipped: list[SkippedRow] = field(default_factory=list)
    per_row: list[dict[str, Any]] | None = None
    """With ``per_row=True``: for each valid pair, its row (and file) and token counts before and after truncation."""

    @property
    def action_token_share(self) -> float:
        return self.action_tokens / self.total_tokens if self.total_tokens else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (what `dmpo-trl validate --json` prints)."""
        data = asdict(self)
        data["action_token_share"] = self.action_token_share
        data["skipped"] = [
            {"row": s.row, "reason": s.reason, **({"file": s.source} if s.source else {})} for s in self.skipped
        ]
        if self.per_row is None:
            del data["per_row"]
        return data

    def format(self) -> str:
        """The human-readable report (what `dmpo-trl validate` prints)."""
        lines = [f"rows: {self.rows}    valid pairs: {self.pairs}    skipped: {len(self.skipped)}"]
        for side in ("chosen", "rejected"):
            dist = self.actions[side]
            hist = "  ".join(f"{t}:{n}" for t, n in dist.histogram.items())
            lines.append(f"actions per {side:<8} {dist.line()}    histogram (T:pairs) {hist}")
        for key in ("prompt", "chosen", "rejected"):
            label = "prompt" if key == "prompt" else f"prompt+{key}"
            lines.append(f"tokens {label:<16} {self.tokens[key].line()}")
        lines.append(
            f"tokens total {self.total_tokens}, action tokens {self.action_tokens} "
            f"({100 * self.action_token_share:.1f}% carry weight)"
        )
        if self.max_length is None:
            lines.append("max_length: none (no truncation)")
        else:
            share = 100 * self.actions_dropped / self.actions_total if self.actions_total else 0.0
            pair_share = 100 * self.pairs_truncated / self.pairs if self.pairs else 0.0
            lines.append(
                f"truncation at max_length={self.max_length}: {self.pairs_truncated}/{self.pairs} pairs "
                f"({pair_share:.1f}%) lose actions; {self.actions_dropped}/{self.actions_total} actions ({share:.1f}%) "
                f"and {self.tokens_dropped} tokens dropped"
            )
        for s in self.skipped:
            lines.append(f"skipped {s.reason}")
        return "\n".join(lines)


class _Totals:
    """What the report needs, accumulated row by row in memory that does not grow with the rows: one histogram per
    distribution (bounded by the distinct values) and sums."""

    def __init__(self) -> None:
        self.pairs = 0
        self.hist = {name: Counter() for name in ("chosen_T", "rejected_T", "prompt", "chosen", "rejected")}
        self.total_tokens = self.action_tokens = self.pairs_truncated = 0
        self.actions_total = self.actions_dropped = self.tokens_dropped = 0

    def add(self, s: _RowStats) -> None:
        self.pairs += 1
        for name, value in zip(
            ("chosen_T", "rejected_T", "prompt", "chosen", "rejected"),
            (*s.actions, s.prompt_tokens, *s.lengths),
            strict=True,
        ):
            self.hist[name][value] += 1
        self.total_tokens += sum(s.lengths)
        self.action_tokens += s.action_tokens
        self.pairs_truncated += s.kept != s.actions
        self.actions_total += sum(s.actions)
        self.actions_dropped += sum(s.actions) - sum(s.kept)
        self.tokens_dropped += sum(s.lengths) - sum(s.kept_lengths)


@dataclass
class _RowStats:
    actions: tuple[int, int]
    kept: tuple[int, int]
    prompt_tokens: int
    lengths: tuple[int, int]
    action_tokens: int
    kept_lengths: tuple[int, int]


def validate_row(
    tokenizer, example: Mapping[str, Any], row: int | None = None, max_length: int | None = None
) -> _RowStats:
    """Check one row as the trainer would; raise `DMPODataError` naming the row and the reason."""
    out = prepare_pair(tokenizer, example, row, max_length)
    prompt = out["prompt_ids"]
    actions, kept, lengths, kept_lengths = [], [], [], []
    action_tokens = 0
    for side in ("chosen", "rejected"):
        ids = prompt + out[f"{side}_ids"]
        turn_ids = [NOT_ACTION] * len(prompt) + out[f"{side}_turn_ids"]
        cut_ids, _, _ = truncate_trajectory(len(prompt), ids, turn_ids, max_length)
        actions.append(out[f"{side}_num_turns"])
        kept.append(out[f"{side}_kept_turns"])
        lengths.append(len(ids))
        kept_lengths.append(len(cut_ids))
        action_tokens += sum(1 for t in turn_ids if t >= 0)
    return _RowStats(tuple(actions), tuple(kept), len(prompt), tuple(lengths), action_tokens, tuple(kept_lengths))


def validate_dataset(
    dataset_or_rows: Iterable[Mapping[str, Any]] | str | Path | LoadedData,
    tokenizer,
    max_length: int | None = None,
    skip_invalid: bool | None = None,
    *,
    progress: bool = True,
    per_row: bool = False,
) -> ValidationReport:
    """Check every row as the trainer would and describe the dataset.

    Args:
        dataset_or_rows: a `datasets.Dataset`, a list of row dicts, a data path (file, folder or glob: streamed by
            `validate_files`) or what the loader `dmpo-trl train` uses (`load_preference_files`) returned.
        tokenizer: the fast tokenizer (with its chat template) the model will train with.
        max_length: the trainer's `max_length` (tokens per trajectory, prompt included); None: no truncation.
        skip_invalid: the trainer's `skip_invalid_pairs`: True reports every bad row (count and reasons) instead of
            raising at the first one; None (the default) reports the rows whose prompt leaves no room for an action
            within `max_length`, as the trainer drops them, and raises for the others; False raises for every one.
        progress: show a tqdm progress bar.
        per_row: also list every valid pair's token counts (`ValidationReport.per_row`).

    Raises:
        `DMPODataError` at the first bad row (unless `skip_invalid`), naming the row (and its file) and the reason.
    """
    if isinstance(dataset_or_rows, (str, Path)):
        return validate_files([str(dataset_or_rows)], tokenizer, max_length, skip_invalid, progress=progress)
    loaded = dataset_or_rows if isinstance(dataset_or_rows, LoadedData) else None
    rows_in = loaded.dataset if loaded is not None else dataset_or_rows
    total = len(rows_in) if hasattr(rows_in, "__len__") else None

    def where(row: int) -> RowSource | None:
        return loaded.sources[row] if loaded is not None and row < len(loaded.sources) else None

    skipped: list[SkippedRow] = list(loaded.skipped) if loaded is not None else []
    items = ((example, row, where(row)) for row, example in enumerate(rows_in))
    totals, details = _validate_rows(
        items,
        tokenizer,
        max_length,
        skip_invalid,
        skipped,
        loaded.locate if loaded else None,
        progress,
        total,
        per_row,
    )
    if loaded is not None:  # the loader's skipped rows and these, in file order
        order = {file: i for i, file in enumerate(loaded.files)}
        skipped.sort(key=lambda s: (order.get(s.source, len(order)), s.row if s.row is not None else -1))
    rows = loaded.rows_read if loaded is not None and loaded.rows_read is not None else totals.pairs + len(skipped)
    report = _report(rows, totals, skipped, max_length)
    report.per_row = details if per_row else None
    return report


def scan_files(paths: Iterable[str] | str, skip_invalid: bool | None = False) -> tuple[int, list[SkippedRow]]:
    """The structural checks (`check_pair`) of every row of the data files, streamed: (rows read, rows skipped).

    What `load_preference_files` checks, without keeping a row: a bad file fails here, before any tokenizer loads.
    Raises like `load_preference_files` (the first bad row unless `skip_invalid`; nothing left after skipping)."""

    skipped: list[SkippedRow] = []
    rows = 0
    for file, in_folder in expand_data_paths(paths):
        for _ in checked_rows(file, in_folder, bool(skip_invalid), "project", skipped.append):
            rows += 1
    if not rows:
        raise DMPODataError(
            f"all {len(skipped)} rows fail the checks and were skipped, nothing is left; the first: "
            f"{skipped[0].reason}"
        )
    return rows + len(skipped), skipped


def validate_files(
    paths: Iterable[str] | str,
    tokenizer,
    max_length: int | None = None,
    skip_invalid: bool | None = None,
    *,
    progress: bool = True,
    per_row: bool = False,
) -> ValidationReport:
    """`validate_dataset` of data files in the project format, streamed: rows are read, checked and counted one at a
    time (memory does not grow with the rows, except for the skipped rows' reasons and ``per_row``'s list), in the
    order and with the errors of `load_preference_files` (each naming its file and row there)."""

    files = expand_data_paths(paths)
    dropped: list[SkippedRow] = []  # by the structural checks, as the loader drops them
    read = 0

    def items():
        nonlocal read
        for file, in_folder in files:
            for row, record in checked_rows(file, in_folder, bool(skip_invalid), "project", dropped.append):
                read += 1
                yield record, row, RowSource(file, row)

    skipped: list[SkippedRow] = []
    totals, details = _validate_rows(
        items(), tokenizer, max_length, skip_invalid, skipped, None, progress, None, per_row
    )
    order = {file: i for i, (file, _) in enumerate(files)}
    skipped = sorted(dropped + skipped, key=lambda s: (order.get(s.source, len(order)), s.row or 0))
    report = _report(read + len(dropped), totals, skipped, max_length)
    report.per_row = details if per_row else None
    return report


def _validate_rows(items, tokenizer, max_length, skip_invalid, skipped, locate, progress, total, per_row):
    """Validate ``(example, row, source)`` items into `_Totals` (and per-row details); bad rows per `refusal`.
    ``source`` is the row's `RowSource` (or None); without `locate`, errors are located with it."""
    from tqdm.auto import tqdm

    totals = _Totals()
    details: list[dict[str, Any]] = []
    for example, row, source in tqdm(items, total=total, desc="Validating", disable=not progress, unit=" rows"):
        try:
            s = validate_row(tokenizer, example, row, max_length)
        except DMPODataError as err:
            if locate is not None:
                err = locate(err)
            elif source is not None:
                err = DMPODataError(err.reason, source.row, err.side, source=source.file)
            refused = refusal(err, skip_invalid)
            if refused is not None:
                raise refused from None
            skipped.append(SkippedRow(err.row, str(err), err.source))
            continue
        totals.add(s)
        if per_row:
            details.append(
                {
                    "row": source.row if source else row,
                    **({"file": source.file} if source else {}),
                    "prompt_tokens": s.prompt_tokens,
                    "tokens": dict(zip(("chosen", "rejected"), s.lengths, strict=True)),
                    "kept_tokens": dict(zip(("chosen", "rejected"), s.kept_lengths, strict=True)),
                    "kept_actions": dict(zip(("chosen", "rejected"), s.kept, strict=True)),
                }
            )
    return totals, details


def _report(rows: int, totals: _Totals, skipped: list[SkippedRow], max_length: int | None) -> ValidationReport:
    dist = {name: Distribution.of_counts(counts) for name, counts in totals.hist.items()}
    return ValidationReport(
        rows=rows,
        pairs=totals.pairs,
        max_length=max_length,
        actions={"chosen": dist["chosen_T"], "rejected": dist["rejected_T"]},
        tokens={"prompt": dist["prompt"], "chosen": dist["chosen"], "rejected": dist["rejected"]},
        total_tokens=totals.total_tokens,
        action_tokens=totals.action_tokens,
        pairs_truncated=totals.pairs_truncated,
        actions_total=totals.actions_total,
        actions_dropped=totals.actions_dropped,
        tokens_dropped=totals.tokens_dropped,
        skipped=skipped,
    )


def report_json(report: ValidationReport) -> str:
    """The report as indented JSON."""
    return json.dumps(report.to_dict(), indent=2)
