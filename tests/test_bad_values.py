"""Values that once changed silently, were dropped unseen or stopped a run with a traceback
(found by a review that fed ingest awkward files): each is now read as written, or rejected
with its reason, or stops the run with one line. Every expected value is written out here."""

from __future__ import annotations

import gzip
import json
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from segments.cli import cli
from segments.contract import mask_value
from segments.errors import DataError
from segments.ingest import ingest
from segments.ingest.parse import mask_phones

HEAD = "order_id,source,buyer_id_type,buyer_id,paid_at,amount,quantity\n"


def _input(tmp_path: Path, table: str, text: str, name: str = "x.csv") -> Path:
    """An input folder holding one file of `table` with `text`."""
    folder = tmp_path / "in"
    (folder / table).mkdir(parents=True, exist_ok=True)
    (folder / table / name).write_text(text, "utf-8")
    return folder


def _orders(tmp_path: Path, rows: list[str], name: str = "o.csv") -> Path:
    folder = tmp_path / "in"
    (folder / "orders").mkdir(parents=True, exist_ok=True)
    (folder / "orders" / name).write_text(HEAD + "".join(r + "\n" for r in rows), "utf-8")
    return folder


def _read(folder: Path, table: str = "orders") -> tuple[list[tuple], list[tuple]]:
    got = ingest(folder)
    id_col = {"orders": "order_id", "messages": "msg_id", "events": "user_id"}[table]
    accepted = got.tables[table].select(id_col).to_series().sort().to_list()
    rejects = got.rejects[table].sort("row").select("row", "column", "value", "reason").rows()
    return accepted, rejects


def test_only_commas_that_group_thousands_are_taken_out_of_a_number(tmp_path: Path) -> None:
    # `12,50` is a decimal comma (once 1250.0), `1,2,3` no number (once 123), quantity `1,5`
    # once 15; `1,234.50`, `¥99`, ` CNY 5 ` and `1e3` are numbers.
    folder = _orders(
        tmp_path,
        [
            'a1,tmall,member_id,m1,2026-11-20 10:00:00,"12,50",1',
            'a2,tmall,member_id,m1,2026-11-20 10:00:00,"1.234,50",1',
            'a3,tmall,member_id,m1,2026-11-20 10:00:00,"1,2,3",1',
            'a4,tmall,member_id,m1,2026-11-20 10:00:00,10,"1,5"',
            'a5,tmall,member_id,m1,2026-11-20 10:00:00,"1 234",1',
            'b1,tmall,member_id,m1,2026-11-20 10:00:00,"1,234.50",1',
            "b2,tmall,member_id,m1,2026-11-20 10:00:00,¥99,1",
            "b3,tmall,member_id,m1,2026-11-20 10:00:00, CNY 5 ,1",
            "b4,tmall,member_id,m1,2026-11-20 10:00:00,1e3,2",
        ],
    )
    got = ingest(folder)
    orders = got.tables["orders"].sort("order_id")
    assert orders.select("order_id", "amount", "quantity").rows() == [
        ("b1", 1234.5, 1),
        ("b2", 99.0, 1),
        ("b3", 5.0, 1),
        ("b4", 1000.0, 2),
    ]
    assert got.rejects["orders"].sort("row").select("row", "column", "value", "reason").rows() == [
        (1, "amount", "12,50", "not a number"),
        (2, "amount", "1.234,50", "not a number"),
        (3, "amount", "1,2,3", "not a number"),
        (4, "quantity", "1,5", "not a number"),
        (5, "amount", "1 234", "not a number"),
    ]


def test_money_beyond_what_a_cent_sum_holds_is_out_of_range(tmp_path: Path) -> None:
    # 1e17 CNY once stopped the week (an Int64 cast of cents); 5e16 twice wrapped a person's
    # monetary_52w to a negative sum. A value of 10^12 CNY or more is a typo.
    folder = _orders(
        tmp_path,
        [
            "a1,tmall,member_id,m1,2026-11-20 10:00:00,1e17,1",
            "a2,tmall,member_id,m1,2026-11-20 10:00:00,50000000000000000,1",
            "b1,tmall,member_id,m1,2026-11-20 10:00:00,999999999999,1",
        ],
    )
    accepted, rejects = _read(folder)
    assert accepted == ["b1"]
    assert rejects == [
        (1, "amount", "1e17", "out of range"),
        (2, "amount", "50000000000000000", "out of range"),
    ]


