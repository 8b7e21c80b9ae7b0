"""Week-to-week stability: the weekly state, label alignment, the stable fit and drift.

`align_labels` (Hungarian matching of centroids), `fit_stable` (week W+1 reuses week W's
feature space and starts k-means from W's centroids, so a cluster keeps its number),
`cluster_drift`; `ClusterModelState` is the weekly learned state (JSON).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import polars_hash  # noqa: F401  (registers the .nchash namespace)

from segments.clustering.space import (
    FeatureSpace,
    _is_categorical,
    _is_numeric,
    _listify,
    _tuplify,
)
from segments.errors import DataError
from segments.settings.clustering import ClusteringConfig

# scikit-learn and scipy.optimize are imported by the functions that fit or align clusters: the
# state itself is read by a live table, which assigns people without them (a second of start-up).
if TYPE_CHECKING:
    from segments.clustering.estimator import UserClusterer


@dataclass(frozen=True)
class ClusterModelState:
    """What week W leaves to week W+1: the feature space, centroids and cluster numbers.

    `centroids` are in the scaled space of `space` (row i is the centre with stable number
    `cluster_ids[i]`); `next_id` is the first number never used; `sizes`/`shares` are the
    population per cluster and `names` the cluster names, both in centroid order.
    """

    week: str | None
    k: int
    feature_names: tuple[str, ...]
    centroids: tuple[tuple[float, ...], ...]
    cluster_ids: tuple[int, ...]
    next_id: int
    space: FeatureSpace
    sizes: tuple[int, ...] = ()
    shares: tuple[float, ...] = ()
    names: tuple[str, ...] = ()
    k_scores: tuple[tuple[int, float], ...] = field(default=())
    k_stability: tuple[tuple[int, float], ...] = field(default=())

    @property
    def centers(self) -> np.ndarray:
        return np.asarray(self.centroids, dtype=np.float32).reshape(self.k, -1)

    def to_json(self) -> str:
        d = {k: _listify(v) for k, v in asdict(self).items() if k != "space"}
        d["space"] = self.space.to_dict()
        return json.dumps(d, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ClusterModelState:
        d = json.loads(text)
        space = FeatureSpace.from_dict(d.pop("space"))
        return cls(space=space, **{k: _tuplify(v) for k, v in d.items()})


def align_labels(prev_centers: np.ndarray, new_centers: np.ndarray) -> np.ndarray:
    """Match new centroids to previous ones (Hungarian method, Euclidean distance).

    Returns `perm` with perm[j] = the index of the previous centre matched to new centre j, or
    -1 when there are more new centres than previous ones and j is left over. With as many new
    as previous centres, perm is a permutation and new_centers ~ prev_centers[perm].
    """
    prev = np.asarray(prev_centers, dtype=np.float64)
    new = np.asarray(new_centers, dtype=np.float64)
    if prev.ndim != 2 or new.ndim != 2 or prev.shape[1] != new.shape[1]:
        raise ValueError(f"align_labels: centre arrays {prev.shape} and {new.shape} do not match")
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics.pairwise import euclidean_distances

    rows, cols = linear_sum_assignment(euclidean_distances(new, prev))
    perm = np.full(new.shape[0], -1, dtype=np.int64)
    perm[rows] = cols
    return perm


def resolve_features(
    schema: pl.Schema | dict[str, pl.DataType], cfg: ClusteringConfig
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The configured feature columns present in `schema` (a derived feature: when any of its
    columns is), as a `FeatureSpace.spec`:
    (numeric_log = money + counts, numeric = shares, passthrough = unscaled, categorical)."""
    f = cfg.features
    present = dict(schema)
    least = derived_features(schema, cfg)
    log = tuple(c for c in (*f.money, *f.counts) if c in present or c in least)
    num = tuple(c for c in f.shares if c in present or c in least)
    passthrough = tuple(c for c in f.unscaled if c in present or c in least)
    cat = tuple(c for c in f.categorical if c in present)
    reads = [s for c in (*log, *num, *passthrough) for s in least.get(c, (c,))]
    bad = [c for c in reads if not _is_numeric(present[c])]
    bad += [c for c in cat if not _is_categorical(present[c])]
    if bad:
        raise DataError(f"clustering: feature column(s) {', '.join(bad)} have the wrong type.")
    if not (log or num or passthrough or cat):
        raise DataError("clustering: none of the configured feature columns is in the tag table.")
    return log, num, passthrough, cat


