"""Readers, adapters and validation: every format, every reject reason, counts that reconcile."""

from __future__ import annotations

import gzip
import json
import shutil
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from segments.config import load_config
from segments.errors import DataError
from segments.ingest import ingest, mask_value, parse_timestamp
from segments.ingest.adapters import builtin_adapters

FIXTURES = Path(__file__).parent / "fixtures"
HEADER = (
    "order_id,source,buyer_id_type,buyer_id,phone,paid_at,amount,discount,refund,status,category"
)


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)
    return path


def orders_csv(*rows: str) -> str:
    return "\n".join([HEADER, *rows]) + "\n"


GOOD = "o1,tmall,taobao_ouid,tb1,13812345678,2026-11-20 10:00:00,100,5,0,paid,帐篷"


def test_csv_gzip_parquet_jsonl_all_read_the_same(tmp_path: Path) -> None:
    text = orders_csv(GOOD)
    write(tmp_path / "a" / "orders" / "x.csv", text)
    write(tmp_path / "b" / "orders" / "x.csv.gz", gzip.compress(text.encode()))
    pl.read_csv((tmp_path / "a" / "orders" / "x.csv"), infer_schema=False).write_parquet(
        write(tmp_path / "c" / "orders" / "x.parquet", b"")
    )
    record = dict(zip(HEADER.split(","), GOOD.split(","), strict=True))
    record["amount"] = 100  # JSON numbers are fine
    write(tmp_path / "d" / "orders" / "x.jsonl", json.dumps(record, ensure_ascii=False) + "\n")
    write(
        tmp_path / "e" / "orders" / "x.jsonl.gz",
        gzip.compress((json.dumps(record) + "\n").encode()),
    )
    frames = [ingest(tmp_path / k).tables["orders"] for k in "abcde"]
    for f in frames[1:]:
        assert f.equals(frames[0])
    row = frames[0].row(0, named=True)
    assert row["paid_at"] == datetime(2026, 11, 20, 10)
    assert row["amount"] == 100.0 and row["discount"] == 5.0 and row["quantity"] == 1
    assert "phone" not in frames[0].columns  # the raw phone never survives ingest
    assert len(row["phone_sha256"]) == 64


def test_typed_parquet_timestamps_read_as_their_text_would(tmp_path: Path) -> None:
    """A Parquet file's naive timestamps are taken as they are (not written as text and parsed
    back): the tables, rejects and counts are those of the same events written as CSV text,
    with whole and fractional seconds, a missing time (rejected) and a year before 1000 (read
    as text, the whole slice)."""
    times = [
        datetime(2026, 11, 20, 10, 0, 0),
        datetime(2026, 11, 20, 10, 0, 1, 250_000),
        None,
        datetime(2025, 1, 5, 23, 59, 59, 999_999),
    ]
    for folder, extra in (("new", None), ("old", datetime(999, 1, 2, 3, 4, 5))):
        ts = [*times, *([extra] if extra else [])]
        n = len(ts)
        frame = pl.DataFrame(
            {
                "user_id_type": ["openid"] * n,
                "user_id": [f"o{i}" for i in range(n)],
                "ts": pl.Series(ts, dtype=pl.Datetime("us")),
                "event": ["view"] * n,
                "category": ["帐篷"] * n,
                "event_id": [f"e{i}" for i in range(n)],
            }
        )
        frame.write_parquet(write(tmp_path / folder / "p" / "events" / "e.parquet", b""))
        text = frame.with_columns(
            pl.when(pl.col("ts").dt.truncate("1s") == pl.col("ts"))
            .then(pl.col("ts").dt.to_string("%Y-%m-%d %H:%M:%S"))
            .otherwise(pl.col("ts").cast(pl.String))
        )
        text.write_csv(write(tmp_path / folder / "c" / "events" / "e.csv", b""))
        typed, csv = ingest(tmp_path / folder / "p"), ingest(tmp_path / folder / "c")
        assert typed.tables["events"].equals(csv.tables["events"])
        assert typed.tables["events"]["ts"].to_list() == [t for t in ts if t is not None]
        assert typed.rejects["events"].drop("file").equals(csv.rejects["events"].drop("file"))
        assert typed.rejects["events"].select("row", "column", "reason").rows() == [
            (3, "ts", "required value missing")
        ]


