"""Data tools around the trainer: converters from agent-trajectory formats, file I/O, the validation report.

* `convert`: `convert(records, fmt)` and one converter per format (ETO, ShareGPT, OpenAI chat, project).
* `io`: the one JSON / JSONL / Parquet reader-writer of the project.
* `loading`: the one loader of `dmpo-trl train` and `dmpo-trl validate` (same files, same rows, rows named by file).
* `validation`: `validate_dataset`, the report of what the trainer will train on.

The row checks themselves are the trainer's (`dmpo_trl.core.rows.checks`). Nothing here imports torch.
"""

from dmpo_trl.core.rows.checks import check_pair
from dmpo_trl.data.common import ConvertedRows, SkippedRow, split_shared_prefix
from dmpo_trl.data.io import read_records, write_records


__all__ = ["ConvertedRows", "SkippedRow", "check_pair", "read_records", "split_shared_prefix", "write_records"]
