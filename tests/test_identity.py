"""OneID: components against networkx, the guards' traps, stable ids, attach/lookup, B-cubed."""

from __future__ import annotations

import contextlib
import hashlib
import random
import tomllib
from datetime import datetime
from pathlib import Path

import networkx as nx
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from pydantic import ValidationError

from segments.errors import DataError
from segments.identity import (
    IdentityConfig,
    attach_one_id,
    bcubed,
    build_identity,
    lookup,
)

T0 = datetime(2026, 1, 5, 10, 0)
T1 = datetime(2026, 1, 6, 10, 0)

# No guard active: every identifier is valid, no limit, no hub.
OPEN = IdentityConfig(
    blocked_values=(),
    blocked_phones=(),
    patterns={},
    max_per_person={},
    max_degree=1_000_000,
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def phone(n: int) -> str:
    """The phone_sha256 id of a made-up valid mobile number."""
    return sha(f"1391234{n:04d}")


def content_id(id_type: str, id_: str) -> str:
    return "U" + sha(f"{id_type}:{id_}")[:16]


def orders(rows: list[tuple[str, str, str | None, str]], when: datetime = T0) -> pl.LazyFrame:
    """rows: (buyer_id_type, buyer_id, phone_sha256, source)."""
    return pl.LazyFrame(
        {
            "order_id": [str(i) for i in range(len(rows))],
            "source": [r[3] for r in rows],
            "buyer_id_type": [r[0] for r in rows],
            "buyer_id": [r[1] for r in rows],
            "phone_sha256": [r[2] for r in rows],
            "paid_at": [when] * len(rows),
            "amount": [100.0] * len(rows),
        },
        schema_overrides={"phone_sha256": pl.String, "paid_at": pl.Datetime("us")},
    )


def identities(rows: list[tuple[str, str, str, str]], source: str = "crm") -> pl.LazyFrame:
    return pl.LazyFrame(
        {
            "id_type_a": [r[0] for r in rows],
            "id_a": [r[1] for r in rows],
            "id_type_b": [r[2] for r in rows],
            "id_b": [r[3] for r in rows],
            "source": [source] * len(rows),
            "observed_at": [T0] * len(rows),
        },
        schema={
            "id_type_a": pl.String,
            "id_a": pl.String,
            "id_type_b": pl.String,
            "id_b": pl.String,
            "source": pl.String,
            "observed_at": pl.Datetime("us"),
        },
    )


def events(rows: list[tuple[str, str]], when: datetime = T1) -> pl.LazyFrame:
    return pl.LazyFrame(
        {
            "user_id_type": [r[0] for r in rows],
            "user_id": [r[1] for r in rows],
            "ts": [when] * len(rows),
            "event": ["view"] * len(rows),
        },
        schema={
            "user_id_type": pl.String,
            "user_id": pl.String,
            "ts": pl.Datetime("us"),
            "event": pl.String,
        },
    )


def people(one_id_map: pl.DataFrame) -> set[frozenset[tuple[str, str]]]:
    """The clustering as a set of people, each a set of (id_type, id)."""
    groups = one_id_map.group_by("one_id").agg(pl.struct("id_type", "id").alias("ids"))
    return {frozenset((d["id_type"], d["id"]) for d in ids) for ids in groups["ids"].to_list()}


def one_id_of(one_id_map: pl.DataFrame, id_type: str, id_: str) -> str:
    return one_id_map.filter((pl.col("id_type") == id_type) & (pl.col("id") == id_))[
        "one_id"
    ].item()


# ---------------------------------------------------------------------------------------------
# Components


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 25),
    pairs=st.lists(st.tuples(st.integers(0, 24), st.integers(0, 24)), max_size=40),
)
def test_components_equal_networkx(n: int, pairs: list[tuple[int, int]]) -> None:
    types = ("member_id", "openid", "taobao_ouid", "unionid")
    node = [(types[i % 4], f"x{i}") for i in range(n)]
    links = [(*node[a], *node[b]) for a, b in pairs if a < n and b < n]
    graph = nx.Graph()
    graph.add_nodes_from(node)
    graph.add_edges_from((node[a], node[b]) for a, b in pairs if a < n and b < n)
    result = build_identity({"identities": identities(links), "events": events(node)}, OPEN)
    expected = {frozenset(c) for c in nx.connected_components(graph)}
    assert people(result.one_id_map) == expected
    assert result.rejected_links.height == 0
    assert result.stats["people"] == len(expected)
    # content ids: the hash of each component's smallest key
    for person in expected:
        smallest = min(f"{t}:{i}" for t, i in person)
        want = "U" + sha(smallest)[:16]
        got = {one_id_of(result.one_id_map, t, i) for t, i in person}
        assert got == {want}


