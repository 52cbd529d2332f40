"""The project's one reader-writer of record files: .json (a list), .jsonl, .parquet, or a folder of them.

`read_records` / `iter_file_records` read what a file holds, record by record, and name the file, line and column
of anything they cannot read; `write_records` writes rows so that they read back exactly (Parquet: tool-call arguments
and tools as JSON strings, `dmpo_trl.core.rows.normalize.arrow_safe`); `expand_data_files` turns data paths (files, globs,
folders) into files; `arrow_columns` builds Arrow columns and names the column and row Arrow cannot store.
`dmpo_trl.data.loading` builds the datasets `dmpo-trl train` and `dmpo-trl validate` read on these.

Rules (the same for every command):

- text is UTF-8, with or without a byte-order mark; anything else is an error naming the line and byte;
- `.json` holds a list of records (objects); in a folder, a `.json` file holding one object is one record, and it
  gets the file name as `id` when it has none (ETO stores rollouts that way: `outputs/<model>/<task>/<id>.json`);
- `.jsonl` holds one record (an object) per line; blank lines are skipped; a line holding a list is an error;
- `.parquet` is read with pyarrow; Arrow gives every row and message the union of all keys, filling the missing ones
  with None, so None values are removed at every level (a key whose value really was None reads back as absent);
- a file, a folder or a glob that yields no record is an error.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from dmpo_trl.core.errors import DMPODataError
from dmpo_trl.core.rows.normalize import arrow_safe, drop_none


SUFFIXES = (".json", ".jsonl", ".parquet")
try:
    import pyarrow as _pa

    _ARROW_ERRORS: tuple[type[Exception], ...] = (_pa.ArrowInvalid, _pa.ArrowTypeError, _pa.ArrowNotImplementedError)
except ImportError:  # pragma: no cover  (datasets depends on pyarrow)
    _ARROW_ERRORS = ()
__all__ = [
    "read_yaml_mapping",
    "SUFFIXES",
    "arrow_columns",
    "data_files_in",
    "expand_data_files",
    "expand_data_paths",
    "iter_file_records",
    "iter_records",
    "read_records",
    "write_records",
]


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All records of a file or a folder (its data files sorted by name), in order.

    Raises:
        FileNotFoundError: no such file or folder.
        DMPODataError: the file cannot be read as records (names the file, and the line and column where there is
            one), or it holds none.
    """
    path = Path(path)
    if path.is_dir():
        return [record for file in data_files_in(path) for record in iter_file_records(file, in_folder=True)]
    return list(iter_file_records(path))


def iter_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """`read_records`, one record at a time: a `.jsonl` file line by line, Parquet by record batch (a `.json` list
    is parsed whole), so that a big input is never held in memory (`dmpo-trl convert`)."""
    path = Path(path)
    if path.is_dir():
        for file in data_files_in(path):
            yield from iter_file_records(file, in_folder=True)
    else:
        yield from iter_file_records(path)


def data_files_in(folder: str | Path) -> list[Path]:
    """The `.json`, `.jsonl` and `.parquet` files directly in `folder`, sorted by name; an error if there are none."""
    folder = Path(folder)
    listed = [p for p in folder.iterdir() if p.suffix in SUFFIXES and not p.name.startswith(".")]
    for p in listed:
        if p.is_symlink() and not p.exists():  # dangling, or a loop of links
            raise DMPODataError(
                f"{p.name} is a symbolic link to nothing (dangling, or a loop of links): fix or remove it",
                source=str(folder),
            )
    files = sorted(p for p in listed if p.is_file())
    if not files:
        raise DMPODataError(f"the folder holds no {', '.join(SUFFIXES)} files", source=str(folder))
    return files


