"""Load the training / evaluation preference datasets named by a recipe (local files or the Hub)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from dmpo_trl.data.io import expand_data_files, load_dataset_files


logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from datasets import Dataset

    from dmpo_trl.cli.script_args import DMPOScriptArguments


def _take(ds: Dataset | None, n: int | None) -> Dataset | None:
    from datasets import IterableDataset

    if ds is None or n is None:
        return ds
    return ds.take(n) if isinstance(ds, IterableDataset) else ds.select(range(min(n, len(ds))))


def load_preference_datasets(
    script_args: DMPOScriptArguments, *, want_eval: bool, seed: int = 42
) -> tuple[Dataset, Dataset | None]:
    """Load (train, eval) from the source the recipe names; eval is None unless `want_eval`.

    Raises:
        ValueError: no data source, or evaluation requested but no evaluation data can be found.
    """
    from datasets import DatasetDict, IterableDatasetDict, load_dataset

    if script_args.datasets:
        train, eval_ds = load_mixture(script_args, want_eval=want_eval)
        return _take(train, script_args.max_train_samples), _take(eval_ds, script_args.max_eval_samples)
    streaming = script_args.dataset_streaming
    train: Dataset
    eval_ds: Dataset | None = None
    if script_args.data_files:
        train = load_dataset_files(expand_data_files(script_args.data_files), streaming)
        if want_eval and script_args.eval_data_files:
            eval_ds = load_dataset_files(expand_data_files(script_args.eval_data_files), streaming)
    elif script_args.dataset_name:
        name = script_args.dataset_name
        if os.path.isfile(name):
            train = load_dataset_files(expand_data_files(name), streaming)
        else:
            loaded = load_dataset(name, name=script_args.dataset_config, streaming=streaming)
            is_dict = isinstance(loaded, DatasetDict | IterableDatasetDict)
            if not is_dict or script_args.dataset_train_split not in loaded:
                splits = list(loaded.keys()) if is_dict else "none"
                raise ValueError(
                    f"dataset {name!r} has no split {script_args.dataset_train_split!r} (splits: {splits})."
                )
            train = loaded[script_args.dataset_train_split]
            if want_eval and script_args.dataset_test_split in loaded:
                eval_ds = loaded[script_args.dataset_test_split]
    else:
        raise ValueError("No training data: set `data_files` (local files) or `dataset_name` (Hub id or path).")

    if want_eval and eval_ds is None:
        if script_args.eval_split_size is None:
            raise ValueError(
                "Evaluation is on (eval_strategy != 'no') but there is no evaluation data: set `eval_data_files`, "
                "a `dataset_test_split` that exists, or `eval_split_size`."
            )
        if streaming:
            raise ValueError("`eval_split_size` cannot split a streamed dataset; give evaluation files or a split.")
        split = train.train_test_split(test_size=script_args.eval_split_size, seed=seed)
        train, eval_ds = split["train"], split["test"]
    return _take(train, script_args.max_train_samples), _take(eval_ds, script_args.max_eval_samples)


def load_mixture(script_args: DMPOScriptArguments, *, want_eval: bool) -> tuple[Dataset, Dataset | None]:
    """A `datasets:` mixture as `trl dpo` loads it (TRL's `get_dataset`): the train split is `dataset_train_split`,
    the eval split `dataset_test_split` (present with `test_split_size`).

    Raises:
        ValueError: evaluation requested but the mixture has no `dataset_test_split` (set `test_split_size`).
    """
    from trl import get_dataset

    if script_args.dataset_name:
        logger.warning(
            "Both `datasets` and `dataset_name` are given: the `datasets` mixture is used, as in `trl dpo`."
        )
    mixture = get_dataset(script_args)
    train = mixture[script_args.dataset_train_split]
    if not want_eval:
        return train, None
    if script_args.dataset_test_split not in mixture:
        raise ValueError(
            f"Evaluation is on (eval_strategy != 'no') but the `datasets` mixture has no split "
            f"{script_args.dataset_test_split!r}: set `test_split_size` to hold out part of it."
        )
    return train, mixture[script_args.dataset_test_split]


def describe_data_source(script_args: DMPOScriptArguments) -> str | None:
    """A short name for the model card: `card_dataset_name`, else `dataset_name`, else the training file names."""
    if script_args.card_dataset_name:
        return script_args.card_dataset_name
    if script_args.datasets:
        return ", ".join(d.path + (f" ({d.name})" if d.name else "") for d in script_args.datasets)
    if script_args.dataset_name:
        return script_args.dataset_name
    if script_args.data_files:
        return ", ".join(Path(f).name for f in script_args.data_files)
    return None
