"""The demo's chunked table writers: a block of people with its ids, and its events, messages, identities, consent and truth rows."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from segments.contract import sha256_hex
from segments.demo.population import (
    _ALNUM,
    _B64,
    _HEX,
    _Calendar,
    _person_ids,
    _phone_styles,
    _Population,
    _random_ids,
    _seconds,
    _typed_phone,
)
from segments.demo.texts import _chat_key, _texts
from segments.demo.vocabulary import (
    _ANSWER,
    _CAT_COUNT,
    _CAT_INTEREST,
    _CAT_START,
    _CHAT_HOURS,
    _CHECKIN,
    _COUPON,
    _DEAL,
    _DEAL_ROOM,
    _EVENT_HOURS,
    _EVENT_MIX,
    _MESSAGE_MIX,
    _Q,
    _ROOM_OF_INTEREST,
    _SEARCH,
    _SHARE,
    CATEGORIES,
    EVENT_TYPES,
    HUNTER,
    INTERESTS,
    PLACEHOLDER_IDS,
    TEST_PHONE,
    words,
)
from segments.io import atomic_path

# ---------------------------------------------------------------------------------------------
# One block of people: their identifiers and every table row they produce

# Identifier blocks in a chunk's flat id Series: index = block * m + local person.
_B_TAOBAO, _B_JD, _B_DOUYIN = 0, 3, 5  # three taobao, two jd, two douyin accounts at most
_B_OPENID, _B_UNIONID, _B_WECOM, _B_MEMBER = 7, 8, 9, 10
_B_PHONE = 11  # not in the Series: the person's phone, typed per row
_BLOCK_TYPE = np.array(
    ["taobao_ouid"] * 3
    + ["jd_pin"] * 2
    + ["douyin_openid"] * 2
    + ["openid", "unionid", "wecom_external_userid", "member_id", "phone"]
)


@dataclass
class _Counters:
    """Running row numbers across chunks, so order and message ids stay unique."""

    orders: int = 0
    events: int = 0
    messages: int = 0


@dataclass
class _Chunk:
    pop: _Population
    cal: _Calendar
    lo: int
    hi: int
    rng: np.random.Generator
    counters: _Counters
    first: bool
    ids: pl.Series = field(init=False)

    def __post_init__(self) -> None:
        m, rng = self.m, self.rng
        member = pl.lit("M") + pl.Series(
            self.pop.member_no[self.lo : self.hi], dtype=pl.Int64
        ).cast(pl.String)
        self.ids = pl.concat(
            [
                _random_ids(rng, 3 * m, "AA", 22, _ALNUM),
                _random_ids(rng, 2 * m, "jd_", 13, _HEX),
                _random_ids(rng, 2 * m, "_000", 28, _ALNUM),
                _random_ids(rng, m, "oA", 26, _B64),
                _random_ids(rng, m, "o", 27, _B64),
                _random_ids(rng, m, "wm", 22, _ALNUM),
                pl.select(member).to_series().alias("id"),
            ]
        )

    @property
    def m(self) -> int:
        return self.hi - self.lo

    def rows(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(local person, global person, rank within person) for `counts[i]` rows per person."""
        loc = np.repeat(np.arange(self.m), counts)
        starts = np.cumsum(counts) - counts
        return loc, loc + self.lo, np.arange(len(loc)) - starts[loc]

    def id_of(self, block: np.ndarray, loc: np.ndarray) -> pl.Series:
        return self.ids.gather(np.asarray(block, dtype=np.int64) * self.m + loc)


@dataclass
class _Tables:
    orders_csv: pl.DataFrame
    orders_parquet: pl.DataFrame
    events: pl.DataFrame
    messages: pl.DataFrame
    identities: pl.DataFrame
    consent: pl.DataFrame
    identifiers: pl.DataFrame
    opted_out: np.ndarray


