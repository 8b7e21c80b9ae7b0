"""Accuracy of the engine's tags against a planted truth (the demo generator's `truth/` folder).

Truth: `persons.parquet` (person_id, persona, primary_interest, interests, is_coupon_hunter,
opted_out) and `identifiers.parquet` (person_id, id_type, id). Each person is matched to the
one_id holding most of their identifiers; person-level tags are compared on those pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
from sklearn.metrics import adjusted_rand_score

from segments.contract import hide_phone_id
from segments.errors import DataError
from segments.identity import bcubed
from segments.ingest import ingest
from segments.layout import Layout
from segments.stages.rfm import is_counted
from segments.weeks import Week


@dataclass(frozen=True)
class Metric:
    tag: str
    metric: str
    value: float
    target: float | None
    n: int

    @property
    def passed(self) -> bool | None:
        return None if self.target is None else self.value >= self.target


def _read(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise DataError(
            f"{path}: not found (the truth folder holds persons.parquet and identifiers.parquet)."
        )
    return pl.read_parquet(path, glob=False)


def stored_truth(truth_ids: pl.DataFrame) -> pl.DataFrame:
    """The truth's identifiers as the engine stores them (one holding a phone number is stored
    hashed: `contract.hide_phone_id`; one already in that form stays)."""
    return truth_ids.with_columns(
        hide_phone_id(pl.col("id_type").cast(pl.String), pl.col("id").cast(pl.String)).alias("id")
    )


def person_to_one_id(one_id_map: pl.DataFrame, truth_ids: pl.DataFrame) -> pl.DataFrame:
    """person_id -> the one_id holding most of the person's identifiers (ties: smallest one_id),
    kept only when that one_id's majority person is the same person (a one-to-one match)."""
    joined = stored_truth(truth_ids).join(
        one_id_map.select("one_id", "id_type", "id"), on=["id_type", "id"], how="inner"
    )
    counts = joined.group_by("person_id", "one_id").len()
    best_one = counts.sort(["person_id", "len", "one_id"], descending=[False, True, False]).unique(
        "person_id", keep="first"
    )
    best_person = counts.sort(
        ["one_id", "len", "person_id"], descending=[False, True, False]
    ).unique("one_id", keep="first")
    return (
        best_one.join(best_person.select("one_id", pl.col("person_id").alias("_p")), on="one_id")
        .filter(pl.col("person_id") == pl.col("_p"))
        .select("person_id", "one_id")
    )


