"""The names the engine knows: identifier types, order sources and statuses, event names, consent
statuses and the default interests. Pure data with no imports, so settings can use it without
loading polars (`segments.contract` re-exports all of it beside the table schemas)."""

from __future__ import annotations

# Identifier types the engine knows, and which side of the business each belongs to.
COMMERCE_ID_TYPES = ("taobao_ouid", "taobao_nick", "jd_pin", "douyin_openid", "member_id")
WECHAT_ID_TYPES = ("unionid", "openid", "wecom_external_userid")
PHONE_ID_TYPES = ("phone", "phone_md5", "phone_sha256")
DEVICE_ID_TYPES = ("oaid", "idfa", "imei")
ID_TYPES = COMMERCE_ID_TYPES + WECHAT_ID_TYPES + PHONE_ID_TYPES + DEVICE_ID_TYPES

ORDER_SOURCES = ("tmall", "taobao", "jd", "douyin", "miniprogram", "store")
ORDER_STATUSES = ("paid", "refunded", "cancelled")
KNOWN_EVENTS = (
    "view",
    "search",
    "add_cart",
    "favorite",
    "share",
    "coupon_claim",
    "checkin",
    "live_view",
)
CONSENT_STATUSES = ("opt_out", "opt_in")

# The contract's default taxonomy: interest -> Chinese label (categories and keywords live in
# configs/taxonomy.toml). The tag registry and the clusterer's defaults are built from it.
DEFAULT_INTERESTS: dict[str, str] = {
    "camping": "露营",
    "hiking": "徒步登山",
    "trail_running": "越野跑",
    "cycling": "骑行",
    "fishing": "钓鱼",
    "skiing": "滑雪",
    "water_sports": "水上运动",
    "climbing": "攀岩",
    "outdoor_cooking": "户外厨房",
    "city_outdoor": "城市轻户外",
    "family_outdoor": "亲子户外",
}
