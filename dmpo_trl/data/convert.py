"""Converters from common agent-trajectory formats to the project's dataset format.

Every converter takes an iterable of records (dicts, e.g. `json.load`-ed) and returns a `ConvertedRows`: a
list of project rows `{"prompt", "chosen", "rejected", "tools"?, ...metadata}` that all pass `check_pair`,
plus `skipped` (rows left out with `skip_invalid=True`, with reasons) and `stats` (counts).
A malformed record raises `DMPODataError` naming the row and the reason, unless `skip_invalid=True`.

    from dmpo_trl.data.convert import convert
    rows = convert(records, "sharegpt")  # or from_sharegpt(records)

Formats: `eto` (ETO/DMPO preference pairs), `sharegpt`, `openai`, `project` (checked, passed through), and
`pair_eto_rollouts` (ETO expert trajectories + agent rollouts with rewards; two inputs).
See `docs/dataset_format.md` for examples of each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dmpo_trl.core.rows.checks import check_pair
from dmpo_trl.data.common import ConvertedRows, SkippedRow, StreamedRows, convert_rows, split_shared_prefix
from dmpo_trl.data.eto import ETO_TASK_PRESETS, from_eto_pairs, pair_eto_rollouts
from dmpo_trl.data.openai_chat import from_openai
from dmpo_trl.data.sharegpt import from_sharegpt


def from_project(records: Iterable[Any], *, skip_invalid: bool = False, stream: bool = False) -> ConvertedRows:
    """Rows already in the project format: checked with `check_pair` and passed through unchanged."""

    def one(record: Mapping[str, Any], row: int) -> dict[str, Any]:
        return dict(record)

    return convert_rows(records, one, skip_invalid=skip_invalid, stream=stream)


CONVERTERS: dict[str, Callable[..., ConvertedRows]] = {
    "eto": from_eto_pairs,
    "sharegpt": from_sharegpt,
    "openai": from_openai,
    "project": from_project,
}


def convert(records: Iterable[Any], fmt: str, *, skip_invalid: bool = False, stream: bool = False) -> ConvertedRows:
    """Convert `records` from format `fmt` (one of `CONVERTERS`) to the project format; `stream=True` gives a
    `StreamedRows` that converts as it is iterated (bounded memory: `dmpo-trl convert`)."""
    if fmt not in CONVERTERS:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(CONVERTERS)}")
    return CONVERTERS[fmt](records, skip_invalid=skip_invalid, stream=stream)


__all__ = [
    "CONVERTERS",
    "ETO_TASK_PRESETS",
    "ConvertedRows",
    "SkippedRow",
    "StreamedRows",
    "check_pair",
    "convert",
    "from_eto_pairs",
    "from_openai",
    "from_project",
    "from_sharegpt",
    "pair_eto_rollouts",
    "split_shared_prefix",
]