def evidence_truth(input_dir: Path, truth_ids: pl.DataFrame) -> pl.DataFrame:
    """Truth clusters as the evidence allows: each person's identifiers split into the groups
    that the input's links (identities rows, order buyer <-> phone) connect within the person.

    Out: person_id (now `<person>#<group>`), id_type, id."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    tables = ingest(input_dir, tables=["orders", "identities"]).tables
    pairs = []
    if "identities" in tables:
        pairs.append(tables["identities"].select("id_type_a", "id_a", "id_type_b", "id_b"))
    if "orders" in tables:
        pairs.append(
            tables["orders"]
            .filter(pl.col("phone_sha256").is_not_null())
            .select(
                pl.col("buyer_id_type").alias("id_type_a"),
                pl.col("buyer_id").alias("id_a"),
                pl.lit("phone_sha256").alias("id_type_b"),
                pl.col("phone_sha256").alias("id_b"),
            )
        )
    nodes = truth_ids.unique(["id_type", "id"]).with_row_index("n")
    if not pairs:
        return truth_ids
    edges = pl.concat(pairs).unique()
    a = nodes.select(
        pl.col("n").alias("na"),
        pl.col("person_id").alias("pa"),
        pl.col("id_type").alias("id_type_a"),
        pl.col("id").alias("id_a"),
    )
    b = nodes.select(
        pl.col("n").alias("nb"),
        pl.col("person_id").alias("pb"),
        pl.col("id_type").alias("id_type_b"),
        pl.col("id").alias("id_b"),
    )
    linked = (
        edges.join(a, on=["id_type_a", "id_a"])
        .join(b, on=["id_type_b", "id_b"])
        .filter(pl.col("pa") == pl.col("pb"))
    )
    n = nodes.height
    graph = coo_matrix(
        (np.ones(linked.height), (linked["na"].to_numpy(), linked["nb"].to_numpy())), shape=(n, n)
    )
    _, labels = connected_components(graph, directed=False)
    return nodes.with_columns(
        (pl.col("person_id") + "#" + pl.Series(labels).cast(pl.String)).alias("person_id")
    ).select("person_id", "id_type", "id")


def reference_rfm(orders: pl.DataFrame, one_id_map: pl.DataFrame, week: Week) -> pl.DataFrame:
    """R, F, M written independently of `segments.stages.rfm`, straight from the contract's words."""
    o = orders.join(
        one_id_map.select(
            "one_id", pl.col("id_type").alias("buyer_id_type"), pl.col("id").alias("buyer_id")
        ),
        on=["buyer_id_type", "buyer_id"],
        how="inner",
    )
    status = pl.col("status").fill_null("paid")
    kept = pl.col("amount") - pl.col("refund").fill_null(0.0)
    o = o.filter((status == "paid") & (kept > 0) & (pl.col("paid_at") < week.end))
    start52 = week.end - (week.end - week.start) * 52
    return o.group_by("one_id").agg(
        (pl.lit(week.sunday) - pl.col("paid_at").max().dt.date())
        .dt.total_days()
        .alias("ref_recency_days"),
        (pl.col("paid_at") >= start52).sum().cast(pl.Int64).alias("ref_frequency_52w"),
        kept.filter(pl.col("paid_at") >= start52).sum().alias("ref_monetary_52w"),
    )


def evaluate(
    workspace: Path, truth_dir: Path, input_dir: Path | None = None, week: str | None = None
) -> list[Metric]:
    """Every metric the planted truth allows, for one week of a workspace."""
    workspace, truth_dir = Path(workspace), Path(truth_dir)
    layout = Layout(workspace)
    label = layout.resolve_week(week)
    w = Week.parse(label)
    tags = pl.read_parquet(layout.tags(label), glob=False)
    id_map = pl.read_parquet(layout.identity_history(label) / "one_id_map.parquet", glob=False)
    persons = _read(truth_dir / "persons.parquet")
    truth_ids = stored_truth(_read(truth_dir / "identifiers.parquet"))
    out: list[Metric] = []

    n_ids = truth_ids.height
    if input_dir is not None:
        # The target: the identifiers the input's evidence connects within each person (a
        # person whose WeChat and commerce sides no record links cannot be found by anyone).
        evidence = evidence_truth(Path(input_dir), truth_ids)
        precision, recall = bcubed(id_map, evidence)
        out.append(Metric("one_id", "B-cubed precision (evidence truth)", precision, 0.999, n_ids))
        out.append(Metric("one_id", "B-cubed recall (evidence truth)", recall, 0.995, n_ids))
    precision, recall = bcubed(id_map, truth_ids)
    out.append(Metric("one_id", "B-cubed precision (persons)", precision, None, n_ids))
    out.append(Metric("one_id", "B-cubed recall (persons)", recall, None, n_ids))
    stats_linked = tags["is_linked"].mean() if tags.height else 0.0
    out.append(
        Metric(
            "is_linked",
            "OneID linkage rate (share of people)",
            float(stats_linked or 0.0),
            None,
            tags.height,
        )
    )

    match = person_to_one_id(id_map, truth_ids)
    people = persons.join(match, on="person_id", how="inner").join(
        tags, on="one_id", how="inner", suffix="_tag"
    )

    if input_dir is not None:
        orders = ingest(Path(input_dir), tables=["orders"]).tables.get("orders")
        if orders is not None:
            ref = reference_rfm(orders, id_map, w)
            cmp = tags.select(
                "one_id", "recency_days", "frequency_52w", "monetary_52w", "is_high_value"
            ).join(ref, on="one_id", how="left")
            cmp = cmp.with_columns(
                pl.col("ref_frequency_52w").fill_null(0),
                pl.col("ref_monetary_52w").fill_null(0.0),
            )
            exact = (
                (pl.col("recency_days").eq_missing(pl.col("ref_recency_days")))
                & (pl.col("frequency_52w") == pl.col("ref_frequency_52w"))
                & ((pl.col("monetary_52w") - pl.col("ref_monetary_52w")).abs() < 0.005)
            )
            out.append(
                Metric(
                    "recency/frequency/monetary",
                    "exact vs independent reference",
                    float(cmp.select(exact.mean()).item()),
                    1.0,
                    cmp.height,
                )
            )
            rule = (pl.col("ref_frequency_52w") >= 3) & (
                pl.col("ref_monetary_52w") / pl.col("ref_frequency_52w").clip(1) >= 800
            )
            out.append(
                Metric(
                    "is_high_value",
                    "agrees with the contract rule",
                    float(cmp.select((pl.col("is_high_value") == rule).mean()).item()),
                    1.0,
                    cmp.height,
                )
            )

    out.extend(interest_metrics(people))
    out.extend(hunter_metrics(people))
    out.extend(cluster_metrics(people))
    out.append(
        Metric(
            "(matching)",
            "persons matched one-to-one to a one_id",
            people.height / max(persons.height, 1),
            None,
            persons.height,
        )
    )
    out.extend(demo_constants(truth_dir))
    return out


