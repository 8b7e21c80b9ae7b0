"""The tag registry: every column of the weekly tag table, documented, in a fixed order.

The registry is the one source of truth for `tags.parquet`: `finalize` puts the table's
columns in registry order, fills what a missing row means (a person with no order has
`frequency_52w = 0`, not null), and refuses a table with an undocumented column or a missing
documented one. `tag_dictionary()` is the same registry as a table, written beside the tags.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import polars as pl

from segments.contract import DEFAULT_INTERESTS
from segments.errors import StageError
from segments.exprs import take_sorted

REGISTRY_VERSION = "1"

INTERESTS = tuple(DEFAULT_INTERESTS.items())  # (name, Chinese label), taxonomy order


@dataclass(frozen=True)
class Tag:
    name: str
    family: (
        str  # identity, rfm, behaviour, interest, community, promo, lifecycle, predicted, cluster
    )
    dtype: str  # bool, int, float, str, date, datetime, list[str]
    unit: str
    description: str
    label_zh: str
    sources: str  # input tables
    window: str
    null_means: str
    fill: object = None  # the value for people the stage has no row for (None: stays null)


_DTYPES = {
    "bool": pl.Boolean(),
    "int": pl.Int64(),
    "float": pl.Float64(),
    "str": pl.String(),
    "datetime": pl.Datetime("us"),
    "list[str]": pl.List(pl.String()),
}

NO_ORDER = "no counted order before the week's end"
NO_ORDER_52 = "no counted order in the 52 weeks"
NO_EVENT = "no event in the window"
NO_MSG = "no message in the window"


def _t(*args: object, **kw: object) -> Tag:
    return Tag(*args, **kw)  # type: ignore[arg-type]


def _rfm_windows() -> list[Tag]:
    out = []
    for w, zh in ((1, "近1周"), (4, "近4周"), (13, "近13周"), (26, "近26周"), (52, "近52周")):
        out.append(
            _t(
                f"frequency_{w}w",
                "rfm",
                "int",
                "orders",
                f"Counted orders paid in the {w} week(s) before the week's end.",
                f"{zh}购买次数",
                "orders",
                f"{w}w",
                "never null",
                0,
            )
        )
    out.append(
        _t(
            "frequency_lifetime",
            "rfm",
            "int",
            "orders",
            "Counted orders paid before the week's end.",
            "累计购买次数",
            "orders",
            "lifetime",
            "never null",
            0,
        )
    )
    for w, zh in ((1, "近1周"), (4, "近4周"), (13, "近13周"), (26, "近26周"), (52, "近52周")):
        out.append(
            _t(
                f"monetary_{w}w",
                "rfm",
                "float",
                "CNY",
                f"Sum of amount - refund of the counted orders in the {w} week(s) before the week's end.",
                f"{zh}消费金额",
                "orders",
                f"{w}w",
                "never null",
                0.0,
            )
        )
    out.append(
        _t(
            "monetary_lifetime",
            "rfm",
            "float",
            "CNY",
            "Sum of amount - refund of every counted order before the week's end.",
            "累计消费金额",
            "orders",
            "lifetime",
            "never null",
            0.0,
        )
    )
    return out


REGISTRY: tuple[Tag, ...] = (
    _t(
        "one_id",
        "identity",
        "str",
        "",
        "The person's stable OneID.",
        "统一用户ID",
        "all",
        "",
        "never null",
    ),
    # identity and channels
    _t(
        "identifier_count",
        "identity",
        "int",
        "ids",
        "Identifiers linked to the person.",
        "关联ID数",
        "all",
        "lifetime",
        "never null",
    ),
    _t(
        "has_phone",
        "identity",
        "bool",
        "",
        "A valid phone is linked (held only as its hash).",
        "有手机号",
        "orders, identities",
        "lifetime",
        "never null",
    ),
    _t(
        "has_unionid",
        "identity",
        "bool",
        "",
        "A WeChat unionid is linked.",
        "有unionid",
        "identities, events",
        "lifetime",
        "never null",
    ),
    _t(
        "has_wecom",
        "identity",
        "bool",
        "",
        "A WeCom external contact id is linked (a WeCom friend).",
        "企微好友",
        "messages, identities",
        "lifetime",
        "never null",
    ),
    _t(
        "is_linked",
        "identity",
        "bool",
        "",
        "Holds both a commerce-side id (ouid, pin, member id, order phone) and a WeChat-side id: the OneID linkage the business measures.",
        "全渠道打通",
        "all",
        "lifetime",
        "never null",
    ),
    _t(
        "order_channels",
        "identity",
        "list[str]",
        "",
        "Order sources the person bought through, sorted.",
        "购买渠道",
        "orders",
        "lifetime",
        "no order: empty list",
        [],
    ),
    _t(
        "channel_count",
        "identity",
        "int",
        "channels",
        "Number of distinct order sources.",
        "购买渠道数",
        "orders",
        "lifetime",
        "never null",
        0,
    ),
    _t(
        "primary_channel",
        "identity",
        "str",
        "",
        "The order source with most orders (ties: alphabetical).",
        "主购买渠道",
        "orders",
        "lifetime",
        "no order",
    ),
    _t(
        "is_opted_out",
        "identity",
        "bool",
        "",
        "Opted out of marketing on any identifier (latest consent row per identifier). Never in a pack.",
        "已退订",
        "consent",
        "latest",
        "never null",
        False,
    ),
    # RFM: the contract's columns first
    _t(
        "recency_days",
        "rfm",
        "int",
        "days",
        "W's Sunday minus the local date of the latest counted order before W's end.",
        "最近购买间隔天数",
        "orders",
        "lifetime",
        NO_ORDER,
    ),
    *_rfm_windows(),
    _t(
        "aov_52w",
        "rfm",
        "float",
        "CNY",
        "Average kept amount per counted order in 52 weeks.",
        "近52周客单价",
        "orders",
        "52w",
        NO_ORDER_52,
    ),
    _t(
        "max_order_value",
        "rfm",
        "float",
        "CNY",
        "Largest kept amount of one counted order in 52 weeks.",
        "最大单笔金额",
        "orders",
        "52w",
        NO_ORDER_52,
    ),
    _t(
        "order_value_std_52w",
        "rfm",
        "float",
        "CNY",
        "Standard deviation of the kept amounts of counted orders in 52 weeks.",
        "订单金额波动",
        "orders",
        "52w",
        "fewer than 2 counted orders in 52 weeks",
    ),
    _t(
        "items_52w",
        "rfm",
        "int",
        "items",
        "Items (quantity) on counted orders in 52 weeks.",
        "近52周购买件数",
        "orders",
        "52w",
        "never null",
        0,
    ),
    _t(
        "first_purchase_at",
        "rfm",
        "datetime",
        "local time",
        "The first counted order's payment time.",
        "首次购买时间",
        "orders",
        "lifetime",
        NO_ORDER,
    ),
    _t(
        "last_purchase_at",
        "rfm",
        "datetime",
        "local time",
        "The latest counted order's payment time before W's end.",
        "最近购买时间",
        "orders",
        "lifetime",
        NO_ORDER,
    ),
    _t(
        "tenure_weeks",
        "rfm",
        "int",
        "weeks",
        "Whole weeks from the first counted order to W's end.",
        "客户年龄(周)",
        "orders",
        "lifetime",
        NO_ORDER,
    ),
    _t(
        "purchase_days",
        "rfm",
        "int",
        "days",
        "Distinct local days with a counted order.",
        "购买天数",
        "orders",
        "lifetime",
        "never null",
        0,
    ),
    _t(
        "interpurchase_mean_weeks",
        "rfm",
        "float",
        "weeks",
        "Mean interval between purchase days.",
        "平均购买间隔(周)",
        "orders",
        "lifetime",
        "fewer than 2 purchase days",
    ),
    _t(
        "expected_next_purchase_week",
        "rfm",
        "str",
        "ISO week",
        "Week of the last purchase plus the mean interval.",
        "预计下次购买周",
        "orders",
        "lifetime",
        "fewer than 2 purchase days",
    ),
    _t(
        "trend_13w",
        "rfm",
        "float",
        "-1..1",
        "Kept spend of the last 13 weeks against the 13 before: (a - b) / (a + b).",
        "近13周消费趋势",
        "orders",
        "26w",
        "no spend in 26 weeks",
    ),
    _t(
        "discount_share",
        "rfm",
        "float",
        "0..1",
        "Discount / (amount + discount) over counted orders in 52 weeks.",
        "优惠金额占比",
        "orders",
        "52w",
        NO_ORDER_52,
    ),
    _t(
        "refund_rate_52w",
        "rfm",
        "float",
        "0..1",
        "Share of the 52 weeks' placed orders refunded in whole or part.",
        "近52周退款率",
        "orders",
        "52w",
        "no order in 52 weeks",
    ),
    _t(
        "is_high_value",
        "rfm",
        "bool",
        "",
        "frequency_52w >= 3 and monetary_52w / frequency_52w >= 800 CNY: the business's high-value rule.",
        "高价值用户",
        "orders",
        "52w",
        "never null",
        False,
    ),
    _t(
        "value_tier",
        "rfm",
        "str",
        "",
        "Tier of monetary_52w: none, low (<1,000), mid (<3,000), high (<8,000), top.",
        "价值分层",
        "orders",
        "52w",
        "never null",
        "none",
    ),
    _t(
        "interpurchase_std_weeks",
        "rfm",
        "float",
        "weeks",
        "Standard deviation of the intervals between purchase days.",
        "购买间隔波动(周)",
        "orders",
        "lifetime",
        "fewer than 3 purchase days",
    ),
    _t(
        "regularity",
        "rfm",
        "float",
        "0..1",
        "1 / (1 + coefficient of variation of the intervals): 1 is clockwork.",
        "购买规律性",
        "orders",
        "lifetime",
        "fewer than 3 purchase days",
    ),
    _t(
        "preferred_weekday",
        "rfm",
        "int",
        "1=Mon..7=Sun",
        "The weekday of most counted orders (ties: earliest).",
        "偏好购买星期",
        "orders",
        "lifetime",
        NO_ORDER,
    ),
    _t(
        "preferred_hour",
        "rfm",
        "int",
        "0..23",
        "The local hour of most counted orders (ties: earliest).",
        "偏好购买时段",
        "orders",
        "lifetime",
        NO_ORDER,
    ),
    _t(
        "r_score",
        "rfm",
        "int",
        "1..5",
        "Recency score from quantile cut points learned on this week (5 = most recent).",
        "R评分",
        "orders",
        "52w",
        NO_ORDER,
    ),
    _t(
        "f_score",
        "rfm",
        "int",
        "1..5",
        "Frequency score (52 weeks) from this week's cut points; ties share a score.",
        "F评分",
        "orders",
        "52w",
        NO_ORDER,
    ),
    _t(
        "m_score",
        "rfm",
        "int",
        "1..5",
        "Monetary score (52 weeks) from this week's cut points.",
        "M评分",
        "orders",
        "52w",
        NO_ORDER,
    ),
    _t(
        "rfm_code",
        "rfm",
        "str",
        "",
        "The three scores as a code, e.g. 545.",
        "RFM编码",
        "orders",
        "52w",
        NO_ORDER,
    ),
    _t(
        "rfm_segment",
        "rfm",
        "str",
        "",
        "The 8-cell segment (R, F, M each above or below this week's mean), e.g. 重要价值客户.",
        "RFM客户分群",
        "orders",
        "52w",
        NO_ORDER,
    ),
    _t(
        "rfm_segment_key",
        "rfm",
        "str",
        "",
        "English key of rfm_segment, e.g. important_value.",
        "RFM分群键",
        "orders",
        "52w",
        NO_ORDER,
    ),
    # lifecycle
    _t(
        "lifecycle_stage",
        "lifecycle",
        "str",
        "",
        "prospect (never bought), new, active, at_risk, lapsed or churned, by weeks since purchases.",
        "生命周期阶段",
        "orders",
        "lifetime",
        "never null",
        "prospect",
    ),
    _t(
        "aipl_awareness",
        "lifecycle",
        "bool",
        "",
        "Has viewed a product or a live stream.",
        "AIPL认知",
        "events",
        "lifetime",
        "never null",
        False,
    ),
    _t(
        "aipl_interest",
        "lifecycle",
        "bool",
        "",
        "Searched, favourited, added to cart or shared in the last 4 weeks.",
        "AIPL兴趣",
        "events",
        "4w",
        "never null",
        False,
    ),
    _t(
        "aipl_purchase",
        "lifecycle",
        "bool",
        "",
        "At least one counted order.",
        "AIPL购买",
        "orders",
        "lifetime",
        "never null",
        False,
    ),
    _t(
        "aipl_loyalty",
        "lifecycle",
        "bool",
        "",
        "At least 2 counted orders in 52 weeks, or high value.",
        "AIPL忠诚",
        "orders",
        "52w",
        "never null",
        False,
    ),
    _t(
        "aipl_stage",
        "lifecycle",
        "str",
        "",
        "The furthest AIPL stage reached: awareness, interest, purchase, loyalty.",
        "AIPL阶段",
        "events, orders",
        "lifetime",
        "no AIPL signal",
    ),
    # behaviour
    _t(
        "events_1w",
        "behaviour",
        "int",
        "events",
        "Events in the last week.",
        "近1周行为次数",
        "events",
        "1w",
        "never null",
        0,
    ),
    _t(
        "events_4w",
        "behaviour",
        "int",
        "events",
        "Events in the last 4 weeks.",
        "近4周行为次数",
        "events",
        "4w",
        "never null",
        0,
    ),
    _t(
        "events_13w",
        "behaviour",
        "int",
        "events",
        "Events in the last 13 weeks.",
        "近13周行为次数",
        "events",
        "13w",
        "never null",
        0,
    ),
    _t(
        "view_13w",
        "behaviour",
        "int",
        "events",
        "Product views in 13 weeks.",
        "近13周浏览次数",
        "events",
        "13w",
        "never null",
        0,
    ),
    _t(
        "search_13w",
        "behaviour",
        "int",
        "events",
        "Searches in 13 weeks.",
        "近13周搜索次数",
        "events",
        "13w",
        "never null",
        0,
    ),
    _t(
        "add_cart_13w",
        "behaviour",
        "int",
        "events",
        "Add-to-carts in 13 weeks.",
        "近13周加购次数",
        "events",
        "13w",
        "never null",
        0,
    ),
    _t(
        "favorite_13w",
        "behaviour",
        "int",
        "events",
        "Favourites in 13 weeks.",
        "近13周收藏次数",
        "events",
        "13w",
        "never null",
        0,
    ),
    _t(
        "share_13w",
        "behaviour",
        "int",
        "events",
        "Shares in 13 weeks.",
        "近13周分享次数",
        "events",
        "13w",
        "never null",
        0,
    ),
    _t(
        "live_view_13w",
        "behaviour",
        "int",
        "events",
        "Live-stream views in 13 weeks.",
        "近13周看直播次数",
        "events",
        "13w",
        "never null",
        0,
    ),
    _t(
        "active_days_13w",
        "behaviour",
        "int",
        "days",
        "Distinct days with an event in 13 weeks.",
        "近13周活跃天数",
        "events",
        "13w",
        "never null",
        0,
    ),
    _t(
        "days_since_last_event",
        "behaviour",
        "int",
        "days",
        "W's Sunday minus the day of the latest event.",
        "距最近行为天数",
        "events",
        "lifetime",
        "no event",
    ),
    _t(
        "cart_to_view_13w",
        "behaviour",
        "float",
        "ratio",
        "Add-to-carts per view in 13 weeks.",
        "加购浏览比",
        "events",
        "13w",
        "no view in 13 weeks",
    ),
    # predicted
    _t(
        "p_alive",
        "predicted",
        "float",
        "0..1",
        "BG/NBD probability that the customer is still active.",
        "存活概率",
        "orders",
        "lifetime",
        NO_ORDER,
    ),
    _t(
        "expected_purchases_13w",
        "predicted",
        "float",
        "purchase days",
        "BG/NBD expected purchase days in the next 13 weeks.",
        "预计13周购买次数",
        "orders",
        "next 13w",
        NO_ORDER,
    ),
    _t(
        "expected_purchases_52w",
        "predicted",
        "float",
        "purchase days",
        "BG/NBD expected purchase days in the next 52 weeks.",
        "预计52周购买次数",
        "orders",
        "next 52w",
        NO_ORDER,
    ),
    _t(
        "expected_order_value",
        "predicted",
        "float",
        "CNY",
        "Gamma-Gamma expected spend per purchase day.",
        "预计客单价",
        "orders",
        "lifetime",
        NO_ORDER,
    ),
    _t(
        "predicted_value_52w",
        "predicted",
        "float",
        "CNY",
        "Expected purchases in 52 weeks times expected order value (undiscounted).",
        "预测52周价值",
        "orders",
        "next 52w",
        NO_ORDER,
    ),
    # interests
    *[
        _t(
            f"interest_{n}",
            "interest",
            "float",
            "0..1",
            f"Time-decayed affinity for {n} from orders, events, searches and chat.",
            f"{zh}兴趣度",
            "orders, events, messages",
            "decayed",
            "never null",
            0.0,
        )
        for n, zh in INTERESTS
    ],
    _t(
        "interest_signal_count",
        "interest",
        "int",
        "signals",
        "Interest signals seen (orders, events, searches, chat).",
        "兴趣信号数",
        "orders, events, messages",
        "lookback",
        "never null",
        0,
    ),
    _t(
        "interests",
        "interest",
        "list[str]",
        "",
        "Interests above the threshold with enough evidence.",
        "兴趣标签",
        "orders, events, messages",
        "decayed",
        "never null: empty list",
        [],
    ),
    _t(
        "primary_interest",
        "interest",
        "str",
        "",
        "The strongest interest.",
        "主兴趣",
        "orders, events, messages",
        "decayed",
        "too little evidence",
    ),
    *[
        _t(
            f"interest_{n}_expanded",
            "interest",
            "float",
            "0..1",
            f"Expansion score for {n} through the interest graph (lift of co-occurring interests), for lookalike packs.",
            f"{zh}扩展兴趣度",
            "interest graph",
            "decayed",
            "never null",
            0.0,
        )
        for n, zh in INTERESTS
    ],
    # community
    _t(
        "messages_4w",
        "community",
        "int",
        "messages",
        "Group-chat messages sent in 4 weeks.",
        "近4周发言数",
        "messages",
        "4w",
        "never null",
        0,
    ),
    _t(
        "messages_13w",
        "community",
        "int",
        "messages",
        "Group-chat messages sent in 13 weeks.",
        "近13周发言数",
        "messages",
        "13w",
        "never null",
        0,
    ),
    _t(
        "active_groups_13w",
        "community",
        "int",
        "groups",
        "Groups posted in during 13 weeks.",
        "活跃群数",
        "messages",
        "13w",
        "never null",
        0,
    ),
    _t(
        "questions_13w",
        "community",
        "int",
        "messages",
        "Questions asked in 13 weeks.",
        "提问数",
        "messages",
        "13w",
        "never null",
        0,
    ),
    _t(
        "answers_13w",
        "community",
        "int",
        "messages",
        "Replies to someone else's question in 13 weeks.",
        "回答数",
        "messages",
        "13w",
        "never null",
        0,
    ),
    _t(
        "replies_received_13w",
        "community",
        "int",
        "messages",
        "Replies received in 13 weeks.",
        "被回复数",
        "messages",
        "13w",
        "never null",
        0,
    ),
    _t(
        "mentions_received_13w",
        "community",
        "int",
        "mentions",
        "Mentions received in 13 weeks.",
        "被@次数",
        "messages",
        "13w",
        "never null",
        0,
    ),
    _t(
        "koc_score",
        "community",
        "float",
        "0..1",
        "Influence by PageRank over the reply and mention graph, scaled to the week's maximum.",
        "KOC影响力",
        "messages",
        "13w",
        "not in the interaction graph",
    ),
    _t(
        "community_role",
        "community",
        "str",
        "",
        "koc, answerer, asker, lurker or none.",
        "社群角色",
        "messages",
        "13w",
        "never null",
        "none",
    ),
    _t(
        "deal_seeking_share",
        "community",
        "float",
        "0..1",
        "Share of messages asking for deals (红包, 领券, 拼团 …).",
        "求优惠发言占比",
        "messages",
        "13w",
        NO_MSG,
    ),
    # promotion
    _t(
        "discount_depth_52w",
        "promo",
        "float",
        "0..1",
        "Discount / (amount + discount) over placed orders in 52 weeks.",
        "优惠深度",
        "orders",
        "52w",
        "no order in 52 weeks",
    ),
    _t(
        "promo_order_share_52w",
        "promo",
        "float",
        "0..1",
        "Share of counted orders inside promotion windows (618, 双11, 双12 …).",
        "大促订单占比",
        "orders",
        "52w",
        NO_ORDER_52,
    ),
    _t(
        "coupon_claims_13w",
        "promo",
        "int",
        "claims",
        "Coupon claims in 13 weeks.",
        "近13周领券次数",
        "events",
        "13w",
        "never null",
        0,
    ),
    _t(
        "checkins_13w",
        "promo",
        "int",
        "check-ins",
        "Check-ins in 13 weeks.",
        "近13周签到次数",
        "events",
        "13w",
        "never null",
        0,
    ),
    _t(
        "claims_per_purchase",
        "promo",
        "float",
        "ratio",
        "Coupon claims per counted order in 13 weeks.",
        "领券购买比",
        "events, orders",
        "13w",
        "never null",
        0.0,
    ),
    _t(
        "low_value_order_share",
        "promo",
        "float",
        "0..1",
        "Share of counted orders under the low-value line (50 CNY).",
        "低价订单占比",
        "orders",
        "52w",
        NO_ORDER_52,
    ),
    _t(
        "accounts_on_shared_phone",
        "promo",
        "int",
        "accounts",
        "Most buyer accounts that ordered with one of the person's phones.",
        "同手机号账号数",
        "orders",
        "52w",
        "no phone",
    ),
    _t(
        "virtual_phone",
        "promo",
        "bool",
        "",
        "A receiver phone is on a virtual carrier (170, 171, 162, 165, 167).",
        "虚拟号段",
        "orders",
        "52w",
        "no phone",
    ),
    _t(
        "promo_sensitivity",
        "promo",
        "float",
        "0..1",
        "Weighted promotion-sensitivity score.",
        "促销敏感度",
        "orders, events, messages",
        "52w",
        "never null",
        0.0,
    ),
    _t(
        "coupon_hunter_score",
        "promo",
        "float",
        "0..1",
        "Weighted coupon-hunter (羊毛党) risk from configurable signals.",
        "羊毛党风险分",
        "orders, events, messages",
        "52w",
        "never null",
        0.0,
    ),
    _t(
        "is_coupon_hunter",
        "promo",
        "bool",
        "",
        "coupon_hunter_score at or above the threshold. Suppressed from packs by default.",
        "羊毛党",
        "orders, events, messages",
        "52w",
        "never null",
        False,
    ),
    _t(
        "coupon_hunter_reasons",
        "promo",
        "list[str]",
        "",
        "The top signals behind a coupon-hunter flag, strongest first.",
        "羊毛党原因",
        "orders, events, messages",
        "52w",
        "never null: empty list",
        [],
    ),
    # clusters
    _t(
        "cluster",
        "cluster",
        "int",
        "",
        "Cluster number, stable from week to week (Hungarian matching to last week's centroids).",
        "用户分群",
        "tags",
        "week",
        "not clustered",
    ),
    _t(
        "cluster_name",
        "cluster",
        "str",
        "",
        "The cluster's name from its distinguishing tags, e.g. 高价值·露营·活跃.",
        "分群名称",
        "tags",
        "week",
        "not clustered",
    ),
)

BY_NAME: dict[str, Tag] = {t.name: t for t in REGISTRY}
CONTRACT_COLUMNS = (
    "one_id",
    "is_high_value",
    "is_coupon_hunter",
    "primary_interest",
    "interests",
    "cluster",
    "recency_days",
    "frequency_52w",
    "monetary_52w",
)


def finalize(table: pl.DataFrame) -> pl.DataFrame:
    """Registry order, registry dtypes and fills, sorted by one_id; refuses undocumented or
    missing columns. The columns are moved out of `table` one at a time (it is left empty when
    this returns), so the peak holds the table once plus a column, not twice."""
    undocumented = [c for c in table.columns if c not in BY_NAME]
    missing = [t.name for t in REGISTRY if t.name not in table.columns]
    if undocumented or missing:
        parts = []
        if undocumented:
            parts.append(f"undocumented column(s) {', '.join(undocumented)}")
        if missing:
            parts.append(f"documented tag(s) not computed: {', '.join(missing)}")
        raise StageError("tag table does not match the registry: " + "; ".join(parts) + ".")
    final = []
    for tag in REGISTRY:
        col = pl.col(tag.name).cast(_DTYPES[tag.dtype])
        if tag.dtype == "float":
            # Parallel sums may differ in the last bits between runs; rounding keeps the files
            # byte-identical (money to the cent, scores to 1e-6).
            col = col.round(2 if tag.unit == "CNY" else 6)
        if tag.fill is not None:
            fill = (
                pl.lit(tag.fill, dtype=_DTYPES[tag.dtype])
                if tag.dtype != "list[str]"
                else pl.lit([], dtype=_DTYPES[tag.dtype])
            )
            col = col.fill_null(fill)
        column = table.drop_in_place(tag.name).to_frame()
        final.append(column.select(col.alias(tag.name)).to_series())
        del column
    return take_sorted(pl.DataFrame(final), "one_id")


def tag_dictionary() -> pl.DataFrame:
    """The registry as a table (written as `tag_dictionary.parquet` beside the tags)."""
    rows = []
    for i, t in enumerate(REGISTRY):
        d = asdict(t)
        d["fill"] = None if t.fill is None else str(t.fill)
        rows.append({"position": i, **d})
    return pl.DataFrame(rows)


def registry_markdown() -> str:
    """docs/tags.md: the registry as a document (a test keeps the file in step with the code)."""
    lines = [
        "# Tags",
        "",
        f"The weekly tag table `OUT/weeks/<WEEK>/tags.parquet` has one row per `one_id` and these "
        f"{len(REGISTRY)} columns, in this order (registry version {REGISTRY_VERSION}). Generated "
        "from `segments.tags.REGISTRY` by `segments tags list --markdown`; `segments tags describe "
        "NAME` prints one entry.",
        "",
    ]
    family = None
    for t in REGISTRY:
        if t.family != family:
            family = t.family
            lines += [
                f"## {family}",
                "",
                "| tag | 中文 | type | unit | window | sources | meaning | null means |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |",
            ]
        lines.append(
            f"| `{t.name}` | {t.label_zh} | {t.dtype} | {t.unit} | {t.window} | {t.sources} | "
            f"{t.description} | {t.null_means} |"
        )
        nxt = REGISTRY.index(t) + 1
        if nxt == len(REGISTRY) or REGISTRY[nxt].family != family:
            lines.append("")
    return "\n".join(lines)