def test_every_reject_reason_is_recorded_and_counts_reconcile(tmp_path: Path) -> None:
    rows = [
        GOOD,
        "o2,tmall,taobao_ouid,tb1,,2026-11-20 10:00:00,-1,,,,",  # negative
        "o3,tmall,taobao_ouid,tb1,,2026-11-20 10:00:00,10,,11,,",  # refund > amount
        "o4,tmall,taobao_ouid,tb1,,2026-11-20 10:00:00,10,,,shipped?,",  # unknown status
        "o5,tmall,taobao_ouid,tb1,,yesterday,10,,,,",  # bad timestamp
        ",tmall,taobao_ouid,tb1,,2026-11-20 10:00:00,10,,,,",  # missing order_id
        "o7,tmall,taobao_ouid,tb1,,2026-11-20 10:00:00,ten,,,,",  # not a number
        "o8,amazon,taobao_ouid,tb1,,2026-11-20 10:00:00,10,,,,",  # unknown source
        "o9,store,phone,12345,,2026-11-20 10:00:00,10,,,,",  # buyer phone invalid
        "o10,store,fax,123,,2026-11-20 10:00:00,10,,,,",  # unknown id type
        "o11,tmall,taobao_ouid,tb1,,2026-11-20 10:00:00,10,,,,,surplus",  # too many fields
        "o1,tmall,taobao_ouid,tb1,,2026-11-21 10:00:00,120,,,,",  # duplicate: last wins
        "o12,tmall,taobao_ouid,tb2,12345,2026-11-20 10:00:00,10,,,,",  # bad receiver phone: kept
    ]
    write(tmp_path / "orders" / "o.csv", orders_csv(*rows))
    r = ingest(tmp_path)
    c = r.counts["orders"]
    assert (c.read, c.accepted, c.rejected, c.duplicates, c.skipped) == (13, 2, 10, 1, 0)
    assert c.reconciles()
    rej = r.rejects["orders"].sort("row")
    got = {row["row"]: (row["column"], row["reason"]) for row in rej.iter_rows(named=True)}
    assert got[2] == ("amount", "negative")
    assert got[3] == ("refund", "refund exceeds amount")
    assert got[4][0] == "status" and got[4][1].startswith("unknown status")
    assert got[5] == ("paid_at", "unparseable timestamp")
    assert got[6] == ("order_id", "required value missing")
    assert got[7] == ("amount", "not a number")
    assert got[8][0] == "source"
    assert got[9][0] == "buyer_id" and "not an 11-digit" in got[9][1]
    assert got[10][0] == "buyer_id_type"
    assert "fields" in got[11][1]
    orders = r.tables["orders"].sort("order_id")
    assert orders["order_id"].to_list() == ["o1", "o12"]
    assert orders.filter(pl.col("order_id") == "o1")["amount"].item() == 120.0  # last write wins
    assert orders.filter(pl.col("order_id") == "o12")["phone_sha256"].item() is None
    ids = r.identifier_rejects
    assert ids.height == 1 and ids["row"].item() == 13 and ids["column"].item() == "phone"
    assert set(rej["file"]) == {"orders/o.csv"}


def test_rejected_phone_values_are_masked(tmp_path: Path) -> None:
    write(
        tmp_path / "orders" / "o.csv",
        orders_csv("o9,store,phone,+86 138-1234-567,,2026-11-20,10,,,,"),
    )
    value = ingest(tmp_path).rejects["orders"]["value"].item()
    assert value is not None and "1234" not in value and "*" in value
    assert mask_value("call 13812345678 now", False) == "call <phone> now"
    assert mask_value("+86 138-1234-5678", False) == "<phone>"
    assert mask_value("电话１３８１２３４５６７８", False) == "电话<phone>"
    assert mask_value("１３８１２３４５６７８", True) == "１３８********"


