"""Deterministic, atomic export files: text and CSV files, fixed-timestamp zips split by size."""

from __future__ import annotations

import hashlib
import io
import math
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from segments.errors import ExportError
from segments.exporters.manifest import FileEntry
from segments.io import write_bytes

# Size limits are in decimal megabytes: if a platform means MiB, decimal MB is still below it.
MB = 1_000_000

ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
ZIP_FILE_MODE = 0o100644  # regular file, rw-r--r--
ZIP_COMPRESS_LEVEL = 1  # hex hashes barely compress: level 6 is 3x slower for 2% smaller files


def text_bytes(lines: Sequence[str], header: str | None = None) -> bytes:
    """Lines joined with `\\n` (and a final `\\n`), UTF-8 without BOM."""
    body = ([header] if header is not None else []) + list(lines)
    return ("\n".join(body) + "\n").encode("utf-8") if body else b""


def file_entry(path: Path, out_dir: Path, rows: int, data: bytes | None = None) -> FileEntry:
    """The manifest entry of a written file (digests of `data`, or of the file when None)."""
    if data is None:
        data = path.read_bytes()
    return FileEntry(
        path=path.relative_to(out_dir).as_posix(),
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        md5=hashlib.md5(data).hexdigest(),
        rows=rows,
    )


def write_text_file(
    out_dir: Path, name: str, lines: Sequence[str], header: str | None = None
) -> FileEntry:
    """Write one text/CSV file (one value per line, optional header) and describe it."""
    data = text_bytes(lines, header)
    path = out_dir / name
    write_bytes(data, path)
    return file_entry(path, out_dir, rows=len(lines), data=data)


def zip_bytes(entries: Mapping[str, bytes]) -> bytes:
    """A zip of `entries` that depends on nothing but their names and contents.

    Entries are sorted by name, dated 1980-01-01 00:00, mode 0644, made on "Unix", deflated at
    a fixed level, with no comment or extra fields: the same input gives the same bytes.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = ZIP_FILE_MODE << 16
            zf.writestr(info, entries[name], compresslevel=ZIP_COMPRESS_LEVEL)
    return buf.getvalue()


def _even_bounds(total: int, parts: int) -> list[tuple[int, int]]:
    return [(i * total // parts, (i + 1) * total // parts) for i in range(parts)]


def write_zip_parts(
    out_dir: Path,
    base: str,
    lines: Sequence[str],
    max_zip_bytes: int,
    rows: Sequence[int] | None = None,
    header: str | None = None,
    inner_suffix: str = ".txt",
) -> list[FileEntry]:
    """Write `lines` as `<base>.zip` holding `<base>.txt`, split when the zip would be too big.

    When one zip would exceed `max_zip_bytes`, the lines are cut into contiguous near-equal
    parts, as few as fit (counting up from the single zip's size / limit):
    `<base>_part1.zip` holding `<base>_part1.txt`, ...
    `rows[i]` is the number of ids on line i (default 1). A line is never cut.
    """
    if not lines:
        return []
    row_counts = list(rows) if rows is not None else [1] * len(lines)
    total = len(lines)
    parts = 1
    while True:
        blobs: list[tuple[str, bytes, int]] = []
        too_big = 0
        for k, (a, b) in enumerate(_even_bounds(total, parts)):
            name = base if parts == 1 else f"{base}_part{k + 1}"
            blob = zip_bytes({name + inner_suffix: text_bytes(lines[a:b], header)})
            if len(blob) > max_zip_bytes:
                too_big = len(blob)
                break
            blobs.append((name, blob, sum(row_counts[a:b])))
        if not too_big:
            break
        if parts >= total:
            raise ExportError(
                f"{base}: one line does not fit in a zip of at most {max_zip_bytes:,} bytes."
            )
        if parts == 1:
            # The parts' zips add up to at least about the single zip: start from that count.
            parts = max(2, math.ceil(too_big / max_zip_bytes))
        else:
            parts += 1
        parts = min(parts, total)
    entries = []
    for name, blob, n in blobs:
        path = out_dir / f"{name}.zip"
        write_bytes(blob, path)
        entries.append(file_entry(path, out_dir, rows=n, data=blob))
    return entries
