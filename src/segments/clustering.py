"""User clustering: a scikit-learn estimator over the weekly tag table, with labels stable week to week.

Pieces, from the bottom up:

- `FeatureSpace`: the frozen preprocessing of tag columns into a float32 matrix. Numeric columns
  (money and counts through a sign-preserving log1p, shares and scores as they are, booleans as
  0/1) are imputed (a configured fill value, else the median of the fit data, learned with
  `SimpleImputer(strategy="median")`, computed with polars) and scaled (`RobustScaler` or `QuantileTransformer`
  parameters, applied by hand so that the same numbers serve the estimator and the JSON state);
  categorical columns become one-hot indicators of the categories seen at fit time (nulls are
  the constant category `__missing__`, unseen categories are all zeros).
- `UserClusterer`: a scikit-learn clusterer/transformer (`fit`, `predict`, `transform` =
  distances to the centres) on a 2-D numpy array or a polars DataFrame, with k fixed or chosen
  by silhouette on a sample, MiniBatchKMeans or KMeans, optional initial centres.
- `align_labels` (Hungarian matching of centroids), `fit_stable` (week W+1 reuses week W's
  feature space and starts k-means from W's centroids, so a cluster keeps its number),
  `cluster_drift`, `profile_clusters` (sizes, means, lifts, Chinese names) and `cluster_stage`.
- `ClusterModelState`: the weekly learned state (JSON); `save_model`/`load_model`: skops files,
  loaded only when every type in them is on an explicit allow-list.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import polars_hash  # noqa: F401  (registers the .nchash namespace)
from scipy.optimize import linear_sum_assignment
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.preprocessing import QuantileTransformer, RobustScaler
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from segments.errors import DataError
from segments.exprs import div
from segments.settings.clustering import (
    MAX_CLUSTERS,
    ClusteringConfig,
)

MISSING = "__missing__"
_CHUNK = 1 << 19  # rows per predict/transform chunk: bounds the float32 working set


# Lifecycle stage -> (Chinese word, English key, leads the name?).
_LIFECYCLE_WORDS = {
    "new": ("新客", "new", True),
    "active": ("活跃", "active", False),
    "at_risk": ("流失风险", "at_risk", False),
    "lapsed": ("沉睡", "dormant", True),
    "churned": ("流失", "churned", True),
    "prospect": ("潜客", "prospect", True),
}


# ---------------------------------------------------------------------------------------------
# Configuration


# ---------------------------------------------------------------------------------------------
# Feature space


def _is_numeric(dtype: pl.DataType) -> bool:
    return dtype.is_numeric() or dtype == pl.Boolean or dtype == pl.Null


def _is_categorical(dtype: pl.DataType) -> bool:
    return dtype in (pl.String, pl.Boolean, pl.Null) or isinstance(dtype, pl.Categorical | pl.Enum)


def _slog(e: pl.Expr) -> pl.Expr:
    return e.sign() * e.abs().log1p()


@dataclass(frozen=True)
class FeatureSpace:
    """A fitted preprocessing of tag columns into scaled float32 features (see module docstring).

    Numeric features, in this order: `numeric_log` (sign-preserving log1p, then scaled),
    `numeric` (scaled), `passthrough` (used as they are: shares and scores already on a 0-1
    scale). `impute` holds, per numeric feature, the value a null, NaN or infinite input
    becomes (in log units for `numeric_log`). Robust scaling keeps `center`/`scale`, quantile
    scaling `quantiles` (one tuple per scaled feature) and `references`. Output columns: the
    numeric features, then one indicator per (categorical column, category).
    """

    numeric_log: tuple[str, ...]
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    scaler: str
    impute: tuple[float, ...]
    center: tuple[float, ...] = ()
    scale: tuple[float, ...] = ()
    quantiles: tuple[tuple[float, ...], ...] = ()
    references: tuple[float, ...] = ()
    categories: tuple[tuple[str, ...], ...] = ()
    passthrough: tuple[str, ...] = ()

    @property
    def scaled_columns(self) -> tuple[str, ...]:
        return self.numeric_log + self.numeric

    @property
    def numeric_columns(self) -> tuple[str, ...]:
        return self.numeric_log + self.numeric + self.passthrough

    @property
    def input_columns(self) -> tuple[str, ...]:
        return self.numeric_columns + self.categorical

    @property
    def spec(self) -> tuple[tuple[str, ...], ...]:
        """(numeric_log, numeric, passthrough, categorical)."""
        return (self.numeric_log, self.numeric, self.passthrough, self.categorical)

    @property
    def feature_names_out(self) -> tuple[str, ...]:
        onehot = tuple(
            f"{c}={v}"
            for c, cats in zip(self.categorical, self.categories, strict=True)
            for v in cats
        )
        return self.numeric_columns + onehot

    @property
    def n_features_out(self) -> int:
        return len(self.numeric_columns) + sum(len(c) for c in self.categories)

    def _numeric_exprs(self, impute: Sequence[float] | None) -> list[pl.Expr]:
        exprs = []
        for i, col in enumerate(self.numeric_columns):
            e = pl.col(col).cast(pl.Float64)
            if i < len(self.numeric_log):
                e = _slog(e)
            fill = pl.lit(None, pl.Float64) if impute is None else pl.lit(float(impute[i]))
            exprs.append(pl.when(e.is_finite()).then(e).otherwise(fill).alias(col))
        return exprs

    @classmethod
    def fit(
        cls,
        frame: pl.DataFrame,
        numeric_log: Sequence[str] = (),
        numeric: Sequence[str] = (),
        categorical: Sequence[str] = (),
        scaler: str = "robust",
        fill_values: dict[str, float] | None = None,
        max_categories: int = 32,
        n_quantiles: int = 100,
        passthrough: Sequence[str] = (),
    ) -> FeatureSpace:
        """Learn imputation values, scaler parameters and categories from `frame`."""
        if scaler not in ("robust", "quantile"):
            raise ValueError(f"scaler must be 'robust' or 'quantile', got {scaler!r}")
        fill_values = fill_values or {}
        space = cls(
            tuple(numeric_log),
            tuple(numeric),
            tuple(categorical),
            scaler,
            (),
            passthrough=tuple(passthrough),
        )
        cols = space.numeric_columns
        n = frame.height
        impute: list[float] = []
        filled = np.empty((n, 0))
        if cols:
            table = frame.select(space._numeric_exprs(None))
            # the medians SimpleImputer(strategy="median") learns (nulls ignored; 0 for an
            # all-null column, as with keep_empty_features), computed by polars: ~100x faster
            medians = table.select(pl.all().median().fill_null(0.0)).row(0)
            raw = table.to_numpy().astype(np.float64)
            for i, col in enumerate(cols):
                if col in fill_values:
                    v = float(fill_values[col])
                    v = math.copysign(math.log1p(abs(v)), v) if i < len(numeric_log) else v
                    impute.append(v)
                else:
                    impute.append(float(medians[i]))
            filled = np.where(np.isnan(raw), np.asarray(impute)[None, :], raw)
        scaled = filled[:, : len(space.scaled_columns)]
        center: tuple[float, ...] = ()
        scale: tuple[float, ...] = ()
        quantiles: tuple[tuple[float, ...], ...] = ()
        references: tuple[float, ...] = ()
        if scaled.shape[1] and scaler == "robust":
            rs = RobustScaler().fit(scaled)
            center = tuple(float(v) for v in rs.center_)
            scale = tuple(float(v) for v in rs.scale_)
        elif scaled.shape[1]:
            qt = QuantileTransformer(n_quantiles=max(2, min(n_quantiles, n)), subsample=None)
            qt.fit(scaled)
            quantiles = tuple(
                tuple(float(v) for v in qt.quantiles_[:, j]) for j in range(scaled.shape[1])
            )
            references = tuple(float(v) for v in qt.references_)
        cats = []
        for col in categorical:
            counts = (
                frame.select(pl.col(col).cast(pl.String).fill_null(MISSING).alias("v"))
                .group_by("v")
                .len()
                .sort(["len", "v"], descending=[True, False])
                .head(max_categories)
            )
            cats.append(tuple(sorted(counts.get_column("v").to_list())))
        return replace(
            space,
            impute=tuple(impute),
            center=center,
            scale=scale,
            quantiles=quantiles,
            references=references,
            categories=tuple(cats),
        )

    def check_columns(self, frame: pl.DataFrame, who: str = "clustering") -> None:
        """Raise DataError naming the input columns `frame` lacks or holds with a wrong type."""
        missing = [c for c in self.input_columns if c not in frame.columns]
        if missing:
            raise DataError(f"{who}: the input lacks feature column(s) {', '.join(missing)}.")
        bad = [c for c in self.numeric_columns if not _is_numeric(frame.schema[c])]
        bad += [c for c in self.categorical if not _is_categorical(frame.schema[c])]
        if bad:
            raise DataError(
                f"{who}: feature column(s) {', '.join(bad)} have the wrong type "
                "(numeric families need numbers or booleans, categorical ones strings)."
            )

    def transform(self, frame: pl.DataFrame) -> np.ndarray:
        """The scaled features of `frame` as a C-ordered float32 array (rows in frame order)."""
        self.check_columns(frame)
        num = self._numeric_exprs(self.impute)
        n_scaled = len(self.scaled_columns)
        onehot = [
            (pl.col(c).cast(pl.String).fill_null(MISSING) == pl.lit(v))
            .cast(pl.Float32)
            .alias(f"{c}={v}")
            for c, cats in zip(self.categorical, self.categories, strict=True)
            for v in cats
        ]
        if self.scaler == "robust" or n_scaled == 0:
            scaled = [
                div(e - c, s).cast(pl.Float32)
                for e, c, s in zip(num[:n_scaled], self.center, self.scale, strict=True)
            ]
            exprs = scaled + [e.cast(pl.Float32) for e in num[n_scaled:]] + onehot
            if not exprs:
                return np.empty((frame.height, 0), dtype=np.float32)
            return frame.select(exprs).to_numpy(order="c").astype(np.float32, copy=False)
        out = np.empty((frame.height, self.n_features_out), dtype=np.float32)
        raw = frame.select(num[:n_scaled]).to_numpy()
        refs = np.asarray(self.references)
        for j, q in enumerate(self.quantiles):
            out[:, j] = _quantile_column(raw[:, j], np.asarray(q), refs)
        rest = [e.cast(pl.Float32) for e in num[n_scaled:]] + onehot
        if rest:
            out[:, n_scaled:] = frame.select(rest).to_numpy()
        return out

    def to_dict(self) -> dict[str, Any]:
        return {k: _listify(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpace:
        return cls(**{k: _tuplify(v) for k, v in d.items()})


def _quantile_column(x: np.ndarray, q: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """QuantileTransformer's uniform transform of one column (ties averaged, bounds exact)."""
    y = 0.5 * (np.interp(x, q, refs) - np.interp(-x, -q[::-1], -refs[::-1]))
    y[x >= q[-1]] = refs[-1]
    y[x <= q[0]] = refs[0]
    return y


