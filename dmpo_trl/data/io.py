"""The project's one reader-writer of record files: .json (a list), .jsonl, .parquet, or a folder of .json files.

`read_records` / `write_records` work on lists of dicts (converters, validation, environments' pair sets, tests);
`expand_data_files` / `load_dataset_files` give the `datasets` split that `dmpo-trl train` trains on.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dmpo_trl.errors import DMPODataError


SUFFIXES = (".json", ".jsonl", ".parquet")
__all__ = ["SUFFIXES", "builder_of", "expand_data_files", "load_dataset_files", "read_records", "write_records"]


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All records of a local file, in order.

    - `.json`: a JSON list of objects (ETO's files);
    - `.jsonl`: one object per line (blank lines ignored);
    - `.parquet`: read with `datasets`; Arrow gives every row and every message the union of all keys, filling
      the missing ones with None (a message without `tool_calls` gets `tool_calls: None`), so None values are
      removed again at every level (a key whose value really was None is read back as absent);
    - a folder: every `*.json` file in it (sorted by name) is one record, and a record without `id` gets the
      file name without `.json` (how ETO stores rollouts: `outputs/<model>/<task>/<id>.json`).
    """
    path = Path(path)
    if path.is_dir():
        return [_folder_record(file) for file in sorted(path.glob("*.json"))]
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DMPODataError(f"{path} is not valid JSON ({err})") from err
        if isinstance(data, dict):
            raise DMPODataError(f"{path} holds one JSON object; expected a list of records (or use .jsonl)")
        if not isinstance(data, list):
            raise DMPODataError(f"{path} holds a JSON {type(data).__name__}; expected a list of records")
        return data
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    if path.suffix == ".parquet":
        from datasets import Dataset

        return [_drop_none(record) for record in Dataset.from_parquet(str(path)).to_list()]
    raise ValueError(f"unsupported file type {path.suffix!r} for {path}; use one of {', '.join(SUFFIXES)}")


def write_records(rows: Iterable[dict[str, Any]], path: str | Path) -> None:
    """Write rows to `.json` (an indented list), `.jsonl` or `.parquet` (via `datasets`)."""
    path = Path(path)
    rows = list(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    elif path.suffix == ".jsonl":
        with path.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    elif path.suffix == ".parquet":
        from datasets import Dataset

        # Not Dataset.from_list: it takes the columns of the first row only and drops the others' extra keys.
        columns = list(dict.fromkeys(key for row in rows for key in row))
        Dataset.from_dict({key: [row.get(key) for row in rows] for key in columns}).to_parquet(str(path))
    else:
        raise ValueError(f"unsupported file type {path.suffix!r} for {path}; use one of {', '.join(SUFFIXES)}")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DMPODataError(f"{path} line {lineno} is not valid JSON ({err})", len(records)) from err
    return records


def _folder_record(file: Path) -> dict[str, Any]:
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DMPODataError(f"{file} is not valid JSON ({err})") from err
    if not isinstance(record, dict):
        raise DMPODataError(f"{file} holds a JSON {type(record).__name__}; expected one record (an object)")
    return {"id": file.stem, **record} if "id" not in record else record


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


#: File suffix -> `datasets` builder.
_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def expand_data_files(patterns: list[str] | str) -> list[str]:
    """Expand globs, check every file exists, and return the sorted unique paths.

    Raises:
        FileNotFoundError: a pattern matches nothing.
        ValueError: a file has an unsupported suffix, or the files mix JSON and Parquet.
    """
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    files: list[str] = []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        matches = [m for m in sorted(glob.glob(pattern)) if os.path.isfile(m)]
        if not matches:
            raise FileNotFoundError(f"data file {pattern!r} does not exist (or the glob matches no file).")
        files.extend(matches)
    builder_of(files)  # validates suffixes
    return list(dict.fromkeys(files))


def builder_of(files: list[str]) -> str:
    """The `datasets` builder ("json" or "parquet") for these files; they must all need the same one."""
    builders = set()
    for f in files:
        suffix = Path(f).suffix.lower()
        if suffix not in _BUILDERS:
            raise ValueError(f"unsupported data file {f!r}: expected one of {sorted(_BUILDERS)}.")
        builders.add(_BUILDERS[suffix])
    if len(builders) != 1:
        raise ValueError(f"data files mix formats {sorted(builders)}; use one format per split.")
    return builders.pop()


def load_dataset_files(files: list[str], streaming: bool = False):
    """The files (one format: JSON/JSONL or Parquet) as one `datasets` split, streamed if asked."""
    from datasets import load_dataset

    return load_dataset(builder_of(files), data_files=files, split="train", streaming=streaming)
