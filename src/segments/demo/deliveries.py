"""Demo data as a brand delivers it: the same files cut by time into successive deliveries.

`split` cuts every input file of a demo folder at the given times; delivery k holds the rows
with time in [cuts[k-1], cuts[k]) (the first everything before cuts[0], the last everything
from the last cut on), in the file's own format, under a name of its own
(`orders/orders-d1.csv`). `gather` copies chosen deliveries into one input folder, as files
land in a brand's export folder week after week. Rows whose time cannot be read (the demo's
dirty rows) go with the first delivery, so every row is in exactly one.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl

_SHANGHAI = ZoneInfo("Asia/Shanghai")  # the demo's time zone

TIME_FIELDS = ("paid_at", "ts", "msgtime", "observed_at", "updated_at")


def _slice_of(times: list[datetime | None], cuts: list[datetime]) -> list[int]:
    out = []
    for t in times:
        k = 0
        if t is not None:
            while k < len(cuts) and t >= cuts[k]:
                k += 1
        out.append(k)
    return out


def _parse(text: str | None) -> datetime | None:
    if text is None:
        return None
    value = text.strip()
    if value.isdigit():  # epoch milliseconds (the WeCom archive): the Shanghai wall clock
        return (
            datetime.fromtimestamp(int(value) / 1000, _SHANGHAI).replace(tzinfo=None)
            if len(value) >= 12
            else None
        )
    try:
        parsed = datetime.fromisoformat(value.replace("/", "-"))
    except ValueError:
        return None
    if parsed.tzinfo is not None:  # an offset: the Shanghai wall clock, as ingest reads it
        parsed = parsed.astimezone(_SHANGHAI)
    return parsed.replace(tzinfo=None)


def _times(df: pl.DataFrame, field: str) -> pl.Series:
    """The rows' times: parsed by polars where it can, by `_parse` (offsets, other layouts)
    for the few rows it cannot."""
    raw = df.get_column(field)
    if raw.dtype != pl.String:
        return raw.cast(pl.Datetime("us"))
    fast = (
        raw.str.strip_chars().str.to_datetime(strict=False, time_zone=None).cast(pl.Datetime("us"))
    )
    missing = fast.is_null() & raw.is_not_null()
    if not missing.any():
        return fast
    slow = pl.Series([_parse(v) for v in raw.filter(missing).to_list()], dtype=pl.Datetime("us"))
    return fast.scatter(missing.arg_true(), slow)


def _split_table(df: pl.DataFrame, cuts: list[datetime]) -> list[pl.DataFrame]:
    field = next(f for f in TIME_FIELDS if f in df.columns)
    ts = pl.col("_t")
    slice_of = pl.sum_horizontal([(ts >= cut).fill_null(False).cast(pl.Int32) for cut in cuts])
    keyed = df.with_columns(_times(df, field).alias("_t")).with_columns(slice_of.alias("_k"))
    return [keyed.filter(pl.col("_k") == k).drop("_t", "_k") for k in range(len(cuts) + 1)]


def _split_lines(path: Path, cuts: list[datetime]) -> list[list[str]]:
    out: list[list[str]] = [[] for _ in range(len(cuts) + 1)]
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            raw = next((record[f] for f in TIME_FIELDS if f in record), None)
        except (ValueError, TypeError):
            raw = None
        k = _slice_of([_parse(str(raw)) if raw is not None else None], cuts)[0]
        out[k].append(line)
    return out


def split(input_dir: Path, out_dir: Path, cuts: list[datetime]) -> list[Path]:
    """Cut every file of `input_dir` (table folders; `truth/` is left out) at `cuts` (sorted)
    into `out_dir/d0 .. d<len(cuts)>`, each an input folder. Returns those folders."""
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    folders = [out_dir / f"d{k}" for k in range(len(cuts) + 1)]
    for table_dir in sorted(p for p in input_dir.iterdir() if p.is_dir() and p.name != "truth"):
        for path in sorted(p for p in table_dir.iterdir() if p.is_file()):
            stem, suffix = path.name.split(".", 1)
            targets = [f / table_dir.name / f"{stem}-{f.name}.{suffix}" for f in folders]
            for t in targets:
                t.parent.mkdir(parents=True, exist_ok=True)
            if suffix == "csv":
                df = pl.read_csv(path, infer_schema=False)
                for part, target in zip(_split_table(df, cuts), targets, strict=True):
                    if part.height:
                        part.write_csv(target)
            elif suffix == "parquet":
                df = pl.read_parquet(path)
                for part, target in zip(_split_table(df, cuts), targets, strict=True):
                    if part.height:
                        part.write_parquet(target)
            elif suffix in ("jsonl", "ndjson"):
                for lines, target in zip(_split_lines(path, cuts), targets, strict=True):
                    if lines:
                        target.write_text("\n".join(lines) + "\n", encoding="utf-8")
            else:
                raise ValueError(f"{path}: cannot split a {suffix} file")
    return folders


def gather(input_dir: Path, *deliveries: Path, link: bool = False) -> Path:
    """Put the files of `deliveries` into `input_dir` (created; files already there stay):
    copies, or with `link` hard links where the file system allows (no copy of big files; a
    file changed in place then changes in its delivery too)."""
    input_dir = Path(input_dir)
    for folder in deliveries:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                target = input_dir / path.relative_to(folder)
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    if link:
                        try:
                            os.link(path, target)
                            continue
                        except OSError:
                            pass
                    shutil.copy2(path, target)
    return input_dir


__all__ = ["gather", "split"]