def _pick_interest(rng: np.random.Generator, pop: _Population, g: np.ndarray) -> np.ndarray:
    """The interest behind each signal: the primary with probability p_primary, else a secondary."""
    k = pop.n_interests[g]
    second = 1 + (rng.random(len(g)) * np.maximum(k - 1, 1)).astype(np.int64)
    slot = np.where((rng.random(len(g)) < pop.p_primary[g]) | (k <= 1), 0, second)
    return pop.interests[g, slot].astype(np.int64)


def _pick_category(rng: np.random.Generator, interest: np.ndarray, noise: float) -> np.ndarray:
    """A category of `interest`; with probability `noise` (or no interest) any category."""
    i = np.maximum(interest, 0)
    own = _CAT_START[i] + (rng.random(len(i)) * _CAT_COUNT[i]).astype(np.int64)
    anything = rng.integers(0, len(CATEGORIES), len(i))
    return np.where((interest < 0) | (rng.random(len(i)) < noise), anything, own)


def _text_timestamps(ts: pl.Expr, iso: pl.Expr) -> pl.Expr:
    """`YYYY-MM-DD HH:MM:SS`, or ISO-8601 with the +08:00 offset where `iso`."""
    return (
        pl.when(iso)
        .then(ts.dt.strftime("%Y-%m-%dT%H:%M:%S+08:00"))
        .otherwise(ts.dt.strftime("%Y-%m-%d %H:%M:%S"))
    )


def _events(c: _Chunk) -> pl.DataFrame:
    pop, rng = c.pop, c.rng
    loc, g, _ = c.rows(pop.n_events[c.lo : c.hi])
    k = len(loc)
    persona = pop.persona[g]
    cum = np.cumsum(_EVENT_MIX, axis=1)
    event = np.minimum((rng.random(k)[:, None] >= cum[persona]).sum(axis=1), len(EVENT_TYPES) - 1)
    interest = _pick_interest(rng, pop, g)
    cat = _pick_category(rng, interest, 0.08)
    day = c.cal.sample_days(
        rng, _CAT_INTEREST[cat] * 2 + (persona == HUNTER), pop.act_lo[g], pop.act_hi[g]
    )
    seconds = _seconds(rng, day, _EVENT_HOURS)
    no_cat = (event == _CHECKIN) | ((event == _COUPON) & (rng.random(k) < 0.5))
    no_item = no_cat | (event == _SEARCH)
    placeholder = rng.random(k) < 0.004
    block = np.where(rng.random(k) < 0.15, _B_UNIONID, _B_OPENID)
    serial = c.counters.events + np.arange(k, dtype=np.int64)
    c.counters.events += k
    style = rng.integers(1, 41, k)
    frame = pl.DataFrame(
        {
            "_pid": np.where(placeholder, -1, g).astype(np.int64),
            "_seq": serial,
            "user_id_type": pl.Series(_BLOCK_TYPE).gather(block),
            "user_id": c.id_of(block, loc),
            "ts": c.cal.timestamps(seconds),
            "event": pl.Series(EVENT_TYPES).gather(event),
            "category": pl.Series(CATEGORIES).gather(cat),
            "_cat": cat,
            "_style": style,
            "_no_cat": no_cat,
            "_no_item": no_item,
            "_placeholder": placeholder,
        }
    )
    search = np.flatnonzero(event == _SEARCH)
    query = (
        pl.repeat(None, k, dtype=pl.String, eager=True)
        .alias("query")
        .scatter(search, _texts(pop.vocabulary)["query"].pick(rng, cat[search]))
    )
    placeholder_text = pl.Series(PLACEHOLDER_IDS).gather(rng.integers(0, len(PLACEHOLDER_IDS), k))
    frame = frame.with_columns(
        user_id=pl.when(pl.col("_placeholder")).then(placeholder_text).otherwise(pl.col("user_id")),
        category=pl.when(pl.col("_no_cat")).then(None).otherwise(pl.col("category")),
        item_id=pl.when(pl.col("_no_item"))
        .then(None)
        .otherwise(
            pl.concat_str(
                [
                    pl.lit("I"),
                    pl.col("_cat").cast(pl.String).str.zfill(2),
                    pl.col("_style").cast(pl.String).str.zfill(3),
                ]
            )
        ),
        query=query,
        event_id=pl.lit("ev") + pl.col("_seq").cast(pl.String).str.zfill(10),
    )
    # SDK retries: a few events arrive twice with the same event_id.
    frame = pl.concat([frame, frame.filter(pl.Series(rng.random(k) < 0.002))])
    return frame.sort("ts", "_seq").select(
        "user_id_type", "user_id", "ts", "event", "category", "item_id", "query", "event_id", "_pid"
    )


