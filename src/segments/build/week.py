"""The weekly tag build: every tag of every person as of a week (or a day), from the person state.

The flow for an as-of W:

1. *Stage*: the person state's orders, the last weeks of events and the messages get their
   `one_id` and bucket and are written to the staging folder (`segments.build.staging`), one
   part at a time, with each person's long-run event aggregates (`segments.state.event_long`).
2. *Global steps* that need everyone: the community graph (replies and mentions cross
   buckets; KOC PageRank), the phone-sharing counts, and, after pass 1, the RFM cut points and
   the BG/NBD and Gamma-Gamma fits.
3. *Pass 1* per bucket: RFM features and the BG/NBD summary (to learn from).
4. *Pass 2* per bucket: every per-user stage (RFM scores, lifecycle, AIPL, behaviour,
   identity, predicted value, interests, promotion) joined into one row per person.
5. *Global* again: the interest graph and its expansion, consent, the registry's order, and
   the clusters.

Passes 1 and 2 are pure functions of (context, bucket) and run through an `Executor`: in this
process by default, or on Spark (`segments.engine.spark`) with the same code. A live table
(`segments refresh`) runs the same build with what the last weekly build learned (`Learned`):
cut points, fitted models, the interest graph and the cluster model are not refitted (people go
to the nearest of the week's centroids, read from its clustering state).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from segments.build import aging
from segments.build.passes import (
    SUMMARY_COLS,
    BucketContext,
    pass1_bucket,
    pass2_bucket,
)
from segments.build.staging import Staging, distinct_with_one_id, stage_tables
from segments.clustering import ClusterModelState, assign_clusters, run_clustering
from segments.config import SegmentsConfig
from segments.engine import Executor, LocalExecutor
from segments.errors import SegmentsError
from segments.exprs import changed_rows, take_sorted
from segments.progress import Progress
from segments.stages.behaviour import opted_out
from segments.stages.community import community_edges, community_features, pagerank_scores
from segments.stages.interests import interest_expansion, interest_graph, learn_category_map
from segments.stages.predict import BgNbdParams, GammaGammaParams, fit_predicted_value
from segments.stages.promo import (
    apply_hunter_threshold,
    count_phone_accounts,
    hunter_scores,
    learn_caps,
    learn_priors,
    load_promo_calendar,
    order_value_cut,
    phone_account_counts,
    phone_orders,
    week_hunter_threshold,
)
from segments.stages.scores import RfmCutPoints, fit_rfm_cut_points
from segments.state import State, event_long
from segments.tags import finalize
from segments.taxonomy import Taxonomy, load_taxonomy
from segments.weeks import AsOf

if TYPE_CHECKING:  # fitted by a weekly build only; a live build imports no scikit-learn
    from segments.clustering import UserClusterer


@dataclass
class BuiltTags:
    tags: pl.DataFrame
    extra_tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    state: dict[str, dict] = field(default_factory=dict)
    model: UserClusterer | None = None  # the week's fitted clusterer, saved with skops
    # What a live build keeps for the next one (`Touched`): the community features and the
    # phone-sharing counts of everyone, and the one_ids of everyone who opted out.
    global_tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    opted_out: pl.DataFrame | None = None
    # A build of some people only: their one_ids (`tags` holds just them)
    recomputed: pl.DataFrame | None = None
    # A live build's inputs of the as-of frames, per person it computed (`aging.SIDE_TABLES`):
    # the next day's refresh ages the people it does not recompute from them.
    side: dict[str, pl.DataFrame] = field(default_factory=dict)
    # The counts and sums of `Touched.aged_with_state`'s people it did not recompute.
    renewed: aging.Renewed | None = None


@dataclass(frozen=True)
class Touched:
    """A live build at the same as-of as the live table before it, which recomputes only the
    people whose tags can have changed: `one_ids` (people whose rows came or went, or whose
    identifiers changed), plus those whose community features or shared-phone counts differ
    from `community` and `phone_counts`, the previous build's. Every other person's inputs
    are the previous build's, so their tags are too."""

    one_ids: pl.DataFrame  # one_id
    community: pl.DataFrame
    phone_counts: pl.DataFrame
    # Which of the two the build cannot change and takes as they are ("community",
    # "phone_counts": `live.same_globals`), sparing everyone's messages and window orders.
    unchanged: frozenset[str] = frozenset()
    # On a new day: people (one_id) to age with the person state's moved counts and sums
    # (`aging.Renewed`); the build gathers those with its own people's, in one pass.
    aged_with_state: pl.DataFrame | None = None


