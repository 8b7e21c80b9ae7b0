"""Found by an audit that fed ingest awkward files: a contract column named both as written and
in another case (one of the two read unseen), raw phones kept in open text codes (`sku`, an
event name, a link's `source`) and a quantity too large to hold exactly. Every expected value
is written out here."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from segments.cli import cli
from segments.errors import DataError
from segments.ingest import ingest

PHONE = "13812340002"


def _input(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "in"
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text, "utf-8")
    return folder


def stored(value: str) -> str:
    """The documented stored form of a value that holds a phone, written independently."""
    return ("sha256-" + hashlib.sha256(value.encode()).hexdigest())[:64]


def test_a_contract_column_given_as_written_and_in_another_case_is_an_error(
    tmp_path: Path,
) -> None:
    # `status` beside `Status`: the folded name was left out unseen (refunded read as paid)
    folder = _input(
        tmp_path,
        {
            "orders/o.csv": "order_id,source,buyer_id_type,buyer_id,paid_at,amount,status,Status\n"
            "h1,tmall,member_id,m1,2026-11-20 10:00:00,100,,refunded\n"
        },
    )
    result = CliRunner().invoke(cli, ["validate", "--input", str(folder)])
    assert result.exit_code != 0
    assert result.stderr.strip().splitlines() == [
        "DataError: orders/o.csv: the header holds 'status' and 'Status', both read as the "
        "column 'status'; rename or remove one of them."
    ]


def test_json_lines_that_name_a_column_in_two_cases_are_an_error(tmp_path: Path) -> None:
    # one line says `status`, the next `Status`: the second order once read as paid
    base = {
        "source": "tmall",
        "buyer_id_type": "member_id",
        "buyer_id": "m1",
        "paid_at": "2026-11-20 10:00:00",
        "amount": 100,
    }
    lines = [{**base, "order_id": "o1", "status": "paid"}, {**base, "order_id": "o2"}]
    lines[1]["Status"] = "refunded"
    folder = _input(tmp_path, {"orders/o.jsonl": "".join(json.dumps(x) + "\n" for x in lines)})
    with pytest.raises(DataError, match=r"'status' and 'Status', both read as the column 'status'"):
        ingest(folder)


def test_a_phone_in_a_sku_an_event_name_or_a_link_source_is_never_stored(
    tmp_path: Path,
) -> None:
    # such values were kept raw in the cache, the state files and the identity map's sources;
    # they are stored as a record key that holds a phone is (equal values stay equal)
    folder = _input(
        tmp_path,
        {
            "orders/o.csv": "order_id,source,buyer_id_type,buyer_id,paid_at,amount,sku\n"
            f"o1,tmall,member_id,m1,2026-11-20 10:00:00,100,{PHONE}\n"
            f"o2,tmall,member_id,m1,2026-11-20 10:00:00,100,SKU-{PHONE}\n"
            "o3,tmall,member_id,m1,2026-11-20 10:00:00,100,SKU-1\n",
            "events/e.csv": "user_id_type,user_id,ts,event\n"
            f"member_id,m1,2026-11-20 10:00:00,{PHONE}\n"
            "member_id,m1,2026-11-20 10:00:00,VIEW\n",
            "identities/l.csv": "id_type_a,id_a,id_type_b,id_b,source\n"
            f"member_id,m1,openid,oX1,{PHONE}\n"
            "member_id,m1,openid,oX2,crm\n",
        },
    )
    got = ingest(folder)
    assert got.tables["orders"].get_column("sku").to_list() == [
        stored(PHONE),
        stored(f"SKU-{PHONE}"),
        "SKU-1",
    ]
    assert got.tables["events"].get_column("event").to_list() == [stored(PHONE), "view"]
    assert got.tables["identities"].get_column("source").to_list() == [stored(PHONE), "crm"]
    assert all(c.rejected == 0 for c in got.counts.values())


def test_a_quantity_too_large_to_hold_exactly_is_out_of_range(tmp_path: Path) -> None:
    # 9007199254740993 (2^53 + 1) was kept as 9007199254740992
    folder = _input(
        tmp_path,
        {
            "orders/o.csv": "order_id,source,buyer_id_type,buyer_id,paid_at,amount,quantity\n"
            "o1,tmall,member_id,m1,2026-11-20 10:00:00,100,9007199254740993\n"
            "o2,tmall,member_id,m1,2026-11-20 10:00:00,100,9007199254740991\n"
        },
    )
    got = ingest(folder)
    assert got.tables["orders"].select("order_id", "quantity").rows() == [("o2", 9007199254740991)]
    assert got.rejects["orders"].select("row", "column", "value", "reason").rows() == [
        (1, "quantity", "9007199254740993", "out of range")
    ]