def _messages(c: _Chunk) -> pl.DataFrame:
    """WeCom archive rows (msgid, action, from, tolist, roomid, msgtime, msgtype, text) + `_pid`."""
    pop, rng = c.pop, c.rng
    loc, g, _ = c.rows(pop.n_msgs[c.lo : c.hi])
    k = len(loc)
    persona = pop.persona[g]
    hunter = persona == HUNTER
    cum = np.cumsum(_MESSAGE_MIX, axis=1)
    kind = np.minimum((rng.random(k)[:, None] >= cum[persona]).sum(axis=1), 6)
    interest = _pick_interest(rng, pop, g)
    topical = (kind == _Q) | (kind == _SHARE) | (kind == _ANSWER)
    interest = np.where((interest < 0) & topical, rng.integers(0, len(INTERESTS), k), interest)
    primary = pop.interests[g, 0].astype(np.int64)
    room_interest = np.where(topical, interest, primary)
    room = np.where(
        (kind == _DEAL) | (hunter & ~topical) | (room_interest < 0),
        _DEAL_ROOM,
        _ROOM_OF_INTEREST[np.maximum(room_interest, 0)],
    )
    day = c.cal.sample_days(rng, np.maximum(interest, 0) * 2 + hunter, pop.act_lo[g], pop.act_hi[g])
    seconds = _seconds(rng, day, _CHAT_HOURS)
    chat = _texts(pop.vocabulary)["chat"]
    w = words(pop.vocabulary)
    nick = pl.Series(w.nick_a).gather(rng.integers(0, len(w.nick_a), c.m)) + pl.Series(
        w.nick_b
    ).gather(rng.integers(0, len(w.nick_b), c.m))
    frame = pl.DataFrame(
        {
            "_loc": loc,
            "_seq": c.counters.messages + np.arange(k, dtype=np.int64),
            "_kind": kind,
            "_interest": interest,
            "_room": room,
            "_s": seconds,
            "_text": chat.pick(rng, _chat_key(kind, interest)),
        }
    ).sort("_s", "_seq")
    c.counters.messages += k

    # KOC replies: an answer goes to the latest question in its room, a few minutes to hours later.
    questions = frame.filter(pl.col("_kind") == _Q).select(
        "_room", "_s", _q_loc="_loc", _q_interest="_interest", _q_s="_s"
    )
    answers = frame.filter(pl.col("_kind") == _ANSWER).join_asof(
        questions, on="_s", by="_room", strategy="backward", check_sortedness=False
    )
    ok = answers["_q_loc"].is_not_null() & (answers["_q_loc"] != answers["_loc"])
    ok = ok.fill_null(False).to_numpy()
    na = answers.height
    q_loc = answers["_q_loc"].fill_null(0).to_numpy()
    reply = chat.pick(
        rng, _chat_key(np.full(na, _ANSWER), answers["_q_interest"].fill_null(0).to_numpy())
    )
    fallback = chat.pick(rng, _chat_key(np.full(na, _SHARE), answers["_interest"].to_numpy()))
    delay = rng.integers(60, 3 * 3600, na)
    last_second = c.cal.days * 86400 - 1
    answers = (
        answers.with_columns(
            _ok=ok,
            _text=pl.when(pl.Series(ok))
            .then(pl.lit("@") + nick.gather(q_loc) + pl.lit(" ") + reply)
            .otherwise(fallback),
            _s=pl.when(pl.Series(ok))
            .then(pl.min_horizontal(pl.col("_q_s") + pl.Series(delay), last_second))
            .otherwise(pl.col("_s")),
            _q_wecom=c.id_of(np.full(na, _B_WECOM), q_loc),
        )
        .with_columns(
            tolist=pl.when(pl.col("_ok")).then(pl.concat_list("_q_wecom")),
        )
        .select("_loc", "_seq", "_kind", "_interest", "_room", "_s", "_text", "tolist")
    )
    frame = pl.concat(
        [
            frame.filter(pl.col("_kind") != _ANSWER).with_columns(
                tolist=pl.lit(None, pl.List(pl.String))
            ),
            answers,
        ]
    ).with_columns(tolist=pl.col("tolist").fill_null(pl.lit([], pl.List(pl.String))))
    spoken = frame.filter(pl.col("_text").str.len_chars() > 0)
    if c.first and spoken.height:  # one message archived twice, byte for byte
        frame = pl.concat([frame, spoken.slice(int(rng.integers(spoken.height)), 1)])
    frame = frame.sort("_s", "_seq")
    loc_s = frame["_loc"].to_numpy()
    msgtime = (c.cal.start_s - 8 * 3600 + frame["_s"].to_numpy()) * 1000 + frame[
        "_seq"
    ].to_numpy() % 1000
    return frame.with_columns(
        msgtime=msgtime,
        _from=c.id_of(np.full(frame.height, _B_WECOM), loc_s),
        _roomid=pop.room_ids.gather(frame["_room"].to_numpy()),
        _pid=loc_s + c.lo,
    ).select(
        msgid=(pl.lit(10**16, pl.Int64) + pl.col("_seq")).cast(pl.String)
        + pl.lit("_")
        + pl.col("msgtime").cast(pl.String),
        action=pl.lit("send"),
        **{"from": pl.col("_from")},
        tolist=pl.col("tolist"),
        roomid=pl.col("_roomid"),
        msgtime=pl.col("msgtime"),
        msgtype=pl.lit("text"),
        text=pl.struct(content=pl.col("_text")),
        _pid=pl.col("_pid"),
    )


