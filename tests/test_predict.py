"""Tests of segments.stages.predict: CDNOW published parameters, formulas, a simulation oracle, the stage."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import polars_hash  # noqa: F401  (registers .nchash)
import pytest
from scipy.integrate import quad
from scipy.special import betaln, hyp2f1

from segments.errors import DataError
from segments.stages.predict import (
    BgNbdParams,
    GammaGammaParams,
    PredictConfig,
    bgnbd_log_likelihood,
    expected_purchases,
    expected_purchases_new,
    expected_spend,
    fit_bgnbd,
    fit_gamma_gamma,
    fit_predicted_value,
    p_alive,
    predicted_value,
    summary_data,
    summary_from_transactions,
)
from segments.weeks import Week

CDNOW = Path(__file__).parent / "data" / "CDNOW_sample.txt"
D = datetime


def cdnow_transactions() -> pl.DataFrame:
    """customer id, customer index, YYYYMMDD, CDs, dollars (whitespace separated)."""
    rows = [line.split() for line in CDNOW.read_text().splitlines() if line.strip()]
    return pl.DataFrame(
        {
            "one_id": [r[1] for r in rows],
            "day": [date(int(r[2][:4]), int(r[2][4:6]), int(r[2][6:])) for r in rows],
            "value": [float(r[4]) for r in rows],
        }
    )


@pytest.fixture(scope="module")
def cdnow_summary() -> pl.DataFrame:
    tx = cdnow_transactions()
    assert tx["one_id"].n_unique() == 2357
    # Calibration 1997-01-01..1997-09-30 (39 weeks); days aggregated, weeks as the unit.
    return summary_from_transactions(tx.lazy(), date(1997, 9, 30), unit_days=7).collect()


def test_cdnow_summary_matches_published_rows(cdnow_summary: pl.DataFrame) -> None:
    # Fader & Hardie's cdnow_customers_summary: ID 1 has x=2, t_x=30.43, T=38.86, zbar=22.35;
    # ID 2 x=1, t_x=1.71; ID 3 x=0, t_x=0.
    s = {r["one_id"]: r for r in cdnow_summary.iter_rows(named=True)}
    assert s["0001"]["frequency"] == 2
    assert s["0001"]["recency"] == pytest.approx(213 / 7)  # 1997-01-01 -> 1997-08-02
    assert s["0001"]["T"] == pytest.approx(272 / 7)  # 1997-01-01 -> 1997-09-30
    assert s["0001"]["monetary_value"] == pytest.approx((29.73 + 14.96) / 2)
    assert (s["0002"]["frequency"], round(s["0002"]["recency"], 2)) == (1, 1.71)
    assert (s["0003"]["frequency"], s["0003"]["recency"], s["0003"]["monetary_value"]) == (
        0,
        0.0,
        0.0,
    )
    # totals of the published summary: 2,457 repeat purchase days by 946 repeat buyers
    assert int(cdnow_summary["frequency"].sum()) == 2457
    assert (cdnow_summary["frequency"] > 0).sum() == 946


@pytest.mark.parametrize("method", ["L-BFGS-B", "Nelder-Mead"])
def test_cdnow_bgnbd_published_parameters(cdnow_summary: pl.DataFrame, method: str) -> None:
    s = cdnow_summary
    bg = fit_bgnbd(s["frequency"], s["recency"], s["T"], method=method)
    # Fader, Hardie & Lee (2005): r = 0.243, alpha = 4.414, a = 0.793, b = 2.426, LL = -9582.4
    for got, want in ((bg.r, 0.243), (bg.alpha, 4.414), (bg.a, 0.793), (bg.b, 2.426)):
        assert got == pytest.approx(want, rel=0.01)
    assert bg.log_likelihood == pytest.approx(-9582.4, abs=0.1)
    assert bg.n_customers == 2357


@pytest.mark.parametrize("method", ["L-BFGS-B", "Nelder-Mead"])
def test_cdnow_gamma_gamma_published_parameters(cdnow_summary: pl.DataFrame, method: str) -> None:
    s = cdnow_summary
    gg = fit_gamma_gamma(s["frequency"], s["monetary_value"], method=method)
    # Fader & Hardie, "The Gamma-Gamma model of monetary value": p = 6.25, q = 3.74, gamma = 15.44
    for got, want in ((gg.p, 6.25), (gg.q, 3.74), (gg.v, 15.44)):
        assert got == pytest.approx(want, rel=0.01)
    assert gg.n_customers == 946


def test_fit_predicted_value_on_cdnow(cdnow_summary: pl.DataFrame) -> None:
    bg, gg = fit_predicted_value(cdnow_summary, PredictConfig())
    assert bg.r == pytest.approx(0.243, rel=0.01) and gg.p == pytest.approx(6.25, rel=0.01)
    assert BgNbdParams.from_json(bg.to_json()) == bg
    assert GammaGammaParams.from_json(gg.to_json()) == gg
    with pytest.raises(DataError):
        BgNbdParams.from_json('{"r": 1}')


def test_the_fit_depends_on_the_summary_rows_alone(cdnow_summary: pl.DataFrame) -> None:
    # CDNOW's 2,357 customers under other one_ids and in another order fit the same numbers,
    # to the bit (a workspace whose one_ids history made fits what a cold build fits); every
    # customer twice is the same likelihood per customer, so the same fit too.
    base = fit_predicted_value(cdnow_summary, PredictConfig())
    relabelled = cdnow_summary.with_columns(
        pl.format("z{}", pl.int_range(pl.len())).alias("one_id")
    ).sample(fraction=1.0, shuffle=True, seed=3)
    assert fit_predicted_value(relabelled, PredictConfig()) == base
    doubled = pl.concat([cdnow_summary, cdnow_summary])
    bg, gg = fit_predicted_value(doubled, PredictConfig())
    assert (bg.r, bg.alpha, bg.a, bg.b) == (base[0].r, base[0].alpha, base[0].a, base[0].b)
    assert (gg.p, gg.q, gg.v) == (base[1].p, base[1].q, base[1].v)


# ---------------------------------------------------------------------------------------------
# Formulas

PARAMS = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)


def test_expected_purchases_matches_direct_formula() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 15, 200).astype(float)
    big_t = rng.uniform(1, 60, 200)
    t_x = np.where(x > 0, big_t * rng.random(200), 0.0)
    r, al, a, b = PARAMS.r, PARAMS.alpha, PARAMS.a, PARAMS.b
    for t in (1.0, 13.0, 52.0):
        direct = (
            (a + b + x - 1)
            / (a - 1)
            * (
                1
                - ((al + big_t) / (al + big_t + t)) ** (r + x)
                * hyp2f1(r + x, b + x, a + b + x - 1, t / (al + big_t + t))
            )
        )
        direct /= 1 + (x > 0) * a / np.maximum(b + x - 1, 1e-12) * ((al + big_t) / (al + t_x)) ** (
            r + x
        )
        np.testing.assert_allclose(expected_purchases(PARAMS, t, x, t_x, big_t), direct, rtol=1e-9)
    # a just-acquired customer (x = t_x = T = 0) expects the unconditional E[X(t)]
    assert expected_purchases(PARAMS, 39.0, [0.0], [0.0], [0.0])[0] == pytest.approx(
        expected_purchases_new(PARAMS, 39.0)
    )
    # large frequencies stay finite and grow with x (bought at T: no doubt the buyer is alive)
    big = expected_purchases(PARAMS, 52.0, [200.0, 400.0], [52.0, 52.0], [52.0, 52.0])
    assert np.all(np.isfinite(big)) and big[1] > big[0] > 100


def _expected_by_integration(params: BgNbdParams, t: float, x: float, t_x: float, big_t: float):
    """Oracle: P(alive) * E_p[(1 - (1 + p t / (alpha + T))^-(r + x)) / p], p ~ Beta(a, b + x),
    integrated numerically (given alive, lambda ~ Gamma(r + x, alpha + T))."""
    r, al, a, b = params.r, params.alpha, params.a, params.b
    big_a, u = r + x, t / (al + big_t)
    lb = betaln(a, b + x)

    def f(q: float) -> float:
        gain = -np.expm1(-big_a * np.log1p(q * u)) / q
        return gain * np.exp((a - 1) * np.log(q) + (b + x - 1) * np.log1p(-q) - lb)

    v, _ = quad(f, 0, 1, limit=500, epsabs=0, epsrel=1e-9)
    return v * p_alive(params, [x], [t_x], [big_t])[0]


@pytest.mark.parametrize("a", [0.3, 0.98, 0.9999, 1.0, 1 + 1e-7, 1.003, 2.5])
def test_expected_purchases_matches_integral(a: float) -> None:
    # a = 1 is 0/0 in the closed form: the interpolation must stay accurate around it
    for r, alpha, b in ((0.243, 4.414, 2.426), (2.0, 5.0, 20.0), (10.0, 0.5, 0.4)):
        params = BgNbdParams(r=r, alpha=alpha, a=a, b=b)
        for x, t_x, big_t in ((0, 0, 0), (1, 0.5, 1), (5, 40, 52), (30, 51, 52)):
            for t in (13.0, 52.0):
                want = _expected_by_integration(params, t, x, t_x, big_t)
                got = expected_purchases(params, t, [x], [t_x], [big_t])[0]
                assert got == pytest.approx(want, rel=1e-5), (r, alpha, b, x, t_x, big_t, t)


def test_p_alive_hand_values() -> None:
    # x = 0: alive for sure; otherwise 1 / (1 + a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))
    pa = p_alive(PARAMS, [0, 2, 2], [0, 30.43, 5.0], [38.86, 38.86, 38.86])
    assert pa[0] == 1.0
    for i, tx in ((1, 30.43), (2, 5.0)):
        want = 1 / (1 + 0.793 / (2.426 + 1) * ((4.414 + 38.86) / (4.414 + tx)) ** 2.243)
        assert pa[i] == pytest.approx(want)
    assert pa[1] > pa[2]  # a recent repeat buyer is more likely alive


def test_log_likelihood_matches_closed_form_for_x0() -> None:
    # x = 0: L = (alpha / (alpha + T))^r
    ll = bgnbd_log_likelihood(PARAMS, [0.0], [0.0], [20.0])
    assert ll[0] == pytest.approx(PARAMS.r * np.log(PARAMS.alpha / (PARAMS.alpha + 20.0)))


def test_expected_spend_shrinks_towards_population_mean() -> None:
    gg = GammaGammaParams(p=6.25, q=3.74, v=15.44)
    pop = 6.25 * 15.44 / 2.74
    out = expected_spend(gg, [0, 1, 50], [0.0, 100.0, 100.0])
    assert out[0] == pytest.approx(pop) == pytest.approx(gg.mean_order_value)
    assert pop < out[1] < out[2] < 100.0
    assert out[1] == pytest.approx(6.25 * (15.44 + 100.0) / (6.25 + 3.74 - 1))


def simulate_bgnbd(params: BgNbdParams, n: int, horizon: float, calib: float, seed: int):
    """Simulate BG/NBD customers acquired at time 0; returns calibration summary, holdout
    counts and whether each customer is alive at `calib`."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(params.r, 1 / params.alpha, n)
    p = rng.beta(params.a, params.b, n)
    t = np.zeros(n)
    alive = np.ones(n, bool)
    alive_at_calib = np.ones(n, bool)
    x = np.zeros(n)
    t_x = np.zeros(n)
    hold = np.zeros(n)
    active = np.ones(n, bool)
    while active.any():
        t = t + rng.exponential(1 / np.maximum(lam, 1e-12))
        active &= alive & (t < horizon)
        cal = active & (t <= calib)
        x += cal
        t_x = np.where(cal, t, t_x)
        hold += active & (t > calib)
        dies = active & (rng.random(n) < p)
        alive_at_calib &= ~(dies & (t <= calib))
        alive &= ~dies
    return x, t_x, np.full(n, calib), hold, alive_at_calib


