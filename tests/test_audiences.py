"""Tests for audience packs: config loading, safe filters, hand-computed selections, holdouts,
lookalikes, previews, members, exports (files, metadata, log, refusals), privacy properties and
the `audience` CLI group."""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from pathlib import Path

import click
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from segments.audiences import (
    COUNT_KEYS,
    FilterError,
    PackDef,
    audiences_from_dict,
    compile_filter,
    export_pack,
    export_pack_all,
    first_rows,
    holdout_score,
    is_held_out,
    load_audiences,
    pack_members,
    preview,
    preview_pack,
    read_log,
    resolve_pack,
    rule_expr,
    rule_text,
    select_lookalike,
    select_pack,
    week_tags,
)
from segments.cli.audience import audience, parse_options
from segments.contract import phone_hash_columns
from segments.errors import ConfigError, DataError, ExportError, SegmentsError
from segments.exporters import EXPORTERS

WEEK = "2026-W47"
INTERESTS = (
    "camping",
    "hiking",
    "trail_running",
    "cycling",
    "fishing",
    "skiing",
    "water_sports",
    "climbing",
    "outdoor_cooking",
    "city_outdoor",
    "family_outdoor",
)
LIFECYCLE = ("new", "active", "at_risk", "lapsed", "churned", "prospect")


# ---------------------------------------------------------------------------------------------
# Workspace builders


def md5h(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


def shah(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def phone_of(i: int, k: int = 0) -> str:
    return f"13{k}{i:08d}"


def synth_tags(
    n: int,
    seed: int = 1,
    opted_out: list[bool | None] | None = None,
    coupon: list[bool | None] | None = None,
) -> pl.DataFrame:
    """A tag table with every column the built-in packs read; is_high_value follows the
    contract rule on frequency_52w and monetary_52w."""
    rng = np.random.default_rng(seed)
    freq = rng.integers(0, 7, n)
    aov = rng.choice([300.0, 799.99, 800.0, 1200.0], n)
    monetary = np.where(freq > 0, np.round(freq * aov, 2), 0.0)
    primary = rng.integers(-1, len(INTERESTS), n)
    affinity = np.round(rng.random((n, len(INTERESTS))), 4)
    cols: dict[str, object] = {
        "one_id": [f"u{i:06d}" for i in range(n)],
        "is_high_value": (freq >= 3) & (monetary / np.maximum(freq, 1) >= 800),
        "is_coupon_hunter": coupon if coupon is not None else (rng.random(n) < 0.15).tolist(),
        "is_opted_out": opted_out if opted_out is not None else (rng.random(n) < 0.1).tolist(),
        "primary_interest": [INTERESTS[p] if p >= 0 else None for p in primary],
        "interests": [
            [INTERESTS[p]] + ([INTERESTS[(p + 3) % 11]] if i % 3 == 0 else []) if p >= 0 else []
            for i, p in enumerate(primary)
        ],
        "cluster": pl.Series(rng.integers(0, 4, n), dtype=pl.Int64),
        "recency_days": pl.Series(
            np.where(freq > 0, rng.integers(0, 400, n), -1), dtype=pl.Int64
        ).replace(-1, None),
        "frequency_52w": pl.Series(freq, dtype=pl.Int64),
        "frequency_lifetime": pl.Series(freq + rng.integers(0, 3, n), dtype=pl.Int64),
        "monetary_52w": monetary,
        "predicted_value_52w": np.round(rng.gamma(2.0, 800.0, n), 2),
        "p_alive": np.round(rng.random(n), 4),
        "lifecycle_stage": [LIFECYCLE[j] for j in rng.integers(0, 6, n)],
        "coupon_hunter_score": np.round(rng.random(n), 4),
    }
    for j, name in enumerate(INTERESTS):
        cols[f"interest_{name}"] = affinity[:, j]
        cols[f"interest_{name}_expanded"] = np.minimum(1.0, affinity[:, j] + 0.1)
    df = pl.DataFrame(cols)
    return df.with_columns(
        pl.format("c{}", pl.col("cluster")).alias("cluster_name"),
        pl.col("is_opted_out").cast(pl.Boolean),
        pl.col("is_coupon_hunter").cast(pl.Boolean),
    )


def identity_frames(tags: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, list[str]]]:
    """(one_id_map, phone_hashes, phones by one_id): most people one phone, every 5th two,
    every 7th no phone but a unionid, every 4th a taobao id."""
    rows, phones = [], {}
    for i, oid in enumerate(tags.get_column("one_id")):
        mine = [] if i % 7 == 3 else [phone_of(i)] + ([phone_of(i, 9)] if i % 5 == 0 else [])
        phones[oid] = mine
        for p in mine:
            rows.append((oid, "phone_sha256", shah(p), ["orders:tmall"]))
        if i % 7 == 3:
            rows.append((oid, "unionid", f"oUnion{i:010d}xyz", ["messages"]))
        if i % 4 == 0:
            rows.append((oid, "taobao_ouid", f"tb_{i:08d}", ["orders:taobao", "events"]))
    one_id_map = pl.DataFrame(
        rows,
        schema={
            "one_id": pl.String,
            "id_type": pl.String,
            "id": pl.String,
            "sources": pl.List(pl.String),
        },
        orient="row",
    )
    all_phones = sorted(p for v in phones.values() for p in v)
    phone_hashes = pl.DataFrame({"cn11": all_phones}).select(phone_hash_columns(pl.col("cn11")))
    return one_id_map, phone_hashes, phones


def write_workspace(root: Path, tags: pl.DataFrame, week: str = WEEK) -> dict[str, list[str]]:
    one_id_map, phone_hashes, phones = identity_frames(tags)
    (root / "weeks" / week).mkdir(parents=True, exist_ok=True)
    (root / "identity").mkdir(parents=True, exist_ok=True)
    table = tags.to_arrow().replace_schema_metadata({"segments.config_hash": "cfg0123456789abc"})
    pq.write_table(table, root / "weeks" / week / "tags.parquet")
    one_id_map.write_parquet(root / "identity" / "one_id_map.parquet")
    phone_hashes.write_parquet(root / "identity" / "phone_hashes.parquet")
    return phones


@pytest.fixture(scope="module")
def builtin() -> dict[str, PackDef]:
    return load_audiences()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pl.DataFrame, dict]:
    root = tmp_path_factory.mktemp("ws")
    tags = synth_tags(6000, seed=7)
    phones = write_workspace(root, tags)
    return root, tags, phones


