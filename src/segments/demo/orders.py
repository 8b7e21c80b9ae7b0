"""The demo's orders: every order of a block of people, split into the online CSV (with dirty rows) and the store and mini-program Parquet."""

from __future__ import annotations

import numpy as np
import polars as pl

from segments.demo.population import _phone_styles, _seconds, _typed_phone
from segments.demo.tables import (
    _B_DOUYIN,
    _B_JD,
    _B_MEMBER,
    _B_OPENID,
    _B_PHONE,
    _B_TAOBAO,
    _B_UNIONID,
    _BLOCK_TYPE,
    _Chunk,
    _pick_category,
    _pick_interest,
    _text_timestamps,
)
from segments.demo.vocabulary import (
    _CAT_INTEREST,
    _CHANNEL_WEIGHTS,
    _ORDER_CHANNELS,
    _ORDER_HOURS,
    _PHONE_ON_ORDER,
    CATEGORIES,
    DIRTY_KINDS,
    HUNTER,
    INVALID_PHONE,
    PLACEHOLDER_IDS,
    TEST_PHONE,
)


def _orders(c: _Chunk) -> pl.DataFrame:
    """Every order of the chunk, typed, with `_pid`, `_buyer_pid`, `_phone_pid` (-1: not a person's id)."""
    pop, rng = c.pop, c.rng
    cnt = pop.n_orders[c.lo : c.hi]
    loc, g, rank = c.rows(cnt)
    k = len(loc)
    persona = pop.persona[g]
    hunter = persona == HUNTER

    # Channel: the person's accounts decide where they can buy; preferences vary per person.
    sl = slice(c.lo, c.hi)
    tb, jd, dy = pop.n_taobao[sl] > 0, pop.n_jd[sl] > 0, pop.n_douyin[sl] > 0
    off = (pop.station[sl] >= 0) | pop.only_taobao[sl]
    avail = np.stack(
        [
            tb,
            tb,
            jd & ~pop.only_taobao[sl],
            dy & ~pop.only_taobao[sl],
            pop.has_mp[sl] & ~off,
            pop.near_store[sl] & ~off,
        ],
        axis=1,
    )
    cum = np.cumsum(
        _CHANNEL_WEIGHTS[pop.persona[sl]] * avail * rng.gamma(1.0, 1.0, (c.m, 6)), axis=1
    )
    u = rng.random(k) * cum[loc, -1]
    ch = np.minimum((u[:, None] >= cum[loc]).sum(axis=1), 5)

    interest = _pick_interest(rng, pop, g)
    cat = _pick_category(rng, interest, 0.04)
    day = c.cal.sample_days(rng, _CAT_INTEREST[cat] * 2 + hunter, pop.ord_lo[g], pop.ord_hi[g])
    seconds = _seconds(rng, day, _ORDER_HOURS)

    # Buyer identifier.
    n_acc = np.select(
        [ch <= 1, ch == 2, ch == 3], [pop.n_taobao[g], pop.n_jd[g], pop.n_douyin[g]], 1
    )
    acct = rank % np.maximum(n_acc, 1)
    member_buyer = pop.has_member[g] & (rng.random(k) < 0.9)
    block = np.select(
        [ch <= 1, ch == 2, ch == 3, ch == 4, ch == 5],
        [
            _B_TAOBAO + acct,
            _B_JD + acct,
            _B_DOUYIN + acct,
            np.where(rng.random(k) < 0.25, _B_UNIONID, _B_OPENID),
            np.where(member_buyer, _B_MEMBER, _B_PHONE),
        ],
    )
    # The cashier typed the test number; placeholders where the export lost the buyer id.
    buyer_test = (block == _B_PHONE) & (rng.random(k) < 0.02) & (cnt[loc] >= 2)
    placeholder = (rng.random(k) < 0.003) & (cnt[loc] >= 2) & (block != _B_PHONE)

    # Receiver phone: on some orders; always on the first order of each account (that is the
    # link), except mini-program orders of people whose WeChat side stays unlinked.
    has_phone = rng.random(k) < _PHONE_ON_ORDER[ch]
    first = np.zeros(k, dtype=bool)
    first[np.unique(loc * 16 + block, return_index=True)[1]] = True
    has_phone |= first
    has_phone &= (ch != 4) | pop.bridged[g]
    has_phone = np.where(block == _B_PHONE, rng.random(k) < 0.4, has_phone)
    to_station = (pop.station[g] >= 0) & (ch <= 3) & ((rank == cnt[loc] - 1) | ~first)
    to_test = has_phone & ~to_station & (rng.random(k) < 0.002)
    phone_num = np.select(
        [to_station, to_test, has_phone],
        [pop.station_phones[np.maximum(pop.station[g], 0)], TEST_PHONE, pop.phone[g]],
        0,
    )
    own_phone = has_phone & ~to_station & ~to_test

    # Money and status.
    price = np.maximum(np.round(pop.aov[g] * rng.lognormal(0.0, 0.3, k) / 10) * 10 - 1, 9.0)
    quantity = rng.choice([1, 2, 3], size=k, p=[0.86, 0.10, 0.04])
    gross = price * quantity
    p_discount = np.where(hunter, 0.9, np.where(c.cal.promo[day], 0.6, 0.2))
    knobs = pop.consts.knobs
    h, o = knobs["hunter_discount"], knobs["other_discount"]
    frac = np.where(
        hunter, rng.uniform(h - 0.1, h + 0.1, k), rng.uniform(max(o - 0.06, 0.01), o + 0.06, k)
    ).clip(0.0, 0.95)
    discount = np.where(rng.random(k) < p_discount, np.round(gross * frac), 0.0)
    amount = np.round(gross - discount, 2)
    u = rng.random(k)
    p_cancel, p_refund = np.where(hunter, 0.08, 0.025), np.where(hunter, 0.18, 0.04)
    status = np.select([u < p_cancel, u < p_cancel + p_refund], [2, 1], 0)
    partial = (status == 0) & (rng.random(k) < np.where(hunter, 0.12, 0.04))
    refund = np.where(
        status == 1, amount, np.where(partial, np.round(amount * rng.uniform(0.1, 0.6, k), 2), 0.0)
    )

    serial = c.counters.orders + np.arange(k, dtype=np.int64)
    c.counters.orders += k
    frame = pl.DataFrame(
        {
            "_pid": g.astype(np.int64),
            "_seq": serial,
            "_ch": ch.astype(np.int8),
            "_n": cnt[loc],
            "_buyer_pid": np.where(placeholder | buyer_test, -1, g).astype(np.int64),
            "_phone_pid": np.where(own_phone | ((block == _B_PHONE) & ~buyer_test), g, -1).astype(
                np.int64
            ),
            "_buyer_num": np.where(buyer_test, TEST_PHONE, pop.phone[g]),
            "_buyer_style": _phone_styles(rng, k),
            "_phone_num": phone_num,
            "_phone_style": _phone_styles(rng, k),
            "_rand": rng.integers(0, 100, k),
            "_store": pop.store_no[g],
            "_placeholder": rng.integers(0, len(PLACEHOLDER_IDS), k),
            "_is_placeholder": placeholder,
            "source": pl.Series(_ORDER_CHANNELS, dtype=pl.String).gather(ch),
            "buyer_id_type": pl.Series(_BLOCK_TYPE).gather(block),
            "buyer_id": c.id_of(np.where(block == _B_PHONE, 0, block), loc),
            "paid_at": c.cal.timestamps(seconds),
            "amount": amount,
            "discount": discount,
            "refund": refund,
            "status": pl.Series(["paid", "refunded", "cancelled"]).gather(status),
            "category": pl.Series(CATEGORIES).gather(cat),
            "sku": _sku(rng, cat),
            "quantity": quantity.astype(np.int64),
        }
    )
    seq = pl.col("_seq")
    order_id = (
        pl.when(pl.col("_ch") <= 1)
        .then(
            (pl.lit(3_000_000_000_000_000_000, pl.Int64) + seq * 100 + pl.col("_rand")).cast(
                pl.String
            )
        )
        .when(pl.col("_ch") == 2)
        .then((pl.lit(290_000_000_000, pl.Int64) + seq * 10 + pl.col("_rand") % 10).cast(pl.String))
        .when(pl.col("_ch") == 3)
        .then(
            (pl.lit(6_900_000_000_000_000_000, pl.Int64) + seq * 100 + pl.col("_rand")).cast(
                pl.String
            )
        )
        .when(pl.col("_ch") == 4)
        .then(
            pl.concat_str(
                [
                    pl.lit("MP"),
                    pl.col("paid_at").dt.strftime("%Y%m%d"),
                    seq.cast(pl.String).str.zfill(9),
                ]
            )
        )
        .otherwise(
            pl.concat_str(
                [
                    pl.lit("S"),
                    pl.col("_store").cast(pl.String).str.zfill(3),
                    pl.lit("-"),
                    seq.cast(pl.String).str.zfill(9),
                ]
            )
        )
    )
    buyer_phone = _typed_phone(pl.col("_buyer_num").cast(pl.String), pl.col("_buyer_style"))
    placeholder_text = pl.Series(PLACEHOLDER_IDS).gather(frame["_placeholder"].to_numpy())
    return frame.with_columns(
        order_id=order_id,
        buyer_id=pl.when(pl.col("_is_placeholder"))
        .then(placeholder_text)
        .when(pl.col("buyer_id_type") == "phone")
        .then(buyer_phone)
        .otherwise(pl.col("buyer_id")),
        phone=pl.when(pl.col("_phone_num") > 0).then(
            _typed_phone(pl.col("_phone_num").cast(pl.String), pl.col("_phone_style"))
        ),
    ).sort("paid_at", "_seq")