TYPED = (
    ("member_id", "M{}"),
    ("unionid", "u_{:06d}"),
    ("phone_sha256", None),
    ("taobao_ouid", "tb_{:04d}"),
    ("openid", "o_{:06d}"),
)


@settings(max_examples=40, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.integers(0, 14), st.integers(0, 14)), min_size=1, max_size=60),
    max_degree=st.integers(2, 6),
)
def test_guards_hold_on_random_graphs(pairs: list[tuple[int, int]], max_degree: int) -> None:
    def node(i: int) -> tuple[str, str]:
        id_type, fmt = TYPED[i % len(TYPED)]
        return id_type, phone(i) if fmt is None else fmt.format(i)

    links = [(*node(a), *node(b)) for a, b in pairs if a != b]
    cfg = IdentityConfig(max_degree=max_degree)
    result = build_identity({"identities": identities(links)}, cfg)
    m = result.one_id_map
    # no person breaks a per-type limit
    per_type = m.group_by("one_id", "id_type").len()
    limits = pl.DataFrame(
        {"id_type": list(cfg.max_per_person), "limit": list(cfg.max_per_person.values())}
    )
    assert per_type.join(limits, on="id_type").filter(pl.col("len") > pl.col("limit")).height == 0
    # every link is either inside one person or cut, never both; cuts are real links
    distinct = {tuple(sorted([(a, b), (c, d)])) for a, b, c, d in links}
    cut = {
        ((r["id_type_a"], r["id_a"]), (r["id_type_b"], r["id_b"]))
        for r in result.rejected_links.iter_rows(named=True)
    }
    assert cut <= distinct
    assert result.stats["edges_kept"] + len(cut) == len(distinct)
    one_id = {(t, i): o for o, t, i in m.select("one_id", "id_type", "id").iter_rows()}
    for a, b in distinct - cut:
        assert one_id[a] == one_id[b]
    # a node above the degree limit keeps no link
    hubs = {
        (r["id_type_a"], r["id_a"])
        for r in result.rejected_links.filter(pl.col("reason").str.starts_with("hub")).iter_rows(
            named=True
        )
    }
    degree: dict[tuple[str, str], int] = {}
    for a, b in distinct:
        degree[a] = degree.get(a, 0) + 1
        degree[b] = degree.get(b, 0) + 1
    for end, d in degree.items():
        if d > max_degree:
            assert all(end not in pair for pair in distinct - cut)
    assert all(degree[h] > max_degree or any(h in p for p in cut) for h in hubs)


def test_aggregating_in_several_passes_gives_the_same_map() -> None:
    rows = [("taobao_ouid", f"tb_{i:05d}", phone(i % 700), "tmall") for i in range(1500)]
    one = build_identity({"orders": orders(rows)}, IdentityConfig())
    many = build_identity({"orders": orders(rows)}, IdentityConfig(rows_per_pass=1000))
    assert_frame_equal(_sorted(one.one_id_map), _sorted(many.one_id_map))
    assert one.stats["people"] == 700


def test_edges_come_from_identities_and_order_phones_only() -> None:
    result = build_identity(
        {
            "orders": orders([("taobao_ouid", "tb_alice1", phone(1), "tmall")]),
            "events": events([("openid", "o_alice_mini"), ("taobao_ouid", "tb_alice1")]),
            "identities": identities([("openid", "o_alice_mini", "unionid", "u_alice_union")]),
        },
        IdentityConfig(),
    )
    assert people(result.one_id_map) == {
        frozenset({("taobao_ouid", "tb_alice1"), ("phone_sha256", phone(1))}),
        frozenset({("openid", "o_alice_mini"), ("unionid", "u_alice_union")}),
    }


# ---------------------------------------------------------------------------------------------
# Guards


def test_parcel_station_phone_is_cut_and_buyers_stay_apart() -> None:
    station = phone(9999)
    rows = [("taobao_ouid", f"tb_buyer{i:03d}", station, "taobao") for i in range(30)]
    rows += [("taobao_ouid", "tb_buyer000", phone(1), "taobao")]  # buyer 0's own phone
    result = build_identity({"orders": orders(rows)}, IdentityConfig())
    m = result.one_id_map
    buyer_ids = {one_id_of(m, "taobao_ouid", f"tb_buyer{i:03d}") for i in range(30)}
    assert len(buyer_ids) == 30
    assert one_id_of(m, "taobao_ouid", "tb_buyer000") == one_id_of(m, "phone_sha256", phone(1))
    station_id = one_id_of(m, "phone_sha256", station)
    assert station_id not in buyer_ids  # still a node, alone
    cut = result.rejected_links
    assert cut.height == 30
    assert set(cut["reason"]) == {"hub_degree:30"}
    assert set(cut["evidence"]) == {"orders:taobao"}
    assert result.stats["cuts_by_reason"] == {"hub_degree": 30}


