"""Tests for community features, the interaction graph and PageRank."""

from __future__ import annotations

import random
from datetime import timedelta

import networkx as nx
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from segments.stages.community import (
    CommunityConfig,
    community_edges,
    community_features,
    pagerank_scores,
)
from segments.weeks import Week

W = Week.parse("2026-W20")
T = W.end - timedelta(days=1)  # inside the last 4 weeks

SCHEMA = {
    "msg_id": pl.String,
    "one_id": pl.String,
    "room_id": pl.String,
    "ts": pl.Datetime("us"),
    "text": pl.String,
    "reply_to_msg_id": pl.String,
    "mentions": pl.List(pl.String),
    "mention_one_ids": pl.List(pl.String),
}


def _messages(rows: list[tuple], with_mention_ids: bool = True) -> pl.LazyFrame:
    lf = pl.LazyFrame(rows, schema=SCHEMA, orient="row")
    return lf if with_mention_ids else lf.drop("mention_one_ids")


def _by_id(df: pl.DataFrame) -> dict[str, dict]:
    return {r["one_id"]: r for r in df.iter_rows(named=True)}


# -- PageRank ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pagerank_matches_networkx(seed: int) -> None:
    rng = random.Random(seed)
    nodes = [f"u{i}" for i in range(40)]
    rows = []
    for _ in range(150):
        a, b = rng.sample(nodes, 2)
        rows.append((a, b, float(rng.randint(1, 4))))
    # a few nodes only receive (dangling) and a parallel edge
    rows.append(("u0", "sink1", 1.0))
    rows.append(("u1", "sink2", 2.0))
    rows.append(("u1", "sink2", 1.0))
    edges = pl.DataFrame(rows, schema=["src", "dst", "weight"], orient="row")

    g = nx.DiGraph()
    for a, b, w in rows:
        if g.has_edge(a, b):
            g[a][b]["weight"] += w
        else:
            g.add_edge(a, b, weight=w)
    expected = nx.pagerank(g, alpha=0.85, tol=1e-13, max_iter=1000)

    got = pagerank_scores(edges, 0.85)
    assert got["one_id"].to_list() == sorted(expected)
    for r in got.iter_rows(named=True):
        assert r["pagerank"] == pytest.approx(expected[r["one_id"]], abs=1e-6)
    assert got["pagerank"].sum() == pytest.approx(1.0, abs=1e-9)
    assert got["pagerank_lift"].to_list() == pytest.approx((got["pagerank"] * got.height).to_list())
    n = len(expected)
    for r in got.iter_rows(named=True):  # lift / (1 + lift), from networkx's PageRank
        lift = expected[r["one_id"]] * n
        assert r["koc_score"] == pytest.approx(lift / (1 + lift), abs=1e-6)


def _star(hub: str, fans: int, prefix: str) -> list[tuple[str, str, float]]:
    return [(f"{prefix}{i}", hub, 1.0) for i in range(fans)] + [(hub, f"{prefix}0", 1.0)]


def test_koc_score_moves_only_where_the_graph_moved() -> None:
    """A community far away gaining members leaves this one's koc_score (3 decimals) as it was:
    the score is the lift against the average member, not a scale by the graph's largest
    PageRank (which moved every score in the graph: the old definition, checked too)."""
    here = [("a", "b", 1.0), ("b", "c", 1.0), ("c", "a", 1.0), ("d", "a", 2.0), ("e", "a", 1.0)]
    before = pagerank_scores(
        pl.DataFrame(here + _star("hub", 20, "f"), orient="row", schema=["src", "dst", "weight"])
    )
    after = pagerank_scores(
        pl.DataFrame(here + _star("hub", 40, "f"), orient="row", schema=["src", "dst", "weight"])
    )
    mine = ["a", "b", "c", "d", "e"]

    def scores(df: pl.DataFrame, col: str) -> list[float]:
        return df.filter(pl.col("one_id").is_in(mine)).sort("one_id")[col].round(3).to_list()

    assert scores(before, "koc_score") == scores(after, "koc_score")
    assert (
        before.filter(one_id="hub")["koc_score"].item()
        < after.filter(one_id="hub")["koc_score"].item()
    )  # the hub's own score rose with its followers
    by_max = [
        df.with_columns(koc_score=pl.col("pagerank") / pl.col("pagerank").max())
        for df in (before, after)
    ]
    assert scores(by_max[0], "koc_score") != scores(by_max[1], "koc_score")


