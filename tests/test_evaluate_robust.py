"""Robustness of the learned tags: each key constant of the demo generator moved by -50 % and
+50 % (`segments.demo.generate(moves=...)`) on a held-out seed, and the issue-24 targets
measured through `segments.evaluate` (the `segments eval` measures).

Targets: primary_interest precision >= 0.95 over everyone assigned and coverage >= 0.85;
coupon hunters precision >= 0.95 and recall >= 0.90; clusters ARI >= 0.45 and >= the
standardised KMeans baseline + 0.1. The engine was tuned on seed 7; this file uses seed 31,
2000 people. A case that misses a target is marked xfail with the figure measured (strict:
when it starts to pass, the mark must go); docs/evaluation.md explains the misses."""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

import pytest

from segments import demo, pipeline
from segments.config import load_config
from segments.evaluate import evaluate

SEED, USERS = 31, 2000
KNOBS = (
    "hunter_share",
    "hunter_discount",
    "other_discount",
    "order_value",
    "hunter_order_value",
    "virtual_share",
    "order_rate",
    "event_rate",
)
CASES = [(k, f) for k in KNOBS for f in (0.5, 1.5)]

# (knob, factor, family) -> the figures measured, for the cases that miss a target. Seed 31
# draws a hard brand for hunters (others' discounts near the top of their range, hunters
# buying outside promotions near the top of theirs, few virtual numbers): with no move its
# hunters read precision 0.978, recall 0.949. Two moves leave too little to separate: the
# hunters' discounts halved (their mode barely rises above its valley) and half the orders
# (hunters with no order in the year show only claims and sign-ins).
_H = "hunters precision / recall "
MISSES: dict[tuple[str, float, str], str] = {
    ("hunter_share", 0.5, "interest"): "interest precision 0.940 (coverage 0.892)",
    ("event_rate", 0.5, "interest"): "interest precision 0.947, coverage 0.865",
    ("hunter_discount", 0.5, "hunters"): _H + "0.938 / 0.831",
    ("order_rate", 0.5, "hunters"): _H + "0.946 / 0.814",
}


@functools.cache
def _measure(knob: str, factor: float) -> dict[tuple[str, str], float]:
    root = Path(tempfile.mkdtemp(prefix=f"robust-{knob}-{factor}-"))
    try:
        demo.generate(root / "input", users=USERS, seed=SEED, moves={knob: factor})
        pipeline.run(load_config(), root / "input", root / "out")
        return {(m.tag, m.metric): m.value for m in evaluate(root / "out", root / "input/truth")}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _cases(family: str) -> list:
    out = []
    for knob, factor in CASES:
        reason = MISSES.get((knob, factor, family))
        marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
        out.append(pytest.param(knob, factor, marks=marks, id=f"{knob}x{factor}"))
    return out


@pytest.mark.parametrize(("knob", "factor"), _cases("interest"))
def test_primary_interest_holds(knob: str, factor: float) -> None:
    m = _measure(knob, factor)
    assert m[("primary_interest", "precision (everyone assigned)")] >= 0.95
    assert m[("primary_interest", "coverage (planted interest, any signal)")] >= 0.85


@pytest.mark.parametrize(("knob", "factor"), _cases("hunters"))
def test_coupon_hunters_hold(knob: str, factor: float) -> None:
    m = _measure(knob, factor)
    assert m[("is_coupon_hunter", "precision")] >= 0.95
    assert m[("is_coupon_hunter", "coverage (recall)")] >= 0.90


@pytest.mark.parametrize(("knob", "factor"), _cases("clusters"))
def test_clusters_hold(knob: str, factor: float) -> None:
    m = _measure(knob, factor)
    ari = m[("cluster", "adjusted Rand index vs personas")]
    assert ari >= 0.45
    assert ari >= m[("cluster", "ARI of standardised KMeans (baseline)")] + 0.1
