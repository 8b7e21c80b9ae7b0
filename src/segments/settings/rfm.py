"""Settings of the RFM, lifecycle and AIPL stages (`[rfm]`)."""

from __future__ import annotations

from itertools import pairwise
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RfmConfig(BaseModel):
    """Settings of the RFM, lifecycle and AIPL stages (section `[rfm]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Lifecycle, in weeks (a window of n weeks ends at W.end, so "within n weeks" means
    # recency_days < 7 * n). Light-outdoor gear is bought a few times a year: a quarter without
    # a purchase is normal, half a year is a warning, a year is gone.
    new_weeks: int = Field(4, ge=1, description="first counted order within this many weeks: new")
    active_weeks: int = Field(
        13, ge=1, description="a counted order within this many weeks: active"
    )
    at_risk_weeks: int = Field(26, ge=1, description="last order active_weeks..at_risk_weeks ago")
    lapsed_weeks: int = Field(
        52, ge=1, description="last order at_risk..lapsed ago; older: churned"
    )

    # Scores.
    score_bins: int = Field(5, ge=2, le=9, description="quantile bins of R, F and M (single digit)")
    score_population: Literal["active_52w", "all"] = Field(
        "active_52w",
        description="who the cut points and means are learned on: buyers of the last 52 weeks, "
        "or everyone with a counted order",
    )

    # High value, as the business defines it (the data contract's rule).
    high_value_min_orders: int = Field(3, ge=1)
    high_value_min_aov: float = Field(800.0, ge=0)

    # Value tier on monetary_52w (CNY): label i for cuts[i-1] <= monetary_52w < cuts[i];
    # `value_tier_none` when nothing was kept in the 52 weeks.
    value_tier_cuts: tuple[float, ...] = (1000.0, 3000.0, 8000.0)
    value_tier_labels: tuple[str, ...] = ("low", "mid", "high", "top")
    value_tier_none: str = "none"

    # AIPL.
    aipl_awareness_events: tuple[str, ...] = ("view", "live_view")
    aipl_awareness_weeks: int | None = Field(
        None, ge=1, description="awareness window in weeks; None: any time before W.end"
    )
    aipl_interest_events: tuple[str, ...] = ("search", "favorite", "add_cart", "share")
    aipl_interest_weeks: int = Field(4, ge=1)
    aipl_loyalty_min_orders_52w: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _check(self) -> RfmConfig:
        if not (self.new_weeks <= self.active_weeks < self.at_risk_weeks < self.lapsed_weeks):
            raise ValueError(
                "lifecycle weeks must satisfy new_weeks <= active_weeks < at_risk_weeks < lapsed_weeks"
            )
        cuts = self.value_tier_cuts
        if any(c <= 0 for c in cuts) or any(b <= a for a, b in pairwise(cuts)):
            raise ValueError("value_tier_cuts must be positive and strictly increasing")
        if len(self.value_tier_labels) != len(cuts) + 1:
            raise ValueError("value_tier_labels must have one label more than value_tier_cuts")
        return self
