"""The demo population: a light-outdoor brand's exports in the input layout, with planted truth.

`generate(out_dir)` writes, deterministically for a seed (same seed, same bytes):

```
out_dir/orders/orders.csv             tmall, taobao, jd, douyin orders; ~0.5% dirty rows
out_dir/orders/store_orders.parquet   store and mini-program orders, typed columns
out_dir/events/events.parquet         mini-program behaviour events
out_dir/messages/wecom_archive.jsonl  WeCom chat-archive lines (msgid, from, tolist, roomid, ...)
out_dir/identities/links.csv          id_type_a, id_a, id_type_b, id_b, source, observed_at
out_dir/consent/consent.csv           id_type, id, status, updated_at
out_dir/truth/persons.parquet         person_id, persona, primary_interest, interests,
                                      is_coupon_hunter, opted_out
out_dir/truth/identifiers.parquet     person_id, id_type, id (phones only as phone_sha256)
```

The people are newcomers, enthusiasts, experts, coupon hunters and dormant buyers, each with
one to three interests from `TAXONOMY` whose categories dominate their orders, events and chat.
Identifiers are split across systems; the evidence links both sides (commerce, WeChat) of about
95% of the people who have both, the rest are genuinely unlinked. Traps the engine must not
merge through: a parcel-station receiver phone shared by 30+ buyers, placeholder ids ("null",
"0", "undefined", ""), the test number 13800000000; none of them is in the truth.

Everything is vectorised over numpy arrays and generated in blocks of `CHUNK` people, so 100k
people take seconds and 2M people stream through in bounded memory.
"""

from __future__ import annotations

import calendar
import contextlib
import functools
import itertools
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import IO

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from segments.contract import KNOWN_EVENTS, ORDER_SOURCES, sha256_hex
from segments.errors import ConfigError
from segments.io import atomic_path

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
PERSONA_SHARES = (0.30, 0.25, 0.10, 0.10, 0.25)
NEWCOMER, ENTHUSIAST, EXPERT, HUNTER, DORMANT = range(5)

# Promotions: name, first (month, day), last (month, day), peak days.
PROMOTIONS = (
    ("年货节", (1, 5), (1, 25), ((1, 15),)),
    ("618", (6, 1), (6, 18), ((6, 1), (6, 18))),
    ("双11", (10, 20), (11, 11), ((10, 31), (11, 11))),
    ("双12", (12, 1), (12, 12), ((12, 12),)),
)

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
_AOV_RANGE = np.array([[150, 600], [300, 1200], [600, 3000], [30, 200], [150, 800]], dtype=float)
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

CHUNK = 100_000  # people generated (and written) per block; part of what a seed reproduces

# ---------------------------------------------------------------------------------------------
# What people write and search


# fmt: off
_CHAT = {
    "camping": dict(
        places=("莫干山", "安吉", "千岛湖", "怀柔", "崇明岛", "阿那亚", "白马湖", "青龙峡"),
        gear=("帐篷", "天幕", "睡袋", "防潮垫", "蛋卷桌", "克米特椅", "营地灯", "充气床垫"),
        acts=("过夜", "扎营", "看星星", "搭帐篷"),
        questions=("周末去营地过夜，有人一起吗", "山里晚上多冷？睡袋要带几度的", "天幕和帐篷先买哪个"),
        shares=("新买的天幕今天第一次搭", "晚上营地降温好厉害，幸好带了厚睡袋",
                "营地灯挂在天幕下面，氛围感拉满"),
    ),
    "hiking": dict(
        places=("四姑娘山", "武功山", "黄山", "泰山", "鳌太线", "香山", "梧桐山", "雨崩"),
        gear=("登山鞋", "登山杖", "徒步背包", "速干衣", "护膝", "头灯"),
        acts=("爬山", "徒步", "重装穿越", "走环线"),
        questions=("下山膝盖疼怎么办，登山杖有用吗", "第一次走重装线路，背包多大合适"),
        shares=("这双登山鞋走了二十公里不磨脚", "武功山看日出，凌晨三点就出发了", "登山杖真的救了我的膝盖"),
    ),
    "trail_running": dict(
        places=("柴古唐斯", "香港100", "东山岛", "北山", "龙泉山", "大五台"),
        gear=("越野跑鞋", "跑步腰包", "越野跑背心", "软水壶", "能量胶"),
        acts=("跑山", "拉练", "刷爬升", "越野"),
        questions=("第一次报名50公里组，补给怎么准备", "越野跑鞋要大半码吗"),
        shares=("今天跑山爬升一千二，腿废了", "越野跑背心装两个软水壶刚好", "下坡终于敢放开跑了"),
    ),
    "cycling": dict(
        places=("环太湖", "青海湖", "318国道", "滨江绿道", "千岛湖环湖", "十三陵"),
        gear=("骑行服", "骑行头盔", "车灯", "锁鞋", "码表"),
        acts=("刷圈", "骑车", "爬坡", "拉长途"),
        questions=("骑行头盔大小怎么选", "夜骑车灯多少流明够用"),
        shares=("今天刷圈一百公里，均速二十八", "夜骑车灯一定要亮，安全第一", "新骑行服透气性真不错"),
    ),
    "fishing": dict(
        places=("水库", "野河", "黑坑", "海钓船", "太湖边", "千岛湖"),
        gear=("鱼竿", "渔轮", "钓箱", "饵料", "浮漂"),
        acts=("作钓", "路亚", "野钓", "夜钓"),
        questions=("周末夜钓有人去吗", "新手路亚竿选多长的"),
        shares=("今天空军了，一条都没上", "新渔轮手感很顺，出线很远", "钓箱坐着比马扎舒服多了"),
    ),
    "skiing": dict(
        places=("崇礼", "万龙", "太舞", "云顶", "北大湖", "松花湖", "长白山", "阿勒泰"),
        gear=("滑雪服", "雪镜", "滑雪镜", "滑雪手套", "雪板", "固定器", "护脸"),
        acts=("刷道", "刻滑", "刷公园", "滑野雪"),
        questions=("雪季快到了，雪镜求推荐", "第一次去崇礼，雪服租还是买"),
        shares=("今天刻滑终于立刃了", "新雪镜一点不起雾", "万龙今天粉雪太爽了"),
    ),
    "water_sports": dict(
        places=("千岛湖", "洱海", "苏州河", "太湖", "后海", "万绿湖"),
        gear=("桨板", "救生衣", "防水袋", "溯溪鞋", "划桨"),
        acts=("划桨板", "划皮划艇", "漂流", "溯溪"),
        questions=("充气桨板新手买多长的", "桨板要考证吗"),
        shares=("第一次站上桨板，落水三次", "救生衣一定要穿，别嫌热", "防水袋装手机真的安心"),
    ),
    "climbing": dict(
        places=("阳朔", "黎明谷", "白河", "岩馆", "马鞍山"),
        gear=("攀岩鞋", "安全带", "镁粉袋", "快挂", "镁粉"),
        acts=("抱石", "先锋", "顶绳", "爬线"),
        questions=("攀岩鞋买小一码还是两码", "刚开始抱石，手指疼正常吗"),
        shares=("今天终于完成了V4", "岩馆新开了线路，周末去刷", "阳朔的岩壁太漂亮了"),
    ),
    "outdoor_cooking": dict(
        places=("营地", "阳台", "后院", "江边", "山顶"),
        gear=("炉头", "套锅", "手冲壶", "卡式炉", "咖啡器具", "气罐"),
        acts=("煮咖啡", "野炊", "煮火锅", "做早饭"),
        questions=("卡式炉和炉头哪个更适合野外做饭", "高山上炉头火力够吗"),
        shares=("山顶煮一壶咖啡，值了", "套锅叠起来一个包就装下了", "户外煮的泡面就是香"),
    ),
    "city_outdoor": dict(
        places=("滨江", "西湖边", "外滩", "奥森", "世纪公园"),
        gear=("冲锋衣", "抓绒衣", "防晒衣", "软壳裤", "硬壳"),
        acts=("散步", "夜跑", "遛弯", "citywalk"),
        questions=("冲锋衣平时通勤穿会不会太夸张", "防晒衣真的有用吗"),
        shares=("冲锋衣通勤穿也很好看", "夏天骑车上班必须防晒衣", "抓绒衣当内搭真暖和"),
    ),
    "family_outdoor": dict(
        places=("郊野公园", "亲子农场", "营地", "草坪", "植物园"),
        gear=("儿童冲锋衣", "儿童帐篷", "亲子野餐垫", "儿童水壶"),
        acts=("遛娃", "野餐", "放风筝", "带娃玩水"),
        questions=("带三岁娃出门要准备什么", "儿童冲锋衣买大一码可以吗"),
        shares=("带娃去公园野餐，娃玩疯了", "儿童帐篷在客厅也能搭", "孩子的冲锋衣买大一码能穿两年"),
    ),
}
_QUESTION_TEMPLATES = (
    "第一次去{place}，{gear}需要带吗？", "新手求推荐{gear}，预算一千左右", "{gear}怎么选啊，有没有懂的朋友",
    "想去{place}{act}，有人一起吗", "请问{gear}有必要买贵的吗", "这周末{place}天气怎么样，适合{act}吗",
    "{gear}买哪个尺码合适？", "刚入坑，{act}要准备哪些东西",
)
_SHARE_TEMPLATES = (
    "周末去{place}{act}，风景太好了", "新买的{gear}今天第一次用，感觉不错", "这个{gear}用了一个季度了，还挺耐造",
    "刚从{place}回来，下次还去", "{place}打卡，分享几张图", "今天在{place}{act}，累但是开心",
    "{gear}到货了，做工比想象中好",
)
_ANSWER_TEMPLATES = (
    "{gear}建议先买入门款，够用了", "{place}这个季节去正好，记得带{gear}", "我用的就是这款{gear}，推荐",
    "新手别一上来买太贵的{gear}", "去{place}的话{gear}一定要带上", "{act}多去几次就有感觉了，别急",
    "可以先租{gear}试试，喜欢再买",
)
_DEAL_TEMPLATES = (
    "有红包吗", "拼团还差一个，谁来", "领券链接发一下", "{gear}有券吗", "{gear}什么时候降价啊",
    "求个{gear}的优惠码", "满减怎么凑单划算", "今晚几点开抢？", "刚领的券怎么用不了", "群里有没有一起拼单的",
    "{gear}还有隐藏券吗", "签到的积分能抵现吗",
)
_SMALL_TALK = (
    "哈哈哈", "收到", "谢谢群主", "早上好", "+1", "同问", "学到了", "羡慕", "太美了吧", "下次带上我", "已下单",
    "好的好的",
)
_EMOJI = ("👍", "😂😂😂", "[强]", "🔥🔥", "[捂脸]", "🙏🙏", "[呲牙]", "⛺", "🏔️", "[玫瑰]")
_NICK_A = ("山野", "阿", "小", "老", "大", "林间", "追风", "晴天", "北方的", "南山", "野生", "Lucky")
_NICK_B = ("阿杰", "小鹿", "大熊", "猫猫", "Leo", "Amy", "阿飞", "木木", "胖虎", "老王", "Kiki", "一帆")

