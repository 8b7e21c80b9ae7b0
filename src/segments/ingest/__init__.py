"""Ingest: read every input file, validate it against the contract, hash phones, keep every reject.

For each table the counts reconcile: `read = accepted + rejected + duplicates + skipped`.
A rejected row goes to `rejects/<table>.parquet` with its file, row, column, value and reason;
an invalid identifier on a row that is otherwise good (a receiver phone) goes to
`rejects/identifiers.parquet` and the row is kept.

The modules, each importing only those listed before it:

- `adapters`: source adapters (another system's export mapped onto the contract)
- `parse`: timestamps, numbers, identifiers; phones masked in values and free text
- `validate`: one table checked against the contract, reject rows and reasons
- `cache`: the validated-file cache (entries, their layout, `Part` and `Run`)
- `dedup`: repeated keys, resolved by key hash; the sizes ingest holds at once
- `run`: `ingest` itself, `IngestResult` and `TableCounts`
"""

from segments.ingest.cache import Part, Run
from segments.ingest.parse import (
    FREE_TEXT,
    VIRTUAL_PREFIXES,
    mask_phones,
    mask_value,
    parse_timestamp,
    with_timestamp,
)
from segments.ingest.run import IngestResult, TableCounts, ingest
from segments.ingest.validate import REJECT_SCHEMA, validate

__all__ = [
    "FREE_TEXT",
    "REJECT_SCHEMA",
    "VIRTUAL_PREFIXES",
    "IngestResult",
    "Part",
    "Run",
    "TableCounts",
    "ingest",
    "mask_phones",
    "mask_value",
    "parse_timestamp",
    "validate",
    "with_timestamp",
]
