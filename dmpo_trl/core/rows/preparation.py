"""Dataset preparation: every row through `prepare_pair`, with the counts and errors around it.

`prepare_dataset` is what `DMPOTrainer._prepare_dataset` runs, and what `dmpo-trl train` runs before it loads the model
(so a bad file fails in seconds, not after the model has loaded). It tokenizes every row (`prepare_row` via
`datasets.map`, main process first under a multi-process launch), and then:

- an empty dataset is an error (`require_rows`; TRL's own code would stop with a bare ``StopIteration``);
- rows whose prompt leaves no room for an action within ``max_length`` (by default, as DPOTrainer drops them) and,
  with ``skip_invalid_pairs=True``, every unusable row are dropped, counted and logged with their whole reasons
  (``skip_invalid_pairs=False`` makes every one an error); when no row is left, that is an error that says so (torch would report ``num_samples=0``). A streamed dataset is filtered as it
  is read: each skipped row is logged once and counted in the returned statistics, and a stream whose rows are all
  unusable is an error;
- pairs that lose actions to ``max_length`` are counted and logged (their kept actions keep their weights);
- a schema that stores tool-call arguments or tools as Arrow structs is reported (`dmpo_trl.core.rows.normalize`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from accelerate.logging import get_logger
from datasets import Dataset, IterableDataset

from ..errors import DMPODataError
from .checks import NO_ACTION_FITS, prepare_pair
from .columns import TOKENIZED_COLUMNS
from .normalize import struct_columns


__all__ = [
    "SKIP_REASON_COLUMN",
    "prepare_dataset",
    "prepare_row",
    "refusal",
    "require_rows",
    "skipped_summary",
    "truncation_stats",
]

logger = get_logger(__name__)

#: Why `prepare_row` could not use a row, ``"<side>: <reason>"`` (``""`` for a usable row); only with ``skip_invalid``.
SKIP_REASON_COLUMN = "dmpo_skip_reason"
#: Distinct skip reasons a log message lists in full (the rest are counted).
MAX_REASONS_LOGGED = 20

RowLabel = Callable[[int], str]


def require_rows(dataset, name: str) -> None:
    """Raise `DMPODataError` if `dataset` (a split, or a dict of splits) has no rows; None passes."""
    if dataset is None:
        return
    if isinstance(dataset, Mapping):
        for key, split in dataset.items():
            require_rows(split, key)
        return
    empty = len(dataset) == 0 if hasattr(dataset, "__len__") else next(iter(dataset), None) is None
    if empty:
        raise DMPODataError(f"the {name} dataset has no rows: there is nothing to train on")


#: What the trainer's error for any other unusable row adds, so the user knows the switch.
SKIP_HINT = " (set skip_invalid_pairs=True to drop the rows DMPO cannot train on, with a warning)"
#: What the strict mode's error for an over-long row adds, so the user knows the switch.
STRICT_HINT = (
    " (skip_invalid_pairs=False is the strict mode; by default such rows are dropped with a warning, as DPOTrainer "
    "drops rows whose prompt fills max_length)"
)


def refusal(err: DMPODataError, skip_invalid: bool | None) -> DMPODataError | None:
    """The error to raise for a row that failed `prepare_pair`, or None when the policy drops the row.

    ``skip_invalid=True`` drops every such row; ``None`` (the default, DPOTrainer's behaviour) drops the rows whose
    prompt leaves no room for an action within ``max_length`` and raises for the others; ``False`` (strict) raises for
    every row, the over-long error naming ``skip_invalid_pairs``. `dmpo-trl validate` applies the same rule."""
    overlong = err.reason.startswith(NO_ACTION_FITS)
    if skip_invalid or (skip_invalid is None and overlong):
        return None
    if overlong:
        return DMPODataError(err.reason + STRICT_HINT, err.row, err.side, err.source)
    return err


def skip_policy(skip_invalid: bool | None) -> str:
    """How a log message names the policy that dropped rows (`DMPOConfig.skip_invalid_pairs`)."""
    return "skip_invalid_pairs=True" if skip_invalid else "no action fits within max_length; as DPOTrainer drops them"


def prepare_row(
    example: Mapping[str, Any], idx: int, *, tokenizer, max_length: int | None, skip_invalid: bool | None
) -> dict[str, Any]:
    """`datasets.map` function: `prepare_pair`, plus `SKIP_REASON_COLUMN`.

    A row DMPO cannot use gets empty columns and its reason (`DMPODataError.reason`, the side prefixed), so the
    caller can count, report and drop it, when ``skip_invalid`` says so: ``True`` for every such row, ``None`` (the
    default, DPOTrainer's behaviour) only for rows whose prompt leaves no room for an action within `max_length`
    (`refusal`). Otherwise it raises; ``False`` is the strict mode (over-long rows raise too, naming
    ``skip_invalid_pairs``)."""
    try:
        out = prepare_pair(tokenizer, example, row=idx, max_length=max_length)
        out[SKIP_REASON_COLUMN] = ""
    except DMPODataError as err:
        refused = refusal(err, skip_invalid)
        if refused is err:  # the trainer's error names the switch that would drop the row
            raise DMPODataError(err.reason + SKIP_HINT, err.row, err.side, err.source) from err
        if refused is not None:
            raise refused from err
        out = {key: [] for key in TOKENIZED_COLUMNS[:5]}
        out.update(dict.fromkeys(TOKENIZED_COLUMNS[5:], 0))
        out[SKIP_REASON_COLUMN] = f"{err.side}: {err.reason}" if err.side else err.reason
    return out


def prepare_dataset(
    dataset, tokenizer, args, name: str, *, row_label: RowLabel | None = None
) -> tuple[Any, dict[str, Any] | None]:
    """Tokenize and check every row of `dataset` as `DMPOTrainer` trains on it; returns ``(prepared, stats)``.

    Args:
        dataset: a `datasets.Dataset` or `IterableDataset` in the project format (an already prepared one is
            returned as it is, with stats None).
        tokenizer: the tokenizer with its chat template.
        args: the `DMPOConfig` (``max_length``, ``skip_invalid_pairs``, ``dataset_num_proc``).
        name: the split's name for messages (``"train"``, ``"eval"``).
        row_label: how to name row ``i`` in messages (default ``"row i"``); the CLI names the file and its row.

    Returns:
        the prepared dataset and `truncation_stats` (for a streamed dataset: a dict whose ``pairs_skipped`` grows
        as the stream is read).

    Raises:
        `DMPODataError`: an empty dataset, a bad row (without ``skip_invalid_pairs``), or no usable row left.
    """
    require_rows(dataset, name)
    if "chosen_turn_ids" in next(iter(dataset)):  # already prepared (e.g. by `dmpo-trl train` before the model loaded)
        return dataset, None
    map_kwargs: dict[str, Any] = {"with_indices": True}
    if isinstance(dataset, Dataset):
        map_kwargs.update(num_proc=args.dataset_num_proc, desc=f"Tokenizing {name} dataset with turn masks")
    fn_kwargs = {"tokenizer": tokenizer, "max_length": args.max_length, "skip_invalid": args.skip_invalid_pairs}
    # Under a multi-process launch the main process tokenizes first and the others read its cache, as in TRL
    from trl.trainer.utils import global_then_local_main_first  # here: `dmpo-trl validate` needs no trainer stack

    with global_then_local_main_first():
        features = getattr(dataset, "features", None)
        dataset = dataset.map(prepare_row, fn_kwargs=fn_kwargs, **map_kwargs)
        merged = struct_columns(features)
        if merged:
            logger.warning(
                f"The {name} dataset stores {', '.join(merged)} as Arrow structs, merged over all rows: keys of other rows "
                "read back as None in every row. DMPO drops those None values before rendering (an explicit null in such "
                "a dict goes too), but Arrow may also have widened numbers (1 -> 1.0). For an exact round trip store them "
                "as JSON strings (`dmpo-trl convert` and `dmpo_trl.data.io.write_records` do).",
                main_process_only=True,
            )
    if isinstance(dataset, IterableDataset):
        stats: dict[str, Any] = {"streaming": True, "pairs_skipped": 0, "max_length": args.max_length}
        skips = StreamSkips(name, stats, row_label, skip_policy(args.skip_invalid_pairs))
        dataset = dataset.filter(skips, with_indices=True, input_columns=SKIP_REASON_COLUMN)
        if next(iter(dataset), None) is None:
            raise DMPODataError(
                f"all {stats['pairs_skipped']} rows of the streamed {name} dataset were skipped "
                f"({skip_policy(args.skip_invalid_pairs)}), nothing is left to train on (the reasons are logged above)"
            )
        return dataset, stats
    reasons = dataset[SKIP_REASON_COLUMN]
    skipped = sum(1 for r in reasons if r)
    if skipped:
        summary = skipped_summary(reasons, row_label=row_label)
        if skipped == len(dataset):
            raise DMPODataError(
                f"all {skipped} rows of the {name} dataset were skipped ({skip_policy(args.skip_invalid_pairs)}), "
                f"nothing is left to train on: {summary}"
            )
        logger.warning(
            f"Skipped {skipped}/{len(dataset)} rows of the {name} dataset that DMPO cannot train on "
            f"({skip_policy(args.skip_invalid_pairs)}): {summary}",
            main_process_only=True,
        )
        dataset = dataset.filter(lambda e: e == "", input_columns=SKIP_REASON_COLUMN, desc="Dropping invalid rows")
    stats = truncation_stats(dataset, args.max_length, skipped)
    if stats["pairs_truncated"]:
        logger.warning(
            f"{name}: at max_length={args.max_length}, {stats['pairs_truncated']}/{stats['pairs']} pairs lose trailing "
            f"actions ({stats['actions_dropped']}/{stats['actions']} actions dropped; kept actions keep their DMPO "
            "weights).",
            main_process_only=True,
        )
    return dataset, stats


class StreamSkips:
    """`IterableDataset.filter` function: keeps the usable rows, counts each skipped row once (in
    ``stats["pairs_skipped"]``) and logs its whole reason the first time it is read."""

    def __init__(
        self,
        name: str,
        stats: dict[str, Any],
        row_label: RowLabel | None = None,
        policy: str = "skip_invalid_pairs=True",
    ) -> None:
        self.name, self.stats, self.row_label, self.policy = name, stats, row_label, policy
        self.seen: set[int] = set()

    def __call__(self, reason: str, idx: int) -> bool:
        if not reason:
            return True
        if idx not in self.seen:
            self.seen.add(idx)
            self.stats["pairs_skipped"] = len(self.seen)
            label = self.row_label(idx) if self.row_label else f"row {idx}"
            logger.warning(
                f"Skipped {label} of the streamed {self.name} dataset ({self.policy}; "
                f"{len(self.seen)} skipped so far): {reason}"
            )
        return False


def skipped_summary(reasons: Sequence[str], rows_shown: int = 5, *, row_label: RowLabel | None = None) -> str:
    """``"2x <reason> (rows 1, 3); 1x <reason> (rows 4)"``: the non-empty `SKIP_REASON_COLUMN` values, grouped by
    their whole text (most frequent first, up to `MAX_REASONS_LOGGED` of them), with the first rows of each."""
    rows: dict[str, list[int]] = {}
    for row, reason in enumerate(reasons):
        if reason:
            rows.setdefault(reason, []).append(row)
    groups = sorted(rows.items(), key=lambda item: -len(item[1]))
    parts = []
    for reason, where in groups[:MAX_REASONS_LOGGED]:
        labels = [row_label(i) for i in where[:rows_shown]] if row_label else [str(i) for i in where[:rows_shown]]
        shown = ", ".join(labels) + (", ..." if len(where) > rows_shown else "")
        parts.append(f"{len(where)}x {reason} ({shown if row_label else 'rows ' + shown})")
    if len(groups) > MAX_REASONS_LOGGED:
        parts.append(
            f"and {len(groups) - MAX_REASONS_LOGGED} other reasons (`dmpo-trl validate --skip-invalid` lists them all)"
        )
    return "; ".join(parts)


def truncation_stats(dataset, max_length: int | None, skipped: int) -> dict[str, Any]:
    """Pairs, skipped pairs, and what truncation at `max_length` drops, over a prepared `datasets.Dataset`."""
    total = kept = truncated = 0
    for tw, tl, kw, kl in zip(*(dataset[c] for c in TOKENIZED_COLUMNS[5:]), strict=True):
        total += tw + tl
        kept += kw + kl
        truncated += (kw < tw) or (kl < tl)
    return {
        "pairs": len(dataset),
        "pairs_skipped": skipped,
        "pairs_truncated": truncated,
        "actions": total,
        "actions_dropped": total - kept,
        "max_length": max_length,
    }