def _identities(c: _Chunk, mp_phone_seen: np.ndarray) -> pl.DataFrame:
    """Links observed by the brand's systems, each row `_pid_a`, `_pid_b` (-1 for a trap id)."""
    pop, rng, m = c.pop, c.rng, c.m
    sl = slice(c.lo, c.hi)
    everyone = np.arange(m)
    has_mp, has_wecom, has_member = pop.has_mp[sl], pop.has_wecom[sl], pop.has_member[sl]
    parts: list[pl.DataFrame] = []

    def link(
        who: np.ndarray, block_a: int, block_b: int, source: str, trap_b: np.ndarray | None = None
    ) -> None:
        """Rows linking `block_a` to `block_b` for the local people `who` (phone block: typed phone)."""
        n = len(who)
        trap = np.zeros(n, dtype=bool) if trap_b is None else trap_b
        phone_b = np.where(trap, TEST_PHONE, pop.phone[who + c.lo])
        b_text = (
            pl.select(
                _typed_phone(pl.Series(phone_b).cast(pl.String), pl.Series(_phone_styles(rng, n)))
            ).to_series()
            if block_b == _B_PHONE
            else c.id_of(np.full(n, block_b), who)
        )
        day = pop.act_lo[who + c.lo] + (
            rng.random(n) * (pop.act_hi[who + c.lo] - pop.act_lo[who + c.lo])
        ).astype(np.int64)
        parts.append(
            pl.DataFrame(
                {
                    "id_type_a": np.full(n, _BLOCK_TYPE[block_a]),
                    "id_a": c.id_of(np.full(n, block_a), who),
                    "id_type_b": np.full(n, _BLOCK_TYPE[block_b]),
                    "id_b": b_text,
                    "source": np.full(n, source),
                    "_ts": c.cal.timestamps(day * 86400 + rng.integers(7 * 3600, 23 * 3600, n)),
                    "_pid_a": who + c.lo,
                    "_pid_b": np.where(trap, -1, who + c.lo),
                }
            )
        )

    mp = everyone[has_mp]
    link(mp, _B_UNIONID, _B_OPENID, "miniprogram_login")
    link(mp[rng.random(len(mp)) < 0.08], _B_UNIONID, _B_OPENID, "miniprogram_login")  # seen again
    link(everyone[has_wecom], _B_UNIONID, _B_WECOM, "wecom")
    members = everyone[has_member]
    link(members, _B_MEMBER, _B_PHONE, "loyalty", trap_b=rng.random(len(members)) < 0.015)
    binding = has_member & (pop.n_taobao[sl] > 0) & (rng.random(m) < 0.7)
    link(everyone[binding], _B_TAOBAO, _B_MEMBER, "tmall_member_binding")
    bridge = pop.bridged[sl] & ~mp_phone_seen
    link(everyone[bridge & has_mp], _B_OPENID, _B_PHONE, "miniprogram_phone_auth")
    link(everyone[bridge & ~has_mp & has_wecom], _B_WECOM, _B_PHONE, "wecom_remark")
    frame = pl.concat(parts)
    # Trap: mini-program logins before the SDK knew the openid.
    trap = frame.filter(
        (pl.col("source") == "miniprogram_login") & pl.Series(rng.random(frame.height) < 0.006)
    )
    trap = trap.with_columns(
        id_b=pl.Series(PLACEHOLDER_IDS).gather(rng.integers(0, len(PLACEHOLDER_IDS), trap.height)),
        _pid_b=pl.lit(-1, pl.Int64),
    )
    frame = pl.concat([frame, trap]).sort("_ts", "_pid_a", "source", "id_b")
    n = frame.height
    iso, missing = rng.random(n) < 0.05, rng.random(n) < 0.03
    return frame.with_columns(
        observed_at=pl.when(pl.Series(missing))
        .then(None)
        .otherwise(_text_timestamps(pl.col("_ts"), pl.Series(iso)))
    ).select("id_type_a", "id_a", "id_type_b", "id_b", "source", "observed_at", "_pid_a", "_pid_b")


