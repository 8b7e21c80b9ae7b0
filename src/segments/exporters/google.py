"""Google Ads Customer Match: hashed E.164 phones and raw mobile device ids, as upload CSVs."""

from __future__ import annotations

from segments.exporters.base import CsvExporter, ExportOptions, OutputType, Source

OUTPUTS = (
    # sha256 of "+86" + 11 digits (E.164). Google's own formatter only prepends "+": never
    # hash "+" + the bare 11 digits, that is a North-American number.
    OutputType(
        "PHONE",
        (
            Source(
                "phone_sha256",
                "sha256",
                "phone_e164_sha256",
                "phone hashed upstream: no phone_e164_sha256 known",
            ),
        ),
        header="Phone",
    ),
    # IDFA as is (UPPERCASE, hyphens): Customer Match takes mobile ids unhashed.
    OutputType("MOBILE_DEVICE_ID", (Source("idfa", "idfa"),), header="Mobile Device ID"),
)


class GoogleExporter(CsvExporter):
    """Customer Match files: `<pack>_<week>_PHONE.csv` (header `Phone`) and
    `<pack>_<week>_MOBILE_DEVICE_ID.csv` (header `Mobile Device ID`; a separate list type)."""

    name = "google"
    platform_min_size = None  # not verified (historically 1,000 Search/YouTube, 100 Display)

    def all_outputs(self, options: ExportOptions) -> tuple[OutputType, ...]:
        return OUTPUTS

    def skip_reason(self, id_type: str, options: ExportOptions) -> str:
        if id_type == "phone_md5":
            return "Google needs sha256 of +86number; only an MD5 of the phone is known"
        if id_type in ("oaid", "imei"):
            return f"Customer Match mobile ids are IDFA or Android advertising id, not {id_type}"
        return super().skip_reason(id_type, options)