@dataclass(frozen=True)
class BuildInputs:
    """What a build reads: the person state's rows (orders and messages; each a list of
    parts, keyed by identifier), its aggregates per identifier (`segments.state.event_long`:
    the events' last times and window counts, the interest signal sums of every table), the
    consent rows, and how many rows the build covers (it picks the bucket count: the orders,
    the messages and the events of the counted windows, whose rows the build no longer
    reads but whose people it does)."""

    tables: dict[str, list[pl.LazyFrame]]
    event_last: pl.LazyFrame
    signal_sums: pl.LazyFrame
    event_counts: pl.LazyFrame
    consent: list[pl.LazyFrame]
    rows: int


@dataclass(frozen=True)
class Learned:
    """What a weekly build learned on everyone, reused as it is by a live table: the cut
    points, the BG/NBD and Gamma-Gamma parameters, the interest graph, the clustering state
    (feature space, centroids, numbers and names) and the coupon-hunter threshold and scales."""

    cuts: RfmCutPoints | None
    bgnbd: BgNbdParams | None
    gamma_gamma: GammaGammaParams | None
    interest_graph: pl.DataFrame
    clusters: ClusterModelState | None
    hunter_threshold: float | None = None
    # The coupon-hunter scales read from the brand's distribution (`[promo] relative`).
    hunter_caps: dict[str, float] | None = None
    low_value_cny: float | None = None
    hunter_priors: dict[str, float] | None = None
    # unplaced category -> the interest it counts for (`interests.learn_category_map`)
    category_map: dict[str, str] | None = None


def inputs_from_state(
    state: State, week: AsOf, cfg: SegmentsConfig, consent: list[pl.LazyFrame]
) -> BuildInputs:
    """What a build of `week` reads from the person state (folded up to `week`): every order
    and message before the end and the aggregates of the events (no event row)."""
    end = week.end
    since = end - event_long.counts_reach(cfg)
    last, sums, counts = state.event_long()
    tables = {
        "orders": state.parts("orders", None, end),
        "messages": state.parts("messages", None, end),
    }
    rows = (
        state.rows("orders", None, end)
        + state.rows("events", since, end)
        + state.rows("messages", None, end)
    )
    return BuildInputs(tables, last, sums, counts, consent, rows)


def _opted_out_people(
    consent: list[pl.LazyFrame],
    id_map: pl.DataFrame,
    phone_hashes: pl.DataFrame | pl.LazyFrame | None,
) -> pl.DataFrame:
    """one_id, is_opted_out (True) of everyone who opted out on any identifier by the week's
    end; no rows when there is no consent table."""
    rows = pl.concat(consent).collect() if consent else None
    if rows is None or not rows.height:
        return pl.DataFrame(schema={"one_id": pl.String, "is_opted_out": pl.Boolean})
    return opted_out(
        rows.lazy(),
        id_map.lazy(),
        phone_hashes.lazy() if phone_hashes is not None else None,
    ).collect()