def test_timestamps_offsets_and_formats() -> None:
    raw = pl.Series(
        [
            "2026-11-22 23:59:59",
            "2026-11-23T00:00:00+08:00",
            "2026-11-22T16:00:00Z",
            "2026-11-22T08:00:00-08:00",
            "2026-11-22",
            "2026/11/22 10:00",
            "2026-11-22 10:00:00.250",
            "not a time",
        ]
    )
    got = pl.select(parse_timestamp(pl.lit(raw), "Asia/Shanghai")).to_series().to_list()
    assert got == [
        datetime(2026, 11, 22, 23, 59, 59),
        datetime(2026, 11, 23, 0, 0),
        datetime(2026, 11, 23, 0, 0),
        datetime(2026, 11, 23, 0, 0),
        datetime(2026, 11, 22),
        datetime(2026, 11, 22, 10),
        datetime(2026, 11, 22, 10, 0, 0, 250000),
        None,
    ]


def test_timestamps_with_slashes_t_and_offsets_among_plain_ones() -> None:
    """The rows that need rewriting (slashes, `T`, an offset after blanks) are a few among many
    plain ones, each read as its own text says."""
    odd = {
        "2026/11/22T16:00:00Z": datetime(2026, 11, 23, 0, 0),
        "2026/11/22 10:00:00.5 -05:00": datetime(2026, 11, 22, 23, 0, 0, 500000),
        "2026-11-22T16:00:00 \t Z": datetime(2026, 11, 23, 0, 0),
        "2026-11-22T09:30+0130": datetime(2026, 11, 22, 16, 0),
        "2026-11-22T07:05:07": datetime(2026, 11, 22, 7, 5, 7),
        "x2026/11/22 10:00": None,  # the date must open the text
        "2026/1/22 10:00": None,  # two-digit month only
        "2026-11-22T25:00:00+08:00": None,
    }
    plain = [f"2026-11-{d:02d} 12:00:00" for d in range(1, 29)] * 20
    raw = pl.Series([*plain[:300], *odd, *plain[300:]])
    got = pl.select(parse_timestamp(pl.lit(raw), "Asia/Shanghai")).to_series().to_list()
    assert got[300 : 300 + len(odd)] == list(odd.values())
    assert got[:300] + got[300 + len(odd) :] == [
        datetime(2026, 11, int(p[8:10]), 12) for p in plain
    ]


def test_bom_crlf_quoted_newlines_and_spreadsheet_guards(tmp_path: Path) -> None:
    text = (
        "\ufeff" + HEADER + "\r\n"
        '"=""123456789012345""",tmall,taobao_ouid,\'0099,,2026-11-20 10:00:00,"1,200.50",,,,"帐\n篷"\r\n'
    )
    write(tmp_path / "orders" / "o.csv", text)
    row = ingest(tmp_path).tables["orders"].row(0, named=True)
    assert row["order_id"] == "123456789012345"
    assert row["buyer_id"] == "0099"
    assert row["amount"] == 1200.5


def test_events_dedup_by_event_id_and_messages_by_msg_id(tmp_path: Path) -> None:
    write(
        tmp_path / "events" / "e.csv",
        "user_id_type,user_id,ts,event,category,event_id\n"
        "openid,o1,2026-11-20 10:00:00,view,帐篷,e1\n"
        "openid,o1,2026-11-20 10:00:01,view,帐篷,e1\n"
        "openid,o1,2026-11-20 10:00:02,view,帐篷,\n"
        "openid,o1,2026-11-20 10:00:03,view,帐篷,\n",
    )
    r = ingest(tmp_path)
    c = r.counts["events"]
    assert (c.read, c.accepted, c.duplicates) == (
        4,
        3,
        1,
    )  # rows without event_id are never duplicates


