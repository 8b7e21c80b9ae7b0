"""Privacy: no raw phone in any output, packs carry only the hashed forms a platform needs,
opted-out people are in no pack, filters are parsed (never run as Python), model files load only
trusted types, files are owner-only, and unknown config keys are refused by name."""

from __future__ import annotations

import base64
import binascii
import builtins
import contextlib
import gzip
import hashlib
import json
import re
import shutil
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from segments import pipeline
from segments.config import load_config
from segments.errors import ConfigError, DataError
from segments.settings.identity import DEFAULT_BLOCKED_PHONES

# A mobile number standing on its own (inside a hex hash, digits sit between letters).
PHONE = re.compile(r"(?<![0-9A-Za-z])1[3-9]\d{9}(?![0-9A-Za-z])")
TZ = ZoneInfo("Asia/Shanghai")
WEEK = "2026-W47"
# Phones only the privacy input holds: in free text of rejected rows and of a chat message.
PLANTED_PHONES = ("13912345678", "15011112222", "18633334444", "17755556666")
# Phones the privacy input gives where an identifier or a record key belongs: a member id that
# is the member's phone (written two ways), a JD pin made of one, an order id, a phone mentioned
# in a chat message, and a WeCom sender id that is a phone (the id guard refuses it).
ID_PHONES = {
    "member": "13611112222",
    "pin": "13722223333",
    "order": "13833334444",
    "mention": "13944445555",
    "sender": "15855556666",
}
PLATFORMS = [
    ("tencent", {"openid_app_id": "wx0123456789abcdef"}),
    ("oceanengine", {}),
    ("oceanengine_qianchuan", {"variant": "qianchuan"}),
    ("alimama", {}),
    ("meta", {}),
    ("google", {}),
    ("tiktok", {}),
    ("parquet", {}),
]
# Where a raw IDFA may leave the machine: Meta (MADID) and Google take the IDFA itself, and
# the whole-pack Parquet keeps it for them (docs/platforms.md).
RAW_IDFA_OK = {"meta", "google", "parquet"}
# The tests over the privacy workspace share one run, every export and the report (~10 s).
SLOW = pytest.mark.slow


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def cn11(raw: str | None) -> str | None:
    """The contract's phone normalisation, written independently."""
    if raw is None:
        return None
    digits = re.sub(r"\D", "", raw)
    if len(digits) == 15 and digits.startswith("0086"):
        digits = digits[4:]
    elif len(digits) == 13 and digits.startswith("86"):
        digits = digits[2:]
    return digits if re.fullmatch(r"1[3-9]\d{9}", digits) else None


def texts_of(path: Path) -> list[str]:
    """Every text a file holds, decoded: Parquet cells (lists flattened) and metadata, zip
    members, gzip, and base64 lines (Ocean Engine's protobuf lines) decoded too."""
    if path.suffix == ".parquet":
        df = pl.read_parquet(path)
        out: list[str] = []
        for name, dtype in df.schema.items():
            col = df[name]
            if isinstance(dtype, pl.List):
                col = col.explode()
            out.extend(str(v) for v in col.drop_nulls().to_list())
        out.extend(f"{k}={v}" for k, v in pl.read_parquet_metadata(path).items())
        return out
    if path.suffix in (".zip", ".skops"):
        with zipfile.ZipFile(path) as z:
            members = [z.read(n) for n in z.namelist()]
    else:
        data = path.read_bytes()
        members = [gzip.decompress(data) if path.suffix == ".gz" else data]
    out = []
    for blob in members:
        text = blob.decode("utf-8", "replace")
        out.append(text)
        for line in text.splitlines():
            if len(line) >= 16 and re.fullmatch(r"[A-Za-z0-9+/=]+", line):
                with contextlib.suppress(binascii.Error, ValueError):
                    out.append(base64.b64decode(line, validate=True).decode("latin-1"))
    return out


# ---------------------------------------------------------------------------------------------
# The privacy workspace: the demo input plus device ids, tricky consent, and phones planted in
# free text; run, every pack exported to every platform, and the HTML report when it exists


@dataclass
class Privacy:
    input: Path
    ws: Path
    packs: Path
    raw_phones: set[str]
    devices: dict[str, list[str]]  # id type -> raw ids
    p1: str  # one_id: opted out on a phone, opted in on a unionid
    p2: str  # one_id: opted out by the MD5 of a phone it is known by
    p3: str  # one_id: linked to a member_id and a jd_pin that hold a phone
    base: Path  # the demo's own run (the input without this module's additions)