def build_tags(
    cfg: SegmentsConfig,
    inputs: BuildInputs,
    id_map: Path,
    week: AsOf,
    progress: Progress,
    staging: Path,
    executor: Executor | None = None,
    taxonomy: Taxonomy | None = None,
    previous_clusters: ClusterModelState | None = None,
    phone_hashes: pl.DataFrame | pl.LazyFrame | None = None,
    learned: Learned | None = None,
    touched: Touched | None = None,
) -> BuiltTags:
    """Every tag of `week` for every person in the identity map (see `_build`); with `touched`
    (a live build, `learned` given), of the touched people only."""
    if touched is not None and learned is None:
        raise ValueError("build_tags: a build of touched people applies what a week learned")
    staged = Staging(None if _in_memory(cfg, executor, inputs, touched) else staging, 1)
    try:
        return _build(
            cfg, inputs, id_map, week, progress, staged, executor, taxonomy,
            previous_clusters, phone_hashes, learned, touched,
        )  # fmt: skip
    finally:
        staged.clear()


def _in_memory(
    cfg: SegmentsConfig,
    executor: Executor | None,
    inputs: BuildInputs,
    touched: Touched | None = None,
) -> bool:
    """Whether the build's rows wait in memory: only for the in-process engine, and only as
    many as `[run] staging` allows; a live build of the people it touches stages few rows
    (theirs, and the messages), so it keeps them in memory whatever the brand's size."""
    if executor is not None and not executor.in_process:
        return False
    mode = cfg.run.staging
    small = inputs.rows <= cfg.run.memory_staging_rows or touched is not None
    return mode == "memory" or (mode == "auto" and small)


