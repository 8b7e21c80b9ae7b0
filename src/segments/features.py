"""Runs the per-user stages for one week, bucket by bucket, and assembles the tag table.

Per-user stages are pure LazyFrame functions; here they run over one bucket of people
(`xxhash64(one_id) % buckets`) at a time. A few steps need the whole population and run once:
RFM cut points and BG/NBD parameters are *fitted* globally (then applied per bucket), and the
KOC PageRank and the interest graph span everyone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import polars as pl
import polars_hash  # noqa: F401  (registers .nchash)

from segments.behaviour import behaviour_features, identity_features, opted_out
from segments.community import community_edges, community_features, pagerank_scores
from segments.config import SegmentsConfig
from segments.contract import TABLES
from segments.errors import SegmentsError
from segments.identity import IdentityResult, attach_one_id
from segments.interests import (
    interest_affinity,
    interest_expansion,
    interest_graph,
    interest_signals,
)
from segments.predict import fit_predicted_value, predicted_value, summary_data
from segments.progress import Progress
from segments.promo import load_promo_calendar, promo_features
from segments.rfm import aipl_stage, fit_rfm_cut_points, lifecycle, rfm_features, rfm_scores
from segments.tags import REGISTRY, finalize
from segments.taxonomy import Taxonomy, load_taxonomy
from segments.weeks import Week


@dataclass
class BuiltTags:
    tags: pl.DataFrame
    extra_tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    state: dict[str, dict] = field(default_factory=dict)


def bucket_of(one_id: str | pl.Expr, buckets: int) -> pl.Expr:
    """The bucket of a one_id: a stable 64-bit hash modulo `buckets` (same on every engine)."""
    expr = pl.col(one_id) if isinstance(one_id, str) else one_id
    return (expr.nchash.xxhash64() % buckets).cast(pl.Int32)


def round_money(df: pl.DataFrame) -> pl.DataFrame:
    """Money to the cent before anything is learned from it: parallel float sums can differ
    in their last bits from run to run, and a cut point must not depend on that."""
    money = [t.name for t in REGISTRY if t.unit == "CNY" and t.name in df.columns]
    return df.with_columns(pl.col(money).round(2))


def _empty(table: str) -> pl.LazyFrame:
    schema = dict(TABLES[table].schema)
    schema["one_id"] = pl.String()
    if table == "orders":
        schema["phone_is_virtual"] = pl.Boolean()
    return pl.LazyFrame(schema=schema)


def _with_people(
    tables: dict[str, pl.DataFrame], ident: IdentityResult, cfg: SegmentsConfig
) -> dict[str, pl.DataFrame]:
    """Attach one_id to every per-user table (rows whose identifier was rejected are dropped
    from per-user stages; they are counted in identity/rejected_ids)."""
    id_map = ident.one_id_map.select("one_id", "id_type", "id").lazy()
    out: dict[str, pl.DataFrame] = {}
    for name, (type_col, id_col) in (
        ("orders", ("buyer_id_type", "buyer_id")),
        ("events", ("user_id_type", "user_id")),
        ("messages", ("sender_id_type", "sender_id")),
    ):
        if name not in tables:
            out[name] = _empty(name).collect()
            continue
        lf = attach_one_id(tables[name].lazy(), id_map, type_col, id_col)
        out[name] = lf.filter(pl.col("one_id").is_not_null()).collect()
    msgs = out["messages"]
    mention_type = cfg.identity.mention_id_type
    if msgs.height and mention_type and msgs.get_column("mentions").drop_nulls().len():
        exploded = (
            msgs.lazy()
            .select("msg_id", pl.col("mentions").alias("id"))
            .explode("id")
            .filter(pl.col("id").is_not_null())
            .with_columns(pl.lit(mention_type).alias("id_type"))
        )
        resolved = (
            attach_one_id(exploded, id_map, "id_type", "id")
            .filter(pl.col("one_id").is_not_null())
            .group_by("msg_id")
            .agg(pl.col("one_id").unique().sort().alias("mention_one_ids"))
            .collect()
        )
        out["messages"] = msgs.join(resolved, on="msg_id", how="left", maintain_order="left")
    return out


def build_tags(
    cfg: SegmentsConfig,
    tables: dict[str, pl.DataFrame],
    ident: IdentityResult,
    week: Week,
    progress: Progress,
    taxonomy: Taxonomy | None = None,
) -> BuiltTags:
    """Every tag of `week` for every person in the identity map."""
    taxonomy = taxonomy or load_taxonomy(cfg.resolve(cfg.paths.taxonomy))
    calendar = load_promo_calendar(cfg.resolve(cfg.paths.promo_calendar))
    people_tables = _with_people(tables, ident, cfg)
    orders, events, messages = (people_tables[k].lazy() for k in ("orders", "events", "messages"))
    id_map = ident.one_id_map.select("one_id", "id_type", "id")
    people = id_map.select("one_id").unique().sort("one_id")
    state: dict[str, dict] = {}

    # -- global fits: learned on the whole week, applied per bucket
    with progress.stage("rfm fit") as rec:
        rfm = round_money(rfm_features(orders, week, cfg.rfm).collect())
        cuts = fit_rfm_cut_points(rfm, cfg.rfm)
        state["rfm_cut_points"] = json.loads(cuts.to_json())
        rec.rows = rfm.height
    with progress.stage("predicted value fit") as rec:
        # Sorted, so the optimiser sees the same numbers in the same order every run.
        summary = summary_data(orders, week, unit_days=cfg.predict.unit_days).sort("one_id").collect()
        try:
            bg, gg = fit_predicted_value(summary, cfg.predict)
            state["bgnbd"] = json.loads(bg.to_json())
            state["gamma_gamma"] = json.loads(gg.to_json())
        except SegmentsError as e:  # too few customers to fit: the tags stay null
            bg = gg = None
            progress.note(f"predicted value skipped: {e}")
        rec.rows = summary.height
    with progress.stage("community graph") as rec:
        edges = community_edges(messages, week, cfg.community).collect()
        koc = pagerank_scores(edges)
        rec.rows = edges.height

    # -- per-user stages, one bucket at a time
    parts: list[pl.DataFrame] = []
    buckets = cfg.run.buckets
    with progress.stage(f"per-user stages ({buckets} bucket{'s' if buckets != 1 else ''})") as rec:
        for b in range(buckets):

            def in_bucket(lf: pl.LazyFrame, b: int = b) -> pl.LazyFrame:
                return lf if buckets == 1 else lf.filter(bucket_of("one_id", buckets) == b)

            parts.append(
                _bucket_tags(
                    cfg,
                    week,
                    taxonomy,
                    calendar,
                    cuts,
                    bg,
                    gg,
                    in_bucket(people.lazy()),
                    in_bucket(orders),
                    in_bucket(events),
                    in_bucket(messages),
                    in_bucket(id_map.lazy()),
                    in_bucket(rfm.lazy()),
                    in_bucket(koc.lazy()),
                ).collect()
            )
        wide = pl.concat(parts, how="vertical_relaxed").sort("one_id")
        rec.rows = wide.height

    # -- global steps over everyone's interests
    with progress.stage("interest graph") as rec:
        graph = interest_graph(wide.lazy(), taxonomy, cfg.interests).collect()
        expanded = interest_expansion(wide.lazy(), graph.lazy(), taxonomy, cfg.interests).collect()
        extra_cols = [c for c in expanded.columns if c.endswith("_expanded")]
        wide = wide.join(
            expanded.select("one_id", *extra_cols), on="one_id", how="left", maintain_order="left"
        )
        rec.rows = graph.height

    # -- consent: a global lookup
    consent = tables.get("consent")
    if consent is not None and consent.height:
        out_ids = opted_out(consent.lazy(), id_map.lazy()).collect()
        wide = wide.join(out_ids, on="one_id", how="left", maintain_order="left")
    else:
        wide = wide.with_columns(pl.lit(None, pl.Boolean).alias("is_opted_out"))
    wide = wide.with_columns(pl.col("is_opted_out").fill_null(False))
    wide = wide.with_columns(
        pl.lit(None, pl.Int64).alias("cluster"), pl.lit(None, pl.String).alias("cluster_name")
    )
    return BuiltTags(tags=finalize(wide), extra_tables={"interest_graph": graph}, state=state)


def _bucket_tags(
    cfg: SegmentsConfig,
    week: Week,
    taxonomy: Taxonomy,
    calendar,
    cuts,
    bg,
    gg,
    people: pl.LazyFrame,
    orders: pl.LazyFrame,
    events: pl.LazyFrame,
    messages: pl.LazyFrame,
    id_map: pl.LazyFrame,
    rfm: pl.LazyFrame,
    koc: pl.LazyFrame,
) -> pl.LazyFrame:
    """All per-user stages over one bucket's people: a lazy plan, one row per one_id."""
    scored = rfm_scores(rfm, cuts)
    frames: list[pl.LazyFrame] = [
        scored,
        lifecycle(scored, week, cfg.rfm, people).select("one_id", "lifecycle_stage"),
        aipl_stage(events, scored, week, cfg.rfm),
        behaviour_features(events, week),
        identity_features(id_map, orders),
    ]
    if bg is not None and gg is not None:
        frames.append(
            predicted_value(orders, week, bg, gg).select(
                "one_id",
                "p_alive",
                "expected_purchases_13w",
                "expected_purchases_52w",
                "expected_order_value",
                "predicted_value_52w",
            )
        )
    signals = interest_signals(orders, events, messages, week, taxonomy, cfg.interests)
    frames.append(interest_affinity(signals, week, taxonomy, cfg.interests))
    community = community_features(messages, week, cfg.community, koc)
    frames.append(community)
    frames.append(promo_features(orders, events, community, id_map, week, cfg.promo, calendar))

    out = people
    seen = {"one_id"}
    for frame in frames:
        cols = [c for c in frame.collect_schema().names() if c not in seen]
        seen.update(cols)
        out = out.join(
            frame.select("one_id", *cols), on="one_id", how="left", maintain_order="left"
        )
    return out
