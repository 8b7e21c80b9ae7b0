"""Predicted customer value: BG/NBD purchases and Gamma-Gamma order value, by maximum likelihood."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import date
from typing import Any, Literal

import numpy as np
import polars as pl
import polars_hash  # noqa: F401  (registers .nchash)
from scipy.special import betaln, digamma, gammaln, hyp2f1
from threadpoolctl import threadpool_limits

from segments.errors import DataError, StageError
from segments.exprs import div
from segments.settings.predict import PredictConfig
from segments.stages.rfm import counted_orders
from segments.weeks import Week

ArrayLike = np.ndarray | pl.Series | list[float]

# Below this distance of a from 1, expected_purchases interpolates in a (see there).
_A_NEAR_ONE = 0.01


class _Params:
    """Fitted parameters as JSON, saved beside the week they were fitted for."""

    _what = "parameters"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)  # type: ignore[call-overload]

    @classmethod
    def from_json(cls, text: str) -> Any:
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError) as exc:
            raise DataError(f"{cls._what} JSON is not valid: {exc}") from None


@dataclass(frozen=True)
class BgNbdParams(_Params):
    """BG/NBD (Fader, Hardie & Lee 2005): purchase rate ~ Gamma(r, alpha), dropout ~ Beta(a, b).

    `alpha` is in the time unit of the summary it was fitted on (`unit_days`).
    """

    r: float
    alpha: float
    a: float
    b: float
    unit_days: int = 7
    log_likelihood: float | None = None
    n_customers: int | None = None
    _what = "BG/NBD parameters"


@dataclass(frozen=True)
class GammaGammaParams(_Params):
    """Gamma-Gamma (Fader & Hardie 2013): order value ~ Gamma(p, nu), nu ~ Gamma(q, v)."""

    p: float
    q: float
    v: float
    log_likelihood: float | None = None
    n_customers: int | None = None
    _what = "Gamma-Gamma parameters"

    @property
    def mean_order_value(self) -> float:
        """The population mean order value p v / (q - 1) (infinite when q <= 1)."""
        return self.p * self.v / (self.q - 1) if self.q > 1 else float("inf")


# ---------------------------------------------------------------------------------------------
# Summary data


def observed_units(first_day: pl.Expr, observation_end: date, unit_days: int = 7) -> pl.Expr:
    """T of the summary: days from the first purchase day to `observation_end` / unit_days (a
    live table moves a person whose orders did not change with it: `build.aging`)."""
    return div((pl.lit(observation_end) - first_day).dt.total_days(), unit_days)


def summary_from_transactions(
    transactions: pl.LazyFrame, observation_end: date, unit_days: int = 7
) -> pl.LazyFrame:
    """Per-customer (frequency, recency, T, monetary_value), the lifetimes convention.

    In: one_id, day (Date), value (Float64), one row per transaction; rows after
    `observation_end` (inclusive last day) are ignored. Transactions are summed per day, a
    purchase period being one day. Out: one_id, frequency (Int64: distinct purchase days
    minus 1, the repeat purchases), recency (days from the first to the last purchase day /
    unit_days), T (days from the first purchase day to observation_end / unit_days),
    monetary_value (mean value of the repeat purchase days; 0.0 without repeat purchase).
    """
    daily = (
        transactions.filter(pl.col("day") <= observation_end)
        .group_by("one_id", "day")
        .agg(pl.col("value").sum())
    )
    return (
        daily.group_by("one_id")
        .agg(
            (pl.len() - 1).cast(pl.Int64).alias("frequency"),
            pl.col("day").min().alias("_first"),
            pl.col("day").max().alias("_last"),
            pl.col("value").sum().alias("_total"),
            pl.col("value").sort_by("day").first().alias("_first_value"),
        )
        .select(
            "one_id",
            "frequency",
            div((pl.col("_last") - pl.col("_first")).dt.total_days(), unit_days).alias("recency"),
            observed_units(pl.col("_first"), observation_end, unit_days).alias("T"),
            pl.when(pl.col("frequency") > 0)
            .then((pl.col("_total") - pl.col("_first_value")) / pl.col("frequency"))
            .otherwise(0.0)
            .alias("monetary_value"),
        )
    )


def summary_data(orders_lf: pl.LazyFrame, week: Week, unit_days: int = 7) -> pl.LazyFrame:
    """The BG/NBD and Gamma-Gamma summary of the counted orders as of `week`.

    In: canonical orders with one_id. Counted orders (see `segments.stages.rfm.counted_orders`)
    paid before W.end are the transactions, valued amount - refund; the observation ends on
    W.sunday (inclusive, so `T * unit_days` minus `recency * unit_days` is the contract's
    recency_days). Out: as `summary_from_transactions`.
    """
    # Values in whole cents: integer sums are exact whatever order the rows arrive in, so the
    # fit (and every prediction) is the same from run to run.
    tx = counted_orders(orders_lf, week).select(
        "one_id", "day", (pl.col("kept") * 100).round(0).cast(pl.Int64).alias("value")
    )
    return summary_from_transactions(tx, week.last_day, unit_days).with_columns(
        div(pl.col("monetary_value"), 100).alias("monetary_value")
    )


# ---------------------------------------------------------------------------------------------
# BG/NBD


def _wsum(w: np.ndarray, values: np.ndarray) -> float:
    """sum(w * values) without BLAS: `np.dot` hands a long vector to BLAS threads, which on a
    busy two-core machine (scipy's and numpy's thread pools side by side) took 20 ms a call
    instead of 0.03; a pairwise sum is as exact and the same in every run."""
    return float(np.sum(w * values))


def _arr(x: ArrayLike) -> np.ndarray:
    return np.asarray(x.to_numpy() if isinstance(x, pl.Series) else x, dtype=np.float64)


def bgnbd_log_likelihood(
    params: BgNbdParams | tuple[float, float, float, float],
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
) -> np.ndarray:
    """Per-customer BG/NBD log-likelihood (Fader, Hardie & Lee 2005, eq. 6)."""
    r, alpha, a, b = (
        (params.r, params.alpha, params.a, params.b) if isinstance(params, BgNbdParams) else params
    )
    x, t_x, t = _arr(frequency), _arr(recency), _arr(T)
    rx = r + x
    head = gammaln(rx) - gammaln(r) + r * np.log(alpha)
    term1 = betaln(a, b + x) - betaln(a, b) - rx * np.log(alpha + t)
    # The second term exists only for x > 0; guard b + x - 1 > 0 there.
    xpos = x > 0
    term2 = np.where(
        xpos,
        betaln(a + 1, np.where(xpos, b + x - 1, 1.0)) - betaln(a, b) - rx * np.log(alpha + t_x),
        -np.inf,
    )
    return head + np.logaddexp(term1, term2)


def _bgnbd_ll_grad(
    p: np.ndarray,
    x: np.ndarray,
    t_x: np.ndarray,
    t: np.ndarray,
    distinct: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The per-row BG/NBD log-likelihood and its gradient in (r, alpha, a, b) (four rows).

    ll = gammaln(r+x) - gammaln(r) + r log(alpha) + log(e^A + e^B), with
    A = B(a, b+x) - B(a, b) - (r+x) log(alpha+T) and, for x > 0,
    B = B(a+1, b+x-1) - B(a, b) - (r+x) log(alpha+t_x) (B = log Beta); the derivatives of
    log Beta are differences of digammas.

    The gamma and digamma terms depend on the frequency alone, which takes few values: they are
    computed once per distinct frequency (`distinct`: the values and each row's index into
    them, from `np.unique(x, return_inverse=True)`) and gathered, so a row costs two logs and
    two exponentials."""
    r, alpha, a, b = (float(v) for v in p)
    ux, inv = distinct if distinct is not None else np.unique(x, return_inverse=True)
    upos = ux > 0
    ubx1 = np.where(upos, ux + b - 1, 1.0)
    lbab, dg_ab = betaln(a, b), digamma(a + b)
    dg_abx = digamma(a + b + ux)
    per_x = {
        "head": gammaln(r + ux) - gammaln(r),
        "beta_a": betaln(a, b + ux) - lbab,
        "beta_b": np.where(upos, betaln(a + 1, ubx1) - lbab, -np.inf),
        "d_r": digamma(r + ux) - digamma(r),
        "d_a_a": dg_ab - dg_abx,
        "d_a_b": np.where(upos, digamma(a + 1) - dg_abx - digamma(a) + dg_ab, 0.0),
        "d_b_a": digamma(b + ux) - dg_abx - digamma(b) + dg_ab,
        "d_b_b": np.where(upos, digamma(ubx1) - dg_abx - digamma(b) + dg_ab, 0.0),
    }
    g = {k: v[inv] for k, v in per_x.items()}
    xpos = x > 0
    rx = r + x
    log_t, log_tx = np.log(alpha + t), np.log(alpha + t_x)
    term_a = g["beta_a"] - rx * log_t
    term_b = np.where(xpos, g["beta_b"] - rx * log_tx, -np.inf)
    top = np.logaddexp(term_a, term_b)
    ll = g["head"] + r * np.log(alpha) + top
    wa, wb = np.exp(term_a - top), np.exp(term_b - top)  # wb is 0 where x = 0
    d_r = g["d_r"] + np.log(alpha) - wa * log_t - wb * np.where(xpos, log_tx, 0.0)
    d_alpha = r / alpha - wa * rx / (alpha + t) - wb * rx / (alpha + t_x)
    d_a = wa * g["d_a_a"] + wb * g["d_a_b"]
    d_b = wa * g["d_b_a"] + wb * g["d_b_b"]
    return ll, (d_r, d_alpha, d_a, d_b)