def test_hub_limit_counts_distinct_neighbours_not_rows() -> None:
    # 8 distinct buyers, each ordering 5 times: degree 8, not 40, so nothing is cut
    rows = [("jd_pin", f"jd_buyer_{i}", phone(7), "jd") for i in range(8) for _ in range(5)]
    cfg = IdentityConfig(max_per_person={})
    result = build_identity({"orders": orders(rows)}, cfg)
    assert result.rejected_links.height == 0
    assert result.stats["people"] == 1
    rows.append(("jd_pin", "jd_buyer_8", phone(7), "jd"))
    result = build_identity({"orders": orders(rows)}, cfg)
    assert set(result.rejected_links["reason"]) == {"hub_degree:9"}
    assert result.stats["people"] == 10


def test_placeholder_and_test_values_are_not_nodes() -> None:
    test_phone = sha("13800000000")
    result = build_identity(
        {
            "orders": orders(
                [
                    ("taobao_ouid", "null", phone(1), "tmall"),
                    ("taobao_ouid", "tb_real_buyer", test_phone, "tmall"),
                    ("member_id", "0", phone(2), "store"),
                ]
            ),
            "events": events(
                [("openid", " NULL "), ("openid", "undefined"), ("wecom_external_userid", "abc")]
            ),
        },
        IdentityConfig(),
    )
    m = result.one_id_map
    kept = set(zip(m["id_type"], m["id"], strict=True))
    assert kept == {
        ("phone_sha256", phone(1)),
        ("phone_sha256", phone(2)),
        ("taobao_ouid", "tb_real_buyer"),
    }
    rejected = {
        (r["id_type"], r["id"], r["table"], r["reason"])
        for r in result.rejected_ids.iter_rows(named=True)
    }
    assert rejected == {
        ("taobao_ouid", "null", "orders", "blocked_value"),
        ("phone_sha256", test_phone, "orders", "blocked_value"),
        ("member_id", "0", "orders", "blocked_value"),
        ("openid", " NULL ", "events", "blocked_value"),
        ("openid", "undefined", "events", "blocked_value"),
        ("wecom_external_userid", "abc", "events", "pattern:wecom_external_userid"),
    }
    links = result.rejected_links.select("id_a", "id_b", "reason").rows()
    assert sorted(links) == sorted(
        [
            (phone(1), "null", "blocked_value"),  # the smaller (id_type, id) end first
            ("0", phone(2), "blocked_value"),
            (test_phone, "tb_real_buyer", "blocked_value"),
        ]
    )
    assert result.stats["rejected_ids_by_reason"] == {
        "blocked_value": 5,
        "pattern:wecom_external_userid": 1,
    }


def test_blocked_phones_are_hashed_from_the_configured_numbers() -> None:
    cfg = IdentityConfig(blocked_values=("x",), blocked_phones=("+86 188-8888-8888",))
    assert cfg.blocked_set() == sorted(
        {"x", sha("18888888888"), hashlib.md5(b"18888888888").hexdigest()}
    )
    assert sha("13900000000") in IdentityConfig().blocked_set()


def test_one_member_with_two_phones_keeps_both() -> None:
    rows = [("member_id", "M001", phone(1), "store"), ("member_id", "M001", phone(2), "store")]
    result = build_identity({"orders": orders(rows)}, IdentityConfig())
    assert result.stats["people"] == 1
    assert result.rejected_links.height == 0


def test_two_members_through_one_phone_drop_the_weaker_link() -> None:
    rows = [
        ("member_id", "M001", phone(1), "store"),
        ("member_id", "M001", phone(1), "store"),  # seen twice: stronger
        ("member_id", "M002", phone(1), "store"),
    ]
    result = build_identity({"orders": orders(rows)}, IdentityConfig())
    m = result.one_id_map
    assert one_id_of(m, "member_id", "M001") == one_id_of(m, "phone_sha256", phone(1))
    assert one_id_of(m, "member_id", "M002") != one_id_of(m, "member_id", "M001")
    cut = result.rejected_links.row(0, named=True)
    assert result.rejected_links.height == 1
    assert cut == {
        "id_type_a": "member_id",
        "id_a": "M002",
        "id_type_b": "phone_sha256",
        "id_b": phone(1),
        "evidence": "orders:store",
        "reason": "limit:member_id>1",
    }


