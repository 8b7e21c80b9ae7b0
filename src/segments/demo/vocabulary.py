"""The demo brand's vocabulary: taxonomy, personas, seasons, rates, phones, rooms, and what people write and search (pure data)."""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segments.contract import KNOWN_EVENTS, ORDER_SOURCES
from segments.demo.constants import BASE_SHARES
from segments.errors import ConfigError

# ---------------------------------------------------------------------------------------------
# The brand: taxonomy, personas, seasons and promotions

TAXONOMY: dict[str, tuple[str, ...]] = {
    "camping": ("帐篷", "天幕", "睡袋", "防潮垫", "折叠桌椅", "营地灯"),
    "hiking": ("登山鞋", "登山杖", "徒步背包", "速干衣"),
    "trail_running": ("越野跑鞋", "跑步腰包", "越野跑背心"),
    "cycling": ("骑行服", "骑行头盔", "车灯"),
    "fishing": ("鱼竿", "渔轮", "钓箱"),
    "skiing": ("滑雪服", "滑雪镜", "滑雪手套"),
    "water_sports": ("桨板", "救生衣", "防水袋"),
    "climbing": ("安全带", "攀岩鞋", "镁粉袋"),
    "outdoor_cooking": ("炉头", "套锅", "户外咖啡器具"),
    "city_outdoor": ("冲锋衣", "抓绒衣", "防晒衣", "软壳裤"),
    "family_outdoor": ("儿童冲锋衣", "儿童帐篷", "亲子野餐垫"),
}
INTERESTS = tuple(TAXONOMY)
# How many people hold each interest, relative.
INTEREST_POPULARITY = (1.6, 1.4, 0.6, 0.8, 0.6, 0.6, 0.5, 0.35, 0.5, 1.5, 0.7)

PERSONAS = ("newcomer", "enthusiast", "expert", "coupon_hunter", "dormant")
PERSONA_LABELS = {
    "newcomer": "新手",
    "enthusiast": "爱好者",
    "expert": "达人",
    "coupon_hunter": "羊毛党",
    "dormant": "沉睡",
}
PERSONA_SHARES = BASE_SHARES  # the centres; each seed draws its own (segments.demo.constants)
NEWCOMER, ENTHUSIAST, EXPERT, HUNTER, DORMANT = range(5)

# Demand by month (Jan..Dec) for each interest, in INTERESTS order.
SEASONS = np.array(
    [
        [0.4, 0.5, 0.9, 1.6, 1.8, 1.2, 1.1, 1.0, 1.5, 1.7, 0.8, 0.5],  # camping: spring, autumn
        [0.6, 0.6, 1.0, 1.5, 1.5, 1.0, 0.9, 0.9, 1.4, 1.6, 1.0, 0.6],  # hiking
        [0.6, 0.7, 1.2, 1.5, 1.3, 0.9, 0.7, 0.8, 1.3, 1.5, 1.2, 0.7],  # trail_running
        [0.4, 0.5, 1.1, 1.5, 1.6, 1.4, 1.2, 1.2, 1.4, 1.3, 0.8, 0.4],  # cycling
        [0.5, 0.6, 1.2, 1.5, 1.4, 1.1, 1.0, 1.0, 1.3, 1.3, 0.8, 0.5],  # fishing
        [2.6, 2.0, 0.8, 0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.6, 2.0, 2.8],  # skiing: winter
        [0.1, 0.1, 0.3, 0.6, 1.3, 2.3, 2.8, 2.6, 1.2, 0.4, 0.1, 0.1],  # water_sports: summer
        [0.7, 0.7, 1.0, 1.2, 1.2, 1.0, 0.9, 0.9, 1.2, 1.3, 1.0, 0.8],  # climbing
        [0.8, 0.7, 1.0, 1.3, 1.3, 0.9, 0.8, 0.9, 1.3, 1.5, 1.1, 1.0],  # outdoor_cooking
        [1.1, 0.9, 1.0, 1.0, 1.0, 1.2, 1.1, 1.0, 1.0, 1.3, 1.4, 1.2],  # city_outdoor
        [0.6, 0.7, 0.9, 1.3, 1.5, 1.2, 1.6, 1.6, 1.0, 1.3, 0.7, 0.6],  # family_outdoor
    ]
)