def _listify(v: Any) -> Any:
    return [_listify(x) for x in v] if isinstance(v, tuple | list) else v


def _tuplify(v: Any) -> Any:
    return tuple(_tuplify(x) for x in v) if isinstance(v, list) else v


# ---------------------------------------------------------------------------------------------
# Silhouette (exact, several labelings of the same points in one pass over the distances)


def silhouettes(X: np.ndarray, labelings: Sequence[np.ndarray], chunk: int = 1024) -> list[float]:
    """Mean silhouette coefficient (Euclidean) of each labeling of the rows of `X`.

    Same definition as `sklearn.metrics.silhouette_score` (0 for members of singleton
    clusters), computed with float32 distance blocks shared by every labeling. A labeling with
    fewer than 2 clusters scores -1.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    n = X.shape[0]
    codes, blocks, widths = [], [], []
    for lab in labelings:
        _, code = np.unique(np.asarray(lab), return_inverse=True)
        k = int(code.max()) + 1 if n else 0
        oh = np.zeros((n, k), dtype=np.float32)
        oh[np.arange(n), code] = 1.0
        codes.append(code)
        blocks.append(oh)
        widths.append(k)
    onehot = np.hstack(blocks) if blocks else np.zeros((n, 0), np.float32)
    sums = np.empty((n, onehot.shape[1]), dtype=np.float64)
    sq = np.einsum("ij,ij->i", X, X)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        d = X[s:e] @ X.T
        d *= -2.0
        d += sq[s:e, None]
        d += sq[None, :]
        np.maximum(d, 0.0, out=d)
        np.sqrt(d, out=d)
        sums[s:e] = d @ onehot
    out, offset, rows = [], 0, np.arange(n)
    for code, k in zip(codes, widths, strict=True):
        if k < 2:
            out.append(-1.0)
            offset += k
            continue
        s_k = sums[:, offset : offset + k]
        offset += k
        count = np.bincount(code, minlength=k).astype(np.float64)
        own = count[code]
        a = s_k[rows, code] / np.maximum(own - 1.0, 1.0)
        mean_other = s_k / count[None, :]
        mean_other[rows, code] = np.inf
        b = mean_other.min(axis=1)
        denom = np.maximum(a, b)
        sil = np.where((own > 1) & (denom > 0), (b - a) / np.where(denom > 0, denom, 1.0), 0.0)
        out.append(float(sil.mean()))
    return out


# ---------------------------------------------------------------------------------------------
# The estimator


class UserClusterer(ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin, BaseEstimator):
    """K-means clustering of people over their scaled tags, following scikit-learn's contract.

    Parameters: `n_clusters` (used when `k_range` is None), `k_range` ((lo, hi) inclusive: k
    chosen by the silhouette on `sample_size` rows), `numeric_log`/`numeric`/`categorical`/
    `passthrough` (column names: log1p then scaled / scaled / one-hot / as they are; with none
    given every numeric or boolean column is `numeric`; a numpy array's columns are named x0,
    x1, ...), `scaler` ("robust" | "quantile"), `algorithm`
    ("minibatch" | "kmeans"), `random_state`, `sample_size`, `init_centroids` (k0 x d initial
    centres in the scaled space; with k != k0 the most populated are kept or more are seeded by
    D² sampling), `fill_values` (column -> value for nulls, else the median) and
    `feature_space` (a fitted `FeatureSpace` to use as is instead of fitting one) and
    `n_threads` (OpenMP/BLAS threads for k-means and silhouettes; None: the libraries' default.
    On a shared, busy machine 1 is often several times faster than spinning threads).

    Learned: preprocessor_ (FeatureSpace), model_ (the fitted k-means), cluster_centers_
    (float32), n_clusters_, k_scores_ ({k: silhouette} when k was chosen), labels_,
    n_features_in_, feature_names_in_ (for named inputs). `transform` gives the distances to
    the centres; `embed` gives the scaled features.
    """

    _parameter_constraints: dict = {  # noqa: RUF012 (scikit-learn's own convention)
        "n_clusters": [Interval(Integral, 2, MAX_CLUSTERS, closed="both")],
        "k_range": [None, list, tuple],
        "numeric_log": [list, tuple],
        "numeric": [list, tuple],
        "passthrough": [list, tuple],
        "categorical": [list, tuple],
        "scaler": [StrOptions({"robust", "quantile"})],
        "algorithm": [StrOptions({"minibatch", "kmeans"})],
        "random_state": ["random_state"],
        "sample_size": [Interval(Integral, 2, None, closed="left")],
        "init_centroids": ["array-like", None],
        "fill_values": [dict, None],
        "feature_space": [FeatureSpace, None],
        "n_threads": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(
        self,
        n_clusters=8,
        k_range=None,
        numeric_log=(),
        numeric=(),
        categorical=(),
        scaler="robust",
        algorithm="minibatch",
        random_state=0,
        sample_size=20000,
        init_centroids=None,
        fill_values=None,
        feature_space=None,
        passthrough=(),
        n_threads=None,
    ):
        self.n_clusters = n_clusters
        self.k_range = k_range
        self.numeric_log = numeric_log
        self.numeric = numeric
        self.categorical = categorical
        self.scaler = scaler
        self.algorithm = algorithm
        self.random_state = random_state
        self.sample_size = sample_size
        self.init_centroids = init_centroids
        self.fill_values = fill_values
        self.feature_space = feature_space
        self.passthrough = passthrough
        self.n_threads = n_threads

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    # -- input handling ----------------------------------------------------------------------

    def _frame(self, X, reset: bool) -> pl.DataFrame:
        """Polars frames pass as they are; anything else goes through `validate_data`."""
        if isinstance(X, pl.DataFrame):
            if X.height == 0:
                raise ValueError("Found array with 0 sample(s) while a minimum of 1 is required.")
            if not reset:
                check_is_fitted(self)
                self.preprocessor_.check_columns(X, type(self).__name__)
            return X
        X = validate_data(
            self, X, reset=reset, dtype=[np.float64, np.float32], ensure_all_finite="allow-nan"
        )
        names = getattr(self, "feature_names_in_", None)
        if names is None or len(names) != X.shape[1]:
            names = [f"x{i}" for i in range(X.shape[1])]
        return pl.from_numpy(np.asarray(X), schema=[str(c) for c in names], orient="row")

    def _space(self, frame: pl.DataFrame) -> FeatureSpace:
        if self.feature_space is not None:
            self.feature_space.check_columns(frame, type(self).__name__)
            return self.feature_space
        log, num, cat = tuple(self.numeric_log), tuple(self.numeric), tuple(self.categorical)
        passthrough = tuple(self.passthrough)
        if not (log or num or cat or passthrough):
            num = tuple(c for c, t in frame.schema.items() if _is_numeric(t))
            if not num:
                raise ValueError("UserClusterer: the input has no numeric column to cluster on.")
        probe = FeatureSpace(log, num, cat, self.scaler, (), passthrough=passthrough)
        probe.check_columns(frame, type(self).__name__)
        return FeatureSpace.fit(
            frame,
            log,
            num,
            cat,
            scaler=self.scaler,
            fill_values=self.fill_values,
            passthrough=passthrough,
        )

    def _check_k_range(self) -> list[int] | None:
        if self.k_range is None:
            return None
        kr = self.k_range
        ok = (
            len(kr) == 2
            and all(isinstance(v, Integral) and not isinstance(v, bool) for v in kr)
            and 2 <= kr[0] <= kr[1] <= MAX_CLUSTERS
        )
        if not ok:
            raise InvalidParameterError(
                "The 'k_range' parameter of UserClusterer must be a pair (lo, hi) of ints with "
                f"2 <= lo <= hi <= {MAX_CLUSTERS}, or None. Got {kr!r} instead."
            )
        return list(range(int(kr[0]), int(kr[1]) + 1))

    # -- fitting -----------------------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the feature space (unless given) and k-means on X; returns self."""
        ks = self._check_k_range()
        frame = self._frame(X, reset=True)
        if isinstance(X, pl.DataFrame):
            for attr in ("feature_names_in_", "n_features_in_"):
                if hasattr(self, attr):
                    delattr(self, attr)
        space = self._space(frame)
        Z = space.transform(frame)
        n, d = Z.shape
        if isinstance(X, pl.DataFrame):
            self.feature_names_in_ = np.asarray(space.input_columns, dtype=object)
            self.n_features_in_ = len(space.input_columns)
        if d == 0:
            raise ValueError("UserClusterer: the feature space has no column.")
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        init = None
        if self.init_centroids is not None:
            init = np.ascontiguousarray(self.init_centroids, dtype=np.float32)
            if init.ndim != 2 or init.shape[1] != d or init.shape[0] < 1:
                raise ValueError(
                    f"UserClusterer: init_centroids has shape {init.shape}, expected (k, {d}) "
                    "in the scaled feature space."
                )
        if ks is None:
            ks = [self.n_clusters]
            if n < self.n_clusters:
                raise ValueError(f"n_samples={n} should be >= n_clusters={self.n_clusters}.")
        else:
            ks = [k for k in ks if k < n]
            if not ks:
                raise ValueError(
                    f"n_samples={n} should be > the smallest k of k_range {self.k_range}."
                )
        scores: dict[int, float] = {}
        best = 0
        with _threads(self.n_threads):
            models = [self._fit_one(Z, k, init, seed) for k in ks]
            if len(ks) > 1:
                pick = np.random.default_rng(seed)
                idx = (
                    np.sort(pick.choice(n, self.sample_size, replace=False))
                    if n > self.sample_size
                    else np.arange(n)
                )
                sample = Z[idx]
                vals = silhouettes(sample, [m.predict(sample) for m in models])
                scores = {k: v for k, v in zip(ks, vals, strict=True)}
                best = int(np.argmax(vals))  # first maximum: the smallest k on ties
            self.model_ = models[best]
            self.labels_ = self.model_.predict(Z)
        self.preprocessor_ = space
        self.cluster_centers_ = self.model_.cluster_centers_
        self.n_clusters_ = int(ks[best])
        self.k_scores_ = scores
        return self

    def _fit_one(self, Z: np.ndarray, k: int, init: np.ndarray | None, seed: int):
        start = "k-means++" if init is None else _seed_centers(Z, init, k, seed)
        explicit = not isinstance(start, str)
        if self.algorithm == "kmeans":
            model = KMeans(n_clusters=k, init=start, n_init=1 if explicit else 3, random_state=seed)
        else:
            model = MiniBatchKMeans(
                n_clusters=k,
                init=start,
                n_init=1 if explicit else 3,
                batch_size=4096,
                random_state=seed,
                compute_labels=False,  # labels_ come from predict
            )
        return model.fit(Z)

    # -- using the fit -----------------------------------------------------------------------

    @property
    def _n_features_out(self) -> int:
        return self.n_clusters_

    def embed(self, X) -> np.ndarray:
        """The scaled features of X: C-ordered float32, n_samples x len(preprocessor_ output)."""
        check_is_fitted(self)
        frame = self._frame(X, reset=False)
        if frame.height <= _CHUNK:
            return self.preprocessor_.transform(frame)
        return np.vstack(
            [
                self.preprocessor_.transform(frame.slice(s, _CHUNK))
                for s in range(0, frame.height, _CHUNK)
            ]
        )

    def predict(self, X) -> np.ndarray:
        """The index (0..n_clusters_-1) of the nearest centre for each row of X."""
        check_is_fitted(self)
        frame = self._frame(X, reset=False)
        out = np.empty(frame.height, dtype=np.int32)
        for s in range(0, frame.height, _CHUNK):
            part = frame.slice(s, _CHUNK)
            Z = self.preprocessor_.transform(part)
            with _threads(self.n_threads):
                out[s : s + part.height] = self.model_.predict(Z)
        return out

    def transform(self, X) -> np.ndarray:
        """Distances (float32) from each row of X to each cluster centre."""
        return euclidean_distances(self.embed(X), self.cluster_centers_).astype(np.float32)