def _build(
    cfg: SegmentsConfig,
    inputs: BuildInputs,
    id_map: Path,
    week: AsOf,
    progress: Progress,
    staging: Staging,
    executor: Executor | None,
    taxonomy: Taxonomy | None,
    previous_clusters: ClusterModelState | None,
    phone_hashes: pl.DataFrame | pl.LazyFrame | None,
    learned: Learned | None,
    touched: Touched | None = None,
) -> BuiltTags:
    """Every tag of `week` for every person in the identity map.

    `inputs` are the person state's rows and aggregates as of `week` (`BuildInputs`), staged
    one part at a time. `id_map` is the identity map's Parquet file (one_id, id_type, id, ...):
    it is read once, for staging and the opted-out people, and let go before the per-user
    stages, so it is never in memory beside the tag table. `previous_clusters` is the
    clustering state of the last week built before this one (stable cluster numbers). With
    `learned` (a live table), nothing is fitted: the week's cut points, models, interest graph
    and clusterer are applied as they are."""
    executor = executor or LocalExecutor()
    taxonomy = taxonomy or load_taxonomy(cfg.resolve(cfg.paths.taxonomy))
    calendar = load_promo_calendar(cfg.resolve(cfg.paths.promo_calendar))
    buckets = staging.buckets = cfg.run.bucket_count(inputs.rows)
    state: dict[str, dict] = {}
    if staging.folder is not None and Path(staging.folder).exists():
        shutil.rmtree(staging.folder)

    with progress.stage(f"stage {buckets} bucket{'s' if buckets != 1 else ''}") as rec:
        full_map = pl.read_parquet(id_map, columns=["one_id", "id_type", "id"], glob=False)
        # A build of touched people stages everyone's messages (the community graph needs
        # them), and the orders and event aggregates of the people it recomputes only, once
        # they are known: the phone counts read a few columns of everyone's orders unstaged.
        same = touched.unchanged if touched is not None else frozenset()
        if touched is None:
            tables: tuple[str, ...] = ("orders", "messages")
        else:
            tables = () if "community" in same else ("messages",)
        rec.rows = stage_tables(inputs.tables, full_map, cfg, staging, tables, touched is None)
        out_ids = _opted_out_people(inputs.consent, full_map, phone_hashes)
        aggregates = None
        if touched is None:  # the map leaves memory before the global steps
            aggregates, _ = _stage_event_long(inputs, full_map, staging, cfg)
            if learned is None:  # (a live build keeps them for the next day's aging)
                aggregates = None
            del full_map

    with progress.stage("community graph") as rec:
        rec.rows = 0
        if touched is not None and "community" in same:
            community = touched.community
        else:
            messages = staging.scan_all("messages")
            edges = community_edges(messages, week, cfg.community).collect()
            koc = pagerank_scores(edges)
            community = community_features(messages, week, cfg.community, koc.lazy()).collect()
            rec.rows = edges.height
            del edges
        staging.put({"community": community})
        phones = None
        if touched is None:
            counts = phone_account_counts(staging.scan_all("orders"), week, cfg.promo).collect()
        elif "phone_counts" in same:
            counts = touched.phone_counts
        else:
            phones = window_phones(inputs.tables.get("orders") or [], full_map, week, cfg)
            counts = count_phone_accounts(phones.lazy()).collect()
        staging.put_global("phone_counts", counts)
        if learned is not None:
            low_value = learned.low_value_cny
        elif cfg.promo.relative:
            low_value = order_value_cut(staging.scan_all("orders"), week, cfg.promo)
        else:
            low_value = None
        if learned is not None:
            category_map = learned.category_map or {}
        else:
            category_map = learn_category_map(
                staging.scan_all("signal_sums"), taxonomy, cfg.interests
            )
            state["interests"] = {"category_map": category_map}

    recomputed = renewed = None
    if touched is not None:
        with progress.stage("touched people") as rec:
            recomputed = _touched_people(touched, community, counts, phones, full_map)
            people_map = full_map.join(recomputed, on="one_id", how="semi")
            stage_tables(inputs.tables, people_map, cfg, staging, ("orders",))
            with_state = touched.aged_with_state
            if with_state is not None:  # gathered in the same pass over the aggregates
                with_state = with_state.join(recomputed, on="one_id", how="anti")
                people_map = full_map.join(
                    pl.concat([recomputed, with_state.select("one_id")]), on="one_id", how="semi"
                )
            del full_map, phones
            aggregates, renewed = _stage_event_long(inputs, people_map, staging, cfg, with_state)
            del people_map
            rec.rows = recomputed.height

    ctx = BucketContext(
        cfg, week, staging, buckets, taxonomy, calendar, restrict=touched is not None
    )
    with progress.stage("pass 1: rfm features") as rec:
        rfm = pl.concat(
            executor.map_buckets(pass1_bucket, ctx, range(buckets)), how="vertical_relaxed"
        ).sort("one_id")
        staging.put({"rfm": rfm})
        rec.rows = rfm.height

    side: dict[str, pl.DataFrame] = {}
    if learned is not None:
        cuts, bg, gg = learned.cuts, learned.bgnbd, learned.gamma_gamma
        assert aggregates is not None
        side = aging.side_tables(rfm, *aggregates)
        del rfm, aggregates
    else:
        with progress.stage("fit rfm scores and predicted value") as rec:
            cuts, bg, gg = _fit(rfm, cfg, state, progress)
            rec.rows = rfm.height
            del rfm  # staged: pass 2 reads each bucket's share from disk

    ctx = BucketContext(
        cfg,
        week,
        staging,
        buckets,
        taxonomy,
        calendar,
        cuts,
        bg,
        gg,
        touched is not None,
        low_value_cny=low_value,
        category_map=category_map,
    )
    with progress.stage(f"pass 2: per-user stages ({executor.name})") as rec:
        parts = executor.map_buckets(pass2_bucket, ctx, range(buckets))
        wide = pl.concat(parts, how="diagonal_relaxed", rechunk=False)
        del parts
        wide = take_sorted(wide, "one_id")
        rec.rows = wide.height
    # Pass 2 was the last to read the staged rows: let them go before the tail holds the wide
    # table (in-memory staging at 2M people: the weekly build's peak 10.2 -> 8.6 GiB)
    staging.clear()

    if "coupon_hunter_score" in wide.columns:
        # Scales from the brand's own distribution: each signal's cap is a quantile of its
        # feature over everyone (`promo.learn_caps`); the scores are recomputed with them.
        if learned is not None:
            caps, priors = learned.hunter_caps, learned.hunter_priors
        elif cfg.promo.relative:
            caps, priors = learn_caps(wide, cfg.promo), learn_priors(wide, cfg.promo)
        else:
            caps, priors = None, None
        if caps is not None:
            reasons_from = cfg.promo.auto_range[0] if cfg.promo.auto_threshold else None
            wide = (
                hunter_scores(wide.lazy(), cfg.promo, caps, reasons_from, priors)
                .select(wide.columns)
                .collect()
            )
        if learned is not None and learned.hunter_threshold is not None:
            threshold = learned.hunter_threshold
        elif learned is not None:
            threshold = cfg.promo.threshold
        else:
            threshold = week_hunter_threshold(wide.get_column("coupon_hunter_score"), cfg.promo)
        wide = apply_hunter_threshold(wide, threshold)
        state["promo"] = {
            "hunter_threshold": threshold,
            "caps": caps,
            "priors": priors,
            "low_value_cny": low_value,
        }

    with progress.stage("interest graph") as rec:
        if learned is not None:
            graph = learned.interest_graph
        else:
            graph = interest_graph(wide.lazy(), taxonomy, cfg.interests).collect()
        expanded = interest_expansion(wide.lazy(), graph.lazy(), taxonomy, cfg.interests).collect()
        extra_cols = [c for c in expanded.columns if c.endswith("_expanded")]
        wide = _beside(wide, expanded.select("one_id", *extra_cols))
        del expanded
        rec.rows = graph.height

    wide = _beside(wide, out_ids)
    wide = wide.with_columns(
        pl.col("is_opted_out").fill_null(False),
        pl.lit(None, pl.Int64).alias("cluster"),
        pl.lit(None, pl.String).alias("cluster_name"),
    )
    tags = finalize(wide, taxonomy)
    del wide
    extra = {"interest_graph": graph}
    model = None
    with progress.stage("clusters") as rec:
        assigned = None
        if learned is not None and learned.clusters is not None:
            if tags.height:  # (a live build that touched nobody has nobody to assign)
                assigned = assign_clusters(tags, learned.clusters)
        elif learned is None and tags.height >= 2 * max(
            cfg.clustering.k or cfg.clustering.k_range[1], 2
        ):
            run = run_clustering(tags, cfg.clustering, previous_clusters, week=week.label)
            assigned = run.assignments
            extra["clusters"] = run.profiles
            state["clustering"] = json.loads(run.state.to_json())
            model = run.model
            rec.rows = run.profiles.height
        else:
            progress.note(f"clustering skipped: {tags.height} people are too few")
        if assigned is not None:
            tags = _beside(tags, assigned)  # cluster, cluster_name
            del assigned
            tags = finalize(tags, taxonomy)
    return BuiltTags(
        tags=tags,
        extra_tables=extra,
        state=state,
        model=model,
        global_tables={"community": community, "phone_counts": counts},
        opted_out=out_ids,
        recomputed=recomputed,
        side=side,
        renewed=renewed,
    )