def test_predictions_match_simulation() -> None:
    params = BgNbdParams(r=0.5, alpha=6.0, a=0.7, b=2.5)
    x, t_x, big_t, hold, alive = simulate_bgnbd(params, 40000, horizon=78.0, calib=52.0, seed=3)
    exp = expected_purchases(params, 26.0, x, t_x, big_t)
    assert exp.sum() == pytest.approx(hold.sum(), rel=0.03)
    # also within groups of calibration frequency
    for lo, hi in ((0, 0), (1, 2), (3, 1000)):
        m = (x >= lo) & (x <= hi)
        assert exp[m].sum() == pytest.approx(hold[m].sum(), rel=0.06)
    assert p_alive(params, x, t_x, big_t).sum() == pytest.approx(alive.sum(), rel=0.02)


@pytest.mark.slow
def test_fit_recovers_simulated_parameters() -> None:
    params = BgNbdParams(r=0.5, alpha=6.0, a=0.7, b=2.5)
    x, t_x, big_t, _, _ = simulate_bgnbd(params, 40000, horizon=52.0, calib=52.0, seed=4)
    fit = fit_bgnbd(x, t_x, big_t)
    for got, want in ((fit.r, 0.5), (fit.alpha, 6.0), (fit.a, 0.7), (fit.b, 2.5)):
        assert got == pytest.approx(want, rel=0.05)