def test_a_timestamp_needs_four_year_digits_real_seconds_and_a_real_offset(
    tmp_path: Path,
) -> None:
    # once: the year 0026, offsets of +25:00 and +99:99 applied as written, 10:00:60 read as
    # 10:01:00. The offsets in use (to +14:00) and `Z` still read.
    folder = _orders(
        tmp_path,
        [
            "a1,tmall,member_id,m1,26-11-20 10:00:00,1,1",
            "a2,tmall,member_id,m1,2026-11-20T10:00:00+25:00,1,1",
            "a3,tmall,member_id,m1,2026-11-20 10:00:00+99:99,1,1",
            "a4,tmall,member_id,m1,2026-11-20 10:00:60,1,1",
            "a5,tmall,member_id,m1,2026-11-20 10:00:00+08:60,1,1",
            "b1,tmall,member_id,m1,2026-11-20T02:00:00Z,1,1",
            "b2,tmall,member_id,m1,2026-11-20 10:00:00+14:00,1,1",
            "b3,tmall,member_id,m1,2026-11-20 10:00:59.5,1,1",
        ],
    )
    got = ingest(folder)
    assert got.tables["orders"].sort("order_id").select("order_id", "paid_at").rows() == [
        ("b1", datetime(2026, 11, 20, 10, 0)),  # Asia/Shanghai
        ("b2", datetime(2026, 11, 20, 4, 0)),
        ("b3", datetime(2026, 11, 20, 10, 0, 59, 500000)),
    ]
    reasons = got.rejects["orders"].sort("row").select("row", "reason").rows()
    assert reasons == [(r, "unparseable timestamp") for r in range(1, 6)]


def test_a_reject_shows_the_value_of_the_column_that_failed(tmp_path: Path) -> None:
    # Once the value of the next failed check stood in for an empty one: row 1 showed the
    # amount under paid_at, row 2 a raw phone (the buyer id) under order_id.
    folder = _input(
        tmp_path,
        "orders",
        "order_id,source,buyer_id_type,buyer_id,paid_at,amount\n"
        "a1,tmall,member_id,m1,,-5\n"
        ",tmall,phone,139.1111.0077,2026-11-20 10:00:00,1\n",
    )
    _, rejects = _read(folder)
    assert rejects == [
        (1, "paid_at", None, "required value missing"),
        (2, "order_id", None, "required value missing"),
    ]


MSG_HEAD = "msg_id,sender_id,ts,text,mentions\n"


def _messages(tmp_path: Path, rows: list[str]) -> Path:
    folder = tmp_path / "in"
    (folder / "messages").mkdir(parents=True, exist_ok=True)
    (folder / "messages" / "m.csv").write_text(MSG_HEAD + "".join(r + "\n" for r in rows), "utf-8")
    return folder


def test_mentions_that_are_no_json_list_are_rejected_not_a_crash(tmp_path: Path) -> None:
    # Each of the first three stopped validate with an InternalError (exit 70): one row's
    # text could not be decoded, and the whole file stopped.
    folder = _messages(
        tmp_path,
        [
            'm1,wm1,2026-11-20 10:00:00,hi,"[wm2, wm3]"',
            'm2,wm1,2026-11-20 10:00:00,hi,"[""a"", [""b""]]"',
            'm3,wm1,2026-11-20 10:00:00,hi,"[""\\x""]"',
            'n1,wm1,2026-11-20 10:00:00,hi,"[""wm\'o""]"',
            "n2,wm1,2026-11-20 10:00:00,hi,\"['wm2', 'wm3']\"",
            'n3,wm1,2026-11-20 10:00:00,hi,"[12, ""wm4""]"',
            'n4,wm1,2026-11-20 10:00:00,hi,"wm5;wm6 wm7"',
        ],
    )
    got = ingest(folder)
    kept = got.tables["messages"].sort("msg_id").select("msg_id", "mentions").rows()
    assert kept == [
        ("n1", ["wm'o"]),
        ("n2", ["wm2", "wm3"]),
        ("n3", ["12", "wm4"]),
        ("n4", ["wm5", "wm6", "wm7"]),
    ]
    rejects = got.rejects["messages"].sort("row").select("row", "column", "value", "reason")
    assert rejects.rows() == [
        (1, "mentions", "[wm2, wm3]", "not a JSON list of ids"),
        (2, "mentions", '["a", ["b"]]', "not a JSON list of ids"),
        (3, "mentions", '["\\x"]', "not a JSON list of ids"),
    ]
    result = CliRunner().invoke(cli, ["validate", "--input", str(folder)])
    assert result.exit_code == 0, result.output


