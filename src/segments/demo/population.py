"""The demo's calendar and population: one row per person (numpy arrays), their planted truth, phones and ids."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import polars as pl

from segments.demo.constants import Constants
from segments.demo.vocabulary import (
    _EVENTS_MEAN,
    _MESSAGES_MEAN,
    _P_DOUYIN,
    _P_JD,
    _P_MEMBER,
    _P_MINIPROGRAM,
    _P_NEAR_STORE,
    _P_TAOBAO,
    _P_WECOM,
    _PHONE_PREFIXES,
    _VIRTUAL_PREFIXES,
    DORMANT,
    ENTHUSIAST,
    EXPERT,
    HUNTER,
    INTEREST_POPULARITY,
    INTERESTS,
    NEWCOMER,
    PERSONAS,
    ROOMS,
    SEASONS,
    TEST_PHONE,
)

# ---------------------------------------------------------------------------------------------
# Calendar: the days, their demand by interest and promotion, and sampling from it


class _Calendar:
    """`days` days from a Monday to the Sunday `last`; day weights for 11 interests x {normal, hunter}."""

    def __init__(self, last: date, weeks: int, consts: Constants) -> None:
        self.days = 7 * weeks
        self.first = last - timedelta(days=self.days - 1)
        self.start_s = calendar.timegm(self.first.timetuple())  # naive local wall clock as seconds
        d = np.datetime64(self.first, "D") + np.arange(self.days)
        month = d.astype("datetime64[M]").astype(np.int64) % 12 + 1
        md = month * 100 + (d - d.astype("datetime64[M]")).astype(np.int64) + 1
        window = np.zeros(self.days, dtype=bool)
        peak = np.zeros(self.days, dtype=bool)
        for _, (m1, d1), (m2, d2), peaks in consts.promotions:
            s, e = m1 * 100 + d1, m2 * 100 + d2
            window |= ((md >= s) & (md <= e)) if s <= e else ((md >= s) | (md <= e))
            peak |= np.isin(md, [m * 100 + dd for m, dd in peaks])
        self.promo = window
        normal = np.where(peak, 3.5, np.where(window, 1.6, 1.0))
        hunter = np.where(peak, 14.0, np.where(window, 4.0, consts.knobs["hunter_off_promo"]))
        trend = np.linspace(0.85, 1.15, self.days)  # the brand grows
        w = SEASONS[:, month - 1][:, None, :] * np.stack([normal, hunter])[None] * trend
        w = w.reshape(-1, self.days)
        cdf = np.concatenate([np.zeros((len(w), 1)), np.cumsum(w, axis=1)], axis=1)
        cdf /= cdf[:, -1:]
        # One sorted array for every row: row r is shifted by 2r so a single searchsorted serves all.
        self._cdf = (cdf + 2.0 * np.arange(len(w))[:, None]).ravel()

    def sample_days(
        self, rng: np.random.Generator, combo: np.ndarray, lo: np.ndarray, hi: np.ndarray
    ) -> np.ndarray:
        """A day in [lo, hi) per row, drawn from day-weight row `combo` (interest * 2 + is_hunter)."""
        base = combo.astype(np.int64) * (self.days + 1)
        a, b = self._cdf[base + lo], self._cdf[base + hi]
        t = a + rng.random(len(combo)) * (b - a)
        day = np.searchsorted(self._cdf, t, side="right") - 1 - base
        return np.clip(day, lo, hi - 1)

    def timestamps(self, seconds: np.ndarray) -> pl.Series:
        """Seconds since the first day's midnight as naive local `Datetime("us")`."""
        us = (self.start_s + seconds.astype(np.int64)) * 1_000_000
        return pl.Series(us, dtype=pl.Int64).cast(pl.Datetime("us"))


def _seconds(rng: np.random.Generator, day: np.ndarray, hour_weights: np.ndarray) -> np.ndarray:
    cum = np.cumsum(hour_weights) / hour_weights.sum()
    hour = np.minimum(np.searchsorted(cum, rng.random(len(day)), side="right"), 23)
    return day.astype(np.int64) * 86400 + hour * 3600 + rng.integers(0, 3600, len(day))


