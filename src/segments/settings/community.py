"""Settings of the community stage (`[community]`): windows, question and deal words, roles."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

QUESTION_MARKERS = (
    "？",
    "?",
    "吗",
    "求推荐",
    "请问",
    "有没有",
    "怎么",
    "求助",
    "求问",
    "如何",
    "哪个好",
    "哪款",
    "多少钱",
    "推荐一下",
)


DEAL_KEYWORDS = (
    "红包",
    "优惠券",
    "优惠卷",
    "优惠码",
    "折扣码",
    "领券",
    "有券",
    "券后",
    "代金券",
    "津贴",
    "拼团",
    "团购",
    "砍一刀",
    "帮我砍",
    "砍价",
    "返现",
    "返利",
    "薅",
    "羊毛",
    "秒杀",
    "满减",
    "凑单",
    "捡漏",
    "白菜价",
    "0元购",
    "零元购",
    "免单",
    "清仓",
    "打折",
    "折扣",
    "特价",
    "价保",
    "新人价",
    "首单",
    "淘口令",
    "内购",
    "抽奖",
)


class CommunityConfig(BaseModel):
    """Settings of the community stage (`[community]` in the config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    recent_weeks: int = Field(default=4, ge=1)
    window_weeks: int = Field(default=13, ge=1)
    # Who counts as a community member at all: posted within this many weeks.
    lookback_weeks: int = Field(default=52, ge=1)
    question_markers: tuple[str, ...] = QUESTION_MARKERS
    deal_keywords: tuple[str, ...] = DEAL_KEYWORDS
    reply_weight: float = Field(default=1.0, ge=0)
    mention_weight: float = Field(default=1.0, ge=0)
    damping: float = Field(default=0.85, gt=0, lt=1)
    # koc: PageRank at least this many times the average member's, and this many replies +
    # mentions received in the window.
    koc_min_lift: float = Field(default=3.0, ge=0)
    koc_min_received: int = Field(default=5, ge=0)
    answerer_min_answers: int = Field(default=2, ge=1)
    asker_min_questions: int = Field(default=2, ge=1)
    # lurker: a member with at most this many messages in the window.
    lurker_max_messages: int = Field(default=2, ge=0)
