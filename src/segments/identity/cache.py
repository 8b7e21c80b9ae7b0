"""OneID node cache: last build's aggregated identifiers, reused while its pieces are read."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from segments.contract import TIMESTAMP
from segments.identity.gather import _Labels
from segments.identity.schema import NODE_TYPE
from segments.io import atomic_path
from segments.settings.identity import IdentityConfig

# ---------------------------------------------------------------------------------------------
# Reusing last run's identifiers


NODE_CACHE_VERSION = 1


def _package_source() -> bytes:
    """The source of every module of the identity package, sorted by name: the code that
    decides the nodes (a change to any of them invalidates the cache)."""
    return b"".join(p.read_bytes() for p in sorted(Path(__file__).parent.glob("*.py")))


@dataclass(frozen=True)
class NodeCache:
    """Where the aggregated identifiers of the last build are kept (`folder`), and this build's
    tables as `pieces`: per table, {key: rows}. A key names rows whose content cannot change
    under it (a validated file of the ingest cache, the slices read of it, the rows later rows
    replaced, and the week's cut when it falls inside the file).

    When every piece of the last build is still a piece of this one, the identifiers are last
    build's nodes plus those of the new pieces only: first/last seen and the source bits
    aggregate the same in any grouping, so the nodes are exactly those of a full read."""

    folder: Path
    pieces: dict[str, dict[str, pl.LazyFrame]]

    def _meta(self, labels: _Labels, cfg: IdentityConfig) -> dict[str, Any]:
        return {
            "version": NODE_CACHE_VERSION,
            # this code and polars' (the validated files' keys already cover the readers)
            "code": hashlib.sha256(_package_source() + pl.__version__.encode()).hexdigest()[:20],
            "labels": labels.names,
            "mention_id_type": cfg.mention_id_type,
        }

    def reuse(
        self, present: dict[str, pl.LazyFrame], labels: _Labels, cfg: IdentityConfig
    ) -> tuple[pl.DataFrame, dict[str, pl.LazyFrame], int] | None:
        """(last build's nodes, the tables' new pieces, how many) when the last build's pieces
        are all still here; None when everything must be read (no usable cache, or unknown id
        types or over 64 source labels: those nodes are not kept)."""
        if labels.raw or not labels.bitmask or set(present) - set(self.pieces):
            return None
        try:
            meta = json.loads((self.folder / "meta.json").read_text())
            same = {k: meta.get(k) for k in self._meta(labels, cfg)} == self._meta(labels, cfg)
            stored: dict[str, list[str]] = meta["pieces"]
            if not same or set(stored) - set(present):
                return None
            if any(set(keys) - set(self.pieces[t]) for t, keys in stored.items()):
                return None  # a file left, changed, or lost rows to a later one
            nodes = pl.read_parquet(self.folder / meta["nodes"], glob=False)
        except (OSError, ValueError, KeyError, TypeError, pl.exceptions.PolarsError):
            return None  # no cache, or one this build cannot use: read everything
        fresh = {
            t: [lf for key, lf in self.pieces[t].items() if key not in stored.get(t, ())]
            for t in present
        }
        new = sum(len(lfs) for lfs in fresh.values())
        return nodes, {t: pl.concat(lfs) for t, lfs in fresh.items() if lfs}, new

    def save(self, nodes: pl.DataFrame, labels: _Labels, cfg: IdentityConfig) -> None:
        """Keep this build's nodes for the next one. The nodes file is named by the pieces it
        covers and written before the meta that points at it: a crash leaves the last good
        pair."""
        if labels.raw or not labels.bitmask:
            return
        pieces = {t: sorted(keys) for t, keys in sorted(self.pieces.items())}
        meta = self._meta(labels, cfg) | {"pieces": pieces}
        name = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:20]
        meta["nodes"] = f"nodes-{name}.parquet"
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with atomic_path(self.folder / meta["nodes"]) as tmp:  # sorted: same inputs, same file
            nodes.sort("t", "id").write_parquet(tmp, compression="lz4")
            tmp.chmod(0o600)
        with atomic_path(self.folder / "meta.json") as tmp:
            tmp.write_text(json.dumps(meta, sort_keys=True))
            tmp.chmod(0o600)
        for old in self.folder.glob("nodes-*.parquet"):
            if old.name != meta["nodes"]:
                old.unlink(missing_ok=True)


def _as_occurrences(nodes: pl.DataFrame) -> pl.LazyFrame:
    """Aggregated nodes (known id types, source bits) as occurrences, one at first seen and one
    at last seen, that aggregate back to themselves."""
    lf = nodes.lazy().select(
        pl.col("t").cast(NODE_TYPE),
        pl.col("id").cast(pl.String),
        pl.col("first_seen").cast(TIMESTAMP),
        pl.col("last_seen").cast(TIMESTAMP),
        pl.col("src").cast(pl.UInt64),
    )
    return pl.concat(
        [
            lf.select("t", "id", pl.col(seen).alias("ts"), "src")
            for seen in ("first_seen", "last_seen")
        ]
    )