def iter_file_records(path: str | Path, *, in_folder: bool = False) -> Iterator[dict[str, Any]]:
    """The records of one file, one at a time (a `.jsonl` file is read line by line, Parquet by record batch).

    `in_folder`: the file is one of a folder's, so a `.json` file may hold a single record (see the module rules).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    if path.is_dir():
        raise DMPODataError("is a folder; give it as a data path of its own (its files are read)", source=str(path))
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        records = _jsonl_records(path)
    elif suffix == ".json":
        records = _json_records(path, in_folder)
    elif suffix == ".parquet":
        records = _parquet_records(path)
    else:
        raise DMPODataError(
            f"unsupported file type {path.suffix!r}: use one of {', '.join(SUFFIXES)}", source=str(path)
        )
    count = 0
    for record in records:
        count += 1
        yield record
    if count == 0:
        raise DMPODataError("is empty" if path.stat().st_size == 0 else "holds no records", source=str(path))


def _decode(data: bytes, path: Path, first_line: int = 1) -> str:
    if first_line == 1 and (data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in data[:4]):
        raise DMPODataError(
            "is UTF-16 (or UTF-32) text, not UTF-8: re-encode it, e.g. `iconv -f utf-16 -t utf-8 IN > OUT`",
            source=str(path),
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = first_line + data[: err.start].count(b"\n")
        raise DMPODataError(
            f"line {line}: not UTF-8 text (byte 0x{data[err.start]:02x} cannot be decoded); re-encode the file as "
            "UTF-8, e.g. `iconv -f latin1 -t utf-8`",
            source=str(path),
        ) from err
    return text.removeprefix("\ufeff") if first_line == 1 else text


def _not_json(err: json.JSONDecodeError, path: Path, line: int | None = None) -> DMPODataError:
    where = f"line {line if line is not None else err.lineno}, column {err.colno}"
    return DMPODataError(f"{where}: not valid JSON ({err.msg})", source=str(path))


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return record


def _loads(text: str, path: Path, line: int | None = None) -> Any:
    """`json.loads`, refusing what Python's parser accepts silently: a key twice in one object (the last one would
    win), nesting deeper than the interpreter can parse, and lone surrogates (``\\ud800``: not text)."""
    where = f"line {line}: " if line is not None else ""
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise _not_json(err, path, line) from None
    except _DuplicateKey as err:
        raise DMPODataError(
            f"{where}the key {err.key!r} appears twice in one object (a JSON reader keeps one of them silently); "
            "remove the duplicate",
            source=str(path),
        ) from None
    except RecursionError:
        raise DMPODataError(
            f"{where}JSON nested too deeply to read (thousands of levels); no dataset row is nested like that",
            source=str(path),
        ) from None
    if "\\ud" in text.lower():  # a \uXXXX escape of a surrogate: valid JSON, not valid text when alone
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as err:
            raise DMPODataError(
                f"{where}holds a lone surrogate escape ({err.object[err.start]!r}), which is not text: fix the "
                "\\u escape (a pair \\ud83d\\ude00 is one emoji; half of one is an error)",
                source=str(path),
            ) from None
    return value


def _json_records(path: Path, in_folder: bool) -> Iterator[dict[str, Any]]:
    text = _decode(path.read_bytes(), path)
    if not text.strip():
        return
    data = _loads(text, path)
    if isinstance(data, dict) and in_folder:
        yield {"id": path.stem, **data} if "id" not in data else data
        return
    if isinstance(data, dict):
        raise DMPODataError(
            "holds one JSON object, not a list of records: wrap it in [...] (or write one record per line to a "
            ".jsonl file)",
            source=str(path),
        )
    if not isinstance(data, list):
        raise DMPODataError(f"holds a JSON {type(data).__name__}; expected a list of records", source=str(path))
    for i, record in enumerate(data):
        if not isinstance(record, dict):
            raise DMPODataError(
                f"is a JSON {type(record).__name__}, not a record (an object)", row=i, source=str(path)
            )
        yield record


def _jsonl_records(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            line = _decode(raw, path, lineno)
            if lineno == 1:
                line = line.removeprefix("\ufeff")
            if not line.strip():
                continue
            record = _loads(line, path, lineno)
            if not isinstance(record, dict):
                extra = "; write one record per line" if isinstance(record, list) else ""
                raise DMPODataError(
                    f"line {lineno} holds a JSON {type(record).__name__}, not a record (an object){extra}",
                    source=str(path),
                )
            yield record


def _parquet_records(path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(str(path))
    except (pa.ArrowInvalid, OSError) as err:
        raise DMPODataError(f"not a readable Parquet file ({err})", source=str(path)) from None
    for batch in parquet.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            yield drop_none(record)


def expand_data_files(patterns: list[str] | str) -> list[str]:
    """Files, folders (their data files) and globs -> the data files, in order, each once.

    Raises:
        FileNotFoundError: a pattern matches nothing.
        DMPODataError: a folder holds no data file, or a file has an unsupported suffix.
    """
    return [file for file, _ in expand_data_paths(patterns)]


def expand_data_paths(patterns: list[str] | str) -> list[tuple[str, bool]]:
    """`expand_data_files`, each file with whether it came from a folder (where a `.json` may hold one record)."""
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    files: dict[str, bool] = {}
    for pattern in patterns:
        pattern = os.path.expanduser(str(pattern))
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        matches = [m for m in matches if os.path.exists(m)]
        if not matches:
            if glob.has_magic(pattern):
                raise FileNotFoundError(f"the glob {pattern!r} matches no file")
            raise FileNotFoundError(f"data file {pattern!r} does not exist")
        for match in matches:
            if os.path.isdir(match):
                files.update((str(p), True) for p in data_files_in(match) if str(p) not in files)
            elif Path(match).suffix.lower() in SUFFIXES:
                files.setdefault(match, False)
            elif not glob.has_magic(pattern):
                raise DMPODataError(f"unsupported data file: use one of {', '.join(SUFFIXES)}", source=match)
    if not files:
        raise FileNotFoundError(f"no {', '.join(SUFFIXES)} file matches {patterns}.")
    return list(files.items())


def arrow_columns(rows: list[dict[str, Any]], as_text: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """The rows as Arrow arrays, one per column (the union of the rows' keys, None where a row has no value).

    `as_text(column)`: whether a column Arrow cannot store in one type may be stored as JSON text instead (each value
    `json.dumps`-ed; a warning says so). Only for columns nothing trains on (metadata).

    Raises:
        DMPODataError: Arrow cannot store a column in one type; names the column and the first row (counted from 0)
            whose value does not fit the ones before it (`.row`).
    """
    import pyarrow as pa

    columns = list(dict.fromkeys(key for row in rows for key in row))
    arrays = {}
    for key in columns:
        values = [row.get(key) for row in rows]
        try:
            arrays[key] = pa.array(values)
        except _ARROW_ERRORS as err:
            bad = _first_misfit(values)
            if as_text is not None and as_text(key):
                logging.getLogger(__name__).warning(
                    f"column {key!r} mixes types (row {bad} differs from the rows before it): the dataset stores it as "
                    "JSON text (the trainer does not read it)"
                )
                arrays[key] = pa.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in values])
                continue
            raise DMPODataError(
                f"column {key!r} cannot be stored by Arrow (datasets, Parquet): this row's value does not have the "
                f"type of the rows before it ({err}); give the column one type in every row",
                row=bad,
            ) from None
    return arrays


def _first_misfit(values: list[Any]) -> int:
    """The smallest k such that Arrow cannot store values[: k + 1] (a prefix that fails makes every longer one fail)."""
    import pyarrow as pa

    lo, hi = 0, len(values) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            pa.array(values[: mid + 1])
            lo = mid + 1
        except _ARROW_ERRORS:
            hi = mid
    return lo


def write_records(rows: Iterable[dict[str, Any]], path: str | Path, *, keep_empty: bool = True) -> int:
    """Write rows to `.json` (an indented list), `.jsonl` or `.parquet`, creating the folder; returns how many.

    The file is written next to its target under a temporary name and renamed over it at the end, so an interrupted
    write (a crash, a full disk, a bad row) leaves the old file or none, never half of one. `.json` and `.jsonl`
    rows are written one at a time as `rows` yields them (bounded memory for a streamed input); Parquet needs them
    all at once. `keep_empty=False`: when there is no row, nothing is written (the target is left as it was).
    Values JSON has no spelling for (``NaN``, ``Infinity``) are an error naming the row.

    Parquet gets the rows in `arrow_safe` form (tool-call arguments and tools as JSON strings), so that reading the
    file back, with `read_records` or with `datasets`, gives what was written and trains the same tokens.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DMPODataError(
            f"unsupported file type {path.suffix!r}: use one of {', '.join(SUFFIXES)}", source=str(path)
        )
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        count = _write(_input_side(rows), Path(tmp), suffix, path)
        if count or keep_empty:
            os.replace(tmp, path)
        return count
    except _InputError as err:  # raised by whatever produces the rows (reading, converting): not a write error
        raise err.error.with_traceback(err.error.__traceback__) from None
    except OSError as err:
        why = err.strerror or str(err)
        raise OSError(f"cannot write {path} ({why}: {err.filename or path}); choose another output path") from err
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


class _InputError(Exception):
    """An error of the rows' producer, carried through `write_records`' handling of write errors."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


def _input_side(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    iterator = iter(rows)
    while True:
        try:
            row = next(iterator)
        except StopIteration:
            return
        except Exception as err:
            raise _InputError(err) from err
        yield row


def _json_line(row: dict[str, Any], index: int, path: Path, indent: int | None = None) -> str:
    try:
        return json.dumps(row, ensure_ascii=False, allow_nan=False, indent=indent)
    except ValueError as err:  # NaN / Infinity: not JSON (the strict readers refuse them)
        raise DMPODataError(
            f"holds a value JSON cannot write ({err}): NaN and Infinity are not JSON; replace them (e.g. with null "
            "or a string)",
            row=index,
            source=str(path),
        ) from None


def _write(rows: Iterable[dict[str, Any]], tmp: Path, suffix: str, path: Path) -> int:
    count = 0
    if suffix in (".json", ".jsonl"):
        with tmp.open("w", encoding="utf-8") as handle:
            if suffix == ".json":
                handle.write("[")
            for count, row in enumerate(rows, start=1):
                if suffix == ".jsonl":
                    handle.write(_json_line(row, count - 1, path) + "\n")
                else:
                    text = _json_line(row, count - 1, path, indent=2).replace("\n", "\n  ")
                    handle.write(("\n  " if count == 1 else ",\n  ") + text)
            if suffix == ".json":
                handle.write("\n]\n" if count else "]\n")
            handle.flush()
            os.fsync(handle.fileno())
        return count
    import pyarrow as pa
    import pyarrow.parquet as pq

    safe = [arrow_safe(row) for row in rows]
    try:
        table = pa.table(arrow_columns(safe))
    except DMPODataError as err:
        raise DMPODataError(err.reason, err.row, source=str(path)) from None
    pq.write_table(table, str(tmp))
    return len(safe)


def read_yaml_mapping(path: str | Path, what: str = "recipe") -> dict[str, Any]:
    """The YAML mapping of a recipe file (training or pipeline). Raises `FileNotFoundError` (no such file) or
    `ValueError` naming the file (not a mapping, not YAML, a key given twice: YAML readers keep the last one)."""

    class _Loader(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise ValueError(
                    f"{path}: the key {key!r} is given twice (line {key_node.start_mark.line + 1}); YAML would keep "
                    "the last one silently: remove one"
                )
            seen.add(key)
        return loader.construct_mapping(node, deep=deep)

    _Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        values = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_Loader) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not a valid YAML {what} ({' '.join(str(err).split())})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a {what} must be a YAML mapping of keys to values")
    return values
