"""Tests for the ad-platform exporters: published hash vectors, file contents, determinism,
zip splitting, size refusal, privacy (no raw phones or raw device ids) and manifest counts."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import tempfile
import zipfile
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segments.contract import phone_hash_columns
from segments.errors import ConfigError, ExportError
from segments.exporters import (
    EXPORTERS,
    AlimamaExporter,
    ExportManifest,
    MetaExporter,
    get_exporter,
)
from segments.exporters.files import text_bytes, write_zip_parts, zip_bytes
from segments.exporters.ids import invalid_reason, md5, md5_sha256, normalise_id, sha256
from segments.exporters.oceanengine import encode_dmp_data, encode_id_item, varint

WEEK = "2026-W47"
PACK = "hv"
STEM = f"{PACK}_{WEEK}"

CN_PHONE = "13800138000"
CN_MD5 = "7945bd83237335e5376ff44d62e4f0ae"
CN_SHA256 = "a6942f9771d67f34034d2f1926988ed3fad3bf1b4e7cedb9a31f31398dea43bc"
CN_CC_SHA256 = "bf08aacce7f9b2452863cf99373043c3333f0e3127f1f787c4abb46ab6cf2b83"
CN_E164_SHA256 = "ec61f3c620a98bdead8c1f1f0ae747abd1b62a0c2dba4fd4bc22cf0d1d8653e5"
WRONG_GOOGLE_PREFIX = "8eca9c35"  # sha256("+13800138000"): Google's formatter on a bare CN number

IDFA = "FF1999CD-7177-4937-A474-74937A102630"
IDFA_MD5 = "2c010ed96aef2fc34983e1e7e9176b7e"
IDFA_MD5_SHA256 = "9f2fc8b5eaaeba19fe9415767b13c1ec43c91aa039aa44684dfc8ec77d3b0607"
IMEI = "a000002c9060f7"
IMEI_MD5 = "f2d5a650733ca8c27d502b1c08da14e5"
IMEI_MD5_SHA256 = "d64db6590359b386397db4d8a61dbc8fbd586b8a0b822ee6bc19316402d583b4"
OAID = "1fe9a970-F6C8-4b3b-9bbc-7d4a4b0d1e6c"  # mixed case on purpose: OAID keeps its case
UNIONID = "oXYZunion0123456789abcdefABCD"
OPENID = "oABCopenid0123456789abcdefXY"
OUID = "AAHx7Yq2Rk9_taobao"

PHONE_2 = "13912345678"
PHONE_UPSTREAM_MD5 = "13700000000"  # only its MD5 reaches the engine
PHONE_UPSTREAM_SHA = "13600000000"  # only its SHA-256 reaches the engine


def md5h(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


def shah(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def phone_row(one_id: str, phone: str) -> dict[str, str]:
    hashes = pl.select(phone_hash_columns(pl.lit(phone))).row(0, named=True)
    return {"one_id": one_id, "id_type": "phone_sha256", "id": hashes.pop("phone_sha256"), **hashes}


def id_row(one_id: str, id_type: str, value: str | None) -> dict[str, str | None]:
    return {"one_id": one_id, "id_type": id_type, "id": value}


SCHEMA = {
    c: pl.String
    for c in ("one_id", "id_type", "id", "phone_md5", "phone_cc_sha256", "phone_e164_sha256")
}


def frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMA)


def tiny_pack() -> pl.DataFrame:
    """Six people: every id type a platform uses, a duplicate, junk and an unusable person."""
    return frame(
        [
            phone_row("u1", CN_PHONE),
            phone_row("u1", CN_PHONE),  # the same row twice: deduplicated
            id_row("u1", "idfa", IDFA.lower().replace("-", "")),  # normalised back to IDFA
            id_row("u1", "imei", IMEI.upper()),
            phone_row("u2", PHONE_2),
            id_row("u2", "unionid", UNIONID),
            id_row("u2", "openid", OPENID),
            id_row("u2", "taobao_ouid", OUID),
            id_row("u3", "phone_md5", md5h(PHONE_UPSTREAM_MD5).upper()),
            id_row("u4", "oaid", OAID),
            id_row("u4", "idfa", "00000000-0000-0000-0000-000000000000"),
            id_row("u4", "idfa", "not-an-idfa"),
            id_row("u5", "jd_pin", "jd_buyer_5"),
            id_row("u6", "phone_sha256", shah(PHONE_UPSTREAM_SHA)),  # no other phone hashes
        ]
    )


def export(platform: str, out_dir: Path, members: pl.DataFrame | None = None, **options):
    options.setdefault("min_size", 1)
    return get_exporter(platform).export(
        tiny_pack() if members is None else members, PACK, WEEK, out_dir, options
    )


def file_lines(path: Path) -> list[str]:
    """The text lines of a written file (the single member of a zip)."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            (name,) = zf.namelist()
            data = zf.read(name)
    else:
        data = path.read_bytes()
    assert not data.startswith(b"\xef\xbb\xbf"), "no BOM"
    assert b"\r" not in data, "\\n line endings only"
    assert data.endswith(b"\n")
    return data.decode("utf-8").split("\n")[:-1]