def _beside(wide: pl.DataFrame, extra: pl.DataFrame) -> pl.DataFrame:
    """`wide` left-joined with `extra` (one_id and other columns, one row per one_id at most):
    `extra`'s columns are aligned to `wide`'s one_ids and set beside its columns, which are
    shared, not copied (a join copies the whole table: 2.4 GB at 2M people)."""
    cols = [c for c in extra.columns if c != "one_id"]
    aligned = wide.select("one_id").join(extra, on="one_id", how="left", maintain_order="left")
    return wide.with_columns(aligned.get_column(c) for c in cols)


def _stage_event_long(
    inputs: BuildInputs,
    id_map: pl.DataFrame,
    staging: Staging,
    cfg: SegmentsConfig,
    aged: pl.DataFrame | None = None,
) -> tuple[tuple[pl.DataFrame, pl.DataFrame], aging.Renewed | None]:
    """The aggregates (last event times, interest signal sums, event window counts) of the
    people in `id_map`, staged per person; the last times and sums are returned. With `aged`
    (one_id: people of `id_map` a live build ages with the state), theirs are not staged but
    come second (`aging.Renewed`): one pass over the aggregates for both."""
    frames = event_long.per_person(
        inputs.event_last, inputs.signal_sums, inputs.event_counts, id_map.lazy(), cfg
    )
    last, sums, counts = pl.collect_all(list(frames))
    renewed = None
    if aged is not None:
        ids = aged.select("one_id").unique().sort("one_id")
        renewed = aging.renewed_of(ids, sums, counts, last)
        last, sums, counts = (f.join(ids, on="one_id", how="anti") for f in (last, sums, counts))
    staging.put({"event_last": last, "signal_sums": sums, "event_counts": counts})
    return (last, sums), renewed


