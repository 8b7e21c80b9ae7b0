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
