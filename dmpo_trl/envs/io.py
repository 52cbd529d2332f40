"""Writing pair sets: JSONL files (through `dmpo_trl.data.io`), `datasets.Dataset`s, and the Hugging Face Hub."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dmpo_trl.data.io import write_records


__all__ = ["push_to_hub", "save_jsonl_splits", "to_dataset", "to_dataset_dict"]


def save_jsonl_splits(splits: Mapping[str, list[dict[str, Any]]], out_dir: str | Path) -> dict[str, Path]:
    """Write ``<out_dir>/<split>.jsonl`` for every split; returns the paths."""
    paths = {name: Path(out_dir) / f"{name}.jsonl" for name in splits}
    for name, rows in splits.items():
        write_records(rows, paths[name])
    return paths


def to_dataset(rows: list[dict[str, Any]]):
    """A `datasets.Dataset` of the rows (the trainer takes it as `train_dataset`)."""
    from datasets import Dataset

    if not rows:
        raise ValueError("no rows to turn into a dataset")
    return Dataset.from_list(rows)


def to_dataset_dict(splits: Mapping[str, list[dict[str, Any]]]):
    """A `datasets.DatasetDict` with one split per non-empty list."""
    from datasets import DatasetDict

    return DatasetDict({name: to_dataset(rows) for name, rows in splits.items() if rows})


def push_to_hub(splits: Mapping[str, list[dict[str, Any]]], repo_id: str, *, private: bool = True) -> None:
    """Push the splits to the Hugging Face Hub as a dataset repository (needs network access and a login).

    Raises:
        ConnectionError: the Hub cannot be reached (e.g. offline); the files written locally are unaffected.
    """
    try:
        to_dataset_dict(splits).push_to_hub(repo_id, private=private)
    except Exception as err:  # huggingface_hub raises several types for offline / auth problems
        raise ConnectionError(
            f"could not push the pairs to the Hub as {repo_id!r} ({type(err).__name__}: {err}). Check the network "
            "and `huggingface-cli login`; the local files are unaffected."
        ) from err