def derived_features(
    schema: pl.Schema | dict[str, pl.DataType], cfg: ClusteringConfig
) -> dict[str, tuple[str, ...]]:
    """The configured derived (`least`) features any of whose columns `schema` holds: feature
    -> the columns present it is the least of."""
    out = {}
    for name, cols in cfg.features.least.items():
        have = tuple(c for c in cols if c in schema)
        if have:
            out[name] = have
    return out


def _hash_sample(df: pl.DataFrame, limit: int) -> pl.DataFrame:
    """At most `limit` rows chosen by the xxhash64 of one_id, in hash order (row-order free)."""
    if "one_id" not in df.columns:
        return df.head(limit)
    h = df.select(pl.col("one_id").nchash.xxhash64()).to_series()
    if df.height > limit:
        cut = h.bottom_k(limit).max()
        keep = h <= cut
        df, h = df.filter(keep), h.filter(keep)
    out = df.with_columns(h.alias("__h"))
    # one_id breaks ties only on a 64-bit collision (sorting the strings is slow)
    keys = ["__h", "one_id"] if h.n_unique() < h.len() else ["__h"]
    return out.sort(keys).head(limit).drop("__h")


def fit_stable(
    df: pl.DataFrame,
    cfg: ClusteringConfig | None = None,
    previous: ClusterModelState | None = None,
    *,
    week: str | None = None,
) -> tuple[UserClusterer, ClusterModelState]:
    """Fit this week's clusters so that they keep last week's numbers where they persist.

    In: a tag table (uses the configured feature columns present; one_id, when present, picks
    the deterministic fit sample of at most `cfg.fit_sample` rows). With a `previous` state of
    the same feature columns, scaler and weights, its feature space is reused unchanged, k-means starts
    from its centroids (k = cfg.k if set, else the previous k), and new centres are matched to
    the previous ones by `align_labels`: a matched centre keeps the previous number unless it
    moved more than `cfg.renumber_shift`; other centres get numbers from `previous.next_id` on.
    Without a usable previous state, numbers are given by decreasing size. The state's
    sizes/shares are those of the fit sample.
    """
    cfg = cfg or ClusteringConfig()
    spec = resolve_features(df.schema, cfg)
    sample = _hash_sample(df, cfg.fit_sample)
    if sample.height < 2:
        raise DataError(f"clustering: {sample.height} row(s) in the tag table, at least 2 needed.")
    numeric = (*spec[0], *spec[1], *spec[2])
    weights = cfg.features.column_weights(numeric)
    least = derived_features(df.schema, cfg)
    least = {c: least[c] for c in numeric if c in least}
    usable = (
        previous is not None
        and previous.space.spec == spec
        and dict(previous.space.least) == least
        and previous.space.scaler == cfg.scaler
        and previous.space.column_weights == tuple(weights[c] for c in numeric)
    )
    params = dict(
        numeric_log=spec[0],
        numeric=spec[1],
        passthrough=spec[2],
        categorical=spec[3],
        scaler=cfg.scaler,
        algorithm=cfg.algorithm,
        random_state=cfg.random_state,
        sample_size=cfg.silhouette_sample,
        fill_values=dict(cfg.fill_values),
        n_threads=cfg.threads,
        n_jobs=cfg.jobs,
        weights=weights,
        least=least,
        stability_rounds=cfg.stability_rounds,
        min_stability=cfg.min_stability,
        k_tolerance=cfg.k_tolerance,
    )
    if usable:
        assert previous is not None
        k = cfg.k or previous.k
        params.update(feature_space=previous.space, init_centroids=previous.centers)
    else:
        k = cfg.k or cfg.k_range[0]
        if cfg.k is None:
            params["k_range"] = tuple(cfg.k_range)
    if k >= sample.height:
        raise DataError(f"clustering: {sample.height} rows are too few for {k} clusters.")
    from segments.clustering.estimator import UserClusterer

    clusterer = UserClusterer(n_clusters=k, **params).fit(sample)
    k = clusterer.n_clusters_
    sizes = np.bincount(clusterer.labels_, minlength=k)
    next_id = previous.next_id if previous is not None else 0
    ids = [-1] * k
    if usable:
        assert previous is not None
        prev_c = previous.centers
        perm = align_labels(prev_c, clusterer.cluster_centers_)
        for j, i in enumerate(perm):
            shift = (
                float(np.linalg.norm(clusterer.cluster_centers_[j] - prev_c[i])) if i >= 0 else 0.0
            )
            if i >= 0 and (cfg.renumber_shift is None or shift <= cfg.renumber_shift):
                ids[j] = previous.cluster_ids[i]
    for j in np.lexsort((np.arange(k), -sizes)):
        if ids[j] < 0:
            ids[j] = next_id
            next_id += 1
    state = ClusterModelState(
        week=week,
        k=k,
        feature_names=clusterer.preprocessor_.feature_names_out,
        centroids=tuple(tuple(float(v) for v in row) for row in clusterer.cluster_centers_),
        cluster_ids=tuple(int(i) for i in ids),
        next_id=max(next_id, max(ids) + 1),
        space=clusterer.preprocessor_,
        sizes=tuple(int(s) for s in sizes),
        shares=tuple(float(s) / sample.height for s in sizes),
        k_scores=tuple((int(a), float(b)) for a, b in clusterer.k_scores_.items()),
        k_stability=tuple((int(a), float(b)) for a, b in clusterer.k_stability_.items()),
    )
    return clusterer, state