_QUERY_SPECIALS = {
    "帐篷": ("轻量帐篷 两人", "帐篷 自动速开", "露营帐篷 防暴雨"), "天幕": ("天幕 黑胶 防晒", "蝶形天幕"),
    "睡袋": ("睡袋 零下10度", "羽绒睡袋"), "登山鞋": ("防水登山鞋", "登山鞋 女 轻便"),
    "速干衣": ("速干衣 男 短袖",), "越野跑鞋": ("越野跑鞋 抓地",), "骑行头盔": ("骑行头盔 一体成型",),
    "鱼竿": ("鱼竿 碳素 3.6米", "路亚竿"), "滑雪镜": ("滑雪镜 近视", "雪镜 防雾"),
    "滑雪服": ("滑雪服 女 套装",), "桨板": ("充气桨板", "桨板 新手"), "攀岩鞋": ("攀岩鞋 入门",),
    "套锅": ("户外套锅 钛",), "冲锋衣": ("三合一冲锋衣", "冲锋衣 女 防水"), "防晒衣": ("防晒衣 upf50",),
    "儿童冲锋衣": ("儿童冲锋衣 加绒",),
}
_QUERY_PREFIXES = ("轻量", "防水", "便携", "专业", "新款", "男款", "女款", "耐磨")
_QUERY_SUFFIXES = ("", " 推荐", " 折扣", " 旗舰店", " 2026新款")
# fmt: on


@dataclass(frozen=True)
class _Pool:
    """A flat list of strings and, per key, where its entries start and how many there are."""

    values: pl.Series
    start: np.ndarray
    count: np.ndarray

    def pick(self, rng: np.random.Generator, key: np.ndarray) -> pl.Series:
        idx = self.start[key] + (rng.random(len(key)) * self.count[key]).astype(np.int64)
        return self.values.gather(idx)


def _pool(groups: list[list[str]]) -> _Pool:
    count = np.array([len(g) for g in groups])
    return _Pool(
        pl.Series([s for g in groups for s in g], dtype=pl.String), np.cumsum(count) - count, count
    )


def _render(
    templates: tuple[str, ...], slots: dict[str, tuple[str, ...]], rng: np.random.Generator
) -> list[str]:
    """Each template filled with 12 slot combinations (repeating when it has fewer): templates weigh alike."""
    out: list[str] = []
    for t in templates:
        names = [n for n in ("place", "gear", "act") if "{" + n + "}" in t]
        combos = list(itertools.product(*(slots[n] for n in names)))
        picks = rng.permutation(len(combos))[np.arange(12) % len(combos)]
        out.extend(t.format(**dict(zip(names, combos[i], strict=True))) for i in picks)
    return out


@functools.cache
def _texts() -> dict[str, _Pool]:
    """Chat pools keyed by (kind, interest + 1) with 0 meaning "no interest"; search queries by category."""
    # A fixed seed: the sentences are part of the brand, not of a population.
    rng = np.random.default_rng(20261122)
    all_gear = tuple(CATEGORIES)
    groups: list[list[str]] = []
    for kind in range(7):
        for i in range(-1, len(INTERESTS)):
            c = (
                _CHAT[INTERESTS[i]]
                if i >= 0
                else _CHAT[INTERESTS[int(rng.integers(len(INTERESTS)))]]
            )
            slots = {"place": c["places"], "gear": c["gear"], "act": c["acts"]}
            if kind == _Q:
                g = _render(_QUESTION_TEMPLATES, slots, rng) + list(c["questions"]) * 6
            elif kind == _SHARE:
                g = _render(_SHARE_TEMPLATES, slots, rng) + list(c["shares"]) * 6
            elif kind == _ANSWER:
                g = _render(_ANSWER_TEMPLATES, slots, rng)
            elif kind == _DEAL:
                deal_gear = c["gear"] if i >= 0 else all_gear
                g = _render(_DEAL_TEMPLATES, {**slots, "gear": deal_gear}, rng)
            elif kind == _CHAT:
                g = list(_SMALL_TALK)
            elif kind == _EMPTY:
                g = [""]
            else:
                g = list(_EMOJI)
            groups.append(g)
    queries: list[list[str]] = []
    for cat in CATEGORIES:
        generic = [f"{p}{cat}{s}" for p in _QUERY_PREFIXES for s in _QUERY_SUFFIXES]
        pick = rng.permutation(len(generic))[:6]
        queries.append([*(_QUERY_SPECIALS.get(cat, ()) * 2), cat, *(generic[j] for j in pick)])
    return {"chat": _pool(groups), "query": _pool(queries)}


def _chat_key(kind: np.ndarray, interest: np.ndarray) -> np.ndarray:
    return kind.astype(np.int64) * (len(INTERESTS) + 1) + interest.astype(np.int64) + 1


# ---------------------------------------------------------------------------------------------
# Public API


@dataclass(frozen=True)
class DemoSummary:
    """What `generate` wrote: rows per file and people per persona."""

    out_dir: Path
    persons: int
    orders: int  # orders.csv + store_orders.parquet rows, dirty and duplicated rows included
    events: int
    messages: int
    identities: int
    consent: int
    identifiers: int  # rows of truth/identifiers.parquet
    personas: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        return d