def one_line(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text, text
    return text


# ---------------------------------------------------------------------------------------------
# Config


def test_builtin_packs_load(builtin: dict[str, PackDef]) -> None:
    expected = {
        "high_value",
        "potential_high_value",
        "high_value_at_risk",
        "high_value_lookalike",
        "coupon_hunters",
        *(f"interest_{k}" for k in INTERESTS),
    }
    assert expected <= set(builtin)
    assert builtin["high_value"].where == "is_high_value"
    assert builtin["coupon_hunters"].suppress_coupon_hunters is False
    assert all(p.suppress_coupon_hunters for n, p in builtin.items() if n != "coupon_hunters")
    assert builtin["high_value_lookalike"].lookalike is not None


def test_builtin_packs_all_select_on_a_full_tag_table(builtin: dict[str, PackDef]) -> None:
    tags = synth_tags(400, seed=3).lazy()
    for name, pack in builtin.items():
        sel = select_pack(tags, pack, builtin)
        assert list(sel.counts) == list(COUNT_KEYS), name
        assert sel.counts["final"] == sel.frame.height


def test_config_reports_every_problem_at_once() -> None:
    data = {
        "packs": {
            "a": {"where": "is_high_value", "colour": "red"},
            "b": {"where": "is_high_value", "include": ["nope"]},
            "c": {"where": "1=1; DROP TABLE tags"},
            "d": {"where": "is_high_value", "holdout": 0.9},
            "e": {"where": "is_high_value", "platforms": ["myspace"]},
        },
        "extra": 1,
    }
    with pytest.raises(ConfigError) as err:
        audiences_from_dict(data, "audiences.toml")
    text = str(err.value)
    assert text.startswith("audiences.toml has 5 problems:")
    for needle in ("extra", "[packs.a].colour", "[packs.c].where", "[packs.d].holdout", "myspace"):
        assert needle in text


def test_config_unknown_reference_and_cycles() -> None:
    with pytest.raises(ConfigError, match="unknown pack 'nope'"):
        audiences_from_dict({"packs": {"b": {"where": "x", "exclude": ["nope"]}}})
    cyc = {
        "packs": {
            "a": {"where": "x", "include": ["b"]},
            "b": {"where": "y", "exclude": ["a"]},
            "s": {"where": "y", "include": ["s"]},
        }
    }
    with pytest.raises(ConfigError) as err:
        audiences_from_dict(cyc)
    assert "cycle: a -> b -> a" in str(err.value)
    assert "cycle: s -> s" in str(err.value)


def test_config_lookalike_cannot_be_included() -> None:
    data = {
        "packs": {
            "hv": {"where": "is_high_value"},
            "lal": {"lookalike": {"base": "hv", "size": 10}},
            "x": {"where": "is_high_value", "exclude": ["lal"]},
        }
    }
    with pytest.raises(ConfigError, match="lookalike pack"):
        audiences_from_dict(data)


def test_load_audiences_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such audiences file"):
        load_audiences(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[packs.x\nwhere=1", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a readable TOML"):
        load_audiences(bad)
    good = tmp_path / "good.toml"
    good.write_text('[packs.x]\nwhere = "is_high_value"\nholdout = 0.2\n', encoding="utf-8")
    assert load_audiences(good)["x"].holdout == 0.2


# ---------------------------------------------------------------------------------------------
# Safe filters

INJECTIONS = [
    "1=1; DROP TABLE tags",
    "__import__('os').system('x')",
    "is_high_value) OR (1=1",
    "(SELECT 1)",
    "is_high_value AND one_id IN (SELECT one_id FROM tags)",
    "EXISTS (SELECT 1)",
    "frequency_52w > (SELECT MAX(frequency_52w) FROM tags)",
    "no_such_function(frequency_52w) > 1",
    "eval('1')",
    "1 = 1",
    "",
    "is_high_value -- ok\n; DELETE FROM tags",
]


@pytest.mark.parametrize("text", INJECTIONS)
def test_injection_attempts_fail_cleanly(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        compile_filter(text)
    one_line(err.value)
    # ... and through a config file, naming the pack
    with pytest.raises(ConfigError) as err2:
        audiences_from_dict({"packs": {"evil": {"where": text}}})
    assert "[packs.evil].where" in str(err2.value)


def test_filter_cannot_execute_python(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    attempts = [
        f"__import__('pathlib').Path('{sentinel}').touch()",
        f"open('{sentinel}', 'w')",
        f"exec(\"open('{sentinel}','w')\")",
        f"is_high_value OR os.system('touch {sentinel}')",
    ]
    for text in attempts:
        with pytest.raises(ConfigError):
            compile_filter(text)
    assert not sentinel.exists()


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60))
def test_random_filter_text_is_parsed_never_run(text: str) -> None:
    tags = synth_tags(5, seed=1).lazy()
    pack_ok = True
    try:
        pack = PackDef(name="p", where=text)
    except Exception as e:  # pydantic wraps the FilterError
        pack_ok = False
        assert "ValidationError" in type(e).__name__ or isinstance(e, ConfigError)
    if pack_ok:
        try:
            sel = select_pack(tags, pack, {"p": pack})
        except ConfigError as e:
            one_line(e)
        else:
            assert sel.frame.get_column("one_id").is_in(tags.collect()["one_id"].to_list()).all()


def test_unknown_column_and_non_boolean_at_selection_time() -> None:
    tags = synth_tags(20).lazy()
    pack = PackDef(name="vip", where="is_high_value AND lifetime_spend > 1000")
    with pytest.raises(ConfigError) as err:
        select_pack(tags, pack, {"vip": pack})
    msg = one_line(err.value)
    assert "pack 'vip'" in msg and "'lifetime_spend'" in msg
    num = PackDef(name="num", where="frequency_52w + 1")
    with pytest.raises(ConfigError, match="not a true/false expression"):
        select_pack(tags, num, {"num": num})
    typed = PackDef(name="typed", where="primary_interest > 3")
    with pytest.raises(ConfigError) as err:
        select_pack(tags, typed, {"typed": typed})
    assert "pack 'typed'" in one_line(err.value)
    # an included pack's bad column is reported too, naming that pack
    inner = PackDef(name="inner", where="nope_col")
    outer = PackDef(name="outer", where="is_high_value", include=("inner",))
    with pytest.raises(ConfigError, match=r"pack 'inner'.*'nope_col'"):
        select_pack(tags, outer, {"inner": inner, "outer": outer})


def test_keyword_column_needs_quotes_and_the_error_says_so() -> None:
    with pytest.raises(ConfigError, match='must be quoted: "cluster"'):
        compile_filter("cluster = 3")
    assert compile_filter('"cluster" = 3').meta.root_names() == ["cluster"]


def test_sql_features_the_packs_use() -> None:
    df = pl.DataFrame(
        {
            "primary_interest": ["camping", None, "hiking", None],
            "interests": [["camping"], ["hiking", "camping"], [], None],
            "x": [1.0, 2.0, 3.0, 4.0],
        }
    )
    e = compile_filter("primary_interest = 'camping' OR ARRAY_CONTAINS(interests, 'camping')")
    assert df.select(e.fill_null(False)).to_series().to_list() == [True, True, False, False]
    q = compile_filter("x >= QUANTILE_CONT(x, 0.5)")
    assert df.select(q).to_series().to_list() == [False, False, True, True]


# ---------------------------------------------------------------------------------------------
# Selection, by hand


def tiny_tags() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "one_id": [f"u{i:02d}" for i in range(1, 11)],
            "is_high_value": [True, True, True, True, True, False, False, True, False, True],
            "is_coupon_hunter": [
                False,
                True,
                False,
                False,
                False,
                False,
                False,
                False,
                False,
                None,
            ],
            "is_opted_out": [False, False, True, None, False, False, False, False, False, False],
            "recency_days": [5, 50, 50, 50, None, 100, 3, 200, 10, 30],
            "score": [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, None, 80.0, 5.0],
            "primary_interest": [
                None,
                None,
                None,
                None,
                "hiking",
                "camping",
                "camping",
                None,
                None,
                None,
            ],
            "cluster": [0, 0, 1, 1, 1, 2, 2, None, 0, 0],
            "cluster_name": ["a", "a", "b", "b", "b", "c", "c", None, "a", "a"],
            "lifecycle_stage": ["active"] * 5 + ["at_risk", "new", "lapsed", "active", "active"],
        },
        schema_overrides={"cluster": pl.Int64, "recency_days": pl.Int64},
    )


