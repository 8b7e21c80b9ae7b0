"""Phone normalisation and hashing, ISO weeks."""

from __future__ import annotations

import hashlib
from datetime import date, datetime

import polars as pl
import pytest

from segments.contract import normalize_phone, phone_hash_columns, phone_invalid_reason
from segments.errors import ConfigError
from segments.weeks import Week, latest_complete_week, week_range


@pytest.mark.parametrize(
    "raw",
    [
        "13812345678",
        "+86 138-1234-5678",
        "0086 13812345678",
        "86-13812345678",
        "8613812345678",
        "+8613812345678",
        " 138 1234 5678 ",
        "(+86)138.1234.5678",
    ],
)
def test_every_contract_phone_form_normalises_to_11_digits(raw: str) -> None:
    assert pl.select(normalize_phone(pl.lit(raw))).item() == "13812345678"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("12345678901", "not an 11-digit"),  # second digit 2
        ("1381234567", "not an 11-digit"),  # 10 digits
        ("138123456789", "not an 11-digit"),  # 12 digits
        ("02112345678", "not an 11-digit"),  # a landline
        ("abc", "no digits"),
        ("", "no digits"),
        ("871381234567", "not an 11-digit"),  # 87 is not the country code
        ("008713812345678", "not an 11-digit"),
    ],
)
def test_invalid_phones_are_null_with_a_reason(raw: str, reason: str) -> None:
    row = pl.select(
        normalize_phone(pl.lit(raw)).alias("n"), phone_invalid_reason(pl.lit(raw)).alias("r")
    ).row(0)
    assert row[0] is None
    assert reason in row[1]


def test_phone_hashes_match_hashlib_and_published_vectors() -> None:
    row = pl.select(phone_hash_columns(pl.lit("13800138000"))).row(0, named=True)
    assert row["phone_sha256"] == hashlib.sha256(b"13800138000").hexdigest()
    assert row["phone_md5"] == "7945bd83237335e5376ff44d62e4f0ae"
    assert row["phone_sha256"] == "a6942f9771d67f34034d2f1926988ed3fad3bf1b4e7cedb9a31f31398dea43bc"
    assert (
        row["phone_cc_sha256"] == "bf08aacce7f9b2452863cf99373043c3333f0e3127f1f787c4abb46ab6cf2b83"
    )
    assert (
        row["phone_e164_sha256"]
        == "ec61f3c620a98bdead8c1f1f0ae747abd1b62a0c2dba4fd4bc22cf0d1d8653e5"
    )


def test_week_parsing_and_boundaries() -> None:
    w = Week.parse("2026-11-22")
    assert w.label == "2026-W47"
    assert Week.parse("2026-W47") == w
    assert w.start == datetime(2026, 11, 16)
    assert w.end == datetime(2026, 11, 23)
    assert w.sunday == date(2026, 11, 22)
    assert Week.parse("2027-01-01").label == "2026-W53"  # ISO year differs from calendar year
    assert w.shift(1).label == "2026-W48"
    assert [x.label for x in week_range("2026-W46..2026-W48")] == [
        "2026-W46",
        "2026-W47",
        "2026-W48",
    ]


@pytest.mark.parametrize("bad", ["2026-W54", "2025-W53", "W47", "22/11/2026", "2026-13-01"])
def test_bad_weeks_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError):
        Week.parse(bad)


def test_latest_complete_week() -> None:
    assert latest_complete_week(datetime(2026, 11, 22, 23, 0)).label == "2026-W47"  # a Sunday
    assert latest_complete_week(datetime(2026, 11, 21, 23, 0)).label == "2026-W46"  # a Saturday