def test_wecom_archive_is_read_as_messages(tmp_path: Path) -> None:
    lines = [
        {
            "msgid": "m1",
            "action": "send",
            "from": "wmA1234567890",
            "tolist": ["wmB"],
            "roomid": "r1",
            "msgtime": 1763827200000,
            "msgtype": "text",
            "text": {"content": "周末去营地过夜，有人一起吗"},
        },
        {
            "msgid": "m2",
            "action": "recall",
            "from": "wmA1234567890",
            "roomid": "r1",
            "msgtime": 1763827200000,
        },
        {
            "msgid": "m1",
            "action": "send",
            "from": "wmA1234567890",
            "roomid": "r1",
            "msgtime": 1763827200000,
            "msgtype": "text",
            "text": {"content": "dup"},
        },
    ]
    body = "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n{broken\n"
    write(tmp_path / "messages" / "archive.jsonl", body)
    r = ingest(tmp_path)
    c = r.counts["messages"]
    assert (c.read, c.accepted, c.rejected, c.duplicates, c.skipped) == (4, 1, 1, 1, 1)
    row = r.tables["messages"].row(0, named=True)
    assert row["sender_id_type"] == "wecom_external_userid"
    assert row["ts"] == datetime(2025, 11, 23, 0, 0)  # 2025-11-22T16:00Z in Shanghai
    assert row["text"] == "dup"  # the last write of msg m1 wins


@pytest.mark.parametrize("tz", ["Asia/Shanghai", "America/New_York"])
@pytest.mark.parametrize("mixed", [False, True])
def test_wecom_msgtime_is_local_time_whether_or_not_every_value_is_epoch_ms(
    tmp_path: Path, tz: str, mixed: bool
) -> None:
    """A file whose msgtime is all epoch milliseconds is converted at once (no text written and
    parsed back); one other value sends the file the text way. Both agree with the standard
    library, and the odd value is a reject with its reason."""
    import random
    from datetime import UTC
    from zoneinfo import ZoneInfo

    rng = random.Random(7 + mixed)
    # 13 digits (2001-09-09 .. 2036: a shorter number is no time in milliseconds, see
    # test_bad_values), DST changes of New York among them (Polars has no DST rules past
    # 2037, the standard library has: later times only in Shanghai)
    times = [rng.randrange(10**12, 2_100_000_000_000) for _ in range(300)]
    times += [1762063199999, 1762063200000, 1762066800000, 1741503600000, 10**12]
    if tz == "Asia/Shanghai":
        times += [rng.randrange(10**12, 10**13) for _ in range(50)] + [10**13 - 1]
    lines = [
        {"msgid": f"m{i}", "action": "send", "from": "wmA", "roomid": "r", "msgtime": ms}
        for i, ms in enumerate(times)
    ]
    if mixed:
        lines.append({"msgid": "odd", "action": "send", "from": "wmA", "msgtime": "yesterday"})
        lines.append({"msgid": "iso", "action": "send", "from": "wmA", "msgtime": "2026-11-20"})
    body = "\n".join(json.dumps(x) for x in lines) + "\n"
    write(tmp_path / "messages" / "archive.jsonl", body)
    r = ingest(tmp_path, tz=tz)
    got = dict(r.tables["messages"].select("msg_id", "ts").iter_rows())
    local = ZoneInfo(tz)
    for i, ms in enumerate(times):
        want = datetime.fromtimestamp(ms / 1000, UTC).astimezone(local).replace(tzinfo=None)
        # (fromtimestamp of a float may be off by a microsecond: compare to the millisecond)
        assert abs((got[f"m{i}"] - want).total_seconds()) < 1e-3, (ms, got[f"m{i}"], want)
        assert got[f"m{i}"].microsecond % 1000 == 0
    rejects = r.rejects["messages"]
    if mixed:
        assert got["iso"] == datetime(2026, 11, 20)
        assert rejects.select("column", "value", "reason").rows() == [
            ("ts", "yesterday", "unparseable timestamp")
        ]
    else:
        assert rejects.height == 0


