"""Settings of the predicted-value stage (`[predict]`): BG/NBD and Gamma-Gamma."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PredictConfig(BaseModel):
    """Settings of the predicted-value stage (section `[predict]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit_days: int = Field(7, ge=1, description="days in one time unit of recency and T")
    optimizer: Literal["L-BFGS-B", "Nelder-Mead"] = "L-BFGS-B"
    max_iter: int = Field(5000, ge=10)
    min_customers: int = Field(
        20, ge=2, description="fewest customers (and repeat customers for Gamma-Gamma) to fit on"
    )
    fit_sample: int = Field(
        500_000,
        ge=1000,
        description="fit on at most this many customers, a fixed hash sample of one_id "
        "(4 parameters need no more; 2M customers take 30 s to fit, 500k about 8 s)",
    )
