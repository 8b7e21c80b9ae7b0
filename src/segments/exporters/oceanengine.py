"""Ocean Engine (巨量引擎) DMP audiences: classic protobuf `DmpData` lines, or Qianchuan plain ids.

Classic DMP (`/2/dmp/data_source/file/upload/`): each line of the uploaded txt is the base64
(standard alphabet) of one serialised `toutiao.dmp.DmpData` message (proto2):

    message DmpData { repeated IdItem idList = 1; }        // <= 10,000 ids per line
    message IdItem {
      optional uint32 timestamp = 1;                       // omitted: upload time is used
      required DataType dataType = 2;
      required string id = 3;                              // lowercase
      repeated string tags = 4;                            // omitted
      enum DataType { IMEI=0; IDFA=1; UID=2; IMEI_MD5=4; IDFA_MD5=5; MOBILE_HASH_SHA256=6;
                      OAID=7; OAID_MD5=8; }
    }

The few fields are encoded by hand (varint + length-delimited), so no protobuf dependency.
Qianchuan (千川, `qianchuan/audience_file/upload/`): one id per line, `data_type` per file.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import Field

from segments.exporters.base import Exporter, ExportOptions, OutputType, Prepared, Source
from segments.exporters.files import MB, write_zip_parts
from segments.exporters.ids import md5
from segments.exporters.manifest import FileEntry

PHONE = Source("phone_sha256", "sha256")
IMEI = Source("imei", "imei")
IDFA = Source("idfa", "idfa")
OAID = Source("oaid", "oaid")

# Classic DMP: names and codes are the proto's DataType enum. Only hashed forms are sent.
CLASSIC_OUTPUTS = (
    OutputType("MOBILE_HASH_SHA256", (PHONE,), code=6),
    OutputType("IMEI_MD5", (IMEI,), md5, code=4),
    OutputType("IDFA_MD5", (IDFA,), md5, code=5),
    OutputType("OAID_MD5", (OAID,), md5, code=8),
)

# Qianchuan: codes are `data_type` of audience/create_by_file. Phone MD5 (17) carries only the
# phones hashed to MD5 upstream; every other phone goes as SHA-256 (14).
QIANCHUAN_OUTPUTS = (
    OutputType("PHONE_SHA256", (PHONE,), code=14),
    OutputType("PHONE_MD5", (Source("phone_md5", "md5"),), code=17),
    OutputType("IMEI_MD5", (IMEI,), md5, code=11),
    OutputType("IDFA_MD5", (IDFA,), md5, code=12),
    OutputType("OAID_MD5", (OAID,), md5, code=16),
)

ZIP_LIMITS = {"classic": 50 * MB, "qianchuan": 25 * MB}


# ---------------------------------------------------------------------------------------------
# Protobuf wire format, by hand


def varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int (`varint(300) == b'\\xac\\x02'`)."""
    if n < 0:
        raise ValueError(f"varint of a negative number: {n}")
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field_varint(number: int, value: int) -> bytes:
    return varint(number << 3 | 0) + varint(value)


def _field_bytes(number: int, value: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(value)) + value


def encode_id_item(data_type: int, id_: str) -> bytes:
    """Serialised `IdItem` with dataType (field 2) and id (field 3); no timestamp or tags."""
    return _field_varint(2, data_type) + _field_bytes(3, id_.encode("utf-8"))


def encode_dmp_data(items: Iterable[tuple[int, str]]) -> bytes:
    """Serialised `DmpData`: each (dataType, id) as one `idList` entry (field 1)."""
    return b"".join(_field_bytes(1, encode_id_item(t, i)) for t, i in items)


def dmp_lines(data_type: int, ids: list[str], ids_per_line: int) -> list[str]:
    """Base64 `DmpData` lines, `ids_per_line` ids each (the last line may hold fewer)."""
    return [
        base64.b64encode(encode_dmp_data((data_type, i) for i in ids[a : a + ids_per_line])).decode(
            "ascii"
        )
        for a in range(0, len(ids), ids_per_line)
    ]


# ---------------------------------------------------------------------------------------------


class OceanEngineOptions(ExportOptions):
    """Ocean Engine options.

    variant: `classic` (DMP data source, protobuf lines, zip <= 50 MB) or `qianchuan`
        (千川 audience file, one id per line, zip <= 25 MB).
    ids_per_line: ids in one classic `DmpData` line (the platform allows at most 10,000).
    max_zip_bytes: split a type's zip into parts above this size (default per variant).
    """

    variant: Literal["classic", "qianchuan"] = "classic"
    ids_per_line: int = Field(default=1_000, ge=1, le=10_000)
    max_zip_bytes: int | None = Field(default=None, ge=1)


class OceanEngineExporter(Exporter):
    """Ocean Engine audience files: `<pack>_<week>_<TYPE>.txt` zipped, one type per zip."""

    name = "oceanengine"
    platform_min_size = None  # not documented
    options_model = OceanEngineOptions

    def all_outputs(self, options: ExportOptions) -> tuple[OutputType, ...]:
        assert isinstance(options, OceanEngineOptions)
        return CLASSIC_OUTPUTS if options.variant == "classic" else QIANCHUAN_OUTPUTS

    def skip_reason(self, id_type: str, options: ExportOptions) -> str:
        assert isinstance(options, OceanEngineOptions)
        if id_type == "phone_md5" and options.variant == "classic":
            return "the classic DMP takes phones as SHA-256 only; only an MD5 is known"
        return super().skip_reason(id_type, options)

    def write_output(
        self, prepared: Prepared, stem: str, out_dir: Path, options: ExportOptions
    ) -> list[FileEntry]:
        assert isinstance(options, OceanEngineOptions)
        base = f"{stem}_{prepared.output.name}"
        limit = options.max_zip_bytes or ZIP_LIMITS[options.variant]
        if options.variant == "qianchuan":
            return write_zip_parts(out_dir, base, prepared.values, limit)
        code = prepared.output.code
        assert code is not None
        values, per = prepared.values, options.ids_per_line
        lines = dmp_lines(code, values, per)
        rows = [min(per, len(values) - a) for a in range(0, len(values), per)]
        return write_zip_parts(out_dir, base, lines, limit, rows=rows)
