"""The demo brand's constants, drawn per seed from wide ranges (issue 24).

A demo written with fixed constants lets an engine tuned on it learn the generator instead of
the brand: an order-value cut between the hunters' and the others' ranges, a threshold where
the hunter share puts it, a promotion calendar with the generator's dates. So every seed draws
its own brand: the table below is the whole list, each knob drawn uniformly from its range by
`draw(seed)` (a generator of its own, so the people drawn for a seed do not move when a range
does), and `generate` records the drawn values in `truth/constants.json` for `segments eval`
to report.

| knob | range | what it moves |
| --- | --- | --- |
| hunter_share | 0.06-0.16 | share of coupon hunters; the other personas' shares are their defaults x 0.7-1.4, rescaled |
| order_value | 0.5-2.0 | the brand's price level: every persona's order-value range x this |
| hunter_order_value | 0.6-1.6 | hunters' order-value range (default 30-200 CNY) x this, on top of order_value |
| hunter_discount | 0.2-0.45 | centre of a hunter's discount share of an order (drawn +- 0.1 around it) |
| other_discount | 0.07-0.18 | centre of anyone else's discount share (drawn +- 0.06 around it) |
| hunter_off_promo | 0.06-0.3 | hunters' order demand outside promotions, relative to an ordinary day of others |
| virtual_share | 0.3-0.8 | share of hunters whose phone is on a virtual-operator segment |
| virtual_share_others | 0.003-0.02 | the same for everyone else |
| hunter_accounts | 0.25-0.55 | chance of each extra taobao account a hunter holds (jd, douyin: x 0.9, x 0.75) |
| order_rate | 0.6-1.6 | orders per year of enthusiasts, experts and hunters x this |
| event_rate | 0.6-1.6 | mini-program events per person x this |
| message_rate | 0.5-1.6 | chat messages per person x this |
| promo_shift | -4..4 days | each promotion window (年货节, 618, 双11, 双12) and its peaks move by whole days |
| brand_sale | 0 or 1 | a 7-day sale of the brand's own on a random day, in no engine calendar |

`moves` multiplies named knobs after the draw (the robustness test moves each by +-50 %):
`draw(13, {"hunter_share": 1.5})`. A move is applied as given, even outside the range.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date, timedelta

import numpy as np

from segments.errors import ConfigError

# knob -> (low, high), drawn uniformly; promo_shift and brand_sale are drawn apart.
RANGES: dict[str, tuple[float, float]] = {
    "hunter_share": (0.06, 0.16),
    "order_value": (0.5, 2.0),
    "hunter_order_value": (0.6, 1.6),
    "hunter_discount": (0.2, 0.45),
    "other_discount": (0.07, 0.18),
    "hunter_off_promo": (0.06, 0.3),
    "virtual_share": (0.3, 0.8),
    "virtual_share_others": (0.003, 0.02),
    "hunter_accounts": (0.25, 0.55),
    "order_rate": (0.6, 1.6),
    "event_rate": (0.6, 1.6),
    "message_rate": (0.5, 1.6),
}
PROMO_SHIFT_DAYS = 4
# The personas' default shares (newcomer, enthusiast, expert, coupon_hunter, dormant) and
# order-value ranges in CNY: the centres the draws scale.
BASE_SHARES = (0.30, 0.25, 0.10, 0.10, 0.25)
BASE_AOV = ((150.0, 600.0), (300.0, 1200.0), (600.0, 3000.0), (30.0, 200.0), (150.0, 800.0))
# Promotions: name, first (month, day), last (month, day), peak days, before the shift.
BASE_PROMOTIONS = (
    ("年货节", (1, 5), (1, 25), ((1, 15),)),
    ("618", (6, 1), (6, 18), ((6, 1), (6, 18))),
    ("双11", (10, 20), (11, 11), ((10, 31), (11, 11))),
    ("双12", (12, 1), (12, 12), ((12, 12),)),
)

Promotion = tuple[str, tuple[int, int], tuple[int, int], tuple[tuple[int, int], ...]]


@dataclass(frozen=True)
class Constants:
    """One seed's brand: the drawn knobs and what they make."""

    knobs: dict[str, float]
    promo_shift_days: tuple[int, ...]
    brand_sale: bool
    persona_shares: tuple[float, ...]
    aov_range: tuple[tuple[float, float], ...]
    promotions: tuple[Promotion, ...]
    moves: dict[str, float]

    def to_json(self, vocabulary: str = "a") -> str:
        """The record `generate` writes to truth/constants.json (knobs rounded to 6 places)."""
        d = asdict(self)
        d["knobs"] = {k: round(v, 6) for k, v in self.knobs.items()}
        d["persona_shares"] = [round(s, 6) for s in self.persona_shares]
        d["aov_range"] = [[round(lo, 2), round(hi, 2)] for lo, hi in self.aov_range]
        d["vocabulary"] = vocabulary
        return json.dumps(d, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def _md(m: int, d: int, shift: int) -> tuple[int, int]:
    day = date(2001, m, d) + timedelta(days=shift)
    return day.month, day.day


def draw(seed: int, moves: dict[str, float] | None = None) -> Constants:
    """The constants of demo seed `seed`, with `moves` (knob -> factor) applied after the draw."""
    moves = dict(moves or {})
    unknown = sorted(set(moves) - set(RANGES))
    if unknown:
        raise ConfigError(
            f"demo-data: unknown constant(s) {', '.join(unknown)} "
            f"(known: {', '.join(RANGES)}). Got {unknown!r} instead."
        )
    rng = np.random.default_rng([seed, 2])
    knobs = {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in RANGES.items()}
    others = np.array(BASE_SHARES) * rng.uniform(0.7, 1.4, len(BASE_SHARES))
    shifts = rng.integers(-PROMO_SHIFT_DAYS, PROMO_SHIFT_DAYS + 1, len(BASE_PROMOTIONS))
    sale_day = int(rng.integers(0, 365 - 7))
    has_sale = bool(rng.random() < 0.5)
    for k, factor in moves.items():
        knobs[k] *= float(factor)
    hunter = min(max(knobs["hunter_share"], 0.0), 0.9)
    others[3] = 0.0
    shares = others / others.sum() * (1.0 - hunter)
    shares[3] = hunter
    level = knobs["order_value"]
    aov = [
        (lo * level * (knobs["hunter_order_value"] if p == 3 else 1.0),
         hi * level * (knobs["hunter_order_value"] if p == 3 else 1.0))
        for p, (lo, hi) in enumerate(BASE_AOV)
    ]  # fmt: skip
    promotions: list[Promotion] = [
        (name, _md(*a, int(s)), _md(*b, int(s)), tuple(_md(*p, int(s)) for p in peaks))
        for (name, a, b, peaks), s in zip(BASE_PROMOTIONS, shifts, strict=True)
    ]
    if has_sale:
        first = date(2001, 1, 1) + timedelta(days=sale_day)
        last = first + timedelta(days=6)
        promotions.append(
            ("品牌日", (first.month, first.day), (last.month, last.day), ((last.month, last.day),))
        )
    return Constants(
        knobs=knobs,
        promo_shift_days=tuple(int(s) for s in shifts),
        brand_sale=has_sale,
        persona_shares=tuple(float(s) for s in shares),
        aov_range=tuple(aov),
        promotions=tuple(promotions),
        moves=moves,
    )