# ---------------------------------------------------------------------------------------------
# Population: one row per person, numpy arrays


@dataclass
class _Population:
    n: int
    persona: np.ndarray
    interests: np.ndarray  # (n, 3) interest indexes, primary first, -1 padded
    n_interests: np.ndarray
    p_primary: np.ndarray
    phone: np.ndarray  # int64, 11 digits
    station_phones: np.ndarray
    has_mp: np.ndarray
    has_wecom: np.ndarray
    has_member: np.ndarray
    near_store: np.ndarray
    n_taobao: np.ndarray
    n_jd: np.ndarray
    n_douyin: np.ndarray
    bridged: np.ndarray  # the evidence links this person's WeChat side to the commerce side
    station: np.ndarray  # parcel station index, -1 for none
    only_taobao: np.ndarray  # the planted two-account person
    ord_lo: np.ndarray
    ord_hi: np.ndarray
    n_orders: np.ndarray
    act_lo: np.ndarray
    act_hi: np.ndarray
    n_events: np.ndarray
    n_msgs: np.ndarray
    aov: np.ndarray
    member_no: np.ndarray
    store_no: np.ndarray
    room_ids: pl.Series  # WeCom roomid per ROOMS entry
    consts: Constants
    vocabulary: str


def _population(
    n: int,
    seed: int,
    cal: _Calendar,
    consts: Constants,
    vocabulary: str = "a",
    events_scale: float = 1.0,
    messages_scale: float = 1.0,
) -> _Population:
    rng = np.random.default_rng([seed, 0])
    knobs = consts.knobs
    shares = np.array(consts.persona_shares)
    persona = rng.choice(5, size=n, p=shares / shares.sum()).astype(np.int8)
    hunter = persona == HUNTER
    D = cal.days

    k = rng.choice([1, 2, 3], size=n, p=[0.45, 0.35, 0.20])
    k[hunter & (rng.random(n) < 0.45)] = 0  # many coupon hunters care about price, not gear
    keys = np.log(np.array(INTEREST_POPULARITY))[None, :] + rng.gumbel(size=(n, len(INTERESTS)))
    top = np.argsort(-keys, axis=1, kind="stable")[:, :3]
    interests = np.where(np.arange(3)[None, :] < k[:, None], top, -1).astype(np.int8)
    p_primary = np.where(k <= 1, 1.0, rng.uniform(0.58, 0.82, n))

    def flag(p: np.ndarray) -> np.ndarray:
        return rng.random(n) < p[persona]

    has_mp, has_wecom, has_member, near_store = (
        flag(_P_MINIPROGRAM),
        flag(_P_WECOM),
        flag(_P_MEMBER),
        flag(_P_NEAR_STORE),
    )
    # a second (hunters: third) account on the same platform
    acc = min(knobs["hunter_accounts"], 1.0)
    extra = np.where(hunter, acc, 0.05)
    n_taobao = flag(_P_TAOBAO) * (1 + rng.binomial(np.where(hunter, 2, 1), extra))
    n_jd = flag(_P_JD) * (1 + rng.binomial(1, np.where(hunter, acc * 0.9, 0.02)))
    n_douyin = flag(_P_DOUYIN) * (1 + rng.binomial(1, np.where(hunter, acc * 0.75, 0.0)))

    # Windows of activity (days) and order counts.
    joined = np.where(rng.random(n) < 0.55, 0, rng.integers(0, max(1, int(D * 0.7)), n))
    lapsed = np.where((rng.random(n) < 0.15) & (D > 260), D - rng.integers(60, 201, n), D)
    dormant_hi = D - 380 - rng.integers(0, 141, n) if D > 450 else np.full(n, max(1, D // 3))
    dormant_hi = np.maximum(dormant_hi, 1)
    newcomer_lo = np.maximum(D - rng.integers(7, 183, n), 0)
    ord_hi = np.select([persona == ENTHUSIAST, persona == DORMANT], [lapsed, dormant_hi], D)
    ord_lo = np.select(
        [persona == NEWCOMER, persona == DORMANT],
        [newcomer_lo, np.maximum(dormant_hi - rng.integers(60, 366, n), 0)],
        joined,
    )
    ord_lo = np.minimum(ord_lo, ord_hi - 1)
    years = (ord_hi - ord_lo) / 365.0
    rate = (
        np.select(
            [persona == ENTHUSIAST, persona == EXPERT, persona == HUNTER],
            [rng.uniform(2, 5, n), rng.uniform(5, 12, n), rng.uniform(4, 10, n)],
            0.0,
        )
        * knobs["order_rate"]
    )
    n_orders = np.select(
        [persona == NEWCOMER, persona == DORMANT],
        [rng.choice([0, 1, 2], size=n, p=[0.2, 0.5, 0.3]), 1 + rng.poisson(1.0, n)],
        np.maximum(rng.poisson(rate * years), 1),
    )
    has_mp |= n_orders == 0  # a prospect with no order still browses the mini-program
    has_channel = (n_taobao > 0) | (n_jd > 0) | (n_douyin > 0) | has_mp | near_store
    n_taobao = np.where((n_orders > 0) & ~has_channel, 1, n_taobao)

    aov_range = np.array(consts.aov_range)
    lo_aov, hi_aov = aov_range[persona, 0], aov_range[persona, 1]
    aov = np.exp(rng.uniform(np.log(lo_aov), np.log(hi_aov)))
    act_lo = np.maximum(ord_lo - rng.integers(0, 91, n), 0)
    act_hi = np.where(persona == DORMANT, np.minimum(ord_hi + rng.integers(1, 61, n), D), D)
    n_events = np.where(
        has_mp,
        np.maximum(
            rng.poisson(
                _EVENTS_MEAN[persona] * knobs["event_rate"] * events_scale * rng.gamma(2.0, 0.5, n)
            ),
            1,
        ),
        0,
    )
    n_msgs = np.where(
        has_wecom,
        rng.poisson(
            _MESSAGES_MEAN[persona]
            * knobs["message_rate"]
            * messages_scale
            * rng.gamma(0.6, 1 / 0.6, n)
        ),
        0,
    )

    # Parcel stations: 30+ online buyers each have some parcels sent to one station phone.
    n_stations = max(1, n // 5000)
    online = (n_taobao > 0) | (n_jd > 0) | (n_douyin > 0)
    eligible = np.flatnonzero((n_orders >= 2) & online & ~hunter)
    sizes = rng.integers(32, 49, n_stations)
    chosen = rng.permutation(eligible)[: sizes.sum()]
    station = np.full(n, -1, dtype=np.int32)
    station[chosen] = np.repeat(np.arange(n_stations), sizes)[: len(chosen)]
    # The planted true merge: one person with two taobao accounts sharing one phone.
    only_taobao = np.zeros(n, dtype=bool)
    planted = np.flatnonzero(
        (n_orders >= 2) & (n_taobao >= 1) & (station < 0) & ~hunter & (persona != DORMANT)
    )
    if len(planted):
        p = planted[rng.integers(len(planted))]
        n_taobao[p], only_taobao[p], n_orders[p] = 2, True, max(n_orders[p], 3)

    phones = _unique_phones(
        rng,
        n + n_stations,
        virtual=np.concatenate(
            [
                rng.random(n)
                < np.where(hunter, knobs["virtual_share"], knobs["virtual_share_others"]),
                np.zeros(n_stations, bool),
            ]
        ),
    )
    return _Population(
        n=n,
        persona=persona,
        interests=interests,
        n_interests=k,
        p_primary=p_primary,
        phone=phones[:n],
        station_phones=phones[n:],
        has_mp=has_mp,
        has_wecom=has_wecom,
        has_member=has_member,
        near_store=near_store,
        n_taobao=n_taobao.astype(np.int64),
        n_jd=n_jd.astype(np.int64),
        n_douyin=n_douyin.astype(np.int64),
        bridged=rng.random(n) < 0.955,
        station=station,
        only_taobao=only_taobao,
        ord_lo=ord_lo.astype(np.int64),
        ord_hi=ord_hi.astype(np.int64),
        n_orders=n_orders.astype(np.int64),
        act_lo=act_lo.astype(np.int64),
        act_hi=act_hi.astype(np.int64),
        n_events=n_events.astype(np.int64),
        n_msgs=n_msgs.astype(np.int64),
        aov=aov,
        member_no=1_000_000_000 + rng.permutation(n).astype(np.int64) * 7 + rng.integers(0, 7, n),
        store_no=rng.integers(1, 61, n),
        room_ids=_random_ids(rng, len(ROOMS), "wr", 28, _ALNUM),
        consts=consts,
        vocabulary=vocabulary,
    )


def _unique_phones(rng: np.random.Generator, n: int, virtual: np.ndarray) -> np.ndarray:
    """`n` distinct valid mobile numbers, none of them the test number."""
    prefix = np.where(
        virtual,
        _VIRTUAL_PREFIXES[rng.integers(0, len(_VIRTUAL_PREFIXES), n)],
        _PHONE_PREFIXES[rng.integers(0, len(_PHONE_PREFIXES), n)],
    )
    phone = prefix.astype(np.int64) * 100_000_000 + rng.integers(0, 100_000_000, n)
    while True:
        _, first = np.unique(phone, return_index=True)
        bad = np.ones(n, dtype=bool)
        bad[first] = False
        bad |= phone == TEST_PHONE
        if not bad.any():
            return phone
        phone[bad] = prefix[bad] * 100_000_000 + rng.integers(0, 100_000_000, int(bad.sum()))


def _persons_truth(pop: _Population, opted_out: np.ndarray) -> pl.DataFrame:
    names = pl.Series([*INTERESTS, None], dtype=pl.String)
    slots = [
        names.gather(np.where(pop.interests[:, j] >= 0, pop.interests[:, j], len(INTERESTS)))
        for j in range(3)
    ]
    return pl.DataFrame(
        {
            "person_id": _person_ids(np.arange(pop.n), pop.n),
            "persona": pl.Series(PERSONAS, dtype=pl.String).gather(pop.persona.astype(np.int64)),
            "primary_interest": slots[0],
            "interests": pl.DataFrame(slots, schema=["a", "b", "c"]).select(
                pl.concat_list("a", "b", "c").list.drop_nulls()
            )["a"],
            "is_coupon_hunter": pop.persona == HUNTER,
            "opted_out": opted_out,
        }
    )


def _person_ids(pid: np.ndarray, n: int) -> pl.Series:
    width = max(6, len(str(n)))
    digits = (pl.Series(pid, dtype=pl.Int64) + 1).cast(pl.String).str.zfill(width)
    return pl.select(pl.lit("P") + digits).to_series().alias("person_id")


# ---------------------------------------------------------------------------------------------
# Phones and ids

_ALNUM = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_B64 = _ALNUM + b"-_"
_HEX = b"0123456789abcdef"


def _random_ids(
    rng: np.random.Generator, n: int, prefix: str, length: int, alphabet: bytes
) -> pl.Series:
    codes = np.frombuffer(alphabet, dtype=np.uint8)[
        rng.integers(0, len(alphabet), size=(n, length))
    ]
    body = pl.Series(np.ascontiguousarray(codes).view(f"S{length}").ravel()).cast(pl.String)
    return pl.select(pl.lit(prefix) + body).to_series().alias("id")


def _typed_phone(digits: pl.Expr, style: pl.Expr) -> pl.Expr:
    """A phone as people type it: 13812345678, +86 138-1234-5678, 0086 13812345678, 86-..., 138 1234 5678."""
    a, b, c = digits.str.slice(0, 3), digits.str.slice(3, 4), digits.str.slice(7, 4)
    return (
        pl.when(style == 1)
        .then(pl.concat_str([pl.lit("+86 "), a, pl.lit("-"), b, pl.lit("-"), c]))
        .when(style == 2)
        .then(pl.lit("0086 ") + digits)
        .when(style == 3)
        .then(pl.lit("86-") + digits)
        .when(style == 4)
        .then(pl.concat_str([a, pl.lit(" "), b, pl.lit(" "), c]))
        .otherwise(digits)
    )


def _phone_styles(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice(5, size=n, p=[0.6, 0.12, 0.1, 0.1, 0.08]).astype(np.int8)