def tiny_packs(**overrides: object) -> dict[str, PackDef]:
    main = {
        "name": "main",
        "where": "is_high_value",
        "include": ("camping",),
        "exclude": ("low",),
        "suppress_recent_buyers_days": 7,
        "order_by": "score",
        "limit": 2,
        **overrides,
    }
    return {
        "camping": PackDef(name="camping", where="primary_interest = 'camping'"),
        "low": PackDef(name="low", where="score <= 5"),
        "main": PackDef.model_validate(main),
    }


def test_select_pack_hand_computed() -> None:
    packs = tiny_packs()
    sel = select_pack(tiny_tags().lazy(), packs["main"], packs)
    # matched: hv u01-u05,u08,u10 + camping u06,u07 = 9
    # opted out: u03 (true), u04 (unknown) -> 7; coupon: u02 -> 6 (u10's null is not a hunter)
    # recent <= 7 days: u01 (5), u07 (3) -> 4; excluded low (score <= 5): u10 -> 3 (u05,u06,u08)
    # order score desc, nulls last: u06 60, u05 50, u08 null; limit 2 -> u06, u05
    assert sel.counts == {
        "matched": 9,
        "after_opted_out": 7,
        "after_coupon_hunters": 6,
        "after_recent_buyers": 4,
        "after_exclude": 3,
        "after_limit": 2,
        "holdout": 0,
        "final": 2,
    }
    assert sel.frame.get_column("one_id").to_list() == ["u05", "u06"]
    assert sel.holdout.height == 0
    assert sel.rule == (
        "((is_high_value) OR (primary_interest = 'camping')) AND NOT COALESCE((score <= 5), FALSE)"
    )
    assert sel.removed() == {
        "opted_out": 2,
        "coupon_hunters": 1,
        "recent_buyers": 2,
        "excluded": 1,
        "limit": 1,
        "holdout": 0,
    }


WHERES = [
    "is_high_value",
    "score > 25",
    "primary_interest = 'camping'",
    "is_coupon_hunter",
    "recency_days < 40",
    '"cluster" = 0',  # cluster is an SQL keyword: quoted
]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(WHERES), min_size=4, max_size=4),
    st.lists(st.lists(st.integers(0, 3), max_size=2, unique=True), min_size=4, max_size=4),
    st.lists(st.lists(st.integers(0, 3), max_size=2, unique=True), min_size=4, max_size=4),
)
def test_rule_text_selects_what_the_rule_does(
    wheres: list[str], includes: list[list[int]], excludes: list[list[int]]
) -> None:
    """Packs p0..p3 may include/exclude only higher-numbered packs (no cycles); the rule text
    of each, compiled as a filter, must select exactly the people its rule expression does."""
    packs = {
        f"p{i}": PackDef(
            name=f"p{i}",
            where=wheres[i],
            include=tuple(f"p{j}" for j in includes[i] if j > i),
            exclude=tuple(f"p{j}" for j in excludes[i] if j > i),
        )
        for i in range(4)
    }
    tags = tiny_tags()
    for pack in packs.values():
        text = rule_text(pack, packs)
        by_text = tags.select(compile_filter(text).fill_null(False)).to_series()
        by_rule = tags.select(rule_expr(pack, packs, tags.schema)).to_series()
        assert by_text.to_list() == by_rule.to_list(), text


