"""Data handling: converters from common trajectory formats, structural checks, file I/O.

Use `dmpo_trl.converters` (the public entry point) or the modules here directly. Nothing here imports torch.
"""

from dmpo_trl.data.checks import check_pair, split_shared_prefix
from dmpo_trl.data.common import ConvertedRows, SkippedRow
from dmpo_trl.data.io import read_records, write_records

__all__ = ["ConvertedRows", "SkippedRow", "check_pair", "read_records", "split_shared_prefix", "write_records"]
