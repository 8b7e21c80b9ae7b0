"""Alibaba 阿里妈妈 达摩盘 (DMP) first-party audiences: one CSV per id type, phone MD5 or SHA-256."""

from __future__ import annotations

from typing import Literal

from segments.exporters.base import CsvExporter, ExportOptions, OutputType, Source

PHONE_SHA256 = OutputType(
    "PHONE_SHA256", (Source("phone_sha256", "sha256"),), header="PHONE_SHA256"
)
PHONE_MD5 = OutputType(
    "PHONE_MD5",
    (
        Source("phone_sha256", "md5", "phone_md5", "phone hashed upstream: no phone_md5 known"),
        Source("phone_md5", "md5"),
    ),
    header="PHONE_MD5",
)
TAOBAO_ID = OutputType("TAOBAO_ID", (Source("taobao_ouid", "taobao"),), header="TAOBAO_ID")


class AlimamaOptions(ExportOptions):
    """Alibaba options.

    phone_hash: `sha256` (default) or `md5`. 达摩盘 takes SHA-256 for phones only, and a push is
        either MD5 or SHA-256: in sha256 mode phones hashed to MD5 upstream cannot be sent.
    """

    phone_hash: Literal["md5", "sha256"] = "sha256"


class AlimamaExporter(CsvExporter):
    """达摩盘 audience files: `<pack>_<week>_<TYPE>.csv`, a header row, one id per line."""

    name = "alimama"
    min_size = 2_000
    platform_min_size = 2_000  # pushed audiences must exceed 2,000 (matched: 1,000)
    options_model = AlimamaOptions

    def all_outputs(self, options: ExportOptions) -> tuple[OutputType, ...]:
        assert isinstance(options, AlimamaOptions)
        phone = PHONE_SHA256 if options.phone_hash == "sha256" else PHONE_MD5
        return (phone, TAOBAO_ID)

    def skip_reason(self, id_type: str, options: ExportOptions) -> str:
        if id_type == "phone_md5":
            return "phone_hash is sha256; an MD5 phone cannot be sent in a SHA-256 push"
        return super().skip_reason(id_type, options)