def test_select_pack_ascending_and_no_limit() -> None:
    packs = tiny_packs(descending=False, limit=None, suppress_recent_buyers_days=None)
    sel = select_pack(tiny_tags().lazy(), packs["main"], packs)
    # after coupon: u01,u05,u06,u07,u08,u10 ; exclude u10 -> u01,u05,u06,u07,u08
    assert sel.frame.get_column("one_id").to_list() == ["u01", "u05", "u06", "u07", "u08"]
    assert sel.counts["after_recent_buyers"] == sel.counts["after_coupon_hunters"] == 6


def test_order_limit_breaks_ties_by_one_id() -> None:
    tags = pl.DataFrame(
        {"one_id": ["c", "a", "b", "d"], "s": [1, 1, 1, 2], "is_opted_out": [False] * 4}
    )
    pack = PackDef(name="t", where="s > 0", order_by="s", limit=2, suppress_coupon_hunters=False)
    sel = select_pack(tags.lazy(), pack, {"t": pack})
    assert sel.frame.get_column("one_id").to_list() == ["a", "d"]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.none() | st.integers(0, 4), st.none() | st.floats(allow_nan=True, width=32)),
        min_size=0,
        max_size=40,
    ),
    st.integers(1, 45),
    st.booleans(),
    st.booleans(),
)
def test_first_rows_equals_a_full_sort(
    rows: list[tuple[int | None, float | None]], limit: int, desc_a: bool, desc_b: bool
) -> None:
    frame = pl.DataFrame(
        {
            "one_id": [f"x{i:03d}" for i in range(len(rows))][::-1],
            "a": [r[0] for r in rows],
            "b": [r[1] for r in rows],
        },
        schema={"one_id": pl.String, "a": pl.Int64, "b": pl.Float64},
    )
    keys, desc = ["a", "b"], [desc_a, desc_b]
    want = frame.sort([*keys, "one_id"], descending=[*desc, False], nulls_last=True).head(limit)
    got = first_rows(frame, keys, desc, limit)
    assert got["one_id"].to_list() == want["one_id"].to_list()
    got_b = first_rows(frame, ["b"], [desc_b], limit)
    want_b = frame.sort(["b", "one_id"], descending=[desc_b, False], nulls_last=True).head(limit)
    assert got_b["one_id"].to_list() == want_b["one_id"].to_list()


def test_missing_privacy_columns_are_errors() -> None:
    tags = tiny_tags().drop("is_opted_out").lazy()
    packs = tiny_packs()
    with pytest.raises(DataError, match="is_opted_out"):
        select_pack(tags, packs["main"], packs)
    tags2 = tiny_tags().drop("is_coupon_hunter").lazy()
    with pytest.raises(DataError, match="is_coupon_hunter"):
        select_pack(tags2, packs["main"], packs)


def test_coupon_hunters_pack_keeps_hunters_but_not_opted_out(builtin: dict[str, PackDef]) -> None:
    tags = synth_tags(300, seed=5)
    sel = select_pack(tags.lazy(), builtin["coupon_hunters"], builtin)
    expected = tags.filter(pl.col("is_coupon_hunter") & ~pl.col("is_opted_out"))
    assert set(sel.frame["one_id"]) == set(expected["one_id"])


def test_high_value_at_risk_rule(builtin: dict[str, PackDef]) -> None:
    tags = pl.DataFrame(
        {
            "one_id": ["a", "b", "c", "d", "e"],
            "frequency_lifetime": [3, 5, 2, 4, 4],
            "frequency_52w": [1, 0, 1, 2, 1],
            "monetary_52w": [800.0, 0.0, 900.0, 1500.0, 2000.0],
            "lifecycle_stage": ["at_risk", "lapsed", "lapsed", "lapsed", "active"],
            "is_opted_out": [False] * 5,
            "is_coupon_hunter": [False] * 5,
        }
    )
    sel = select_pack(tags.lazy(), builtin["high_value_at_risk"], builtin)
    # b: no orders in 52 weeks (0/0 must not count); c: 2 orders ever; d: 750 a order; e: active
    assert sel.frame["one_id"].to_list() == ["a"]


# ---------------------------------------------------------------------------------------------
# Holdout


def test_holdout_matches_the_hashlib_oracle() -> None:
    ids = [f"id{i}" for i in range(300)] + ["", "中文", "a:b"]
    got = pl.DataFrame({"one_id": ids}).select(holdout_score("one_id", "hv")).to_series()
    want = [int(hashlib.sha256(f"hv:{x}".encode()).hexdigest()[:8], 16) / 2**32 for x in ids]
    assert got.to_list() == want


@pytest.mark.parametrize("share", [0.05, 0.1, 0.25, 0.5])
def test_holdout_share_within_tolerance_on_10k_ids(share: float) -> None:
    n = 10_000
    df = pl.DataFrame({"one_id": [f"p{i:07d}" for i in range(n)]})
    observed = df.select(is_held_out("one_id", "pack", share).mean()).item()
    assert abs(observed - share) <= 4 * (share * (1 - share) / n) ** 0.5


def test_holdout_is_deterministic_and_partitions_the_selection() -> None:
    tags = synth_tags(2000, seed=11)
    pack = PackDef(name="hold", where="frequency_52w >= 1", holdout=0.3)
    a = select_pack(tags.lazy(), pack, {"hold": pack})
    b = select_pack(tags.lazy(), pack, {"hold": pack})
    assert_frame_equal(a.frame, b.frame)
    assert_frame_equal(a.holdout, b.holdout)
    assert a.counts["holdout"] + a.counts["final"] == a.counts["after_limit"]
    assert not set(a.frame["one_id"]) & set(a.holdout["one_id"])
    # a person's holdout does not depend on who else is in the table
    half = select_pack(tags.head(1000).lazy(), pack, {"hold": pack})
    assert set(half.holdout["one_id"]) == set(a.holdout["one_id"]) & set(tags.head(1000)["one_id"])
    # ... but on the pack's name
    other = pack.model_copy(update={"name": "hold2"})
    c = select_pack(tags.lazy(), other, {"hold2": other})
    assert set(c.holdout["one_id"]) != set(a.holdout["one_id"])