def _changed(new: pl.DataFrame, old: pl.DataFrame, key: str) -> pl.DataFrame:
    """The `key` values whose rows differ between `new` and `old` (or are in one only)."""
    if new.schema != old.schema:
        return pl.concat([new.select(key), old.select(key)]).unique()
    return changed_rows(new, old).select(key).unique()


def window_phones(
    parts: list[pl.LazyFrame], id_map: pl.DataFrame, week: AsOf, cfg: SegmentsConfig
) -> pl.DataFrame:
    """one_id, phone_sha256, buyer_id_type, buyer_id: the distinct phones and buyers of the
    orders the phone counts read (`promo.phone_orders`), of everyone, without staging them."""
    cols = ("phone_sha256", "buyer_id_type", "buyer_id")
    return distinct_with_one_id(
        parts, id_map, "orders", lambda lf: phone_orders(lf, week, cfg.promo).select(cols)
    )


def _touched_people(
    touched: Touched,
    community: pl.DataFrame,
    counts: pl.DataFrame,
    phones: pl.DataFrame | None,
    id_map: pl.DataFrame,
) -> pl.DataFrame:
    """one_id of everyone a build of touched people recomputes: `touched.one_ids`, those whose
    community features changed, and those holding a phone whose shared count changed (a
    phone on one of their orders of the lookback window, `window_phones`, or in their
    identifiers: the phones `promo_features` reads). `phones` None: the counts are the
    previous build's (`Touched.unchanged`), so no count changed."""
    parts = [touched.one_ids.select("one_id"), _changed(community, touched.community, "one_id")]
    if phones is not None:
        changed = _changed(counts, touched.phone_counts, "phone_sha256")
        by_ids = id_map.filter(pl.col("id_type") == "phone_sha256").join(
            changed.rename({"phone_sha256": "id"}), on="id", how="semi"
        )
        parts += [
            phones.join(changed, on="phone_sha256", how="semi").select("one_id"),
            by_ids.select("one_id"),
        ]
    return pl.concat(parts).unique().sort("one_id")


def _fit(
    rfm: pl.DataFrame, cfg: SegmentsConfig, state: dict[str, dict], progress: Progress
) -> tuple[RfmCutPoints | None, BgNbdParams | None, GammaGammaParams | None]:
    """The week's cut points and BG/NBD and Gamma-Gamma parameters (recorded in `state`)."""
    cuts = (
        fit_rfm_cut_points(rfm.drop(*SUMMARY_COLS, strict=False), cfg.rfm) if rfm.height else None
    )
    if cuts is not None:
        state["rfm_cut_points"] = json.loads(cuts.to_json())
    # Sorted, so the optimiser sees the same numbers in the same order every run.
    summary = rfm.select("one_id", *SUMMARY_COLS).drop_nulls("frequency")
    bg = gg = None
    try:
        bg, gg = fit_predicted_value(summary, cfg.predict)
        state["bgnbd"] = json.loads(bg.to_json())
        state["gamma_gamma"] = json.loads(gg.to_json())
    except SegmentsError as e:  # too few customers to fit: those tags stay null
        progress.note(f"predicted value skipped: {e}")
    return cuts, bg, gg
