"""Tencent Ads (腾讯广告 / 广点通) customer-file audiences: one id type per zipped txt file."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from segments.exporters.base import Exporter, ExportOptions, OutputType, Prepared, Source
from segments.exporters.files import MB, write_zip_parts
from segments.exporters.ids import md5, md5_sha256
from segments.exporters.manifest import FileEntry

PHONE_MD5_MISSING = "phone hashed upstream: no phone_md5 known"
OPENID_NEEDS_APP = (
    "needs the openid_app_id option (the mini-program app the openids belong to, "
    "sent as open_app_id on upload)"
)

IMEI = Source("imei", "imei")
IDFA = Source("idfa", "idfa")
OAID = Source("oaid", "oaid")

OUTPUTS = (
    # md5 of the 11 digits: from ingest-hashed phones, and phones hashed to MD5 upstream.
    OutputType(
        "HASH_MOBILE_PHONE",
        (Source("phone_sha256", "md5", "phone_md5", PHONE_MD5_MISSING), Source("phone_md5", "md5")),
    ),
    OutputType("SHA256_MOBILE_PHONE", (Source("phone_sha256", "sha256"),)),
    OutputType("WX_UNIONID", (Source("unionid", "wechat"),)),
    OutputType("WECHAT_OPENID", (Source("openid", "wechat"),)),
    OutputType("HASH_IMEI", (IMEI,), md5),
    OutputType("HASH_IDFA", (IDFA,), md5),
    OutputType("HASH_OAID", (OAID,), md5),
    OutputType("MD5_SHA256_IMEI", (IMEI,), md5_sha256),
    OutputType("MD5_SHA256_IDFA", (IDFA,), md5_sha256),
    OutputType("MD5_SHA256_OAID", (OAID,), md5_sha256),
)


class TencentOptions(ExportOptions):
    """Tencent options.

    openid_app_id: the mini-program app id the openids belong to; without it openids are
        skipped (Tencent needs `open_app_id` with WECHAT_OPENID files).
    max_zip_bytes: split a type's zip into parts above this size (default 100 MB, Tencent's
        per-upload limit).
    """

    openid_app_id: str | None = Field(default=None, min_length=1)
    max_zip_bytes: int = Field(default=100 * MB, ge=1)


class TencentExporter(Exporter):
    """Tencent customer-file audience: `<pack>_<week>_<TYPE>.txt` (one id per line) zipped."""

    name = "tencent"
    platform_min_size = None  # targeting minimum not documented; lookalike seeds need 2,000
    options_model = TencentOptions

    def all_outputs(self, options: ExportOptions) -> tuple[OutputType, ...]:
        return OUTPUTS

    def unavailable(self, options: ExportOptions) -> dict[str, str]:
        assert isinstance(options, TencentOptions)
        return {} if options.openid_app_id else {"WECHAT_OPENID": OPENID_NEEDS_APP}

    def skip_reason(self, id_type: str, options: ExportOptions) -> str:
        if id_type == "openid":
            return f"WECHAT_OPENID {OPENID_NEEDS_APP}"
        return super().skip_reason(id_type, options)

    def extra_warnings(self, options: ExportOptions) -> list[str]:
        assert isinstance(options, TencentOptions)
        if options.openid_app_id:
            return [
                f"WECHAT_OPENID assumes every openid belongs to app {options.openid_app_id}; "
                "upload it with that open_app_id."
            ]
        return []

    def write_output(
        self, prepared: Prepared, stem: str, out_dir: Path, options: ExportOptions
    ) -> list[FileEntry]:
        assert isinstance(options, TencentOptions)
        base = f"{stem}_{prepared.output.name}"
        return write_zip_parts(out_dir, base, prepared.values, options.max_zip_bytes)