def test_pagerank_unweighted_and_empty() -> None:
    edges = pl.DataFrame({"src": ["a", "b", "c"], "dst": ["b", "c", "a"]})
    got = pagerank_scores(edges)
    assert got["pagerank"].to_list() == pytest.approx([1 / 3] * 3)
    empty = pagerank_scores(pl.DataFrame(schema={"src": pl.String, "dst": pl.String}))
    assert empty.height == 0
    assert empty.columns == ["one_id", "pagerank", "pagerank_lift", "koc_score"]


# -- edges ------------------------------------------------------------------------------------


def test_edges_from_replies_and_mentions() -> None:
    msgs = _messages(
        [
            ("q", "asker", "r", T, "有没有好用的帐篷推荐？", None, None, None),
            ("a1", "guru", "r", T, "看看牧高笛", "q", None, None),
            ("a2", "guru", "r", T, "补充一下", "q", ["raw"], ["asker", "asker", "guru"]),
            ("self", "asker", "r", T, "谢谢", "q", None, None),  # reply to self: no edge
            ("x", "guru", "r", T, "回复不存在的消息", "missing", None, None),
            ("old", "x", "r", W.end - timedelta(weeks=14), "早就说过", "q", None, ["guru"]),
            ("future", "x", "r", W.end, "未来", "q", None, None),
        ]
    )
    got = community_edges(msgs, W).collect().sort("src", "dst")
    expected = pl.DataFrame(
        {"src": ["guru"], "dst": ["asker"], "weight": [3.0]}  # 2 replies + 1 mention (deduped)
    )
    assert_frame_equal(got, expected)
    weighted = community_edges(msgs, W, CommunityConfig(mention_weight=0.5)).collect()
    assert weighted["weight"].to_list() == [2.5]


def test_edges_without_mention_column() -> None:
    msgs = _messages(
        [
            ("q", "a", "r", T, "怎么选睡袋", None, ["raw_id"], None),
            ("r", "b", "r", T, "看温标", "q", None, None),
        ],
        with_mention_ids=False,
    )
    got = community_edges(msgs, W).collect()
    assert got.rows() == [("b", "a", 1.0)]


# -- features ---------------------------------------------------------------------------------


def _community() -> list[tuple]:
    rows: list[tuple] = []
    # guru answers 6 questions of 6 different people and is mentioned by them
    for i in range(6):
        rows.append((f"q{i}", f"fan{i}", "room1", T, f"请问{i}号营地怎么走", None, None, None))
        rows.append((f"a{i}", "guru", "room1", T, "走左边那条路", f"q{i}", None, None))
        rows.append((f"t{i}", f"fan{i}", "room1", T, "谢谢@guru", f"a{i}", ["x"], ["guru"]))
    # helper answers two questions of the asker
    rows += [
        ("h1", "asker", "room2", T, "睡袋怎么选？", None, None, None),
        ("h2", "helper", "room2", T, "看温标", "h1", None, None),
        ("h3", "asker", "room3", T, "防潮垫有没有推荐", None, None, None),
        ("h4", "helper", "room2", T, "充气的好", "h3", None, None),
        ("h5", "helper", "room2", T, "今天天气不错", None, None, None),
    ]
    # the hunter posts deals; the lurker posted once, long ago; empty and emoji messages
    rows += [
        ("d1", "hunter", "room1", T, "有券吗", None, None, None),
        ("d2", "hunter", "room1", T, "帮我砍一刀", None, None, None),
        ("d3", "hunter", "room1", T, "这个帐篷好看", None, None, None),
        ("d4", "hunter", "room1", T - timedelta(weeks=6), "618秒杀", None, None, None),
        ("d5", "hunter", None, T - timedelta(weeks=20), "领券", None, None, None),
        ("l1", "lurker", "room1", W.end - timedelta(weeks=30), "大家好", None, None, None),
        ("e1", "emoji", "room1", T, "😀😀", None, None, None),
        ("e2", "emoji", "room1", T, "", None, None, None),
        ("e3", "emoji", "room1", T, None, None, None, None),
        ("e4", "emoji", "room1", T, "👍", None, None, None),
        ("n1", None, "room1", T, "没有身份", None, None, None),
        ("z1", "ghost", "room1", W.end - timedelta(weeks=60), "太久以前", None, None, None),
        ("f1", "future", "room1", W.end + timedelta(hours=1), "未来", None, None, None),
    ]
    return rows