# ---------------------------------------------------------------------------------------------
# Lookalike


def lookalike_tags() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "one_id": ["s1", "s2", "s3", "c1", "c2", "c3", "c4", "c5", "c6"],
            "is_high_value": [True, True, True, False, False, False, False, False, False],
            "is_opted_out": [False, False, True, False, True, False, False, False, False],
            "is_coupon_hunter": [False] * 8 + [True],
            "interest_camping": [0.9, 0.8, 0.0, 0.1, 0.9, 0.0, 0.5, 0.0, 0.99],
            "interest_camping_expanded": [0.9, 0.8, 0.0, 0.6, 0.9, 0.2, 0.5, 0.0, 0.99],
            "interest_fishing": [0.1, 0.0, 1.0, 0.9, 0.0, 0.0, 0.0, 0.95, 0.0],
            "cluster": [1, 1, 2, 1, 1, 2, 3, 2, 1],
            "predicted_value_52w": [9.0, 8.0, 7.0, 1.0, 50.0, 40.0, 30.0, 20.0, 10.0],
        },
        schema_overrides={"cluster": pl.Int64},
    )


def test_lookalike_by_interest() -> None:
    packs = {"hv": PackDef(name="hv", where="is_high_value")}
    sel = select_lookalike(lookalike_tags().lazy(), "hv", 2, "interest", packs)
    # seed s1, s2 (s3 opted out): camping mean 0.85 > fishing 0.05 -> camping.
    # candidates not in hv, camping score max(aff, expanded) > 0: c1 .6, c2 .9 (opted out),
    # c3 .2, c4 .5, c6 .99 (coupon hunter) -> top 2 after suppression: c1, c4
    assert sel.info["dominant_interest"] == "camping"
    assert sel.info["seed"] == 2
    assert sel.frame["one_id"].to_list() == ["c1", "c4"]
    assert sel.counts["matched"] == 5
    assert sel.pack.name == "hv_lookalike_interest_2"


def test_lookalike_by_cluster() -> None:
    packs = {"hv": PackDef(name="hv", where="is_high_value")}
    sel = select_lookalike(lookalike_tags().lazy(), "hv", 10, "cluster", packs)
    # seed clusters {1}; candidates c1, c2 (opted out), c6 (coupon) -> c1
    assert sel.info["clusters"] == [1]
    assert sel.frame["one_id"].to_list() == ["c1"]


def test_lookalike_spec_and_config_pack() -> None:
    packs = audiences_from_dict(
        {
            "packs": {
                "hv": {"where": "is_high_value"},
                "lal": {"lookalike": {"base": "hv", "size": 1, "method": "cluster"}},
            }
        }
    )
    sel = select_pack(lookalike_tags().lazy(), packs["lal"], packs)
    assert sel.frame["one_id"].to_list() == ["c1"]
    assert rule_text(packs["lal"], packs) == "lookalike(hv, 1, cluster)"
    spec = resolve_pack("lookalike(hv, 2)", packs)
    assert spec.lookalike is not None and spec.lookalike.method == "interest"
    with pytest.raises(ConfigError, match="unknown base pack 'nope'"):
        resolve_pack("lookalike(nope, 2)", packs)
    with pytest.raises(ConfigError, match="unknown pack 'zzz'"):
        resolve_pack("zzz", packs)


# ---------------------------------------------------------------------------------------------
# Preview and members


def test_preview_breakdowns_by_hand() -> None:
    packs = tiny_packs(limit=None, suppress_recent_buyers_days=None)
    tags = tiny_tags().lazy()
    sel = select_pack(tags, packs["main"], packs)  # u01, u05, u06, u07, u08
    one_id_map = pl.LazyFrame(
        {
            "one_id": ["u01", "u01", "u05", "u06", "u09"],
            "id_type": ["phone_sha256", "unionid", "phone_sha256", "phone_sha256", "phone_sha256"],
            "id": ["p1", "w1", "p5", "p6", "p9"],
            "sources": [["orders:tmall"], ["messages", "orders:tmall"], ["events"], [], ["events"]],
        }
    )
    out = preview(sel, tags, one_id_map)
    assert out["count"] == 5
    assert out["breakdowns"]["cluster"] == {"0: a": 1, "1: b": 1, "2: c": 2, "(none)": 1}
    assert out["breakdowns"]["primary_interest"] == {"(none)": 2, "camping": 2, "hiking": 1}
    assert out["breakdowns"]["lifecycle_stage"] == {
        "active": 2,
        "at_risk": 1,
        "lapsed": 1,
        "new": 1,
    }
    # u01 counts once for orders:tmall although two of its ids were seen there; u09 not selected
    assert out["breakdowns"]["source"] == {"events": 1, "messages": 1, "orders:tmall": 1}
    json.dumps(out)


