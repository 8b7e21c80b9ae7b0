"""Community roles from group chat: activity, questions and answers, KOC PageRank, deal seeking.

The KOC score needs PageRank, an iterative computation over the whole reply/mention graph, so
it is split out of the lazy stage: `community_edges` builds the edge list lazily, the pipeline
collects it, calls `pagerank_scores` (scipy.sparse power iteration) and hands the result to
`community_features(..., koc=...)`, which joins it in.

Mentions: the graph uses the `mention_one_ids` column (mentioned people resolved to one_ids by
the pipeline) when the messages frame has it; raw `mentions` ids cannot be placed in the graph
and are ignored. A null text is an empty message: it counts as a message and matches nothing.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy import sparse

from segments.settings.community import CommunityConfig
from segments.weeks import Week

ROLES = ("koc", "answerer", "asker", "lurker", "none")
# koc_score is the PageRank lift (PageRank x the graph's nodes: 1 for an average member) as
# lift / (1 + lift), to 3 decimals. PageRank is global: one new reply anywhere moves every
# score in the graph in its 11th digit, and the graph's largest PageRank (which koc_score was
# once scaled by) moved by 6 % from one day to the next at 2M people: all 146,734 scores of
# the graph changed, and a new day's refresh recomputed most of the graph's people for that
# alone. The lift moves by about 0.04 % a day for most members: at 3 decimals 4,221 of the
# 146,734 change, where the graph near them changed.
KOC_DECIMALS = 3

EDGE_SCHEMA = {"src": pl.String(), "dst": pl.String(), "weight": pl.Float64()}
PAGERANK_SCHEMA = {
    "one_id": pl.String(),
    "pagerank": pl.Float64(),
    "pagerank_lift": pl.Float64(),
    "koc_score": pl.Float64(),
}


def _has(lf: pl.LazyFrame, col: str) -> bool:
    return col in lf.collect_schema().names()


def _marks(text: pl.Expr, words: tuple[str, ...]) -> pl.Expr:
    if not words:
        return pl.lit(False)
    return text.fill_null("").str.contains_any(list(words), ascii_case_insensitive=True)


def _is_question(messages: pl.LazyFrame, cfg: CommunityConfig) -> pl.Expr:
    """Whether a message asks something: the row store's `is_question` when the rows come from
    the person state (worked out once, when the message arrived), else its text."""
    if _has(messages, "is_question"):
        return pl.col("is_question")
    return _marks(pl.col("text"), cfg.question_markers)


def _is_deal(messages: pl.LazyFrame, cfg: CommunityConfig) -> pl.Expr:
    """Whether a message talks deals (`is_deal` of the row store, else its text)."""
    if _has(messages, "is_deal"):
        return pl.col("is_deal")
    return _marks(pl.col("text"), cfg.deal_keywords)


def _seen(messages: pl.LazyFrame, week: Week) -> pl.LazyFrame:
    return messages.filter((pl.col("ts") < week.end) & pl.col("one_id").is_not_null())


def _reply_pairs(messages: pl.LazyFrame, week: Week, cfg: CommunityConfig) -> pl.LazyFrame:
    """Replies sent in the window: (msg_id, src, dst, parent_is_question), src != dst."""
    seen = _seen(messages, week)
    parents = seen.select(
        pl.col("msg_id").alias("reply_to_msg_id"),
        pl.col("one_id").alias("dst"),
        _is_question(messages, cfg).alias("parent_is_question"),
    ).unique("reply_to_msg_id", keep="any")
    return (
        seen.filter(
            (pl.col("ts") >= week.window_start(cfg.window_weeks))
            & pl.col("reply_to_msg_id").is_not_null()
        )
        .select("msg_id", pl.col("one_id").alias("src"), "reply_to_msg_id")
        .join(parents, on="reply_to_msg_id", how="inner")
        .filter(pl.col("src") != pl.col("dst"))
        .select("msg_id", "src", "dst", "parent_is_question")
    )


def _mention_pairs(messages: pl.LazyFrame, week: Week, cfg: CommunityConfig) -> pl.LazyFrame:
    """Mentions sent in the window: (msg_id, src, dst), each person once per message."""
    if not _has(messages, "mention_one_ids"):
        return pl.LazyFrame(schema={"msg_id": pl.String(), "src": pl.String(), "dst": pl.String()})
    return (
        _seen(messages, week)
        .filter(pl.col("ts") >= week.window_start(cfg.window_weeks))
        .select("msg_id", pl.col("one_id").alias("src"), pl.col("mention_one_ids").alias("dst"))
        .explode("dst")
        .filter(pl.col("dst").is_not_null() & (pl.col("dst") != pl.col("src")))
        .unique(["msg_id", "dst"])
    )


def community_edges(
    messages: pl.LazyFrame, week: Week, cfg: CommunityConfig | None = None
) -> pl.LazyFrame:
    """The directed interaction graph of the window (`window_weeks` before week.end).

    Input: messages (msg_id, one_id of the sender, ts, text, reply_to_msg_id, optional
    mention_one_ids). An edge goes from a sender to the person they replied to or mentioned;
    self-edges are dropped. Output: src, dst, weight (reply_weight per reply + mention_weight
    per mention), one row per (src, dst).
    """
    cfg = cfg or CommunityConfig()
    # Counted per kind and weighted after: a float sum in a parallel group-by is not the same
    # from run to run, a count is.
    one, zero = pl.lit(1, pl.Int64), pl.lit(0, pl.Int64)
    replies = _reply_pairs(messages, week, cfg).select(
        "src", "dst", one.alias("_replies"), zero.alias("_mentions")
    )
    mentions = _mention_pairs(messages, week, cfg).select(
        "src", "dst", zero.alias("_replies"), one.alias("_mentions")
    )
    return (
        pl.concat([replies, mentions])
        .group_by("src", "dst")
        .agg(pl.col("_replies").sum(), pl.col("_mentions").sum())
        .with_columns(
            (pl.col("_replies") * cfg.reply_weight + pl.col("_mentions") * cfg.mention_weight)
            .cast(pl.Float64)
            .alias("weight")
        )
        .filter(pl.col("weight") > 0)
        .select(pl.col(c).cast(t) for c, t in EDGE_SCHEMA.items())
    )


def pagerank_scores(
    edges: pl.DataFrame,
    damping: float = 0.85,
    *,
    tol: float = 1e-12,
    max_iter: int = 500,
) -> pl.DataFrame:
    """Weighted PageRank of the graph in `edges` (src, dst, optional weight), by power iteration.

    Same definition as networkx.pagerank: out-weights are normalised per node, a node with no
    out-edge spreads its rank evenly over all nodes, teleport is uniform; iteration stops when
    the L1 change is below n * tol. Parallel edges add up. Output, sorted by one_id: one_id,
    pagerank (sums to 1), pagerank_lift (pagerank * n: 1 for an average node) and koc_score
    (lift / (1 + lift), 0-1: 0.5 for an average node; it depends on no single node, as a
    scale by the largest pagerank would).
    """
    if edges.height == 0:
        return pl.DataFrame(schema=PAGERANK_SCHEMA)
    weight = pl.col("weight").cast(pl.Float64) if "weight" in edges.columns else pl.lit(1.0)
    e = edges.select(
        pl.col("src").cast(pl.String), pl.col("dst").cast(pl.String), weight.alias("w")
    )
    nodes = pl.concat([e["src"], e["dst"]]).unique().sort()
    n = nodes.len()
    index = pl.DataFrame({"node": nodes, "i": np.arange(n, dtype=np.int64)})
    e = e.join(index.rename({"node": "src", "i": "s"}), on="src").join(
        index.rename({"node": "dst", "i": "d"}), on="dst"
    )
    m = sparse.csr_matrix((e["w"].to_numpy(), (e["s"].to_numpy(), e["d"].to_numpy())), shape=(n, n))
    out = np.asarray(m.sum(axis=1)).ravel()
    dangling = out == 0
    inv = np.zeros(n)
    inv[~dangling] = 1.0 / out[~dangling]
    pt = (sparse.diags(inv) @ m).T.tocsr()
    x = np.full(n, 1.0 / n)
    for _ in range(max_iter):
        prev = x
        x = damping * (pt @ prev + prev[dangling].sum() / n) + (1.0 - damping) / n
        if np.abs(x - prev).sum() < n * tol:
            break
    return pl.DataFrame(
        {
            "one_id": nodes,
            "pagerank": x,
            "pagerank_lift": x * n,
            "koc_score": x * n / (1.0 + x * n),
        },
        schema=PAGERANK_SCHEMA,
    )


def community_features(
    messages: pl.LazyFrame,
    week: Week,
    cfg: CommunityConfig | None = None,
    koc: pl.LazyFrame | None = None,
) -> pl.LazyFrame:
    """Per-person community features as of `week`.

    Input: messages (msg_id, one_id, room_id, ts, text, reply_to_msg_id, optional
    mention_one_ids) and optionally `koc` = `pagerank_scores(...)` of `community_edges(...)`
    (one_id, koc_score, pagerank_lift). Rows: everyone who posted within `lookback_weeks` or
    was replied to / mentioned in the window. Columns: one_id, messages_4w, messages_13w,
    active_groups_13w, questions_13w, answers_13w (replies to someone else's question),
    replies_received_13w, mentions_received_13w (Int64), koc_score (Float64, null without
    `koc` or outside the graph), community_role (koc / answerer / asker / lurker / none, first
    that applies) and deal_seeking_share (deal messages / messages in the window, null when
    none). "13w" and "4w" are `window_weeks` and `recent_weeks`.
    """
    cfg = cfg or CommunityConfig()
    seen = _seen(messages, week)
    win_start = week.window_start(cfg.window_weeks)
    recent_start = week.window_start(cfg.recent_weeks)
    in_win = pl.col("ts") >= win_start

    sent = (
        seen.filter(pl.col("ts") >= week.window_start(cfg.lookback_weeks))
        .with_columns(
            _is_question(messages, cfg).alias("_q"),
            _is_deal(messages, cfg).alias("_deal"),
        )
        .group_by("one_id")
        .agg(
            (pl.col("ts") >= recent_start).sum().cast(pl.Int64).alias("messages_4w"),
            in_win.sum().cast(pl.Int64).alias("messages_13w"),
            pl.col("room_id")
            .filter(in_win)
            .drop_nulls()
            .n_unique()
            .cast(pl.Int64)
            .alias("active_groups_13w"),
            (pl.col("_q") & in_win).sum().cast(pl.Int64).alias("questions_13w"),
            (pl.col("_deal") & in_win).sum().cast(pl.Int64).alias("_deal_13w"),
        )
    )
    replies = _reply_pairs(messages, week, cfg)
    answers = (
        replies.filter(pl.col("parent_is_question"))
        .group_by(pl.col("src").alias("one_id"))
        .agg(pl.len().cast(pl.Int64).alias("answers_13w"))
    )
    received = replies.group_by(pl.col("dst").alias("one_id")).agg(
        pl.len().cast(pl.Int64).alias("replies_received_13w")
    )
    mentioned = (
        _mention_pairs(messages, week, cfg)
        .group_by(pl.col("dst").alias("one_id"))
        .agg(pl.len().cast(pl.Int64).alias("mentions_received_13w"))
    )
    people = pl.concat(
        [sent.select("one_id"), received.select("one_id"), mentioned.select("one_id")]
    ).unique()
    out = (
        people.join(sent, on="one_id", how="left")
        .join(answers, on="one_id", how="left")
        .join(received, on="one_id", how="left")
        .join(mentioned, on="one_id", how="left")
    )
    counts = [
        "messages_4w",
        "messages_13w",
        "active_groups_13w",
        "questions_13w",
        "answers_13w",
        "replies_received_13w",
        "mentions_received_13w",
        "_deal_13w",
    ]
    out = out.with_columns(pl.col(c).fill_null(0) for c in counts)
    if koc is not None:
        out = out.join(
            koc.select(
                "one_id",
                pl.col("koc_score").cast(pl.Float64).round(KOC_DECIMALS),
                pl.col("pagerank_lift").cast(pl.Float64).alias("_lift"),
            ),
            on="one_id",
            how="left",
        )
    else:
        out = out.with_columns(
            pl.lit(None, pl.Float64).alias("koc_score"), pl.lit(None, pl.Float64).alias("_lift")
        )
    is_koc = (pl.col("_lift") >= cfg.koc_min_lift).fill_null(False) & (
        pl.col("replies_received_13w") + pl.col("mentions_received_13w") >= cfg.koc_min_received
    )
    is_answerer = (pl.col("answers_13w") >= cfg.answerer_min_answers) & (
        pl.col("answers_13w") >= pl.col("questions_13w")
    )
    is_asker = pl.col("questions_13w") >= cfg.asker_min_questions
    is_lurker = pl.col("messages_13w") <= cfg.lurker_max_messages
    role = (
        pl.when(is_koc)
        .then(pl.lit("koc"))
        .when(is_answerer)
        .then(pl.lit("answerer"))
        .when(is_asker)
        .then(pl.lit("asker"))
        .when(is_lurker)
        .then(pl.lit("lurker"))
        .otherwise(pl.lit("none"))
    )
    share = (
        pl.when(pl.col("messages_13w") > 0)
        .then(pl.col("_deal_13w") / pl.col("messages_13w"))
        .otherwise(None)
    )
    return out.select(
        "one_id",
        "messages_4w",
        "messages_13w",
        "active_groups_13w",
        "questions_13w",
        "answers_13w",
        "replies_received_13w",
        "mentions_received_13w",
        "koc_score",
        role.alias("community_role"),
        share.cast(pl.Float64).alias("deal_seeking_share"),
    )