def type_lines(out_dir: Path, manifest: ExportManifest, id_type: str, index: int = 0) -> list[str]:
    files = manifest.id_types[id_type].files
    return file_lines(out_dir / files[index].path)


def all_text(out_dir: Path) -> str:
    """Every byte written under out_dir as text, zips opened, base64 DmpData lines decoded."""
    parts = []
    for p in sorted(out_dir.rglob("*")):
        if p.suffix == ".zip":
            with zipfile.ZipFile(p) as zf:
                for n in zf.namelist():
                    parts.append(zf.read(n).decode("utf-8"))
        elif p.suffix == ".parquet":
            parts.append(p.read_bytes().decode("latin-1"))
            parts.append(json.dumps(pl.read_parquet(p).to_dicts()))
        elif p.is_file():
            parts.append(p.read_text(encoding="utf-8"))
    text = "\n".join(parts)
    decoded = []
    for line in text.split("\n"):
        if len(line) % 4 == 0 and re.fullmatch(r"[A-Za-z0-9+/]{20,}={0,2}", line):
            decoded.append(base64.b64decode(line).decode("latin-1"))
    return text + "\n".join(decoded)


# ---------------------------------------------------------------------------------------------
# Published vectors (reference §5) through the helpers the exporters use


@pytest.mark.parametrize(
    ("kind", "raw", "encode", "expected"),
    [
        ("idfa", IDFA, md5, IDFA_MD5),  # Tencent doc: hyphens kept, uppercase
        ("idfa", IDFA.lower(), md5, IDFA_MD5),  # case normalised to UPPERCASE first
        ("idfa", IDFA.replace("-", ""), md5, IDFA_MD5),  # hyphens restored
        ("imei", IMEI, md5, IMEI_MD5),  # Tencent doc
        ("imei", IMEI.upper(), md5, IMEI_MD5),  # lowercased first
        ("mac", "02:00:00:00:00:00", md5, "e3f5536a141811db40efd6400f1d0a4e"),  # Tencent doc
        ("imei", IMEI, md5_sha256, IMEI_MD5_SHA256),
        ("idfa", IDFA, md5_sha256, IDFA_MD5_SHA256),
        ("wechat", "test_value_1", sha256, shah("test_value_1")),
    ],
)
def test_device_hash_vectors(kind, raw, encode, expected):
    value = pl.lit(raw)
    assert pl.select(invalid_reason(value, kind)).item() is None
    assert pl.select(encode(normalise_id(value, kind))).item() == expected


def test_idfa_without_hyphens_is_not_the_tencent_hash():
    # The trap in the reference: md5 of the 32-char form does not match the doc's example.
    assert md5h(IDFA.replace("-", "")) == "7999d1ff05b88b0ab7010976ac9441af" != IDFA_MD5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("test", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),  # Meta SDK
        ("alexz@example.com", "509e933019bb285a134a9334b8bb679dff79d0ce023d529af4bd744d47b4fd8a"),
        ("+18005550100", "fb4f73a6ec5fdb7077d564cdd22c3554b43ce49168550c3b12c547b78c517b30"),
        ("adsapi", "49e0be2aeccfb51a8dee4c945c8a70a9ac500cf6f5cb08112575f74db9b1470d"),  # X
        (CN_PHONE, CN_SHA256),
        ("86" + CN_PHONE, CN_CC_SHA256),
        ("+86" + CN_PHONE, CN_E164_SHA256),
    ],
)
def test_sha256_vectors(text, expected):
    assert pl.select(sha256(pl.lit(text))).item() == expected


def test_md5_vectors():
    assert pl.select(md5(pl.lit(CN_PHONE))).item() == CN_MD5
    assert pl.select(md5(pl.lit("13500000000"))).item() == "4dbeaa3acd2620411c7ba4fd78bb32d0"
    assert pl.select(md5(pl.lit("123-456-7890"))).item() == "2813448ce6316cb70b38fa29c8c64130"


def test_contract_phone_columns_match_the_vectors():
    row = phone_row("u", CN_PHONE)
    assert (row["id"], row["phone_md5"], row["phone_cc_sha256"], row["phone_e164_sha256"]) == (
        CN_SHA256,
        CN_MD5,
        CN_CC_SHA256,
        CN_E164_SHA256,
    )
    assert shah("+13800138000").startswith(WRONG_GOOGLE_PREFIX)