def _input_phones(root: Path) -> dict[str, str]:
    """sha256 -> 11 digits of every phone in the input tables."""
    raw: list[str | None] = []
    orders = pl.read_csv(root / "orders" / "orders.csv", infer_schema=False)
    raw += orders["phone"].to_list()
    raw += orders.filter(pl.col("buyer_id_type") == "phone")["buyer_id"].to_list()
    store = pl.read_parquet(root / "orders" / "store_orders.parquet")
    raw += store.filter(pl.col("buyer_id_type") == "phone")["buyer_id"].to_list()
    raw += store["phone"].to_list()
    links = pl.read_csv(root / "identities" / "links.csv", infer_schema=False)
    for side in ("a", "b"):
        raw += links.filter(pl.col(f"id_type_{side}") == "phone")[f"id_{side}"].to_list()
    consent = pl.read_csv(root / "consent" / "consent.csv", infer_schema=False)
    raw += consent.filter(pl.col("id_type") == "phone")["id"].to_list()
    return {sha256(d): d for d in map(cn11, raw) if d}


@pytest.fixture(scope="module")
def priv(demo_input: Path, demo_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Privacy:
    root = tmp_path_factory.mktemp("privacy")
    inp = root / "input"
    shutil.copytree(demo_input, inp, ignore=shutil.ignore_patterns("truth"))
    phones = _input_phones(inp)

    # people with a phone we know the digits of and a unionid, not opted out already
    id_map = pl.read_parquet(demo_run / "identity" / "one_id_map.parquet")
    tags = pl.read_parquet(demo_run / "weeks" / WEEK / "tags.parquet")
    out_before = set(tags.filter(pl.col("is_opted_out"))["one_id"])
    people = (
        id_map.group_by("one_id")
        .agg(
            pl.col("id").filter(pl.col("id_type") == "phone_sha256").first().alias("phone"),
            pl.col("id").filter(pl.col("id_type") == "unionid").first().alias("unionid"),
            pl.len().alias("n"),
        )
        .filter(
            pl.col("phone").is_in(list(phones))
            & pl.col("unionid").is_not_null()
            & ~pl.col("one_id").is_in(list(out_before))
        )
        .sort("one_id")
    )
    assert people.height >= 40, "the demo has too few people with a phone and a unionid"
    rows = people.rows(named=True)
    p1, p2, with_devices, p3 = rows[0], rows[1], rows[2:32], rows[32]

    devices: dict[str, list[str]] = {"imei": [], "idfa": [], "oaid": []}
    links = []
    for i, person in enumerate(with_devices):
        kind = ("imei", "idfa", "oaid")[i % 3]
        h = sha256(f"device-{i}")
        value = {
            "imei": "86" + str(int(h[:12], 16)).zfill(13)[:13],
            "idfa": f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}".upper(),
            "oaid": f"{h[32:40]}-{h[40:44]}-{h[44:48]}-{h[48:52]}-{h[52:64]}",
        }[kind]
        devices[kind].append(value)
        links.append(("unionid", person["unionid"], kind, value, "app_sdk", "2026-11-01 10:00:00"))
    member, pin = ID_PHONES["member"], ID_PHONES["pin"]
    links += [
        ("unionid", p3["unionid"], "member_id", member, "crm", "2026-11-01 10:00:00"),
        ("unionid", p3["unionid"], "jd_pin", f"jd_{pin}", "crm", "2026-11-01 10:00:00"),
    ]
    pl.DataFrame(
        links,
        schema=["id_type_a", "id_a", "id_type_b", "id_b", "source", "observed_at"],
        orient="row",
    ).write_csv(inp / "identities" / "zz_devices.csv")

    d1, d2 = phones[p1["phone"]], phones[p2["phone"]]
    consent = [
        ("phone", f"+86 {d1[:3]} {d1[3:7]} {d1[7:]}", "opt_out", "2026-10-01 09:00:00"),
        ("unionid", p1["unionid"], "opt_out", "2026-09-01 09:00:00"),
        ("unionid", p1["unionid"], "opt_in", "2026-11-01 09:00:00"),  # latest for the unionid
        ("phone_md5", md5(d2), "opt_out", "2026-11-01 09:00:00"),
    ]
    pl.DataFrame(consent, schema=["id_type", "id", "status", "updated_at"], orient="row").write_csv(
        inp / "consent" / "zz_extra.csv"
    )

    # phones in free text: rejected rows (masked in rejects) and a chat message (never output)
    a, b, c, d = PLANTED_PHONES
    (inp / "orders" / "zz_dirty.csv").write_text(
        "order_id,source,buyer_id_type,buyer_id,phone,paid_at,amount\n"
        f"z1,store,phone,{a[:10]},,2026-11-20 10:00:00,10\n"
        f"z2,tmall,taobao_ouid,tbPRIV0001,,2026-11-20 10:00:00,call {b}\n"
        f"z3,tmall,taobao_ouid,tbPRIV0002,+86 {c},2026-11-20 10:00:00,-5\n",
        encoding="utf-8",
    )
    # ... and a phone where a category belongs (a shifted column): an accepted order whose
    # category, unplaced by the taxonomy, the person state keeps (masked at ingest)
    (inp / "orders" / "zz_category.csv").write_text(
        "order_id,source,buyer_id_type,buyer_id,phone,paid_at,amount,category\n"
        f"z4,tmall,taobao_ouid,tbPRIV0003,,2026-11-20 10:00:00,10,备注 {d}\n",
        encoding="utf-8",
    )
    # identifiers and keys that hold a phone: the member's order, the member id written with
    # spaces (it fails member_id's pattern: refused, as the raw value was), an order id
    (inp / "orders" / "zz_ids.csv").write_text(
        "order_id,source,buyer_id_type,buyer_id,phone,paid_at,amount\n"
        f"{ID_PHONES['order']},store,member_id,{member},,2026-11-20 11:00:00,120\n"
        f"z6,store,member_id,{member[:3]} {member[3:7]} {member[7:]},,2026-11-20 11:00:00,80\n",
        encoding="utf-8",
    )
    chat = {
        "msg_id": "zmsg1",
        "sender_id": "wmPRIVACY00000001",
        "ts": "2026-11-20 10:00:00",
        "text": f"加我微信 {d} 拼单帐篷",
    }
    chat_wide = {**chat, "msg_id": "zmsg3", "text": f"电话{_full_width(c)}，谢谢"}  # full-width
    mention = {**chat, "msg_id": "zmsg4", "text": "在吗", "mentions": [ID_PHONES["mention"]]}
    by_phone = {**chat, "msg_id": "zmsg5", "sender_id": ID_PHONES["sender"], "text": "好"}
    (inp / "messages" / "zz_chat.jsonl").write_text(
        json.dumps(chat, ensure_ascii=False)
        + "\n"
        + json.dumps(chat_wide, ensure_ascii=False)
        + "\n"
        + json.dumps(mention, ensure_ascii=False)
        + "\n"
        + json.dumps(by_phone, ensure_ascii=False)
        + "\n"
        + f'{{"msg_id": "zmsg2", "text": "{a}\n',
        encoding="utf-8",
    )

    ws = root / "out"
    pipeline.run(load_config(), inp, ws)
    pipeline.refresh(load_config(), inp, ws)  # the live table, scanned for phones too

    from segments.audiences import PackDef, export_pack

    everyone = PackDef(
        name="everyone", where="one_id IS NOT NULL", min_size=1, suppress_coupon_hunters=False
    )
    packs = root / "packs"
    for name, opts in PLATFORMS:
        platform = name.split("_")[0]
        export_pack(
            ws,
            "everyone",
            platform,
            packs / name,
            options={"min_size": 1, **opts},
            audiences={"everyone": everyone},
        )
    try:
        from segments.report import build_report
    except ImportError:
        pass
    else:
        build_report(ws, to=ws / "report.html")
    return Privacy(
        input=inp,
        ws=ws,
        packs=packs,
        raw_phones=set(phones.values())
        | set(PLANTED_PHONES)
        | set(ID_PHONES.values())
        | {_full_width(p) for p in PLANTED_PHONES},
        devices=devices,
        p1=p1["one_id"],
        p2=p2["one_id"],
        p3=p3["one_id"],
        base=demo_run,
    )