def test_pack_members_joins_phone_hashes_on_phone_rows_only() -> None:
    packs = {"p": PackDef(name="p", where="is_high_value", suppress_coupon_hunters=False)}
    tags = pl.LazyFrame(
        {
            "one_id": ["a", "b", "c"],
            "is_high_value": [True, True, False],
            "is_opted_out": [False] * 3,
        }
    )
    sel = select_pack(tags, packs["p"], packs)
    hashes = pl.select(phone_hash_columns(pl.lit("13800138000")))
    h = hashes.row(0, named=True)
    one_id_map = pl.DataFrame(
        {
            "one_id": ["a", "a", "b", "c"],
            # b's id equals a phone hash but is not a phone row: no hash columns
            "id_type": ["phone_sha256", "unionid", "openid", "phone_sha256"],
            "id": [h["phone_sha256"], "oUnion0123456789", h["phone_sha256"], h["phone_sha256"]],
        }
    )
    m = pack_members(sel, one_id_map, hashes)
    assert m.columns == [
        "one_id",
        "id_type",
        "id",
        "phone_md5",
        "phone_cc_sha256",
        "phone_e164_sha256",
    ]
    assert m["one_id"].to_list() == ["a", "a", "b"]
    assert m.row(0, named=True)["phone_md5"] == md5h("13800138000")
    assert m.row(0, named=True)["phone_e164_sha256"] == shah("+8613800138000")
    assert m.row(1, named=True)["phone_md5"] is None
    assert m.row(2, named=True)["phone_md5"] is None
    no_hashes = pack_members(sel, one_id_map, None)
    assert no_hashes["phone_md5"].null_count() == 3
    twice = pack_members(sel, one_id_map, pl.concat([hashes, hashes]))
    assert_frame_equal(twice, m)
    md5_only = pack_members(sel, one_id_map, hashes, hash_columns=("phone_md5",))
    assert md5_only.row(0, named=True)["phone_md5"] == md5h("13800138000")
    assert md5_only["phone_e164_sha256"].null_count() == 3


# ---------------------------------------------------------------------------------------------
# Export