def test_a_file_of_a_type_that_cannot_be_read_stops_the_run_with_one_line(
    tmp_path: Path,
) -> None:
    # once left out unseen; markers of an export (`_SUCCESS`) and hidden files still are,
    # and gzipped .ndjson / .json lines are read as .jsonl.gz is
    folder = _orders(tmp_path, ["a1,tmall,member_id,m1,2026-11-20 10:00:00,10,1"])
    (folder / "orders" / "_SUCCESS").write_text("")
    (folder / "orders" / ".o.csv.crc").write_text("x")
    line = {
        "order_id": "j1",
        "source": "jd",
        "buyer_id_type": "jd_pin",
        "buyer_id": "p1",
        "paid_at": "2026-11-21 09:00:00",
        "amount": 5,
    }
    (folder / "orders" / "more.ndjson.gz").write_bytes(gzip.compress(json.dumps(line).encode()))
    line["order_id"] = "j2"
    (folder / "orders" / "more2.json.gz").write_bytes(gzip.compress(json.dumps(line).encode()))
    accepted, rejects = _read(folder)
    assert sorted(accepted) == ["a1", "j1", "j2"] and rejects == []
    (folder / "orders" / "notes.txt").write_text("a1 was a test order")
    with pytest.raises(DataError, match=r"notes\.txt: unknown file type; use \.csv"):
        ingest(folder)
    result = CliRunner().invoke(cli, ["validate", "--input", str(folder)])
    assert result.exit_code != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert "notes.txt: unknown file type" in result.stderr


PHONE_FORMS = (
    "139－1111－0017",  # full-width hyphens, as Chinese input methods type them
    "139.1111.0006",
    "139/1111/0012",
    "139_1111_0007",
    "139–1111–0008",
    "(139)1111-0010",
    "（139）1111 0011",
    "139．1111／0013",
    "1 3 9 1 1 1 1 0 0 0 9",
    "+86 139 1111 0001",
    "8613911110002",
)


@pytest.mark.parametrize("form", PHONE_FORMS)
def test_a_phone_written_with_any_separator_is_masked_in_text(form: str) -> None:
    # once only spaces and ASCII hyphens were seen: the rest stayed raw in chat, queries and
    # categories (the validated cache, the person state), and in reject values
    text = f"加我 {form} 谢谢"
    for masked in (mask_value(text, False), pl.select(mask_phones(pl.lit(text))).item()):
        assert "<phone>" in masked and "1111" not in masked, masked


@pytest.mark.parametrize(
    "text", ["price 139.99", "sku 12345678901", "5513911110001", "2026.11.20 13:45", "1 3 9"]
)
def test_what_is_no_mobile_number_is_left_as_it_is(text: str) -> None:
    assert mask_value(text, False) == text
    assert pl.select(mask_phones(pl.lit(text))).item() == text


def test_no_error_message_shows_a_phone_from_a_header(tmp_path: Path) -> None:
    # an export without its header row: its first record's phone was printed as a column name
    folder = tmp_path / "in"
    (folder / "orders").mkdir(parents=True)
    (folder / "orders" / "o.csv").write_text(
        "3000000000000080669,tmall,taobao_ouid,AAC8w,18555154995,2024-11-26 12:50:58,879.00\n"
    )
    result = CliRunner().invoke(cli, ["validate", "--input", str(folder)])
    assert result.exit_code != 0 and "missing required column" in result.stderr
    assert "18555154995" not in result.stderr and "<phone>" in result.stderr
    (folder / "orders" / "o.csv").write_text(
        "3000000000000080669,tmall,phone,18555154995,18555154995,2024-11-26 12:50:58\n"
    )
    result = CliRunner().invoke(cli, ["validate", "--input", str(folder)])
    assert "repeats the column name '<phone>'" in result.stderr
    assert "18555154995" not in result.stderr