def test_fit_errors() -> None:
    with pytest.raises(DataError, match="recency"):
        fit_bgnbd([1, 2], [3.0, 1.0], [2.0, 5.0])
    with pytest.raises(DataError, match="differ in length"):
        fit_bgnbd([1], [0.0, 1.0], [2.0, 5.0])
    with pytest.raises(DataError, match="need at least"):
        fit_bgnbd([1], [0.5], [2.0], min_customers=2)
    with pytest.raises(DataError, match="repeat purchases"):
        fit_gamma_gamma([0, 0, 1], [0.0, 0.0, 10.0])
    with pytest.raises(DataError, match="need at least"):
        fit_predicted_value(
            pl.DataFrame({"frequency": [1], "recency": [1.0], "T": [2.0], "monetary_value": [5.0]})
        )


# ---------------------------------------------------------------------------------------------
# Summary from orders and the stage

W = Week.parse("2026-W47")  # Sunday 2026-11-22

ORDERS = pl.DataFrame(
    [
        # a: two orders on one day are one purchase day; cancelled and refunded don't count
        ("o1", "a", D(2026, 1, 5, 9), 100.0, 0.0, "paid"),
        ("o2", "a", D(2026, 1, 5, 18), 50.0, 10.0, None),
        ("o3", "a", D(2026, 3, 2, 10), 200.0, 0.0, "paid"),
        ("o4", "a", D(2026, 6, 1, 10), 300.0, 0.0, "cancelled"),
        ("o5", "a", D(2026, 11, 22, 23, 59, 59), 80.0, 0.0, "paid"),
        ("o6", "a", D(2026, 11, 23, 0, 0, 0), 999.0, 0.0, "paid"),  # after W
        # b: one purchase on W's Sunday
        ("o7", "b", D(2026, 11, 22, 12), 60.0, 0.0, "paid"),
        ("o8", "b", D(2026, 11, 20, 12), 60.0, 60.0, "paid"),  # fully refunded
        # c: only a refunded order
        ("o9", "c", D(2026, 5, 1), 70.0, 70.0, "refunded"),
    ],
    schema={
        "order_id": pl.String,
        "one_id": pl.String,
        "paid_at": pl.Datetime("us"),
        "amount": pl.Float64,
        "refund": pl.Float64,
        "status": pl.String,
    },
    orient="row",
)


