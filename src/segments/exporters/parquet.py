"""The whole pack as one Parquet file: one row per person, every platform-usable id as lists."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
from pydantic import Field

from segments.exporters.base import Exporter, ExportOptions, OutputType, Prepared, Source
from segments.exporters.files import file_entry
from segments.exporters.ids import md5
from segments.exporters.manifest import FileEntry
from segments.io import atomic_path

IMEI = Source("imei", "imei")
IDFA = Source("idfa", "idfa")
OAID = Source("oaid", "oaid")

# One list column per form some platform takes. Phones only ever as hashes.
COLUMNS = (
    OutputType("phone_sha256", (Source("phone_sha256", "sha256"),)),
    OutputType(
        "phone_md5",
        (
            Source("phone_sha256", "md5", "phone_md5", "phone hashed upstream: no phone_md5 known"),
            Source("phone_md5", "md5"),
        ),
    ),
    OutputType(
        "phone_cc_sha256",
        (
            Source(
                "phone_sha256",
                "sha256",
                "phone_cc_sha256",
                "phone hashed upstream: no phone_cc_sha256 known",
            ),
        ),
    ),
    OutputType(
        "phone_e164_sha256",
        (
            Source(
                "phone_sha256",
                "sha256",
                "phone_e164_sha256",
                "phone hashed upstream: no phone_e164_sha256 known",
            ),
        ),
    ),
    OutputType("unionid", (Source("unionid", "wechat"),)),
    OutputType("openid", (Source("openid", "wechat"),)),
    OutputType("taobao_ouid", (Source("taobao_ouid", "taobao"),)),
    OutputType("imei_md5", (IMEI,), md5),
    OutputType("idfa_md5", (IDFA,), md5),
    OutputType("oaid_md5", (OAID,), md5),
    # Meta and Google take the IDFA itself (UPPERCASE here; Meta lowercases it).
    OutputType("idfa", (IDFA,)),
)

EMPTY_LIST = pl.lit([], dtype=pl.List(pl.String))


class ParquetOptions(ExportOptions):
    """Parquet options.

    metadata: key-value pairs stored in the Parquet file's metadata (e.g. run id, config hash).
    """

    metadata: dict[str, str] = Field(default_factory=dict)


def pack_frame(frame: pl.DataFrame, prepared: Sequence[Prepared]) -> pl.DataFrame:
    """One row per one_id of `frame` (sorted), one sorted, distinct `List(String)` per column.

    People without a value in a column get an empty list. One group-by over every column's
    (one_id, value) pairs, then one pivot, rather than a group-by and a join per column.
    """
    names = [p.output.name for p in prepared]
    people = frame.select("one_id").unique()
    if not names:
        return people.sort("one_id")
    long = pl.concat(
        [p.pairs.select("one_id", pl.lit(p.output.name).alias("_col"), "out") for p in prepared],
        how="vertical_relaxed",
    )
    lists = (
        long.group_by("one_id", "_col")
        .agg(pl.col("out").unique().sort())
        .pivot(on="_col", index="one_id", values="out", on_columns=names)
    )
    out = people.join(lists, on="one_id", how="left")
    return out.select(
        "one_id",
        *[
            (pl.col(n) if n in out.columns else pl.lit(None, pl.List(pl.String)))
            .cast(pl.List(pl.String))
            .fill_null(EMPTY_LIST)
            .alias(n)
            for n in names
        ],
    ).sort("one_id")


class ParquetExporter(Exporter):
    """`<pack>_<week>.parquet`: `one_id` plus one list column per identifier form."""

    name = "parquet"
    options_model = ParquetOptions

    def all_outputs(self, options: ExportOptions) -> tuple[OutputType, ...]:
        return COLUMNS

    def skip_reason(self, id_type: str, options: ExportOptions) -> str:
        return f"no ad platform takes {id_type}"

    def write_output(
        self, prepared: Prepared, stem: str, out_dir: Path, options: ExportOptions
    ) -> list[FileEntry]:
        raise NotImplementedError("the Parquet exporter writes every column into one file")

    def write_all(
        self,
        frame: pl.DataFrame,
        prepared: Sequence[Prepared],
        stem: str,
        out_dir: Path,
        options: ExportOptions,
    ) -> tuple[dict[str, list[FileEntry]], list[FileEntry]]:
        assert isinstance(options, ParquetOptions)
        df = pack_frame(frame, prepared)
        table = df.to_arrow()
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), **dict(sorted(options.metadata.items()))}
        )
        path = out_dir / f"{stem}.parquet"
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        return {}, [file_entry(path, out_dir, rows=df.height)]