def test_a_wecom_time_in_seconds_is_no_time_in_milliseconds(tmp_path: Path) -> None:
    # msgtime is epoch milliseconds (13 digits); 10 or 12 digits once gave 1970 and 1975
    folder = tmp_path / "in"
    (folder / "messages").mkdir(parents=True)
    lines = [
        {"msgid": "w1", "from": "wm1", "msgtime": 1763604000, "msgtype": "text"},
        {"msgid": "w2", "from": "wm1", "msgtime": 176360400000, "msgtype": "text"},
        {"msgid": "w3", "from": "wm1", "msgtime": 1763604000000, "msgtype": "text"},
    ]
    (folder / "messages" / "a.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    got = ingest(folder)
    assert got.tables["messages"].select("msg_id", "ts").rows() == [
        ("w3", datetime(2025, 11, 20, 10, 0)),  # 2025-11-20 02:00 UTC, Asia/Shanghai
    ]
    rejects = got.rejects["messages"].sort("row").select("row", "column", "value", "reason")
    assert rejects.rows() == [
        (1, "ts", "1763604000", "unparseable timestamp"),
        (2, "ts", "176360400000", "unparseable timestamp"),
    ]


def test_event_names_are_matched_whatever_their_case(tmp_path: Path) -> None:
    # `VIEW` and ` Add_Cart ` were kept as unknown events that weigh nothing
    folder = _input(
        tmp_path,
        "events",
        "user_id_type,user_id,ts,event\n"
        "openid,o1,2026-11-20 10:00:00,VIEW\n"
        "openid,o1,2026-11-20 10:01:00, Add_Cart \n"
        "openid,o1,2026-11-20 10:02:00,Custom_Thing\n",
    )
    got = ingest(folder)
    assert got.tables["events"].sort("ts")["event"].to_list() == [
        "view",
        "add_cart",
        "custom_thing",
    ]
    # and validate names what it does not know
    result = CliRunner().invoke(cli, ["validate", "--input", str(folder), "--json"])
    assert json.loads(result.stdout)["unknown_events"] == {"custom_thing": 1}
    text = CliRunner().invoke(cli, ["validate", "--input", str(folder)]).stdout
    assert "event names outside the contract's" in text and "custom_thing (1)" in text


def test_a_contract_column_named_in_another_case_or_with_spaces_is_read(tmp_path: Path) -> None:
    # `Status`, ` refund` and `Category` were left out unseen: a refunded order read as paid
    folder = _input(
        tmp_path,
        "orders",
        "order_id,source,buyer_id_type,buyer_id,paid_at,amount,Status, refund,Category\n"
        "h1,tmall,member_id,m1,2026-11-20 10:00:00,100,refunded,100,帐篷\n",
        "o.csv",
    )
    got = ingest(folder)
    assert got.tables["orders"].select("order_id", "status", "refund", "category").rows() == [
        ("h1", "refunded", 100.0, "帐篷")
    ]
    (folder / "orders" / "o.csv").write_text(
        "order_id,source,buyer_id_type,buyer_id,paid_at,amount,Status,STATUS \n"
        "h1,tmall,member_id,m1,2026-11-20 10:00:00,100,refunded,paid\n",
        "utf-8",
    )
    result = CliRunner().invoke(cli, ["validate", "--input", str(folder)])
    assert result.exit_code != 0
    assert result.stderr.strip().splitlines() == [
        "DataError: orders/o.csv: the header holds 'Status' and 'STATUS ', both read as the "
        "column 'status'; rename or remove one of them."
    ]


def test_a_row_after_now_does_not_move_the_default_week(
    demo_input: Path, demo_run: Path, tmp_path: Path
) -> None:
    # A mistyped year (2099) once made the default as-of 2099-W47, and the run stopped with
    # "cannot fit RFM cut points". The week is that of the newest row up to now; the 2099 row
    # is counted after the as-of.
    import shutil

    from segments import pipeline
    from segments.config import load_config

    folder = tmp_path / "in"
    shutil.copytree(demo_input, folder, ignore=shutil.ignore_patterns("truth"))
    (folder / "orders" / "z_typo.csv").write_text(
        HEAD + "fut1,tmall,member_id,mfut,2099-11-20 10:00:00,10,1\n", "utf-8"
    )
    want = json.loads(next((demo_run / "runs").glob("*/manifest.json")).read_text())["week"]
    (got,) = pipeline.run(load_config(), folder, tmp_path / "out")
    assert got.week.label == want
    assert got.after_as_of["orders"] == 1


def test_a_long_integer_id_in_json_lines_keeps_every_digit(tmp_path: Path) -> None:
    # a key holding integers on some lines and a fraction on another was read as Float64 by
    # the fast reader: 12345678901234567 became ...568
    folder = tmp_path / "in"
    (folder / "orders").mkdir(parents=True)
    base = {"source": "jd", "buyer_id_type": "jd_pin", "paid_at": "2026-11-21 09:00:00"}
    lines = [
        {**base, "order_id": 12345678901234567, "buyer_id": "p1", "amount": 5},
        {**base, "order_id": 33567123456789012345, "buyer_id": "p2", "amount": 6},
        {**base, "order_id": 1.5, "buyer_id": "p3", "amount": 7},
    ]
    (folder / "orders" / "o.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    accepted, rejects = _read(folder)
    assert accepted == ["1.5", "12345678901234567", "33567123456789012345"] and rejects == []


def test_an_object_where_one_value_belongs_is_rejected(tmp_path: Path) -> None:
    # a key that is an object on one line and a value on others: the object's JSON text was
    # once taken as the buyer id (`{"id": "m1"}`), as a list is not
    base = {"source": "jd", "buyer_id_type": "jd_pin", "paid_at": "2026-11-21 09:00:00"}
    lines = [
        {**base, "order_id": "j1", "buyer_id": "m1", "amount": 5},
        {**base, "order_id": "j2", "buyer_id": {"id": "m1"}, "amount": 5},
    ]
    text = "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n"
    accepted, rejects = _read(_input(tmp_path, "orders", text, "o.jsonl"))
    assert accepted == ["j1"]
    assert rejects == [(2, "buyer_id", '{"id": "m1"}', "an object where one value belongs")]
