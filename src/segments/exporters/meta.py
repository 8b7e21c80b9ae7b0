"""Meta (Facebook) Custom Audiences: PHONE_SHA256 and MADID, as CSV and as API payload batches."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field

from segments.exporters.base import CsvExporter, ExportOptions, OutputType, Prepared, Source
from segments.exporters.files import file_entry
from segments.exporters.ids import lowercase
from segments.exporters.manifest import FileEntry
from segments.io import write_bytes

OUTPUTS = (
    # sha256 of "86" + 11 digits: country code prefixed, digits only, no "+".
    OutputType(
        "PHONE_SHA256",
        (
            Source(
                "phone_sha256",
                "sha256",
                "phone_cc_sha256",
                "phone hashed upstream: no phone_cc_sha256 known",
            ),
        ),
        header="PHONE_SHA256",
    ),
    # IDFA lowercase with hyphens, not hashed.
    OutputType("MADID", (Source("idfa", "idfa"),), lowercase, header="MADID"),
)

# The single-key API schema of each output (the multi-key schema calls MADID "MADID").
API_SCHEMA = {"PHONE_SHA256": "PHONE_SHA256", "MADID": "MOBILE_ADVERTISER_ID"}


class MetaOptions(ExportOptions):
    """Meta options.

    batch_size: records per API request in the payload file (Meta accepts at most 10,000).
    """

    batch_size: int = Field(default=10_000, ge=1, le=10_000)


def payload_lines(schema: str, values: list[str], batch_size: int) -> list[str]:
    """One JSON object per line, `{"schema": ..., "data": [...]}`, `batch_size` records each.

    `data` is a flat list of values, as the official SDK sends single-key schemas.
    """
    return [
        json.dumps(
            {"schema": schema, "data": values[a : a + batch_size]},
            separators=(",", ":"),
        )
        for a in range(0, len(values), batch_size)
    ]


class MetaExporter(CsvExporter):
    """Meta files per id type: `<pack>_<week>_<TYPE>.csv` and `<pack>_<week>_<TYPE>_api.jsonl`."""

    name = "meta"
    platform_min_size = 100  # Meta discards audiences with fewer than 100 matches
    options_model = MetaOptions

    def all_outputs(self, options: ExportOptions) -> tuple[OutputType, ...]:
        return OUTPUTS

    def skip_reason(self, id_type: str, options: ExportOptions) -> str:
        if id_type == "phone_md5":
            return "Meta needs sha256 of 86+number; only an MD5 of the phone is known"
        return super().skip_reason(id_type, options)

    def write_output(
        self, prepared: Prepared, stem: str, out_dir: Path, options: ExportOptions
    ) -> list[FileEntry]:
        assert isinstance(options, MetaOptions)
        out = prepared.output
        csv = super().write_output(prepared, stem, out_dir, options)
        lines = payload_lines(API_SCHEMA[out.name], prepared.values, options.batch_size)
        data = ("\n".join(lines) + "\n").encode("utf-8")
        path = out_dir / f"{stem}_{out.name}_api.jsonl"
        write_bytes(data, path)
        return [*csv, file_entry(path, out_dir, rows=len(prepared.values), data=data)]