def test_taobao_seller_gbk_export(tmp_path: Path) -> None:
    shutil.copy(
        FIXTURES / "ExportOrderList_202611.csv", write(tmp_path / "orders" / "x", b"").parent
    )
    (tmp_path / "orders" / "x").unlink()
    r = ingest(
        tmp_path,
        adapters=list(builtin_adapters().values()),
        categories=["帐篷", "登山鞋", "营地灯", "滑雪镜", "速干衣"],
    )
    c = r.counts["orders"]
    assert (c.read, c.accepted, c.rejected, c.skipped) == (5, 3, 1, 1)
    assert c.skip_reasons == {"订单状态 is '等待买家付款'": 1}
    orders = r.tables["orders"].sort("order_id")
    assert orders["order_id"].to_list() == [
        "3356712345678901234",
        "3356712345678901235",
        "3356712345678901237",
    ]
    assert orders["status"].to_list() == ["paid", "paid", "cancelled"]
    assert orders["category"].to_list() == ["帐篷", "登山鞋", "滑雪镜"]
    assert set(orders["buyer_id_type"]) == {"taobao_nick"}
    assert (
        orders["phone_sha256"].null_count() == 1
    )  # the masked 138****5678 is rejected as an identifier
    assert r.identifier_rejects.height == 1
    assert r.rejects["orders"]["reason"].to_list() == ["not a number"]


def test_sku_categories_are_read_beside_the_file_that_names_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf [brand]"  # brackets: the path must not be read as a pattern
    write(conf / "skus.csv", "sku,category\nS1,登山鞋\n")
    adapter = 'table = "orders"\nfiles = ["shop_*.csv"]\nsku_categories = "skus.csv"\n'
    write(conf / "segments.toml", "[ingest.adapters.shop]\n" + adapter)
    write(conf / "adapters" / "shop2.toml", 'name = "shop2"\n' + adapter.replace("shop_", "s2_"))
    write(conf / "adapters" / "skus.csv", "sku,category\nS1,速干衣\n")
    text = HEADER + ",sku\n" + GOOD + ",S1\n" + GOOD.replace("o1", "o2") + ",S9\n"
    write(tmp_path / "in" / "orders" / "shop_1.csv", text)
    write(tmp_path / "in2" / "orders" / "s2_1.csv", text)
    cfg = load_config(conf / "segments.toml")
    cfg = cfg.model_copy(
        update={"ingest": cfg.ingest.model_copy(update={"adapter_files": ["adapters/shop2.toml"]})}
    )
    monkeypatch.chdir(tmp_path)  # not where the SKU files are
    adapters = list(cfg.adapters().values())
    inline = ingest(tmp_path / "in", adapters=adapters).tables["orders"].sort("order_id")
    assert inline["category"].to_list() == ["登山鞋", "帐篷"]  # S9 is not in the file: kept
    in_file = ingest(tmp_path / "in2", adapters=adapters).tables["orders"].sort("order_id")
    assert in_file["category"].to_list() == ["速干衣", "帐篷"]


def test_missing_required_column_is_one_clear_error(tmp_path: Path) -> None:
    write(tmp_path / "orders" / "o.csv", "order_id,source\no1,tmall\n")
    with pytest.raises(DataError, match=r"orders/o.csv: missing required column 'buyer_id_type'"):
        ingest(tmp_path)


def test_unreadable_files_are_clear_errors(tmp_path: Path) -> None:
    write(tmp_path / "orders" / "o.parquet", b"PAR1 not really")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        ingest(tmp_path)
    (tmp_path / "orders" / "o.parquet").unlink()
    write(tmp_path / "orders" / "o.csv.gz", b"\x1f\x8b truncated")
    with pytest.raises(DataError, match="cannot read the file"):
        ingest(tmp_path)


def test_no_usable_table_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "orders").mkdir()
    with pytest.raises(DataError, match="no usable table"):
        ingest(tmp_path)
    with pytest.raises(DataError, match="no such input folder"):
        ingest(tmp_path / "nope")


def test_a_gbk_file_without_its_adapter_gets_a_hint(tmp_path: Path) -> None:
    """The GBK seller-centre export under another name: its text is detected as GBK (the
    columns are named right in the error) and the error names the adapter that reads them."""
    write(
        tmp_path / "orders" / "export.csv", (FIXTURES / "ExportOrderList_202611.csv").read_bytes()
    )
    with pytest.raises(DataError, match=r"found columns: 订单编号.*--adapter taobao_seller") as e:
        ingest(tmp_path)
    assert "orders/export.csv" in str(e.value) and "\n" not in str(e.value)
    forced = builtin_adapters()["taobao_seller"]
    assert ingest(tmp_path, forced_adapter=forced).counts["orders"].accepted == 3