@pytest.mark.parametrize(
    ("kind", "raw", "reason"),
    [
        ("idfa", "00000000-0000-0000-0000-000000000000", "placeholder idfa (all zeros)"),
        ("idfa", "not-an-idfa", "not an IDFA (8-4-4-4-12 hex)"),
        ("imei", "000000000000000", "placeholder imei (all zeros)"),
        ("imei", "12345", "not a 14/15-character IMEI or MEID"),
        ("md5", "xyz", "not a 32-character hex MD5"),
        ("sha256", CN_MD5, "not a 64-character hex SHA-256"),
        ("oaid", "   ", "missing value"),
        ("taobao", "a,b", "not a Taobao id (1 to 128 characters, no spaces, commas or quotes)"),
    ],
)
def test_invalid_reasons(kind, raw, reason):
    assert pl.select(invalid_reason(pl.lit(raw), kind)).item() == reason


def test_oaid_keeps_its_case():
    assert pl.select(normalise_id(pl.lit(f" {OAID} "), "oaid")).item() == OAID


# ---------------------------------------------------------------------------------------------
# Per-platform file contents for the tiny pack


def test_tencent_files(tmp_path):
    m = export("tencent", tmp_path, openid_app_id="wx1234567890abcdef")
    assert type_lines(tmp_path, m, "HASH_MOBILE_PHONE") == sorted(
        [CN_MD5, md5h(PHONE_2), md5h(PHONE_UPSTREAM_MD5)]
    )
    assert type_lines(tmp_path, m, "SHA256_MOBILE_PHONE") == sorted(
        [CN_SHA256, shah(PHONE_2), shah(PHONE_UPSTREAM_SHA)]
    )
    assert type_lines(tmp_path, m, "WX_UNIONID") == [UNIONID]
    assert type_lines(tmp_path, m, "WECHAT_OPENID") == [OPENID]
    assert type_lines(tmp_path, m, "HASH_IDFA") == [IDFA_MD5]
    assert type_lines(tmp_path, m, "HASH_IMEI") == [IMEI_MD5]
    assert type_lines(tmp_path, m, "HASH_OAID") == [md5h(OAID)]
    assert type_lines(tmp_path, m, "MD5_SHA256_IDFA") == [IDFA_MD5_SHA256]
    assert type_lines(tmp_path, m, "MD5_SHA256_IMEI") == [IMEI_MD5_SHA256]
    assert type_lines(tmp_path, m, "MD5_SHA256_OAID") == [shah(md5h(OAID))]
    # File names carry the platform's type name, inside and out.
    with zipfile.ZipFile(tmp_path / f"{STEM}_HASH_IDFA.zip") as zf:
        assert zf.namelist() == [f"{STEM}_HASH_IDFA.txt"]
    assert (tmp_path / f"{STEM}_tencent_manifest.json").exists()
    assert m.people == 6 and m.people_exportable == 5  # u5 has only a jd_pin
    assert m.skipped == {
        "jd_pin": {"tencent does not use jd_pin": 1},
        "taobao_ouid": {"tencent does not use taobao_ouid": 1},
    }


def test_tencent_skips_openids_without_app_id(tmp_path):
    m = export("tencent", tmp_path)
    assert "WECHAT_OPENID" not in m.id_types
    assert not list(tmp_path.glob("*WECHAT_OPENID*"))
    assert any("WECHAT_OPENID" in w and "openid_app_id" in w for w in m.warnings)
    assert "openid" in m.skipped and sum(m.skipped["openid"].values()) == 1


def test_tencent_id_types_option(tmp_path):
    m = export("tencent", tmp_path, id_types=["SHA256_MOBILE_PHONE"])
    assert list(m.id_types) == ["SHA256_MOBILE_PHONE"]
    assert m.warnings == ()  # WECHAT_OPENID was not asked for: no warning about it
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"{STEM}_SHA256_MOBILE_PHONE.zip",
        f"{STEM}_tencent_manifest.json",
    ]


def decode_varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def decode_fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """A minimal protobuf wire-format reader (varint and length-delimited fields only)."""
    fields, pos = [], 0
    while pos < len(data):
        key, pos = decode_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = decode_varint(data, pos)
        elif wire == 2:
            size, pos = decode_varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        else:
            raise AssertionError(f"unexpected wire type {wire}")
        fields.append((number, value))
    return fields


def decode_dmp_line(line: str) -> list[tuple[int, str]]:
    items = []
    for number, item in decode_fields(base64.b64decode(line, validate=True)):
        assert number == 1
        fields = dict(decode_fields(item))
        assert set(fields) == {2, 3}  # no timestamp, no tags
        items.append((fields[2], fields[3].decode()))
    return items


def test_varint_and_hand_decoded_dmp_data():
    assert varint(0) == b"\x00"
    assert varint(1) == b"\x01"
    assert varint(300) == b"\xac\x02"  # the protobuf documentation's example
    assert varint(2**32 - 1) == b"\xff\xff\xff\xff\x0f"
    # IdItem{dataType: MOBILE_HASH_SHA256 (6), id: <64 hex>} inside DmpData.idList, by hand:
    # 0a 44 = field 1, wire type 2, 68 bytes; 10 06 = field 2 varint 6; 1a 40 = field 3, 64 bytes.
    expected = bytes.fromhex("0a44" + "1006" + "1a40") + CN_SHA256.encode()
    assert encode_dmp_data([(6, CN_SHA256)]) == expected
    assert base64.b64encode(expected).decode().startswith("CkQQBhpA")
    # dataType 0 (IMEI) is written explicitly: proto2 required fields are always serialised.
    assert encode_id_item(0, "x") == b"\x10\x00\x1a\x01x"
    two = encode_dmp_data([(4, IMEI_MD5), (5, IDFA_MD5)])
    assert decode_dmp_line(base64.b64encode(two).decode()) == [(4, IMEI_MD5), (5, IDFA_MD5)]