def _check_summary(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> tuple[np.ndarray, ...]:
    x, t_x, t = _arr(frequency), _arr(recency), _arr(T)
    if not (x.shape == t_x.shape == t.shape):
        raise DataError("BG/NBD: frequency, recency and T differ in length.")
    bad = (
        ~np.isfinite(x) | ~np.isfinite(t_x) | ~np.isfinite(t)
        | (x < 0) | (t_x < 0) | (t_x > t + 1e-9) | (x != np.round(x))
    )  # fmt: skip
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"BG/NBD: summary row {i} is invalid (frequency={x[i]}, recency={t_x[i]}, T={t[i]}):"
            " need a whole frequency >= 0 and 0 <= recency <= T."
        )
    return x, t_x, t


def _fit(
    nll: Callable[[np.ndarray], float],
    x0: np.ndarray,
    method: str,
    max_iter: int,
    what: str,
    nll_grad: Callable[[np.ndarray], tuple[float, np.ndarray]] | None = None,
) -> np.ndarray:
    # One BLAS thread: the optimiser's steps are tiny vectors, and BLAS threads waiting for a
    # busy core made each step cost milliseconds (`_wsum`).
    with threadpool_limits(limits=1, user_api="blas"):
        return _minimize(nll, x0, method, max_iter, what, nll_grad)


