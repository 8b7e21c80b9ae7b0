"""TikTok customer-file audiences: CSVs of SHA-256 phones (both documented forms) and MAIDs."""

from __future__ import annotations

from segments.exporters.base import CsvExporter, ExportOptions, OutputType, Source
from segments.exporters.ids import sha256_lower, sha256_upper

IDFA = Source("idfa", "idfa")

# TikTok's help page said "+CC…" (June 2025) then digits only (August 2025): write both files.
# Codes are the upload API's calculate_type (PHONE_SHA256 = 9, IDFA_SHA256 = 15).
OUTPUTS = (
    OutputType(
        "PHONE_SHA256_86",
        (
            Source(
                "phone_sha256",
                "sha256",
                "phone_cc_sha256",
                "phone hashed upstream: no phone_cc_sha256 known",
            ),
        ),
        code=9,
        header="Phone_SHA256",
    ),
    OutputType(
        "PHONE_SHA256_PLUS86",
        (
            Source(
                "phone_sha256",
                "sha256",
                "phone_e164_sha256",
                "phone hashed upstream: no phone_e164_sha256 known",
            ),
        ),
        code=9,
        header="Phone_SHA256",
    ),
    # The case TikTok hashes MAIDs in is not documented: write both.
    OutputType("MAID_SHA256_UPPER", (IDFA,), sha256_upper, code=15, header="MAID_SHA256"),
    OutputType("MAID_SHA256_LOWER", (IDFA,), sha256_lower, code=15, header="MAID_SHA256"),
)


class TikTokExporter(CsvExporter):
    """TikTok files: `<pack>_<week>_<TYPE>.csv`, a typed header row, one hash per line."""

    name = "tiktok"
    platform_min_size = 1_000
    # TikTok takes .csv or .txt uploads (not zip); no size limit is documented.

    def all_outputs(self, options: ExportOptions) -> tuple[OutputType, ...]:
        return OUTPUTS

    def skip_reason(self, id_type: str, options: ExportOptions) -> str:
        if id_type == "phone_md5":
            return "TikTok takes phones as SHA-256 only; only an MD5 of the phone is known"
        return super().skip_reason(id_type, options)