def test_oceanengine_classic_files(tmp_path):
    m = export("oceanengine", tmp_path, ids_per_line=2)
    lines = type_lines(tmp_path, m, "MOBILE_HASH_SHA256")
    assert len(lines) == 2  # 3 phones, 2 ids per line
    items = [item for line in lines for item in decode_dmp_line(line)]
    assert items == [(6, h) for h in sorted([CN_SHA256, shah(PHONE_2), shah(PHONE_UPSTREAM_SHA)])]
    assert [decode_dmp_line(x) for x in type_lines(tmp_path, m, "IDFA_MD5")] == [[(5, IDFA_MD5)]]
    assert [decode_dmp_line(x) for x in type_lines(tmp_path, m, "IMEI_MD5")] == [[(4, IMEI_MD5)]]
    assert [decode_dmp_line(x) for x in type_lines(tmp_path, m, "OAID_MD5")] == [[(8, md5h(OAID))]]
    assert m.id_types["MOBILE_HASH_SHA256"].files[0].rows == 3
    assert m.id_types["MOBILE_HASH_SHA256"].platform_code == 6
    assert "phone_md5" in m.skipped  # no phone MD5 type in the classic proto


def test_oceanengine_qianchuan_files(tmp_path):
    m = export("oceanengine", tmp_path, variant="qianchuan")
    assert type_lines(tmp_path, m, "PHONE_SHA256") == sorted(
        [CN_SHA256, shah(PHONE_2), shah(PHONE_UPSTREAM_SHA)]
    )
    assert type_lines(tmp_path, m, "PHONE_MD5") == [md5h(PHONE_UPSTREAM_MD5)]
    assert type_lines(tmp_path, m, "IDFA_MD5") == [IDFA_MD5]
    assert type_lines(tmp_path, m, "IMEI_MD5") == [IMEI_MD5]
    assert type_lines(tmp_path, m, "OAID_MD5") == [md5h(OAID)]
    assert {k: s.platform_code for k, s in m.id_types.items()} == {
        "PHONE_SHA256": 14,
        "PHONE_MD5": 17,
        "IMEI_MD5": 11,
        "IDFA_MD5": 12,
        "OAID_MD5": 16,
    }


def test_alimama_files(tmp_path):
    m = export("alimama", tmp_path)
    assert type_lines(tmp_path, m, "PHONE_SHA256") == [
        "PHONE_SHA256",
        *sorted([CN_SHA256, shah(PHONE_2), shah(PHONE_UPSTREAM_SHA)]),
    ]
    assert type_lines(tmp_path, m, "TAOBAO_ID") == ["TAOBAO_ID", OUID]
    assert "phone_md5" in m.skipped
    assert any("2,000" in w for w in m.warnings)  # min_size 1 is below Alibaba's minimum


def test_alimama_md5_mode(tmp_path):
    m = export("alimama", tmp_path, phone_hash="md5")
    assert type_lines(tmp_path, m, "PHONE_MD5") == [
        "PHONE_MD5",
        *sorted([CN_MD5, md5h(PHONE_2), md5h(PHONE_UPSTREAM_MD5)]),
    ]
    # The phone hashed upstream to SHA-256 has no MD5: counted invalid, with the reason.
    assert m.id_types["PHONE_MD5"].invalid_reasons == {
        "phone hashed upstream: no phone_md5 known": 1
    }


def test_meta_files(tmp_path):
    m = export("meta", tmp_path, batch_size=2)
    phones = sorted([CN_CC_SHA256, shah("86" + PHONE_2)])
    assert type_lines(tmp_path, m, "PHONE_SHA256") == ["PHONE_SHA256", *phones]
    assert type_lines(tmp_path, m, "MADID") == ["MADID", IDFA.lower()]
    payloads = [json.loads(x) for x in type_lines(tmp_path, m, "PHONE_SHA256", index=1)]
    assert payloads == [{"schema": "PHONE_SHA256", "data": phones}]
    madid = [json.loads(x) for x in type_lines(tmp_path, m, "MADID", index=1)]
    assert madid == [{"schema": "MOBILE_ADVERTISER_ID", "data": [IDFA.lower()]}]


