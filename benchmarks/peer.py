"""The peer of `make bench`: the whole week as an analyst would write it by hand in DuckDB SQL.

    python benchmarks/peer.py --input benchmarks/data/users-100000 --out /tmp/peer --json

It reads the same input folders as `segments run` (orders/, events/, messages/, identities/,
consent/ in the shapes `segments demo-data` writes them: CSV, Parquet, WeCom JSON lines) and
writes OUT/wide.parquet, one row per person (a connected component of the identity links), and
OUT/identity_map.parquet (one_id, id_type, id; phones only as phone_sha256). The steps, each
timed on its own:

1. ingest     parse and type every input (timestamps with offsets and epoch milliseconds to
              local time, money to cents, placeholders and spreadsheet guards undone), drop the
              rows the contract rejects, keep the last row of each repeated key;
2. phones     every phone (receiver, buyer id, link, consent) becomes sha256 of its 11 digits;
3. identity   identifiers from orders, events, messages and links are nodes, links and each
              order's buyer <-> receiver phone are edges; placeholder ids and test phones are not
              nodes, a node with more than `max_degree` neighbours loses its edges (the parcel
              station); scipy's connected_components numbers the people;
4. rfm        recency, frequency and monetary over 1, 4, 13, 26 and 52 weeks and the lifetime;
5. affinity   decayed interest scores from orders and events: category -> interest through
              configs/taxonomy.toml, weight 2 ** (-age / half_life), saturated to 0-1, argmax;
6. chat       taxonomy keywords counted in each person's chat text of the last 52 weeks;
7. write      the wide table joined per person (with the consent opt-out) and written.

What the engine does more is in docs/benchmarks.md ("The DuckDB peer"). Printed with --json:
per-step seconds, row counts and the number of people. Nothing raw from a phone is written:
the 11-digit numbers exist only inside the in-memory database between steps 1 and 2.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import tomllib
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

ROOT = Path(__file__).resolve().parents[1]
TIMEZONE = "Asia/Shanghai"
WINDOWS = (1, 4, 13, 26, 52)
HALF_LIFE_WEEKS = 26.0
LOOKBACK_WEEKS = 104
SATURATION = 5.0
ORDER_WEIGHT = 5.0
EVENT_WEIGHTS = {"view": 1.0, "search": 2.0, "add_cart": 3.0, "favorite": 3.0, "share": 2.0}
EVENT_WEIGHTS |= {"live_view": 1.0}
CHAT_WEEKS = 52
SOURCES = ("tmall", "taobao", "jd", "douyin", "miniprogram", "store")
ID_TYPES = (
    "phone",
    "phone_md5",
    "phone_sha256",
    "taobao_ouid",
    "taobao_nick",
    "jd_pin",
    "douyin_openid",
    "member_id",
    "openid",
    "unionid",
    "wecom_external_userid",
    "oaid",
    "idfa",
    "imei",
)
STEPS = ("ingest", "phones", "identity", "rfm", "affinity", "chat", "write")


class PeerError(Exception):
    """One line saying where and what."""


def week_bounds(label: str) -> tuple[date, datetime]:
    """(the Sunday, the exclusive end: next Monday 00:00) of an ISO week label `2026-W47`."""
    try:
        year, week = label.split("-W")
        monday = date.fromisocalendar(int(year), int(week), 1)
    except ValueError as e:
        raise PeerError(f"peer --as-of: an ISO week like 2026-W47. Got {label!r} instead.") from e
    end = datetime.combine(monday + timedelta(days=7), datetime.min.time())
    return monday + timedelta(days=6), end


def _files(input_dir: Path, table: str, suffix: str) -> list[str]:
    return [str(p) for p in sorted((input_dir / table).glob(f"*{suffix}"))]


def _sql_list(values: list[str]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def _regex_escape(word: str) -> str:
    return "".join("\\" + ch if ch in r"\.^$|?*+()[]{}" else ch for ch in word)


# Every timestamp string goes through TIMESTAMPTZ in the session's time zone (Asia/Shanghai):
# a naive one is taken as local, one with an offset or Z is converted, then back to naive local.
MACROS = r"""
CREATE MACRO clean_id(s) AS nullif(trim(CASE
    WHEN starts_with(s, '="') THEN s[3:-2]
    WHEN starts_with(s, '''') THEN s[2:]
    ELSE s END), '');
CREATE MACRO local_ts(s) AS try_cast(try_cast(trim(s) AS TIMESTAMPTZ) AS TIMESTAMP);
CREATE MACRO money(s) AS try_cast(regexp_replace(trim(s), '[¥￥,\s]', '', 'g') AS DECIMAL(18, 2));
CREATE MACRO digits(s) AS regexp_replace(translate(s, '０１２３４５６７８９', '0123456789'),
                                         '[^0-9]', '', 'g');
CREATE MACRO mainland(d) AS CASE
    WHEN length(d) = 15 AND starts_with(d, '0086') THEN d[5:]
    WHEN length(d) = 13 AND starts_with(d, '86') THEN d[3:]
    ELSE d END;
CREATE MACRO mobile11(d) AS CASE
    WHEN regexp_full_match(mainland(d), '1[3-9][0-9]{9}') THEN mainland(d) END;
CREATE MACRO phone11(s) AS mobile11(digits(s));
CREATE MACRO id_or_phone(t, s) AS CASE WHEN t = 'phone' THEN phone11(s) ELSE s END;
"""


def last_wins(name: str, typed: str, valid: str, key: str, order: str) -> list[str]:
    """CREATE TABLE name from the rows of the SELECT `typed` that are `valid`, one row per
    non-null `key`: the first by `order` (the last one read). Only keys seen twice are ranked.
    The typed values are stored before they are checked, so that each is computed once."""
    return [
        f"CREATE TEMP TABLE {name}_typed AS {typed}",
        f"DELETE FROM {name}_typed WHERE NOT coalesce({valid}, false)",
        f"""CREATE TABLE {name} AS
WITH twice AS (SELECT {key} FROM {name}_typed GROUP BY ALL HAVING count(*) > 1)
SELECT * EXCLUDE (filename, row_no) FROM {name}_typed ANTI JOIN twice USING ({key})
UNION ALL
SELECT * EXCLUDE (filename, row_no) FROM {name}_typed SEMI JOIN twice USING ({key})
QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {order}) = 1""",
        f"DROP TABLE {name}_typed",
    ]


def ingest_sql(input_dir: Path) -> list[str]:
    """Typed, validated, deduplicated tables: orders, events, messages, identities, consent.

    Phones stay 11 digits here (a buyer phone that is not one rejects its order); step 2 hashes
    them. Rows carry their file and row number until "the last one read wins" is applied.
    """
    sql: list[str] = []
    ids, sources = tuple(ID_TYPES), tuple(SOURCES)
    by_file = "filename DESC, row_no DESC"
    orders_csv = _files(input_dir, "orders", ".csv")
    orders_pq = _files(input_dir, "orders", ".parquet")
    parts = []
    if orders_csv:
        sql.append(
            f"CREATE TEMP TABLE orders_csv AS SELECT * FROM read_csv({_sql_list(orders_csv)}, "
            "header = true, all_varchar = true, filename = true)"
        )
        parts.append("SELECT *, rowid AS row_no FROM orders_csv")
    if orders_pq:
        parts.append(
            "SELECT * REPLACE (CAST(paid_at AS VARCHAR) AS paid_at, CAST(amount AS VARCHAR) AS "
            "amount, CAST(discount AS VARCHAR) AS discount, CAST(refund AS VARCHAR) AS refund, "
            "CAST(quantity AS VARCHAR) AS quantity), file_row_number AS row_no "
            f"FROM read_parquet({_sql_list(orders_pq)}, filename = true, file_row_number = true)"
        )
    if not parts:
        raise PeerError(f"peer: {input_dir}/orders: .csv or .parquet files. Got none instead.")
    typed = f"""
WITH raw AS ({" UNION ALL BY NAME ".join(parts)}),
typed AS (
  SELECT clean_id(order_id) AS order_id, lower(trim(source)) AS source,
    lower(trim(buyer_id_type)) AS buyer_id_type,
    id_or_phone(lower(trim(buyer_id_type)), clean_id(buyer_id)) AS buyer_id,
    phone11(phone) AS phone, local_ts(paid_at) AS paid_at, money(amount) AS amount,
    coalesce(money(nullif(trim(discount), '')), 0) AS discount,
    coalesce(money(nullif(trim(refund), '')), 0) AS refund,
    coalesce(lower(nullif(trim(status), '')), 'paid') AS status,
    nullif(trim(category), '') AS category, nullif(trim(sku), '') AS sku,
    coalesce(try_cast(nullif(trim(quantity), '') AS BIGINT), 1) AS quantity,
    filename, row_no
  FROM raw)
SELECT * FROM typed"""
    valid = f"""order_id IS NOT NULL AND source IN {sources} AND buyer_id_type IN {ids}
  AND buyer_id IS NOT NULL AND paid_at IS NOT NULL AND amount >= 0 AND discount >= 0
  AND refund BETWEEN 0 AND amount AND status IN ('paid', 'refunded', 'cancelled')
  AND quantity >= 0"""
    sql += last_wins("orders", typed, valid, "source, order_id", by_file)
    sql.append("DROP TABLE IF EXISTS orders_csv")

    events = _files(input_dir, "events", ".parquet")
    if events:
        typed = f"""
SELECT lower(trim(user_id_type)) AS user_id_type, clean_id(user_id) AS user_id, ts,
  nullif(lower(trim(event)), '') AS event, nullif(trim(category), '') AS category, item_id,
  query, nullif(trim(event_id), '') AS event_id, filename, file_row_number AS row_no
FROM read_parquet({_sql_list(events)}, filename = true, file_row_number = true)"""
        valid = f"user_id_type IN {ids} AND user_id IS NOT NULL AND ts IS NOT NULL AND event IS NOT NULL"
        sql += last_wins("events", typed, valid, "event_id", by_file)
    else:
        sql.append(
            "CREATE TABLE events (user_id_type VARCHAR, user_id VARCHAR, ts TIMESTAMP, "
            "event VARCHAR, category VARCHAR, item_id VARCHAR, query VARCHAR, event_id VARCHAR)"
        )

    messages = _files(input_dir, "messages", ".jsonl")
    if messages:
        typed = f"""
SELECT msgid AS msg_id, 'wecom_external_userid' AS sender_id_type,
  clean_id("from") AS sender_id, roomid AS room_id,
  CAST(to_timestamp(msgtime / 1000) AS TIMESTAMP) AS ts, coalesce(text.content, '') AS text,
  tolist AS mentions, filename, 0 AS row_no
FROM read_json({_sql_list(messages)}, format = 'newline_delimited', filename = true,
  columns = {{msgid: 'VARCHAR', action: 'VARCHAR', "from": 'VARCHAR', tolist: 'VARCHAR[]',
             roomid: 'VARCHAR', msgtime: 'BIGINT', text: 'STRUCT(content VARCHAR)'}})
WHERE coalesce(action, 'send') NOT IN ('recall', 'switch')"""
        valid = "msg_id IS NOT NULL AND sender_id IS NOT NULL AND ts IS NOT NULL"
        sql += last_wins("messages", typed, valid, "msg_id", "filename DESC")
    else:
        sql.append(
            "CREATE TABLE messages (msg_id VARCHAR, sender_id_type VARCHAR, sender_id VARCHAR, "
            "room_id VARCHAR, ts TIMESTAMP, text VARCHAR, mentions VARCHAR[])"
        )

    links = _files(input_dir, "identities", ".csv")
    if links:
        sql.append(f"""
CREATE TABLE identities AS
WITH raw AS (SELECT lower(trim(id_type_a)) AS ta, clean_id(id_a) AS a,
                    lower(trim(id_type_b)) AS tb, clean_id(id_b) AS b, source, observed_at
             FROM read_csv({_sql_list(links)}, header = true, all_varchar = true)),
typed AS (SELECT ta AS id_type_a, id_or_phone(ta, a) AS id_a,
                 tb AS id_type_b, id_or_phone(tb, b) AS id_b,
                 nullif(trim(source), '') AS source, local_ts(observed_at) AS observed_at
          FROM raw WHERE ta IN {ids} AND tb IN {ids})
SELECT * FROM typed""")
        sql.append("DELETE FROM identities WHERE id_a IS NULL OR id_b IS NULL")
    else:
        sql.append(
            "CREATE TABLE identities (id_type_a VARCHAR, id_a VARCHAR, id_type_b VARCHAR, "
            "id_b VARCHAR, source VARCHAR, observed_at TIMESTAMP)"
        )

    consent = _files(input_dir, "consent", ".csv")
    if consent:
        sql.append(
            f"CREATE TEMP TABLE consent_csv AS SELECT * FROM read_csv({_sql_list(consent)}, "
            "header = true, all_varchar = true, filename = true)"
        )
        typed = f"""
WITH raw AS (SELECT lower(trim(id_type)) AS t, clean_id(id) AS i, lower(trim(status)) AS status,
                    local_ts(updated_at) AS updated_at, filename, rowid AS row_no
             FROM consent_csv),
typed AS (SELECT t AS id_type, id_or_phone(t, i) AS id, status, updated_at, filename, row_no
          FROM raw WHERE t IN {ids} AND status IN ('opt_out', 'opt_in'))
SELECT * FROM typed"""
        order = f"updated_at DESC NULLS LAST, {by_file}"
        sql += last_wins("consent", typed, "id IS NOT NULL", "id_type, id", order)
        sql.append("DROP TABLE consent_csv")
    else:
        sql.append(
            "CREATE TABLE consent (id_type VARCHAR, id VARCHAR, status VARCHAR, "
            "updated_at TIMESTAMP)"
        )
    return sql


# Step 2: the 11 digits become sha256 hex everywhere; the id type becomes phone_sha256.
PHONES_SQL = [
    """CREATE OR REPLACE TABLE orders AS SELECT * REPLACE (
         CASE WHEN buyer_id_type = 'phone' THEN 'phone_sha256' ELSE buyer_id_type END
           AS buyer_id_type,
         CASE WHEN buyer_id_type = 'phone' THEN sha256(buyer_id) ELSE buyer_id END AS buyer_id,
         sha256(phone) AS phone)
       FROM orders""",
    """CREATE OR REPLACE TABLE identities AS SELECT * REPLACE (
         CASE WHEN id_type_a = 'phone' THEN 'phone_sha256' ELSE id_type_a END AS id_type_a,
         CASE WHEN id_type_a = 'phone' THEN sha256(id_a) ELSE id_a END AS id_a,
         CASE WHEN id_type_b = 'phone' THEN 'phone_sha256' ELSE id_type_b END AS id_type_b,
         CASE WHEN id_type_b = 'phone' THEN sha256(id_b) ELSE id_b END AS id_b)
       FROM identities""",
    """CREATE OR REPLACE TABLE consent AS SELECT * REPLACE (
         CASE WHEN id_type = 'phone' THEN 'phone_sha256' ELSE id_type END AS id_type,
         CASE WHEN id_type = 'phone' THEN sha256(id) ELSE id END AS id)
       FROM consent""",
]


def identity(
    con: duckdb.DuckDBPyConnection, blocked: list[str], test_phones: list[str], max_degree: int
) -> int:
    """Step 3: id_map(one_id, id_type, id), one_id numbering the connected components."""
    con.execute(f"""
CREATE TEMP TABLE blocked_hashes AS
  SELECT sha256(phone11(p)) AS h FROM unnest({_sql_list(test_phones)}) AS t(p);
CREATE TEMP TABLE nodes AS
WITH seen AS (
  SELECT buyer_id_type AS id_type, buyer_id AS id FROM orders
  UNION SELECT 'phone_sha256', phone FROM orders WHERE phone IS NOT NULL
  UNION SELECT user_id_type, user_id FROM events
  UNION SELECT sender_id_type, sender_id FROM messages
  UNION SELECT id_type_a, id_a FROM identities
  UNION SELECT id_type_b, id_b FROM identities)
SELECT id_type, id, (row_number() OVER (ORDER BY id_type, id) - 1)::INTEGER AS node
FROM seen
WHERE lower(trim(id)) NOT IN (SELECT unnest({_sql_list(blocked)}))
  AND id NOT IN (SELECT h FROM blocked_hashes);
CREATE TEMP TABLE pairs AS
WITH raw AS (
  SELECT id_type_a AS ta, id_a AS a, id_type_b AS tb, id_b AS b FROM identities
  UNION ALL SELECT buyer_id_type, buyer_id, 'phone_sha256', phone FROM orders
    WHERE phone IS NOT NULL),
ends AS (
  SELECT DISTINCT least(na.node, nb.node) AS u, greatest(na.node, nb.node) AS v
  FROM raw JOIN nodes na ON na.id_type = raw.ta AND na.id = raw.a
           JOIN nodes nb ON nb.id_type = raw.tb AND nb.id = raw.b
  WHERE na.node <> nb.node),
degree AS (
  SELECT node, count(*) AS d FROM (SELECT u AS node FROM ends UNION ALL SELECT v FROM ends)
  GROUP BY node)
SELECT u, v FROM ends
WHERE u NOT IN (SELECT node FROM degree WHERE d > {int(max_degree)})
  AND v NOT IN (SELECT node FROM degree WHERE d > {int(max_degree)});
""")
    n = con.execute("SELECT count(*) FROM nodes").fetchone()[0]
    edges = con.execute("SELECT u, v FROM pairs").fetchnumpy()
    u, v = edges["u"].astype(np.int32), edges["v"].astype(np.int32)
    graph = coo_matrix((np.ones(len(u), dtype=np.int8), (u, v)), shape=(n, n)).tocsr()
    people, labels = connected_components(graph, directed=False)
    component = pa.table({"node": np.arange(n, dtype=np.int32), "one_id": labels.astype(np.int64)})
    con.register("component", component)
    con.execute("""
CREATE TABLE id_map AS SELECT c.one_id, n.id_type, n.id FROM nodes n JOIN component c USING (node);
DROP TABLE nodes; DROP TABLE pairs;
""")
    con.unregister("component")
    return int(people)


def rfm_sql(sunday: date, end: datetime) -> str:
    """Step 4: R, F and M per person; money added up in whole cents."""
    e = f"TIMESTAMP '{end:%Y-%m-%d %H:%M:%S}'"
    starts = {n: f"TIMESTAMP '{end - timedelta(weeks=n):%Y-%m-%d %H:%M:%S}'" for n in WINDOWS}
    cents = "CAST(round((amount - refund) * 100) AS BIGINT)"
    cols = []
    for n in WINDOWS:
        cols.append(f"count(*) FILTER (WHERE paid_at >= {starts[n]}) AS frequency_{n}w")
        cols.append(
            f"coalesce(sum({cents}) FILTER (WHERE paid_at >= {starts[n]}), 0) / 100.0"
            f" AS monetary_{n}w"
        )
    return f"""
CREATE TABLE rfm AS
SELECT m.one_id,
  date_diff('day', CAST(max(o.paid_at) AS DATE), DATE '{sunday}') AS recency_days,
  {", ".join(cols)},
  count(*) AS frequency_lifetime, sum({cents}) / 100.0 AS monetary_lifetime
FROM orders o JOIN id_map m ON m.id_type = o.buyer_id_type AND m.id = o.buyer_id
WHERE o.status = 'paid' AND o.amount - o.refund > 0 AND o.paid_at < {e}
GROUP BY m.one_id
"""


def affinity_sql(end: datetime, interests: list[str]) -> str:
    """Step 5: per person and interest, sum of weight * 2 ** (-age / half-life), saturated."""
    e = f"TIMESTAMP '{end:%Y-%m-%d %H:%M:%S}'"
    start = f"TIMESTAMP '{end - timedelta(weeks=LOOKBACK_WEEKS):%Y-%m-%d %H:%M:%S}'"
    week_us = 7 * 24 * 3600 * 1_000_000
    decay = f"pow(2, -date_diff('microsecond', ts, {e}) / {week_us * HALF_LIFE_WEEKS})"
    pivot = ", ".join(
        f"coalesce(1 - pow(2, -sum(score) FILTER (WHERE interest = '{i}') / {SATURATION}), 0)"
        f" AS interest_{i}"
        for i in interests
    )
    return f"""
CREATE TABLE affinity AS
WITH signals AS (
  SELECT m.one_id, c.interest, o.paid_at AS ts, {ORDER_WEIGHT} AS weight
  FROM orders o JOIN category_interest c ON c.category = o.category
    JOIN id_map m ON m.id_type = o.buyer_id_type AND m.id = o.buyer_id
  WHERE o.status <> 'cancelled' AND o.paid_at >= {start} AND o.paid_at < {e}
  UNION ALL
  SELECT m.one_id, c.interest, ev.ts, w.weight
  FROM events ev JOIN category_interest c ON c.category = ev.category
    JOIN event_weight w ON w.event = ev.event
    JOIN id_map m ON m.id_type = ev.user_id_type AND m.id = ev.user_id
  WHERE ev.ts >= {start} AND ev.ts < {e}),
scores AS (
  SELECT one_id, interest, sum(weight * {decay}) AS score FROM signals GROUP BY ALL)
SELECT one_id, arg_max(interest, score) AS primary_interest, {pivot}
FROM scores GROUP BY one_id
"""


def chat_sql(end: datetime, interests: list[str], pattern: str) -> str:
    """Step 6: taxonomy keyword hits (leftmost, longest first) per person and interest."""
    e = f"TIMESTAMP '{end:%Y-%m-%d %H:%M:%S}'"
    start = f"TIMESTAMP '{end - timedelta(weeks=CHAT_WEEKS):%Y-%m-%d %H:%M:%S}'"
    pivot = ", ".join(f"count(*) FILTER (WHERE k.interest = '{i}') AS chat_{i}" for i in interests)
    return f"""
CREATE TABLE chat AS
WITH said AS (
  SELECT m.one_id, msg.msg_id, unnest(regexp_extract_all(lower(msg.text), '{pattern}')) AS word
  FROM messages msg JOIN id_map m ON m.id_type = msg.sender_id_type AND m.id = msg.sender_id
  WHERE msg.ts >= {start} AND msg.ts < {e} AND msg.text <> ''),
sent AS (
  SELECT m.one_id, count(*) AS messages_{CHAT_WEEKS}w
  FROM messages msg JOIN id_map m ON m.id_type = msg.sender_id_type AND m.id = msg.sender_id
  WHERE msg.ts >= {start} AND msg.ts < {e} GROUP BY m.one_id),
hits AS (
  SELECT s.one_id, {pivot} FROM said s JOIN keyword_interest k ON k.word = s.word
  GROUP BY s.one_id)
SELECT * FROM sent FULL JOIN hits USING (one_id)
"""


def write_sql(interests: list[str], wide: Path) -> str:
    """Step 7: one row per person, every person (a component) even without orders."""
    zero = ", ".join(
        [f"coalesce(r.frequency_{n}w, 0) AS frequency_{n}w" for n in WINDOWS]
        + [f"coalesce(r.monetary_{n}w, 0) AS monetary_{n}w" for n in WINDOWS]
        + ["coalesce(r.frequency_lifetime, 0) AS frequency_lifetime"]
        + ["coalesce(r.monetary_lifetime, 0) AS monetary_lifetime"]
        + [f"coalesce(a.interest_{i}, 0) AS interest_{i}" for i in interests]
        + [f"coalesce(c.messages_{CHAT_WEEKS}w, 0) AS messages_{CHAT_WEEKS}w"]
        + [f"coalesce(c.chat_{i}, 0) AS chat_{i}" for i in interests]
    )
    return f"""
COPY (
  WITH people AS (SELECT one_id, count(*) AS identifiers FROM id_map GROUP BY one_id),
  opted AS (SELECT DISTINCT m.one_id FROM consent k
            JOIN id_map m ON m.id_type = k.id_type AND m.id = k.id WHERE k.status = 'opt_out')
  SELECT p.one_id, p.identifiers, opted.one_id IS NOT NULL AS opted_out, r.recency_days,
    {zero}, a.primary_interest
  FROM people p LEFT JOIN rfm r USING (one_id) LEFT JOIN affinity a USING (one_id)
    LEFT JOIN chat c USING (one_id) LEFT JOIN opted USING (one_id)
  ORDER BY p.one_id
) TO '{wide}' (FORMAT parquet)
"""


def load_taxonomy(path: Path) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """(interests in taxonomy order, (category, interest) pairs, (keyword, interest) pairs)."""
    raw = tomllib.loads(path.read_text(encoding="utf-8"))["interests"]
    cats = [(c, name) for name, spec in raw.items() for c in spec.get("categories", [])]
    words = sorted(
        {(k.lower(), name) for name, spec in raw.items() for k in spec.get("keywords", [])}
    )
    return list(raw), cats, words


def run_peer(
    input_dir: Path, out_dir: Path, as_of: str = "2026-W47", configs: Path = ROOT / "configs"
) -> dict:
    """The whole week; returns {"seconds": {step: s}, "rows": {...}, "people": n}."""
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    if not input_dir.is_dir():
        raise PeerError(f"peer --input: a folder of input tables. Got {str(input_dir)!r} instead.")
    sunday, end = week_bounds(as_of)
    interests, cats, words = load_taxonomy(configs / "taxonomy.toml")
    ident = tomllib.loads((configs / "identity.toml").read_text(encoding="utf-8"))["identity"]
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    cpu: dict[str, float] = {}  # process CPU (every DuckDB thread): steadier on a shared machine
    con = duckdb.connect()
    con.execute(f"SET threads TO {os.cpu_count() or 1}")
    con.execute(f"SET TimeZone = '{TIMEZONE}'")  # how local_ts and epoch ms read as local
    con.execute(MACROS)

    def step(name: str, fn) -> object:
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        seconds[name] = round(time.perf_counter() - t0, 3)
        cpu[name] = round(time.process_time() - c0, 3)
        return out

    def run_all(statements: list[str]) -> None:
        for s in statements:
            con.execute(s)

    step("ingest", lambda: run_all(ingest_sql(input_dir)))
    rows = {
        t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("orders", "events", "messages", "identities", "consent")
    }
    step("phones", lambda: run_all(PHONES_SQL))
    people = step(
        "identity",
        lambda: identity(
            con, ident["blocked_values"], ident["blocked_phones"], ident["max_degree"]
        ),
    )
    step("rfm", lambda: con.execute(rfm_sql(sunday, end)))
    con.register(
        "category_interest",
        pa.table({"category": [c for c, _ in cats], "interest": [i for _, i in cats]}),
    )
    con.register(
        "event_weight",
        pa.table({"event": list(EVENT_WEIGHTS), "weight": list(EVENT_WEIGHTS.values())}),
    )
    step("affinity", lambda: con.execute(affinity_sql(end, interests)))
    con.register(
        "keyword_interest",
        pa.table({"word": [w for w, _ in words], "interest": [i for _, i in words]}),
    )
    longest_first = sorted({w for w, _ in words}, key=lambda w: (-len(w), w))
    pattern = "(" + "|".join(_regex_escape(w) for w in longest_first) + ")"
    step("chat", lambda: con.execute(chat_sql(end, interests, pattern.replace("'", "''"))))

    def write() -> None:
        for name, sql in (
            ("wide.parquet", lambda p: write_sql(interests, p)),
            (
                "identity_map.parquet",
                lambda p: (
                    f"COPY (SELECT * FROM id_map ORDER BY id_type, id) TO '{p}' (FORMAT parquet)"
                ),
            ),
        ):
            tmp = out_dir / f".{name}.tmp"
            con.execute(sql(tmp))
            os.replace(tmp, out_dir / name)

    step("write", write)
    con.close()
    return {
        "as_of": as_of,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rows": rows,
        "people": people,
        "wide": str(out_dir / "wide.parquet"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--input", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--as-of", default="2026-W47", help="an ISO week label")
    ap.add_argument("--configs", type=Path, default=ROOT / "configs")
    ap.add_argument("--json", action="store_true", help="print the step seconds as JSON")
    args = ap.parse_args()
    t0 = time.perf_counter()
    try:
        result = run_peer(args.input, args.out, args.as_of, args.configs)
    except PeerError as e:
        raise SystemExit(str(e)) from None
    except (duckdb.Error, OSError) as e:
        raise SystemExit(f"peer: {str(e).splitlines()[0]}") from None
    result["in_process_seconds"] = round(time.perf_counter() - t0, 3)
    if args.json:
        print(json.dumps(result))
    else:
        steps = ", ".join(f"{k} {v:.2f} s" for k, v in result["seconds"].items())
        print(f"{result['people']:,} people in {result['in_process_seconds']:.2f} s: {steps}")


if __name__ == "__main__":
    main()