_ORDER_COLUMNS = (
    "order_id",
    "source",
    "buyer_id_type",
    "buyer_id",
    "phone",
    "paid_at",
    "amount",
    "discount",
    "refund",
    "status",
    "category",
    "sku",
    "quantity",
)
_TRACE = ("_pid", "_buyer_pid", "_phone_pid")


def _sku(rng: np.random.Generator, cat: np.ndarray) -> pl.Series:
    style = rng.integers(1, 41, len(cat))
    variant = rng.integers(1, 5, len(cat))
    return pl.select(
        pl.concat_str(
            [
                pl.lit("SKU"),
                pl.Series(cat).cast(pl.String).str.zfill(2),
                pl.Series(style).cast(pl.String).str.zfill(3),
                pl.lit("-"),
                pl.Series(variant).cast(pl.String).str.zfill(2),
            ]
        )
    ).to_series()


def _split_orders(c: _Chunk, orders: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Online orders to CSV (text timestamps, dirty rows), store and mini-program orders to Parquet."""
    rng = c.rng
    parquet = orders.filter(pl.col("_ch") >= 4).select(*_ORDER_COLUMNS, *_TRACE)
    csv = orders.filter(pl.col("_ch") <= 3)
    n = csv.height
    iso = rng.random(n) < 0.03
    no_status = rng.random(n) < 0.01
    # Dirty rows: ~0.5%, every kind at least once, only from buyers with other orders.
    dirty = np.full(n, -1, dtype=np.int64)
    candidates = np.flatnonzero((csv["_n"].to_numpy() >= 2) & (csv["_buyer_pid"].to_numpy() >= 0))
    n_dirty = min(len(candidates), max(len(DIRTY_KINDS), round(0.005 * n)))
    picked = np.sort(rng.permutation(candidates)[:n_dirty])
    dirty[picked] = rng.permutation(n_dirty) % len(DIRTY_KINDS)
    kind = pl.col("_dirty")
    rejected = kind.is_between(0, 4)
    csv = csv.with_columns(_dirty=dirty, _iso=iso, _no_status=no_status).with_columns(
        order_id=pl.when(kind == 4).then(None).otherwise(pl.col("order_id")),
        paid_at=pl.when(kind == 3)
        .then(pl.lit("yesterday"))
        .otherwise(_text_timestamps(pl.col("paid_at"), pl.col("_iso"))),
        amount=pl.when(kind == 0).then(-pl.col("amount")).otherwise(pl.col("amount")),
        refund=pl.when(kind == 1).then(pl.col("amount") + 50).otherwise(pl.col("refund")),
        status=pl.when(kind == 2)
        .then(pl.lit("shipped?"))
        .when(pl.col("_no_status"))
        .then(None)
        .otherwise(pl.col("status")),
        phone=pl.when(kind == 5)
        .then(pl.lit(INVALID_PHONE))
        .when(rejected)
        .then(None)
        .otherwise(pl.col("phone")),
        _buyer_pid=pl.when(rejected).then(-1).otherwise(pl.col("_buyer_pid")),
        _phone_pid=pl.when(rejected | (kind == 5)).then(-1).otherwise(pl.col("_phone_pid")),
    )
    # The duplicate: the same (source, order_id) again at the end, now refunded (last write wins).
    again = csv.filter(kind == 6).with_columns(status=pl.lit("refunded"), refund=pl.col("amount"))
    csv = pl.concat([csv, again]).select(*_ORDER_COLUMNS, *_TRACE)
    return csv, parquet