def test_community_features_roles_and_counts() -> None:
    msgs = _messages(_community())
    koc = pagerank_scores(community_edges(msgs, W).collect()).lazy()
    got = community_features(msgs, W, CommunityConfig(), koc).collect()
    rows = _by_id(got)
    assert set(rows) == {"guru", "helper", "asker", "hunter", "lurker", "emoji"} | {
        f"fan{i}" for i in range(6)
    }
    assert got.columns == [
        "one_id",
        "messages_4w",
        "messages_13w",
        "active_groups_13w",
        "questions_13w",
        "answers_13w",
        "replies_received_13w",
        "mentions_received_13w",
        "koc_score",
        "community_role",
        "deal_seeking_share",
    ]
    g = rows["guru"]
    assert (g["messages_13w"], g["answers_13w"], g["replies_received_13w"]) == (6, 6, 6)
    assert g["mentions_received_13w"] == 6
    lift = koc.collect().filter(one_id="guru")["pagerank_lift"].item()
    assert g["koc_score"] == round(lift / (1 + lift), 3) and g["community_role"] == "koc"
    assert g["koc_score"] == got["koc_score"].max()
    assert rows["helper"]["community_role"] == "answerer"
    assert rows["helper"]["answers_13w"] == 2 and rows["helper"]["messages_13w"] == 3
    assert rows["asker"]["community_role"] == "asker"
    assert rows["asker"]["questions_13w"] == 2 and rows["asker"]["active_groups_13w"] == 2
    h = rows["hunter"]
    assert (h["messages_4w"], h["messages_13w"], h["active_groups_13w"]) == (3, 4, 1)
    assert h["deal_seeking_share"] == pytest.approx(3 / 4)  # 有券吗, 砍一刀, 秒杀 (d5 is too old)
    assert h["community_role"] == "none"
    assert rows["lurker"]["community_role"] == "lurker"
    assert rows["lurker"]["messages_13w"] == 0
    assert rows["lurker"]["deal_seeking_share"] is None
    e = rows["emoji"]
    assert (e["messages_13w"], e["questions_13w"], e["deal_seeking_share"]) == (4, 0, 0.0)
    assert e["community_role"] == "none"
    assert e["koc_score"] is None  # not in the graph
    assert rows["fan0"]["questions_13w"] == 1 and rows["fan0"]["community_role"] == "lurker"


def test_community_features_without_koc_and_without_mentions() -> None:
    msgs = _messages(_community(), with_mention_ids=False)
    got = _by_id(community_features(msgs, W).collect())
    assert got["guru"]["koc_score"] is None
    assert got["guru"]["mentions_received_13w"] == 0
    assert got["guru"]["community_role"] == "answerer"  # no koc without PageRank


def test_all_null_and_empty_inputs() -> None:
    msgs = _messages([("1", "p", None, T, None, None, None, None)])
    got = community_features(msgs, W).collect()
    assert got.rows() == [("p", 1, 1, 0, 0, 0, 0, 0, None, "lurker", 0.0)]
    empty = community_features(_messages([]), W).collect()
    assert empty.height == 0
    assert community_edges(_messages([]), W).collect().height == 0