def cluster_drift(
    state: ClusterModelState,
    previous: ClusterModelState | None,
    cfg: ClusteringConfig | None = None,
) -> pl.DataFrame:
    """Per-cluster change since the previous week.

    Out: cluster (Int32), prev_share, share, share_change (share - prev_share), size_change
    (share / prev_share - 1), centroid_shift (Euclidean, scaled units; null for a new cluster
    or when the feature spaces differ), drift_status: `new` (no previous cluster of that
    number), `drifted` (shift > drift_threshold or |size_change| > size_drift_threshold) or
    `stable`.
    """
    cfg = cfg or ClusteringConfig()
    prev_at = {}
    same_space = previous is not None and previous.space == state.space
    if previous is not None:
        prev_at = {cid: i for i, cid in enumerate(previous.cluster_ids)}
    rows = []
    for j, cid in enumerate(state.cluster_ids):
        share = state.shares[j] if state.shares else None
        i = prev_at.get(cid)
        if i is None or previous is None:
            rows.append((cid, None, share, None, None, None, "new"))
            continue
        prev_share = previous.shares[i] if previous.shares else None
        shift = (
            float(
                np.linalg.norm(np.asarray(state.centroids[j]) - np.asarray(previous.centroids[i]))
            )
            if same_space
            else None
        )
        change = share - prev_share if share is not None and prev_share is not None else None
        rel = share / prev_share - 1.0 if change is not None and prev_share else None
        drifted = (shift is not None and shift > cfg.drift_threshold) or (
            rel is not None and abs(rel) > cfg.size_drift_threshold
        )
        rows.append(
            (cid, prev_share, share, change, rel, shift, "drifted" if drifted else "stable")
        )
    return pl.DataFrame(
        rows,
        schema={
            "cluster": pl.Int32,
            "prev_share": pl.Float64,
            "share": pl.Float64,
            "share_change": pl.Float64,
            "size_change": pl.Float64,
            "centroid_shift": pl.Float64,
            "drift_status": pl.String,
        },
        orient="row",
    ).sort("cluster")