CATEGORIES = tuple(c for cats in TAXONOMY.values() for c in cats)
_CAT_INTEREST = np.array([i for i, cats in enumerate(TAXONOMY.values()) for _ in cats])
_CAT_COUNT = np.array([len(cats) for cats in TAXONOMY.values()])
_CAT_START = np.cumsum(_CAT_COUNT) - _CAT_COUNT

# Per persona (rows in PERSONAS order).
_ORDER_CHANNELS = ORDER_SOURCES  # tmall, taobao, jd, douyin, miniprogram, store
_CHANNEL_WEIGHTS = np.array(
    [
        [30, 10, 18, 14, 16, 12],
        [32, 8, 20, 10, 15, 15],
        [30, 6, 22, 6, 16, 20],
        [18, 26, 20, 22, 13, 1],
        [36, 12, 22, 6, 8, 16],
    ],
    dtype=float,
)
_PHONE_ON_ORDER = np.array([0.5, 0.45, 0.5, 0.4, 0.85, 0.95])  # by channel
EVENT_TYPES = KNOWN_EVENTS
_EVENT_MIX = np.array(
    [
        [0.50, 0.14, 0.09, 0.06, 0.03, 0.06, 0.06, 0.06],
        [0.46, 0.12, 0.10, 0.09, 0.05, 0.05, 0.06, 0.07],
        [0.42, 0.14, 0.10, 0.12, 0.06, 0.03, 0.05, 0.08],
        [0.22, 0.04, 0.06, 0.03, 0.10, 0.27, 0.24, 0.04],
        [0.60, 0.10, 0.08, 0.06, 0.03, 0.05, 0.04, 0.04],
    ]
)
_SEARCH, _COUPON, _CHECKIN = 1, 5, 6
# Message kinds: question, share, answer (a KOC replying), deal-seeking, chit-chat, empty, emoji.
_Q, _SHARE, _ANSWER, _DEAL, _CHAT, _EMPTY, _EMOJI = range(7)
_MESSAGE_MIX = np.array(
    [
        [0.50, 0.14, 0.00, 0.06, 0.20, 0.03, 0.07],
        [0.14, 0.36, 0.26, 0.04, 0.12, 0.02, 0.06],
        [0.05, 0.36, 0.42, 0.02, 0.09, 0.02, 0.04],
        [0.03, 0.02, 0.00, 0.72, 0.14, 0.03, 0.06],
        [0.20, 0.20, 0.00, 0.10, 0.40, 0.04, 0.06],
    ]
)
_P_MINIPROGRAM = np.array([0.75, 0.75, 0.80, 0.92, 0.45])
_P_WECOM = np.array([0.45, 0.65, 0.85, 0.60, 0.30])
_P_TAOBAO = np.array([0.60, 0.65, 0.65, 0.75, 0.60])
_P_JD = np.array([0.25, 0.30, 0.35, 0.55, 0.25])
_P_DOUYIN = np.array([0.15, 0.15, 0.10, 0.45, 0.08])
_P_MEMBER = np.array([0.35, 0.50, 0.70, 0.30, 0.40])
_P_NEAR_STORE = np.array([0.30, 0.35, 0.45, 0.05, 0.30])
_EVENTS_MEAN = np.array([24, 36, 55, 45, 8], dtype=float)
_MESSAGES_MEAN = np.array([5, 14, 28, 18, 1], dtype=float)

_ORDER_HOURS = np.array(
    [3, 1.2, .5, .3, .2, .2, .4, .8, 1.2, 1.6, 2, 2.1, 2.3, 2.1, 1.9, 1.8, 1.8, 1.9, 2, 2.4, 3, 3.4, 3.2, 2.6]
)  # fmt: skip
_EVENT_HOURS = np.array(
    [1.2, .6, .3, .2, .1, .2, .5, 1.2, 1.8, 1.6, 1.6, 1.8, 2.4, 2.2, 1.7, 1.6, 1.7, 1.9, 2.1, 2.6, 3, 3.2, 2.8, 2]
)  # fmt: skip
_CHAT_HOURS = np.array(
    [.6, .3, .1, .05, .05, .1, .4, 1.2, 2, 2, 1.8, 1.8, 2.2, 1.8, 1.5, 1.5, 1.6, 1.8, 2, 2.4, 2.8, 3, 2.6, 1.6]
)  # fmt: skip