def test_meta_payload_batches(tmp_path):
    members = frame([phone_row(f"u{i}", f"1380000{i:04d}") for i in range(5)])
    m = export("meta", tmp_path, members, batch_size=2)
    payloads = [json.loads(x) for x in type_lines(tmp_path, m, "PHONE_SHA256", index=1)]
    assert [len(p["data"]) for p in payloads] == [2, 2, 1]
    assert [x for p in payloads for x in p["data"]] == sorted(
        shah(f"861380000{i:04d}") for i in range(5)
    )
    with pytest.raises(ConfigError, match="batch_size"):
        export("meta", tmp_path, members, batch_size=10_001)


def test_google_files(tmp_path):
    m = export("google", tmp_path)
    phones = type_lines(tmp_path, m, "PHONE")
    assert phones == ["Phone", *sorted([CN_E164_SHA256, shah("+86" + PHONE_2)])]
    assert not any(p.startswith(WRONG_GOOGLE_PREFIX) for p in phones)
    assert shah("+" + CN_PHONE) not in all_text(tmp_path)
    assert type_lines(tmp_path, m, "MOBILE_DEVICE_ID") == ["Mobile Device ID", IDFA]


def test_tiktok_files(tmp_path):
    m = export("tiktok", tmp_path)
    assert type_lines(tmp_path, m, "PHONE_SHA256_86") == [
        "Phone_SHA256",
        *sorted([CN_CC_SHA256, shah("86" + PHONE_2)]),
    ]
    assert type_lines(tmp_path, m, "PHONE_SHA256_PLUS86") == [
        "Phone_SHA256",
        *sorted([CN_E164_SHA256, shah("+86" + PHONE_2)]),
    ]
    assert type_lines(tmp_path, m, "MAID_SHA256_UPPER") == ["MAID_SHA256", shah(IDFA)]
    assert type_lines(tmp_path, m, "MAID_SHA256_LOWER") == ["MAID_SHA256", shah(IDFA.lower())]
    names = {f.path for f in m.files}
    assert f"{STEM}_PHONE_SHA256_86.csv" in names and f"{STEM}_PHONE_SHA256_PLUS86.csv" in names


def test_parquet_pack(tmp_path):
    m = export("parquet", tmp_path, metadata={"run_id": "r-42", "pack_rule": "high_value"})
    path = tmp_path / f"{STEM}.parquet"
    assert [f.path for f in m.files] == [path.name]
    df = pl.read_parquet(path)
    assert df.get_column("one_id").to_list() == ["u1", "u2", "u3", "u4", "u5", "u6"]
    assert all(df.schema[c] == pl.List(pl.String) for c in df.columns if c != "one_id")
    u1 = df.row(0, named=True)
    assert u1["phone_sha256"] == [CN_SHA256]
    assert u1["phone_md5"] == [CN_MD5]
    assert u1["phone_cc_sha256"] == [CN_CC_SHA256]
    assert u1["phone_e164_sha256"] == [CN_E164_SHA256]
    assert u1["idfa_md5"] == [IDFA_MD5] and u1["idfa"] == [IDFA]
    assert u1["imei_md5"] == [IMEI_MD5]
    u2 = df.row(1, named=True)
    assert (u2["unionid"], u2["openid"], u2["taobao_ouid"]) == ([UNIONID], [OPENID], [OUID])
    assert df.row(2, named=True)["phone_md5"] == [md5h(PHONE_UPSTREAM_MD5)]
    assert df.row(3, named=True)["oaid_md5"] == [md5h(OAID)]
    assert df.row(3, named=True)["idfa"] == []  # the zero and the junk IDFA are dropped
    assert all(v == [] for k, v in df.row(4, named=True).items() if k != "one_id")
    meta = pq.read_schema(path).metadata
    assert meta[b"run_id"] == b"r-42" and meta[b"pack_rule"] == b"high_value"
    assert m.people == 6 and m.people_exportable == 5


# ---------------------------------------------------------------------------------------------
# Determinism


@pytest.mark.parametrize("platform", sorted(EXPORTERS))
def test_re_export_is_byte_identical(tmp_path, platform):
    first = tmp_path / "a"
    second = tmp_path / "b"
    opts = {"openid_app_id": "wx1234567890abcdef"} if platform == "tencent" else {}
    export(platform, first, **opts)
    shuffled = tiny_pack().sample(fraction=1.0, shuffle=True, seed=3)
    export(platform, second, shuffled, **opts)
    export(platform, first, **opts)  # again over the first export
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert not [n for n in names if n.startswith(".")], "no temp files left"
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_files_are_owner_only(tmp_path):
    export("parquet", tmp_path)
    export("tencent", tmp_path)
    for p in tmp_path.iterdir():
        assert p.stat().st_mode & 0o777 == 0o600, p.name


def test_zip_is_deterministic_and_fixed():
    a = zip_bytes({"b.txt": b"2\n", "a.txt": b"1\n"})
    b = zip_bytes({"a.txt": b"1\n", "b.txt": b"2\n"})
    assert a == b
    with zipfile.ZipFile(io.BytesIO(a)) as zf:
        assert zf.namelist() == ["a.txt", "b.txt"]
        for info in zf.infolist():
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.external_attr >> 16 == 0o100644
            assert info.create_system == 3
            assert info.compress_type == zipfile.ZIP_DEFLATED


