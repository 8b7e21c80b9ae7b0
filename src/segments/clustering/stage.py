"""The clustering stage: fit, predict everyone, profile and name the week's clusters."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from segments.clustering.estimator import UserClusterer
from segments.clustering.profiles import profile_clusters
from segments.clustering.stable import ClusterModelState, cluster_drift, fit_stable
from segments.errors import DataError
from segments.settings.clustering import ClusteringConfig


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


def assign_clusters(
    tags: pl.DataFrame, model: UserClusterer, state: ClusterModelState
) -> pl.DataFrame:
    """The clusters of a week's fitted model for another tag table of the same shape (a live
    table between two weekly builds): one_id, cluster (the week's stable numbers), cluster_name
    (the week's names), in the input's row order. Nothing is refitted."""
    internal = model.predict(tags)
    numbers = np.asarray(state.cluster_ids, dtype=np.int32)[internal]
    names = np.asarray(state.names if state.names else [""] * state.k, dtype=object)[internal]
    return pl.DataFrame(
        {
            "one_id": tags.get_column("one_id"),
            "cluster": pl.Series("cluster", numbers, dtype=pl.Int32),
            "cluster_name": pl.Series("cluster_name", list(names), dtype=pl.String),
        }
    )
