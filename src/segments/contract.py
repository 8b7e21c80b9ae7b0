"""The input contract: table columns and types, identifier types, and phone normalisation.

Every reader and adapter ends in these canonical shapes; every stage starts from them.
After ingest (`segments.ingest`) the tables hold these columns with these Polars dtypes:

orders     order_id, source, buyer_id_type, buyer_id, phone_sha256, paid_at, amount,
           discount, refund, status, category, sku, quantity
events     user_id_type, user_id, ts, event, category, item_id, query, event_id
messages   msg_id, sender_id_type, sender_id, room_id, ts, text, reply_to_msg_id, mentions
identities id_type_a, id_a, id_type_b, id_b, source, observed_at
consent    id_type, id, status, updated_at

Timestamps are naive `pl.Datetime("us")` in local wall-clock time (Asia/Shanghai by
default); offsets in the input are converted to local time. Raw phones never survive
ingest: a `phone` identifier becomes `("phone_sha256", sha256 of the 11 digits)`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import polars as pl
import polars_hash  # noqa: F401  (registers the .chash and .nchash expression namespaces)

from segments.names import (  # noqa: F401  (the contract's vocabulary, re-exported)
    COMMERCE_ID_TYPES,
    CONSENT_STATUSES,
    DEFAULT_INTERESTS,
    DEVICE_ID_TYPES,
    ID_TYPES,
    KNOWN_EVENTS,
    ORDER_SOURCES,
    ORDER_STATUSES,
    PHONE_ID_TYPES,
    WECHAT_ID_TYPES,
)

TIMESTAMP = pl.Datetime("us")

# Kinds of column: how a raw string is parsed and checked.
STR, FLOAT, INT, TS, LIST = "str", "float", "int", "timestamp", "list"


@dataclass(frozen=True)
class Column:
    name: str
    kind: str = STR
    required: bool = False
    default: object = None
    allowed: tuple[str, ...] | None = None  # closed vocabulary, checked after lower-casing
    non_negative: bool = False
    # an open vocabulary matched case-insensitively: kept lower-cased (`VIEW` is `view`)
    lower: bool = False

    @property
    def dtype(self) -> pl.DataType:
        return {
            STR: pl.String(),
            FLOAT: pl.Float64(),
            INT: pl.Int64(),
            TS: TIMESTAMP,
            LIST: pl.List(pl.String()),
        }[self.kind]


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    # Columns whose equal values make two rows one record (the last one read wins).
    dedup_key: tuple[str, ...] = ()
    # The timestamp column that decides which week a row belongs to.
    time_column: str | None = None
    # (id_type column, id column) pairs holding identifiers.
    id_columns: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def schema(self) -> dict[str, pl.DataType]:
        """The canonical schema after ingest (raw `phone` replaced by `phone_sha256`)."""
        out: dict[str, pl.DataType] = {}
        for c in self.columns:
            if c.name == "phone":
                out["phone_sha256"] = pl.String()
            else:
                out[c.name] = c.dtype
        return out


ORDERS = Table(
    "orders",
    (
        Column("order_id", required=True),
        Column("source", required=True, allowed=ORDER_SOURCES),
        Column("buyer_id_type", required=True, allowed=ID_TYPES),
        Column("buyer_id", required=True),
        Column("phone"),
        Column("paid_at", TS, required=True),
        Column("amount", FLOAT, required=True, non_negative=True),
        Column("discount", FLOAT, default=0.0, non_negative=True),
        Column("refund", FLOAT, default=0.0, non_negative=True),
        Column("status", default="paid", allowed=ORDER_STATUSES),
        Column("category"),
        Column("sku"),
        Column("quantity", INT, default=1, non_negative=True),
    ),
    dedup_key=("source", "order_id"),
    time_column="paid_at",
    id_columns=(("buyer_id_type", "buyer_id"),),
)

EVENTS = Table(
    "events",
    (
        Column("user_id_type", required=True, allowed=ID_TYPES),
        Column("user_id", required=True),
        Column("ts", TS, required=True),
        Column("event", required=True, lower=True),
        Column("category"),
        Column("item_id"),
        Column("query"),
        Column("event_id"),
    ),
    dedup_key=("event_id",),
    time_column="ts",
    id_columns=(("user_id_type", "user_id"),),
)

MESSAGES = Table(
    "messages",
    (
        Column("msg_id", required=True),
        Column("sender_id_type", default="wecom_external_userid", allowed=ID_TYPES),
        Column("sender_id", required=True),
        Column("room_id"),
        Column("ts", TS, required=True),
        Column("text", default=""),
        Column("reply_to_msg_id"),
        Column("mentions", LIST),
    ),
    dedup_key=("msg_id",),
    time_column="ts",
    id_columns=(("sender_id_type", "sender_id"),),
)

IDENTITIES = Table(
    "identities",
    (
        Column("id_type_a", required=True, allowed=ID_TYPES),
        Column("id_a", required=True),
        Column("id_type_b", required=True, allowed=ID_TYPES),
        Column("id_b", required=True),
        Column("source"),
        Column("observed_at", TS),
    ),
    time_column="observed_at",
    id_columns=(("id_type_a", "id_a"), ("id_type_b", "id_b")),
)

CONSENT = Table(
    "consent",
    (
        Column("id_type", required=True, allowed=ID_TYPES),
        Column("id", required=True),
        Column("status", required=True, allowed=CONSENT_STATUSES),
        Column("updated_at", TS),
    ),
    time_column="updated_at",
    id_columns=(("id_type", "id"),),
)

TABLES: dict[str, Table] = {t.name: t for t in (ORDERS, EVENTS, MESSAGES, IDENTITIES, CONSENT)}


# ---------------------------------------------------------------------------------------------
# Phones


def normalize_phone(raw: str | pl.Expr | pl.Series) -> pl.Expr:
    """The 11-digit mainland mobile number in `raw`, or null when it is not one.

    Full-width digits (`１３８…`) count as digits and every other character is dropped; then a
    leading `0086` or `86` goes when 13 digits remain (15 for 0086), and only `1[3-9]` followed
    by 9 digits is accepted.

    >>> pl.select(normalize_phone(pl.lit("+86 138-1234-5678"))).item()
    '13812345678'
    """
    return _mobile(_digits(_as_expr(raw)))


def _as_expr(raw: str | pl.Expr | pl.Series) -> pl.Expr:
    if isinstance(raw, pl.Series):
        return pl.lit(raw)
    return pl.col(raw) if isinstance(raw, str) else raw


FULL_WIDTH_DIGITS = "０１２３４５６７８９"  # U+FF10..U+FF19, what Chinese input methods type


def _digits(expr: pl.Expr) -> pl.Expr:
    """The ASCII digits of a phone as typed: full-width digits are the same digits; every other
    character (other scripts' digits too) is dropped."""
    ascii_digits = expr.str.replace_many(list(FULL_WIDTH_DIGITS), list("0123456789"))
    return ascii_digits.str.replace_all(r"[^0-9]+", "")


def _mobile(digits: pl.Expr) -> pl.Expr:
    # One regex, each input read once: a chain of when/then over the digits evaluated them
    # once per branch (10x slower on a million links).
    return digits.str.extract(r"^(?:0086|86)?(1[3-9][0-9]{9})$", 1)


# What may separate a mobile number's digits as people type it: spaces, hyphens and dashes
# (ASCII, full-width, en and em), dots and slashes (ASCII or full-width), underscores and
# parentheses (ASCII or full-width). Every such form `normalize_phone` reads as a phone is
# masked wherever raw text is kept or shown.
PHONE_SEPARATORS = r"[\s\-－–—.．/／_()（）]"
_S = PHONE_SEPARATORS
_D = "0-9０-９"  # a digit, ASCII or full-width
_COUNTRY = rf"(?:[+＋]?(?:[0０]{{2}})?[8８]{_S}*[6６]{_S}*)?"
# a mobile number inside text (Python `re`: a digit before or after it is another number)
PHONE_LIKE = re.compile(rf"(?<![{_D}]){_COUNTRY}[1１]{_S}*[3-9３-９](?:{_S}*[{_D}]){{9}}(?![{_D}])")
# the same, for polars' regex, which has no look-around: with what precedes and follows it
PHONE_IN_TEXT = rf"(^|[^{_D}])({_COUNTRY}[1１]{_S}*[3-9３-９](?:{_S}*[{_D}]){{9}})([^{_D}]|$)"

# An identifier (of any type but a phone's, which is hashed as a phone) or a record key that
# holds a mobile number is stored as a prefix and the SHA-256 of the value as written, cut to
# 64 characters: `member_id` 13812345678 becomes `sha256-38ae…`. Equal values stay equal, so
# links, joins and deduplication read the same, and no raw phone is stored. Its type's
# pattern (`[identity] patterns`) is checked at ingest on the value as written; a value that
# fails it, and a value given with one of the two prefixes (they are the engine's), is stored
# with `REFUSED_ID_PREFIX`, which the identity guard refuses as it refused the raw value. A
# device id (IMEI, IDFA, OAID) is kept as given when it matches its type's pattern, since it
# cannot then hold a phone. A lookup by the raw value hashes it the same way (`stored_id`).
HASHED_ID_PREFIX = "sha256-"
REFUSED_ID_PREFIX = "sha256~"
_HASHED_ID_HEX = 64 - len(HASHED_ID_PREFIX)


def _hashed(prefix: str, ident: pl.Expr) -> pl.Expr:
    return pl.lit(prefix) + sha256_hex(ident).str.slice(0, _HASHED_ID_HEX)


# a superset of PHONE_IN_TEXT without its boundaries: a third cheaper to run over every id,
# so the full pattern reads only the few values that pass it
_PHONE_RUN = rf"[1１]{_S}*[3-9３-９](?:{_S}*[{_D}]){{9}}"


def holds_phone(ident: pl.Expr) -> pl.Expr:
    """True where the text holds a mobile number (`PHONE_IN_TEXT`), false elsewhere."""
    maybe = ident.str.contains(_PHONE_RUN)
    return pl.when(maybe).then(ident).str.contains(PHONE_IN_TEXT).fill_null(False)


def _hash_where(holds: pl.Expr, ident: pl.Expr) -> pl.Expr:
    hashed = _hashed(HASHED_ID_PREFIX, pl.when(holds).then(ident))
    return pl.when(holds).then(hashed).otherwise(ident)


def _engine_form(ident: pl.Expr) -> pl.Expr:
    return ident.str.starts_with(HASHED_ID_PREFIX) | ident.str.starts_with(REFUSED_ID_PREFIX)


def hide_phone(ident: pl.Expr) -> pl.Expr:
    """A record key as stored: hashed where it holds a mobile number (only its equality is
    read, so no pattern applies)."""
    holds = holds_phone(ident)
    return _hash_where(holds, ident)


def hide_phone_id(
    id_type: pl.Expr, ident: pl.Expr, patterns: dict[str, str] | None = None
) -> pl.Expr:
    """An identifier as stored (see above). Without `patterns` (a lookup, an older map read
    again) no pattern is checked and a value already in the engine's form stays as it is."""
    phone_typed = id_type.is_in(PHONE_ID_TYPES).fill_null(False)
    device = id_type.is_in(DEVICE_ID_TYPES).fill_null(False)
    holds = holds_phone(ident) & ~phone_typed
    if patterns is None:
        return _hash_where(holds & ~device & ~_engine_form(ident), ident)
    # the patterns are read only on the rows that hold a phone or carry the engine's prefix,
    # each row with its own type's pattern (null: a type with none, which nothing fails)
    engine = _engine_form(ident) & ~phone_typed
    suspect = holds | engine
    checked = {t: p for t, p in patterns.items() if t not in PHONE_ID_TYPES}
    pattern = pl.when(suspect).then(
        id_type.cast(pl.String).replace_strict(checked, default=None, return_dtype=pl.String)
    )
    fails = (~pl.when(suspect).then(ident).str.contains(pattern)).fill_null(False)
    refused = engine | (holds & fails)
    hashed = holds & ~device
    digest_of = pl.when(refused | hashed).then(ident)
    return (
        pl.when(refused)
        .then(_hashed(REFUSED_ID_PREFIX, digest_of))
        .when(hashed)
        .then(_hashed(HASHED_ID_PREFIX, digest_of))
        .otherwise(ident)
    )


def stored_id(id_type: str, value: str) -> str:
    """What the identity map holds for the identifier (`id_type`, `value`) as the input gives
    it (a `phone` excepted: it is hashed as a phone)."""
    return pl.select(hide_phone_id(pl.lit(id_type), pl.lit(value, pl.String))).item()


def id_forms(id_type: str, value: str) -> list[str]:
    """The forms a map may hold the identifier (`id_type`, `value`) in, to look up in turn: its
    stored form, then the value as given (a map or live table written before 2026-12-07 holds
    an id that holds a phone raw). A `phone` or a one_id is not an input of this."""
    return list(dict.fromkeys([stored_id(id_type, value), value]))


def mask_value(value: str | None, is_phone: bool) -> str | None:
    """What a reject row or a message may show of a raw value: never a phone's digits (a
    phone column keeps its first three; elsewhere a mobile number inside becomes `<phone>`)."""
    if value is None:
        return None
    if is_phone:
        seen = 0
        out = []
        for ch in value:
            if ch.isdigit():
                seen += 1
                out.append(ch if seen <= 3 else "*")
            else:
                out.append(ch)
        return "".join(out)[:200]
    return PHONE_LIKE.sub("<phone>", value)[:200]


def one_line(text: str) -> str:
    """A name or value as a message shows it: one line, a mobile number masked (a file without
    its header row has data, phones among it, where the names should be)."""
    return mask_value(" ".join(text.split()), is_phone=False) or ""


def phone_invalid_reason(raw: str | pl.Expr | pl.Series) -> pl.Expr:
    """Why `raw` is not a valid mobile number (null when it is)."""
    digits = _digits(_as_expr(raw))
    return (
        pl.when(_mobile(digits).is_not_null())
        .then(None)
        .when(digits.str.len_chars().eq(0))
        .then(pl.lit("phone has no digits"))
        .otherwise(pl.lit("phone is not an 11-digit mainland mobile number (1[3-9]xxxxxxxxx)"))
    )


def sha256_hex(expr: pl.Expr) -> pl.Expr:
    """Lowercase hex SHA-256 of the UTF-8 string (null stays null)."""
    return expr.chash.sha2_256()


def md5_hex(expr: pl.Expr) -> pl.Expr:
    """Lowercase hex MD5 of the UTF-8 string (null stays null)."""
    return expr.nchash.md5()


def phone_hash_columns(cn11: pl.Expr) -> list[pl.Expr]:
    """Every hash of an 11-digit number that an ad platform may ask for.

    Ingest keeps these in `identity/phone_hashes.parquet`, keyed by `phone_sha256`, so that
    exporters can produce each platform's form without the digits ever being written:

    - `phone_sha256`: sha256("13800138000")  (the engine's own key; Tencent, Ocean Engine, Alibaba)
    - `phone_md5`: md5("13800138000")  (Tencent HASH_MOBILE_PHONE, Alibaba, Qianchuan)
    - `phone_cc_sha256`: sha256("8613800138000")  (Meta, TikTok's August-2025 rule)
    - `phone_e164_sha256`: sha256("+8613800138000")  (Google, TikTok's June-2025 rule)
    """
    return [
        sha256_hex(cn11).alias("phone_sha256"),
        md5_hex(cn11).alias("phone_md5"),
        sha256_hex(pl.lit("86") + cn11).alias("phone_cc_sha256"),
        sha256_hex(pl.lit("+86") + cn11).alias("phone_e164_sha256"),
    ]
