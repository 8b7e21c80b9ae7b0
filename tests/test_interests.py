"""Tests for the interest taxonomy, interest signals, affinity, graph and expansion."""

from __future__ import annotations

import itertools
import math
import random
from datetime import datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from scipy.stats import beta

from segments.errors import ConfigError
from segments.stages.interests import (
    CATEGORY_KEY,
    SIGNAL_SCHEMA,
    InterestConfig,
    affinity_from_sums,
    decay_factor,
    interest_affinity,
    interest_columns,
    interest_expansion,
    interest_graph,
    interest_signals,
    learn_category_map,
)
from segments.taxonomy import Taxonomy, load_taxonomy, taxonomy_from_dict
from segments.weeks import Week

W = Week.parse("2026-W10")  # Mon 2026-03-02 .. Sun 2026-03-08; end = 2026-03-09 00:00
T = W.end - timedelta(days=2)  # a fresh timestamp inside the week

CONTRACT = {
    "camping": ("露营", ["帐篷", "天幕", "睡袋", "防潮垫", "折叠桌椅", "营地灯"]),
    "hiking": ("徒步登山", ["登山鞋", "登山杖", "徒步背包", "速干衣"]),
    "trail_running": ("越野跑", ["越野跑鞋", "跑步腰包", "越野跑背心"]),
    "cycling": ("骑行", ["骑行服", "骑行头盔", "车灯"]),
    "fishing": ("钓鱼", ["鱼竿", "渔轮", "钓箱"]),
    "skiing": ("滑雪", ["滑雪服", "滑雪镜", "滑雪手套"]),
    "water_sports": ("水上运动", ["桨板", "救生衣", "防水袋"]),
    "climbing": ("攀岩", ["安全带", "攀岩鞋", "镁粉袋"]),
    "outdoor_cooking": ("户外厨房", ["炉头", "套锅", "户外咖啡器具"]),
    "city_outdoor": ("城市轻户外", ["冲锋衣", "抓绒衣", "防晒衣", "软壳裤"]),
    "family_outdoor": ("亲子户外", ["儿童冲锋衣", "儿童帐篷", "亲子野餐垫"]),
}


@pytest.fixture(scope="module")
def tax() -> Taxonomy:
    return load_taxonomy()


def _orders(rows: list[tuple]) -> pl.LazyFrame:
    return pl.LazyFrame(
        rows,
        schema={
            "one_id": pl.String,
            "paid_at": pl.Datetime("us"),
            "status": pl.String,
            "category": pl.String,
        },
        orient="row",
    )


def _events(rows: list[tuple]) -> pl.LazyFrame:
    return pl.LazyFrame(
        rows,
        schema={
            "one_id": pl.String,
            "ts": pl.Datetime("us"),
            "event": pl.String,
            "category": pl.String,
            "query": pl.String,
        },
        orient="row",
    )


def _messages(rows: list[tuple]) -> pl.LazyFrame:
    return pl.LazyFrame(
        rows,
        schema={
            "msg_id": pl.String,
            "one_id": pl.String,
            "room_id": pl.String,
            "ts": pl.Datetime("us"),
            "text": pl.String,
            "reply_to_msg_id": pl.String,
            "mentions": pl.List(pl.String),
            "mention_one_ids": pl.List(pl.String),
        },
        orient="row",
    )


def _text(tax: Taxonomy, texts: list[str | None]) -> list[list[str]]:
    df = pl.DataFrame({"t": texts}, schema={"t": pl.String})
    return df.select(tax.text_interests(pl.col("t"))).to_series().to_list()


# -- taxonomy ---------------------------------------------------------------------------------


def test_default_taxonomy_matches_contract(tax: Taxonomy) -> None:
    assert tax.names == list(CONTRACT)
    for it in tax.interests:
        label, cats = CONTRACT[it.name]
        assert it.label == label
        assert list(it.categories) == cats
        assert len(set(it.keywords)) >= 30, it.name


def test_default_taxonomy_required_places_and_slang(tax: Taxonomy) -> None:
    kw = tax.keyword_map()
    expected = {
        "崇礼": "skiing",
        "万龙": "skiing",
        "松花湖": "skiing",
        "莫干山": "camping",
        "安吉": "camping",
        "四姑娘山": "hiking",
        "武功山": "hiking",
        "鳌太": "hiking",
        "千岛湖": "water_sports",
        "阳朔": "climbing",
        "露友": "camping",
        "雪友": "skiing",
        "跑友": "trail_running",
        "骑友": "cycling",
        "钓友": "fishing",
        "岩友": "climbing",
        "刷锅": "outdoor_cooking",
        "出片": "camping",
        "装备党": "hiking",
        "轻量化": "camping",
    }
    for word, interest in expected.items():
        assert interest in kw[word], word


def test_taxonomy_errors_are_listed_all_at_once() -> None:
    data = {
        "interests": {
            "camping": {"label": "露营", "categories": ["帐篷"], "keywords": ["露营"]},
            "hiking": {"label": "徒步", "categories": [], "keywords": ["徒步"]},
            "fishing": {"label": "钓鱼", "categories": ["鱼竿"], "keywords": []},
            "family": {"label": "亲子", "categories": ["帐篷"], "keywords": ["遛娃"]},
            "Bad-Name": {"label": "x", "categories": ["x"], "keywords": ["x"]},
        }
    }
    with pytest.raises(ConfigError) as exc:
        taxonomy_from_dict(data, where="t.toml")
    msg = str(exc.value)
    assert msg.startswith("t.toml has 4 problems:\n  - ")
    assert "'hiking': no categories" in msg
    assert "'fishing': no keywords" in msg
    assert "category '帐篷' is listed under both 'camping' and 'family'" in msg
    assert "'Bad-Name': name must be snake_case" in msg


