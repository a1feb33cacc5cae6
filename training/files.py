"""Preference files as records: .json (an array, an object holding one, or JSON lines), .jsonl, .jsonl.gz / .json.gz,
.csv, .parquet, or a Hugging Face dataset name ("org/name" or "org/name:split", loaded with `datasets`: needs internet
or a local cache). A file whose extension says JSON lines but holds one JSON array (the tutorial's export) is read by
its content."""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, cast


class DataError(ValueError):
    """A record that cannot become a preference pair; the message starts with `file:record`."""


def _open_bytes(path: Path) -> BinaryIO:
    if path.suffix == ".gz":
        return cast(BinaryIO, gzip.open(path, "rb"))
    return open(path, "rb")


def _open_text(path: Path) -> io.TextIOBase:
    # utf-8-sig: files saved by spreadsheet tools start with a byte-order mark.
    return io.TextIOWrapper(_open_bytes(path), encoding="utf-8-sig", newline="")


def _kind(path: Path) -> str:
    """The file's format: its extension's, except that JSON lines holding one JSON array (or an object) are JSON,
    and a file whose extension says nothing is read by its content (JSON, JSON lines or Parquet)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in (".csv", ".parquet", ".json"):
        return last[1:]
    with _open_bytes(path) as f:
        head = f.read(4096)
    if head.startswith(b"PAR1") and last != ".jsonl":
        return "parquet"
    first = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if last == ".jsonl":
        return "json" if first == b"[" else "jsonl"  # a JSON array saved under .jsonl: read it as what it is
    if first in (b"[", b"{"):
        return "json"  # a JSON array or object, or JSON lines (the JSON reader falls back to lines)
    raise DataError(
        f"{path}: unknown file type: neither its extension nor its content says JSON, JSON lines, CSV or Parquet "
        "(name it .json, .jsonl, .jsonl.gz, .csv or .parquet)"
    )


def _json_lines(path: Path, f: Iterable[str | bytes]) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(f, 1):
        try:
            text = line.decode("utf-8-sig" if number == 1 else "utf-8") if isinstance(line, bytes) else line
        except UnicodeDecodeError as e:
            yield f"{path}:{number}", DataError(f"not valid UTF-8 (byte {e.start} of the line)")
            continue
        if not text.strip():
            continue
        try:
            yield f"{path}:{number}", json.loads(text)
        except json.JSONDecodeError as e:
            yield f"{path}:{number}", DataError(f"invalid JSON: {e.msg}")


def _csv_cell(key: str, value: Any) -> Any:
    """Lists (messages, completions, ranks) travel through CSV as JSON text; anything else stays a string."""
    if not (isinstance(value, str) and value.startswith("[")):
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return value
    if key in ("completions", "ranks") and isinstance(parsed, list):
        return parsed
    if key in ("prompt", "question", "chosen", "rejected") and looks_like_messages(parsed):
        return parsed
    return value


def looks_like_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "role" in m for m in value)


def _csv_rows(path: Path, f: Iterable[str]) -> Iterator[tuple[str, Any]]:
    reader = csv.DictReader(f)
    for row in reader:
        record: dict[str, Any] = {}
        for key, value in row.items():
            if key is None:
                continue
            record[key] = _csv_cell(key, value)
        yield f"{path}:{reader.line_num}", record


def iter_records(path: Path) -> Iterator[tuple[str, Any]]:
    """(source, record) for each record of a file; a record that cannot be parsed is a DataError value."""
    try:
        yield from _file_records(path)
    except DataError:
        raise
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 text (at byte {e.start})") from None
    except (OSError, EOFError, csv.Error, zlib.error) as e:
        # Truncated or corrupt gzip, unreadable file, malformed CSV quoting.
        raise DataError(f"{path}: cannot read: {e}") from None
    except Exception as e:
        if type(e).__module__.startswith("pyarrow"):
            raise DataError(f"{path}: not a readable Parquet file: {e}") from None
        raise


def _file_records(path: Path) -> Iterator[tuple[str, Any]]:
    kind = _kind(path)
    if kind == "parquet":
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist()):
            yield f"{path}:row {i + 1}", row
        return
    if kind == "jsonl":
        with _open_bytes(path) as b:
            yield from _json_lines(path, b)
        return
    with _open_text(path) as f:
        if kind == "csv":
            yield from _csv_rows(path, f)
        else:
            text = f.read()
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                yield from _json_lines(path, text.splitlines())  # a .json file holding JSON lines
                return
            if isinstance(data, Mapping):
                lists = [v for v in data.values() if isinstance(v, list) and all(isinstance(r, Mapping) for r in v)]
                # {"data": [records]}, as some exports wrap them; else the object is one record (one JSON line)
                data = lists[0] if len(lists) == 1 else [data]
            if not isinstance(data, list):
                raise DataError(f"{path}: expected a JSON array of records")
            for i, record in enumerate(data):
                yield f"{path}:record {i + 1}", record


def hub_records(name: str) -> Iterator[tuple[str, Any]]:
    """A Hugging Face dataset ("org/name" or "org/name:split"); needs `datasets` and internet or a cache."""
    import datasets

    repo, _, split = name.partition(":")
    for i, row in enumerate(datasets.load_dataset(repo, split=split or "train")):
        yield f"{name}:row {i + 1}", row