def _consent(c: _Chunk) -> tuple[pl.DataFrame, np.ndarray]:
    """~3% opt out (by phone or unionid); a quarter of them opt in again later. Returns final opt-outs."""
    pop, rng, m = c.pop, c.rng, c.m
    sl = slice(c.lo, c.hi)
    wechat = pop.has_mp[sl] | pop.has_wecom[sl]
    phone_known = pop.has_member[sl] | (pop.bridged[sl] & wechat)
    opt = (rng.random(m) < 0.035) & (wechat | phone_known)
    by_phone = phone_known & (~wechat | (rng.random(m) < 0.45))
    day_out = pop.act_lo[sl] + (rng.random(m) * (pop.act_hi[sl] - pop.act_lo[sl])).astype(np.int64)
    back = opt & (rng.random(m) < 0.25) & (day_out < c.cal.days - 1)
    day_in = day_out + 1 + (rng.random(m) * (c.cal.days - 1 - day_out)).astype(np.int64)
    who = np.concatenate([np.flatnonzero(opt), np.flatnonzero(back)])
    status = np.array(["opt_out"] * int(opt.sum()) + ["opt_in"] * int(back.sum()), dtype=str)
    day = np.concatenate([day_out[opt], day_in[back]])
    n = len(who)
    phone = by_phone[who]
    typed = pl.select(
        _typed_phone(
            pl.Series(pop.phone[who + c.lo]).cast(pl.String), pl.Series(_phone_styles(rng, n))
        )
    ).to_series()
    frame = pl.DataFrame(
        {
            "id_type": np.where(phone, "phone", "unionid"),
            "id": pl.select(
                pl.when(pl.Series(phone))
                .then(typed)
                .otherwise(c.id_of(np.full(n, _B_UNIONID), who))
            ).to_series(),
            "status": status,
            "_ts": c.cal.timestamps(day * 86400 + rng.integers(8 * 3600, 22 * 3600, n)),
            "_pid": who + c.lo,
        }
    ).sort("_ts", "_pid")
    frame = frame.with_columns(
        updated_at=_text_timestamps(pl.col("_ts"), pl.Series(rng.random(n) < 0.05))
    )
    return frame.select("id_type", "id", "status", "updated_at", "_pid"), opt & ~back


