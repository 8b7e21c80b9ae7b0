"""User clustering: a scikit-learn estimator over the weekly tag table, with labels stable week to week.

Pieces, from the bottom up, one module each:

- `space`: `FeatureSpace`, the frozen preprocessing of tag columns into a float32 matrix
  (imputed, scaled numeric columns and one-hot categories).
- `estimator`: `UserClusterer`, a scikit-learn clusterer/transformer (`fit`, `predict`,
  `transform` = distances to the centres) with k fixed or chosen by silhouette (`silhouettes`).
- `stable`: `ClusterModelState` (the weekly learned state, JSON), `align_labels` (Hungarian
  matching of centroids), `fit_stable` (week W+1 reuses week W's feature space and starts
  k-means from W's centroids, so a cluster keeps its number) and `cluster_drift`.
- `profiles`: `profile_clusters` (sizes, means, lifts) and `cluster_names` (Chinese names).
- `stage`: `run_clustering` and `cluster_stage`, the weekly stage.
- `model_io`: `save_model`/`load_model`: skops files, loaded only when every type in them is on
  an explicit allow-list (`ALLOWED_TYPES`).
"""

from importlib import import_module
from typing import TYPE_CHECKING

from segments.clustering.profiles import cluster_names, profile_clusters
from segments.clustering.space import FeatureSpace
from segments.clustering.stable import (
    ClusterModelState,
    align_labels,
    cluster_drift,
    fit_stable,
    resolve_features,
)
from segments.clustering.stage import ClusterRun, assign_clusters, cluster_stage, run_clustering
from segments.settings.clustering import INTERESTS, ClusteringConfig, ClusteringFeatures

# A skops model file names each class it holds by `__module__` + name, and ALLOWED_TYPES
# lists those names. These classes were defined in `segments.clustering` before it became a
# package: they keep reporting that module (re-exported here, so the path resolves), so that
# models saved before the split still load and a model saves to the same bytes as before.
# (`UserClusterer` sets its own, in `estimator`.)
FeatureSpace.__module__ = "segments.clustering"

# The estimator and the model files import scikit-learn and skops (about a second and a half
# of start-up): they load on first use, so that a live-table refresh, which assigns clusters
# from the week's clustering state, never imports them.
_LAZY = {
    "UserClusterer": "estimator",
    "silhouettes": "estimator",
    "ALLOWED_TYPES": "model_io",
    "load_model": "model_io",
    "save_model": "model_io",
}
if TYPE_CHECKING:
    from segments.clustering.estimator import UserClusterer, silhouettes
    from segments.clustering.model_io import ALLOWED_TYPES, load_model, save_model


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(f"segments.clustering.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ALLOWED_TYPES",
    "INTERESTS",
    "ClusterModelState",
    "ClusterRun",
    "ClusteringConfig",
    "ClusteringFeatures",
    "FeatureSpace",
    "UserClusterer",
    "align_labels",
    "assign_clusters",
    "cluster_drift",
    "cluster_names",
    "cluster_stage",
    "fit_stable",
    "load_model",
    "profile_clusters",
    "resolve_features",
    "run_clustering",
    "save_model",
    "silhouettes",
]