def _full_width(digits: str) -> str:
    """A phone as a Chinese input method types it: ０-９ (U+FF10..U+FF19)."""
    return digits.translate({ord(str(i)): 0xFF10 + i for i in range(10)})


def _files(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
# Raw phones, raw identifiers


@SLOW
def test_no_raw_phone_in_any_output(priv: Privacy) -> None:
    files = _files(priv.ws, priv.packs)
    kinds = {p.suffix for p in files}
    assert {".parquet", ".json", ".jsonl", ".zip", ".csv", ".skops"} <= kinds
    assert (
        list(priv.ws.glob("runs/*/manifest.json")) and (priv.ws / "exports" / "log.jsonl").is_file()
    )
    assert len(priv.raw_phones) > 100  # the input has phones to leak
    assert list(priv.ws.glob("current/v*/tags.parquet"))  # the live table is read too
    leaks = []
    for path in files:
        for text in texts_of(path):
            leaks += [(str(path), m) for m in PHONE.findall(text)]
            leaks += [(str(path), p) for p in priv.raw_phones if p in text]
    assert leaks == []


def _as_stored(value: str) -> str:
    """The documented stored form of an identifier or key holding a phone, written
    independently: "sha256-" and the SHA-256 hex of the value as written, 64 characters."""
    return ("sha256-" + sha256(value))[:64]


@SLOW
def test_an_identifier_holding_a_phone_is_stored_hashed_and_still_links(priv: Privacy) -> None:
    """A member id and a JD pin that hold a phone are stored hashed, link the person as their
    raw values would, and are found by the raw value (CLI lookup and the API's person route
    hash it the same way); the member's order counts for the person."""
    from segments.identity import lookup

    id_map = pl.read_parquet(priv.ws / "identity" / "one_id_map.parquet")
    member, pin = ID_PHONES["member"], ID_PHONES["pin"]
    held = id_map.filter(pl.col("one_id") == priv.p3)
    assert {("member_id", _as_stored(member)), ("jd_pin", _as_stored(f"jd_{pin}"))} <= set(
        held.select("id_type", "id").iter_rows()
    )
    # the member id written with spaces fails member_id's pattern, as it did raw: refused,
    # and recorded hashed (the refused form)
    spaced = f"{member[:3]} {member[3:7]} {member[7:]}"
    rejected = pl.read_parquet(priv.ws / "identity" / "rejected_ids.parquet")
    refused = "sha256~" + _as_stored(spaced)[len("sha256-") :]
    assert rejected.filter(pl.col("id") == refused)["reason"].to_list() == ["pattern:member_id"]
    assert id_map.filter(pl.col("id").str.ends_with(refused[7:])).height == 0
    found = lookup(id_map, "member_id", member)
    assert set(found["one_id"]) == {priv.p3}
    assert set(lookup(id_map, "jd_pin", f"jd_{pin}")["one_id"]) == {priv.p3}

    # the order under the member id counts for the person: 120 CNY more than without it
    def spent(ws: Path) -> float:
        tags = pl.read_parquet(ws / "weeks" / WEEK / "tags.parquet")
        return tags.filter(pl.col("one_id") == priv.p3)["monetary_52w"].item()

    assert spent(priv.ws) == pytest.approx(spent(priv.base) + 120.0)


@SLOW
def test_a_wecom_id_that_is_a_phone_is_refused_and_recorded_hashed(priv: Privacy) -> None:
    """A WeCom id must start with wm or wo: a phone there was refused raw and is refused
    hashed, and so is a phone mentioned in a message (mentions are WeCom ids)."""
    rejected = pl.read_parquet(priv.ws / "identity" / "rejected_ids.parquet")
    reasons = dict(zip(rejected["id"], rejected["reason"], strict=True))
    for key in ("sender", "mention"):
        refused = "sha256~" + _as_stored(ID_PHONES[key])[len("sha256-") :]
        assert reasons.get(refused) == "pattern:wecom_external_userid", key


@SLOW
def test_a_phone_in_a_category_is_masked_before_it_is_stored(priv: Privacy) -> None:
    """The order with a phone in its category was kept, and the person state holds its
    category (one the taxonomy places nowhere) masked: the raw digits are nowhere
    (`test_no_raw_phone_in_any_output`)."""
    stored = sorted((priv.ws / "state").rglob("*-orders-*.parquet"))
    kept = pl.scan_parquet(stored).select("ucat").drop_nulls().unique().collect()["ucat"]
    assert "备注 <phone>" in kept.to_list()


@SLOW
def test_the_planted_phones_reached_the_rejects_masked(priv: Privacy) -> None:
    rej = pl.read_parquet(priv.ws / "rejects" / "orders.parquet").filter(
        pl.col("file") == "orders/zz_dirty.csv"
    )
    values = dict(zip(rej["row"], rej["value"], strict=True))
    assert set(values) == {1, 2, 3}
    assert values[1].startswith("139") and "*" in values[1]  # a phone id: first 3 digits only
    assert values[2] == "call <phone>"  # a phone inside another value
    msgs = pl.read_parquet(priv.ws / "rejects" / "messages.parquet")
    assert msgs.filter(pl.col("file") == "messages/zz_chat.jsonl").height == 1


@SLOW
def test_raw_device_ids_leave_only_where_the_platform_takes_them(priv: Privacy) -> None:
    """IMEI and OAID are always hashed; a raw IDFA goes only to Meta, Google and the Parquet pack."""
    tencent = json.loads(
        next((priv.packs / "tencent").glob("*_manifest.json")).read_text(encoding="utf-8")
    )
    written = json.dumps(tencent)
    for kind in ("HASH_IMEI", "HASH_IDFA", "HASH_OAID"):
        assert kind in written, f"no {kind} file: the device ids never reached a pack"
    leaks = []
    for name, _ in PLATFORMS:
        for path in _files(priv.packs / name):
            text = "\n".join(texts_of(path))
            low = text.lower()
            for kind, values in priv.devices.items():
                if kind == "idfa" and name in RAW_IDFA_OK:
                    continue
                for v in values:
                    for form in {v.lower(), v.lower().replace("-", "")}:
                        if form in low:
                            leaks.append((name, path.name, kind, v))
    assert leaks == []


@SLOW
def test_packs_hold_no_one_id_outside_the_parquet_pack(priv: Privacy) -> None:
    one_ids = set(pl.read_parquet(priv.ws / "identity" / "one_id_map.parquet")["one_id"])
    for name, _ in PLATFORMS:
        if name == "parquet":
            continue
        for path in _files(priv.packs / name):
            text = "\n".join(texts_of(path))
            found = {t for t in re.findall(r"U[0-9a-f]{16}", text) if t in one_ids}
            assert not found, (name, path.name)


@SLOW
def test_blocked_test_numbers_are_recorded_only_as_hashes(priv: Privacy) -> None:
    [manifest_path] = priv.ws.glob("runs/*/manifest.json")
    text = manifest_path.read_text(encoding="utf-8")
    blocked = json.loads(text)["config"]["identity"]["blocked_phones"]
    assert len(blocked) == len(DEFAULT_BLOCKED_PHONES)
    assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", b) for b in blocked)
    assert not [p for p in DEFAULT_BLOCKED_PHONES if p in text]


@SLOW
def test_every_file_is_readable_by_its_owner_only(priv: Privacy) -> None:
    loose = [
        (str(p), oct(p.stat().st_mode & 0o777))
        for p in _files(priv.ws, priv.packs)
        if p.stat().st_mode & 0o077
    ]
    assert loose == []


@SLOW
def test_the_html_report_holds_no_identifier(priv: Privacy) -> None:
    pytest.importorskip("segments.report")
    page = (priv.ws / "report.html").read_text(encoding="utf-8")
    id_map = pl.read_parquet(priv.ws / "identity" / "one_id_map.parquet")
    leaks = [i for i in id_map["id"].to_list() + id_map["one_id"].to_list() if i in page]
    assert leaks == []
    assert not [p for p in priv.raw_phones if p in page]


# ---------------------------------------------------------------------------------------------
# Consent


def _opted_out_identifiers(input_dir: Path) -> set[tuple[str, str]]:
    """(id_type, id) whose latest consent row is an opt-out, computed from the input files."""
    latest: dict[tuple[str, str], tuple[datetime, int, str]] = {}
    order = 0
    for path in sorted((input_dir / "consent").glob("*.csv")):
        for row in pl.read_csv(path, infer_schema=False).iter_rows(named=True):
            order += 1
            id_type, ident = row["id_type"].strip(), row["id"].strip()
            if id_type == "phone":
                digits = cn11(ident)
                if digits is None:
                    continue
                id_type, ident = "phone_sha256", sha256(digits)
            at = datetime.fromisoformat(row["updated_at"].strip())
            if at.tzinfo is not None:
                at = at.astimezone(TZ).replace(tzinfo=None)
            key = (id_type, ident)
            if key not in latest or (at, order) >= latest[key][:2]:
                latest[key] = (at, order, row["status"].strip().lower())
    return {k for k, (_, _, status) in latest.items() if status == "opt_out"}


@SLOW
def test_opted_out_people_are_in_no_pack(priv: Privacy) -> None:
    from segments.audiences import load_audiences, select_pack

    id_map = pl.read_parquet(priv.ws / "identity" / "one_id_map.parquet")
    # (an opt-out by phone_md5 is a known bug, tested below)
    out_ids = {k for k in _opted_out_identifiers(priv.input) if k[0] != "phone_md5"}
    keys = pl.DataFrame(list(out_ids), schema=["id_type", "id"], orient="row")
    opted = set(id_map.join(keys, on=["id_type", "id"], how="semi")["one_id"])
    assert priv.p1 in opted  # an opt-out on one identifier, an opt-in on another: out
    tags = pl.read_parquet(priv.ws / "weeks" / WEEK / "tags.parquet")
    assert set(tags.filter(pl.col("is_opted_out"))["one_id"]) >= opted
    assert len(opted) >= 3

    # every shipped pack, and everyone: the selection never holds them
    packs = load_audiences()
    for name, pack in packs.items():
        sel = select_pack(tags.lazy(), pack, packs)
        assert not set(sel.frame["one_id"]) & opted, name
        assert not set(sel.holdout["one_id"]) & opted, name

    # and no identifier of theirs, in any form, is in any exported file
    mine = id_map.filter(pl.col("one_id").is_in(list(opted)))
    hashes = pl.read_parquet(priv.ws / "identity" / "phone_hashes.parquet")
    forms: set[str] = set(mine["one_id"])
    for ident in mine["id"].to_list():
        for v in {ident, ident.lower(), ident.upper()}:
            forms |= {v, md5(v), sha256(v), sha256(md5(v))}
    ph = hashes.join(
        mine.filter(pl.col("id_type") == "phone_sha256").select(pl.col("id").alias("phone_sha256")),
        on="phone_sha256",
        how="semi",
    )
    forms |= {v for row in ph.iter_rows() for v in row if v}
    pack = pl.read_parquet(next((priv.packs / "parquet").glob("*.parquet")))
    assert pack.height > 100 and not set(pack["one_id"]) & opted
    leaks = []
    for path in _files(priv.packs):
        if path.name.endswith("_manifest.json"):
            continue
        text = "\n".join(texts_of(path))
        leaks += [(path.name, f) for f in forms if len(f) >= 8 and f in text]
    assert leaks == []


@SLOW
def test_an_opt_out_by_phone_md5_removes_the_person(priv: Privacy) -> None:
    tags = pl.read_parquet(priv.ws / "weeks" / WEEK / "tags.parquet")
    opted_md5 = [i for t, i in _opted_out_identifiers(priv.input) if t == "phone_md5"]
    assert len(opted_md5) == 1
    # today the person is exported, with the very MD5 they opted out with (Tencent
    # HASH_MOBILE_PHONE, the Parquet pack)
    leaks = [p.name for p in _files(priv.packs) if opted_md5[0] in "\n".join(texts_of(p))]
    assert leaks == []
    assert tags.filter(pl.col("one_id") == priv.p2)["is_opted_out"].to_list() == [True]


# ---------------------------------------------------------------------------------------------
# Filters are parsed, never evaluated as Python

HOSTILE_FILTERS = [
    "__import__('os').system('touch {flag}')",
    "eval(\"open('{flag}', 'w')\")",
    "exec('import os')",
    "open('{flag}', 'w').write('x')",
    "(lambda: 1)()",
    "is_high_value; DROP TABLE tags",
    "is_high_value OR (SELECT 1) = 1",
    "one_id IN (SELECT one_id FROM tags)",
    "is_high_value and __class__.__subclasses__()",
    "getattr(one_id, '__class__')",
    "one_id.__class__",
    "`os`.system('touch {flag}')",
    "\x00is_high_value",
]


@pytest.mark.parametrize("text", HOSTILE_FILTERS)
def test_filters_are_parsed_never_evaluated(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    audiences = pytest.importorskip("segments.audiences")
    flag = tmp_path / "pwned"
    text = text.replace("{flag}", str(flag))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a filter reached Python's eval/exec")

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    tags = pl.DataFrame({"one_id": ["U1"], "is_high_value": [True], "is_opted_out": [False]}).lazy()
    schema = tags.collect_schema()
    try:
        expr = audiences.compile_filter(text)
    except ConfigError as e:
        assert "\n" not in str(e)
        with pytest.raises(ConfigError):  # the pack definition is refused as it loads
            audiences.audiences_from_dict({"packs": {"bad": {"where": text, "min_size": 1}}})
    else:
        # it parsed as SQL: then it can only name columns, and these name no tag column
        with pytest.raises(ConfigError):
            audiences.check_filter(expr, text, schema, "p")
    assert not flag.exists()


def test_a_pack_filter_error_names_the_pack() -> None:
    audiences = pytest.importorskip("segments.audiences")
    with pytest.raises(ConfigError, match="bad"):
        audiences.audiences_from_dict(
            {"packs": {"bad": {"where": "__import__('os').system('true')", "min_size": 1}}}
        )


# ---------------------------------------------------------------------------------------------
# Model files load only trusted types


class Booby:
    """A type no allow-list knows; loading it would write a file."""

    flag: Path | None = None

    def __setstate__(self, state: dict) -> None:
        if Booby.flag is not None:
            Booby.flag.write_text("loaded")
        self.__dict__.update(state)


def test_model_files_refuse_foreign_types(tmp_path: Path) -> None:
    clustering = pytest.importorskip("segments.clustering")
    import os

    import numpy as np

    X = np.random.default_rng(0).normal(size=(60, 2))
    flag = tmp_path / "loaded"
    Booby.flag = flag
    for i, extra in enumerate([os.system, eval, Booby()]):
        est = clustering.UserClusterer(n_clusters=2).fit(X)
        est.extra_ = extra
        path = tmp_path / f"m{i}.skops"
        clustering.save_model(est, path)
        with pytest.raises(DataError, match=r"refusing to load untrusted type\(s\)"):
            clustering.load_model(path)
    assert not flag.exists()

    # a good file tampered with: its top object now claims to be subprocess.Popen
    good = tmp_path / "good.skops"
    clustering.save_model(clustering.UserClusterer(n_clusters=2).fit(X), good)
    clustering.load_model(good)  # loads as it is
    bad = tmp_path / "bad.skops"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "schema.json":
                schema = json.loads(data)
                schema["__module__"], schema["__class__"] = "subprocess", "Popen"
                data = json.dumps(schema).encode()
            dst.writestr(item, data)
    with pytest.raises(DataError, match=r"subprocess\.Popen"):
        clustering.load_model(bad)
    (tmp_path / "junk.skops").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(DataError, match="not a readable skops model file"):
        clustering.load_model(tmp_path / "junk.skops")


# ---------------------------------------------------------------------------------------------
# Config


def test_an_unknown_config_key_is_rejected_by_name(tmp_path: Path) -> None:
    path = tmp_path / "segments.toml"
    path.write_text("[rfm]\nbogus = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "rfm.bogus" in str(e.value) and "unknown key" in str(e.value)
    assert str(e.value).splitlines()[0] == f"{path} has 1 problem:"


@SLOW
def test_the_api_finds_a_person_by_an_identifier_holding_a_phone(priv: Privacy) -> None:
    """The person route hashes a member id the way ingest stored it, and says nothing of the
    raw value when nobody holds it."""
    from fastapi.testclient import TestClient

    from segments.serve.app import ServeSettings, create_app

    with TestClient(create_app(ServeSettings(workspace=priv.ws))) as client:
        found = client.get(f"/v1/people/member_id/{ID_PHONES['member']}")
        assert found.status_code == 200, found.text
        assert found.json()["one_id"] == priv.p3
        unknown = client.get("/v1/people/member_id/13599998888")
        assert unknown.status_code == 404 and "13599998888" not in unknown.text


@SLOW
def test_the_cli_lookup_hashes_the_identifier_and_never_echoes_a_phone(priv: Privacy) -> None:
    from click.testing import CliRunner

    from segments.cli import cli

    ws = ["--workspace", str(priv.ws)]
    found = CliRunner().invoke(cli, ["identity", "lookup", "member_id", ID_PHONES["member"], *ws])
    assert found.exit_code == 0, found.output
    assert f"one_id={priv.p3}" in found.output and ID_PHONES["member"] not in found.output
    unknown = CliRunner().invoke(cli, ["identity", "lookup", "member_id", "13599998888", *ws])
    assert unknown.exit_code == 1
    assert unknown.output.strip() == "no person holds member_id <phone>"
