"""The columns of the frames OneID returns, and the id type as a polars Enum."""

from __future__ import annotations

import polars as pl

from segments.contract import TIMESTAMP
from segments.settings.identity import NODE_TYPES

NODE_TYPE = pl.Enum(NODE_TYPES)


MAP_SCHEMA = {
    "one_id": pl.String(),
    "id_type": pl.String(),
    "id": pl.String(),
    "first_seen": TIMESTAMP,
    "last_seen": TIMESTAMP,
    "sources": pl.List(pl.String()),
}
REJECTED_LINKS_SCHEMA = {
    "id_type_a": pl.String(),
    "id_a": pl.String(),
    "id_type_b": pl.String(),
    "id_b": pl.String(),
    "evidence": pl.String(),
    "reason": pl.String(),
}
REJECTED_IDS_SCHEMA = {
    "id_type": pl.String(),
    "id": pl.String(),
    "table": pl.String(),
    "reason": pl.String(),
}
CHANGES_SCHEMA = {
    "week": pl.String(),
    "one_id": pl.String(),
    "event": pl.String(),
    "from_one_id": pl.String(),
    "to_one_id": pl.String(),
}
