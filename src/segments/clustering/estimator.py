"""The scikit-learn estimator `UserClusterer` (k-means over a `FeatureSpace`) and silhouettes.

`UserClusterer` is a clusterer/transformer (`fit`, `predict`, `transform` = distances to the
centres) on a 2-D numpy array or a polars DataFrame, with k fixed or chosen on a sample by
bootstrap stability and separation (silhouette), MiniBatchKMeans or KMeans, optional initial
centres.

Choosing k (`k_range`) costs the same at any population: it works on a fixed-size sample of
`sample_size` rows (every row when there are fewer), on which every k is fitted. On
`silhouette_rows` of the sample each k gets its silhouette (separation) and its stability:
`stability_rounds` bootstrap resamples of `stability_rows` rows (at most the sample's) drawn
from the sample are each clustered with k clusters, and the stability is the mean adjusted Rand
index between each resample's labels and the sample fit's labels (1 = the same partition every
time). The k kept is the smallest k with stability >= `min_stability` whose silhouette is within
`k_tolerance` (relative) of the best silhouette among those stable k's: more clusters almost
always separate a little better, so the smallest k that is nearly as well separated and
reproducible wins. With no stable k, or `stability_rounds` = 0, the best silhouette wins (the
smallest k on ties). The chosen k's centres on the sample then start one Lloyd run over every
row (with no more rows than the sample, the sample fit is the model). Up to 5000 rows this is
exactly the former procedure, in which every k was fitted on every row; on the 100k-person demo
it finds the same k and the same partition at a third of the CPU time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from numbers import Integral, Real

import numpy as np
import polars as pl
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from segments.clustering.space import TRANSFORM_ROWS, FeatureSpace, _is_numeric
from segments.settings.clustering import MAX_CLUSTERS

_CHUNK = TRANSFORM_ROWS  # rows per predict/transform chunk
SILHOUETTE_ROWS = 5000  # rows of the k-choice sample whose silhouette is computed
STABILITY_ROWS = 10000  # rows of each bootstrap resample of the k-choice sample


def _sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """`size` of the row numbers 0..n-1 (all of them when n <= size), sorted, drawn without
    replacement by the generator seeded `seed`."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


# ---------------------------------------------------------------------------------------------
# Silhouette (exact, several labelings of the same points in one pass over the distances)