def _minimize(
    nll: Callable[[np.ndarray], float],
    x0: np.ndarray,
    method: str,
    max_iter: int,
    what: str,
    nll_grad: Callable[[np.ndarray], tuple[float, np.ndarray]] | None,
) -> np.ndarray:
    from scipy.optimize import minimize  # fits only: a live table evaluates, never fits

    opts = {"maxiter": max_iter}
    if method == "Nelder-Mead":
        opts.update(xatol=1e-8, fatol=1e-10, maxfev=max_iter * 4)
        res = minimize(nll, x0, method=method, options=opts)
    else:
        opts.update(ftol=1e-14, gtol=1e-9)
        # with the analytic gradient, one likelihood pass per step instead of five
        res = (
            minimize(nll_grad, x0, method=method, jac=True, options=opts)
            if nll_grad is not None
            else minimize(nll, x0, method=method, options=opts)
        )
    if not np.all(np.isfinite(res.x)) or not np.isfinite(res.fun):
        raise StageError(f"predict: {what} fit did not converge ({res.message}).")
    return res.x


def fit_bgnbd(
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    *,
    unit_days: int = 7,
    method: Literal["L-BFGS-B", "Nelder-Mead"] = "L-BFGS-B",
    max_iter: int = 5000,
    min_customers: int = 2,
) -> BgNbdParams:
    """Maximum-likelihood BG/NBD parameters from per-customer (frequency, recency, T).

    Optimises the log-parameters from (0, 0, 0, 0); identical summary rows are weighted, so
    cost grows with distinct rows, not customers. Raises DataError on invalid or too few
    rows and StageError when the optimiser fails.
    """
    x, t_x, t = _check_summary(frequency, recency, T)
    if x.size < min_customers:
        raise DataError(f"BG/NBD: {x.size} customers, need at least {min_customers} to fit.")
    rows, counts = np.unique(np.column_stack([x, t_x, t]), axis=0, return_counts=True)
    ux, ut_x, ut = rows[:, 0], rows[:, 1], rows[:, 2]
    w = counts.astype(np.float64)
    n = float(w.sum())

    def nll(logp: np.ndarray) -> float:
        p = np.exp(np.clip(logp, -30, 30))
        ll = bgnbd_log_likelihood(tuple(p), ux, ut_x, ut)
        val = -_wsum(w, ll) / n
        return val if np.isfinite(val) else 1e300

    distinct = np.unique(ux, return_inverse=True)

    def nll_grad(logp: np.ndarray) -> tuple[float, np.ndarray]:
        p = np.exp(np.clip(logp, -30, 30))
        ll, grad = _bgnbd_ll_grad(p, ux, ut_x, ut, distinct)
        val = -_wsum(w, ll) / n
        if not np.isfinite(val):
            return 1e300, np.zeros(4)
        return val, -np.array([_wsum(w, g) for g in grad]) * p / n  # d/dlog p = p d/dp

    best = _fit(nll, np.zeros(4), method, max_iter, "BG/NBD", nll_grad)
    r, alpha, a, b = (float(v) for v in np.exp(best))
    return BgNbdParams(r, alpha, a, b, unit_days, -nll(best) * n, int(n))