def _threads(n: int | None):
    return threadpool_limits(limits=n) if n is not None else nullcontext()


def _seed_centers(Z: np.ndarray, init: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k initial centres from `init`: all of them, the k most populated, or more by D² sampling."""
    k0 = init.shape[0]
    if k0 == k:
        return init
    if k0 > k:
        nearest = euclidean_distances(Z, init, squared=True).argmin(axis=1)
        counts = np.bincount(nearest, minlength=k0)
        keep = np.sort(np.lexsort((np.arange(k0), -counts))[:k])
        return init[keep]
    rng = np.random.default_rng(seed)
    centers = [*init]
    d2 = euclidean_distances(Z, init, squared=True).min(axis=1).astype(np.float64)
    while len(centers) < k:
        total = d2.sum()
        i = int(rng.choice(len(Z), p=d2 / total)) if total > 0 else int(rng.integers(len(Z)))
        centers.append(Z[i])
        d2 = np.minimum(d2, euclidean_distances(Z, Z[i : i + 1], squared=True)[:, 0])
    return np.ascontiguousarray(np.vstack(centers), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Weekly state and stable numbering


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
    rows, cols = linear_sum_assignment(euclidean_distances(new, prev))
    perm = np.full(new.shape[0], -1, dtype=np.int64)
    perm[rows] = cols
    return perm


def resolve_features(
    schema: pl.Schema | dict[str, pl.DataType], cfg: ClusteringConfig
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The configured feature columns present in `schema`, as a `FeatureSpace.spec`:
    (numeric_log = money + counts, numeric = shares, passthrough = unscaled, categorical)."""
    f = cfg.features
    present = dict(schema)
    log = tuple(c for c in (*f.money, *f.counts) if c in present)
    num = tuple(c for c in f.shares if c in present)
    passthrough = tuple(c for c in f.unscaled if c in present)
    cat = tuple(c for c in f.categorical if c in present)
    bad = [c for c in (*log, *num, *passthrough) if not _is_numeric(present[c])]
    bad += [c for c in cat if not _is_categorical(present[c])]
    if bad:
        raise DataError(f"clustering: feature column(s) {', '.join(bad)} have the wrong type.")
    if not (log or num or passthrough or cat):
        raise DataError("clustering: none of the configured feature columns is in the tag table.")
    return log, num, passthrough, cat


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
    the same feature columns and scaler, its feature space is reused unchanged, k-means starts
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
    usable = (
        previous is not None and previous.space.spec == spec and previous.space.scaler == cfg.scaler
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


# ---------------------------------------------------------------------------------------------
# Profiles and names


def _lift(row: dict[str, Any], tag: str) -> float | None:
    v = row.get(f"lift_{tag}")
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _name_parts(row: dict[str, Any], cfg: ClusteringConfig) -> list[tuple[str, str, str]]:
    """(slot, Chinese word, English key) naming words of one profile row, display-ordered."""
    hi, lo = cfg.name_lift, cfg.low_lift
    words: dict[str, tuple[str, str]] = {}

    def at_least(tag: str, level: float) -> bool:
        v = _lift(row, tag)
        return v is not None and v >= level

    def at_most(tag: str, level: float) -> bool:
        v = _lift(row, tag)
        return v is not None and v <= level

    mean_hv = row.get("mean_is_high_value")
    if at_least("coupon_hunter_score", hi):
        words["value"] = ("羊毛党", "coupon_hunter")
    elif at_least("monetary_52w", hi) or (
        at_least("is_high_value", hi) and mean_hv is not None and mean_hv >= 0.5
    ):
        words["value"] = ("高价值", "high_value")
    if any(
        at_least(t, hi) for t in ("discount_share", "deal_seeking_share", "promo_order_share_52w")
    ):
        words["promo"] = ("高优惠敏感", "promo_sensitive")
    best, best_lift = None, cfg.interest_lift
    for name in cfg.interest_labels:
        v, m = _lift(row, f"interest_{name}"), row.get(f"mean_interest_{name}")
        if (
            v is not None
            and m is not None
            and m >= cfg.interest_min
            and (v > best_lift or (best is None and v >= best_lift))
        ):
            best, best_lift = name, v
    if best is not None:
        words["interest"] = (cfg.interest_labels[best], best)
    stage, stage_share = row.get("top_lifecycle"), row.get("top_lifecycle_share")
    lead = False
    if stage in _LIFECYCLE_WORDS and stage_share is not None and stage_share >= 0.5:
        zh, en, lead = _LIFECYCLE_WORDS[stage]
        words["activity"] = (zh, en)
    elif at_most("tenure_weeks", lo):
        words["activity"], lead = ("新客", "new"), True
    elif at_least("recency_days", 2.0):
        words["activity"], lead = ("沉睡", "dormant"), True
    elif at_most("recency_days", 0.5):
        words["activity"] = ("活跃", "active")
    if at_most("frequency_52w", lo):
        words["frequency"] = ("低频", "low_freq")
    elif at_least("frequency_52w", 2.0):
        words["frequency"] = ("高频", "high_freq")
    chosen = [s for s in ("value", "activity", "interest", "promo", "frequency") if s in words][:3]
    order = ["lead", "value", "promo", "interest", "trail", "frequency"]
    slots = [("lead" if lead else "trail") if s == "activity" else s for s in chosen]
    parts = [(slot, *words[s]) for s, slot in zip(chosen, slots, strict=True)]
    return sorted(parts, key=lambda p: order.index(p[0]))


def cluster_names(
    profiles: pl.DataFrame, cfg: ClusteringConfig | None = None
) -> tuple[list[str], list[str]]:
    """(Chinese names, English keys) for the rows of a profile table, unique within it.

    Words: a value word (羊毛党 from the coupon-hunter lift, else 高价值 from the monetary or
    high-value lift), 高优惠敏感 (discount/deal/promo lift), the interest with the highest
    affinity lift (>= interest_lift, mean >= interest_min), an activity word from the modal
    lifecycle stage (held by >= half the cluster) or else from tenure/recency lifts, and
    低频/高频 from the frequency lift; at most three, by that priority, joined with "·". A
    cluster with none is 大众. When names repeat, the later clusters get 2, 3, ... appended.
    """
    cfg = cfg or ClusteringConfig()
    zh_names, en_keys = [], []
    for row in profiles.iter_rows(named=True):
        parts = _name_parts(row, cfg)
        zh_names.append("·".join(p[1] for p in parts) or "大众")
        en_keys.append("-".join(p[2] for p in parts) or "mainstream")
    return _unique(zh_names, ""), _unique(en_keys, "-")


def _unique(names: list[str], sep: str) -> list[str]:
    bare = set(names)
    used: set[str] = set()
    out = []
    for name in names:
        candidate, n = name, 1
        while candidate in used or (candidate != name and candidate in bare):
            n += 1
            candidate = f"{name}{sep}{n}"
        used.add(candidate)
        out.append(candidate)
    return out


def _cluster_means(
    df: pl.DataFrame, labels: np.ndarray, tags: list[str]
) -> tuple[pl.DataFrame, dict[str, float | None]]:
    """cluster, size and mean_<tag> (nulls ignored), sorted by cluster; and each tag's
    population mean (None when every value is null).

    One column at a time in float64, with no copy of the table (at 10M people the numeric
    tags are 4 GiB). Each cluster's values are added in row order (`np.bincount`) and the
    population's total is numpy's sum of the clusters' totals (a fixed order for a given k),
    so the means are the same from run to run (a parallel group-by adds partial float sums in
    no fixed order), and a single cluster's lift is exactly 1."""
    clusters, idx = np.unique(labels, return_inverse=True)
    k = len(clusters)
    cols: dict[str, pl.Series] = {
        "cluster": pl.Series("cluster", clusters, dtype=pl.Int32),
        "size": pl.Series("size", np.bincount(idx, minlength=k), dtype=pl.Int64),
    }
    pop: dict[str, float | None] = {}
    for t in tags:
        column = df.get_column(t).cast(pl.Float64)
        valid = column.is_not_null().to_numpy()
        values = column.fill_null(0.0).to_numpy()
        count = np.bincount(idx, weights=valid, minlength=k)
        total = np.bincount(idx, weights=values, minlength=k)
        means = [float(s) / c if c else None for s, c in zip(total, count, strict=True)]
        cols[f"mean_{t}"] = pl.Series(f"mean_{t}", means, dtype=pl.Float64)
        n_valid = float(count.sum())  # the population: the clusters' sums added
        pop[t] = float(total.sum()) / n_valid if n_valid else None
    return pl.DataFrame(list(cols.values())), pop


def _ratios(values: pl.Series, by: float | None) -> list[float | None]:
    """values / by, each by true division; all null when `by` is null, 0 or NaN."""
    if by is None or by == 0.0 or math.isnan(by):
        return [None] * values.len()
    return [None if v is None else v / by for v in values.to_list()]


def profile_clusters(
    df: pl.DataFrame,
    labels: Sequence[int] | np.ndarray | pl.Series,
    cfg: ClusteringConfig | None = None,
    drift: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """One row per cluster: who is in it, how it differs from everyone, and its name.

    In: the tag table and each row's cluster number (same order and length). Out: cluster
    (Int32), cluster_name (Chinese), cluster_key (English), size, share, top_lifecycle and
    top_lifecycle_share (when lifecycle_stage is present), the `drift` columns (prev_share,
    share_change, size_change, centroid_shift, drift_status) when given, then for every
    numeric or boolean column of `cfg.profile_tags` and of the numeric feature families present
    (in that order): mean_<tag> (nulls ignored) and
    lift_<tag> = mean_<tag> / population mean (null when the population mean is 0 or null).
    Sorted by cluster.
    """
    cfg = cfg or ClusteringConfig()
    lab = pl.Series("cluster", np.asarray(labels), dtype=pl.Int32)
    if lab.len() != df.height:
        raise ValueError(f"profile_clusters: {lab.len()} labels for {df.height} rows")
    f = cfg.features
    wanted = dict.fromkeys((*cfg.profile_tags, *f.money, *f.counts, *f.shares, *f.unscaled))
    tags = [c for c in wanted if c in df.columns and _is_numeric(df.schema[c])]
    n = df.height
    prof, pop = _cluster_means(df, lab.to_numpy(), tags)
    # Shares and lifts are divided in Python: polars divides a chunk of two or more rows by a
    # number as a multiplication by its reciprocal, and a chunk of one row by true division,
    # so these profiles (one row per cluster, in either layout) gave 46/416 as
    # 0.11057692307692307 in one run and 0.11057692307692309 in another.
    prof = prof.with_columns(
        pl.Series("share", [s / n for s in prof.get_column("size").to_list()], pl.Float64),
        *[
            pl.Series(f"lift_{t}", _ratios(prof.get_column(f"mean_{t}"), pop[t]), pl.Float64)
            for t in tags
        ],
    )
    extra: list[str] = []
    if "lifecycle_stage" in df.columns:
        life = (
            df.select(pl.col("lifecycle_stage").cast(pl.String))
            .with_columns(lab)
            .group_by("cluster", "lifecycle_stage")
            .len()
            .sort(
                ["cluster", "len", "lifecycle_stage"],
                descending=[False, True, False],
                nulls_last=True,
            )
            .group_by("cluster", maintain_order=True)
            .agg(
                pl.col("lifecycle_stage").first().alias("top_lifecycle"),
                (pl.col("len").first() / pl.col("len").sum()).alias("top_lifecycle_share"),
            )
        )
        prof = prof.join(life, on="cluster", how="left")
        extra = ["top_lifecycle", "top_lifecycle_share"]
    zh, en = cluster_names(prof, cfg)
    prof = prof.with_columns(
        pl.Series("cluster_name", zh, pl.String), pl.Series("cluster_key", en, pl.String)
    )
    drift_cols: list[str] = []
    if drift is not None:
        d = drift.drop("share", strict=False).with_columns(pl.col("cluster").cast(pl.Int32))
        prof = prof.join(d, on="cluster", how="left")
        drift_cols = [c for c in d.columns if c != "cluster"]
    metric_cols = [c for t in tags for c in (f"mean_{t}", f"lift_{t}")]
    return prof.select(
        "cluster", "cluster_name", "cluster_key", "size", "share", *extra, *drift_cols, *metric_cols
    )


# ---------------------------------------------------------------------------------------------
# The stage


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


# ---------------------------------------------------------------------------------------------
# Model files (skops, never pickle)

ALLOWED_TYPES = frozenset(
    {
        "segments.clustering.UserClusterer",
        "segments.clustering.FeatureSpace",
        "sklearn.cluster._kmeans.KMeans",
        "sklearn.cluster._kmeans.MiniBatchKMeans",
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.float32",
        "numpy.float64",
        "numpy.int32",
        "numpy.int64",
        "builtins.int",
        "builtins.float",
        "builtins.str",
        "builtins.bool",
        "builtins.tuple",
        "builtins.list",
        "builtins.dict",
        "builtins.NoneType",
        "numpy.random._mt19937.MT19937",
        "numpy.random.mtrand.RandomState",
    }
)


def save_model(clusterer: UserClusterer, path: str | Path) -> None:
    """Write a fitted clusterer as a skops file, byte for byte the same for the same model.

    skops names its array members after Python object ids and stamps the zip entries with
    the current time; both are replaced (ids by their order in schema.json, times by
    1980-01-01) so that rebuilding a week gives an identical file."""
    import io
    import re
    import zipfile

    import skops.io as sio

    raw = sio.dumps(clusterer)
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        members = {name: z.read(name) for name in z.namelist()}
    schema = members.pop("schema.json").decode("utf-8")
    # Object ids (memory addresses, ten digits or more) in order of first appearance.
    ids: dict[str, str] = {}
    for m in re.finditer(r'"__id__": (\d+)|"file": "(\d+)\.npy"', schema):
        ids.setdefault(m.group(1) or m.group(2), str(len(ids) + 1))
    if ids:  # one pass over the text: every run of digits that is an object id is renumbered
        schema = re.sub(r"(?<!\d)\d+(?!\d)", lambda m: ids.get(m.group(0), m.group(0)), schema)
    out = {"schema.json": schema.encode("utf-8")}
    for name, data in members.items():
        stem = name[: -len(".npy")] if name.endswith(".npy") else None
        out[f"{ids[stem]}.npy" if stem in ids else name] = data
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name in sorted(out):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o600 << 16
            z.writestr(info, out[name])
    Path(path).write_bytes(buf.getvalue())


def load_model(path: str | Path) -> UserClusterer:
    """Read a skops file written by `save_model`, refusing any type outside `ALLOWED_TYPES`.

    Raises DataError naming the untrusted types (or when the file is not a UserClusterer).
    """
    import skops.io as sio

    path = Path(path)
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # a damaged or foreign file
        raise DataError(f"{path}: not a readable skops model file ({exc}).") from None
    refused = sorted(t for t in untrusted if t not in ALLOWED_TYPES)
    if refused:
        raise DataError(f"{path}: refusing to load untrusted type(s) {', '.join(refused)}.")
    model = sio.load(path, trusted=list(untrusted))
    if not isinstance(model, UserClusterer):
        raise DataError(f"{path}: holds a {type(model).__name__}, not a UserClusterer.")
    return model