def test_stronger_source_wins_over_more_observations() -> None:
    # a bridge-table link beats a marketplace receiver phone seen three times
    result = build_identity(
        {
            "orders": orders([("member_id", "M002", phone(1), "tmall")] * 3),
            "identities": identities([("member_id", "M001", "phone_sha256", phone(1))]),
        },
        IdentityConfig(),
    )
    m = result.one_id_map
    assert one_id_of(m, "member_id", "M001") == one_id_of(m, "phone_sha256", phone(1))
    assert result.rejected_links.select("id_a", "reason").rows() == [("M002", "limit:member_id>1")]


def test_limit_rebuild_keeps_the_rest_of_the_component() -> None:
    # unionid U1 - member M1 - phone P - member M2 - openid O2: M2's link to P is weakest,
    # M2 and O2 stay together as their own person
    result = build_identity(
        {
            "identities": identities(
                [
                    ("unionid", "u_one_123", "member_id", "M1"),
                    ("member_id", "M1", "phone_sha256", phone(1)),
                    ("member_id", "M2", "openid", "o_two_4567"),
                ]
            ),
            "orders": orders([("member_id", "M2", phone(1), "jd")]),
        },
        IdentityConfig(),
    )
    assert people(result.one_id_map) == {
        frozenset({("unionid", "u_one_123"), ("member_id", "M1"), ("phone_sha256", phone(1))}),
        frozenset({("member_id", "M2"), ("openid", "o_two_4567")}),
    }


def test_two_taobao_accounts_on_one_phone_are_one_person() -> None:
    rows = [
        ("taobao_ouid", "tb_main", phone(5), "tmall"),
        ("taobao_ouid", "tb_alt", phone(5), "taobao"),
    ]
    result = build_identity({"orders": orders(rows)}, IdentityConfig())
    assert result.stats["people"] == 1
    assert result.rejected_links.height == 0
    row = result.one_id_map.filter(pl.col("id_type") == "phone_sha256").row(0, named=True)
    assert row["sources"] == ["orders:taobao", "orders:tmall"]


def test_first_and_last_seen_and_sources() -> None:
    result = build_identity(
        {
            "orders": orders([("taobao_ouid", "tb_someone", phone(3), "tmall")], when=T0),
            "events": events([("taobao_ouid", "tb_someone")], when=T1),
        },
        IdentityConfig(),
    )
    row = result.one_id_map.filter(pl.col("id") == "tb_someone").row(0, named=True)
    assert (row["first_seen"], row["last_seen"]) == (T0, T1)
    assert row["sources"] == ["events", "orders:tmall"]


def test_mentions_are_wecom_nodes_and_unknown_types_are_rejected() -> None:
    messages = pl.LazyFrame(
        {
            "msg_id": ["1"],
            "sender_id_type": ["wecom_external_userid"],
            "sender_id": ["wmSENDER000001"],
            "ts": [T0],
            "text": ["hi"],
            "mentions": [["wmFRIEND000002", "@all"]],
        }
    )
    result = build_identity(
        {
            "messages": messages,
            "events": events([("qq_number", "12345"), ("phone", "13912345678")]),
        },
        IdentityConfig(),
    )
    m = result.one_id_map
    assert set(m["id"]) == {"wmSENDER000001", "wmFRIEND000002"}
    assert set(m["sources"].explode()) == {"messages"}
    rejected = set(result.rejected_ids.select("id_type", "id", "reason").rows())
    assert rejected == {
        ("wecom_external_userid", "@all", "pattern:wecom_external_userid"),
        ("qq_number", "12345", "unknown_id_type"),
        ("phone", sha("13912345678"), "raw_phone"),  # never the digits
    }


def test_links_to_identifiers_that_are_not_nodes_are_recorded() -> None:
    result = build_identity(
        {
            "identities": identities(
                [
                    ("qq", "12345", "openid", "o_valid_123"),
                    ("phone", "13912345678", "openid", "o_valid_123"),
                    ("openid", "o_valid_123", "unionid", "u_valid_123"),
                ]
            )
        },
        IdentityConfig(),
    )
    assert result.rejected_links.select("id_type_b", "id_b", "reason").rows() == [
        ("phone", sha("13912345678"), "raw_phone"),
        ("qq", "12345", "unknown_id_type"),
    ]
    assert result.stats["people"] == 1


def test_many_sources_fall_back_from_the_bitmask() -> None:
    rows = [("openid", f"o_person_{i:03d}", "unionid", f"u_person_{i:03d}") for i in range(70)]
    frames = [identities([r], source=f"src{i:02d}") for i, r in enumerate(rows)]
    result = build_identity({"identities": pl.concat(frames)}, IdentityConfig())
    assert result.stats["people"] == 70
    row = result.one_id_map.filter(pl.col("id") == "o_person_069").row(0, named=True)
    assert row["sources"] == ["identities:src69"]


