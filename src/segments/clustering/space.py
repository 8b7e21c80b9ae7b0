"""The feature space: the frozen preprocessing of tag columns into the matrix k-means sees.

`FeatureSpace` turns tag columns into a float32 matrix. Numeric columns (money and counts
through a sign-preserving log1p, shares and scores as they are, booleans as 0/1) are imputed
(a configured fill value, else the median of the fit data, learned with
`SimpleImputer(strategy="median")`, computed with polars) and scaled (`StandardScaler`,
`RobustScaler` or `QuantileTransformer` parameters, applied by hand so that the same numbers
serve the estimator and the JSON state), then multiplied by a per-column weight (1 unless
given: the clustering stage gives each column of a feature group group_weight / sqrt(columns
in the group), so that a group's share of the distance does not grow with its column count);
categorical columns become one-hot indicators of the categories seen at fit
time (nulls are the constant category `__missing__`, unseen categories are all zeros).

A numeric feature may be derived: `least` maps a feature name to the tag columns whose least
value (nulls ignored) it is, e.g. the days since a person's last purchase *or* event. The
space reads those columns wherever it transforms a frame (a fit, a predict, a live table's
nearest centroid), so the derivation lives in the saved state with the scaler.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import polars as pl

from segments.errors import DataError
from segments.exprs import div

MISSING = "__missing__"


def _is_numeric(dtype: pl.DataType) -> bool:
    return dtype.is_numeric() or dtype == pl.Boolean or dtype == pl.Null


def _is_categorical(dtype: pl.DataType) -> bool:
    return dtype in (pl.String, pl.Boolean, pl.Null) or isinstance(dtype, pl.Categorical | pl.Enum)


# rows scaled at a time by a predict or an assignment: bounds the float32 working set
TRANSFORM_ROWS = 1 << 19


def _slog(e: pl.Expr) -> pl.Expr:
    return e.sign() * e.abs().log1p()


@dataclass(frozen=True)
class FeatureSpace:
    """A fitted preprocessing of tag columns into scaled float32 features (see module docstring).

    Numeric features, in this order: `numeric_log` (sign-preserving log1p, then scaled),
    `numeric` (scaled), `passthrough` (used as they are: shares and scores already on a 0-1
    scale). `impute` holds, per numeric feature, the value a null, NaN or infinite input
    becomes (in log units for `numeric_log`). Standard and robust scaling keep `center`/`scale`,
    quantile
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
    weights: tuple[float, ...] = ()
    least: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def column_weights(self) -> tuple[float, ...]:
        """The weight of each numeric feature (1.0 each when none were given)."""
        return self.weights or (1.0,) * len(self.numeric_columns)

    @property
    def scaled_columns(self) -> tuple[str, ...]:
        return self.numeric_log + self.numeric

    @property
    def numeric_columns(self) -> tuple[str, ...]:
        return self.numeric_log + self.numeric + self.passthrough

    @property
    def numeric_sources(self) -> tuple[str, ...]:
        """The tag columns the numeric features read (a derived feature's sources in its
        place), each once."""
        of = dict(self.least)
        return tuple(dict.fromkeys(s for c in self.numeric_columns for s in of.get(c, (c,))))

    @property
    def input_columns(self) -> tuple[str, ...]:
        return self.numeric_sources + self.categorical

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
        of = dict(self.least)
        for i, col in enumerate(self.numeric_columns):
            if col in of:
                e = pl.min_horizontal(*(pl.col(c).cast(pl.Float64) for c in of[col]))
            else:
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
        weights: dict[str, float] | None = None,
        least: dict[str, Sequence[str]] | None = None,
    ) -> FeatureSpace:
        """Learn imputation values, scaler parameters and categories from `frame`; `weights`:
        numeric column -> weight (others 1); `least`: derived numeric feature -> the columns
        whose least value it is (see the module docstring)."""
        if scaler not in ("standard", "robust", "quantile"):
            raise ValueError(f"scaler must be 'standard', 'robust' or 'quantile', got {scaler!r}")
        # imported here: transforming (a live table) needs no scikit-learn
        from sklearn.preprocessing import QuantileTransformer, RobustScaler, StandardScaler

        fill_values = fill_values or {}
        space = cls(
            tuple(numeric_log),
            tuple(numeric),
            tuple(categorical),
            scaler,
            (),
            passthrough=tuple(passthrough),
            least=tuple((k, tuple(v)) for k, v in sorted((least or {}).items())),
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
        if scaled.shape[1] and scaler in ("standard", "robust"):
            if scaler == "standard":
                ss = StandardScaler().fit(scaled)
                center_ = ss.mean_
            else:
                ss = RobustScaler().fit(scaled)
                center_ = ss.center_
            center = tuple(float(v) for v in center_)
            scale = tuple(float(v) for v in ss.scale_)
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
            weights=tuple(float((weights or {}).get(c, 1.0)) for c in cols) if weights else (),
        )

    def check_columns(self, frame: pl.DataFrame, who: str = "clustering") -> None:
        """Raise DataError naming the input columns `frame` lacks or holds with a wrong type."""
        missing = [c for c in self.input_columns if c not in frame.columns]
        if missing:
            raise DataError(f"{who}: the input lacks feature column(s) {', '.join(missing)}.")
        bad = [c for c in self.numeric_sources if not _is_numeric(frame.schema[c])]
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
        w = self.column_weights
        if self.scaler in ("standard", "robust") or n_scaled == 0:
            scaled = [
                (div(e - c, s) * wi).cast(pl.Float32)
                for e, c, s, wi in zip(
                    num[:n_scaled], self.center, self.scale, w[:n_scaled], strict=True
                )
            ]
            rest = [
                (e * wi).cast(pl.Float32)
                for e, wi in zip(num[n_scaled:], w[n_scaled:], strict=True)
            ]
            exprs = scaled + rest + onehot
            if not exprs:
                return np.empty((frame.height, 0), dtype=np.float32)
            return frame.select(exprs).to_numpy(order="c").astype(np.float32, copy=False)
        out = np.empty((frame.height, self.n_features_out), dtype=np.float32)
        raw = frame.select(num[:n_scaled]).to_numpy()
        refs = np.asarray(self.references)
        for j, q in enumerate(self.quantiles):
            out[:, j] = _quantile_column(raw[:, j], np.asarray(q), refs) * w[j]
        rest = [
            (e * wi).cast(pl.Float32) for e, wi in zip(num[n_scaled:], w[n_scaled:], strict=True)
        ] + onehot
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
