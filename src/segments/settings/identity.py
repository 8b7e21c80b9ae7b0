"""Settings of OneID (`[identity]`): which identifiers count and the guards against false merges.

The validators that need polars (regex syntax as polars reads it, phone normalisation) import
it when they run, so loading settings stays light."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from segments.names import ID_TYPES

# Node types, sorted so that the Enum's physical order is the lexical order of the names: then
# sorting nodes by (id_type, id) sorts them by the key `id_type + ":" + id` (type names hold only
# [a-z_], all above ':'), and the smallest node id of a component is its smallest key.
NODE_TYPES: tuple[str, ...] = tuple(sorted(ID_TYPES))


DEFAULT_BLOCKED_VALUES = (
    "",
    "0",
    "null",
    "undefined",
    "none",
    "nan",
    "-",
    "unknown",
    "n/a",
    "test",
    # all-zero device advertising ids (limit-ad-tracking on iOS, OAID off on Android)
    "00000000-0000-0000-0000-000000000000",
    "00000000000000000000000000000000",
    "000000000000000",
)


# Numbers typed into checkout and sign-up forms when a person will not give theirs.
DEFAULT_BLOCKED_PHONES = (
    "13800000000",
    "13900000000",
    "18888888888",
    "13800138000",
    "13888888888",
    "13999999999",
    "13000000000",
    "18000000000",
    "18800000000",
    "15000000000",
    "13333333333",
    "15555555555",
    "17777777777",
    "19999999999",
)


DEFAULT_PATTERNS = {
    "phone_sha256": r"^[0-9a-f]{64}$",
    "phone_md5": r"^[0-9a-f]{32}$",
    "wecom_external_userid": r"^w[mo][A-Za-z0-9_-]{10,}$",
    "unionid": r"^[A-Za-z0-9_-]{6,64}$",
    "openid": r"^[A-Za-z0-9_-]{6,64}$",
    "taobao_ouid": r"^[A-Za-z0-9_+/=-]{4,128}$",
    "jd_pin": r"^\S{2,128}$",
    "douyin_openid": r"^[A-Za-z0-9_.:+/=-]{6,128}$",
    "member_id": r"^[A-Za-z0-9_-]{1,64}$",
    "oaid": r"^[A-Za-z0-9-]{16,64}$",
    "idfa": r"^([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}|[0-9a-f]{32}|[0-9a-f]{64})$",
    "imei": r"^([0-9]{14,16}|[0-9a-f]{32}|[0-9a-f]{64})$",
}


DEFAULT_MAX_PER_PERSON = {
    "member_id": 1,
    "unionid": 1,
    "phone_sha256": 3,
    "phone_md5": 3,
    "taobao_ouid": 5,
    "jd_pin": 3,
    "douyin_openid": 3,
    "openid": 5,
    "wecom_external_userid": 3,
    "oaid": 5,
    "idfa": 5,
    "imei": 5,
}


# How much an edge touching an identifier of this type is worth (both ends are added).
DEFAULT_TYPE_PRIORITY = {
    "unionid": 100,
    "member_id": 90,
    "wecom_external_userid": 80,
    "openid": 70,
    "phone_sha256": 60,
    "phone_md5": 60,
    "taobao_ouid": 50,
    "jd_pin": 50,
    "douyin_openid": 50,
    "oaid": 10,
    "idfa": 10,
    "imei": 10,
}


# How much the evidence is worth: looked up as "table:source", then "table", then the default.
# A bridge table is stronger than a receiver phone on an order (gifts go to other people's
# phones); an in-store or mini-program order identifies the buyer better than a marketplace one.
DEFAULT_SOURCE_PRIORITY = {
    "identities": 30,
    "orders:store": 20,
    "orders:miniprogram": 20,
    "orders": 10,
}


class IdentityConfig(BaseModel):
    """The `[identity]` section: which identifiers count, and the guards against false merges."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    blocked_values: tuple[str, ...] = Field(
        DEFAULT_BLOCKED_VALUES,
        description="Ids that are placeholders, not people; compared stripped and lower-cased.",
    )
    blocked_phones: tuple[str, ...] = Field(
        DEFAULT_BLOCKED_PHONES,
        description="Raw test phone numbers; their sha256 (and md5) hashes are blocked values.",
    )
    patterns: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_PATTERNS),
        description="Per id type, a regex an id must match (types absent here accept any id).",
    )
    max_per_person: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_MAX_PER_PERSON),
        description="Per id type, the most identifiers of that type one person may hold.",
    )
    max_degree: int = Field(
        8, ge=1, description="An identifier linked to more distinct identifiers is a hub: cut."
    )
    max_degree_by_type: dict[str, int] = Field(
        default_factory=dict, description="Per id type overrides of max_degree."
    )
    type_priority: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_TYPE_PRIORITY),
        description="Evidence weight of each id type at an edge's ends (both ends are added).",
    )
    source_priority: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_SOURCE_PRIORITY),
        description="Evidence weight by 'table:source' or 'table' (the more specific wins).",
    )
    default_source_priority: int = 0
    rows_per_pass: int = Field(
        30_000_000,
        ge=1000,
        description="Identifier occurrences aggregated per pass; more passes use less memory.",
    )
    mention_id_type: str | None = Field(
        "wecom_external_userid",
        description='Id type of the ids in messages.mentions; None or "" ignores mentions.',
    )

    @field_validator("patterns")
    @classmethod
    def _check_patterns(cls, value: dict[str, str]) -> dict[str, str]:
        _check_types(value, "patterns")
        import polars as pl

        bad = []
        for id_type, pattern in value.items():
            try:
                pl.select(pl.lit("x").str.contains(pattern))
            except Exception:  # polars raises ComputeError for a regex its engine rejects
                bad.append(f"{id_type}: {pattern!r}")
        if bad:
            raise ValueError("not a valid regex: " + "; ".join(bad))
        return value

    @field_validator("max_per_person", "max_degree_by_type")
    @classmethod
    def _check_limits(cls, value: dict[str, int]) -> dict[str, int]:
        _check_types(value, "limits")
        low = [f"{k}={v}" for k, v in value.items() if v < 1]
        if low:
            raise ValueError("limits must be at least 1: " + ", ".join(low))
        return value

    @field_validator("type_priority")
    @classmethod
    def _check_type_priority(cls, value: dict[str, int]) -> dict[str, int]:
        _check_types(value, "type_priority")
        return value

    @field_validator("mention_id_type")
    @classmethod
    def _check_mention_type(cls, value: str | None) -> str | None:
        if value == "":
            return None
        if value is not None:
            _check_types({value: 0}, "mention_id_type")
        return value

    @field_validator("blocked_phones")
    @classmethod
    def _check_phones(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if value:
            import polars as pl

            from segments.contract import normalize_phone

            normal = pl.select(normalize_phone(pl.Series(list(value), dtype=pl.String))).to_series()
            bad = [raw for raw, n in zip(value, normal, strict=True) if n is None]
            if bad:
                raise ValueError("not valid mainland mobile numbers: " + ", ".join(bad))
        return value

    def blocked_set(self) -> list[str]:
        """Every blocked value, lower-cased, with the sha256 and md5 hex of each blocked phone,
        and the stored form of each blocked value that holds a phone (an identifier holding
        one is stored hashed: `contract.hide_phone`)."""
        import polars as pl

        from segments.contract import hide_phone, md5_hex, normalize_phone, sha256_hex

        out = {v.strip().lower() for v in self.blocked_values}
        values = pl.Series([v.strip() for v in self.blocked_values], dtype=pl.String)
        out |= set(pl.select(hide_phone(pl.lit(values)).str.to_lowercase()).to_series().to_list())
        if self.blocked_phones:
            cn11 = normalize_phone(pl.Series(list(self.blocked_phones), dtype=pl.String))
            hashes = pl.select(sha256_hex(cn11).alias("s"), md5_hex(cn11).alias("m"))
            out |= set(hashes["s"].to_list()) | set(hashes["m"].to_list())
        return sorted(out)


def _check_types(value: dict[str, Any], what: str) -> None:
    unknown = sorted(set(value) - set(NODE_TYPES))
    if unknown:
        raise ValueError(
            f"{what}: unknown id type(s) {', '.join(unknown)}; known: {', '.join(NODE_TYPES)}"
        )
