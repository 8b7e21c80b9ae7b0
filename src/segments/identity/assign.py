"""OneID one_ids: content-hash ids kept stable against last week's map, and change events."""

from __future__ import annotations

import numpy as np
import polars as pl

from segments.contract import hide_phone_id, sha256_hex
from segments.errors import DataError
from segments.identity.gather import _names, _node_hash
from segments.identity.schema import NODE_TYPE

# ---------------------------------------------------------------------------------------------
# One ids


class _ContentIds:
    """Content ids: "U" + the first 16 hex of sha256 of a component's smallest key
    `id_type:id` (with a salt appended only to step around an id last week used)."""

    def __init__(self, valid: pl.DataFrame) -> None:
        self.valid = valid

    def __call__(self, first: pl.Series, salt: str = "") -> pl.Series:
        nids = first.to_numpy()
        text = pl.concat_str(
            [pl.col("t").gather(nids).cast(pl.String), pl.col("id").gather(nids)], separator=":"
        )
        if salt:
            text = text + pl.lit(salt)
        out = self.valid.select((pl.lit("U") + sha256_hex(text).str.slice(0, 16)).alias("one_id"))
        return out.to_series()


def _new_events(ids: pl.DataFrame, week_label: str) -> pl.DataFrame:
    return ids.select(
        pl.lit(week_label).alias("week"),
        "one_id",
        pl.lit("new").alias("event"),
        pl.lit(None, dtype=pl.String).alias("from_one_id"),
        pl.col("one_id").alias("to_one_id"),
    )


def _previous_map(previous: pl.DataFrame | pl.LazyFrame | None) -> pl.LazyFrame | None:
    """Last week's map as a LazyFrame (t, id, prev_id), or None when there is none.

    A map written before identifiers holding a phone were stored hashed (2026-12-07) holds
    them raw: they are read in their stored form, so their people keep their one_ids."""
    if previous is None:
        return None
    lf = previous.lazy()
    missing = [c for c in ("one_id", "id_type", "id") if c not in _names(lf)]
    if missing:
        raise DataError(f"identity: previous one_id_map has no column {', '.join(missing)}")
    id_type = pl.col("id_type").cast(pl.String)
    return lf.select(
        id_type.cast(NODE_TYPE, strict=False).alias("t"),
        hide_phone_id(id_type, pl.col("id").cast(pl.String)).alias("id"),
        pl.col("one_id").cast(pl.String).alias("prev_id"),
    ).drop_nulls()


def _previous_ids(
    prev: pl.LazyFrame, valid: pl.DataFrame, valid_h: pl.Series, seed: int
) -> pl.Series:
    """Per node (in `valid`'s order), the one_id it carried in last week's map, or null.

    Matched on the collision-free node hash; a second, independent hash must agree too, so
    that an old identifier that is no node now cannot borrow a node's hash (no strings are
    compared, which keeps the join small)."""
    check_seed = seed ^ 0x5EED
    nodes = pl.DataFrame(
        [
            valid_h.alias("h"),
            valid.select(_node_hash(check_seed, raw=None).alias("h2")).to_series(),
        ]
    )
    old = (
        prev.select(
            _node_hash(seed, raw=None).alias("h"),
            _node_hash(check_seed, raw=None).alias("h2_prev"),
            "prev_id",
        )
        .join(nodes.lazy(), on="h", how="inner")
        .filter(pl.col("h2") == pl.col("h2_prev"))
        .group_by("h")  # one row per identifier in a well-formed map
        .agg(pl.col("prev_id").min())
        .collect()
    )
    return (
        nodes.select("h")
        .join(old, on="h", how="left", maintain_order="left")
        .get_column("prev_id")
        .cast(pl.String)
    )


def _links_to(prev_ids: pl.Series, comp: np.ndarray) -> pl.DataFrame:
    """(comp, prev_id, n): how many of each component's nodes carried each old one_id."""
    # grouped on the id's hash (integers group fast), its text taken from each group
    return (
        pl.DataFrame([pl.Series("comp", comp), prev_ids.alias("prev_id")])
        .drop_nulls("prev_id")
        .group_by("comp", pl.col("prev_id").hash(seed=7).alias("h"))
        .agg(pl.col("prev_id").first(), pl.len().alias("n"))
        .drop("h")
    )