def _identifiers(
    c: _Chunk,
    orders: list[pl.DataFrame],
    events: pl.DataFrame,
    messages: pl.DataFrame,
    identities: pl.DataFrame,
    consent: pl.DataFrame,
) -> pl.DataFrame:
    """Truth: every (person, id_type, id) a real person shows in the chunk's rows; phones hashed."""
    pid, t, i = pl.col("pid"), pl.col("id_type"), pl.col("id")
    long = [
        *(
            o.select(
                pid=pl.col("_buyer_pid"), id_type=pl.col("buyer_id_type"), id=pl.col("buyer_id")
            )
            for o in orders
        ),
        *(
            o.select(pid=pl.col("_phone_pid"), id_type=pl.lit("phone"), id=pl.lit(""))
            for o in orders
        ),
        events.select(pid=pl.col("_pid"), id_type=pl.col("user_id_type"), id=pl.col("user_id")),
        messages.select(
            pid=pl.col("_pid"), id_type=pl.lit("wecom_external_userid"), id=pl.col("from")
        ),
        identities.select(pid=pl.col("_pid_a"), id_type=pl.col("id_type_a"), id=pl.col("id_a")),
        identities.select(pid=pl.col("_pid_b"), id_type=pl.col("id_type_b"), id=pl.col("id_b")),
        consent.select(pid=pl.col("_pid"), id_type=pl.col("id_type"), id=pl.col("id")),
    ]
    seen = pl.concat(long).filter(pid >= 0).unique(["pid", "id_type", "id"])
    others = seen.filter(t != "phone")
    phones = seen.filter(t == "phone").select("pid").unique()
    phones = phones.with_columns(
        id_type=pl.lit("phone_sha256"),
        id=sha256_hex(pl.lit(pl.Series(c.pop.phone[phones["pid"].to_numpy()]).cast(pl.String))),
    )
    ids = pl.concat([others, phones]).sort("pid", "id_type", "id")
    return ids.select(person_id=_person_ids(ids["pid"].to_numpy(), c.pop.n), id_type=t, id=i)


# ---------------------------------------------------------------------------------------------
# Writing: every file is appended chunk by chunk into a temporary file, renamed at the end


class _Sink(contextlib.ExitStack):
    def __init__(self, out_dir: Path) -> None:
        super().__init__()
        self.out_dir = out_dir
        self._files: dict[str, IO[bytes]] = {}
        self._parquet: dict[str, pq.ParquetWriter] = {}

    def _open(self, rel: str) -> IO[bytes]:
        if rel not in self._files:
            tmp = self.enter_context(atomic_path(self.out_dir / rel))
            self._files[rel] = self.enter_context(tmp.open("wb"))
        return self._files[rel]

    def csv(self, rel: str, df: pl.DataFrame) -> None:
        header = rel not in self._files
        df.write_csv(self._open(rel), include_header=header, float_precision=2)

    def jsonl(self, rel: str, df: pl.DataFrame) -> None:
        df.write_ndjson(self._open(rel))

    def parquet(self, rel: str, df: pl.DataFrame) -> None:
        table = df.to_arrow()
        if rel not in self._parquet:
            writer = pq.ParquetWriter(self._open(rel), table.schema, compression="zstd")
            self._parquet[rel] = writer
            self.callback(writer.close)
        self._parquet[rel].write_table(table.cast(self._parquet[rel].schema))
