"""Phone normalisation and hashing, ISO weeks."""

from __future__ import annotations

import hashlib
from datetime import date, datetime

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
        "１３８１２３４５６７８",  # full-width, as Chinese input methods type it
        "13８-１２３４-５６７８",
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
        ("١٣٨١٢٣٤٥٦٧٨", "no digits"),  # Arabic-Indic digits are not a mainland mobile
        ("138١٢٣٤٥٦٧٨", "not an 11-digit"),
    ],
)
def test_invalid_phones_are_null_with_a_reason(raw: str, reason: str) -> None:
    row = pl.select(
        normalize_phone(pl.lit(raw)).alias("n"), phone_invalid_reason(pl.lit(raw)).alias("r")
    ).row(0)
    assert row[0] is None
    assert reason in row[1]


def _reference_phone(raw: str) -> str | None:
    """The contract's rule, written out in Python: ASCII and full-width digits only (as ASCII);
    0086 off 15 digits, 86 off 13; then 1, a digit 3-9 and nine more."""
    raw = raw.translate({0xFF10 + i: str(i) for i in range(10)})
    digits = "".join(c for c in raw if c in "0123456789")
    if len(digits) == 15 and digits.startswith("0086"):
        digits = digits[4:]
    elif len(digits) == 13 and digits.startswith("86"):
        digits = digits[2:]
    ok = len(digits) == 11 and digits[0] == "1" and digits[1] in "3456789"
    return digits if ok else None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(alphabet="0123456789+- ()86１٣a", min_size=0, max_size=18)
        | st.from_regex(r"(\+?(00)?86[ -]?)?1[0-9]{2}[ -]?[0-9]{4}[ -]?[0-9]{4}", fullmatch=True)
        | st.from_regex(r"[1１][3-9３-９][0-9０-９٣]{9}", fullmatch=True),
        min_size=1,
        max_size=20,
    )
)
def test_normalize_phone_follows_the_written_rule(raws: list[str]) -> None:
    got = pl.select(
        normalize_phone(pl.lit(pl.Series(raws, dtype=pl.String))).alias("n"),
        phone_invalid_reason(pl.lit(pl.Series(raws, dtype=pl.String))).alias("r"),
    )
    expected = [_reference_phone(r) for r in raws]
    assert got["n"].to_list() == expected
    assert [r is None for r in got["r"].to_list()] == [e is not None for e in expected]


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