# ---------------------------------------------------------------------------------------------
# Zip splitting


def many_phones(n: int) -> pl.DataFrame:
    return frame([phone_row(f"u{i:03d}", f"1390000{i:04d}") for i in range(n)])


def test_zip_split_at_a_tiny_limit(tmp_path):
    members = many_phones(40)
    limit = 700
    m = export("tencent", tmp_path, members, id_types=["SHA256_MOBILE_PHONE"], max_zip_bytes=limit)
    files = m.id_types["SHA256_MOBILE_PHONE"].files
    assert len(files) > 1
    assert [f.path for f in files] == [
        f"{STEM}_SHA256_MOBILE_PHONE_part{k}.zip" for k in range(1, len(files) + 1)
    ]
    lines = []
    for k, f in enumerate(files, start=1):
        path = tmp_path / f.path
        assert path.stat().st_size == f.bytes <= limit
        with zipfile.ZipFile(path) as zf:
            assert zf.namelist() == [f"{STEM}_SHA256_MOBILE_PHONE_part{k}.txt"]
        part = file_lines(path)
        assert len(part) == f.rows
        lines += part
    assert lines == sorted(shah(f"1390000{i:04d}") for i in range(40))
    # Fewest parts: one part fewer would not fit.
    fewer = len(files) - 1
    bounds = [(i * 40 // fewer, (i + 1) * 40 // fewer) for i in range(fewer)]
    assert any(
        len(zip_bytes({f"{STEM}_SHA256_MOBILE_PHONE_part{k + 1}.txt": text_bytes(lines[a:b])}))
        > limit
        for k, (a, b) in enumerate(bounds)
    )

    # Re-exported with room for one zip: the stale parts are removed.
    m2 = export("tencent", tmp_path, members, id_types=["SHA256_MOBILE_PHONE"])
    assert [f.path for f in m2.files] == [f"{STEM}_SHA256_MOBILE_PHONE.zip"]
    assert not list(tmp_path.glob("*_part*.zip"))


def test_zip_split_counts_ids_per_dmp_line(tmp_path):
    m = export(
        "oceanengine", tmp_path, many_phones(30), ids_per_line=4, max_zip_bytes=900, min_size=1
    )
    files = m.id_types["MOBILE_HASH_SHA256"].files
    assert len(files) > 1 and sum(f.rows for f in files) == 30
    for f in files:
        items = [i for line in file_lines(tmp_path / f.path) for i in decode_dmp_line(line)]
        assert len(items) == f.rows


def test_zip_limit_below_one_line_is_an_error(tmp_path):
    with pytest.raises(ExportError, match="one line does not fit"):
        write_zip_parts(tmp_path, "x", ["a" * 64, "b" * 64], max_zip_bytes=50)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Minimum size


def test_refuses_below_min_size_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ExportError) as e:
        get_exporter("tencent").export(tiny_pack(), PACK, WEEK, out)
    message = str(e.value)
    assert "\n" not in message
    assert "5 of its 6 people" in message and "1,000" in message
    assert not out.exists()


def test_only_people_with_a_usable_id_count(tmp_path):
    members = frame(
        [phone_row(f"p{i}", f"1370000{i:04d}") for i in range(3)]
        + [id_row(f"j{i}", "jd_pin", f"jd{i}") for i in range(2)]
    )
    with pytest.raises(ExportError, match="only 3 of its 5 people"):
        export("meta", tmp_path, members, min_size=4)
    assert export("meta", tmp_path, members, min_size=3).people_exportable == 3


def test_default_min_sizes():
    assert get_exporter("alimama").min_size == AlimamaExporter.min_size == 2_000
    assert MetaExporter.platform_min_size == 100
    for name, cls in EXPORTERS.items():
        if name != "alimama":
            assert cls.min_size == 1_000, name


def test_alimama_default_min_size_is_2000(tmp_path):
    with pytest.raises(ExportError, match="2,000"):
        get_exporter("alimama").export(many_phones(30), PACK, WEEK, tmp_path)


# ---------------------------------------------------------------------------------------------
# Privacy: no raw phone, no raw id the platform wants hashed


RAW_PHONE = re.compile(r"(?<![0-9A-Za-z])(?:\+?86)?1[3-9]\d{9}(?![0-9A-Za-z])")
HASHED_DEVICES = {"tencent", "oceanengine", "alimama", "tiktok"}


@pytest.mark.parametrize("platform", sorted(EXPORTERS))
def test_no_raw_phone_or_raw_device_id_written(tmp_path, platform):
    opts = {"openid_app_id": "wx1234567890abcdef"} if platform == "tencent" else {}
    export(platform, tmp_path, **opts)
    text = all_text(tmp_path)
    for phone in (CN_PHONE, PHONE_2, PHONE_UPSTREAM_MD5, PHONE_UPSTREAM_SHA):
        assert phone not in text
    assert not RAW_PHONE.search(text)
    lowered = text.lower()
    if platform in HASHED_DEVICES:
        for raw in (IDFA, IDFA.replace("-", ""), IMEI, OAID):
            assert raw.lower() not in lowered, raw
    if platform in ("meta", "google"):
        assert IMEI.lower() not in lowered and OAID.lower() not in lowered


def test_parquet_never_holds_a_raw_phone(tmp_path):
    export("parquet", tmp_path, metadata={"note": "weekly"})
    df = pl.read_parquet(tmp_path / f"{STEM}.parquet")
    values = [v for c in df.columns if c != "one_id" for lst in df.get_column(c) for v in lst]
    assert values and not any(RAW_PHONE.fullmatch(v) for v in values)


# ---------------------------------------------------------------------------------------------
# Manifest counts


def test_manifest_counts_in_invalid_duplicate_out(tmp_path):
    members = frame(
        [
            id_row("a", "idfa", IDFA),
            id_row("a", "idfa", IDFA.lower()),  # duplicate after normalising
            id_row("b", "idfa", IDFA.replace("-", "")),  # duplicate after normalising
            id_row("c", "idfa", "00000000-0000-0000-0000-000000000000"),
            id_row("c", "idfa", "junk"),
            id_row("d", "idfa", None),
            phone_row("e", CN_PHONE),
            id_row("f", "phone_sha256", shah(PHONE_UPSTREAM_SHA)),
            id_row("g", "phone_md5", CN_MD5),  # same phone as e: deduplicated after hashing
            id_row("h", "phone_md5", "not-a-hash"),
        ]
    )
    m = export("tencent", tmp_path, members, id_types=["HASH_IDFA", "HASH_MOBILE_PHONE"])
    idfa = m.id_types["HASH_IDFA"]
    assert (idfa.rows_in, idfa.rows_invalid, idfa.rows_duplicate, idfa.rows_out) == (6, 3, 2, 1)
    assert idfa.invalid_reasons == {
        "missing value": 1,
        "not an IDFA (8-4-4-4-12 hex)": 1,
        "placeholder idfa (all zeros)": 1,
    }
    assert idfa.people == 2  # a and b
    phone = m.id_types["HASH_MOBILE_PHONE"]
    assert (phone.rows_in, phone.rows_invalid, phone.rows_duplicate, phone.rows_out) == (4, 2, 1, 1)
    assert phone.invalid_reasons == {
        "not a 32-character hex MD5": 1,
        "phone hashed upstream: no phone_md5 known": 1,
    }
    assert type_lines(tmp_path, m, "HASH_MOBILE_PHONE") == [CN_MD5]
    assert m.people == 8 and m.people_exportable == 4  # a, b, e, g

    saved = (tmp_path / f"{STEM}_tencent_manifest.json").read_text(encoding="utf-8")
    assert ExportManifest.from_json(saved) == m
    assert ExportManifest.from_json(saved).to_json() == saved
    for f in m.files:
        data = (tmp_path / f.path).read_bytes()
        assert (f.bytes, f.sha256, f.md5) == (
            len(data),
            hashlib.sha256(data).hexdigest(),
            hashlib.md5(data).hexdigest(),
        )


def tencent_oracle(rows: list[dict]) -> dict[str, set[str]]:
    """What Tencent should emit, computed with hashlib and re (independently of polars)."""
    uuid = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")
    out: dict[str, set[str]] = {"HASH_MOBILE_PHONE": set(), "SHA256_MOBILE_PHONE": set()}
    out |= {"HASH_IDFA": set(), "HASH_IMEI": set()}
    for r in rows:
        t, v = r["id_type"], r["id"]
        if t == "phone_sha256":
            out["SHA256_MOBILE_PHONE"].add(v)
            out["HASH_MOBILE_PHONE"].add(r["phone_md5"])
        elif t == "phone_md5" and re.fullmatch(r"[0-9a-f]{32}", v.lower()):
            out["HASH_MOBILE_PHONE"].add(v.lower())
        elif t == "idfa":
            u = v.strip().upper()
            if re.fullmatch(r"[0-9A-F]{32}", u):
                u = f"{u[:8]}-{u[8:12]}-{u[12:16]}-{u[16:20]}-{u[20:]}"
            if uuid.match(u) and set(u) - {"0", "-"}:
                out["HASH_IDFA"].add(md5h(u))
        elif t == "imei":
            u = v.strip().lower()
            if re.fullmatch(r"[0-9a-f]{14,15}", u) and set(u) != {"0"}:
                out["HASH_IMEI"].add(md5h(u))
    return out


id_rows = st.one_of(
    st.builds(
        lambda p: ("phone", "1" + p),
        st.text("3456789", min_size=1, max_size=1).flatmap(
            lambda d: st.text("0123456789", min_size=9, max_size=9).map(lambda r: d + r)
        ),
    ),
    st.builds(lambda p: ("phone_md5", p), st.sampled_from([CN_MD5, CN_MD5.upper(), "zz", ""])),
    st.builds(
        lambda u, lower, hyphens: (
            "idfa",
            (u if hyphens else u.replace("-", "")).lower() if lower else u,
        ),
        st.uuids().map(lambda u: str(u).upper()),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(lambda s: ("idfa", s), st.sampled_from(["x", "0" * 32, IDFA])),
    st.builds(lambda s: ("imei", s), st.text("0123456789abcdef", min_size=13, max_size=16)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 5), id_rows), min_size=1, max_size=25))
