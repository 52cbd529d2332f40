"""Load the training / evaluation preference datasets named by a recipe (local files or the Hub).

Local data (`data_files`, or a `dataset_name` that is a local file or a folder of data files) is read by the one loader
`dmpo-trl validate` uses too (`dmpo_trl.data.loading.load_preference_files`): same files, same rows, each row checked
as it is read and remembered by file and row, so later errors can name them. A Hub dataset goes to
`datasets.load_dataset`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from dmpo_trl.data.io import SUFFIXES, expand_data_files
from dmpo_trl.data.loading import LoadedData, load_preference_files


logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from datasets import Dataset

    from dmpo_trl.cli.script_args import DMPOScriptArguments

__all__ = ["describe_data_source", "expand_data_files", "load_preference_datasets", "load_recipe_data"]


def _take(data: LoadedData | None, n: int | None) -> LoadedData | None:
    from datasets import IterableDataset

    if data is None or n is None:
        return data
    if isinstance(data.dataset, IterableDataset):
        data.dataset = data.dataset.take(n)
        return data
    return data.select(range(min(n, len(data.dataset))))


def _is_local_data(name: str) -> bool:
    path = Path(name).expanduser()
    if path.is_file():
        return True
    return path.is_dir() and any(p.is_file() and p.suffix in SUFFIXES for p in path.iterdir())


def load_recipe_data(
    script_args: DMPOScriptArguments, *, want_eval: bool, seed: int = 42, skip_invalid: bool = False
) -> tuple[LoadedData, LoadedData | None]:
    """Load (train, eval) from the source the recipe names; eval is None unless `want_eval`.

    `skip_invalid` (the recipe's `skip_invalid_pairs`): rows that fail the structural checks are left out (and
    listed) instead of stopping at the first one.

    Raises:
        ValueError: no data source, or evaluation requested but no evaluation data can be found.
        FileNotFoundError, DMPODataError: a missing or unreadable file, or a bad row (naming the file and row).
    """
    from datasets import DatasetDict, IterableDatasetDict, load_dataset

    if script_args.datasets:
        train_ds, eval_ds = load_mixture(script_args, want_eval=want_eval)
        name = f"datasets mixture ({describe_data_source(script_args)})"
        mixed = LoadedData(train_ds, name=name), None if eval_ds is None else LoadedData(eval_ds, name=name)
        return _take(mixed[0], script_args.max_train_samples), _take(mixed[1], script_args.max_eval_samples)
    streaming = script_args.dataset_streaming
    train: LoadedData
    eval_data: LoadedData | None = None
    if script_args.data_files:
        train = load_preference_files(script_args.data_files, streaming=streaming, skip_invalid=skip_invalid)
        if want_eval and script_args.eval_data_files:
            eval_data = load_preference_files(
                script_args.eval_data_files, streaming=streaming, skip_invalid=skip_invalid
            )
    elif script_args.dataset_name:
        name = script_args.dataset_name
        if _is_local_data(name):
            train = load_preference_files([name], streaming=streaming, skip_invalid=skip_invalid)
        else:
            loaded = load_dataset(name, name=script_args.dataset_config, streaming=streaming)
            is_dict = isinstance(loaded, DatasetDict | IterableDatasetDict)
            if not is_dict or script_args.dataset_train_split not in loaded:
                splits = list(loaded.keys()) if is_dict else "none"
                raise ValueError(
                    f"dataset {name!r} has no split {script_args.dataset_train_split!r} (splits: {splits})."
                )
            split = script_args.dataset_train_split
            train = LoadedData(loaded[split], name=f"dataset {name} ({split} split)")
            if want_eval and script_args.dataset_test_split in loaded:
                test = script_args.dataset_test_split
                eval_data = LoadedData(loaded[test], name=f"dataset {name} ({test} split)")
    else:
        raise ValueError(
            "No training data: set `data_files` (local files), `dataset_name` (Hub id or path) or a `datasets` mixture."
        )

    if want_eval and eval_data is None:
        if script_args.eval_split_size is None:
            raise ValueError(
                "Evaluation is on (eval_strategy != 'no') but there is no evaluation data: set `eval_data_files`, "
                "a `dataset_test_split` that exists, or `eval_split_size`."
            )
        if streaming:
            raise ValueError("`eval_split_size` cannot split a streamed dataset; give evaluation files or a split.")
        from datasets import Dataset

        # The permutation `train_test_split` would apply to the rows, applied with their sources
        index = Dataset.from_dict({"i": list(range(len(train.dataset)))})
        split = index.train_test_split(test_size=script_args.eval_split_size, seed=seed)
        train, eval_data = train.select(split["train"]["i"]), train.select(split["test"]["i"])
    return _take(train, script_args.max_train_samples), _take(eval_data, script_args.max_eval_samples)


def load_preference_datasets(
    script_args: DMPOScriptArguments, *, want_eval: bool, seed: int = 42
) -> tuple[Dataset, Dataset | None]:
    """`load_recipe_data`, the datasets only."""
    train, eval_data = load_recipe_data(script_args, want_eval=want_eval, seed=seed)
    return train.dataset, (eval_data.dataset if eval_data is not None else None)


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