def generate(
    out_dir: Path,
    users: int = 3000,
    seed: int = 7,
    end: date = date(2026, 11, 22),
    weeks: int = 104,
    *,
    events_scale: float = 1.0,
    messages_scale: float = 1.0,
    chunks_per_file: int = 0,
) -> DemoSummary:
    """Write a demo population of `users` people over `weeks` weeks ending on `end`, plus truth.

    `end` should be a Sunday; any other day means the last Sunday before it. The same
    (users, seed, end, weeks) writes byte-identical files. See the module docstring for layout.

    For benchmark sets: `events_scale` and `messages_scale` multiply each person's mean number
    of mini-program events and chat messages (1.0 draws exactly the default set), and
    `chunks_per_file` > 0 starts a new CSV / JSON lines file every that many blocks of 100,000
    people (`orders/orders-0001.csv`, ...), as a brand's daily or monthly exports would come.

    >>> s = generate(Path("/tmp/demo"), users=200)  # doctest: +SKIP
    >>> s.persons
    200
    """
    for name, value, low in (("users", users, 1), ("weeks", weeks, 1), ("seed", seed, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(
                f"demo-data: --{name} must be an int >= {low}. Got {value!r} instead."
            )
    out_dir = Path(out_dir)
    cal = _Calendar(end - timedelta(days=(end.weekday() + 1) % 7), weeks)
    pop = _population(users, seed, cal, events_scale, messages_scale)
    totals = dict.fromkeys(
        ("orders", "events", "messages", "identities", "consent", "identifiers"), 0
    )
    opted_out = np.zeros(users, dtype=bool)
    counters = _Counters()
    with _Sink(out_dir) as sink:
        for n_chunk, lo in enumerate(range(0, users, CHUNK)):
            hi = min(users, lo + CHUNK)
            c = _Chunk(
                pop, cal, lo, hi, np.random.default_rng([seed, 1, n_chunk]), counters, n_chunk == 0
            )
            t = _generate_chunk(c)
            opted_out[lo:hi] = t.opted_out

            def part(rel: str, n: int = n_chunk) -> str:
                if chunks_per_file <= 0:
                    return rel
                stem, dot, suffix = rel.rpartition(".")
                return f"{stem}-{n // chunks_per_file + 1:04d}{dot}{suffix}"

            sink.csv(part("orders/orders.csv"), t.orders_csv)
            sink.parquet("orders/store_orders.parquet", t.orders_parquet)
            sink.parquet("events/events.parquet", t.events)
            sink.jsonl(part("messages/wecom_archive.jsonl"), t.messages)
            sink.csv(part("identities/links.csv"), t.identities)
            sink.csv("consent/consent.csv", t.consent)
            sink.parquet("truth/identifiers.parquet", t.identifiers)
            totals["orders"] += t.orders_csv.height + t.orders_parquet.height
            totals["events"] += t.events.height
            totals["messages"] += t.messages.height
            totals["identities"] += t.identities.height
            totals["consent"] += t.consent.height
            totals["identifiers"] += t.identifiers.height
        sink.parquet("truth/persons.parquet", _persons_truth(pop, opted_out))
    personas = dict(zip(PERSONAS, np.bincount(pop.persona, minlength=5).tolist(), strict=True))
    return DemoSummary(out_dir=out_dir, persons=users, personas=personas, **totals)


# ---------------------------------------------------------------------------------------------
# Calendar: the days, their demand by interest and promotion, and sampling from it


class _Calendar:
    """`days` days from a Monday to the Sunday `last`; day weights for 11 interests x {normal, hunter}."""

    def __init__(self, last: date, weeks: int) -> None:
        self.days = 7 * weeks
        self.first = last - timedelta(days=self.days - 1)
        self.start_s = calendar.timegm(self.first.timetuple())  # naive local wall clock as seconds
        d = np.datetime64(self.first, "D") + np.arange(self.days)
        month = d.astype("datetime64[M]").astype(np.int64) % 12 + 1
        md = month * 100 + (d - d.astype("datetime64[M]")).astype(np.int64) + 1
        window = np.zeros(self.days, dtype=bool)
        peak = np.zeros(self.days, dtype=bool)
        for _, (m1, d1), (m2, d2), peaks in PROMOTIONS:
            window |= (md >= m1 * 100 + d1) & (md <= m2 * 100 + d2)
            peak |= np.isin(md, [m * 100 + dd for m, dd in peaks])
        self.promo = window
        normal = np.where(peak, 3.5, np.where(window, 1.6, 1.0))
        hunter = np.where(peak, 14.0, np.where(window, 4.0, 0.12))
        trend = np.linspace(0.85, 1.15, self.days)  # the brand grows
        w = SEASONS[:, month - 1][:, None, :] * np.stack([normal, hunter])[None] * trend
        w = w.reshape(-1, self.days)
        cdf = np.concatenate([np.zeros((len(w), 1)), np.cumsum(w, axis=1)], axis=1)
        cdf /= cdf[:, -1:]
        # One sorted array for every row: row r is shifted by 2r so a single searchsorted serves all.
        self._cdf = (cdf + 2.0 * np.arange(len(w))[:, None]).ravel()

    def sample_days(
        self, rng: np.random.Generator, combo: np.ndarray, lo: np.ndarray, hi: np.ndarray
    ) -> np.ndarray:
        """A day in [lo, hi) per row, drawn from day-weight row `combo` (interest * 2 + is_hunter)."""
        base = combo.astype(np.int64) * (self.days + 1)
        a, b = self._cdf[base + lo], self._cdf[base + hi]
        t = a + rng.random(len(combo)) * (b - a)
        day = np.searchsorted(self._cdf, t, side="right") - 1 - base
        return np.clip(day, lo, hi - 1)

    def timestamps(self, seconds: np.ndarray) -> pl.Series:
        """Seconds since the first day's midnight as naive local `Datetime("us")`."""
        us = (self.start_s + seconds.astype(np.int64)) * 1_000_000
        return pl.Series(us, dtype=pl.Int64).cast(pl.Datetime("us"))


def _seconds(rng: np.random.Generator, day: np.ndarray, hour_weights: np.ndarray) -> np.ndarray:
    cum = np.cumsum(hour_weights) / hour_weights.sum()
    hour = np.minimum(np.searchsorted(cum, rng.random(len(day)), side="right"), 23)
    return day.astype(np.int64) * 86400 + hour * 3600 + rng.integers(0, 3600, len(day))


# ---------------------------------------------------------------------------------------------
# Population: one row per person, numpy arrays


@dataclass
class _Population:
    n: int
    persona: np.ndarray
    interests: np.ndarray  # (n, 3) interest indexes, primary first, -1 padded
    n_interests: np.ndarray
    p_primary: np.ndarray
    phone: np.ndarray  # int64, 11 digits
    station_phones: np.ndarray
    has_mp: np.ndarray
    has_wecom: np.ndarray
    has_member: np.ndarray
    near_store: np.ndarray
    n_taobao: np.ndarray
    n_jd: np.ndarray
    n_douyin: np.ndarray
    bridged: np.ndarray  # the evidence links this person's WeChat side to the commerce side
    station: np.ndarray  # parcel station index, -1 for none
    only_taobao: np.ndarray  # the planted two-account person
    ord_lo: np.ndarray
    ord_hi: np.ndarray
    n_orders: np.ndarray
    act_lo: np.ndarray
    act_hi: np.ndarray
    n_events: np.ndarray
    n_msgs: np.ndarray
    aov: np.ndarray
    member_no: np.ndarray
    store_no: np.ndarray
    room_ids: pl.Series  # WeCom roomid per ROOMS entry


def _population(
    n: int, seed: int, cal: _Calendar, events_scale: float = 1.0, messages_scale: float = 1.0
) -> _Population:
    rng = np.random.default_rng([seed, 0])
    persona = rng.choice(5, size=n, p=PERSONA_SHARES).astype(np.int8)
    hunter = persona == HUNTER
    D = cal.days

    k = rng.choice([1, 2, 3], size=n, p=[0.45, 0.35, 0.20])
    k[hunter & (rng.random(n) < 0.45)] = 0  # many coupon hunters care about price, not gear
    keys = np.log(np.array(INTEREST_POPULARITY))[None, :] + rng.gumbel(size=(n, len(INTERESTS)))
    top = np.argsort(-keys, axis=1, kind="stable")[:, :3]
    interests = np.where(np.arange(3)[None, :] < k[:, None], top, -1).astype(np.int8)
    p_primary = np.where(k <= 1, 1.0, rng.uniform(0.58, 0.82, n))

    def flag(p: np.ndarray) -> np.ndarray:
        return rng.random(n) < p[persona]

    has_mp, has_wecom, has_member, near_store = (
        flag(_P_MINIPROGRAM),
        flag(_P_WECOM),
        flag(_P_MEMBER),
        flag(_P_NEAR_STORE),
    )
    extra = np.where(hunter, 0.4, 0.05)  # a second (hunters: third) account on the same platform
    n_taobao = flag(_P_TAOBAO) * (1 + rng.binomial(np.where(hunter, 2, 1), extra))
    n_jd = flag(_P_JD) * (1 + rng.binomial(1, np.where(hunter, 0.35, 0.02)))
    n_douyin = flag(_P_DOUYIN) * (1 + rng.binomial(1, np.where(hunter, 0.3, 0.0)))

    # Windows of activity (days) and order counts.
    joined = np.where(rng.random(n) < 0.55, 0, rng.integers(0, max(1, int(D * 0.7)), n))
    lapsed = np.where((rng.random(n) < 0.15) & (D > 260), D - rng.integers(60, 201, n), D)
    dormant_hi = D - 380 - rng.integers(0, 141, n) if D > 450 else np.full(n, max(1, D // 3))
    dormant_hi = np.maximum(dormant_hi, 1)
    newcomer_lo = np.maximum(D - rng.integers(7, 183, n), 0)
    ord_hi = np.select([persona == ENTHUSIAST, persona == DORMANT], [lapsed, dormant_hi], D)
    ord_lo = np.select(
        [persona == NEWCOMER, persona == DORMANT],
        [newcomer_lo, np.maximum(dormant_hi - rng.integers(60, 366, n), 0)],
        joined,
    )
    ord_lo = np.minimum(ord_lo, ord_hi - 1)
    years = (ord_hi - ord_lo) / 365.0
    rate = np.select(
        [persona == ENTHUSIAST, persona == EXPERT, persona == HUNTER],
        [rng.uniform(2, 5, n), rng.uniform(5, 12, n), rng.uniform(4, 10, n)],
        0.0,
    )
    n_orders = np.select(
        [persona == NEWCOMER, persona == DORMANT],
        [rng.choice([0, 1, 2], size=n, p=[0.2, 0.5, 0.3]), 1 + rng.poisson(1.0, n)],
        np.maximum(rng.poisson(rate * years), 1),
    )
    has_mp |= n_orders == 0  # a prospect with no order still browses the mini-program
    has_channel = (n_taobao > 0) | (n_jd > 0) | (n_douyin > 0) | has_mp | near_store
    n_taobao = np.where((n_orders > 0) & ~has_channel, 1, n_taobao)

    lo_aov, hi_aov = _AOV_RANGE[persona, 0], _AOV_RANGE[persona, 1]
    aov = np.exp(rng.uniform(np.log(lo_aov), np.log(hi_aov)))
    act_lo = np.maximum(ord_lo - rng.integers(0, 91, n), 0)
    act_hi = np.where(persona == DORMANT, np.minimum(ord_hi + rng.integers(1, 61, n), D), D)
    n_events = np.where(
        has_mp,
        np.maximum(rng.poisson(_EVENTS_MEAN[persona] * events_scale * rng.gamma(2.0, 0.5, n)), 1),
        0,
    )
    n_msgs = np.where(
        has_wecom,
        rng.poisson(_MESSAGES_MEAN[persona] * messages_scale * rng.gamma(0.6, 1 / 0.6, n)),
        0,
    )

    # Parcel stations: 30+ online buyers each have some parcels sent to one station phone.
    n_stations = max(1, n // 5000)
    online = (n_taobao > 0) | (n_jd > 0) | (n_douyin > 0)
    eligible = np.flatnonzero((n_orders >= 2) & online & ~hunter)
    sizes = rng.integers(32, 49, n_stations)
    chosen = rng.permutation(eligible)[: sizes.sum()]
    station = np.full(n, -1, dtype=np.int32)
    station[chosen] = np.repeat(np.arange(n_stations), sizes)[: len(chosen)]
    # The planted true merge: one person with two taobao accounts sharing one phone.
    only_taobao = np.zeros(n, dtype=bool)
    planted = np.flatnonzero(
        (n_orders >= 2) & (n_taobao >= 1) & (station < 0) & ~hunter & (persona != DORMANT)
    )
    if len(planted):
        p = planted[rng.integers(len(planted))]
        n_taobao[p], only_taobao[p], n_orders[p] = 2, True, max(n_orders[p], 3)

    phones = _unique_phones(
        rng,
        n + n_stations,
        virtual=np.concatenate([hunter & (rng.random(n) < 0.6), np.zeros(n_stations, bool)]),
    )
    return _Population(
        n=n,
        persona=persona,
        interests=interests,
        n_interests=k,
        p_primary=p_primary,
        phone=phones[:n],
        station_phones=phones[n:],
        has_mp=has_mp,
        has_wecom=has_wecom,
        has_member=has_member,
        near_store=near_store,
        n_taobao=n_taobao.astype(np.int64),
        n_jd=n_jd.astype(np.int64),
        n_douyin=n_douyin.astype(np.int64),
        bridged=rng.random(n) < 0.955,
        station=station,
        only_taobao=only_taobao,
        ord_lo=ord_lo.astype(np.int64),
        ord_hi=ord_hi.astype(np.int64),
        n_orders=n_orders.astype(np.int64),
        act_lo=act_lo.astype(np.int64),
        act_hi=act_hi.astype(np.int64),
        n_events=n_events.astype(np.int64),
        n_msgs=n_msgs.astype(np.int64),
        aov=aov,
        member_no=1_000_000_000 + rng.permutation(n).astype(np.int64) * 7 + rng.integers(0, 7, n),
        store_no=rng.integers(1, 61, n),
        room_ids=_random_ids(rng, len(ROOMS), "wr", 28, _ALNUM),
    )


def _unique_phones(rng: np.random.Generator, n: int, virtual: np.ndarray) -> np.ndarray:
    """`n` distinct valid mobile numbers, none of them the test number."""
    prefix = np.where(
        virtual,
        _VIRTUAL_PREFIXES[rng.integers(0, len(_VIRTUAL_PREFIXES), n)],
        _PHONE_PREFIXES[rng.integers(0, len(_PHONE_PREFIXES), n)],
    )
    phone = prefix.astype(np.int64) * 100_000_000 + rng.integers(0, 100_000_000, n)
    while True:
        _, first = np.unique(phone, return_index=True)
        bad = np.ones(n, dtype=bool)
        bad[first] = False
        bad |= phone == TEST_PHONE
        if not bad.any():
            return phone
        phone[bad] = prefix[bad] * 100_000_000 + rng.integers(0, 100_000_000, int(bad.sum()))


def _persons_truth(pop: _Population, opted_out: np.ndarray) -> pl.DataFrame:
    names = pl.Series([*INTERESTS, None], dtype=pl.String)
    slots = [
        names.gather(np.where(pop.interests[:, j] >= 0, pop.interests[:, j], len(INTERESTS)))
        for j in range(3)
    ]
    return pl.DataFrame(
        {
            "person_id": _person_ids(np.arange(pop.n), pop.n),
            "persona": pl.Series(PERSONAS, dtype=pl.String).gather(pop.persona.astype(np.int64)),
            "primary_interest": slots[0],
            "interests": pl.DataFrame(slots, schema=["a", "b", "c"]).select(
                pl.concat_list("a", "b", "c").list.drop_nulls()
            )["a"],
            "is_coupon_hunter": pop.persona == HUNTER,
            "opted_out": opted_out,
        }
    )


def _person_ids(pid: np.ndarray, n: int) -> pl.Series:
    width = max(6, len(str(n)))
    digits = (pl.Series(pid, dtype=pl.Int64) + 1).cast(pl.String).str.zfill(width)
    return pl.select(pl.lit("P") + digits).to_series().alias("person_id")


# ---------------------------------------------------------------------------------------------
# One block of people: their identifiers and every table row they produce

# Identifier blocks in a chunk's flat id Series: index = block * m + local person.
_B_TAOBAO, _B_JD, _B_DOUYIN = 0, 3, 5  # three taobao, two jd, two douyin accounts at most
_B_OPENID, _B_UNIONID, _B_WECOM, _B_MEMBER = 7, 8, 9, 10
_B_PHONE = 11  # not in the Series: the person's phone, typed per row
_BLOCK_TYPE = np.array(
    ["taobao_ouid"] * 3
    + ["jd_pin"] * 2
    + ["douyin_openid"] * 2
    + ["openid", "unionid", "wecom_external_userid", "member_id", "phone"]
)
_ALNUM = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_B64 = _ALNUM + b"-_"
_HEX = b"0123456789abcdef"


@dataclass
class _Counters:
    """Running row numbers across chunks, so order and message ids stay unique."""

    orders: int = 0
    events: int = 0
    messages: int = 0


@dataclass
class _Chunk:
    pop: _Population
    cal: _Calendar
    lo: int
    hi: int
    rng: np.random.Generator
    counters: _Counters
    first: bool
    ids: pl.Series = field(init=False)

    def __post_init__(self) -> None:
        m, rng = self.m, self.rng
        member = pl.lit("M") + pl.Series(
            self.pop.member_no[self.lo : self.hi], dtype=pl.Int64
        ).cast(pl.String)
        self.ids = pl.concat(
            [
                _random_ids(rng, 3 * m, "AA", 22, _ALNUM),
                _random_ids(rng, 2 * m, "jd_", 13, _HEX),
                _random_ids(rng, 2 * m, "_000", 28, _ALNUM),
                _random_ids(rng, m, "oA", 26, _B64),
                _random_ids(rng, m, "o", 27, _B64),
                _random_ids(rng, m, "wm", 22, _ALNUM),
                pl.select(member).to_series().alias("id"),
            ]
        )

    @property
    def m(self) -> int:
        return self.hi - self.lo

    def rows(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(local person, global person, rank within person) for `counts[i]` rows per person."""
        loc = np.repeat(np.arange(self.m), counts)
        starts = np.cumsum(counts) - counts
        return loc, loc + self.lo, np.arange(len(loc)) - starts[loc]

    def id_of(self, block: np.ndarray, loc: np.ndarray) -> pl.Series:
        return self.ids.gather(np.asarray(block, dtype=np.int64) * self.m + loc)


def _random_ids(
    rng: np.random.Generator, n: int, prefix: str, length: int, alphabet: bytes
) -> pl.Series:
    codes = np.frombuffer(alphabet, dtype=np.uint8)[
        rng.integers(0, len(alphabet), size=(n, length))
    ]
    body = pl.Series(np.ascontiguousarray(codes).view(f"S{length}").ravel()).cast(pl.String)
    return pl.select(pl.lit(prefix) + body).to_series().alias("id")


@dataclass
class _Tables:
    orders_csv: pl.DataFrame
    orders_parquet: pl.DataFrame
    events: pl.DataFrame
    messages: pl.DataFrame
    identities: pl.DataFrame
    consent: pl.DataFrame
    identifiers: pl.DataFrame
    opted_out: np.ndarray


def _generate_chunk(c: _Chunk) -> _Tables:
    orders = _orders(c)
    orders_csv, orders_parquet = _split_orders(c, orders)
    events = _events(c)
    messages = _messages(c)
    mp_phone_seen = np.zeros(c.m, dtype=bool)
    mp_rows = orders.filter((pl.col("_ch") == 4) & (pl.col("_phone_pid") >= 0))
    mp_phone_seen[mp_rows["_pid"].to_numpy() - c.lo] = True
    identities = _identities(c, mp_phone_seen)
    consent, opted_out = _consent(c)
    identifiers = _identifiers(
        c, [orders_csv, orders_parquet], events, messages, identities, consent
    )

    def public(df: pl.DataFrame) -> pl.DataFrame:
        return df.select(pl.exclude("^_.*$"))

    return _Tables(
        orders_csv=public(orders_csv),
        orders_parquet=public(orders_parquet),
        events=public(events),
        messages=public(messages),
        identities=public(identities),
        consent=public(consent),
        identifiers=identifiers,
        opted_out=opted_out,
    )


def _pick_interest(rng: np.random.Generator, pop: _Population, g: np.ndarray) -> np.ndarray:
    """The interest behind each signal: the primary with probability p_primary, else a secondary."""
    k = pop.n_interests[g]
    second = 1 + (rng.random(len(g)) * np.maximum(k - 1, 1)).astype(np.int64)
    slot = np.where((rng.random(len(g)) < pop.p_primary[g]) | (k <= 1), 0, second)
    return pop.interests[g, slot].astype(np.int64)


def _pick_category(rng: np.random.Generator, interest: np.ndarray, noise: float) -> np.ndarray:
    """A category of `interest`; with probability `noise` (or no interest) any category."""
    i = np.maximum(interest, 0)
    own = _CAT_START[i] + (rng.random(len(i)) * _CAT_COUNT[i]).astype(np.int64)
    anything = rng.integers(0, len(CATEGORIES), len(i))
    return np.where((interest < 0) | (rng.random(len(i)) < noise), anything, own)


def _typed_phone(digits: pl.Expr, style: pl.Expr) -> pl.Expr:
    """A phone as people type it: 13812345678, +86 138-1234-5678, 0086 13812345678, 86-..., 138 1234 5678."""
    a, b, c = digits.str.slice(0, 3), digits.str.slice(3, 4), digits.str.slice(7, 4)
    return (
        pl.when(style == 1)
        .then(pl.concat_str([pl.lit("+86 "), a, pl.lit("-"), b, pl.lit("-"), c]))
        .when(style == 2)
        .then(pl.lit("0086 ") + digits)
        .when(style == 3)
        .then(pl.lit("86-") + digits)
        .when(style == 4)
        .then(pl.concat_str([a, pl.lit(" "), b, pl.lit(" "), c]))
        .otherwise(digits)
    )


def _phone_styles(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice(5, size=n, p=[0.6, 0.12, 0.1, 0.1, 0.08]).astype(np.int8)


def _text_timestamps(ts: pl.Expr, iso: pl.Expr) -> pl.Expr:
    """`YYYY-MM-DD HH:MM:SS`, or ISO-8601 with the +08:00 offset where `iso`."""
    return (
        pl.when(iso)
        .then(ts.dt.strftime("%Y-%m-%dT%H:%M:%S+08:00"))
        .otherwise(ts.dt.strftime("%Y-%m-%d %H:%M:%S"))
    )


def _orders(c: _Chunk) -> pl.DataFrame:
    """Every order of the chunk, typed, with `_pid`, `_buyer_pid`, `_phone_pid` (-1: not a person's id)."""
    pop, rng = c.pop, c.rng
    cnt = pop.n_orders[c.lo : c.hi]
    loc, g, rank = c.rows(cnt)
    k = len(loc)
    persona = pop.persona[g]
    hunter = persona == HUNTER

    # Channel: the person's accounts decide where they can buy; preferences vary per person.
    sl = slice(c.lo, c.hi)
    tb, jd, dy = pop.n_taobao[sl] > 0, pop.n_jd[sl] > 0, pop.n_douyin[sl] > 0
    off = (pop.station[sl] >= 0) | pop.only_taobao[sl]
    avail = np.stack(
        [
            tb,
            tb,
            jd & ~pop.only_taobao[sl],
            dy & ~pop.only_taobao[sl],
            pop.has_mp[sl] & ~off,
            pop.near_store[sl] & ~off,
        ],
        axis=1,
    )
    cum = np.cumsum(
        _CHANNEL_WEIGHTS[pop.persona[sl]] * avail * rng.gamma(1.0, 1.0, (c.m, 6)), axis=1
    )
    u = rng.random(k) * cum[loc, -1]
    ch = np.minimum((u[:, None] >= cum[loc]).sum(axis=1), 5)

    interest = _pick_interest(rng, pop, g)
    cat = _pick_category(rng, interest, 0.04)
    day = c.cal.sample_days(rng, _CAT_INTEREST[cat] * 2 + hunter, pop.ord_lo[g], pop.ord_hi[g])
    seconds = _seconds(rng, day, _ORDER_HOURS)

    # Buyer identifier.
    n_acc = np.select(
        [ch <= 1, ch == 2, ch == 3], [pop.n_taobao[g], pop.n_jd[g], pop.n_douyin[g]], 1
    )
    acct = rank % np.maximum(n_acc, 1)
    member_buyer = pop.has_member[g] & (rng.random(k) < 0.9)
    block = np.select(
        [ch <= 1, ch == 2, ch == 3, ch == 4, ch == 5],
        [
            _B_TAOBAO + acct,
            _B_JD + acct,
            _B_DOUYIN + acct,
            np.where(rng.random(k) < 0.25, _B_UNIONID, _B_OPENID),
            np.where(member_buyer, _B_MEMBER, _B_PHONE),
        ],
    )
    # The cashier typed the test number; placeholders where the export lost the buyer id.
    buyer_test = (block == _B_PHONE) & (rng.random(k) < 0.02) & (cnt[loc] >= 2)
    placeholder = (rng.random(k) < 0.003) & (cnt[loc] >= 2) & (block != _B_PHONE)

    # Receiver phone: on some orders; always on the first order of each account (that is the
    # link), except mini-program orders of people whose WeChat side stays unlinked.
    has_phone = rng.random(k) < _PHONE_ON_ORDER[ch]
    first = np.zeros(k, dtype=bool)
    first[np.unique(loc * 16 + block, return_index=True)[1]] = True
    has_phone |= first
    has_phone &= (ch != 4) | pop.bridged[g]
    has_phone = np.where(block == _B_PHONE, rng.random(k) < 0.4, has_phone)
    to_station = (pop.station[g] >= 0) & (ch <= 3) & ((rank == cnt[loc] - 1) | ~first)
    to_test = has_phone & ~to_station & (rng.random(k) < 0.002)
    phone_num = np.select(
        [to_station, to_test, has_phone],
        [pop.station_phones[np.maximum(pop.station[g], 0)], TEST_PHONE, pop.phone[g]],
        0,
    )
    own_phone = has_phone & ~to_station & ~to_test

    # Money and status.
    price = np.maximum(np.round(pop.aov[g] * rng.lognormal(0.0, 0.3, k) / 10) * 10 - 1, 9.0)
    quantity = rng.choice([1, 2, 3], size=k, p=[0.86, 0.10, 0.04])
    gross = price * quantity
    p_discount = np.where(hunter, 0.9, np.where(c.cal.promo[day], 0.6, 0.2))
    frac = np.where(hunter, rng.uniform(0.2, 0.5, k), rng.uniform(0.05, 0.2, k))
    discount = np.where(rng.random(k) < p_discount, np.round(gross * frac), 0.0)
    amount = np.round(gross - discount, 2)
    u = rng.random(k)
    p_cancel, p_refund = np.where(hunter, 0.08, 0.025), np.where(hunter, 0.18, 0.04)
    status = np.select([u < p_cancel, u < p_cancel + p_refund], [2, 1], 0)
    partial = (status == 0) & (rng.random(k) < np.where(hunter, 0.12, 0.04))
    refund = np.where(
        status == 1, amount, np.where(partial, np.round(amount * rng.uniform(0.1, 0.6, k), 2), 0.0)
    )

    serial = c.counters.orders + np.arange(k, dtype=np.int64)
    c.counters.orders += k
    frame = pl.DataFrame(
        {
            "_pid": g.astype(np.int64),
            "_seq": serial,
            "_ch": ch.astype(np.int8),
            "_n": cnt[loc],
            "_buyer_pid": np.where(placeholder | buyer_test, -1, g).astype(np.int64),
            "_phone_pid": np.where(own_phone | ((block == _B_PHONE) & ~buyer_test), g, -1).astype(
                np.int64
            ),
            "_buyer_num": np.where(buyer_test, TEST_PHONE, pop.phone[g]),
            "_buyer_style": _phone_styles(rng, k),
            "_phone_num": phone_num,
            "_phone_style": _phone_styles(rng, k),
            "_rand": rng.integers(0, 100, k),
            "_store": pop.store_no[g],
            "_placeholder": rng.integers(0, len(PLACEHOLDER_IDS), k),
            "_is_placeholder": placeholder,
            "source": pl.Series(_ORDER_CHANNELS, dtype=pl.String).gather(ch),
            "buyer_id_type": pl.Series(_BLOCK_TYPE).gather(block),
            "buyer_id": c.id_of(np.where(block == _B_PHONE, 0, block), loc),
            "paid_at": c.cal.timestamps(seconds),
            "amount": amount,
            "discount": discount,
            "refund": refund,
            "status": pl.Series(["paid", "refunded", "cancelled"]).gather(status),
            "category": pl.Series(CATEGORIES).gather(cat),
            "sku": _sku(rng, cat),
            "quantity": quantity.astype(np.int64),
        }
    )
    seq = pl.col("_seq")
    order_id = (
        pl.when(pl.col("_ch") <= 1)
        .then(
            (pl.lit(3_000_000_000_000_000_000, pl.Int64) + seq * 100 + pl.col("_rand")).cast(
                pl.String
            )
        )
        .when(pl.col("_ch") == 2)
        .then((pl.lit(290_000_000_000, pl.Int64) + seq * 10 + pl.col("_rand") % 10).cast(pl.String))
        .when(pl.col("_ch") == 3)
        .then(
            (pl.lit(6_900_000_000_000_000_000, pl.Int64) + seq * 100 + pl.col("_rand")).cast(
                pl.String
            )
        )
        .when(pl.col("_ch") == 4)
        .then(
            pl.concat_str(
                [
                    pl.lit("MP"),
                    pl.col("paid_at").dt.strftime("%Y%m%d"),
                    seq.cast(pl.String).str.zfill(9),
                ]
            )
        )
        .otherwise(
            pl.concat_str(
                [
                    pl.lit("S"),
                    pl.col("_store").cast(pl.String).str.zfill(3),
                    pl.lit("-"),
                    seq.cast(pl.String).str.zfill(9),
                ]
            )
        )
    )
    buyer_phone = _typed_phone(pl.col("_buyer_num").cast(pl.String), pl.col("_buyer_style"))
    placeholder_text = pl.Series(PLACEHOLDER_IDS).gather(frame["_placeholder"].to_numpy())
    return frame.with_columns(
        order_id=order_id,
        buyer_id=pl.when(pl.col("_is_placeholder"))
        .then(placeholder_text)
        .when(pl.col("buyer_id_type") == "phone")
        .then(buyer_phone)
        .otherwise(pl.col("buyer_id")),
        phone=pl.when(pl.col("_phone_num") > 0).then(
            _typed_phone(pl.col("_phone_num").cast(pl.String), pl.col("_phone_style"))
        ),
    ).sort("paid_at", "_seq")


_ORDER_COLUMNS = (
    "order_id",
    "source",
    "buyer_id_type",
    "buyer_id",
    "phone",
    "paid_at",
    "amount",
    "discount",
    "refund",
    "status",
    "category",
    "sku",
    "quantity",
)
_TRACE = ("_pid", "_buyer_pid", "_phone_pid")


def _sku(rng: np.random.Generator, cat: np.ndarray) -> pl.Series:
    style = rng.integers(1, 41, len(cat))
    variant = rng.integers(1, 5, len(cat))
    return pl.select(
        pl.concat_str(
            [
                pl.lit("SKU"),
                pl.Series(cat).cast(pl.String).str.zfill(2),
                pl.Series(style).cast(pl.String).str.zfill(3),
                pl.lit("-"),
                pl.Series(variant).cast(pl.String).str.zfill(2),
            ]
        )
    ).to_series()


def _split_orders(c: _Chunk, orders: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Online orders to CSV (text timestamps, dirty rows), store and mini-program orders to Parquet."""
    rng = c.rng
    parquet = orders.filter(pl.col("_ch") >= 4).select(*_ORDER_COLUMNS, *_TRACE)
    csv = orders.filter(pl.col("_ch") <= 3)
    n = csv.height
    iso = rng.random(n) < 0.03
    no_status = rng.random(n) < 0.01
    # Dirty rows: ~0.5%, every kind at least once, only from buyers with other orders.
    dirty = np.full(n, -1, dtype=np.int64)
    candidates = np.flatnonzero((csv["_n"].to_numpy() >= 2) & (csv["_buyer_pid"].to_numpy() >= 0))
    n_dirty = min(len(candidates), max(len(DIRTY_KINDS), round(0.005 * n)))
    picked = np.sort(rng.permutation(candidates)[:n_dirty])
    dirty[picked] = rng.permutation(n_dirty) % len(DIRTY_KINDS)
    kind = pl.col("_dirty")
    rejected = kind.is_between(0, 4)
    csv = csv.with_columns(_dirty=dirty, _iso=iso, _no_status=no_status).with_columns(
        order_id=pl.when(kind == 4).then(None).otherwise(pl.col("order_id")),
        paid_at=pl.when(kind == 3)
        .then(pl.lit("yesterday"))
        .otherwise(_text_timestamps(pl.col("paid_at"), pl.col("_iso"))),
        amount=pl.when(kind == 0).then(-pl.col("amount")).otherwise(pl.col("amount")),
        refund=pl.when(kind == 1).then(pl.col("amount") + 50).otherwise(pl.col("refund")),
        status=pl.when(kind == 2)
        .then(pl.lit("shipped?"))
        .when(pl.col("_no_status"))
        .then(None)
        .otherwise(pl.col("status")),
        phone=pl.when(kind == 5)
        .then(pl.lit(INVALID_PHONE))
        .when(rejected)
        .then(None)
        .otherwise(pl.col("phone")),
        _buyer_pid=pl.when(rejected).then(-1).otherwise(pl.col("_buyer_pid")),
        _phone_pid=pl.when(rejected | (kind == 5)).then(-1).otherwise(pl.col("_phone_pid")),
    )
    # The duplicate: the same (source, order_id) again at the end, now refunded (last write wins).
    again = csv.filter(kind == 6).with_columns(status=pl.lit("refunded"), refund=pl.col("amount"))
    csv = pl.concat([csv, again]).select(*_ORDER_COLUMNS, *_TRACE)
    return csv, parquet


def _events(c: _Chunk) -> pl.DataFrame:
    pop, rng = c.pop, c.rng
    loc, g, _ = c.rows(pop.n_events[c.lo : c.hi])
    k = len(loc)
    persona = pop.persona[g]
    cum = np.cumsum(_EVENT_MIX, axis=1)
    event = np.minimum((rng.random(k)[:, None] >= cum[persona]).sum(axis=1), len(EVENT_TYPES) - 1)
    interest = _pick_interest(rng, pop, g)
    cat = _pick_category(rng, interest, 0.08)
    day = c.cal.sample_days(
        rng, _CAT_INTEREST[cat] * 2 + (persona == HUNTER), pop.act_lo[g], pop.act_hi[g]
    )
    seconds = _seconds(rng, day, _EVENT_HOURS)
    no_cat = (event == _CHECKIN) | ((event == _COUPON) & (rng.random(k) < 0.5))
    no_item = no_cat | (event == _SEARCH)
    placeholder = rng.random(k) < 0.004
    block = np.where(rng.random(k) < 0.15, _B_UNIONID, _B_OPENID)
    serial = c.counters.events + np.arange(k, dtype=np.int64)
    c.counters.events += k
    style = rng.integers(1, 41, k)
    frame = pl.DataFrame(
        {
            "_pid": np.where(placeholder, -1, g).astype(np.int64),
            "_seq": serial,
            "user_id_type": pl.Series(_BLOCK_TYPE).gather(block),
            "user_id": c.id_of(block, loc),
            "ts": c.cal.timestamps(seconds),
            "event": pl.Series(EVENT_TYPES).gather(event),
            "category": pl.Series(CATEGORIES).gather(cat),
            "_cat": cat,
            "_style": style,
            "_no_cat": no_cat,
            "_no_item": no_item,
            "_placeholder": placeholder,
        }
    )
    search = np.flatnonzero(event == _SEARCH)
    query = (
        pl.repeat(None, k, dtype=pl.String, eager=True)
        .alias("query")
        .scatter(search, _texts()["query"].pick(rng, cat[search]))
    )
    placeholder_text = pl.Series(PLACEHOLDER_IDS).gather(rng.integers(0, len(PLACEHOLDER_IDS), k))
    frame = frame.with_columns(
        user_id=pl.when(pl.col("_placeholder")).then(placeholder_text).otherwise(pl.col("user_id")),
        category=pl.when(pl.col("_no_cat")).then(None).otherwise(pl.col("category")),
        item_id=pl.when(pl.col("_no_item"))
        .then(None)
        .otherwise(
            pl.concat_str(
                [
                    pl.lit("I"),
                    pl.col("_cat").cast(pl.String).str.zfill(2),
                    pl.col("_style").cast(pl.String).str.zfill(3),
                ]
            )
        ),
        query=query,
        event_id=pl.lit("ev") + pl.col("_seq").cast(pl.String).str.zfill(10),
    )
    # SDK retries: a few events arrive twice with the same event_id.
    frame = pl.concat([frame, frame.filter(pl.Series(rng.random(k) < 0.002))])
    return frame.sort("ts", "_seq").select(
        "user_id_type", "user_id", "ts", "event", "category", "item_id", "query", "event_id", "_pid"
    )


def _messages(c: _Chunk) -> pl.DataFrame:
    """WeCom archive rows (msgid, action, from, tolist, roomid, msgtime, msgtype, text) + `_pid`."""
    pop, rng = c.pop, c.rng
    loc, g, _ = c.rows(pop.n_msgs[c.lo : c.hi])
    k = len(loc)
    persona = pop.persona[g]
    hunter = persona == HUNTER
    cum = np.cumsum(_MESSAGE_MIX, axis=1)
    kind = np.minimum((rng.random(k)[:, None] >= cum[persona]).sum(axis=1), 6)
    interest = _pick_interest(rng, pop, g)
    topical = (kind == _Q) | (kind == _SHARE) | (kind == _ANSWER)
    interest = np.where((interest < 0) & topical, rng.integers(0, len(INTERESTS), k), interest)
    primary = pop.interests[g, 0].astype(np.int64)
    room_interest = np.where(topical, interest, primary)
    room = np.where(
        (kind == _DEAL) | (hunter & ~topical) | (room_interest < 0),
        _DEAL_ROOM,
        _ROOM_OF_INTEREST[np.maximum(room_interest, 0)],
    )
    day = c.cal.sample_days(rng, np.maximum(interest, 0) * 2 + hunter, pop.act_lo[g], pop.act_hi[g])
    seconds = _seconds(rng, day, _CHAT_HOURS)
    chat = _texts()["chat"]
    nick = pl.Series(_NICK_A).gather(rng.integers(0, len(_NICK_A), c.m)) + pl.Series(
        _NICK_B
    ).gather(rng.integers(0, len(_NICK_B), c.m))
    frame = pl.DataFrame(
        {
            "_loc": loc,
            "_seq": c.counters.messages + np.arange(k, dtype=np.int64),
            "_kind": kind,
            "_interest": interest,
            "_room": room,
            "_s": seconds,
            "_text": chat.pick(rng, _chat_key(kind, interest)),
        }
    ).sort("_s", "_seq")
    c.counters.messages += k

    # KOC replies: an answer goes to the latest question in its room, a few minutes to hours later.
    questions = frame.filter(pl.col("_kind") == _Q).select(
        "_room", "_s", _q_loc="_loc", _q_interest="_interest", _q_s="_s"
    )
    answers = frame.filter(pl.col("_kind") == _ANSWER).join_asof(
        questions, on="_s", by="_room", strategy="backward", check_sortedness=False
    )
    ok = answers["_q_loc"].is_not_null() & (answers["_q_loc"] != answers["_loc"])
    ok = ok.fill_null(False).to_numpy()
    na = answers.height
    q_loc = answers["_q_loc"].fill_null(0).to_numpy()
    reply = chat.pick(
        rng, _chat_key(np.full(na, _ANSWER), answers["_q_interest"].fill_null(0).to_numpy())
    )
    fallback = chat.pick(rng, _chat_key(np.full(na, _SHARE), answers["_interest"].to_numpy()))
    delay = rng.integers(60, 3 * 3600, na)
    last_second = c.cal.days * 86400 - 1
    answers = (
        answers.with_columns(
            _ok=ok,
            _text=pl.when(pl.Series(ok))
            .then(pl.lit("@") + nick.gather(q_loc) + pl.lit(" ") + reply)
            .otherwise(fallback),
            _s=pl.when(pl.Series(ok))
            .then(pl.min_horizontal(pl.col("_q_s") + pl.Series(delay), last_second))
            .otherwise(pl.col("_s")),
            _q_wecom=c.id_of(np.full(na, _B_WECOM), q_loc),
        )
        .with_columns(
            tolist=pl.when(pl.col("_ok")).then(pl.concat_list("_q_wecom")),
        )
        .select("_loc", "_seq", "_kind", "_interest", "_room", "_s", "_text", "tolist")
    )
    frame = pl.concat(
        [
            frame.filter(pl.col("_kind") != _ANSWER).with_columns(
                tolist=pl.lit(None, pl.List(pl.String))
            ),
            answers,
        ]
    ).with_columns(tolist=pl.col("tolist").fill_null(pl.lit([], pl.List(pl.String))))
    spoken = frame.filter(pl.col("_text").str.len_chars() > 0)
    if c.first and spoken.height:  # one message archived twice, byte for byte
        frame = pl.concat([frame, spoken.slice(int(rng.integers(spoken.height)), 1)])
    frame = frame.sort("_s", "_seq")
    loc_s = frame["_loc"].to_numpy()
    msgtime = (c.cal.start_s - 8 * 3600 + frame["_s"].to_numpy()) * 1000 + frame[
        "_seq"
    ].to_numpy() % 1000
    return frame.with_columns(
        msgtime=msgtime,
        _from=c.id_of(np.full(frame.height, _B_WECOM), loc_s),
        _roomid=pop.room_ids.gather(frame["_room"].to_numpy()),
        _pid=loc_s + c.lo,
    ).select(
        msgid=(pl.lit(10**16, pl.Int64) + pl.col("_seq")).cast(pl.String)
        + pl.lit("_")
        + pl.col("msgtime").cast(pl.String),
        action=pl.lit("send"),
        **{"from": pl.col("_from")},
        tolist=pl.col("tolist"),
        roomid=pl.col("_roomid"),
        msgtime=pl.col("msgtime"),
        msgtype=pl.lit("text"),
        text=pl.struct(content=pl.col("_text")),
        _pid=pl.col("_pid"),
    )


def _identities(c: _Chunk, mp_phone_seen: np.ndarray) -> pl.DataFrame:
    """Links observed by the brand's systems, each row `_pid_a`, `_pid_b` (-1 for a trap id)."""
    pop, rng, m = c.pop, c.rng, c.m
    sl = slice(c.lo, c.hi)
    everyone = np.arange(m)
    has_mp, has_wecom, has_member = pop.has_mp[sl], pop.has_wecom[sl], pop.has_member[sl]
    parts: list[pl.DataFrame] = []

    def link(
        who: np.ndarray, block_a: int, block_b: int, source: str, trap_b: np.ndarray | None = None
    ) -> None:
        """Rows linking `block_a` to `block_b` for the local people `who` (phone block: typed phone)."""
        n = len(who)
        trap = np.zeros(n, dtype=bool) if trap_b is None else trap_b
        phone_b = np.where(trap, TEST_PHONE, pop.phone[who + c.lo])
        b_text = (
            pl.select(
                _typed_phone(pl.Series(phone_b).cast(pl.String), pl.Series(_phone_styles(rng, n)))
            ).to_series()
            if block_b == _B_PHONE
            else c.id_of(np.full(n, block_b), who)
        )
        day = pop.act_lo[who + c.lo] + (
            rng.random(n) * (pop.act_hi[who + c.lo] - pop.act_lo[who + c.lo])
        ).astype(np.int64)
        parts.append(
            pl.DataFrame(
                {
                    "id_type_a": np.full(n, _BLOCK_TYPE[block_a]),
                    "id_a": c.id_of(np.full(n, block_a), who),
                    "id_type_b": np.full(n, _BLOCK_TYPE[block_b]),
                    "id_b": b_text,
                    "source": np.full(n, source),
                    "_ts": c.cal.timestamps(day * 86400 + rng.integers(7 * 3600, 23 * 3600, n)),
                    "_pid_a": who + c.lo,
                    "_pid_b": np.where(trap, -1, who + c.lo),
                }
            )
        )

    mp = everyone[has_mp]
    link(mp, _B_UNIONID, _B_OPENID, "miniprogram_login")
    link(mp[rng.random(len(mp)) < 0.08], _B_UNIONID, _B_OPENID, "miniprogram_login")  # seen again
    link(everyone[has_wecom], _B_UNIONID, _B_WECOM, "wecom")
    members = everyone[has_member]
    link(members, _B_MEMBER, _B_PHONE, "loyalty", trap_b=rng.random(len(members)) < 0.015)
    binding = has_member & (pop.n_taobao[sl] > 0) & (rng.random(m) < 0.7)
    link(everyone[binding], _B_TAOBAO, _B_MEMBER, "tmall_member_binding")
    bridge = pop.bridged[sl] & ~mp_phone_seen
    link(everyone[bridge & has_mp], _B_OPENID, _B_PHONE, "miniprogram_phone_auth")
    link(everyone[bridge & ~has_mp & has_wecom], _B_WECOM, _B_PHONE, "wecom_remark")
    frame = pl.concat(parts)
    # Trap: mini-program logins before the SDK knew the openid.
    trap = frame.filter(
        (pl.col("source") == "miniprogram_login") & pl.Series(rng.random(frame.height) < 0.006)
    )
    trap = trap.with_columns(
        id_b=pl.Series(PLACEHOLDER_IDS).gather(rng.integers(0, len(PLACEHOLDER_IDS), trap.height)),
        _pid_b=pl.lit(-1, pl.Int64),
    )
    frame = pl.concat([frame, trap]).sort("_ts", "_pid_a", "source", "id_b")
    n = frame.height
    iso, missing = rng.random(n) < 0.05, rng.random(n) < 0.03
    return frame.with_columns(
        observed_at=pl.when(pl.Series(missing))
        .then(None)
        .otherwise(_text_timestamps(pl.col("_ts"), pl.Series(iso)))
    ).select("id_type_a", "id_a", "id_type_b", "id_b", "source", "observed_at", "_pid_a", "_pid_b")


def _consent(c: _Chunk) -> tuple[pl.DataFrame, np.ndarray]:
    """~3% opt out (by phone or unionid); a quarter of them opt in again later. Returns final opt-outs."""
    pop, rng, m = c.pop, c.rng, c.m
    sl = slice(c.lo, c.hi)
    wechat = pop.has_mp[sl] | pop.has_wecom[sl]
    phone_known = pop.has_member[sl] | (pop.bridged[sl] & wechat)
    opt = (rng.random(m) < 0.035) & (wechat | phone_known)
    by_phone = phone_known & (~wechat | (rng.random(m) < 0.45))
    day_out = pop.act_lo[sl] + (rng.random(m) * (pop.act_hi[sl] - pop.act_lo[sl])).astype(np.int64)
    back = opt & (rng.random(m) < 0.25) & (day_out < c.cal.days - 1)
    day_in = day_out + 1 + (rng.random(m) * (c.cal.days - 1 - day_out)).astype(np.int64)
    who = np.concatenate([np.flatnonzero(opt), np.flatnonzero(back)])
    status = np.array(["opt_out"] * int(opt.sum()) + ["opt_in"] * int(back.sum()), dtype=str)
    day = np.concatenate([day_out[opt], day_in[back]])
    n = len(who)
    phone = by_phone[who]
    typed = pl.select(
        _typed_phone(
            pl.Series(pop.phone[who + c.lo]).cast(pl.String), pl.Series(_phone_styles(rng, n))
        )
    ).to_series()
    frame = pl.DataFrame(
        {
            "id_type": np.where(phone, "phone", "unionid"),
            "id": pl.select(
                pl.when(pl.Series(phone))
                .then(typed)
                .otherwise(c.id_of(np.full(n, _B_UNIONID), who))
            ).to_series(),
            "status": status,
            "_ts": c.cal.timestamps(day * 86400 + rng.integers(8 * 3600, 22 * 3600, n)),
            "_pid": who + c.lo,
        }
    ).sort("_ts", "_pid")
    frame = frame.with_columns(
        updated_at=_text_timestamps(pl.col("_ts"), pl.Series(rng.random(n) < 0.05))
    )
    return frame.select("id_type", "id", "status", "updated_at", "_pid"), opt & ~back


def _identifiers(
    c: _Chunk,
    orders: list[pl.DataFrame],
    events: pl.DataFrame,
    messages: pl.DataFrame,
    identities: pl.DataFrame,
    consent: pl.DataFrame,
) -> pl.DataFrame:
    """Truth: every (person, id_type, id) a real person shows in the chunk's rows; phones hashed."""
    pid, t, i = pl.col("pid"), pl.col("id_type"), pl.col("id")
    long = [
        *(
            o.select(
                pid=pl.col("_buyer_pid"), id_type=pl.col("buyer_id_type"), id=pl.col("buyer_id")
            )
            for o in orders
        ),
        *(
            o.select(pid=pl.col("_phone_pid"), id_type=pl.lit("phone"), id=pl.lit(""))
            for o in orders
        ),
        events.select(pid=pl.col("_pid"), id_type=pl.col("user_id_type"), id=pl.col("user_id")),
        messages.select(
            pid=pl.col("_pid"), id_type=pl.lit("wecom_external_userid"), id=pl.col("from")
        ),
        identities.select(pid=pl.col("_pid_a"), id_type=pl.col("id_type_a"), id=pl.col("id_a")),
        identities.select(pid=pl.col("_pid_b"), id_type=pl.col("id_type_b"), id=pl.col("id_b")),
        consent.select(pid=pl.col("_pid"), id_type=pl.col("id_type"), id=pl.col("id")),
    ]
    seen = pl.concat(long).filter(pid >= 0).unique(["pid", "id_type", "id"])
    others = seen.filter(t != "phone")
    phones = seen.filter(t == "phone").select("pid").unique()
    phones = phones.with_columns(
        id_type=pl.lit("phone_sha256"),
        id=sha256_hex(pl.lit(pl.Series(c.pop.phone[phones["pid"].to_numpy()]).cast(pl.String))),
    )
    ids = pl.concat([others, phones]).sort("pid", "id_type", "id")
    return ids.select(person_id=_person_ids(ids["pid"].to_numpy(), c.pop.n), id_type=t, id=i)


# ---------------------------------------------------------------------------------------------
# Writing: every file is appended chunk by chunk into a temporary file, renamed at the end


class _Sink(contextlib.ExitStack):
    def __init__(self, out_dir: Path) -> None:
        super().__init__()
        self.out_dir = out_dir
        self._files: dict[str, IO[bytes]] = {}
        self._parquet: dict[str, pq.ParquetWriter] = {}

    def _open(self, rel: str) -> IO[bytes]:
        if rel not in self._files:
            tmp = self.enter_context(atomic_path(self.out_dir / rel))
            self._files[rel] = self.enter_context(tmp.open("wb"))
        return self._files[rel]

    def csv(self, rel: str, df: pl.DataFrame) -> None:
        header = rel not in self._files
        df.write_csv(self._open(rel), include_header=header, float_precision=2)

    def jsonl(self, rel: str, df: pl.DataFrame) -> None:
        df.write_ndjson(self._open(rel))

    def parquet(self, rel: str, df: pl.DataFrame) -> None:
        table = df.to_arrow()
        if rel not in self._parquet:
            writer = pq.ParquetWriter(self._open(rel), table.schema, compression="zstd")
            self._parquet[rel] = writer
            self.callback(writer.close)
        self._parquet[rel].write_table(table.cast(self._parquet[rel].schema))
