"""The one loader of preference data for `dmpo-trl train` and `dmpo-trl validate`: same files, same rows, same errors.

`load_preference_files(paths)` reads every file with `dmpo_trl.data.io` (UTF-8 with or without BOM, JSON errors with
line and column, empty input refused), runs the structural row checks (`check_pair`) on every record as it is read, so
a bad file fails before any tokenizer or model is loaded, and builds the `datasets.Dataset` the trainer gets, with
tool-call arguments and tools stored as JSON strings (`dmpo_trl.core.rows.normalize.arrow_safe`) so that Arrow cannot merge or
widen them. Every row keeps where it came from (`RowSource`: file and row counted from 0 within it), and `locate`
turns an error about row ``i`` of the dataset into one that names that file and row.

`validate` then runs `dmpo_trl.data.validation` on the dataset, `train` `dmpo_trl.core.rows.preparation.prepare_dataset`: both
`prepare_pair`, with the same tokenizer, chat template and ``max_length``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from dmpo_trl.core.errors import DMPODataError
from dmpo_trl.core.rows.checks import check_pair
from dmpo_trl.core.rows.normalize import MESSAGE_COLUMNS, arrow_safe
from dmpo_trl.data.common import SkippedRow, with_record_id
from dmpo_trl.data.convert import convert
from dmpo_trl.data.io import arrow_columns, expand_data_paths, iter_file_records


__all__ = ["TRAINED_COLUMNS", "LoadedData", "RowSource", "dataset_from_rows", "load_preference_files"]

#: The columns the trainer reads (everything else is metadata it keeps and ignores).
TRAINED_COLUMNS = (*MESSAGE_COLUMNS, "tools", "chat_template_kwargs")


@dataclass(frozen=True)
class RowSource:
    """Where one row comes from: its file and its index there (records counted from 0; JSONL: non-blank lines)."""

    file: str
    row: int

    def label(self) -> str:
        return f"{self.file} row {self.row}"


@dataclass
class LoadedData:
    """A split as loaded: the dataset, where each of its rows comes from, and the rows left out while reading.

    Attributes:
        dataset: the `datasets.Dataset` (or `IterableDataset`, streamed) in the project format.
        sources: ``sources[i]`` is where row ``i`` of `dataset` comes from (for a streamed dataset, filled as it is
            read); empty for a dataset that does not come from files (then `name` names it).
        skipped: rows the structural checks left out (only with ``skip_invalid``), their reasons naming file and row.
        rows_read: records read, skipped ones included (None for a streamed dataset).
        name: what the data is, for messages (the files, or a Hub dataset id).
        files: the files read, in order.
    """

    dataset: Any
    sources: list[RowSource] = field(default_factory=list)
    skipped: list[SkippedRow] = field(default_factory=list)
    rows_read: int | None = None
    name: str = "dataset"
    files: list[str] = field(default_factory=list)

    def locate(self, err: DMPODataError) -> DMPODataError:
        """`err` (about row ``err.row`` of `dataset`) naming the file and the row there instead."""
        if err.source is not None or err.row is None:
            return err
        if err.row < len(self.sources):
            source = self.sources[err.row]
            return DMPODataError(err.reason, source.row, err.side, source=source.file)
        if not self.sources:
            return DMPODataError(err.reason, err.row, err.side, source=self.name)
        return err

    def row_label(self, i: int) -> str:
        """How messages name row `i` of `dataset`: ``"<file> row <n>"``."""
        return self.sources[i].label() if i < len(self.sources) else f"{self.name} row {i}"

    def select(self, indices: Iterable[int]) -> LoadedData:
        """These rows of a (not streamed) dataset, with their sources."""
        indices = list(indices)
        sources = [self.sources[i] for i in indices] if self.sources else []
        return LoadedData(self.dataset.select(indices), sources, self.skipped, self.rows_read, self.name, self.files)


def load_preference_files(
    paths: Iterable[str] | str,
    *,
    streaming: bool = False,
    skip_invalid: bool = False,
    convert_from: str = "project",
) -> LoadedData:
    """Read data files (files, folders, globs) into one dataset in the project format.

    Args:
        paths: data paths (`dmpo_trl.data.io.expand_data_files`).
        streaming: give an `IterableDataset` that reads the files as it is iterated (its rows are checked as the
            trainer reads them).
        skip_invalid: leave out rows that fail the structural checks (listed in `skipped`) instead of raising.
        convert_from: the files' format; other than ``"project"``, records are converted first (`validate --from`).

    Raises:
        FileNotFoundError, DMPODataError: a missing path, an unreadable file, no records, a bad row (naming the file
            and the row), or a column Arrow cannot store in one type.
    """
    files = expand_data_paths(paths)
    name = ", ".join(file for file, _ in files)
    if streaming:
        if convert_from != "project":
            raise ValueError("streaming reads files in the project format; convert them first (dmpo-trl convert)")
        return _streamed(files, name)
    rows: list[dict[str, Any]] = []
    sources: list[RowSource] = []
    skipped: list[SkippedRow] = []
    for file, in_folder in files:
        for row, record in checked_rows(file, in_folder, skip_invalid, convert_from, skipped.append):
            rows.append(record)
            sources.append(RowSource(file, row))
    data = LoadedData(None, sources, skipped, len(rows) + len(skipped), name, [file for file, _ in files])
    if not rows:
        raise DMPODataError(
            f"all {len(skipped)} rows fail the checks and were skipped, nothing is left; the first: "
            f"{skipped[0].reason}"
        )
    try:
        data.dataset = dataset_from_rows(rows)
    except DMPODataError as err:
        raise data.locate(err) from None
    return data


def dataset_from_rows(rows: list[dict[str, Any]]):
    """A `datasets.Dataset` of rows already in `arrow_safe` form. A metadata column Arrow cannot store in one type is
    stored as JSON text (with a warning); a trained column that cannot be stored is an error naming it and the row."""
    import pyarrow as pa
    from datasets import Dataset
    from datasets.table import InMemoryTable

    # Metadata columns that mix types are stored as JSON text; a message column that does is an error
    arrays = arrow_columns(rows, as_text=lambda column: column not in TRAINED_COLUMNS)
    return Dataset(InMemoryTable(pa.table(arrays)))


def checked_rows(
    file: str, in_folder: bool, skip_invalid: bool, convert_from: str, on_skip: Callable[[SkippedRow], Any]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row in file, arrow-safe record) for every record of `file` that passes the structural checks; with
    `skip_invalid` the others go to `on_skip`, else the first one raises (naming the file and the row)."""
    records: Iterable[Any] = iter_file_records(file, in_folder=in_folder)
    if convert_from != "project":
        records = list(records)
        try:
            converted = convert(records, convert_from, skip_invalid=skip_invalid)
        except DMPODataError as err:
            raise DMPODataError(err.reason, err.row, err.side, source=file) from None
        dropped = {s.row for s in converted.skipped}
        for s in converted.skipped:
            on_skip(SkippedRow(s.row, f"{file}: {s.reason}", file))
        yield from zip((i for i in range(len(records)) if i not in dropped), map(arrow_safe, converted), strict=True)
        return
    for row, record in enumerate(records):
        try:
            check_pair(record, row)
        except DMPODataError as err:
            err = with_record_id(err, record)
            located = DMPODataError(err.reason, err.row, err.side, source=file)
            if not skip_invalid:
                raise located from None
            on_skip(SkippedRow(row, str(located), file))
            continue
        yield row, arrow_safe(record)


def _streamed(files: list[tuple[str, bool]], name: str) -> LoadedData:
    """An `IterableDataset` reading `files` as it is iterated. Rows are not checked here: nothing needs to fit one
    Arrow schema, and `prepare_dataset` checks (or skips, counts and logs) each row as the stream is read, with the
    same messages. `sources` is filled on the first pass (a later epoch reads the same rows in the same order)."""
    from datasets import IterableDataset

    data = LoadedData(None, [], [], None, name, [file for file, _ in files])

    def generate() -> Iterator[dict[str, Any]]:
        index = 0
        for file, in_folder in files:
            for row, record in enumerate(iter_file_records(file, in_folder=in_folder)):
                if index == len(data.sources):
                    data.sources.append(RowSource(file, row))
                index += 1
                yield arrow_safe(record)

    data.dataset = IterableDataset.from_generator(generate)
    return data