def test_linkage_rate_counts_commerce_and_wechat_sides() -> None:
    result = build_identity(
        {
            "orders": orders([("taobao_ouid", "tb_a_buyer", phone(1), "tmall")]),
            "identities": identities(
                [
                    ("taobao_ouid", "tb_a_buyer", "unionid", "u_a_123456"),  # linked
                    ("phone_sha256", phone(1), "openid", "o_a_123456"),  # same person
                    ("phone_sha256", phone(2), "openid", "o_b_123456"),  # phone not on an order
                ]
            ),
            "events": events([("jd_pin", "jd_c_alone")]),
        },
        IdentityConfig(),
    )
    s = result.stats
    assert (s["people"], s["linked_people"], s["linkage_rate"]) == (3, 1, 1 / 3)
    assert s["component_sizes"] == {1: 1, 2: 1, 4: 1}
    assert s["singletons"] == 1
    assert s["identifiers_by_type"] == {
        "jd_pin": 1,
        "openid": 2,
        "phone_sha256": 2,
        "taobao_ouid": 1,
        "unionid": 1,
    }


# ---------------------------------------------------------------------------------------------
# Stable ids


def test_same_person_keeps_its_one_id_when_it_grows() -> None:
    week1 = build_identity(
        {"orders": orders([("taobao_ouid", "tb_alice1", phone(1), "tmall")])},
        IdentityConfig(),
        week_label="2026-W02",
    )
    alice = one_id_of(week1.one_id_map, "taobao_ouid", "tb_alice1")
    assert alice == content_id("phone_sha256", phone(1))
    assert week1.changes.rows() == [("2026-W02", alice, "new", None, alice)]
    # a douyin id sorts before phone_sha256: the content id would change, the one_id must not
    week2 = build_identity(
        {
            "orders": orders(
                [
                    ("taobao_ouid", "tb_alice1", phone(1), "tmall"),
                    ("douyin_openid", "dy_alice_9", phone(1), "douyin"),
                    ("jd_pin", "jd_bob", phone(2), "jd"),
                ]
            )
        },
        IdentityConfig(),
        previous=week1.one_id_map,
        week_label="2026-W03",
    )
    m = week2.one_id_map
    assert {
        one_id_of(m, "douyin_openid", "dy_alice_9"),
        one_id_of(m, "phone_sha256", phone(1)),
    } == {alice}
    bob = one_id_of(m, "jd_pin", "jd_bob")
    assert bob == content_id("jd_pin", "jd_bob")
    assert week2.changes.rows() == [("2026-W03", bob, "new", None, bob)]


def test_merge_keeps_the_larger_persons_id() -> None:
    small = [("taobao_ouid", "tb_small1", phone(1), "tmall")]
    large = [("jd_pin", "jd_large1", phone(2), "jd"), ("jd_pin", "jd_large2", phone(2), "jd")]
    week1 = build_identity({"orders": orders(small + large)}, IdentityConfig(), week_label="W1")
    a = one_id_of(week1.one_id_map, "taobao_ouid", "tb_small1")
    b = one_id_of(week1.one_id_map, "jd_pin", "jd_large1")
    assert a != b
    bridge = identities([("taobao_ouid", "tb_small1", "jd_pin", "jd_large2")])
    week2 = build_identity(
        {"orders": orders(small + large), "identities": bridge},
        IdentityConfig(),
        previous=week1.one_id_map.lazy(),  # a scan of last week's parquet works the same
        week_label="W2",
    )
    assert set(week2.one_id_map["one_id"]) == {b}
    assert week2.changes.rows() == [("W2", b, "merged", a, b)]


def test_split_keeps_the_largest_part_and_records_the_rest() -> None:
    old = "Uold000000000001"
    previous = pl.DataFrame(
        {
            "one_id": [old] * 4,
            "id_type": ["jd_pin", "phone_sha256", "taobao_ouid", "taobao_ouid"],
            "id": ["jd_x", phone(1), "tb_x1", "tb_x2"],
        }
    )
    # this week only jd_x - phone(1) - tb_x1 are linked; tb_x2 stands alone
    result = build_identity(
        {
            "orders": orders(
                [("jd_pin", "jd_x", phone(1), "jd"), ("taobao_ouid", "tb_x1", phone(1), "tmall")]
            ),
            "events": events([("taobao_ouid", "tb_x2")]),
        },
        IdentityConfig(),
        previous=previous,
        week_label="W9",
    )
    m = result.one_id_map
    assert one_id_of(m, "jd_pin", "jd_x") == old
    alone = one_id_of(m, "taobao_ouid", "tb_x2")
    assert alone == content_id("taobao_ouid", "tb_x2")
    assert result.changes.rows() == [("W9", alone, "split", old, alone)]