def test_summary_data_from_orders() -> None:
    s = summary_data(ORDERS.lazy(), W).collect().sort("one_id")
    assert s["one_id"].to_list() == ["a", "b"]
    a, b = s.row(0, named=True), s.row(1, named=True)
    first = date(2026, 1, 5)
    assert a["frequency"] == 2  # 01-05, 03-02, 11-22
    assert a["recency"] == pytest.approx((date(2026, 11, 22) - first).days / 7)
    assert a["T"] == pytest.approx((date(2026, 11, 22) - first).days / 7)
    assert a["monetary_value"] == pytest.approx((200.0 + 80.0) / 2)
    assert (b["frequency"], b["recency"], b["T"], b["monetary_value"]) == (0, 0.0, 0.0, 0.0)
    days = summary_data(ORDERS.lazy(), W, unit_days=1).collect().sort("one_id")
    assert days["T"][0] == (date(2026, 11, 22) - first).days


def test_predicted_value_stage() -> None:
    bg = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426, unit_days=7)
    gg = GammaGammaParams(p=6.25, q=3.74, v=15.44)
    lf = predicted_value(ORDERS.lazy(), W, bg, gg)
    assert isinstance(lf, pl.LazyFrame)
    out = lf.collect(engine="streaming").sort("one_id")
    assert out.columns == [
        "one_id",
        "frequency",
        "recency",
        "T",
        "monetary_value",
        "p_alive",
        "expected_purchases_13w",
        "expected_purchases_52w",
        "expected_order_value",
        "predicted_value_52w",
    ]
    x, tx, tt = (out[c].to_numpy() for c in ("frequency", "recency", "T"))
    np.testing.assert_allclose(out["p_alive"], p_alive(bg, x, tx, tt))
    np.testing.assert_allclose(
        out["expected_purchases_13w"], expected_purchases(bg, 13.0, x, tx, tt)
    )
    np.testing.assert_allclose(
        out["expected_purchases_52w"], expected_purchases(bg, 52.0, x, tx, tt)
    )
    np.testing.assert_allclose(
        out["predicted_value_52w"], out["expected_purchases_52w"] * out["expected_order_value"]
    )
    assert out["p_alive"][1] == 1.0  # b: no repeat purchase
    assert out["expected_order_value"][1] == pytest.approx(gg.mean_order_value)
    assert (out["expected_purchases_52w"] > out["expected_purchases_13w"]).all()
    # the unit is the params' unit: the same model in days predicts the same purchases
    bg_days = BgNbdParams(r=bg.r, alpha=bg.alpha * 7, a=bg.a, b=bg.b, unit_days=1)
    out_days = predicted_value(ORDERS.lazy(), W, bg_days, gg).collect().sort("one_id")
    np.testing.assert_allclose(
        out_days["expected_purchases_52w"], out["expected_purchases_52w"], rtol=1e-9
    )