def test_counts_and_contents_match_an_oracle(drawn):
    rows = []
    for person, (t, v) in drawn:
        rows.append(phone_row(f"p{person}", v) if t == "phone" else id_row(f"p{person}", t, v))
    members = frame(rows)
    expected = tencent_oracle(rows)
    with tempfile.TemporaryDirectory() as d:
        out = Path(d)
        if not any(expected.values()):
            with pytest.raises(ExportError):
                export("tencent", out, members, id_types=list(expected))
            return
        m = export("tencent", out, members, id_types=list(expected))
        for name, stats in m.id_types.items():
            assert stats.rows_in == stats.rows_invalid + stats.rows_duplicate + stats.rows_out
            got = [x for f in stats.files for x in file_lines(out / f.path)]
            assert got == sorted(expected[name]), name


# ---------------------------------------------------------------------------------------------
# Registry, options, input checks


def test_registry_and_unknown_platform():
    assert set(EXPORTERS) == {
        "tencent",
        "oceanengine",
        "alimama",
        "meta",
        "google",
        "tiktok",
        "parquet",
    }
    for name in EXPORTERS:
        exporter = get_exporter(name)
        assert exporter.name == name and exporter.id_types()
    with pytest.raises(ExportError, match=r"unknown export platform 'weibo'.*tencent"):
        get_exporter("weibo")