def test_split_part_never_reuses_an_old_id() -> None:
    # last week {jd_a, jd_b, jd_c} had the content id of jd_a; now jd_a is alone and the
    # larger part {jd_b, jd_c} keeps the id, so jd_a needs another one
    old = content_id("jd_pin", "jd_a")
    previous = pl.DataFrame(
        {"one_id": [old] * 3, "id_type": ["jd_pin"] * 3, "id": ["jd_a", "jd_b", "jd_c"]}
    )
    result = build_identity(
        {
            "identities": identities([("jd_pin", "jd_b", "jd_pin", "jd_c")]),
            "events": events([("jd_pin", "jd_a")]),
        },
        IdentityConfig(),
        previous=previous,
    )
    m = result.one_id_map
    assert one_id_of(m, "jd_pin", "jd_b") == old
    assert one_id_of(m, "jd_pin", "jd_a") not in (old, "")
    assert m["one_id"].n_unique() == 2
    assert result.changes.select("event", "from_one_id").rows() == [("split", old)]


def test_merge_and_new_in_one_week_with_unique_ids() -> None:
    previous = pl.DataFrame(
        {
            "one_id": ["Ua", "Ub", "Ub", "Ugone"],
            "id_type": ["openid", "unionid", "openid", "openid"],
            "id": ["o_aaaaaaa", "u_bbbbbbb", "o_bbbbbbb", "o_not_seen_now"],
        }
    )
    result = build_identity(
        {
            "identities": identities(
                [
                    ("openid", "o_aaaaaaa", "unionid", "u_bbbbbbb"),
                    ("openid", "o_bbbbbbb", "unionid", "u_bbbbbbb"),
                    ("openid", "o_new_person", "unionid", "u_new_person"),
                ]
            )
        },
        IdentityConfig(),
        previous=previous,
        week_label="W5",
    )
    new = content_id("openid", "o_new_person")
    assert sorted(result.changes.rows()) == sorted(
        [("W5", "Ub", "merged", "Ua", "Ub"), ("W5", new, "new", None, new)]
    )
    assert "Ugone" not in set(result.one_id_map["one_id"])


def test_previous_must_have_the_map_columns() -> None:
    with pytest.raises(DataError, match="previous one_id_map has no column one_id"):
        build_identity(
            {"events": events([("openid", "o_1234567")])},
            IdentityConfig(),
            previous=pl.DataFrame({"id_type": ["openid"], "id": ["o_1234567"]}),
        )


# ---------------------------------------------------------------------------------------------
# Determinism


def _trap_tables(seed: int) -> dict[str, pl.LazyFrame]:
    rng = random.Random(seed)
    order_rows = [("taobao_ouid", f"tb_{i:04d}", phone(i % 40), "tmall") for i in range(120)]
    order_rows += [("member_id", f"M{i}", phone(500), "store") for i in range(3)]  # equal ties
    order_rows += [("jd_pin", f"jd_{i}", phone(900), "jd") for i in range(12)]  # a hub
    order_rows += [("member_id", "null", phone(1), "store")]
    link_rows = [("openid", f"o_{i:06d}", "unionid", f"u_{i % 30:06d}") for i in range(60)]
    link_rows += [("unionid", f"u_{i:06d}", "taobao_ouid", f"tb_{i:04d}") for i in range(30)]
    # openids seen with a second unionid: unionid limit breaks, with equal-strength ties
    link_rows += [
        ("openid", f"o_{i:06d}", "unionid", f"u_{(i + 1) % 30:06d}") for i in range(0, 60, 7)
    ]
    rng.shuffle(order_rows)
    rng.shuffle(link_rows)
    return {"orders": orders(order_rows), "identities": identities(link_rows)}


def _sorted(result_frame: pl.DataFrame) -> pl.DataFrame:
    return result_frame.sort(result_frame.columns, nulls_last=True)


def test_shuffled_input_gives_identical_results() -> None:
    first = build_identity(_trap_tables(1), IdentityConfig(), week_label="W1")
    second = build_identity(_trap_tables(2), IdentityConfig(), week_label="W1")
    for name in ("one_id_map", "rejected_links", "rejected_ids", "changes"):
        assert_frame_equal(_sorted(getattr(first, name)), _sorted(getattr(second, name)))
    cuts = first.stats["cuts_by_reason"]
    assert set(cuts) == {"blocked_value", "hub_degree", "limit:member_id>1", "limit:unionid>1"}
    assert (cuts["blocked_value"], cuts["hub_degree"], cuts["limit:member_id>1"]) == (1, 12, 2)
    again = build_identity(
        _trap_tables(3), IdentityConfig(), previous=first.one_id_map, week_label="W2"
    )
    assert_frame_equal(_sorted(again.one_id_map), _sorted(first.one_id_map))
    assert again.changes.height == 0