def _assign_ids(
    comps: pl.DataFrame,
    content: _ContentIds,
    links: pl.DataFrame | None,
    old_ids: pl.Series | None,
    week_label: str,
    salt: str,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Final one_id per component (comp, one_id) and the change events.

    `comps` has comp, size, first (the node holding the smallest id_type:id); `links` (comp,
    prev_id, n) ties components to last week's one_ids (see `_links_to`); `old_ids` holds
    the one_ids last week's map used (each at least once; nulls allowed)."""
    if links is None or old_ids is None:
        ids = comps.select("comp").with_columns(content(comps["first"]))
        return ids, _new_events(ids, week_label)

    links = links.with_columns(pl.len().over("prev_id").alias("parts"))
    # Where an old id that is now split lives on: the part holding most of its nodes, then
    # the larger component, then the smaller content id. (Only split ids are sorted.)
    contested = links.filter(pl.col("parts") > 1).join(comps, on="comp")
    contested = (
        contested.with_columns(content(contested["first"]).alias("content_id"))
        .sort(["prev_id", "n", "size", "content_id"], descending=[False, True, True, False])
        .group_by("prev_id", maintain_order=True)
        .first()
        .select("prev_id", pl.col("comp").alias("owner"))
    )
    links = links.join(contested, on="prev_id", how="left").with_columns(
        (pl.col("owner").is_null() | (pl.col("comp") == pl.col("owner"))).alias("owns")
    )
    # A component owning several old ids (a merge) keeps the one with most nodes here, then
    # the smallest id.
    owned = links.filter("owns").with_columns(pl.len().over("comp").alias("held"))
    survivor = pl.concat(
        [
            owned.filter(pl.col("held") == 1).select("comp", "prev_id"),
            owned.filter(pl.col("held") > 1)
            .sort(["comp", "n", "prev_id"], descending=[False, True, False])
            .group_by("comp", maintain_order=True)
            .first()
            .select("comp", "prev_id"),
        ]
    ).rename({"prev_id": "survivor"})

    # Components without an old id to keep get their content id, which must not take an id
    # that last week's map used.
    fresh = comps.join(survivor, on="comp", how="anti").select("comp", "first")
    fresh = fresh.with_columns(content(fresh["first"]))
    for attempt in range(1, 6):
        # the old ids probed against the few fresh ones (not a set built of every old id)
        taken = old_ids.filter(old_ids.is_in(fresh["one_id"].implode()))
        clashing = fresh.filter(pl.col("one_id").is_in(taken.implode()))
        if clashing.height == 0:
            break
        salted = clashing.select(
            "comp", content(clashing["first"], f"#{salt}#{attempt}").alias("salted")
        )
        fresh = (
            fresh.join(salted, on="comp", how="left")
            .with_columns(pl.coalesce("salted", "one_id").alias("one_id"))
            .drop("salted")
        )
    ids = pl.concat(
        [survivor.select("comp", pl.col("survivor").alias("one_id")), fresh.drop("first")]
    )

    with_ids = links.join(ids, on="comp")
    merged = with_ids.filter(pl.col("owns") & (pl.col("prev_id") != pl.col("one_id"))).select(
        "one_id", pl.lit("merged").alias("event"), pl.col("prev_id").alias("from_one_id")
    )
    split = with_ids.filter(~pl.col("owns")).select(
        "one_id", pl.lit("split").alias("event"), pl.col("prev_id").alias("from_one_id")
    )
    new = _new_events(fresh.join(links, on="comp", how="anti"), week_label)
    changes = pl.concat(
        [
            new,
            pl.concat([merged, split]).select(
                pl.lit(week_label).alias("week"),
                "one_id",
                "event",
                "from_one_id",
                pl.col("one_id").alias("to_one_id"),
            ),
        ]
    )
    return ids, changes


def _min_nodes(valid: pl.DataFrame, codes: np.ndarray, comp: np.ndarray, ncomp: int) -> np.ndarray:
    """Per component, the node with its smallest key `id_type:id` (smallest type first: the
    Enum codes follow the types' lexical order; then the smallest id among that type's)."""
    tmin = np.zeros(ncomp, dtype=np.int64)
    for code in np.unique(codes)[::-1].tolist():  # largest first: the smallest is written last
        tmin[comp[codes == code]] = code
    cand = np.flatnonzero(codes == tmin[comp])
    count = np.bincount(comp[cand], minlength=ncomp)
    best = np.zeros(ncomp, dtype=np.int64)
    single = cand[count[comp[cand]] == 1]
    best[comp[single]] = single
    multi = cand[count[comp[cand]] > 1]
    if len(multi):
        tie = (
            pl.DataFrame({"comp": comp[multi], "nid": multi, "id": valid["id"].gather(multi)})
            .group_by("comp")
            .agg(pl.col("nid").sort_by("id").first())
        )
        best[tie["comp"].to_numpy()] = tie["nid"].to_numpy()
    return best