# Phones: ordinary carrier prefixes, and the virtual carriers coupon hunters favour.
_PHONE_PREFIXES = np.array(
    [130, 131, 132, 133, 135, 136, 137, 138, 139, 150, 151, 152, 155, 156, 157, 158, 159,
     166, 173, 175, 176, 177, 180, 181, 182, 183, 185, 186, 187, 188, 189, 191, 198, 199]
)  # fmt: skip
_VIRTUAL_PREFIXES = np.array([170, 171, 162, 165, 167])
TEST_PHONE = 13800000000
PLACEHOLDER_IDS = ("null", "0", "undefined", "")
INVALID_PHONE = "12345"
DIRTY_KINDS = (
    "negative amount",
    "refund > amount",
    "unknown status",
    "unparseable paid_at",
    "missing order_id",
    "invalid phone",
    "duplicate (source, order_id)",
)

# Community rooms (WeCom group chats) and the interests that talk in each.
ROOMS = (
    ("露营交流群", ("camping", "outdoor_cooking", "family_outdoor")),
    ("徒步登山群", ("hiking", "climbing")),
    ("越野跑团", ("trail_running",)),
    ("骑行群", ("cycling",)),
    ("钓友群", ("fishing",)),
    ("滑雪群", ("skiing",)),
    ("桨板水上群", ("water_sports",)),
    ("城市轻户外群", ("city_outdoor",)),
    ("品牌福利群", ()),  # deals: where coupon hunters live
)
_ROOM_OF_INTEREST = np.array(
    [next(r for r, (_, its) in enumerate(ROOMS) if name in its) for name in INTERESTS]
)
_DEAL_ROOM = len(ROOMS) - 1

# ---------------------------------------------------------------------------------------------
# What people write and search


# Vocabulary name -> its file beside this module. "a" is the default; "b" is a second list that
# no tuning saw (held-out tests run the targets on it).
VOCABULARIES = {"a": "chat.toml", "b": "chat_b.toml"}


@dataclass(frozen=True)
class Words:
    """One vocabulary: per-interest words (`chat[interest][field]`), the common lists and the
    sentence skeletons."""

    chat: dict[str, dict[str, tuple[str, ...]]]
    small_talk: tuple[str, ...]
    emojis: tuple[str, ...]
    nick_a: tuple[str, ...]
    nick_b: tuple[str, ...]
    query_prefixes: tuple[str, ...]
    query_suffixes: tuple[str, ...]
    # sentence skeletons with {place}, {gear} and {act} slots, per message kind
    question_templates: tuple[str, ...]
    share_templates: tuple[str, ...]
    answer_templates: tuple[str, ...]
    deal_templates: tuple[str, ...]


@functools.cache
def words(vocabulary: str = "a") -> Words:
    """The vocabulary `vocabulary` ("a" or "b"), read once."""
    if vocabulary not in VOCABULARIES:
        raise ConfigError(
            f"demo-data: --vocabulary must be one of {', '.join(VOCABULARIES)}. "
            f"Got {vocabulary!r} instead."
        )
    data = tomllib.loads(
        (Path(__file__).parent / VOCABULARIES[vocabulary]).read_text(encoding="utf-8")
    )
    common = {k: tuple(v) for k, v in data.pop("common").items()}
    common.update({f"{k}_templates": tuple(v) for k, v in data.pop("templates").items()})
    chat = {i: {f: tuple(w) for f, w in fields.items()} for i, fields in data.items()}
    missing = [i for i in INTERESTS if i not in chat]
    if missing:
        raise ConfigError(f"demo vocabulary {vocabulary}: no words for {', '.join(missing)}.")
    return Words(chat=chat, **common)