def test_bgnbd_gradient_equals_finite_differences() -> None:
    """The per-distinct-frequency gradient (`_bgnbd_ll_grad`) is the derivative of the
    likelihood it returns, checked against central differences of `bgnbd_log_likelihood`."""
    from segments.stages.predict import _bgnbd_ll_grad, bgnbd_log_likelihood

    rng = np.random.default_rng(3)
    x = rng.integers(0, 6, 400).astype(float)
    t = rng.uniform(1, 80, 400)
    t_x = np.where(x > 0, rng.uniform(0, 1, 400) * t, 0.0)
    p = np.array([0.7, 3.1, 0.9, 2.2])
    ll, grad = _bgnbd_ll_grad(p, x, t_x, t)
    assert np.allclose(ll, bgnbd_log_likelihood(tuple(p), x, t_x, t), rtol=1e-12)
    for k in range(4):
        h = np.zeros(4)
        h[k] = 1e-6 * p[k]
        up = bgnbd_log_likelihood(tuple(p + h), x, t_x, t).sum()
        down = bgnbd_log_likelihood(tuple(p - h), x, t_x, t).sum()
        assert grad[k].sum() == pytest.approx((up - down) / (2 * h[k]), rel=1e-6)


def test_gamma_gamma_gradient_fit_equals_the_derivative_free_fit() -> None:
    """L-BFGS-B with the per-frequency analytic gradient lands where Nelder-Mead (no
    gradient) does, on spends drawn from the model itself."""
    rng = np.random.default_rng(11)
    x = rng.integers(1, 12, 3000).astype(float)
    nu = rng.gamma(4.0, 1 / 60.0, 3000)  # q = 4, gamma = 60
    m = rng.gamma(6.0 * x) / (nu * x)  # the mean of x spends, each Gamma(p = 6, nu)
    fast = fit_gamma_gamma(x, m)
    slow = fit_gamma_gamma(x, m, method="Nelder-Mead")
    for a, b in ((fast.p, slow.p), (fast.q, slow.q), (fast.v, slow.v)):
        assert a == pytest.approx(b, rel=1e-4)
    assert fast.log_likelihood == pytest.approx(slow.log_likelihood, rel=1e-9)
