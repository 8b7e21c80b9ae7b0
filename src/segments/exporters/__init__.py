"""Ad-platform exporters: one module per platform, looked up by name with `get_exporter`."""

from __future__ import annotations

from segments.errors import ExportError
from segments.exporters.alimama import AlimamaExporter, AlimamaOptions
from segments.exporters.base import ENGINE_MIN_SIZE, CsvExporter, Exporter, ExportOptions
from segments.exporters.google import GoogleExporter
from segments.exporters.manifest import ExportManifest, FileEntry, IdTypeStats
from segments.exporters.meta import MetaExporter, MetaOptions
from segments.exporters.oceanengine import OceanEngineExporter, OceanEngineOptions
from segments.exporters.parquet import ParquetExporter, ParquetOptions
from segments.exporters.tencent import TencentExporter, TencentOptions
from segments.exporters.tiktok import TikTokExporter

EXPORTERS: dict[str, type[Exporter]] = {
    cls.name: cls
    for cls in (
        TencentExporter,
        OceanEngineExporter,
        AlimamaExporter,
        MetaExporter,
        GoogleExporter,
        TikTokExporter,
        ParquetExporter,
    )
}


def get_exporter(name: str) -> Exporter:
    """A new exporter for platform `name`; ExportError listing the valid names when unknown."""
    try:
        cls = EXPORTERS[name]
    except (KeyError, TypeError):
        raise ExportError(
            f"unknown export platform {name!r}; valid: {', '.join(EXPORTERS)}."
        ) from None
    return cls()


__all__ = [
    "ENGINE_MIN_SIZE",
    "EXPORTERS",
    "AlimamaExporter",
    "AlimamaOptions",
    "CsvExporter",
    "ExportManifest",
    "ExportOptions",
    "Exporter",
    "FileEntry",
    "GoogleExporter",
    "IdTypeStats",
    "MetaExporter",
    "MetaOptions",
    "OceanEngineExporter",
    "OceanEngineOptions",
    "ParquetExporter",
    "ParquetOptions",
    "TencentExporter",
    "TencentOptions",
    "TikTokExporter",
    "get_exporter",
]