def read_zip_lines(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        (name,) = zf.namelist()
        return zf.read(name).decode().splitlines()


def test_tencent_high_value_holds_exactly_the_contract_rule(
    workspace: tuple[Path, pl.DataFrame, dict], tmp_path: Path
) -> None:
    root, tags, phones = workspace
    manifest = export_pack(root, "high_value", "tencent", tmp_path / "tencent")
    rule = (
        (pl.col("frequency_52w") >= 3)
        & (pl.col("monetary_52w") / pl.col("frequency_52w") >= 800)
        & ~pl.col("is_opted_out")
        & ~pl.col("is_coupon_hunter")
    )
    people = tags.filter(rule)["one_id"].to_list()
    expected = {md5h(p) for oid in people for p in phones[oid]}
    got = read_zip_lines(tmp_path / "tencent" / f"high_value_{WEEK}_HASH_MOBILE_PHONE.zip")
    assert len(got) == len(set(got))
    assert set(got) == expected
    assert manifest.people == len(people)
    assert 1000 <= len(people) < 2000  # the fixture is sized for this test and the next
    opted = tags.filter(pl.col("is_opted_out"))["one_id"].to_list()
    assert not {md5h(p) for oid in opted for p in phones[oid]} & set(got)


def test_alimama_floor_applies_and_every_platform_exports(
    workspace: tuple[Path, pl.DataFrame, dict], tmp_path: Path
) -> None:
    root, _, _ = workspace
    packs = {"hv": PackDef(name="hv", where="is_high_value")}
    with pytest.raises(ExportError) as err:
        export_pack(root, "hv", "alimama", tmp_path / "ali", audiences=packs)
    assert "2,000" in one_line(err.value)
    assert not (tmp_path / "ali").exists() or not any((tmp_path / "ali").iterdir())
    final = select_pack(pl.scan_parquet(week_tags(root).path), packs["hv"], packs).counts["final"]
    for platform in EXPORTERS:
        if platform == "alimama":
            continue
        m = export_pack(root, "hv", platform, tmp_path / platform, audiences=packs)
        assert m.people == final, platform
        assert m.files, platform


def test_export_pack_all_selects_once_for_every_platform(
    workspace: tuple[Path, pl.DataFrame, dict], tmp_path: Path
) -> None:
    root, _, _ = workspace
    packs = {"hv": PackDef(name="hv", where="is_high_value", platforms=("tencent", "google"))}
    with pytest.raises(ExportError, match="not meant for meta"):
        export_pack_all(root, "hv", ["tencent", "meta"], tmp_path / "x", audiences=packs)
    assert not (tmp_path / "x").exists()
    before = len(read_log(root))
    out = export_pack_all(
        root,
        "hv",
        ["tencent", "google", "parquet"],
        tmp_path / "all",
        options={"tencent": {"id_types": ["HASH_MOBILE_PHONE"]}},
        audiences=packs,
    )
    assert set(out) == {"tencent", "google", "parquet"}
    assert len(read_log(root)) == before + 3
    single = export_pack(root, "hv", "google", tmp_path / "one", audiences=packs)
    for f, g in zip(out["google"].files, single.files, strict=True):
        assert f.sha256 == g.sha256
    assert [f.path for f in out["tencent"].files] == [f"hv_{WEEK}_HASH_MOBILE_PHONE.zip"]


def test_export_refuses_below_min_size_and_writes_nothing(
    workspace: tuple[Path, pl.DataFrame, dict], tmp_path: Path
) -> None:
    root, _, _ = workspace
    before = len(read_log(root))
    packs = {
        "small": PackDef(name="small", where="is_high_value AND frequency_52w = 6", min_size=5000)
    }
    with pytest.raises(ExportError) as err:
        export_pack(root, "small", "parquet", tmp_path / "out", audiences=packs)
    msg = one_line(err.value)
    assert "pack 'small'" in msg and "matched" in msg and "min_size of 5,000" in msg
    assert not (tmp_path / "out").exists()
    assert len(read_log(root)) == before
    big = {"big": PackDef(name="big", where="frequency_52w >= 0", max_size=1000)}
    with pytest.raises(ExportError, match="max_size"):
        export_pack(root, "big", "parquet", tmp_path / "out", audiences=big)


def test_export_respects_pack_platforms(
    workspace: tuple[Path, pl.DataFrame, dict], tmp_path: Path
) -> None:
    root, _, _ = workspace
    with pytest.raises(ExportError, match="not meant for meta"):
        export_pack(root, "high_value", "meta", tmp_path / "meta")
    with pytest.raises(ExportError, match="unknown export platform"):
        export_pack(root, "high_value", "myspace", tmp_path / "x")


def test_parquet_export_metadata_log_and_determinism(
    workspace: tuple[Path, pl.DataFrame, dict], tmp_path: Path
) -> None:
    root, tags, _ = workspace
    packs = {
        "hunters": PackDef(name="hunters", where="is_coupon_hunter", suppress_coupon_hunters=False),
        "camp": PackDef(
            name="camp",
            where="ARRAY_CONTAINS(interests, 'camping') OR frequency_52w >= 2",
            exclude=("hunters",),
            holdout=0.2,
            min_size=100,
        ),
    }
    before = len(read_log(root))
    m1 = export_pack(root, "camp", "parquet", tmp_path / "a", audiences=packs)
    m2 = export_pack(root, "camp", "parquet", tmp_path / "b", audiences=packs)
    f1 = (tmp_path / "a" / m1.files[0].path).read_bytes()
    assert f1 == (tmp_path / "b" / m2.files[0].path).read_bytes()

    meta = {
        k.decode(): v.decode()
        for k, v in pq.read_schema(tmp_path / "a" / m1.files[0].path).metadata.items()
    }
    counts = json.loads(meta["segments.counts"])
    assert meta["segments.week"] == WEEK
    assert meta["segments.filter"] == packs["camp"].where
    assert meta["segments.config_hash"] == "cfg0123456789abc"
    assert float(meta["segments.holdout_share"]) == 0.2
    assert int(meta["segments.holdout_size"]) == counts["holdout"] > 0
    assert set(json.loads(meta["segments.definition"])) == {"camp", "hunters"}
    assert meta["segments.rule"].endswith(") AND NOT COALESCE((is_coupon_hunter), FALSE)")
    assert not any("created" in k or "time" in k for k in meta)

    df = pl.read_parquet(tmp_path / "a" / m1.files[0].path)
    assert df.height == counts["final"] == m1.people
    hunters = set(tags.filter(pl.col("is_coupon_hunter"))["one_id"])
    assert not hunters & set(df["one_id"])
    holdout = pl.read_parquet(root / "exports" / "holdouts" / f"camp_{WEEK}.parquet")
    assert holdout.height == counts["holdout"]
    assert not set(holdout["one_id"]) & set(df["one_id"])

    log = read_log(root)
    assert len(log) == before + 2
    rec = log[-1]
    assert rec["pack"] == "camp" and rec["platform"] == "parquet" and rec["week"] == WEEK
    assert rec["counts"] == counts
    assert rec["created_at"].endswith("+00:00")
    (f,) = rec["files"]
    assert f["sha256"] == hashlib.sha256(f1).hexdigest()
    manifest_file = tmp_path / "b" / rec["manifest"]["path"]
    assert rec["manifest"]["sha256"] == hashlib.sha256(manifest_file.read_bytes()).hexdigest()


def test_week_selection(tmp_path: Path) -> None:
    tags = synth_tags(50)
    write_workspace(tmp_path, tags, "2026-W46")
    write_workspace(tmp_path, tags, "2026-W47")
    assert week_tags(tmp_path).label == "2026-W47"
    assert week_tags(tmp_path, "2026-11-12").label == "2026-W46"
    with pytest.raises(DataError, match="2026-W40"):
        week_tags(tmp_path, "2026-W40")
    with pytest.raises(DataError, match="no week"):
        week_tags(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------
# Privacy properties

FILTERS = [
    "is_high_value",
    "frequency_52w >= 1",
    "primary_interest = 'camping' OR ARRAY_CONTAINS(interests, 'hiking')",
    "p_alive >= 0.3 AND NOT is_high_value",
    "is_coupon_hunter OR is_opted_out",  # asks for opted-out people explicitly
    "is_opted_out",
]

maybe_bool = st.sampled_from([True, False, None])


@st.composite
def tag_tables(draw: st.DrawFn) -> pl.DataFrame:
    n = draw(st.integers(1, 40))
    opted = draw(st.lists(maybe_bool, min_size=n, max_size=n))
    coupon = draw(st.lists(maybe_bool, min_size=n, max_size=n))
    return synth_tags(n, seed=draw(st.integers(0, 10_000)), opted_out=opted, coupon=coupon)


@st.composite
def pack_defs(draw: st.DrawFn) -> PackDef:
    return PackDef(
        name="prop",
        where=draw(st.sampled_from(FILTERS)),
        suppress_coupon_hunters=draw(st.booleans()),
        suppress_recent_buyers_days=draw(st.none() | st.integers(0, 60)),
        order_by=draw(st.none() | st.sampled_from(["predicted_value_52w", "recency_days"])),
        limit=draw(st.none() | st.integers(1, 30)),
        holdout=draw(st.sampled_from([0.0, 0.1, 0.5])),
        min_size=1,
    )


def allowed(tags: pl.DataFrame, suppress_coupon: bool) -> set[str]:
    ok = pl.col("is_opted_out").is_not_null() & ~pl.col("is_opted_out")
    if suppress_coupon:
        ok = ok & ~pl.col("is_coupon_hunter").fill_null(False)
    return set(tags.filter(ok)["one_id"])


@settings(max_examples=60, deadline=None)
@given(tag_tables(), pack_defs())
def test_property_no_opted_out_and_no_hunters_in_any_selection(
    tags: pl.DataFrame, pack: PackDef
) -> None:
    builtin = load_audiences()
    for p, packs in [(pack, {"prop": pack}), *((b, builtin) for b in builtin.values())]:
        if p.lookalike is not None:
            continue
        sel = select_pack(tags.lazy(), p, packs)
        chosen = set(sel.frame["one_id"]) | set(sel.holdout["one_id"])
        assert chosen <= allowed(tags, p.suppress_coupon_hunters), p.name
        assert sel.counts["final"] + sel.counts["holdout"] == len(chosen)
        counts = [sel.counts[k] for k in COUNT_KEYS if k not in ("holdout", "final")]
        assert counts == sorted(counts, reverse=True)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tag_tables(), pack_defs(), st.sampled_from(["parquet", "tencent", "google"]))
def test_property_exported_files_hold_no_opted_out_person(
    tags: pl.DataFrame, pack: PackDef, platform: str
) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        phones = write_workspace(root / "ws", tags)
        try:
            m = export_pack(
                root / "ws",
                "prop",
                platform,
                root / "out",
                options={"min_size": 1},
                audiences={"prop": pack},
            )
        except ExportError:
            event("refused: nobody to export")
            assert not (root / "out").exists() or not any((root / "out").iterdir())
            return
        event("exported")
        ok = allowed(tags, pack.suppress_coupon_hunters)
        forbidden = set(tags["one_id"]) - ok
        bad_phones = {p for oid in forbidden for p in phones[oid]}
        bad_values = {md5h(p) for p in bad_phones} | {shah(p) for p in bad_phones}
        bad_values |= {shah("+86" + p) for p in bad_phones} | {shah("86" + p) for p in bad_phones}
        for f in m.files:
            path = root / "out" / f.path
            if path.suffix == ".parquet":
                df = pl.read_parquet(path)
                assert not set(df["one_id"]) & forbidden
                values = {v for c in df.columns[1:] for v in df[c].explode().drop_nulls()}
            elif path.suffix == ".zip":
                values = set(read_zip_lines(path))
            else:
                values = set(path.read_text().splitlines())
            assert not values & bad_values


# ---------------------------------------------------------------------------------------------
# CLI


class _Root(click.Group):
    """Like the lead's group: a SegmentsError becomes one line and its exit code."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except SegmentsError as e:
            click.echo(f"{type(e).__name__}: {e}", err=True)
            ctx.exit(e.exit_code)


def cli() -> click.Group:
    root = _Root("segments")
    root.add_command(audience)
    return root


def test_cli_list() -> None:
    r = CliRunner().invoke(cli(), ["audience", "list"])
    assert r.exit_code == 0, r.output
    assert "high_value: High value" in r.output
    assert "(is_high_value)" in r.output
    r = CliRunner().invoke(cli(), ["audience", "list", "--json"])
    names = [p["name"] for p in json.loads(r.output)]
    assert "interest_family_outdoor" in names


def test_cli_preview_json_and_text(workspace: tuple[Path, pl.DataFrame, dict]) -> None:
    root, tags, _ = workspace
    r = CliRunner().invoke(
        cli(), ["audience", "preview", "high_value", "--workspace", str(root), "--json"]
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    expected = tags.filter(
        pl.col("is_high_value") & ~pl.col("is_opted_out") & ~pl.col("is_coupon_hunter")
    ).height
    assert out["count"] == expected and out["week"] == WEEK
    assert sum(out["breakdowns"]["lifecycle_stage"].values()) == expected
    assert set(out["breakdowns"]["source"]) == {
        "orders:tmall",
        "orders:taobao",
        "events",
        "messages",
    }
    r = CliRunner().invoke(
        cli(),
        ["audience", "preview", "--where", "frequency_52w >= 5", "--workspace", str(root)],
    )
    assert r.exit_code == 0, r.output
    assert "adhoc" in r.output and "- opted out" in r.output and "by cluster:" in r.output


def test_cli_preview_errors_are_one_line(workspace: tuple[Path, pl.DataFrame, dict]) -> None:
    root, _, _ = workspace
    for args, code in [
        (["--where", "1=1; DROP TABLE tags"], 2),
        (["--where", "nope > 1"], 2),
        (["no_such_pack"], 2),
        (["high_value", "--week", "2020-W01"], 3),
    ]:
        r = CliRunner().invoke(cli(), ["audience", "preview", *args, "--workspace", str(root)])
        assert r.exit_code == code, (args, r.output)
        assert len(r.output.strip().splitlines()) == 1, r.output


def test_cli_export(workspace: tuple[Path, pl.DataFrame, dict], tmp_path: Path) -> None:
    root, _, _ = workspace
    audiences = tmp_path / "aud.toml"
    audiences.write_text('[packs.fans]\nwhere = "frequency_52w >= 4"\nmin_size = 10\n')
    r = CliRunner().invoke(
        cli(),
        [
            "audience", "export", "fans", "--workspace", str(root), "--platform", "tencent",
            "--to", str(tmp_path / "t"), "--audiences", str(audiences),
            "--option", "openid_app_id=wx0123456789abcdef", "--option", "min_size=10",
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "fans 2026-W47 -> tencent" in r.output
    assert (tmp_path / "t" / f"fans_{WEEK}_HASH_MOBILE_PHONE.zip").is_file()
    rec = read_log(root)[-1]
    assert rec["options"]["openid_app_id"] == "wx0123456789abcdef"
    assert rec["options"]["min_size"] == 10
    r = CliRunner().invoke(
        cli(),
        [
            "audience", "export", "fans", "--workspace", str(root), "--platform", "tencent",
            "--to", str(tmp_path / "t2"), "--audiences", str(audiences), "--option", "bogus",
        ],
    )  # fmt: skip
    assert r.exit_code == 2 and "key=value" in r.output


def test_parse_options() -> None:
    assert parse_options(("min_size=2000", "a=wx01", 'ids=["A","B"]', "f=true")) == {
        "min_size": 2000,
        "a": "wx01",
        "ids": ["A", "B"],
        "f": True,
    }
    with pytest.raises(ConfigError):
        parse_options(("=1",))


def test_preview_pack_needs_exactly_one_of_name_and_where(
    workspace: tuple[Path, pl.DataFrame, dict],
) -> None:
    root, _, _ = workspace
    with pytest.raises(ConfigError):
        preview_pack(root)
    with pytest.raises(ConfigError):
        preview_pack(root, name="high_value", where="is_high_value")
    out = preview_pack(root, name="lookalike(high_value, 100, cluster)")
    assert out["count"] == 100 and out["info"]["base"] == "high_value"


def test_filter_error_is_config_error() -> None:
    assert issubclass(FilterError, ConfigError)
    assert issubclass(FilterError, ValueError)