def demo_constants(truth_dir: Path) -> list[Metric]:
    """The brand constants the demo generator drew for this population (truth/constants.json,
    `segments.demo.constants`), one row per knob, so a figure can be read with the brand it
    was measured on; none for a truth folder without the file."""
    import json

    path = Path(truth_dir) / "constants.json"
    if not path.is_file():
        return []
    record = json.loads(path.read_text(encoding="utf-8"))
    moves = record.get("moves") or {}
    tag = f"(demo, vocabulary {record.get('vocabulary', 'a')})"
    out = []
    for knob, value in sorted(record.get("knobs", {}).items()):
        moved = f" (moved x{moves[knob]:g})" if knob in moves else ""
        out.append(Metric(tag, f"{knob} drawn{moved}", float(value), None, 0))
    shifts = record.get("promo_shift_days") or []
    if shifts:
        out.append(
            Metric(tag, "promotion shift, largest (days)", float(max(map(abs, shifts))), None, 0)
        )
    out.append(
        Metric(tag, "brand's own sale (1 = yes)", float(record.get("brand_sale", 0)), None, 0)
    )
    return out


# The standardised baseline's columns: log1p for money and counts, shares and scores as they are.
BASELINE_LOG = (
    "recency_days",
    "frequency_52w",
    "monetary_52w",
    "messages_13w",
    "events_13w",
    "aov_52w",
)
BASELINE_PLAIN = ("coupon_hunter_score", "promo_order_share_52w", "discount_share")


def interest_metrics(people: pl.DataFrame) -> list[Metric]:
    """primary_interest as a tag: its precision over everyone who gets one (a person with no
    planted interest who gets one is wrong), its coverage of the people with a planted interest
    and any interest signal, and the old top-1 accuracy on people with 5+ signals (no target)."""
    if "primary_interest_tag" not in people.columns:
        return []
    tag, truth = pl.col("primary_interest_tag"), pl.col("primary_interest")
    signals = pl.col("interest_signal_count").fill_null(0)
    assigned = people.filter(tag.is_not_null())
    out = []
    if assigned.height:
        precision = assigned.select((tag == truth).fill_null(False).mean()).item()
        out.append(
            Metric(
                "primary_interest",
                "precision (everyone assigned)",
                float(precision),
                0.95,
                assigned.height,
            )
        )
    eligible = people.filter(truth.is_not_null() & (signals >= 1))
    if eligible.height:
        coverage = eligible.select(tag.is_not_null().mean()).item()
        out.append(
            Metric(
                "primary_interest",
                "coverage (planted interest, any signal)",
                float(coverage),
                0.85,
                eligible.height,
            )
        )
    five = people.filter(truth.is_not_null() & (signals >= 5))
    if five.height:
        acc = five.select((tag == truth).fill_null(False).mean()).item()
        out.append(
            Metric(
                "primary_interest", "top-1 accuracy (>= 5 signals)", float(acc), None, five.height
            )
        )
    return out


