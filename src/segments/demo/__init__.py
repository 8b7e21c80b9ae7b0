"""The demo population: a light-outdoor brand's exports in the input layout, with planted truth.

`generate(out_dir)` writes, deterministically for a seed (same seed, same bytes):

```
out_dir/orders/orders.csv             tmall, taobao, jd, douyin orders; ~0.5% dirty rows
out_dir/orders/store_orders.parquet   store and mini-program orders, typed columns
out_dir/events/events.parquet         mini-program behaviour events
out_dir/messages/wecom_archive.jsonl  WeCom chat-archive lines (msgid, from, tolist, roomid, ...)
out_dir/identities/links.csv          id_type_a, id_a, id_type_b, id_b, source, observed_at
out_dir/consent/consent.csv           id_type, id, status, updated_at
out_dir/truth/persons.parquet         person_id, persona, primary_interest, interests,
                                      is_coupon_hunter, opted_out
out_dir/truth/identifiers.parquet     person_id, id_type, id (phones only as phone_sha256)
out_dir/truth/constants.json          the brand's constants this seed drew (segments.demo.constants)
```

The brand's constants (persona mix, order values, discount depths, virtual-number shares,
promotion dates, activity rates) are drawn per seed from wide documented ranges
(`segments.demo.constants`), so no engine constant can sit where the generator put its own.
What people write and search comes from a vocabulary (`vocabulary="a"`, the default, or "b",
a second list no tuning saw) that holds no keyword or category of the shipped taxonomy: chat
and search text never name an interest the way the engine's keyword list does.

The people are newcomers, enthusiasts, experts, coupon hunters and dormant buyers, each with
one to three interests from `TAXONOMY` whose categories dominate their orders, events and chat.
Identifiers are split across systems; the evidence links both sides (commerce, WeChat) of about
95% of the people who have both, the rest are genuinely unlinked. Traps the engine must not
merge through: a parcel-station receiver phone shared by 30+ buyers, placeholder ids ("null",
"0", "undefined", ""), the test number 13800000000; none of them is in the truth.

Everything is vectorised over numpy arrays and generated in blocks of `CHUNK` people, so 100k
people take seconds and 2M people stream through in bounded memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from segments.demo.constants import Constants, draw
from segments.demo.orders import _orders, _split_orders
from segments.demo.population import _Calendar, _persons_truth, _population
from segments.demo.tables import (
    _Chunk,
    _consent,
    _Counters,
    _events,
    _identifiers,
    _identities,
    _messages,
    _Sink,
    _Tables,
)
from segments.demo.vocabulary import (
    PERSONA_SHARES,
    PERSONAS,
    PLACEHOLDER_IDS,
    TAXONOMY,
    TEST_PHONE,
    VOCABULARIES,
    words,
)
from segments.errors import ConfigError
from segments.io import write_text

CHUNK = 100_000  # people generated (and written) per block; part of what a seed reproduces


# ---------------------------------------------------------------------------------------------
# Public API


@dataclass(frozen=True)
class DemoSummary:
    """What `generate` wrote: rows per file and people per persona."""

    out_dir: Path
    persons: int
    orders: int  # orders.csv + store_orders.parquet rows, dirty and duplicated rows included
    events: int
    messages: int
    identities: int
    consent: int
    identifiers: int  # rows of truth/identifiers.parquet
    personas: dict[str, int] = field(default_factory=dict)
    vocabulary: str = "a"
    constants: Constants | None = None

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        d.pop("constants")
        return d


def generate(
    out_dir: Path,
    users: int = 3000,
    seed: int = 7,
    end: date = date(2026, 11, 22),
    weeks: int = 104,
    *,
    events_scale: float = 1.0,
    messages_scale: float = 1.0,
    chunks_per_file: int = 0,
    vocabulary: str = "a",
    moves: dict[str, float] | None = None,
) -> DemoSummary:
    """Write a demo population of `users` people over `weeks` weeks ending on `end`, plus truth.

    `end` should be a Sunday; any other day means the last Sunday before it. The same
    (users, seed, end, weeks) writes byte-identical files. See the module docstring for layout.

    For benchmark sets: `events_scale` and `messages_scale` multiply each person's mean number
    of mini-program events and chat messages (1.0 draws exactly the default set), and
    `chunks_per_file` > 0 starts a new CSV / JSON lines file every that many blocks of 100,000
    people (`orders/orders-0001.csv`, ...), as a brand's daily or monthly exports would come.

    `vocabulary` picks the words people write and search ("a" or "b"); `moves` multiplies named
    drawn constants (`segments.demo.constants.RANGES`), e.g. {"hunter_share": 1.5}.

    >>> s = generate(Path("/tmp/demo"), users=200)  # doctest: +SKIP
    >>> s.persons
    200
    """
    for name, value, low in (("users", users, 1), ("weeks", weeks, 1), ("seed", seed, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(
                f"demo-data: --{name} must be an int >= {low}. Got {value!r} instead."
            )
    words(vocabulary)  # an unknown vocabulary stops here, before anything is written
    consts = draw(seed, moves)
    out_dir = Path(out_dir)
    cal = _Calendar(end - timedelta(days=(end.weekday() + 1) % 7), weeks, consts)
    pop = _population(users, seed, cal, consts, vocabulary, events_scale, messages_scale)
    totals = dict.fromkeys(
        ("orders", "events", "messages", "identities", "consent", "identifiers"), 0
    )
    opted_out = np.zeros(users, dtype=bool)
    counters = _Counters()
    with _Sink(out_dir) as sink:
        for n_chunk, lo in enumerate(range(0, users, CHUNK)):
            hi = min(users, lo + CHUNK)
            c = _Chunk(
                pop, cal, lo, hi, np.random.default_rng([seed, 1, n_chunk]), counters, n_chunk == 0
            )
            t = _generate_chunk(c)
            opted_out[lo:hi] = t.opted_out

            def part(rel: str, n: int = n_chunk) -> str:
                if chunks_per_file <= 0:
                    return rel
                stem, dot, suffix = rel.rpartition(".")
                return f"{stem}-{n // chunks_per_file + 1:04d}{dot}{suffix}"

            sink.csv(part("orders/orders.csv"), t.orders_csv)
            sink.parquet("orders/store_orders.parquet", t.orders_parquet)
            sink.parquet("events/events.parquet", t.events)
            sink.jsonl(part("messages/wecom_archive.jsonl"), t.messages)
            sink.csv(part("identities/links.csv"), t.identities)
            sink.csv("consent/consent.csv", t.consent)
            sink.parquet("truth/identifiers.parquet", t.identifiers)
            totals["orders"] += t.orders_csv.height + t.orders_parquet.height
            totals["events"] += t.events.height
            totals["messages"] += t.messages.height
            totals["identities"] += t.identities.height
            totals["consent"] += t.consent.height
            totals["identifiers"] += t.identifiers.height
        sink.parquet("truth/persons.parquet", _persons_truth(pop, opted_out))
    write_text(consts.to_json(vocabulary), out_dir / "truth" / "constants.json")
    personas = dict(zip(PERSONAS, np.bincount(pop.persona, minlength=5).tolist(), strict=True))
    return DemoSummary(
        out_dir=out_dir,
        persons=users,
        personas=personas,
        vocabulary=vocabulary,
        constants=consts,
        **totals,
    )


# ---------------------------------------------------------------------------------------------
# One block of people: every table it produces


def _generate_chunk(c: _Chunk) -> _Tables:
    orders = _orders(c)
    orders_csv, orders_parquet = _split_orders(c, orders)
    events = _events(c)
    messages = _messages(c)
    mp_phone_seen = np.zeros(c.m, dtype=bool)
    mp_rows = orders.filter((pl.col("_ch") == 4) & (pl.col("_phone_pid") >= 0))
    mp_phone_seen[mp_rows["_pid"].to_numpy() - c.lo] = True
    identities = _identities(c, mp_phone_seen)
    consent, opted_out = _consent(c)
    identifiers = _identifiers(
        c, [orders_csv, orders_parquet], events, messages, identities, consent
    )

    def public(df: pl.DataFrame) -> pl.DataFrame:
        return df.select(pl.exclude("^_.*$"))

    return _Tables(
        orders_csv=public(orders_csv),
        orders_parquet=public(orders_parquet),
        events=public(events),
        messages=public(messages),
        identities=public(identities),
        consent=public(consent),
        identifiers=identifiers,
        opted_out=opted_out,
    )


__all__ = [
    "PERSONAS",
    "PERSONA_SHARES",
    "PLACEHOLDER_IDS",
    "TAXONOMY",
    "TEST_PHONE",
    "VOCABULARIES",
    "Constants",
    "DemoSummary",
    "generate",
]