def p_alive(
    params: BgNbdParams, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> np.ndarray:
    """P(customer still active at T | x, t_x, T); 1 for customers without repeat purchase."""
    x, t_x, t = _arr(frequency), _arr(recency), _arr(T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    xpos = x > 0
    log_ratio = (
        np.log(a)
        - np.log(np.where(xpos, b + x - 1, 1.0))
        + (r + x) * (np.log(alpha + t) - np.log(alpha + t_x))
    )
    return np.where(xpos, 1.0 / (1.0 + np.exp(np.minimum(log_ratio, 700.0))), 1.0)


def expected_purchases(
    params: BgNbdParams, t: float, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> np.ndarray:
    """E[purchases in (T, T + t] | x, t_x, T] (Fader, Hardie & Lee 2005, eq. 10), `t` in units.

    The hypergeometric factor is taken through the Pfaff transformation,
    ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; t/(alpha+T+t))
    = 2F1(r+x, a-1; a+b+x-1; -t/(alpha+T)), which stays finite for large x. The formula is
    0/0 at a = 1 and scipy's 2F1 loses accuracy within about 1e-4 of it, so for
    |a - 1| < 0.01 the value is the cubic through a = 1 -/+ 0.01, 0.02 (smooth in a).
    """
    x, t_x, big_t = _arr(frequency), _arr(recency), _arr(T)
    a = params.a
    if abs(a - 1) < _A_NEAR_ONE:
        nodes = 1 + _A_NEAR_ONE * np.array([-2.0, -1.0, 1.0, 2.0])
        values = [expected_purchases(replace(params, a=float(n)), t, x, t_x, big_t) for n in nodes]
        out = np.zeros_like(values[0])
        for i, (ni, vi) in enumerate(zip(nodes, values, strict=True)):
            weight = np.prod([(a - nj) / (ni - nj) for j, nj in enumerate(nodes) if j != i])
            out += weight * vi
        return out
    r, alpha, b = params.r, params.alpha, params.b
    c = a + b + x - 1
    f = hyp2f1(r + x, a - 1, c, -t / (alpha + big_t))
    numer = c / (a - 1) * (1 - f)
    return numer * p_alive(params, x, t_x, big_t)


def expected_purchases_new(params: BgNbdParams, t: float) -> float:
    """E[X(t)] for a customer just acquired (unconditional, FHL 2005 eq. 9)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    return float(
        (a + b - 1)
        / (a - 1)
        * (1 - (alpha / (alpha + t)) ** r * hyp2f1(r, b, a + b - 1, t / (alpha + t)))
    )


# ---------------------------------------------------------------------------------------------
# Gamma-Gamma


def gamma_gamma_log_likelihood(
    params: GammaGammaParams | tuple[float, float, float],
    frequency: ArrayLike,
    monetary: ArrayLike,
) -> np.ndarray:
    """Per-customer Gamma-Gamma log-likelihood of the mean repeat value `monetary` over
    `frequency` > 0 repeat purchases (the density of zbar)."""
    p, q, v = (params.p, params.q, params.v) if isinstance(params, GammaGammaParams) else params
    x, m = _arr(frequency), _arr(monetary)
    px = p * x
    return (
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * np.log(v)
        + (px - 1) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(v + x * m)
    )


Q_FLOOR = 1.5


def fit_gamma_gamma(
    frequency: ArrayLike,
    monetary: ArrayLike,
    *,
    method: Literal["L-BFGS-B", "Nelder-Mead"] = "L-BFGS-B",
    max_iter: int = 5000,
    min_customers: int = 2,
) -> GammaGammaParams:
    """Maximum-likelihood Gamma-Gamma parameters on customers with frequency > 0 and
    monetary > 0 (the others are ignored). Raises DataError when too few remain."""
    x, m = _arr(frequency), _arr(monetary)
    if x.shape != m.shape:
        raise DataError("Gamma-Gamma: frequency and monetary differ in length.")
    keep = (x > 0) & (m > 0) & np.isfinite(m)
    x, m = x[keep], m[keep]
    if x.size < min_customers:
        raise DataError(
            f"Gamma-Gamma: {x.size} customers with repeat purchases, need at least {min_customers}."
        )
    # distinct (x, m) rows with their counts, in sorted order: the same sums whatever the
    # order of the customers
    rows, counts = np.unique(np.column_stack([x, m]), axis=0, return_counts=True)
    x, m, w = rows[:, 0], rows[:, 1], counts.astype(np.float64)
    n = float(w.sum())

    # q is fitted as Q_FLOOR + exp(theta). The prior mean spend p v / (q - 1) exists only for
    # q > 1; near 1 (heavy-tailed or bimodal spend, e.g. coupon hunters beside experts) it
    # explodes and the optimum sits on a flat ridge where the last bits of the input decide
    # the answer. A floor of 1.5 never binds on typical data (CDNOW: q = 3.74).
    def unpack(theta: np.ndarray) -> tuple[float, float, float]:
        e = np.exp(np.clip(theta, -30, 30))
        return float(e[0]), Q_FLOOR + float(e[1]), float(e[2])

    def nll(theta: np.ndarray) -> float:
        val = -_wsum(w, gamma_gamma_log_likelihood(unpack(theta), x, m)) / n
        return val if np.isfinite(val) else 1e300

    # The gamma and digamma terms depend on the frequency alone (few distinct values): they are
    # summed per distinct frequency; a row costs one log and one division per step.
    log_m = np.log(m)
    ux, inv = np.unique(x, return_inverse=True)
    w_x = np.bincount(inv, weights=w, minlength=ux.size)  # the weight of each frequency
    wx = w * x
    s_wx_log_m, s_w_log_m = _wsum(wx, log_m), _wsum(w, log_m)
    s_x_log_x = _wsum(w_x * ux, np.log(ux))

    def nll_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        p, q, v = unpack(theta)
        pxu = p * ux
        vxm = v + x * m
        log_vxm, inv_vxm = np.log(vxm), 1.0 / vxm
        s_l, s_xl = _wsum(w, log_vxm), _wsum(wx, log_vxm)
        s_r, s_xr = _wsum(w, inv_vxm), _wsum(wx, inv_vxm)
        total = (
            _wsum(w_x, gammaln(pxu + q) - gammaln(pxu))
            + n * (q * np.log(v) - gammaln(q))
            + p * (s_x_log_x + s_wx_log_m) - s_w_log_m
            - (p * s_xl + q * s_l)
        )  # fmt: skip
        val = -total / n
        if not np.isfinite(val):
            return 1e300, np.zeros(3)
        dg = digamma(pxu + q)
        d_p = _wsum(w_x * ux, dg - digamma(pxu)) + s_x_log_x + s_wx_log_m - s_xl
        d_q = _wsum(w_x, dg) - n * digamma(q) + n * np.log(v) - s_l
        d_v = n * q / v - p * s_xr - q * s_r
        e = np.exp(np.clip(theta, -30, 30))
        grad = -np.array([p * d_p, e[1] * d_q, v * d_v]) / n
        return val, grad

    # Start at the method-of-moments scale: v so that p v / (q - 1) is the mean value.
    x0 = np.array([0.0, np.log(2.0), np.log(max(float(np.dot(w, m)) / n, 1e-9))])
    best = _fit(nll, x0, method, max_iter, "Gamma-Gamma", nll_grad)
    p, q, v = unpack(best)
    return GammaGammaParams(p, q, v, -nll(best) * n, int(n))


def expected_spend(
    params: GammaGammaParams, frequency: ArrayLike, monetary: ArrayLike
) -> np.ndarray:
    """E[order value | x, zbar] = p (v + x zbar) / (p x + q - 1): a weighted mean of the
    population mean and the customer's own mean; the population mean when x = 0."""
    x, m = _arr(frequency), _arr(monetary)
    p, q, v = params.p, params.q, params.v
    m = np.where(x > 0, m, 0.0)
    return p * (v + x * m) / (p * x + q - 1)


# ---------------------------------------------------------------------------------------------
# Stage


def fit_predicted_value(
    summary: pl.DataFrame, cfg: PredictConfig | None = None
) -> tuple[BgNbdParams, GammaGammaParams]:
    """Fit both models on a collected `summary_data` frame (frequency, recency, T,
    monetary_value) of every customer. The pipeline collects the summary, fits, saves the
    params beside the week.

    Both likelihoods are sums over customers of a function of their summary row, so each fit
    runs over the distinct rows with their counts: the cost grows with distinct rows, and the
    result depends on the rows alone, not on their order or on who the customers are (a
    workspace whose one_ids history made, and a cold build, fit the same numbers)."""
    cfg = cfg or PredictConfig()
    bg = fit_bgnbd(
        summary["frequency"],
        summary["recency"],
        summary["T"],
        unit_days=cfg.unit_days,
        method=cfg.optimizer,
        max_iter=cfg.max_iter,
        min_customers=cfg.min_customers,
    )
    gg = fit_gamma_gamma(
        summary["frequency"],
        summary["monetary_value"],
        method=cfg.optimizer,
        max_iter=cfg.max_iter,
        min_customers=cfg.min_customers,
    )
    return bg, gg


def _numpy_expr(fn: Callable[..., np.ndarray], cols: tuple[str, ...]) -> pl.Expr:
    def run(s: pl.Series) -> pl.Series:
        args = [s.struct.field(c).cast(pl.Float64).to_numpy() for c in cols]
        return pl.Series(fn(*args), dtype=pl.Float64)

    return pl.struct(cols).map_batches(run, return_dtype=pl.Float64, is_elementwise=True)


def predicted_value(
    orders_lf: pl.LazyFrame,
    week: Week,
    bgnbd: BgNbdParams,
    gamma_gamma: GammaGammaParams,
) -> pl.LazyFrame:
    """Predicted purchases and value as of `week` from fitted parameters (no collect).

    In: canonical orders with one_id; params from `fit_predicted_value`. Out: one row per
    one_id with a counted order before W.end: frequency, recency, T, monetary_value (the
    summary, in units of `bgnbd.unit_days`), p_alive, expected_purchases_13w and
    expected_purchases_52w (purchase days in the next 13 / 52 weeks), expected_order_value
    (Gamma-Gamma, CNY per purchase day), predicted_value_52w (their product, undiscounted).
    """
    return predictions(summary_data(orders_lf, week, unit_days=bgnbd.unit_days), bgnbd, gamma_gamma)


def predictions(
    summary: pl.LazyFrame, bgnbd: BgNbdParams, gamma_gamma: GammaGammaParams
) -> pl.LazyFrame:
    """`predicted_value`'s columns from a `summary_data` frame (frequency, recency, T,
    monetary_value in units of `bgnbd.unit_days`): what the tag build uses, as pass 1 has
    already summarised every buyer."""
    unit = bgnbd.unit_days
    cols = ("frequency", "recency", "T")

    def horizon(weeks: int) -> pl.Expr:
        t = weeks * 7 / unit
        return _numpy_expr(lambda x, tx, tt: expected_purchases(bgnbd, t, x, tx, tt), cols)

    return summary.with_columns(
        _numpy_expr(lambda x, tx, tt: p_alive(bgnbd, x, tx, tt), cols).alias("p_alive"),
        horizon(13).alias("expected_purchases_13w"),
        horizon(52).alias("expected_purchases_52w"),
        _numpy_expr(
            lambda x, m: expected_spend(gamma_gamma, x, m), ("frequency", "monetary_value")
        ).alias("expected_order_value"),
    ).with_columns(
        (pl.col("expected_purchases_52w") * pl.col("expected_order_value")).alias(
            "predicted_value_52w"
        )
    )
