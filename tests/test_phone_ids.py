"""Identifiers and keys that hold a phone number: stored hashed (`contract.hide_phone_id`),
with every identity outcome as on the raw value: blocked values still block, a value that
fails its type's pattern is still refused, a device id that is no device id is refused and
never kept raw, the engine's own prefixes are refused when an input gives them, and a map
written before the hashing (raw ids) keeps its people's one_ids."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl

from segments.identity import build_identity, lookup
from segments.ingest import ingest
from segments.settings.identity import IdentityConfig

PHONE = "13800001111"


def stored(value: str, prefix: str = "sha256-") -> str:
    """The documented stored form, written independently of the engine."""
    return (prefix + hashlib.sha256(value.encode()).hexdigest())[:64]


def _write(root: Path, orders: list[str], links: list[str]) -> Path:
    (root / "orders").mkdir(parents=True)
    (root / "identities").mkdir()
    (root / "orders" / "o.csv").write_text(
        "order_id,source,buyer_id_type,buyer_id,phone,paid_at,amount\n" + "\n".join(orders) + "\n"
    )
    (root / "identities" / "l.csv").write_text(
        "id_type_a,id_a,id_type_b,id_b,source,observed_at\n" + "\n".join(links) + "\n"
    )
    return root


def _build(root: Path, cfg: IdentityConfig, previous: pl.DataFrame | None = None):
    tables = ingest(root, identity=cfg).tables
    return build_identity({k: v.lazy() for k, v in tables.items()}, cfg, previous=previous)


def _no_raw(result, *raws: str) -> None:
    for frame in (result.one_id_map, result.rejected_ids, result.rejected_links):
        text = str(frame.rows())
        for raw in raws:
            assert raw not in text


def test_a_blocked_value_that_is_a_phone_still_blocks(tmp_path: Path) -> None:
    """Three orders of member id 13800001111 with three receiver phones: blocked, the phones
    stay three people (without the block, one person holding all three)."""
    root = _write(
        tmp_path / "in",
        [f"o{i},store,member_id,{PHONE},1390000000{i},2026-11-20 10:00:00,10" for i in range(1, 4)],
        [],
    )
    open_cfg = IdentityConfig()
    merged = _build(root, open_cfg).one_id_map
    assert merged["one_id"].n_unique() == 1 and merged.height == 4  # the member and 3 phones
    cfg = IdentityConfig(blocked_values=(*open_cfg.blocked_values, PHONE))
    result = _build(root, cfg)
    assert result.one_id_map["one_id"].n_unique() == 3
    assert "member_id" not in set(result.one_id_map["id_type"])
    refused = result.rejected_ids.filter(pl.col("id_type") == "member_id")
    assert set(refused["id"]) == {stored(PHONE)}
    assert set(refused["reason"]) == {"blocked_value"}
    _no_raw(result, PHONE)


def test_a_device_id_that_is_a_phone_is_refused_and_kept_hashed(tmp_path: Path) -> None:
    root = _write(
        tmp_path / "in",
        [],
        [
            "unionid,oUNION0000001,imei,13812345678,sdk,2026-11-01 10:00:00",
            "unionid,oUNION0000002,oaid,+86 139-1234-5678,sdk,2026-11-01 10:00:00",
            "unionid,oUNION0000003,imei,861234567890123,sdk,2026-11-01 10:00:00",
        ],
    )
    result = _build(root, IdentityConfig())
    refused = dict(result.rejected_ids.select("id", "reason").iter_rows())
    assert refused[stored("13812345678", "sha256~")] == "pattern:imei"
    assert refused[stored("+86 139-1234-5678", "sha256~")] == "pattern:oaid"
    # a real IMEI (15 digits, no phone in it) is kept as given
    assert "861234567890123" in set(result.one_id_map["id"])
    _no_raw(result, "13812345678", "139-1234-5678")


def test_the_engines_prefixes_are_refused_when_an_input_gives_them(tmp_path: Path) -> None:
    """`sha256-` and `sha256~` are the engine's: a member id given with one could pass for a
    hashed id (and merge with the person whose phone-holding id hashes to it)."""
    fake = stored(PHONE)
    root = _write(
        tmp_path / "in",
        [
            f"o1,store,member_id,{fake},13900000001,2026-11-20 10:00:00,10",
            f"o2,store,member_id,{PHONE},13900000002,2026-11-20 10:00:00,10",
            "o3,store,member_id,sha256-!! not a member id,13900000003,2026-11-20 10:00:00,10",
        ],
        [],
    )
    result = _build(root, IdentityConfig())
    members = result.one_id_map.filter(pl.col("id_type") == "member_id")
    assert set(members["id"]) == {stored(PHONE)}  # the real one only
    owner = members["one_id"].item()
    phones = result.one_id_map.filter(pl.col("one_id") == owner)
    assert phones.height == 2  # the member and o2's phone: o1's phone is not merged in
    refused = result.rejected_ids.filter(pl.col("id_type") == "member_id")
    assert set(refused["id"]) == {
        stored(fake, "sha256~"),
        stored("sha256-!! not a member id", "sha256~"),
    }
    assert set(refused["reason"]) == {"pattern:member_id"}


def test_a_map_written_raw_before_the_hashing_keeps_its_one_ids(tmp_path: Path) -> None:
    """A workspace built before 2026-12-07 holds such ids raw in last week's map: read in their
    stored form, their people keep their one_ids (a person known only by them would get a new
    one otherwise), and a lookup by the raw value finds them in either map."""
    root = _write(
        tmp_path / "in",
        [f"o1,store,member_id,{PHONE},,2026-11-20 10:00:00,10"],
        ["member_id,M0000001,taobao_ouid,tbOUID0001,crm,2026-11-01 10:00:00"],
    )
    first = _build(root, IdentityConfig()).one_id_map
    old = first.with_columns(
        pl.when(pl.col("id") == stored(PHONE))
        .then(pl.lit(PHONE))
        .otherwise(pl.col("id"))
        .alias("id")
    )
    renumbered = old.with_columns(
        ("U_OLD_" + pl.col("one_id").rank("dense").cast(pl.String)).alias("one_id")
    )
    again = _build(root, IdentityConfig(), previous=renumbered)
    was = dict(renumbered.select("id", "one_id").iter_rows())
    now = dict(again.one_id_map.select("id", "one_id").iter_rows())
    assert now[stored(PHONE)] == was[PHONE]
    assert now["M0000001"] == was["M0000001"]
    assert set(again.changes.filter(pl.col("event") == "new")["one_id"]) == set()
    # the raw value finds the person in the old map and in the new one
    assert set(lookup(old, "member_id", PHONE)["one_id"]) == set(
        first.filter(pl.col("id") == stored(PHONE))["one_id"]
    )
    assert set(lookup(again.one_id_map, "member_id", PHONE)["one_id"]) == {was[PHONE]}