# ---------------------------------------------------------------------------------------------
# Using the map


@pytest.fixture
def small_map() -> pl.DataFrame:
    return build_identity(
        {
            "orders": orders(
                [
                    ("taobao_ouid", "tb_alice1", sha("13812345678"), "tmall"),
                    ("taobao_ouid", "null", phone(2), "tmall"),
                ]
            ),
            "identities": identities([("taobao_ouid", "tb_alice1", "unionid", "u_alice_1")]),
        },
        IdentityConfig(),
    ).one_id_map


def test_attach_one_id_is_a_left_join(small_map: pl.DataFrame) -> None:
    frame = pl.LazyFrame(
        {
            "buyer_id_type": ["taobao_ouid", "taobao_ouid", "jd_pin"],
            "buyer_id": ["tb_alice1", "null", "jd_never_seen"],
            "phone_sha256": [sha("13812345678"), phone(2), None],
        }
    )
    alice = one_id_of(small_map, "unionid", "u_alice_1")
    out = attach_one_id(frame, small_map, "buyer_id_type", "buyer_id").collect()
    assert out["one_id"].to_list() == [alice, None, None]
    assert out.columns == ["buyer_id_type", "buyer_id", "phone_sha256", "one_id"]
    # a literal id type for a column that has none
    by_phone = attach_one_id(frame, small_map.lazy(), "phone_sha256", "phone_sha256").collect()
    assert by_phone["one_id"].to_list() == [
        alice,
        one_id_of(small_map, "phone_sha256", phone(2)),
        None,
    ]
    with pytest.raises(DataError, match="no column 'user_id'"):
        attach_one_id(frame, small_map, "buyer_id_type", "user_id")


def test_lookup_by_any_identifier_and_by_raw_phone(small_map: pl.DataFrame) -> None:
    by_union = lookup(small_map, "unionid", "u_alice_1")
    assert set(by_union["id"]) == {"tb_alice1", "u_alice_1", sha("13812345678")}
    by_phone = lookup(small_map, "phone", "+86 138-1234-5678")
    assert_frame_equal(by_phone, by_union)
    assert lookup(small_map, "jd_pin", "nobody").height == 0
    with pytest.raises(DataError, match=r"'123\*\*' is not a valid mainland mobile number"):
        lookup(small_map, "phone", "12345")


# ---------------------------------------------------------------------------------------------
# B-cubed


def test_bcubed_hand_computed() -> None:
    # pred {1,2,3,4} {5} (+6 only predicted); truth {1,2} {3,4,5} (+7 only in truth)
    pred = pl.DataFrame(
        {
            "one_id": ["A", "A", "A", "A", "B", "C"],
            "id_type": ["openid"] * 6,
            "id": ["1", "2", "3", "4", "5", "6"],
        }
    )
    truth = pl.DataFrame(
        {
            "person_id": ["p", "p", "q", "q", "q", "r"],
            "id_type": ["openid"] * 6,
            "id": ["1", "2", "3", "4", "5", "7"],
        }
    )
    precision, recall = bcubed(pred, truth)
    assert precision == pytest.approx(3 / 5)  # (1/2 + 1/2 + 1/2 + 1/2 + 1) / 5
    assert recall == pytest.approx(11 / 15)  # (1 + 1 + 2/3 + 2/3 + 1/3) / 5
    assert bcubed(pred, pred.rename({"one_id": "person_id"})) == (1.0, 1.0)


def test_bcubed_rejects_unusable_input() -> None:
    pred = pl.DataFrame({"one_id": ["A"], "id_type": ["openid"], "id": ["1"]})
    truth = pl.DataFrame({"person_id": ["p"], "id_type": ["openid"], "id": ["2"]})
    with pytest.raises(DataError, match="no identifier is in both"):
        bcubed(pred, truth)
    with pytest.raises(DataError, match="truth assigns some identifier to more than one"):
        bcubed(pred, pl.concat([truth, truth.with_columns(pl.lit("q").alias("person_id"))]))


# ---------------------------------------------------------------------------------------------
# Config and input errors


def test_config_rejects_bad_settings() -> None:
    with pytest.raises(ValidationError, match="unknown id type"):
        IdentityConfig(max_per_person={"qq": 1})
    with pytest.raises(ValidationError, match="not a valid regex"):
        IdentityConfig(patterns={"openid": "(unclosed"})
    with pytest.raises(ValidationError, match="at least 1"):
        IdentityConfig(max_per_person={"member_id": 0})
    with pytest.raises(ValidationError, match="not valid mainland mobile numbers: 123"):
        IdentityConfig(blocked_phones=("123",))
    with pytest.raises(ValidationError, match="Extra inputs"):
        IdentityConfig(max_degre=3)


