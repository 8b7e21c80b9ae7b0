"""Held-out evaluation: the learned tags were tuned on demo seed 7 (3000 people, vocabulary a);
here they are measured on seeds no tuning saw, and on the second vocabulary (b) that no tuning
saw either, through `segments.evaluate` (the `segments eval` measures).

Targets (issue 24): clusters ARI >= 0.45 and >= the standardised KMeans baseline + 0.1; coupon
hunters precision >= 0.95 and recall >= 0.90; primary_interest precision >= 0.95 over everyone
assigned and coverage >= 0.85. A case that misses a target is xfail with the figure measured
(docs/evaluation.md has the figures of every seed measured)."""

from __future__ import annotations

import pytest

from segments import demo, pipeline
from segments.config import load_config
from segments.evaluate import evaluate

HELD_OUT = ((13, "a"), (17, "a"), (13, "b"), (19, "b"))
# (seed, vocabulary, family) -> the figures measured where a target is missed (strict xfail:
# when the case starts to pass, the mark must go). See docs/evaluation.md.
MISSES: dict[tuple[int, str, str], str] = {}


def _expect(request: pytest.FixtureRequest, family: str) -> None:
    seed, vocabulary = request.node.callspec.params["measured"]
    reason = MISSES.get((seed, vocabulary, family))
    if reason:
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True))


@pytest.fixture(
    scope="module", params=HELD_OUT, ids=[f"seed{s}-vocabulary-{v}" for s, v in HELD_OUT]
)
def measured(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    seed, vocabulary = request.param
    root = tmp_path_factory.mktemp(f"heldout{seed}{vocabulary}")
    demo.generate(root / "input", users=1500, seed=seed, vocabulary=vocabulary)
    pipeline.run(load_config(), root / "input", root / "out")
    metrics = evaluate(root / "out", root / "input" / "truth")
    return {"workspace": root / "out", **{(m.tag, m.metric): m for m in metrics}}


def test_clusters_beat_the_standardised_baseline(
    measured: dict, request: pytest.FixtureRequest
) -> None:
    _expect(request, "clusters")
    ari = measured[("cluster", "adjusted Rand index vs personas")]
    base = measured[("cluster", "ARI of standardised KMeans (baseline)")]
    assert ari.value >= 0.45
    assert ari.value >= base.value + 0.1


def test_coupon_hunters_hold_precision_and_recall(
    measured: dict, request: pytest.FixtureRequest
) -> None:
    _expect(request, "hunters")
    assert measured[("is_coupon_hunter", "precision")].value >= 0.95
    assert measured[("is_coupon_hunter", "coverage (recall)")].value >= 0.90


def test_primary_interest_abstains_but_covers(
    measured: dict, request: pytest.FixtureRequest
) -> None:
    _expect(request, "interest")
    assert measured[("primary_interest", "precision (everyone assigned)")].value >= 0.95
    assert measured[("primary_interest", "coverage (planted interest, any signal)")].value >= 0.85


def test_the_week_threshold_is_recorded_used_and_read_back(measured: dict) -> None:
    import polars as pl

    from segments.layout import Layout
    from segments.live import learned_from_week
    from segments.settings.promo import PromoConfig
    from segments.stages.promo import hunter_scores

    layout = Layout(measured["workspace"])
    week = layout.resolve_week(None)
    learned = learned_from_week(layout, week)
    threshold = learned.hunter_threshold
    assert threshold is not None and 0.2 <= threshold <= 0.6
    tags = pl.read_parquet(layout.tags(week))
    # the scales read from the brand's distribution are recorded, read back and are the ones
    # the week's scores were computed with
    assert learned.low_value_cny is not None and learned.low_value_cny > 0
    assert learned.hunter_caps is not None and learned.hunter_priors is not None
    assert learned.hunter_caps["discount_depth"] != PromoConfig().cap("discount_depth")
    assert 0 < learned.hunter_priors["promo_order_share"] < 1
    again = hunter_scores(
        tags.lazy(), PromoConfig(), learned.hunter_caps, priors=learned.hunter_priors
    ).collect()
    # (the tag table keeps scores and features to 6 decimals: the score's own rounding, 5e-7,
    # plus each feature's, 5e-7 x weight / cap summed over the signals, under 1.5e-6)
    assert (again["coupon_hunter_score"] - tags["coupon_hunter_score"]).abs().max() < 2e-6
    scored = tags.filter(pl.col("coupon_hunter_score").is_not_null())
    assert (scored["is_coupon_hunter"] == (scored["coupon_hunter_score"] >= threshold)).all()
    unflagged = tags.filter(~pl.col("is_coupon_hunter"))
    assert (unflagged["coupon_hunter_reasons"].list.len() == 0).all()
