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
from dmpo_trl.data.loading import LoadedData, load_preference_files


__all__ = ["Distribution", "ValidationReport", "check_pair", "validate_dataset", "validate_row"]


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
        if not values:
            return cls()
        return cls(
            len(values), min(values), sum(values) / len(values), max(values), dict(sorted(Counter(values).items()))
        )

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
        dataset_or_rows: a `datasets.Dataset`, a list of row dicts, a data path (file, folder or glob: read by the
            loader `dmpo-trl train` uses, `load_preference_files`) or what that loader returned.
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
    from tqdm.auto import tqdm

    if isinstance(dataset_or_rows, (str, Path)):
        dataset_or_rows = load_preference_files(str(dataset_or_rows), skip_invalid=skip_invalid)
    loaded = dataset_or_rows if isinstance(dataset_or_rows, LoadedData) else None
    rows_in = loaded.dataset if loaded is not None else dataset_or_rows
    total = len(rows_in) if hasattr(rows_in, "__len__") else None
    stats: list[_RowStats] = []
    skipped: list[SkippedRow] = list(loaded.skipped) if loaded is not None else []
    details: list[dict[str, Any]] = []
    for row, example in enumerate(tqdm(rows_in, total=total, desc="Validating", disable=not progress)):
        try:
            stats.append(validate_row(tokenizer, example, row, max_length))
        except DMPODataError as err:
            err = loaded.locate(err) if loaded is not None else err
            refused = refusal(err, skip_invalid)
            if refused is not None:
                raise refused from None
            skipped.append(SkippedRow(err.row, str(err), err.source))
            continue
        if per_row:
            where = loaded.sources[row] if loaded is not None and row < len(loaded.sources) else None
            s = stats[-1]
            details.append(
                {
                    "row": where.row if where else row,
                    **({"file": where.file} if where else {}),
                    "prompt_tokens": s.prompt_tokens,
                    "tokens": dict(zip(("chosen", "rejected"), s.lengths, strict=True)),
                    "kept_tokens": dict(zip(("chosen", "rejected"), s.kept_lengths, strict=True)),
                    "kept_actions": dict(zip(("chosen", "rejected"), s.kept, strict=True)),
                }
            )
    if loaded is not None:  # the loader's skipped rows and these, in file order
        order = {file: i for i, file in enumerate(loaded.files)}
        skipped.sort(key=lambda s: (order.get(s.source, len(order)), s.row if s.row is not None else -1))
    rows = loaded.rows_read if loaded is not None and loaded.rows_read is not None else len(stats) + len(skipped)
    report = _report(rows, stats, skipped, max_length)
    report.per_row = details if per_row else None
    return report


def _report(rows: int, stats: list[_RowStats], skipped: list[SkippedRow], max_length: int | None) -> ValidationReport:
    return ValidationReport(
        rows=rows,
        pairs=len(stats),
        max_length=max_length,
        actions={
            side: Distribution.of([s.actions[i] for s in stats]) for i, side in enumerate(("chosen", "rejected"))
        },
        tokens={
            "prompt": Distribution.of([s.prompt_tokens for s in stats]),
            "chosen": Distribution.of([s.lengths[0] for s in stats]),
            "rejected": Distribution.of([s.lengths[1] for s in stats]),
        },
        total_tokens=sum(sum(s.lengths) for s in stats),
        action_tokens=sum(s.action_tokens for s in stats),
        pairs_truncated=sum(1 for s in stats if s.kept != s.actions),
        actions_total=sum(sum(s.actions) for s in stats),
        actions_dropped=sum(sum(s.actions) - sum(s.kept) for s in stats),
        tokens_dropped=sum(sum(s.lengths) - sum(s.kept_lengths) for s in stats),
        skipped=skipped,
    )


def report_json(report: ValidationReport) -> str:
    """The report as indented JSON."""
    return json.dumps(report.to_dict(), indent=2)