def test_taxonomy_unknown_key_and_empty() -> None:
    with pytest.raises(ConfigError, match="colour"):
        taxonomy_from_dict(
            {
                "interests": {
                    "a": {"label": "a", "categories": ["c"], "keywords": ["k"], "colour": 1}
                }
            }
        )
    with pytest.raises(ConfigError, match="no interests defined"):
        taxonomy_from_dict({"interests": {}})


def test_load_taxonomy_file_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no such taxonomy file"):
        load_taxonomy(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("interests = [", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a readable TOML"):
        load_taxonomy(bad)
    good = tmp_path / "good.toml"
    good.write_text(
        '[interests.a]\nlabel = "A"\ncategories = ["c1"]\nkeywords = ["k1", "K2"]\n',
        encoding="utf-8",
    )
    t = load_taxonomy(good)
    assert t.names == ["a"]
    assert t.keyword_map() == {"k1": ["a"], "k2": ["a"]}


# -- text matching ----------------------------------------------------------------------------


def test_demo_chat_and_queries_are_recognised(tax: Taxonomy) -> None:
    got = _text(
        tax,
        [
            "周末去营地过夜，有人一起吗",
            "新买的天幕今天第一次搭",
            "这双登山鞋走了二十公里不磨脚",
            "雪季快到了，雪镜求推荐",
            "轻量帐篷 两人",
            "防水登山鞋",
            "千岛湖划桨板",
            "阳朔抱石",
            "周末钓友约野钓",
        ],
    )
    assert got == [
        ["camping"],
        ["camping"],
        ["hiking"],
        ["skiing"],
        ["camping"],
        ["hiking"],
        ["water_sports"],
        ["climbing"],
        ["fishing"],
    ]


def test_overlapping_keyword_counts_for_both_and_longest_wins(tax: Taxonomy) -> None:
    got = _text(
        tax, ["亲子露营好去处", "儿童帐篷", "Snow Peak 的套锅", "买了个MSR炉头", "崇礼168完赛"]
    )
    assert got[0] == ["camping", "family_outdoor"]  # 亲子露营 is listed under both
    assert got[1] == ["family_outdoor"]  # 儿童帐篷 is one match, not also 帐篷
    assert got[2] == ["camping", "outdoor_cooking"]  # snow peak under both, ASCII case-insensitive
    assert got[3] == ["outdoor_cooking"]
    assert got[4] == ["trail_running"]  # 崇礼168 (race) beats 崇礼 (ski resort)


def test_english_keywords_are_whole_words_in_any_case_and_width(tax: Taxonomy) -> None:
    got = _text(
        tax,
        [
            "Outdoor>Camping>Tent",  # a category path in English
            "ＴＥＮＴＳ",  # full-width, plural
            "露营tent推荐",  # an English word between Chinese ones
            "camping_stove",  # "camping stove" is one match (outdoor cooking), not also camping
            "tent camping",  # two words, both found
            "Snow-Peak",  # a two-word keyword across a hyphen
            "ski goggles / skiing",
            "content intent skin skirt",  # "tent" and "ski" inside other words: nothing
            "kayak trip, SUP board",
            "family camping",  # listed under camping and family_outdoor
        ],
    )
    assert got == [
        ["camping"],
        ["camping"],
        ["camping"],
        ["outdoor_cooking"],
        ["camping"],
        ["camping", "outdoor_cooking"],
        ["skiing"],
        [],
        ["water_sports"],
        ["camping", "family_outdoor"],
    ]


def test_ascii_word_forms_by_hand() -> None:
    t = taxonomy_from_dict(
        {
            "interests": {
                "a": {
                    "label": "A",
                    "categories": ["ca"],
                    "keywords": ["Tent", "snow peak", "露营"],
                },
                "b": {"label": "B", "categories": ["cb"], "keywords": ["tent", "x1"]},
            }
        }
    )
    # the only keyword matched inside text, and its traditional form
    assert t.patterns() == ["露營", "露营"]
    assert t.word_masks() == {
        " tent ": 3,
        " tents ": 3,
        " tentes ": 3,
        " snow  peak ": 1,
        " snow  peaks ": 1,
        " snow  peakes ": 1,
        " x1 ": 2,  # no plural after a digit
    }
    df = pl.DataFrame({"t": ["TENT露营", "snowpeak", "x1s", "x1 x1", "the SNOW peak"]})
    assert df.select(t.text_mask(pl.col("t"))).to_series().to_list() == [3, 0, 0, 2, 1]
    # a taxonomy of English words only, and one of Chinese words only
    english = taxonomy_from_dict(
        {"interests": {"a": {"label": "A", "categories": ["ca"], "keywords": ["tent"]}}}
    )
    chinese = taxonomy_from_dict(
        {"interests": {"a": {"label": "A", "categories": ["ca"], "keywords": ["露营"]}}}
    )
    df = pl.DataFrame({"t": ["a Tent", "去露营", None, ""]})
    assert df.select(english.text_mask(pl.col("t"))).to_series().to_list() == [1, 0, 0, 0]
    assert df.select(chinese.text_mask(pl.col("t"))).to_series().to_list() == [0, 1, 0, 0]


def test_an_english_category_finds_its_interest(tax: Taxonomy) -> None:
    cats = ["Tents", "Fishing Rods", "Ski Goggles", "Climbing Shoes", "Kids Jacket", "Fleece"]
    df = pl.DataFrame({"c": [*cats, "帐篷", "Umbrella"]})
    got = df.select(tax.mask_interests(tax.category_mask(pl.col("c")))).to_series().to_list()
    assert got == [
        ["camping"],
        ["fishing"],
        ["skiing"],
        ["climbing"],
        ["family_outdoor"],
        ["city_outdoor"],
        ["camping"],
        [],
    ]


def test_traditional_characters_find_the_interest_of_their_simplified_keyword() -> None:
    t = taxonomy_from_dict(
        {
            "interests": {
                "camp": {"label": "C", "categories": ["帐篷"], "keywords": ["露营", "tent"]},
                "ride": {"label": "R", "categories": ["骑行服"], "keywords": ["自行车", "骑行"]},
            }
        }
    )
    # OpenCC's standard, Taiwan and Hong Kong characters, and Taiwan's own word for a bicycle
    assert t.matched_keywords() == {
        "露营": ["camp"],
        "tent": ["camp"],
        "自行车": ["ride"],
        "骑行": ["ride"],
        "露營": ["camp"],
        "腳踏車": ["ride"],
        "自行車": ["ride"],
        "騎行": ["ride"],
    }
    assert t.keyword_map() == {
        "露营": ["camp"],
        "tent": ["camp"],
        "自行车": ["ride"],
        "骑行": ["ride"],
    }
    texts = [
        "去露營",
        "我的腳踏車",
        "自行車",
        "騎行服到了",
        "露营",
        "TENT",
        "露營騎行",
        "天氣好",
        None,
    ]
    assert _text(t, texts) == [
        ["camp"], ["ride"], ["ride"], ["ride"], ["camp"], ["camp"], ["camp", "ride"], [], []
    ]  # fmt: skip
    # a category in traditional characters is its simplified category's, exactly
    cats = pl.DataFrame({"c": ["帳篷", "騎行服", "帐篷", "雨傘"]})
    assert cats.select(t.category_mask(pl.col("c"))).to_series().to_list() == [1, 2, 1, 0]


def test_traditional_forms_change_no_simplified_text(tax: Taxonomy, monkeypatch) -> None:
    """Simplified text matches as it did before the traditional forms: on the demo's chat and
    search texts (both vocabularies), the shipped taxonomy's categories, and sentences holding
    each of its Chinese keywords, alone and side by side with the next one, the masks
    with the forms equal those without them. Texts in traditional characters find their
    interests."""
    from segments.demo.texts import _texts

    demo = [
        x for v in ("a", "b") for kind in ("chat", "query") for x in _texts(v)[kind].values
    ]  # fmt: skip
    words = sorted({w for it in tax.interests for w in it.keywords if not w.isascii()})
    cats = sorted({c for it in tax.interests for c in it.categories})
    made = [f"想买{w}，有推荐吗" for w in words] + [a + b for a, b in itertools.pairwise(words)]
    texts = pl.DataFrame({"t": demo + cats + made})
    with_forms = texts.select(tax.text_mask(pl.col("t"))).to_series()
    monkeypatch.setattr("segments.taxonomy.traditional_forms", lambda word: ())
    assert len(tax.patterns()) == len([k for k in tax.keyword_map() if not k.isascii()])
    without = texts.select(tax.text_mask(pl.col("t"))).to_series()
    assert len(demo) > 5000 and (without.tail(len(made)) > 0).all()
    assert with_forms.to_list() == without.to_list()
    monkeypatch.undo()
    written = [
        "露營帳篷",
        "想買一件衝鋒衣",
        "釣魚竿推薦",
        "滑雪鏡",
        "攀巖鞋",
        "腳踏車頭盔",
        "兒童雨衣",
    ]
    assert _text(tax, written) == [
        ["camping"], ["city_outdoor"], ["fishing"], ["skiing"], ["climbing"], ["cycling"],
        ["family_outdoor"],
    ]  # fmt: skip


def test_empty_emoji_and_null_text_match_nothing(tax: Taxonomy) -> None:
    assert _text(tax, ["", "😀😀🎉", None, "   ", "哈哈哈"]) == [[], [], [], [], []]


def test_custom_overlap_rule() -> None:
    t = taxonomy_from_dict(
        {
            "interests": {
                "a": {"label": "A", "categories": ["ca"], "keywords": ["共享", "甲"]},
                "b": {"label": "B", "categories": ["cb"], "keywords": ["共享", "乙"]},
            }
        }
    )
    assert _text(t, ["共享", "甲乙", "乙甲共享"]) == [["a", "b"], ["a", "b"], ["a", "b"]]


# -- signals ----------------------------------------------------------------------------------


def test_signals_from_every_source(tax: Taxonomy) -> None:
    orders = _orders(
        [
            ("p1", T, "paid", "帐篷"),
            ("p1", T, "cancelled", "鱼竿"),  # cancelled: no signal
            ("p1", T, None, "户外帐篷"),  # not a taxonomy category: matched by keyword
            ("p1", W.end, "paid", "帐篷"),  # after the week: not seen
            ("p2", T, "refunded", "不存在的品类"),  # no interest: a signal of its own category
            (None, T, "paid", "帐篷"),  # no person
        ]
    )
    events = _events(
        [
            ("p2", T, "search", None, "路亚 鱼竿"),  # two fishing words: one signal
            ("p2", T, "view", "鱼竿", None),
            ("p2", T, "coupon_claim", "鱼竿", None),  # weight 0: no signal
            ("p2", T, "search", "鱼竿", "冲锋衣"),  # category and query: fishing + city_outdoor
            ("p2", T, "unknown_event", "鱼竿", None),  # unknown event: weight 0
        ]
    )
    messages = _messages(
        [
            ("m1", "p1", "r", T, "周末去营地过夜，有人一起吗", None, None, None),
            ("m2", "p1", "r", T, "😀", None, None, None),
            ("m3", "p1", "r", T, None, None, None, None),
        ]
    )
    got = (
        interest_signals(orders, events, messages, W, tax)
        .collect()
        .sort("one_id", "kind", "interest", "weight")
    )
    expected = pl.DataFrame(
        [
            ("p1", "camping", T, 2.0, "chat"),
            ("p1", "camping", T, 5.0, "order"),
            ("p1", "camping", T, 5.0, "order"),
            ("p2", CATEGORY_KEY + "不存在的品类", T, 5.0, "order"),  # counted once learned
            ("p2", "fishing", T, 2.0, "search"),
            ("p2", "city_outdoor", T, 2.0, "search"),
            ("p2", "fishing", T, 2.0, "search"),
            ("p2", "fishing", T, 1.0, "view"),
        ],
        schema=SIGNAL_SCHEMA,
        orient="row",
    ).sort("one_id", "kind", "interest", "weight")
    assert_frame_equal(got, expected)


def test_signals_with_missing_tables(tax: Taxonomy) -> None:
    got = interest_signals(None, None, None, W, tax).collect()
    assert got.height == 0
    assert got.columns == ["one_id", "interest", "ts", "weight", "kind"]
    only_chat = interest_signals(
        None, None, _messages([("m", "p", None, T, "", None, None, None)]), W, tax
    ).collect()
    assert only_chat.height == 0


# -- affinity ---------------------------------------------------------------------------------


def test_decay_halves_after_one_half_life() -> None:
    ts = [W.end - timedelta(weeks=8), W.end, W.end - timedelta(weeks=16)]
    got = pl.select(decay_factor(pl.Series("ts", ts, dtype=pl.Datetime("us")), W, 8.0)).to_series()
    assert got.to_list() == [0.5, 1.0, 0.25]


def test_affinity_arithmetic(tax: Taxonomy) -> None:
    cfg = InterestConfig(half_life_weeks=8.0)  # the arithmetic below is at an 8-week half-life
    old = W.end - timedelta(weeks=8)
    signals = pl.LazyFrame(
        {
            "one_id": ["a", "a", "b"],
            "interest": ["camping", "camping", "fishing"],
            "ts": [old, W.end - timedelta(microseconds=1), old],
            "weight": [5.0, 2.0, 5.0],
            "kind": ["order", "chat", "order"],
        }
    )
    got = interest_affinity(signals, W, tax, cfg).collect().sort("one_id")
    a = got.row(0, named=True)
    b = got.row(1, named=True)
    # a: 5 * 0.5 + 2 * ~1 = 4.5 -> 1 - 2^(-4.5/5)
    assert a["interest_camping"] == pytest.approx(1 - 2 ** (-4.5 / 5), rel=1e-9)
    # b: one order 8 weeks old weighs exactly half an order: score 2.5
    assert b["interest_fishing"] == pytest.approx(1 - 2 ** (-2.5 / 5), rel=1e-12)
    assert a["interest_hiking"] == 0.0
    assert a["interest_signal_count"] == 2 and b["interest_signal_count"] == 1
    assert a["interests"] == ["camping"] and a["primary_interest"] == "camping"
    # b has one signal: below min evidence, nothing assigned; a signal alone is its majority
    # with probability 3/4 (Beta(2, 1) above 1/2), enough for the primary (0.65)
    assert b["interests"] == [] and b["primary_interest"] == "fishing"
    assert got.columns == [
        "one_id",
        *interest_columns(tax),
        "interest_signal_count",
        "interests",
        "primary_interest",
    ]


def test_hand_built_people(tax: Taxonomy) -> None:
    day = W.end - timedelta(days=3)
    orders = _orders(
        [
            ("camper", day, "paid", "帐篷"),
            ("camper", day - timedelta(weeks=2), "paid", "睡袋"),
            ("skier", day, "paid", "滑雪镜"),
            ("old", W.end - timedelta(weeks=120), "paid", "鱼竿"),  # beyond the lookback
            ("old", W.end - timedelta(weeks=120), "paid", "鱼竿"),
        ]
    )
    events = _events(
        [
            ("angler", day, "search", None, "路亚竿推荐"),
            ("angler", day, "favorite", "渔轮", None),
            ("angler", day, "view", "鱼竿", None),
            ("camper", day, "view", "套锅", None),  # weak second interest
            ("skier", day, "search", None, "崇礼 雪票"),
        ]
    )
    messages = _messages(
        [
            ("1", "camper", "r", day, "周末去营地过夜，有人一起吗", None, None, None),
            ("2", "skier", "r", day, "雪季快到了，雪镜求推荐", None, None, None),
            ("3", "skier", "r", day, "带娃去野餐", None, None, None),
            ("4", "quiet", "r", day, "😀", None, None, None),
        ]
    )
    signals = interest_signals(orders, events, messages, W, tax)
    got = interest_affinity(signals, W, tax).collect().sort("one_id")
    rows = {r["one_id"]: r for r in got.iter_rows(named=True)}
    assert set(rows) == {"angler", "camper", "skier"}  # quiet and old have no signal
    assert rows["camper"]["primary_interest"] == "camping"
    assert rows["camper"]["interests"] == ["camping"]  # one view of 套锅 is not enough
    assert rows["camper"]["interest_outdoor_cooking"] > 0
    assert rows["angler"]["primary_interest"] == "fishing"
    assert rows["angler"]["interests"] == ["fishing"]
    assert rows["skier"]["primary_interest"] == "skiing"
    assert rows["skier"]["interests"] == ["skiing"]
    # 带娃去野餐: family (带娃, 野餐) and city (野餐), one chat signal each: below min evidence
    assert rows["skier"]["interest_family_outdoor"] > 0
    assert "family_outdoor" not in rows["skier"]["interests"]


people = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(["camping", "hiking", "fishing", "skiing"]),
        st.integers(min_value=0, max_value=60),  # age in days
        st.sampled_from([1.0, 2.0, 3.0, 5.0]),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(people)
def test_affinity_properties(tax: Taxonomy, rows: list[tuple]) -> None:
    cfg = InterestConfig()
    signals = pl.LazyFrame(
        {
            "one_id": [r[0] for r in rows],
            "interest": [r[1] for r in rows],
            "ts": [W.end - timedelta(days=r[2], hours=1) for r in rows],
            "weight": [r[3] for r in rows],
            "kind": ["x"] * len(rows),
        },
        schema=SIGNAL_SCHEMA,
    )
    got = interest_affinity(signals, W, tax, cfg).collect()
    cols = interest_columns(tax)
    assert got.height == len({r[0] for r in rows})
    for r in got.iter_rows(named=True):
        vals = [r[c] for c in cols]
        assert all(0.0 <= v < 1.0 for v in vals)
        mine = [x for x in rows if x[0] == r["one_id"]]
        assert r["interest_signal_count"] == len(mine)
        raw = {
            name: sum(
                x[3] * 2 ** (-((x[2] + 1 / 24) / 7) / cfg.half_life_weeks)
                for x in mine
                if x[1] == name
            )
            for name in tax.names
        }
        top, total = max(raw.values()), sum(raw.values())
        lead = next(n for n in tax.names if raw[n] == top)
        n_lead = sum(1 for x in mine if x[1] == lead)
        # P(share > 1/2) under a uniform prior: Beta(n_lead + 1, rest + 1) above 1/2
        sure = beta.sf(0.5, n_lead + 1, len(mine) - n_lead + 1) >= cfg.primary_confidence - 1e-12
        # the oracle of the margin, away from its edge (fixed-point sums round)
        if not sure or top - (total - top) < -1e-6 * total:
            assert r["primary_interest"] is None
        elif top - (total - top) > 1e-6 * total and sorted(raw.values())[-2] < top * (1 - 1e-9):
            assert r["primary_interest"] == lead
            assert r["interest_" + r["primary_interest"]] == max(vals)
        for name in r["interests"]:
            assert r["interest_" + name] >= cfg.threshold
            assert sum(1 for x in mine if x[1] == name) >= cfg.min_evidence
        # oracle for the raw score
        for name in tax.names:
            score = sum(
                x[3] * 2 ** (-((x[2] + 1 / 24) / 7) / cfg.half_life_weeks)
                for x in mine
                if x[1] == name
            )
            assert r["interest_" + name] == pytest.approx(
                1 - 2 ** (-score / cfg.saturation_score), abs=1e-12
            )


# -- graph and expansion ----------------------------------------------------------------------


def _affinity(tax: Taxonomy, people: dict[str, dict[str, float]], assigned: dict) -> pl.LazyFrame:
    rows = []
    for pid, aff in people.items():
        row = {"one_id": pid}
        row.update({c: aff.get(c.removeprefix("interest_"), 0.0) for c in interest_columns(tax)})
        row["interest_signal_count"] = 5
        row["interests"] = assigned[pid]
        row["primary_interest"] = assigned[pid][0] if assigned[pid] else None
        rows.append(row)
    return pl.LazyFrame(rows)


def test_interest_graph_and_expansion(tax: Taxonomy) -> None:
    cfg = InterestConfig(graph_min_co_count=1)
    assigned = {
        "p1": ["camping", "outdoor_cooking"],
        "p2": ["camping", "outdoor_cooking"],
        "p3": ["camping"],
        "p4": ["fishing"],
        "p5": [],
    }
    aff = _affinity(
        tax,
        {
            "p1": {"camping": 0.9, "outdoor_cooking": 0.5},
            "p2": {"camping": 0.8, "outdoor_cooking": 0.4},
            "p3": {"camping": 0.6},
            "p4": {"fishing": 0.7},
            "p5": {"skiing": 0.1},
        },
        assigned,
    )
    graph = interest_graph(aff, tax, cfg).collect()
    # N = 4 people with an assigned interest; camping 3, cooking 2, together 2
    expected = pl.DataFrame(
        {
            "interest_a": ["camping"],
            "interest_b": ["outdoor_cooking"],
            "co_count": [2],
            "count_a": [3],
            "count_b": [2],
            "lift": [2 * 4 / (3 * 2)],
            "jaccard": [2 / (3 + 2 - 2)],
        }
    )
    assert_frame_equal(graph, expected)
    assert interest_graph(aff, tax, InterestConfig(graph_min_co_count=3)).collect().height == 0

    out = interest_expansion(aff, graph.lazy(), tax, cfg).collect().sort("one_id")
    exp = {r["one_id"]: r for r in out.iter_rows(named=True)}
    # p3: camping only -> cooking via P(cooking | camping) = 2/3
    assert exp["p3"]["interest_outdoor_cooking_expanded"] == pytest.approx(0.6 * 2 / 3)
    assert exp["p3"]["interest_camping_expanded"] == 0.6  # direct evidence kept
    # p1 has direct cooking evidence: kept as is
    assert exp["p1"]["interest_outdoor_cooking_expanded"] == 0.5
    # p4 and p5 have no route to cooking or camping
    assert exp["p4"]["interest_outdoor_cooking_expanded"] == 0.0
    assert exp["p5"]["interest_camping_expanded"] == 0.0
    assert exp["p5"]["interest_skiing_expanded"] == 0.1
    assert out.height == 5

    # edges with lift <= expansion_min_lift are not followed
    strict = InterestConfig(graph_min_co_count=1, expansion_min_lift=2.0)
    out2 = interest_expansion(aff, graph.lazy(), tax, strict).collect()
    p3 = out2.filter(pl.col("one_id") == "p3").row(0, named=True)
    assert p3["interest_outdoor_cooking_expanded"] == 0.0


def test_graph_lift_matches_definition_on_random_population(tax: Taxonomy) -> None:
    import random

    rng = random.Random(7)
    names = tax.names[:5]
    assigned = {f"p{i}": sorted(rng.sample(names, rng.randint(0, 3))) for i in range(200)}
    aff = _affinity(tax, {p: {} for p in assigned}, assigned)
    graph = interest_graph(aff, tax, InterestConfig(graph_min_co_count=1)).collect()
    holders = [set(v) for v in assigned.values() if v]
    n = len(holders)
    for r in graph.iter_rows(named=True):
        a, b = r["interest_a"], r["interest_b"]
        ca = sum(a in h for h in holders)
        cb = sum(b in h for h in holders)
        co = sum(a in h and b in h for h in holders)
        assert (r["co_count"], r["count_a"], r["count_b"]) == (co, ca, cb)
        assert math.isclose(r["lift"], co * n / (ca * cb))
        assert math.isclose(r["jaccard"], co / (ca + cb - co))
        assert tax.names.index(a) < tax.names.index(b)
    pairs = sum(
        1
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if any(a in h and b in h for h in holders)
    )
    assert graph.height == pairs


def test_config_rejects_negative_event_weight() -> None:
    with pytest.raises(ValueError, match="view"):
        InterestConfig(event_weights={"view": -1.0})
    with pytest.raises(ValueError):
        InterestConfig(unknown=1)


def test_interest_stage_is_lazy(tax: Taxonomy) -> None:
    sig = interest_signals(_orders([]), _events([]), _messages([]), W, tax)
    assert isinstance(sig, pl.LazyFrame)
    assert isinstance(interest_affinity(sig, W, tax), pl.LazyFrame)
    assert datetime(2026, 3, 9) == W.end


def test_expansion_is_the_best_route_for_random_people(tax: Taxonomy) -> None:
    """An oracle in plain Python: for each person and interest without direct evidence, the
    max over the person's interests a (affinity > 0) of affinity_a * co_count / count_a, over
    the graph's edges with lift above the threshold."""
    rng = random.Random(5)
    names = tax.names
    people, assigned = {}, {}
    for i in range(300):
        held = rng.sample(names, rng.choice([0, 1, 2, 3]))
        people[f"p{i:03d}"] = {n: round(rng.uniform(0.05, 1.0), 3) for n in held}
        assigned[f"p{i:03d}"] = held[:2]
    cfg = InterestConfig(graph_min_co_count=2, expansion_min_lift=1.0)
    aff = _affinity(tax, people, assigned)
    graph = interest_graph(aff, tax, cfg).collect()
    assert graph.height > 5
    conf: dict[tuple[str, str], float] = {}
    for r in graph.filter(pl.col("lift") > cfg.expansion_min_lift).iter_rows(named=True):
        conf[(r["interest_a"], r["interest_b"])] = r["co_count"] / r["count_a"]
        conf[(r["interest_b"], r["interest_a"])] = r["co_count"] / r["count_b"]
    out = interest_expansion(aff, graph.lazy(), tax, cfg).collect()
    for row in out.iter_rows(named=True):
        held = people[row["one_id"]]
        for n in names:
            if held.get(n, 0) > 0:
                want = held[n]
            else:
                routes = [a * conf[(s, n)] for s, a in held.items() if (s, n) in conf and a > 0]
                want = max(routes, default=0.0)
            assert row[f"interest_{n}_expanded"] == pytest.approx(want, abs=1e-12), (row, n)


def test_affinity_is_the_same_from_run_to_run(tax: Taxonomy) -> None:
    # 400k signals over 1,000 people: a parallel group-by adds a group's floats in no fixed
    # order, so the affinities once differed in their last bits from run to run.
    rng = random.Random(5)
    n = 400_000
    signals = pl.LazyFrame(
        {
            "one_id": [str(rng.randrange(1_000)) for _ in range(n)],
            "interest": [rng.choice(tax.names) for _ in range(n)],
            "ts": [W.end - timedelta(minutes=rng.randrange(1, 200_000)) for _ in range(n)],
            "weight": [rng.choice([0.5, 1.0, 2.0, 5.0]) for _ in range(n)],
            "kind": ["x"] * n,
        },
        schema=SIGNAL_SCHEMA,
    )
    runs = [interest_affinity(signals, W, tax).collect().sort("one_id") for _ in range(4)]
    for other in runs[1:]:
        assert_frame_equal(other, runs[0], check_exact=True)


def test_primary_interest_abstains_without_a_margin(tax: Taxonomy) -> None:
    # fresh signals (1 hour old): raw scores are the weights (up to the decay of one hour)
    def person(pid: str, weights: dict[str, float]) -> list[tuple]:
        return [(pid, name, w) for name, w in weights.items()]

    rows = [
        # 6 > 5 by weight, and 3 of 4 signals: their majority with P = 0.81 (>= 0.65)
        *[("majority", "camping", 2.0)] * 3,
        ("majority", "hiking", 5.0),
        *person("split", {"camping": 5.0, "hiking": 5.0}),  # a tie: none
        *person("plurality", {"camping": 4.0, "hiking": 3.0, "fishing": 3.0}),  # 4 < 6: none
        # 6 > 3 by weight, but 2 of 5 signals: the lead is not surely most of them (P = 0.34)
        *[("few", "camping", 3.0)] * 2,
        *person("few", {"hiking": 1.0, "fishing": 1.0, "skiing": 1.0}),
        ("alone", "skiing", 1.0),  # one signal alone: P = 0.75
    ]
    signals = pl.LazyFrame(
        {
            "one_id": [r[0] for r in rows],
            "interest": [r[1] for r in rows],
            "ts": [W.end - timedelta(hours=1)] * len(rows),
            "weight": [r[2] for r in rows],
            "kind": ["x"] * len(rows),
        },
        schema=SIGNAL_SCHEMA,
    )
    got = dict(
        interest_affinity(signals, W, tax, InterestConfig())
        .select("one_id", "primary_interest")
        .collect()
        .iter_rows()
    )
    assert got == {
        "majority": "camping",
        "split": None,
        "plurality": None,
        "few": None,
        "alone": "skiing",
    }
    # a larger margin: (6 - 5) / 11 = 0.09 is not enough for 0.1
    # (and a stricter confidence: 3 of 4 signals, P = 0.8125, is not enough for 0.9)
    sure = dict(
        interest_affinity(signals, W, tax, InterestConfig(primary_confidence=0.9))
        .select("one_id", "primary_interest")
        .collect()
        .iter_rows()
    )
    assert sure["majority"] is None and sure["alone"] is None
    strict = dict(
        interest_affinity(signals, W, tax, InterestConfig(primary_margin=0.1))
        .select("one_id", "primary_interest")
        .collect()
        .iter_rows()
    )
    assert strict["majority"] is None and strict["alone"] == "skiing"


@pytest.mark.parametrize("confidence", [0.5, 0.55, 0.65, 0.8, 0.95, 0.99])
def test_the_majority_table_is_the_smallest_lead_that_is_sure_enough(confidence: float) -> None:
    from fractions import Fraction

    from scipy.stats import binom

    from segments.stages.interests import _majority_table

    table = _majority_table(confidence)
    assert sorted(table) == list(range(4001))
    # exactly, on integers, for the first totals: P(Binomial(t + 1, 1/2) <= a) >= confidence
    # at a and not at a - 1 (at 1/2 this is a tie for every even total: the table says so)
    for t in range(80):
        m, a = t + 1, table[t]

        def cdf(k: int, m: int = m) -> Fraction:
            return Fraction(sum(math.comb(m, i) for i in range(k + 1)), 2**m)

        assert cdf(a) >= Fraction(confidence) and (a == 0 or cdf(a - 1) < Fraction(confidence))
    if confidence != 0.5:  # away from ties, scipy's quantile gives every entry
        assert table == {t: int(binom.ppf(confidence, t + 1, 0.5)) for t in range(4001)}


def _sums(rows: list[tuple[str, str, int, int]]) -> pl.LazyFrame:
    return pl.LazyFrame(
        rows,
        schema={"one_id": pl.String, "interest": pl.String, "_s": pl.Int128, "_n": pl.Int64},
        orient="row",
    )


def _abcd() -> Taxonomy:
    return taxonomy_from_dict(
        {
            "interests": {
                n: {"label": n.upper(), "categories": [f"cat_{n}"], "keywords": [f"kw_{n}"]}
                for n in "abcd"
            }
        }
    )


def test_an_unplaced_category_counts_for_the_one_interest_its_people_lead_out_of_proportion() -> (
    None
):
    """400 people lead with a, b, c, d (200, 120, 40, 40: the brand's rates 0.5, 0.3, 0.1,
    0.1; with the default lift 2 an interest stands out above 1.0, 0.6, 0.2 and 0.2). Each
    category's holders, and P(p > 2 b) for p ~ Beta(k + 1, n - k + 1):
    - X: 12 c, 4 a, 4 b: c 0.99997 -> X counts for c;
    - G (everyone's gift card): 15 a, 12 b, 3 c: c 0.107, b 0.013 -> nothing stands out;
    - S (shared): 9 c, 9 d, 2 a: c and d both 0.996 -> two stand out: nothing;
    - F: 4 c -> fewer than 5 people: nothing;
    - Y: 5 c, 1 a and 30 holders with no placed interest, who are not counted: c 0.9996 (with
      them, 5 of 36: 0.22)."""
    people = {"a": 200, "b": 120, "c": 40, "d": 40}
    rows, ids = [], {}
    for name, count in people.items():
        ids[name] = [f"{name}{i:03d}" for i in range(count)]
        # the lead: the highest sum (a weaker second interest beside it changes nothing)
        rows += [(p, name, 50, 5) for p in ids[name]] + [(p, "a", 10, 1) for p in ids[name]]
    holders = {
        "X": {"c": 12, "a": 4, "b": 4},
        "G": {"a": 15, "b": 12, "c": 3},
        "S": {"c": 9, "d": 9, "a": 2},
        "F": {"c": 4},
        "Y": {"c": 5, "a": 1},
    }
    used = dict.fromkeys(people, 0)
    for category, leads in holders.items():
        for name, k in leads.items():
            for p in ids[name][used[name] : used[name] + k]:
                rows.append((p, CATEGORY_KEY + category, 15, 3))
            used[name] += k
    rows += [(f"z{i}", CATEGORY_KEY + "Y", 5, 1) for i in range(30)]  # no placed interest
    rows += [(ids["c"][0], CATEGORY_KEY + "X", 5, 1)]  # a second identifier's sum, added
    t = _abcd()
    assert learn_category_map(_sums(rows), t) == {"X": "c", "Y": "c"}
    off = InterestConfig(learn_categories=False)
    assert learn_category_map(_sums(rows), t, off) == {}
    stricter = InterestConfig(category_min_people=13)  # X's 12 c are now too few
    assert learn_category_map(_sums(rows), t, stricter) == {}
    # a lead tied between two interests goes to the first in taxonomy order: b, not c
    tied = [("t1", "b", 10, 1), ("t1", "c", 10, 1), ("u1", "a", 10, 1), ("u2", "a", 10, 1)]
    tied += [(f"h{i}", "c", 10, 1) for i in range(3)]
    tied += [("t1", CATEGORY_KEY + "Q", 1, 1)]
    # (one holder leading with b, whose rate is 1/6: P(p > 1/3 | 1 of 1) = 0.889)
    loose = InterestConfig(category_min_people=1, category_confidence=0.5)
    assert learn_category_map(_sums(tied), t, loose) == {"Q": "b"}
    # every category placed: nothing to learn
    assert learn_category_map(_sums([("p", "a", 1, 1)]), t) == {}


def test_a_learned_category_counts_for_its_interest_and_an_unlearned_one_for_nothing() -> None:
    t = _abcd()
    sums = _sums(
        [
            ("p1", CATEGORY_KEY + "X", 10 << 40, 2),  # only a learned category
            ("p2", "a", 10 << 40, 2),
            ("p2", CATEGORY_KEY + "G", 10 << 40, 7),  # G is learned for nothing
            ("p3", CATEGORY_KEY + "G", 10 << 40, 1),  # nothing but G: no row
        ]
    )
    cfg = InterestConfig()
    got = affinity_from_sums(sums, W, t, cfg, {"X": "c"}).collect().sort("one_id")
    assert got["one_id"].to_list() == ["p1", "p2"]
    assert got["interest_signal_count"].to_list() == [2, 2]
    assert got["primary_interest"].to_list() == ["c", "a"]
    as_c = affinity_from_sums(
        _sums([("p1", "c", 10 << 40, 2)]), W, t, cfg
    ).collect()  # the same sums under c's own name
    assert_frame_equal(got.head(1), as_c)
    # without a map, a category's sums count for nothing
    assert affinity_from_sums(sums, W, t, cfg).collect()["one_id"].to_list() == ["p2"]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["p1", "p2", "p3"]),
            st.sampled_from(["a", "b", "c", "d", CATEGORY_KEY + "X", CATEGORY_KEY + "Q", "zz"]),
            st.one_of(st.just(0), st.integers(1 << 55, 1 << 61)),  # scores of about 0.1-8 here
            st.integers(0, 3),
        ),
        max_size=25,
    )
)
def test_affinity_is_the_same_however_a_persons_rows_are_split(rows) -> None:
    """Rows of one person and interest (several identifiers, a learned category beside its
    interest) are added before anything else: the affinity of the rows as they come equals,
    to the bit, that of the same rows summed per (person, interest) first, and a person is
    there exactly when a placed (or learned) interest's count sums above 0."""
    t, cfg, learned = _abcd(), InterestConfig(), {"X": "c"}
    got = affinity_from_sums(_sums(rows), W, t, cfg, learned).collect().sort("one_id")
    mapped = [(p, "c" if i == CATEGORY_KEY + "X" else i, s, n) for p, i, s, n in rows]
    totals: dict[tuple[str, str], list[int]] = {}
    for p, i, s, n in mapped:
        if i in {"a", "b", "c", "d"}:
            acc = totals.setdefault((p, i), [0, 0])
            acc[0] += s
            acc[1] += n
    summed = _sums([(p, i, s, n) for (p, i), (s, n) in sorted(totals.items())])
    assert_frame_equal(got, affinity_from_sums(summed, W, t, cfg).collect().sort("one_id"))
    held = {p: 0 for (p, _), (_, n) in totals.items() if n > 0}
    for (p, _), (_, n) in totals.items():
        if n > 0:
            held[p] += n
    assert dict(zip(got["one_id"], got["interest_signal_count"], strict=True)) == held
