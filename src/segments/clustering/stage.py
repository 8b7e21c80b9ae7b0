"""The clustering stage: fit, predict everyone, profile and name the week's clusters."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from segments.clustering.profiles import profile_clusters
from segments.clustering.space import TRANSFORM_ROWS
from segments.clustering.stable import ClusterModelState, cluster_drift, fit_stable
from segments.errors import DataError
from segments.settings.clustering import ClusteringConfig

if TYPE_CHECKING:  # scikit-learn is imported where a model is fitted, not by a live table
    from segments.clustering.estimator import UserClusterer

_ASSIGN_ROWS = 1 << 16  # rows per block of the nearest-centre search (float64 working set)


@dataclass(frozen=True)
class ClusterRun:
    """What one week's clustering produced: the three outputs of `cluster_stage` and the
    fitted estimator (the pipeline saves it with `save_model`)."""

    assignments: pl.DataFrame
    profiles: pl.DataFrame
    state: ClusterModelState
    model: UserClusterer


def cluster_stage(
    tags: pl.DataFrame,
    cfg: ClusteringConfig | None = None,
    previous_state: ClusterModelState | None = None,
    *,
    week: str | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, ClusterModelState]:
    """`run_clustering` without the estimator: (assignments, profiles, state)."""
    run = run_clustering(tags, cfg, previous_state, week=week)
    return run.assignments, run.profiles, run.state


def run_clustering(
    tags: pl.DataFrame,
    cfg: ClusteringConfig | None = None,
    previous_state: ClusterModelState | None = None,
    *,
    week: str | None = None,
) -> ClusterRun:
    """Cluster everyone in the weekly tag table.

    In: the tag table, one row per one_id (the configured feature columns present are used).
    Fits on the hash sample of at most `cfg.fit_sample` people (`fit_stable`, reusing
    `previous_state`), predicts everyone in float32. Out: (assignments [one_id, cluster Int32,
    cluster_name String] in the input's row order, profiles (`profile_clusters` with drift),
    the new state with population sizes, shares and names).
    """
    cfg = cfg or ClusteringConfig()
    if "one_id" not in tags.columns:
        raise DataError("clustering: the tag table has no one_id column.")
    ids = tags.get_column("one_id")
    if ids.null_count() or ids.n_unique() != tags.height:
        raise DataError("clustering: one_id must be unique and non-null in the tag table.")
    clusterer, state = fit_stable(tags, cfg, previous_state, week=week)
    internal = clusterer.predict(tags)
    numbers = np.asarray(state.cluster_ids, dtype=np.int32)[internal]
    sizes = np.bincount(internal, minlength=state.k)
    state = replace(
        state,
        sizes=tuple(int(s) for s in sizes),
        shares=tuple(float(s) / tags.height for s in sizes),
    )
    drift = cluster_drift(state, previous_state, cfg)
    profiles = profile_clusters(tags, numbers, cfg, drift=drift)
    name_of = dict(
        zip(
            profiles.get_column("cluster").to_list(),
            profiles.get_column("cluster_name").to_list(),
            strict=True,
        )
    )
    state = replace(state, names=tuple(name_of.get(c, "") for c in state.cluster_ids))
    assignments = pl.DataFrame(
        {"one_id": ids, "cluster": pl.Series("cluster", numbers, dtype=pl.Int32)}
    ).join(
        profiles.select("cluster", "cluster_name"), on="cluster", how="left", maintain_order="left"
    )
    return ClusterRun(assignments, profiles, state, clusterer)


def nearest_centres(Z: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The index of the nearest of `centres` (k x d) for each row of `Z` (n x d), the lowest
    index on a tie: squared Euclidean distances in float64 (|z|^2 - 2 z.c + |c|^2), a block of
    rows at a time. The inputs are float32, as the feature space makes them."""
    C = np.asarray(centres, dtype=np.float64)
    cc = (C * C).sum(axis=1)
    out = np.empty(Z.shape[0], dtype=np.int64)
    for s in range(0, Z.shape[0], _ASSIGN_ROWS):
        z = np.asarray(Z[s : s + _ASSIGN_ROWS], dtype=np.float64)
        d = (z * z).sum(axis=1)[:, None] - 2.0 * (z @ C.T) + cc[None, :]
        out[s : s + z.shape[0]] = d.argmin(axis=1)
    return out


def assign_clusters(tags: pl.DataFrame, state: ClusterModelState) -> pl.DataFrame:
    """The clusters of a week's model for another tag table of the same shape (a live table
    between two weekly builds): one_id, cluster (the week's stable numbers), cluster_name (the
    week's names), in the input's row order. Nothing is refitted: each row goes to the nearest
    of the week's centroids in the week's feature space, both read from the clustering state
    (`ClusterModelState`): what the week's fitted estimator predicts, without loading the
    estimator (or scikit-learn)."""
    internal = np.empty(tags.height, dtype=np.int64)
    for s in range(0, tags.height, TRANSFORM_ROWS):  # bounds the float32 feature matrix
        part = tags.slice(s, TRANSFORM_ROWS)
        internal[s : s + part.height] = nearest_centres(state.space.transform(part), state.centers)
    numbers = np.asarray(state.cluster_ids, dtype=np.int32)[internal]
    names = np.asarray(state.names if state.names else [""] * state.k, dtype=object)[internal]
    return pl.DataFrame(
        {
            "one_id": tags.get_column("one_id"),
            "cluster": pl.Series("cluster", numbers, dtype=pl.Int32),
            "cluster_name": pl.Series("cluster_name", list(names), dtype=pl.String),
        }
    )