def test_configs_identity_toml_documents_the_defaults() -> None:
    path = Path(__file__).parents[1] / "configs" / "identity.toml"
    section = tomllib.loads(path.read_text(encoding="utf-8"))["identity"]
    assert IdentityConfig(**section) == IdentityConfig()
    assert set(section) == set(IdentityConfig.model_fields)
    assert IdentityConfig(mention_id_type="").mention_id_type is None


def test_missing_required_column_is_a_data_error() -> None:
    with pytest.raises(DataError, match="table 'events' has no column user_id_type"):
        build_identity({"events": pl.LazyFrame({"user_id": ["x"]})}, IdentityConfig())


def test_no_tables_gives_empty_frames() -> None:
    result = build_identity({"orders": None}, IdentityConfig())
    assert result.one_id_map.height == 0
    assert result.one_id_map.columns == [
        "one_id",
        "id_type",
        "id",
        "first_seen",
        "last_seen",
        "sources",
    ]
    assert result.stats["people"] == 0


def test_staging_keeps_a_hash_match_only_for_the_same_type_and_id() -> None:
    # Hand-made: the key is the id's first letter, so "ax" shares a key with the map's "a1"
    # and must not take its person; "b1" as a unionid is not the openid "b1".
    from unittest import mock

    from segments.build import staging

    df = pl.DataFrame(
        {
            "user_id_type": ["openid", "openid", "unionid", "openid", "unionid", None],
            "user_id": ["a1", "ax", "b1", "b1", "c", "c"],
            "n": [0, 1, 2, 3, 4, 5],
        }
    )
    id_map = pl.DataFrame(
        {
            "one_id": ["p1", "p2", "p3"],
            "id_type": ["openid", "openid", "unionid"],
            "id": ["a1", "b1", "c"],
        }
    )
    first_letter = lambda e: e.cast(pl.String).str.slice(0, 1).hash(seed=1)  # noqa: E731
    with mock.patch.object(staging, "id_key", first_letter):
        got = staging._with_one_id(df, id_map, "user_id_type", "user_id")
    assert got["n"].to_list() == [0, 3, 4]
    assert got["one_id"].to_list() == ["p1", "p2", "p3"]


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["openid", "unionid", None]),
            st.sampled_from(["a", "a2", "b", "c", "x", "y", None]),
        ),
        max_size=30,
    ),
    twice=st.booleans(),
    shared=st.booleans(),
    buckets=st.sampled_from([0, 1, 3, 8, 64]),
)
def test_staging_attaches_one_id_like_the_wide_join(
    rows: list[tuple[str | None, str | None]], twice: bool, shared: bool, buckets: int
) -> None:
    """`staging._with_one_id` (a join on a hash of the id, checked against the map's type and
    id, the one_id added to the rows) gives what `attach_one_id` gives: the same rows, in the
    same order; also when an identifier is twice in the map and it falls back to the wide
    join, and when ids share a hash (`buckets` > 0 folds the hash into that many values: a
    row then matches another id's hash, or the map holds one hash twice)."""
    from unittest import mock

    from segments.build import staging
    from segments.build.staging import _with_one_id

    if buckets:
        real = staging.id_key
        fold = mock.patch.object(staging, "id_key", lambda e: real(e) % buckets)
    else:
        fold = contextlib.nullcontext()

    df = pl.DataFrame(
        {
            "user_id_type": [t for t, _ in rows],
            "user_id": [i for _, i in rows],
            "n": list(range(len(rows))),
        },
        schema={"user_id_type": pl.String, "user_id": pl.String, "n": pl.Int64},
    )
    id_map = pl.DataFrame(
        {
            "one_id": ["p1", "p1", "p2", "p3"],
            "id_type": ["openid", "unionid", "openid", "unionid"],
            "id": ["a", "a2", "b", "c"],
        }
    )
    if shared:  # one id under two types: the same hash twice in the map
        id_map = pl.concat(
            [id_map, pl.DataFrame({"one_id": ["p1"], "id_type": ["unionid"], "id": ["a"]})]
        )
    if twice:
        id_map = pl.concat(
            [id_map, pl.DataFrame({"one_id": ["p9"], "id_type": ["openid"], "id": ["a"]})]
        )
    want = (
        attach_one_id(df.lazy(), id_map, "user_id_type", "user_id")
        .filter(pl.col("one_id").is_not_null())
        .collect()
    )
    with fold:
        got = _with_one_id(df, id_map, "user_id_type", "user_id")
    assert_frame_equal(got, want)