def silhouettes(
    X: np.ndarray,
    labelings: Sequence[np.ndarray],
    chunk: int = 1024,
    n_jobs: int | None = 1,
    n_threads: int | None = None,
) -> list[float]:
    """Mean silhouette coefficient (Euclidean) of each labeling of the rows of `X`.

    Same definition as `sklearn.metrics.silhouette_score` (0 for members of singleton
    clusters), computed with float32 distance blocks shared by every labeling. A labeling with
    fewer than 2 clusters scores -1. The blocks of rows are computed `n_jobs` at a time (each
    with `n_threads` BLAS threads); a block's sums do not depend on which job computes it, so
    the scores are the same to the bit whatever `n_jobs`.
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

    def block(s: int) -> None:
        e = min(n, s + chunk)
        d = X[s:e] @ X.T
        d *= -2.0
        d += sq[s:e, None]
        d += sq[None, :]
        np.maximum(d, 0.0, out=d)
        np.sqrt(d, out=d)
        sums[s:e] = d @ onehot

    side_by_side(block, range(0, n, chunk), n_jobs, n_threads)
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
    ("minibatch" | "kmeans"), `random_state`, `sample_size`, `stability_rounds`,
    `min_stability`, `k_tolerance` (see the module docstring), `weights` (column -> weight
    applied after scaling), `least` (derived feature -> the columns whose least value it is;
    the feature is named in `numeric_log`, `numeric` or `passthrough`), `init_centroids` (k0 x
    d initial centres in the scaled space; with k != k0 the most populated are kept or more are seeded by
    D² sampling), `fill_values` (column -> value for nulls, else the median) and
    `feature_space` (a fitted `FeatureSpace` to use as is instead of fitting one) and
    `n_threads` (OpenMP/BLAS threads for k-means and silhouettes; None: the libraries' default.
    On a shared, busy machine 1 is often several times faster than spinning threads) and
    `n_jobs` (independent fits run side by side when k is chosen: one per k, one per bootstrap
    round, and the silhouette's blocks; each fit is seeded on its own, so the result is the
    same to the bit whatever `n_jobs`; None: one per core).

    Learned: preprocessor_ (FeatureSpace), model_ (the fitted k-means), cluster_centers_
    (float32), n_clusters_, k_scores_ ({k: silhouette} when k was chosen), k_stability_ ({k:
    bootstrap stability} when k was chosen with stability_rounds > 0), labels_,
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
        "scaler": [StrOptions({"standard", "robust", "quantile"})],
        "algorithm": [StrOptions({"minibatch", "kmeans"})],
        "random_state": ["random_state"],
        "sample_size": [Interval(Integral, 2, None, closed="left")],
        "init_centroids": ["array-like", None],
        "fill_values": [dict, None],
        "feature_space": [FeatureSpace, None],
        "n_threads": [Interval(Integral, 1, None, closed="left"), None],
        "n_jobs": [Interval(Integral, 1, None, closed="left"), None],
        "weights": [dict, None],
        "least": [dict, None],
        "stability_rounds": [Interval(Integral, 0, None, closed="left")],
        "silhouette_rows": [Interval(Integral, 2, None, closed="left")],
        "stability_rows": [Interval(Integral, 2, None, closed="left")],
        "min_stability": [Interval(Real, 0, 1, closed="both")],
        "k_tolerance": [Interval(Real, 0, 1, closed="both")],
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
        weights=None,
        stability_rounds=5,
        min_stability=0.8,
        k_tolerance=0.1,
        n_jobs=1,
        silhouette_rows=SILHOUETTE_ROWS,
        stability_rows=STABILITY_ROWS,
        least=None,
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
        self.weights = weights
        self.stability_rounds = stability_rounds
        self.min_stability = min_stability
        self.k_tolerance = k_tolerance
        self.n_jobs = n_jobs
        self.least = least
        self.silhouette_rows = silhouette_rows
        self.stability_rows = stability_rows

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
        least = tuple((k, tuple(v)) for k, v in sorted((self.least or {}).items()))
        probe = FeatureSpace(log, num, cat, self.scaler, (), passthrough=passthrough, least=least)
        probe.check_columns(frame, type(self).__name__)
        return FeatureSpace.fit(
            frame,
            log,
            num,
            cat,
            scaler=self.scaler,
            fill_values=self.fill_values,
            passthrough=passthrough,
            weights=self.weights,
            least=self.least,
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
        stability: dict[int, float] = {}
        best = 0
        with _threads(self.n_threads):
            if len(ks) == 1:
                self.model_ = self._fit_one(Z, ks[0], init, seed)
            else:
                # k is chosen on a fixed-size sample: its cost does not grow with n
                sample = Z[_sample_rows(n, self.sample_size, seed)] if n > self.sample_size else Z
                models = self._map(lambda k: self._fit_one(sample, k, init, seed), ks)
                labels = [m.predict(sample) for m in models]
                # separation and agreement are scored on `silhouette_rows` of the sample
                m = sample.shape[0]
                scored = _sample_rows(m, self.silhouette_rows, seed + 1)
                points = sample[scored] if m > self.silhouette_rows else sample
                labels = [lab[scored] for lab in labels] if m > self.silhouette_rows else labels
                vals = silhouettes(points, labels, n_jobs=self._jobs(), n_threads=self.n_threads)
                scores = {k: v for k, v in zip(ks, vals, strict=True)}
                if self.stability_rounds > 0:
                    stability = self._stabilities(sample, points, ks, labels, seed)
                best = ks.index(choose_k(scores, stability, self.min_stability, self.k_tolerance))
                self.model_ = models[best]
                if sample is not Z:  # Lloyd on every row, from the sample's centres
                    self.model_ = self._fit_one(Z, ks[best], models[best].cluster_centers_, seed)
            self.labels_ = self.model_.predict(Z)
        self.preprocessor_ = space
        self.cluster_centers_ = self.model_.cluster_centers_
        self.n_clusters_ = int(ks[best])
        self.k_scores_ = scores
        self.k_stability_ = stability
        return self

    def _stabilities(
        self,
        sample: np.ndarray,
        points: np.ndarray,
        ks: list[int],
        labels: list[np.ndarray],
        seed: int,
    ) -> dict[int, float]:
        """Per k, the mean adjusted Rand index, over `points` (rows of `sample`), between its
        `labels` there (the fit on `sample`) and the labels of k-means fitted on each of
        `stability_rounds` bootstrap resamples of min(rows of `sample`, `stability_rows`) rows
        drawn with replacement from `sample` (resample r of k drawn from the generator seeded
        `seed + k`, its fit seeded `seed + 7919 (r + 1)`). The k x rounds fits run side by
        side (`n_jobs`)."""
        m = sample.shape[0]
        size = min(m, self.stability_rows)
        tasks = []
        for k, lab in zip(ks, labels, strict=True):
            rng = np.random.default_rng(seed + k)
            for r in range(self.stability_rounds):
                tasks.append((k, lab, rng.integers(0, m, size), seed + 7919 * (r + 1)))

        def agree(task: tuple[int, np.ndarray, np.ndarray, int]) -> float:
            k, lab, rows, fit_seed = task
            model = self._fit_one(sample[rows], k, None, fit_seed)
            return adjusted_rand_score(lab, model.predict(points))

        scores = self._map(agree, tasks)
        rounds = self.stability_rounds
        return {k: float(np.mean(scores[i * rounds : (i + 1) * rounds])) for i, k in enumerate(ks)}

    def _jobs(self) -> int:
        return self.n_jobs if self.n_jobs is not None else (os.cpu_count() or 1)

    def _map(self, fn: Callable, items: Sequence) -> list:
        """`fn` over `items`, `n_jobs` at a time, in order."""
        return side_by_side(fn, items, self._jobs(), self.n_threads)

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


def choose_k(
    silhouette: dict[int, float],
    stability: dict[int, float],
    min_stability: float = 0.8,
    tolerance: float = 0.1,
) -> int:
    """The smallest k whose stability is >= `min_stability` and whose silhouette is at least
    (1 - `tolerance`) x the best silhouette among the stable k's; with no stability given or no
    stable k, the k of the best silhouette (the smallest on ties)."""
    ks = sorted(silhouette)
    stable = [k for k in ks if stability.get(k, -1.0) >= min_stability] if stability else []
    if not stable:
        return max(ks, key=lambda k: (silhouette[k], -k))
    top = max(silhouette[k] for k in stable)
    return next(k for k in stable if silhouette[k] >= top - tolerance * abs(top))


def _threads(n: int | None, user_api: str | None = None):
    return threadpool_limits(limits=n, user_api=user_api) if n is not None else nullcontext()


def side_by_side(
    fn: Callable, items: Sequence, n_jobs: int | None, n_threads: int | None = None
) -> list:
    """`[fn(x) for x in items]`, computed by up to `n_jobs` threads (k-means and BLAS work
    without the GIL). Each worker thread limits its own OpenMP threads to `n_threads` (an
    OpenMP limit holds for the thread that sets it); the BLAS limit is process-wide and is the
    caller's (`_threads`)."""
    items = list(items)
    jobs = min(n_jobs or 1, len(items))
    if jobs <= 1:
        return [fn(x) for x in items]

    def run(x):
        with _threads(n_threads, "openmp"):
            return fn(x)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(run, items))


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


# Model files name the class by the package it was first defined in (see the package's
# `__init__`): it keeps reporting `segments.clustering`, which resolves it on first use.
UserClusterer.__module__ = "segments.clustering"
