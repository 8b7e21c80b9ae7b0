"""Identifier kinds and encoders: how each kind of id is normalised, validated and hashed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from segments.contract import HASHED_ID_PREFIX, md5_hex, sha256_hex

# ---------------------------------------------------------------------------------------------
# Identifier kinds: how a value is normalised and when it is rejected


@dataclass(frozen=True)
class IdKind:
    """How one kind of identifier is normalised and validated before it is encoded."""

    name: str
    normalise: Callable[[pl.Expr], pl.Expr]
    pattern: str  # the normalised value must match this (Rust regex)
    problem: str  # the invalid reason when it does not
    placeholder: str | None = None  # normalised values matching this are "not a real id"


def _strip(e: pl.Expr) -> pl.Expr:
    return e.str.strip_chars()


def _lower(e: pl.Expr) -> pl.Expr:
    return e.str.strip_chars().str.to_lowercase()


def _idfa(e: pl.Expr) -> pl.Expr:
    """Uppercase; a 32-hex IDFA without hyphens gets them back in UUID positions."""
    v = e.str.strip_chars().str.to_uppercase()
    hyphenated = pl.concat_str(
        [
            v.str.slice(0, 8),
            v.str.slice(8, 4),
            v.str.slice(12, 4),
            v.str.slice(16, 4),
            v.str.slice(20, 12),
        ],
        separator="-",
    )
    return pl.when(v.str.contains(r"^[0-9A-F]{32}$")).then(hyphenated).otherwise(v)


def _mac(e: pl.Expr) -> pl.Expr:
    """Tencent's legacy MAC rule: drop ':' and '-', UPPERCASE."""
    return e.str.strip_chars().str.replace_all(r"[:-]", "").str.to_uppercase()


# the kinds exported as the platform's own id, as given (`as_is`)
RAW_KINDS = ("wechat", "taobao")

ID_KINDS: dict[str, IdKind] = {
    k.name: k
    for k in (
        IdKind("md5", _lower, r"^[0-9a-f]{32}$", "not a 32-character hex MD5"),
        IdKind("sha256", _lower, r"^[0-9a-f]{64}$", "not a 64-character hex SHA-256"),
        IdKind(
            "imei",
            _lower,
            r"^[0-9a-f]{14,15}$",
            "not a 14/15-character IMEI or MEID",
            placeholder=r"^0+$",
        ),
        IdKind(
            "idfa",
            _idfa,
            r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$",
            "not an IDFA (8-4-4-4-12 hex)",
            placeholder=r"^[0-]+$",
        ),
        IdKind(
            "oaid",
            _strip,
            r"^[0-9A-Za-z][0-9A-Za-z-]{7,99}$",
            "not an OAID (8 to 100 letters, digits and hyphens)",
            placeholder=r"^[0-]+$",
        ),
        # No exporter reads MACs (not a contract id type); kept for Tencent's HASH_MAC rule.
        IdKind("mac", _mac, r"^[0-9A-F]{12}$", "not a MAC address (12 hex digits)"),
        IdKind(
            "wechat",
            _strip,
            r"^[0-9A-Za-z_-]{10,64}$",
            "not a WeChat id (10 to 64 letters, digits, '_' and '-')",
        ),
        IdKind(
            "taobao",
            _strip,
            r"^[^\s\p{Cc},;\"']{1,128}$",
            "not a Taobao id (1 to 128 characters, no spaces, commas or quotes)",
        ),
    )
}


def normalise_id(raw: str | pl.Expr, kind: str) -> pl.Expr:
    """The value of `raw` in the canonical form of `kind` (not yet validated).

    md5/sha256/imei: trimmed, lowercase. idfa: trimmed, UPPERCASE, hyphens kept (added when a
    32-hex IDFA has none). mac: ':' and '-' dropped, UPPERCASE. oaid, wechat, taobao: trimmed
    only (case is part of the id).

    >>> pl.select(normalise_id(pl.lit(" ff1999cd71774937a47474937a102630"), "idfa")).item()
    'FF1999CD-7177-4937-A474-74937A102630'
    """
    expr = pl.col(raw) if isinstance(raw, str) else raw
    return ID_KINDS[kind].normalise(expr)


def invalid_reason(raw: str | pl.Expr, kind: str, missing: str = "missing value") -> pl.Expr:
    """Why `raw` cannot be exported as a `kind` identifier; null when it can.

    >>> pl.select(invalid_reason(pl.lit("00000000-0000-0000-0000-000000000000"), "idfa")).item()
    'placeholder idfa (all zeros)'
    """
    expr = pl.col(raw) if isinstance(raw, str) else raw
    k = ID_KINDS[kind]
    value = k.normalise(expr)
    chain = pl.when(expr.is_null() | expr.str.strip_chars().eq("")).then(pl.lit(missing))
    if kind in RAW_KINDS:  # an id that held a phone is stored hashed: not the platform's id
        chain = chain.when(value.str.starts_with(HASHED_ID_PREFIX)).then(
            pl.lit(f"held a phone number, stored hashed: not a {k.name} id")
        )
    if k.placeholder is not None:
        chain = chain.when(value.str.contains(k.placeholder)).then(
            pl.lit(f"placeholder {k.name} (all zeros)")
        )
    return chain.when(~value.str.contains(k.pattern)).then(pl.lit(k.problem)).otherwise(None)


# ---------------------------------------------------------------------------------------------
# Encoders (applied to normalised, valid values). All hex output is lowercase.


def as_is(e: pl.Expr) -> pl.Expr:
    """The normalised value itself (raw ids such as unionid, or ids hashed upstream)."""
    return e


def lowercase(e: pl.Expr) -> pl.Expr:
    """Lowercase (Meta MADID: lowercase, hyphens kept, not hashed)."""
    return e.str.to_lowercase()


def md5(e: pl.Expr) -> pl.Expr:
    """Lowercase hex MD5 of the UTF-8 value.

    With the kinds' normalisation this is Tencent's rule for every device id: IMEI lowercase,
    IDFA UPPERCASE with hyphens, OAID exactly as given.
    """
    return md5_hex(e)


def sha256(e: pl.Expr) -> pl.Expr:
    """Lowercase hex SHA-256 of the UTF-8 value."""
    return sha256_hex(e)


def md5_sha256(e: pl.Expr) -> pl.Expr:
    """Tencent MD5_SHA256_*: SHA-256 of the lowercase hex MD5 of the normalised value."""
    return sha256_hex(md5_hex(e))


def sha256_lower(e: pl.Expr) -> pl.Expr:
    """SHA-256 of the lowercased value (TikTok MAID, lowercase variant)."""
    return sha256_hex(e.str.to_lowercase())


def sha256_upper(e: pl.Expr) -> pl.Expr:
    """SHA-256 of the uppercased value (TikTok MAID, uppercase variant)."""
    return sha256_hex(e.str.to_uppercase())
