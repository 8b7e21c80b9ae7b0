"""Benchmark: interest affinities and community tags over synthetic events and chat messages.

    .venv/bin/python benchmarks/bench_interests.py                  # 10M events, 1M messages
    .venv/bin/python benchmarks/bench_interests.py --events 100_000_000 --messages 5_000_000

Synthesises data in memory (not timed), then times, each ending in a collect():
  affinity   interest_signals (events + messages) -> interest_affinity
  community  community_edges -> pagerank_scores -> community_features
and prints seconds per step and the process's peak RSS. Target: 100M events and 5M messages
in <= 60 s for both steps together.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np
import polars as pl

from segments.stages.community import (
    CommunityConfig,
    community_edges,
    community_features,
    pagerank_scores,
)
from segments.stages.interests import InterestConfig, interest_affinity, interest_signals
from segments.taxonomy import load_taxonomy
from segments.weeks import Week

EVENT_TYPES = [
    "view",
    "search",
    "add_cart",
    "favorite",
    "share",
    "coupon_claim",
    "checkin",
    "live_view",
]
EVENT_P = [0.55, 0.15, 0.08, 0.05, 0.03, 0.06, 0.05, 0.03]

QUERIES = [
    "轻量帐篷 两人",
    "防水登山鞋",
    "天幕 黑胶",
    "睡袋 零下10度",
    "越野跑鞋 女",
    "骑行头盔",
    "路亚竿",
    "滑雪镜 近视",
    "桨板 充气",
    "攀岩鞋",
    "户外炉头 套锅",
    "冲锋衣 三合一",
    "儿童冲锋衣",
    "野餐垫 防水",
    "露营车",
    "速干衣 男",
    "抓绒衣",
    "防晒衣 upf50",
    "新款",
    "礼盒",
    "包邮",
    "外套",
    "T恤",
    "SALE",
]
CHAT = [
    "周末去营地过夜，有人一起吗",
    "新买的天幕今天第一次搭",
    "这双登山鞋走了二十公里不磨脚",
    "雪季快到了，雪镜求推荐",
    "有券吗",
    "帮我砍一刀",
    "今天天气不错",
    "😀😀",
    "",
    "哈哈哈",
    "收到",
    "请问莫干山哪个营地好？",
    "崇礼万龙这周雪况怎么样",
    "武功山两天一夜路线求推荐",
    "千岛湖划桨板太爽了",
    "阳朔攀岩有没有岩友组队",
    "带娃去野餐，儿童帐篷很好用",
    "炉头和套锅一起买划算吗",
    "双11有没有满减",
    "👍",
    "钓友们周末野钓去吗",
    "跑友们崇礼168报名了吗",
    "骑友环太湖走起",
    "冲锋衣城市通勤也能穿",
]
CATEGORIES = [
    "帐篷",
    "天幕",
    "睡袋",
    "登山鞋",
    "速干衣",
    "越野跑鞋",
    "骑行服",
    "鱼竿",
    "滑雪服",
    "桨板",
    "攀岩鞋",
    "套锅",
    "冲锋衣",
    "防晒衣",
    "儿童冲锋衣",
    "户外帐篷",
    "袜子",
    "礼品卡",
    None,
]


def _pick(rng: np.random.Generator, pool: list, n: int, p: list[float] | None = None) -> pl.Series:
    idx = rng.choice(len(pool), size=n, p=p).astype(np.uint32)
    return pl.Series(pool, dtype=pl.String).gather(idx)


def synth(n_events: int, n_messages: int, n_people: int, week: Week, seed: int):
    rng = np.random.default_rng(seed)
    span_us = 52 * 7 * 24 * 3600 * 1_000_000
    start = week.window_start(52)

    def ts(n: int) -> pl.Series:
        offs = rng.integers(0, span_us, size=n)
        return (pl.lit(start) + pl.duration(microseconds=pl.Series(offs))).alias("ts")

    # most people are occasional visitors, a few are heavy users
    heavy = rng.random(n_events) < 0.3
    people = np.where(
        heavy, rng.zipf(1.3, size=n_events) % n_people, rng.integers(0, n_people, n_events)
    )
    events = pl.DataFrame(
        {
            "one_id": pl.Series(people).cast(pl.String),
            "event": _pick(rng, EVENT_TYPES, n_events, EVENT_P),
            "category": _pick(rng, CATEGORIES, n_events),
        }
    ).with_columns(ts(n_events))
    is_search = events["event"] == "search"
    events = events.with_columns(
        pl.when(pl.Series(is_search)).then(_pick(rng, QUERIES, n_events)).alias("query")
    )

    senders = rng.zipf(1.5, size=n_messages) % (n_people // 10 + 1)
    reply_to = np.where(rng.random(n_messages) < 0.3, rng.integers(0, n_messages, n_messages), -1)
    mention = np.where(
        rng.random(n_messages) < 0.05, rng.integers(0, n_people // 10 + 1, n_messages), -1
    )
    messages = (
        pl.DataFrame(
            {
                "msg_id": pl.int_range(n_messages, eager=True).cast(pl.String),
                "one_id": pl.Series(senders).cast(pl.String),
                "room_id": pl.Series(rng.integers(0, 500, n_messages)).cast(pl.String),
                "text": _pick(rng, CHAT, n_messages),
                "reply_to_msg_id": pl.Series(reply_to),
                "_mention": pl.Series(mention),
            }
        )
        .with_columns(
            ts(n_messages),
            pl.when(pl.col("reply_to_msg_id") >= 0).then(pl.col("reply_to_msg_id").cast(pl.String)),
            pl.when(pl.col("_mention") >= 0)
            .then(pl.concat_list(pl.col("_mention").cast(pl.String)))
            .alias("mention_one_ids"),
            pl.lit(None, pl.List(pl.String)).alias("mentions"),
        )
        .drop("_mention")
    )
    return events, messages


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 1024 / 1024


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=lambda s: int(s.replace("_", "")), default=10_000_000)
    ap.add_argument("--messages", type=lambda s: int(s.replace("_", "")), default=1_000_000)
    ap.add_argument("--people", type=lambda s: int(s.replace("_", "")), default=2_000_000)
    ap.add_argument("--week", default="2026-W47")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    week = Week.parse(args.week)
    tax = load_taxonomy()
    t0 = time.perf_counter()
    events, messages = synth(args.events, args.messages, args.people, week, args.seed)
    t_synth = time.perf_counter() - t0
    print(
        f"synthesised {events.height:,} events, {messages.height:,} messages "
        f"in {t_synth:.1f}s (not timed); peak RSS so far {peak_rss_mb():,.0f} MB"
    )

    t0, c0 = time.perf_counter(), time.process_time()
    signals = interest_signals(None, events.lazy(), messages.lazy(), week, tax, InterestConfig())
    affinity = interest_affinity(signals, week, tax, InterestConfig()).collect()
    t_aff, c_aff = time.perf_counter() - t0, time.process_time() - c0
    assigned = affinity.filter(pl.col("interests").list.len() > 0).height
    print(
        f"affinity   {t_aff:6.1f}s wall {c_aff:6.1f}s cpu  "
        f"{affinity.height:,} people, {assigned:,} with interests"
    )

    t0, c0 = time.perf_counter(), time.process_time()
    cfg = CommunityConfig()
    edges = community_edges(messages.lazy(), week, cfg).collect()
    koc = pagerank_scores(edges, cfg.damping)
    community = community_features(messages.lazy(), week, cfg, koc.lazy()).collect()
    t_com, c_com = time.perf_counter() - t0, time.process_time() - c0
    roles = dict(community.group_by("community_role").len().iter_rows())
    print(
        f"community  {t_com:6.1f}s wall {c_com:6.1f}s cpu  "
        f"{community.height:,} people, {edges.height:,} edges, roles {roles}"
    )

    print(
        f"total      {t_aff + t_com:6.1f}s wall {c_aff + c_com:6.1f}s cpu  "
        f"peak RSS {peak_rss_mb():,.0f} MB"
    )


if __name__ == "__main__":
    main()
