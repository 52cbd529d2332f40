"""`dmpo_trl.data.io` and `dmpo_trl.data.loading`: what files are accepted, how rows keep their file and row, and
how Arrow's limits are named."""

from __future__ import annotations

import json
import logging

import pytest

from dmpo_trl.core.errors import DMPODataError
from dmpo_trl.core.rows.normalize import normalize_pair
from dmpo_trl.data.io import read_records, write_records
from dmpo_trl.data.loading import load_preference_files
from dmpo_trl.testing import agent_pair


ROWS = [agent_pair(1, 2), agent_pair(2, 1, system=False), agent_pair(3, 3)]


def lines(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_bom_is_accepted_like_plain_utf8(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b"\xef\xbb\xbf" + lines(ROWS).encode())
    (tmp_path / "a.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(ROWS).encode())
    assert read_records(tmp_path / "a.jsonl") == read_records(tmp_path / "a.json") == ROWS
    loaded = load_preference_files([str(tmp_path / "a.jsonl")])
    assert [normalize_pair(r) for r in loaded.dataset] == ROWS


def test_folder_reads_every_data_file_in_name_order_and_rows_keep_their_file(tmp_path):
    folder = tmp_path / "pairs"
    folder.mkdir()
    write_records(ROWS[:2], folder / "b.jsonl")
    write_records(ROWS[2:], folder / "a.parquet")
    (folder / "one.json").write_text(json.dumps({**ROWS[0], "id": "x"}))  # in a folder: one object is one record
    (folder / "notes.txt").write_text("ignored")
    (folder / "sub").mkdir()
    write_records(ROWS, folder / "sub" / "deeper.jsonl")  # not read: folders are not searched recursively
    loaded = load_preference_files([str(folder)])
    assert [(s.file.split("/")[-1], s.row) for s in loaded.sources] == [
        ("a.parquet", 0),
        ("b.jsonl", 0),
        ("b.jsonl", 1),
        ("one.json", 0),
    ]
    assert [normalize_pair({k: v for k, v in r.items() if k != "id"}) for r in loaded.dataset] == [
        ROWS[2],
        ROWS[0],
        ROWS[1],
        ROWS[0],
    ]
    # an error about row 2 of the dataset names b.jsonl row 1
    located = loaded.locate(DMPODataError("bad", 2, "chosen"))
    assert str(located) == f"{folder / 'b.jsonl'}: row 1, chosen: bad"
    assert loaded.row_label(3) == f"{folder / 'one.json'} row 0"


def test_folder_without_data_files_and_missing_paths(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(DMPODataError, match=r": the folder holds no .json, .jsonl, .parquet files$"):
        load_preference_files([str(tmp_path)])
    with pytest.raises(FileNotFoundError, match=r"^data file '.*nope.jsonl' does not exist$"):
        load_preference_files([str(tmp_path / "nope.jsonl")])
    with pytest.raises(FileNotFoundError, match=r"^the glob '.*\*.parquet' matches no file$"):
        load_preference_files([str(tmp_path / "*.parquet")])


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("e.jsonl", b"", "is empty"),
        ("w.jsonl", b"\n  \n", "holds no records"),
        ("l.json", b"[]", "holds no records"),
        ("o.json", json.dumps(ROWS[0]).encode(), "holds one JSON object, not a list of records"),
        ("s.json", b'"text"', "holds a JSON str; expected a list of records"),
        ("n.json", json.dumps([ROWS[0], 3]).encode(), "row 1: is a JSON int, not a record (an object)"),
        ("x.jsonl", lines(ROWS[:1]).encode() + b"[1, 2]\n", "line 2 holds a JSON list, not a record (an object)"),
        ("y.jsonl", lines(ROWS[:1]).encode() + b'{"prompt": [}\n', "line 2, column 13: not valid JSON"),
        ("z.json", b'[{"a": 1},\n {"b": }]', "line 2, column 8: not valid JSON (Expecting value)"),
        ("u.jsonl", lines(ROWS[:1]).encode() + '{"é": 1}\n'.encode("latin-1"), "line 2: not UTF-8 text (byte 0xe9"),
        ("p.parquet", b"PAR1 not really", "not a readable Parquet file"),
    ],
)
def test_unreadable_files_name_the_file_and_the_place(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    for read in (read_records, lambda p: load_preference_files([str(p)])):
        with pytest.raises(DMPODataError) as err:
            read(tmp_path / name)
        assert str(err.value).startswith(f"{tmp_path / name}: {message}"), str(err.value)


def test_rows_are_checked_as_they_are_read_and_skipped_with_their_file(tmp_path):
    rows = [ROWS[0], {**ROWS[1], "chosen": []}, ROWS[2], {**ROWS[0], "rejected": "oops"}]
    write_records(rows, tmp_path / "d.jsonl")
    with pytest.raises(DMPODataError) as err:
        load_preference_files([str(tmp_path / "d.jsonl")])
    assert (
        str(err.value)
        == f"{tmp_path / 'd.jsonl'}: row 1, chosen: empty chosen: the chosen continuation has no messages"
    )
    loaded = load_preference_files([str(tmp_path / "d.jsonl")], skip_invalid=True)
    assert [s.row for s in loaded.sources] == [0, 2] and loaded.rows_read == 4
    assert [(s.row, s.source) for s in loaded.skipped] == [
        (1, str(tmp_path / "d.jsonl")),
        (3, str(tmp_path / "d.jsonl")),
    ]
    assert loaded.skipped[1].reason.startswith(
        f"{tmp_path / 'd.jsonl'}: row 3, chosen: mixed formats: the row is standard"
    )
    write_records(rows[1:2] * 2, tmp_path / "bad.jsonl")
    with pytest.raises(DMPODataError, match=r"^all 2 rows fail the checks and were skipped, nothing is left"):
        load_preference_files([str(tmp_path / "bad.jsonl")], skip_invalid=True)


def test_arrow_type_conflicts_metadata_as_text_messages_named(tmp_path, caplog):
    rows = [{**ROWS[0], "id": 1, "extra": {"k": 1}}, {**ROWS[1], "id": "b", "extra": [1]}]
    write_records(rows, tmp_path / "m.jsonl")
    with caplog.at_level(logging.WARNING, logger="dmpo_trl.data.io"):
        loaded = load_preference_files([str(tmp_path / "m.jsonl")])
    assert loaded.dataset["id"] == ["1", '"b"'] and loaded.dataset["extra"] == ['{"k": 1}', "[1]"]
    assert "column 'id' mixes types (row 1 differs from the rows before it)" in caplog.text
    assert [normalize_pair({k: v for k, v in r.items() if k not in ("id", "extra")}) for r in loaded.dataset] == ROWS[
        :2
    ]
    # a column the trainer reads cannot be stored in two types: named, with its file and row
    bad = [ROWS[0], agent_pair(1, 2), agent_pair(1, 2)]
    bad[0]["chosen"][0]["tool_call_id"] = 7
    bad[2]["chosen"][0]["tool_call_id"] = "call_7"
    write_records(bad, tmp_path / "t.jsonl")
    with pytest.raises(DMPODataError) as err:
        load_preference_files([str(tmp_path / "t.jsonl")])
    assert str(err.value).startswith(
        f"{tmp_path / 't.jsonl'}: row 2: column 'chosen' cannot be stored by Arrow (datasets, Parquet): this row's "
        "value does not have the type of the rows before it"
    )
    with pytest.raises(DMPODataError, match=r"m.parquet: row 1: column 'id' cannot be stored by Arrow"):
        write_records(rows, tmp_path / "m.parquet")  # Parquet is Arrow: the writer says which column and row


def test_streamed_loading_gives_the_same_rows_and_sources(tmp_path):
    write_records(ROWS[:2], tmp_path / "a.jsonl")
    write_records(ROWS[2:], tmp_path / "b.parquet")
    paths = [str(tmp_path / "a.jsonl"), str(tmp_path / "b.parquet")]
    eager, streamed = load_preference_files(paths), load_preference_files(paths, streaming=True)
    assert streamed.sources == []  # filled as the stream is read
    assert [normalize_pair(r) for r in streamed.dataset] == [normalize_pair(r) for r in eager.dataset] == ROWS
    assert streamed.sources == eager.sources
    list(streamed.dataset)  # a second pass adds nothing
    assert streamed.sources == eager.sources


def test_write_records_refuses_what_it_cannot_write(tmp_path):
    (tmp_path / "blocker").write_text("a file, not a folder")
    with pytest.raises(OSError, match=r"^cannot write .*blocker/o.jsonl \("):
        write_records(ROWS, tmp_path / "blocker" / "o.jsonl")
    with pytest.raises(DMPODataError, match=r"o.csv: unsupported file type '.csv'"):
        write_records(ROWS, tmp_path / "o.csv")