def test_id_types_follow_options():
    ocean = get_exporter("oceanengine")
    assert ocean.id_types() == ("MOBILE_HASH_SHA256", "IMEI_MD5", "IDFA_MD5", "OAID_MD5")
    assert "PHONE_MD5" in ocean.id_types({"variant": "qianchuan"})
    assert get_exporter("alimama").id_types({"phone_hash": "md5"}) == ("PHONE_MD5", "TAOBAO_ID")


def test_bad_options_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="colour"):
        export("tencent", tmp_path, colour="red")
    with pytest.raises(ConfigError, match="'HASH_QQ' unknown; valid: HASH_MOBILE_PHONE"):
        export("tencent", tmp_path, id_types=["HASH_QQ"])
    with pytest.raises(ConfigError, match="variant"):
        export("oceanengine", tmp_path, variant="both")
    with pytest.raises(ConfigError, match="min_size"):
        export("google", tmp_path, min_size=0)


def test_bad_members_and_names(tmp_path):
    with pytest.raises(ExportError, match="lacks column"):
        export("tencent", tmp_path, pl.DataFrame({"one_id": ["a"], "id": ["x"]}))
    with pytest.raises(ExportError, match="pack name"):
        get_exporter("tencent").export(tiny_pack(), "../evil", WEEK, tmp_path, {"min_size": 1})
    with pytest.raises(ExportError, match="without a one_id"):
        export("tencent", tmp_path, frame([id_row(None, "idfa", IDFA)]))


def test_lazy_members_and_missing_phone_columns(tmp_path):
    members = pl.LazyFrame(
        {"one_id": ["a", "b"], "id_type": ["phone_sha256", "idfa"], "id": [CN_SHA256, IDFA]}
    )
    m = export("meta", tmp_path, members)
    # No phone_cc_sha256 column: the phone row is invalid with a reason, the IDFA still goes.
    assert m.id_types["PHONE_SHA256"].invalid_reasons == {
        "phone hashed upstream: no phone_cc_sha256 known": 1
    }
    assert m.id_types["MADID"].rows_out == 1


def test_an_id_stored_hashed_because_it_held_a_phone_is_not_exported_as_the_platforms_id() -> None:
    """A WeChat or Taobao id that held a phone number is stored as `sha256-…`: it matches the
    WeChat id's characters and length, so only its prefix tells it is no openid."""
    from segments.contract import stored_id
    from segments.exporters.ids import invalid_reason

    hashed = stored_id("openid", "o13812345678")
    assert hashed.startswith("sha256-") and len(hashed) == 64
    for kind in ("wechat", "taobao"):
        why = pl.select(invalid_reason(pl.lit(hashed), kind)).item()
        assert why == f"held a phone number, stored hashed: not a {kind} id"
        assert (
            pl.select(invalid_reason(pl.lit("oAMF0jMXSkuCTV2on5qRT1lGrYW8"), kind)).item() is None
        )