def hunter_metrics(people: pl.DataFrame) -> list[Metric]:
    """is_coupon_hunter: precision over everyone flagged and coverage (recall) of the planted
    hunters."""
    if "is_coupon_hunter_tag" not in people.columns:
        return []
    flagged = pl.col("is_coupon_hunter_tag").fill_null(False)
    truth = pl.col("is_coupon_hunter")
    tp = people.filter(truth & flagged).height
    fp = people.filter(~truth & flagged).height
    fn = people.filter(truth & ~flagged).height
    return [
        Metric("is_coupon_hunter", "precision", tp / (tp + fp) if tp + fp else 0.0, 0.95, tp + fp),
        Metric(
            "is_coupon_hunter",
            "coverage (recall)",
            tp / (tp + fn) if tp + fn else 0.0,
            0.90,
            tp + fn,
        ),
    ]


def cluster_metrics(people: pl.DataFrame) -> list[Metric]:
    """Clusters against the planted personas (adjusted Rand index) and the same measure for a
    standardised KMeans baseline with as many clusters; the target is the larger of 0.45 and
    the baseline + 0.1."""
    if "cluster" not in people.columns:
        return []
    clustered = people.filter(pl.col("cluster").is_not_null())
    if not clustered.height:
        return []
    personas = clustered["persona"].to_list()
    ari = adjusted_rand_score(personas, clustered["cluster"].to_list())
    k = clustered["cluster"].n_unique()
    baseline = adjusted_rand_score(personas, baseline_kmeans(clustered, k))
    return [
        Metric(
            "cluster",
            "adjusted Rand index vs personas",
            float(ari),
            round(max(0.45, baseline + 0.1), 6),
            clustered.height,
        ),
        Metric(
            "cluster",
            "ARI of standardised KMeans (baseline)",
            float(baseline),
            None,
            clustered.height,
        ),
    ]


def baseline_kmeans(df: pl.DataFrame, k: int) -> list[int]:
    """The baseline: KMeans (k clusters) on log1p recency/frequency/monetary, messages, events
    and order value plus three behaviour shares and scores, every column standardised (never
    bought: recency 3 years; a missing count or share is 0)."""
    import numpy as np
    from sklearn.cluster import KMeans

    cols = [
        (pl.col(c).cast(pl.Float64).fill_null(1095.0 if c == "recency_days" else 0.0))
        .clip(0.0)
        .log1p()
        .alias(c)
        for c in BASELINE_LOG
        if c in df.columns
    ]
    cols += [
        pl.col(c).cast(pl.Float64).fill_null(0.0).fill_nan(0.0).alias(c)
        for c in BASELINE_PLAIN
        if c in df.columns
    ]
    x = df.select(cols).to_numpy()
    std = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return KMeans(n_clusters=max(k, 2), n_init=10, random_state=0).fit_predict(x).tolist()


def format_metrics(metrics: list[Metric]) -> str:
    lines = [f"{'tag':<28} {'metric':<40} {'value':>8} {'target':>8} {'n':>8}  ok"]
    for m in metrics:
        target = f"{m.target:.3f}" if m.target is not None else "-"
        ok = {True: "yes", False: "NO", None: ""}[m.passed]
        lines.append(f"{m.tag:<28} {m.metric:<40} {m.value:>8.4f} {target:>8} {m.n:>8,}  {ok}")
    return "\n".join(lines)


def metrics_json(metrics: list[Metric]) -> list[dict]:
    return [
        {
            "tag": m.tag,
            "metric": m.metric,
            "value": round(m.value, 6),
            "target": m.target,
            "n": m.n,
            "passed": m.passed,
        }
        for m in metrics
    ]


__all__ = [
    "Metric",
    "evaluate",
    "format_metrics",
    "is_counted",
    "metrics_json",
    "person_to_one_id",
    "reference_rfm",
]
