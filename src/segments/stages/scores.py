"""RFM scores: quantile cut points learned on everyone, the R/F/M scores and the 8-cell segment."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from segments.errors import DataError
from segments.settings.rfm import RfmConfig
from segments.weeks import Week

# The 8-cell RFM segment: (R high, F high, M high) -> (English key, Chinese name).
RFM_SEGMENTS: dict[tuple[bool, bool, bool], tuple[str, str]] = {
    (True, True, True): ("important_value", "重要价值客户"),
    (True, False, True): ("important_develop", "重要发展客户"),
    (False, True, True): ("important_retain", "重要保持客户"),
    (False, False, True): ("important_winback", "重要挽留客户"),
    (True, True, False): ("general_value", "一般价值客户"),
    (True, False, False): ("general_develop", "一般发展客户"),
    (False, True, False): ("general_retain", "一般保持客户"),
    (False, False, False): ("general_winback", "一般挽留客户"),
}


@dataclass(frozen=True)
class RfmCutPoints:
    """Quantile cut points and means learned on one week's features.

    Bins are right-closed on the raw value: (-inf, c1], (c1, c2], ..., (ck, inf). F and M
    scores count up from 1 (the lowest values); R scores count down (the fewest days score
    highest). `k` may be below `score_bins - 1` (see `fit_rfm_cut_points`), so scores are
    1..k+1.
    """

    recency: tuple[float, ...]
    frequency: tuple[float, ...]
    monetary: tuple[float, ...]
    mean_recency_days: float
    mean_frequency: float
    mean_monetary: float
    score_bins: int
    n_customers: int
    week: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RfmCutPoints:
        try:
            d = json.loads(text)
            for k in ("recency", "frequency", "monetary"):
                d[k] = tuple(float(x) for x in d[k])
            return cls(**d)
        except (ValueError, TypeError, KeyError) as exc:
            raise DataError(f"RFM cut points JSON is not valid: {exc}") from None


def _cuts(values: np.ndarray, bins: int) -> tuple[float, ...]:
    qs = np.arange(1, bins) / bins
    raw = np.quantile(values, qs, method="inverted_cdf")
    uniq = np.unique(raw)
    return tuple(float(c) for c in uniq[uniq < values.max()])


def fit_rfm_cut_points(
    features: pl.DataFrame, cfg: RfmConfig | None = None, week: Week | None = None
) -> RfmCutPoints:
    """Learn R, F, M quantile cut points and means on one week's `rfm_features`.

    In: a collected frame with recency_days, frequency_52w, monetary_52w. The population is
    `cfg.score_population` (default: buyers of the last 52 weeks). Tie policy: the
    `score_bins - 1` cut points are the inverted-CDF quantiles at 1/bins, 2/bins, ...; equal
    cut points are merged and a cut point at the largest value is dropped (it would leave an
    empty bin). So when 90% bought once F has a single cut point (1) and two scores: 1 for one
    order, 2 for more, and never a crash; every score 1..k+1 holds someone in the population
    it was fitted on.
    """
    cfg = cfg or RfmConfig()
    need = {"recency_days", "frequency_52w", "monetary_52w"}
    missing = need - set(features.columns)
    if missing:
        raise DataError(f"fit_rfm_cut_points: features lack columns {sorted(missing)}.")
    pop = features.filter(pl.col("recency_days").is_not_null())
    if cfg.score_population == "active_52w":
        pop = pop.filter(pl.col("frequency_52w") > 0)
    if pop.height == 0:
        where = f" as of {week.label}" if week else ""
        raise DataError(
            f"cannot fit RFM cut points{where}: no customer in population '{cfg.score_population}'."
        )
    r = pop["recency_days"].cast(pl.Float64).to_numpy()
    f = pop["frequency_52w"].cast(pl.Float64).to_numpy()
    m = pop["monetary_52w"].cast(pl.Float64).to_numpy()
    return RfmCutPoints(
        recency=_cuts(r, cfg.score_bins),
        frequency=_cuts(f, cfg.score_bins),
        monetary=_cuts(m, cfg.score_bins),
        mean_recency_days=float(r.mean()),
        mean_frequency=float(f.mean()),
        mean_monetary=float(m.mean()),
        score_bins=cfg.score_bins,
        n_customers=pop.height,
        week=week.label if week else None,
    )


def _score(col: str, cuts: tuple[float, ...], *, lower_is_better: bool) -> pl.Expr:
    x = pl.col(col).cast(pl.Float64)
    score = pl.lit(1, dtype=pl.Int8)
    for c in cuts:
        hit = (x <= c) if lower_is_better else (x > c)
        score = score + hit.cast(pl.Int8)
    return pl.when(x.is_not_null()).then(score).cast(pl.Int8)


def rfm_scores(features: pl.LazyFrame, cuts: RfmCutPoints) -> pl.LazyFrame:
    """Add r_score, f_score, m_score (Int8, 1..5), rfm_code ("555"), rfm_segment (Chinese,
    e.g. 重要价值客户) and rfm_segment_key (e.g. important_value).

    In: features with recency_days, frequency_52w, monetary_52w. R is scored on
    recency_days (fewer days score higher), F on frequency_52w, M on monetary_52w. The segment
    compares the raw values with the fitted means: R high = recency_days below the mean, F high
    and M high = above the mean. Rows with null recency get null scores and segment.
    """
    r = _score("recency_days", cuts.recency, lower_is_better=True)
    f = _score("frequency_52w", cuts.frequency, lower_is_better=False)
    m = _score("monetary_52w", cuts.monetary, lower_is_better=False)
    r_hi = pl.col("recency_days") < cuts.mean_recency_days
    f_hi = pl.col("frequency_52w") > cuts.mean_frequency
    m_hi = pl.col("monetary_52w") > cuts.mean_monetary
    key: pl.Expr = pl.lit(None, dtype=pl.String)
    name: pl.Expr = pl.lit(None, dtype=pl.String)
    for (rh, fh, mh), (k, zh) in RFM_SEGMENTS.items():
        cond = (r_hi == rh) & (f_hi == fh) & (m_hi == mh)
        key = pl.when(cond).then(pl.lit(k)).otherwise(key)
        name = pl.when(cond).then(pl.lit(zh)).otherwise(name)
    valid = pl.col("recency_days").is_not_null()
    return features.with_columns(
        r.alias("r_score"), f.alias("f_score"), m.alias("m_score")
    ).with_columns(
        pl.concat_str(
            pl.col("r_score").cast(pl.String),
            pl.col("f_score").cast(pl.String),
            pl.col("m_score").cast(pl.String),
        ).alias("rfm_code"),
        pl.when(valid).then(name).alias("rfm_segment"),
        pl.when(valid).then(key).alias("rfm_segment_key"),
    )
