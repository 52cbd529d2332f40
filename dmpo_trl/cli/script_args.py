"""`DMPOScriptArguments`: the non-trainer, non-model part of a recipe (data source and model-card details)."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments, TrlParser


@dataclass
class DMPOScriptArguments(ScriptArguments, DatasetMixtureConfig):
    """TRL's `ScriptArguments` and `DatasetMixtureConfig` plus local data files and model-card details.

    Data comes from exactly one source:

    - `data_files` (local JSON / JSONL / Parquet files, folders of them, globs) with optional `eval_data_files`, or
    - `dataset_name`: a Hub dataset id, a local dataset directory, or a single local data file
      (with `dataset_config`, `dataset_train_split`, `dataset_test_split`, `dataset_streaming` as in TRL), or
    - `datasets`: a mixture, as `trl dpo` takes it (a recipe list of `path` / `name` / `data_dir` / `data_files` /
      `split` / `columns` / `fraction` entries, with `streaming` and `test_split_size`), loaded with TRL's
      `get_dataset`; it wins over `dataset_name`, as in `trl dpo`.

    Every row must be in the project's conversational preference format (`prompt` / `chosen` / `rejected`, see
    `docs/` and CONTRACT): convert ETO data first with `dmpo-trl convert --from eto`.
    """

    data_files: list[str] | None = field(
        default=None,
        metadata={
            "help": "Local training files (.json, .jsonl or .parquet; folders and globs allowed). Excludes "
            "dataset_name."
        },
    )
    eval_data_files: list[str] | None = field(
        default=None,
        metadata={"help": "Local evaluation files (.json, .jsonl or .parquet). Used when eval_strategy != 'no'."},
    )
    eval_split_size: float | None = field(
        default=None,
        metadata={
            "help": "Hold out this fraction of the training rows for evaluation (seeded with `seed`) when no "
            "evaluation files or split are given."
        },
    )
    chat_template_path: str | None = field(
        default=None,
        metadata={
            "help": "A Jinja chat template file to use instead of the tokenizer's (as in TRL's scripts), e.g. one "
            "that renders tool calls (trl/chat_templates/*.jinja) or a training template with generation markers "
            "(trl/chat_templates/<family>_training.jinja) for a model whose own template re-renders earlier turns; "
            "`dmpo-trl validate --chat_template_path` takes it too."
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N training rows (quick runs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N evaluation rows (quick runs)."}
    )
    card_base_model: str | None = field(
        default=None,
        metadata={
            "help": "Hub id of the base model to name in the model card, for runs whose model_name_or_path is a "
            "local copy (e.g. meta-llama/Llama-2-7b-chat-hf). Defaults to model_name_or_path."
        },
    )
    card_dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Dataset to name in the model card (a Hub id, or a description of the local files). "
            "Defaults to dataset_name, else the training file names."
        },
    )

    def __post_init__(self) -> None:
        DatasetMixtureConfig.__post_init__(self)  # recipe dicts -> DatasetConfig
        if self.datasets and self.data_files:
            raise ValueError("Give either `data_files` (local files) or a `datasets` mixture, not both.")
        if self.data_files and self.dataset_name:
            raise ValueError("Give either `data_files` (local files) or `dataset_name`, not both.")
        if self.eval_data_files and not self.data_files:
            raise ValueError("`eval_data_files` needs `data_files`; with `dataset_name` use `dataset_test_split`.")
        if self.eval_split_size is not None and not 0.0 < self.eval_split_size < 1.0:
            raise ValueError(f"`eval_split_size` must be in (0, 1), got {self.eval_split_size}.")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"`{name}` must be >= 1, got {value}.")


def make_parser() -> TrlParser:
    """The recipe parser: a `TrlParser` over (DMPOScriptArguments, DMPOConfig, ModelConfig), every recipe field
    (`dmpo_trl.cli.train` parses recipes with it, `dmpo_trl.cli.train_help` lists its fields)."""
    # lazy: loads torch and TRL; keeps `dmpo-trl --help` fast
    from dmpo_trl import DMPOConfig

    return TrlParser((DMPOScriptArguments, DMPOConfig, ModelConfig))
