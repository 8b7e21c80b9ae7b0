"""The demo generator: determinism, planted truth consistent with the inputs, traps, realism."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import date, datetime
from pathlib import Path

import networkx as nx
import polars as pl
import pytest

from segments.contract import CONSENT, EVENTS, IDENTITIES, ORDERS, normalize_phone
from segments.demo import (
    PERSONA_SHARES,
    PERSONAS,
    PLACEHOLDER_IDS,
    TAXONOMY,
    TEST_PHONE,
    DemoSummary,
    generate,
)
from segments.errors import ConfigError
from segments.taxonomy import load_taxonomy

FILES = (
    "orders/orders.csv",
    "orders/store_orders.parquet",
    "events/events.parquet",
    "messages/wecom_archive.jsonl",
    "identities/links.csv",
    "consent/consent.csv",
    "truth/persons.parquet",
    "truth/identifiers.parquet",
)
WECHAT = ("unionid", "openid", "wecom_external_userid")
END = date(2026, 11, 22)


def _sha(digits: str) -> str:
    return hashlib.sha256(digits.encode()).hexdigest()


@pytest.fixture(scope="module")
def demo2k(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoSummary, float]:
    out = tmp_path_factory.mktemp("demo2k")
    t0 = time.perf_counter()
    summary = generate(out, users=2000, seed=11)
    return out, summary, time.perf_counter() - t0


@pytest.fixture(scope="module")
def demo300(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo300")
    generate(out, users=300, seed=7)
    return out


def _orders(d: Path) -> pl.DataFrame:
    csv = pl.read_csv(d / "orders/orders.csv", infer_schema=False)
    pq = pl.read_parquet(d / "orders/store_orders.parquet")
    return pl.concat([csv, pq.select(pl.all().cast(pl.String))])


def _messages(d: Path) -> pl.DataFrame:
    return pl.read_ndjson(d / "messages/wecom_archive.jsonl")


def _key(type_col: str, id_col: str) -> pl.Expr:
    """`id_type|id`, a raw phone as `phone_sha256|<hash>` (null when not a valid phone)."""
    phone = normalize_phone(pl.col(id_col)).map_elements(_sha, return_dtype=pl.String)
    return (
        pl.when(pl.col(type_col) == "phone")
        .then(pl.lit("phone_sha256|") + phone)
        .otherwise(pl.col(type_col) + "|" + pl.col(id_col))
    )


def _input_phones(d: Path) -> pl.Series:
    """Every valid normalised phone written anywhere in the inputs."""
    o, idl = _orders(d), pl.read_csv(d / "identities/links.csv", infer_schema=False)
    consent = pl.read_csv(d / "consent/consent.csv", infer_schema=False)
    raw = pl.concat(
        [
            o["phone"],
            o.filter(pl.col("buyer_id_type") == "phone")["buyer_id"],
            idl.filter(pl.col("id_type_a") == "phone")["id_a"],
            idl.filter(pl.col("id_type_b") == "phone")["id_b"],
            consent.filter(pl.col("id_type") == "phone")["id"],
        ]
    )
    return pl.select(normalize_phone(raw)).to_series().drop_nulls().unique()


def _input_keys(d: Path) -> set[str]:
    """Every identifier in the inputs as `id_type|id`, phones hashed."""
    o, m = _orders(d), _messages(d)
    idl = pl.read_csv(d / "identities/links.csv", infer_schema=False)
    consent = pl.read_csv(d / "consent/consent.csv", infer_schema=False)
    ev = pl.read_parquet(d / "events/events.parquet")
    keys = pl.concat(
        [
            o.select(k=_key("buyer_id_type", "buyer_id")),
            o.select(
                k=pl.lit("phone_sha256|")
                + normalize_phone("phone").map_elements(_sha, return_dtype=pl.String)
            ),
            ev.select(k=_key("user_id_type", "user_id")),
            m.select(k=pl.lit("wecom_external_userid|") + pl.col("from")),
            m.select(k=pl.lit("wecom_external_userid|") + pl.col("tolist").explode()),
            idl.select(k=_key("id_type_a", "id_a")),
            idl.select(k=_key("id_type_b", "id_b")),
            consent.select(k=_key("id_type", "id")),
        ]
    )
    return set(keys["k"].drop_nulls())


def _truth_keys(d: Path) -> pl.DataFrame:
    ids = pl.read_parquet(d / "truth/identifiers.parquet")
    return ids.with_columns(k=pl.col("id_type") + "|" + pl.col("id"))


def _evidence_edges(d: Path) -> pl.DataFrame:
    """Links the inputs state: identity rows, and each order's buyer with its receiver phone."""
    o = _orders(d)
    idl = pl.read_csv(d / "identities/links.csv", infer_schema=False)
    phone = pl.lit("phone_sha256|") + normalize_phone("phone").map_elements(
        _sha, return_dtype=pl.String
    )
    return pl.concat(
        [
            o.select(a=_key("buyer_id_type", "buyer_id"), b=phone),
            idl.select(a=_key("id_type_a", "id_a"), b=_key("id_type_b", "id_b")),
        ]
    ).drop_nulls()


# --------------------------------------------------------------------------------------------
# Determinism and layout


def test_same_seed_writes_identical_bytes(demo300: Path, tmp_path: Path) -> None:
    again = generate(tmp_path, users=300, seed=7)
    assert again.persons == 300
    for rel in FILES:
        assert (tmp_path / rel).read_bytes() == (demo300 / rel).read_bytes(), rel


def test_different_seeds_differ(demo300: Path, tmp_path: Path) -> None:
    generate(tmp_path, users=300, seed=8)
    for rel in FILES:
        assert (tmp_path / rel).read_bytes() != (demo300 / rel).read_bytes(), rel


def test_every_input_file_is_readable_and_has_the_contract_columns(demo300: Path) -> None:
    csv = pl.read_csv(demo300 / "orders/orders.csv", infer_schema=False)
    assert csv.columns == ORDERS.names
    store = pl.read_parquet(demo300 / "orders/store_orders.parquet")
    assert store.columns == ORDERS.names
    assert set(store["source"].unique()) == {"store", "miniprogram"}
    assert set(csv["source"].unique()) == {"tmall", "taobao", "jd", "douyin"}
    events = pl.read_parquet(demo300 / "events/events.parquet")
    assert events.columns == EVENTS.names
    links = pl.read_csv(demo300 / "identities/links.csv", infer_schema=False)
    assert links.columns == IDENTITIES.names
    consent = pl.read_csv(demo300 / "consent/consent.csv", infer_schema=False)
    assert consent.columns == CONSENT.names
    messages = _messages(demo300)
    assert messages.columns == [
        "msgid",
        "action",
        "from",
        "tolist",
        "roomid",
        "msgtime",
        "msgtype",
        "text",
    ]
    assert messages.schema["tolist"] == pl.List(pl.String)
    assert messages.schema["msgtime"] == pl.Int64
    assert set(messages["action"]) == {"send"} and set(messages["msgtype"]) == {"text"}
    for frame, required in (
        (csv, ORDERS),
        (store, ORDERS),
        (events, EVENTS),
        (links, IDENTITIES),
        (consent, CONSENT),
    ):
        assert set(required.required) <= set(frame.columns)
        assert frame.height > 0


def test_summary_counts_match_the_files(demo300: Path) -> None:
    s = generate(demo300.parent / "again300", users=300, seed=7)
    assert s.orders == _orders(demo300).height
    assert s.events == pl.read_parquet(demo300 / "events/events.parquet").height
    assert s.messages == _messages(demo300).height
    assert s.identifiers == pl.read_parquet(demo300 / "truth/identifiers.parquet").height
    assert sum(s.personas.values()) == s.persons == 300
    assert s.as_dict()["out_dir"] == str(demo300.parent / "again300")


@pytest.mark.parametrize(
    ("name", "kwargs"), [("users", {"users": 0}), ("weeks", {"weeks": 0}), ("seed", {"seed": -1})]
)
def test_bad_arguments_raise_config_error(tmp_path: Path, name: str, kwargs: dict) -> None:
    with pytest.raises(ConfigError, match=f"--{name} must be an int"):
        generate(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("users", [1, 7])
def test_tiny_populations_still_write_every_file(tmp_path: Path, users: int) -> None:
    s = generate(tmp_path, users=users, seed=5, weeks=3)
    assert all((tmp_path / rel).is_file() for rel in FILES)
    persons = pl.read_parquet(tmp_path / "truth/persons.parquet")
    assert persons.height == s.persons == users
    assert pl.read_csv(tmp_path / "orders/orders.csv", infer_schema=False).columns == ORDERS.names


def test_two_thousand_people_generate_in_a_few_seconds(
    demo2k: tuple[Path, DemoSummary, float],
) -> None:
    _, summary, seconds = demo2k
    assert summary.persons == 2000
    assert seconds < 10, f"2k people took {seconds:.1f}s"


def test_timestamps_stay_inside_the_weeks_ending_on_a_sunday(tmp_path: Path) -> None:
    generate(tmp_path, users=200, seed=3, end=date(2026, 11, 25), weeks=8)  # a Wednesday
    first, end = datetime(2026, 9, 28), datetime(2026, 11, 23)  # 8 weeks to Sunday 2026-11-22
    ev = pl.read_parquet(tmp_path / "events/events.parquet")
    store = pl.read_parquet(tmp_path / "orders/store_orders.parquet")
    csv = pl.read_csv(tmp_path / "orders/orders.csv", infer_schema=False)
    paid = csv.filter(pl.col("paid_at") != "yesterday").select(
        pl.col("paid_at")
        .str.slice(0, 19)
        .str.replace("T", " ")
        .str.to_datetime("%Y-%m-%d %H:%M:%S")
    )
    msg = _messages(tmp_path).select(
        pl.from_epoch(pl.col("msgtime") + 8 * 3600 * 1000, time_unit="ms")
    )
    for ts in (ev["ts"], store["paid_at"], paid["paid_at"], msg["msgtime"]):
        assert ts.min() >= first and ts.max() < end


# --------------------------------------------------------------------------------------------
# Truth against inputs


def test_truth_holds_no_raw_phone(demo2k: tuple[Path, DemoSummary, float]) -> None:
    d = demo2k[0]
    phones = _input_phones(d)
    assert phones.len() > 1000
    ids = pl.read_parquet(d / "truth/identifiers.parquet")
    persons = pl.read_parquet(d / "truth/persons.parquet")
    assert "phone" not in set(ids["id_type"])
    hashed = ids.filter(pl.col("id_type") == "phone_sha256")["id"]
    assert hashed.str.contains(r"^[0-9a-f]{64}$").all()
    for column in (ids["person_id"], ids["id"], persons["person_id"]):
        assert not column.str.contains_any(phones.to_list()).any()
    assert not ids["id"].str.contains(r"^\+?(00)?(86)?[- ]?1[3-9]\d[- ]?\d{4}[- ]?\d{4}$").any()


def test_every_truth_identifier_appears_in_the_inputs(
    demo2k: tuple[Path, DemoSummary, float],
) -> None:
    d = demo2k[0]
    truth = _truth_keys(d)
    missing = set(truth["k"]) - _input_keys(d)
    assert not missing, sorted(missing)[:5]
    assert truth.select(pl.col("k").is_duplicated().any()).item() is False  # one owner per id


def test_every_person_has_an_identifier(demo2k: tuple[Path, DemoSummary, float]) -> None:
    d = demo2k[0]
    persons = pl.read_parquet(d / "truth/persons.parquet")
    ids = pl.read_parquet(d / "truth/identifiers.parquet")
    assert persons["person_id"].is_unique().all()
    assert set(persons["person_id"]) == set(ids["person_id"])


def test_evidence_links_both_sides_of_about_95_percent_and_never_two_people(
    demo2k: tuple[Path, DemoSummary, float],
) -> None:
    d = demo2k[0]
    truth = _truth_keys(d)
    real = set(truth["k"])
    g = nx.Graph()
    g.add_nodes_from(real)
    g.add_edges_from((a, b) for a, b in _evidence_edges(d).iter_rows() if a in real and b in real)
    component = {node: n for n, nodes in enumerate(nx.connected_components(g)) for node in nodes}
    t = truth.with_columns(
        comp=pl.col("k").replace_strict(component),
        wechat=pl.col("id_type").is_in(WECHAT),
    )
    # Between real identifiers the evidence never joins two people: traps are the only false links.
    assert (
        t.group_by("comp")
        .agg(pl.col("person_id").n_unique())
        .filter(pl.col("person_id") > 1)
        .is_empty()
    )
    per = t.group_by("person_id").agg(
        linked=pl.col("comp").n_unique() == 1,
        both=pl.col("wechat").any() & (~pl.col("wechat")).any(),
    )
    both = per.filter("both")
    assert both.height > 1200
    assert 0.90 <= both["linked"].mean() <= 0.99


def test_persona_shares_are_near_their_targets(demo2k: tuple[Path, DemoSummary, float]) -> None:
    d, summary, _ = demo2k
    persons = pl.read_parquet(d / "truth/persons.parquet")
    shares = dict(persons["persona"].value_counts().iter_rows())
    recorded = json.loads((d / "truth/constants.json").read_text(encoding="utf-8"))
    drawn = recorded["persona_shares"]  # this seed's mix, drawn around PERSONA_SHARES
    assert drawn != list(PERSONA_SHARES) and abs(sum(drawn) - 1) < 1e-5
    for persona, target, centre in zip(PERSONAS, drawn, PERSONA_SHARES, strict=True):
        assert abs(shares[persona] / 2000 - target) < 0.03, persona
        assert 0.4 * centre < target < 2.0 * centre, persona
        assert summary.personas[persona] == shares[persona]
    assert (persons["is_coupon_hunter"] == (persons["persona"] == "coupon_hunter")).all()


def test_interests_come_from_the_taxonomy_with_the_primary_first(
    demo2k: tuple[Path, DemoSummary, float],
) -> None:
    persons = pl.read_parquet(demo2k[0] / "truth/persons.parquet")
    n = persons["interests"].list.len()
    with_interest = persons.filter(n > 0)
    assert set(with_interest["interests"].explode()) <= set(TAXONOMY)
    assert (with_interest["primary_interest"] == with_interest["interests"].list.first()).all()
    assert n.max() == 3
    lists = with_interest["interests"]
    assert (lists.list.n_unique() == lists.list.len()).all()
    none = persons.filter(n == 0)
    assert none.height > 0 and (none["persona"] == "coupon_hunter").all()
    assert none["primary_interest"].is_null().all()


def test_taxonomy_is_the_shipped_default() -> None:
    shipped = load_taxonomy()
    assert {it.name: it.categories for it in shipped.interests} == TAXONOMY


def test_primary_interest_dominates_a_persons_orders_and_events(
    demo2k: tuple[Path, DemoSummary, float],
) -> None:
    d = demo2k[0]
    ids = pl.read_parquet(d / "truth/identifiers.parquet")
    persons = pl.read_parquet(d / "truth/persons.parquet")
    cat = pl.DataFrame(
        [(c, i) for i, cats in TAXONOMY.items() for c in cats],
        schema=["category", "cat_interest"],
        orient="row",
    )
    o = _orders(d).select(id_type="buyer_id_type", id="buyer_id", category="category")
    e = pl.read_parquet(d / "events/events.parquet").select(
        id_type="user_id_type", id="user_id", category="category"
    )
    signals = (
        pl.concat([o, e])
        .join(ids, on=["id_type", "id"])
        .join(cat, on="category")
        .join(persons, on="person_id")
        .filter(pl.col("primary_interest").is_not_null())
    )
    per = signals.group_by("person_id").agg(
        share=(pl.col("cat_interest") == pl.col("primary_interest")).mean(), n=pl.len()
    )
    per = per.filter(pl.col("n") >= 10)
    assert per.height > 800
    assert per["share"].median() >= 0.6
    assert (per["share"] >= 0.4).mean() >= 0.9


# --------------------------------------------------------------------------------------------
# Traps and dirty rows


def test_parcel_station_phone_serves_30_buyers_and_belongs_to_nobody(
    demo2k: tuple[Path, DemoSummary, float],
) -> None:
    d = demo2k[0]
    o = _orders(d).with_columns(p=normalize_phone("phone"))
    buyers = (
        o.group_by("p")
        .agg(pl.col("buyer_id").n_unique())
        .drop_nulls()
        .sort("buyer_id", descending=True)
    )
    station = [p for p, n in buyers.iter_rows() if n >= 30 and p != str(TEST_PHONE)]
    assert station, buyers.head(3)
    truth = set(pl.read_parquet(d / "truth/identifiers.parquet")["id"])
    for p in [*station, str(TEST_PHONE)]:
        assert _sha(p) not in truth


def test_placeholder_ids_and_the_test_number_appear_but_are_never_truth(
    demo2k: tuple[Path, DemoSummary, float],
) -> None:
    d = demo2k[0]
    o = _orders(d)
    ev = pl.read_parquet(d / "events/events.parquet")
    seen = set(o["buyer_id"].fill_null("")) | set(ev["user_id"].fill_null(""))
    assert set(PLACEHOLDER_IDS) - {""} <= seen
    assert str(TEST_PHONE) in set(_input_phones(d))
    truth = pl.read_parquet(d / "truth/identifiers.parquet")
    assert not truth["id"].is_in(list(PLACEHOLDER_IDS)).any()


def test_a_person_with_two_taobao_accounts_shares_one_phone(
    demo2k: tuple[Path, DemoSummary, float],
) -> None:
    d = demo2k[0]
    ids = pl.read_parquet(d / "truth/identifiers.parquet")
    two = (
        ids.filter(pl.col("id_type") == "taobao_ouid")
        .group_by("person_id")
        .len()
        .filter(pl.col("len") == 2)
    )
    o = (
        _orders(d)
        .filter(pl.col("buyer_id_type") == "taobao_ouid")
        .with_columns(p=normalize_phone("phone"))
    )
    o = o.join(ids, left_on=["buyer_id_type", "buyer_id"], right_on=["id_type", "id"])
    shared = (
        o.filter(pl.col("person_id").is_in(two["person_id"].implode()) & pl.col("p").is_not_null())
        .group_by("person_id", "p")
        .agg(pl.col("buyer_id").n_unique())
        .filter(pl.col("buyer_id") == 2)
    )
    assert shared.height >= 1


def test_dirty_rows_are_about_half_a_percent_and_of_every_kind(
    demo2k: tuple[Path, DemoSummary, float],
) -> None:
    d = demo2k[0]
    csv = pl.read_csv(d / "orders/orders.csv", infer_schema=False)
    amount, refund = pl.col("amount").cast(pl.Float64), pl.col("refund").cast(pl.Float64)
    kinds = {
        "negative amount": amount < 0,
        "refund > amount": refund > amount,
        "unknown status": pl.col("status") == "shipped?",
        "unparseable paid_at": pl.col("paid_at") == "yesterday",
        "missing order_id": pl.col("order_id").is_null(),
        "invalid phone": pl.col("phone") == "12345",
    }
    counts = {name: csv.filter(expr).height for name, expr in kinds.items()}
    assert all(n >= 1 for n in counts.values()), counts
    duplicated = (
        csv.filter(pl.col("order_id").is_not_null())
        .select(pl.struct("source", "order_id").is_duplicated().sum())
        .item()
    )
    assert duplicated >= 2
    dirty = sum(counts.values()) + duplicated // 2
    assert 0.003 <= dirty / csv.height <= 0.008


def test_one_message_is_archived_twice_and_a_few_events_repeat(
    demo2k: tuple[Path, DemoSummary, float],
) -> None:
    d = demo2k[0]
    m = _messages(d)
    assert m.filter(pl.col("msgid").is_duplicated()).height == 2
    assert m.height - m.unique().height == 1  # the very same line
    ev = pl.read_parquet(d / "events/events.parquet")
    assert 0 < ev.height - ev["event_id"].n_unique() < 0.01 * ev.height


def test_timestamps_mix_plain_and_iso_with_offset(demo2k: tuple[Path, DemoSummary, float]) -> None:
    csv = pl.read_csv(demo2k[0] / "orders/orders.csv", infer_schema=False)
    iso = csv["paid_at"].str.contains(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00$").mean()
    plain = csv["paid_at"].str.contains(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$").mean()
    assert 0.01 < iso < 0.06 and plain > 0.9


def test_phones_are_typed_in_every_contract_form(demo2k: tuple[Path, DemoSummary, float]) -> None:
    phones = _orders(demo2k[0])["phone"].drop_nulls()
    for pattern in (
        r"^1[3-9]\d{9}$",
        r"^\+86 1\d\d-\d{4}-\d{4}$",
        r"^0086 1\d{10}$",
        r"^86-1\d{10}$",
    ):
        assert phones.str.contains(pattern).any(), pattern


# --------------------------------------------------------------------------------------------
# Behaviour by persona, season and promotion


def _orders_by_person(d: Path) -> pl.DataFrame:
    ids = pl.read_parquet(d / "truth/identifiers.parquet")
    persons = pl.read_parquet(d / "truth/persons.parquet")
    o = _orders(d).filter(pl.col("paid_at") != "yesterday")
    return (
        o.join(ids, left_on=["buyer_id_type", "buyer_id"], right_on=["id_type", "id"])
        .join(persons, on="person_id")
        .with_columns(
            ts=pl.col("paid_at")
            .str.slice(0, 19)
            .str.replace("T", " ")
            .str.to_datetime("%Y-%m-%d %H:%M:%S"),
            amount=pl.col("amount").cast(pl.Float64),
            discount=pl.col("discount").cast(pl.Float64),
        )
    )


def test_personas_buy_as_described(demo2k: tuple[Path, DemoSummary, float]) -> None:
    o = _orders_by_person(demo2k[0])
    end = datetime(2026, 11, 23)
    stats = {
        row["persona"]: row
        for row in o.group_by("persona")
        .agg(
            aov=pl.col("amount").median(),
            per_person=pl.len() / pl.col("person_id").n_unique(),
            discounted=(pl.col("discount") > 0).mean(),
            refunded=(pl.col("status") == "refunded").mean(),
            first_age=(end - pl.col("ts").min()).dt.total_days(),
            last_age=(end - pl.col("ts").max()).dt.total_days(),
        )
        .iter_rows(named=True)
    }
    assert 600 <= stats["expert"]["aov"] <= 3000 and stats["expert"]["per_person"] > 8
    assert 300 <= stats["enthusiast"]["aov"] <= 1200
    assert stats["coupon_hunter"]["aov"] < 200
    assert stats["coupon_hunter"]["discounted"] > 0.8 > 0.5 > stats["expert"]["discounted"]
    assert stats["coupon_hunter"]["refunded"] > 2 * stats["enthusiast"]["refunded"]
    assert (
        stats["newcomer"]["first_age"] <= 183
    )  # every newcomer bought for the first time recently
    assert stats["dormant"]["last_age"] > 365  # and no dormant person has bought in a year


def test_hunters_buy_in_promotions_and_seasons_move_categories(
    demo2k: tuple[Path, DemoSummary, float],
) -> None:
    o = _orders_by_person(demo2k[0]).with_columns(
        m=pl.col("ts").dt.month(), md=pl.col("ts").dt.strftime("%m%d")
    )
    md = pl.col("md")
    promo = (
        md.is_between(pl.lit("0601"), pl.lit("0618"))
        | md.is_between(pl.lit("1020"), pl.lit("1111"))
        | md.is_between(pl.lit("1201"), pl.lit("1212"))
    )  # 618, 双11, 双12: 53 days of 365
    by = dict(o.group_by("is_coupon_hunter").agg(promo.mean()).iter_rows())
    assert by[True] > 0.5 > 0.35 > by[False] > 53 / 365
    ski = set(TAXONOMY["skiing"])
    winter = o.filter(pl.col("m").is_in([12, 1, 2]))["category"].is_in(ski).mean()
    summer = o.filter(pl.col("m").is_in([6, 7, 8]))["category"].is_in(ski).mean()
    assert winter > 4 * summer


def test_hunters_chase_deals_in_chat_and_take_coupons(
    demo2k: tuple[Path, DemoSummary, float],
) -> None:
    d = demo2k[0]
    ids = pl.read_parquet(d / "truth/identifiers.parquet")
    persons = pl.read_parquet(d / "truth/persons.parquet")
    m = _messages(d).select(id="from", text=pl.col("text").struct.field("content"))
    m = m.join(ids.filter(pl.col("id_type") == "wecom_external_userid"), on="id").join(
        persons, on="person_id"
    )
    deal = pl.col("text").str.contains("券|红包|拼团|优惠|降价|凑单|开抢|拼单|积分")
    by = dict(m.group_by("is_coupon_hunter").agg(deal.mean()).iter_rows())
    assert by[True] > 0.5 > 0.1 > by[False]
    ev = pl.read_parquet(d / "events/events.parquet").join(
        ids, left_on=["user_id_type", "user_id"], right_on=["id_type", "id"]
    )
    ev = ev.join(persons, on="person_id")
    by = dict(
        ev.group_by("is_coupon_hunter")
        .agg(pl.col("event").is_in(["coupon_claim", "checkin"]).mean())
        .iter_rows()
    )
    assert by[True] > 0.4 > 0.2 > by[False]


def test_chat_is_chinese_with_replies_mentions_empty_and_emoji(
    demo2k: tuple[Path, DemoSummary, float],
) -> None:
    d = demo2k[0]
    m = _messages(d).with_columns(text=pl.col("text").struct.field("content"))
    assert m.filter(pl.col("text") == "").height > 0
    assert m.filter(pl.col("text").is_in(["👍", "[强]", "🔥🔥"])).height > 0
    assert m["roomid"].n_unique() >= 5
    replies = m.filter(pl.col("tolist").list.len() > 0)
    assert replies.height > 50 and replies["text"].str.starts_with("@").all()
    senders = set(m["from"])
    assert set(replies["tolist"].explode()) <= senders  # KOCs answer people who asked
    interest_words = (
        "露营",
        "徒步登山",
        "越野跑",
        "骑行",
        "钓鱼",
        "滑雪",
        "水上运动",
        "攀岩",
        "户外厨房",
    )
    # chit-chat is written (the message kinds were once rebound by the word lists: none was)
    from segments.demo.vocabulary import words

    assert m["text"].is_in(list(words("a").small_talk)).mean() > 0.03
    bare = m["text"].is_in(list(interest_words)).mean()
    assert bare < 0.01
    gear = {g for it in words("a").chat.values() for g in it["gear"]}
    assert m["text"].str.contains("|".join(sorted(gear, key=len, reverse=True))).mean() > 0.1
    per_event = pl.read_parquet(d / "events/events.parquet")
    queries = per_event.filter(pl.col("event") == "search")["query"]
    assert queries.is_not_null().all() and queries.str.contains("[\u4e00-\u9fff]").mean() > 0.9


def test_about_30_events_per_mini_program_user_times_the_seeds_rate(
    demo2k: tuple[Path, DemoSummary, float],
) -> None:
    ev = pl.read_parquet(demo2k[0] / "events/events.parquet")
    real = ev.filter(
        ~pl.col("user_id").is_in(list(PLACEHOLDER_IDS)) & pl.col("user_id").is_not_null()
    )
    ids = pl.read_parquet(demo2k[0] / "truth/identifiers.parquet")
    people = real.join(ids, left_on=["user_id_type", "user_id"], right_on=["id_type", "id"])[
        "person_id"
    ].n_unique()
    rate = json.loads((demo2k[0] / "truth/constants.json").read_text())["knobs"]["event_rate"]
    assert 20 * rate <= real.height / people <= 40 * rate


def test_truth_opt_out_is_the_latest_consent_status(
    demo2k: tuple[Path, DemoSummary, float],
) -> None:
    d = demo2k[0]
    consent = pl.read_csv(d / "consent/consent.csv", infer_schema=False).with_columns(
        k=_key("id_type", "id")
    )
    latest = (
        consent.with_columns(t=pl.col("updated_at").str.slice(0, 19).str.replace("T", " "))
        .sort("t", maintain_order=True)
        .group_by("k")
        .agg(pl.col("status").last())
    )
    owners = _truth_keys(d).select("k", "person_id")
    expected = set(latest.join(owners, on="k").filter(pl.col("status") == "opt_out")["person_id"])
    persons = pl.read_parquet(d / "truth/persons.parquet")
    assert set(persons.filter("opted_out")["person_id"]) == expected
    opted = consent.filter(pl.col("status") == "opt_out")["k"].n_unique() / 2000
    assert 0.015 <= opted <= 0.05
    assert consent.filter(pl.col("status") == "opt_in").height > 0  # some came back
    assert set(consent["id_type"]) == {"phone", "unionid"}


def test_the_shipped_demo_set_is_what_the_generator_writes(tmp_path: Path) -> None:
    shipped = Path(__file__).parents[1] / "data" / "demo"
    generate(tmp_path, users=300, seed=7)
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert made == sorted(p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file())
    stale = [str(p) for p in made if (tmp_path / p).read_bytes() != (shipped / p).read_bytes()]
    assert stale == [], "regenerate: segments demo-data --out data/demo --users 300 --seed 7"


# The generator's vocabulary against the engine's taxonomy (issue 24): no word the generator
# writes or searches, and no sentence it renders, holds a taxonomy keyword or category verbatim,
# so the engine cannot find an interest in text by sharing the generator's word list. The
# allow-list of unavoidable exceptions is empty; an entry would need its reason here.
_ALLOWED_HITS: dict[str, str] = {}


def _taxonomy_words() -> set[str]:
    """Every keyword and category, and the traditional forms the matching also looks for."""
    tax = load_taxonomy()
    listed = {k.lower() for it in tax.interests for k in (*it.keywords, *it.categories)}
    return listed | set(tax.matched_keywords())


def _hits(texts: list[str]) -> dict[str, list[str]]:
    kws = _taxonomy_words()
    found = {t: sorted(k for k in kws if k in t.lower()) for t in set(texts)}
    return {t: ks for t, ks in found.items() if ks and not set(ks) <= set(_ALLOWED_HITS)}


@pytest.mark.parametrize("vocabulary", ["a", "b"])
def test_no_generator_word_or_sentence_holds_a_taxonomy_keyword(vocabulary: str) -> None:
    import segments.demo.vocabulary as v
    from segments.demo.texts import _texts

    w = v.words(vocabulary)
    templates = w.question_templates + w.share_templates + w.answer_templates + w.deal_templates
    skeletons = [
        t.replace("{place}", "|").replace("{gear}", "|").replace("{act}", "|") for t in templates
    ]
    listed = [word for fields in w.chat.values() for ws in fields.values() for word in ws]
    common = [*w.small_talk, *w.emojis, *w.nick_a, *w.nick_b, *w.query_prefixes]
    pools = _texts(vocabulary)
    rendered = [*pools["chat"].values.to_list(), *pools["query"].values.to_list()]
    assert len(listed) > 200 and len(rendered) > 5000
    assert _hits([*skeletons, *listed, *common, *w.query_suffixes]) == {}
    assert _hits(rendered) == {}  # words side by side make no keyword either


def test_the_two_vocabularies_share_no_interest_word() -> None:
    from segments.demo.vocabulary import words

    a, b = words("a"), words("b")
    assert set(a.chat) == set(b.chat) == set(TAXONOMY)
    for field in ("places", "gear", "acts", "questions", "shares"):
        in_a = {x for it in a.chat.values() for x in it[field]}
        in_b = {x for it in b.chat.values() for x in it[field]}
        assert in_a and in_b and not in_a & in_b, field
    assert not set(a.small_talk) & set(b.small_talk)
    for kind in ("question", "share", "answer", "deal"):
        ta, tb = getattr(a, f"{kind}_templates"), getattr(b, f"{kind}_templates")
        assert ta and tb and not set(ta) & set(tb), kind


def test_vocabulary_b_is_what_people_write_and_an_unknown_one_stops(tmp_path: Path) -> None:
    from segments.demo.vocabulary import words

    generate(tmp_path / "b", users=300, seed=5, vocabulary="b")
    m = _messages(tmp_path / "b")["text"].struct.field("content")
    gear = {g for it in words("b").chat.values() for g in it["gear"]}
    said = m.str.contains("|".join(sorted(gear, key=len, reverse=True)))
    assert said.mean() > 0.1
    fixed_a = {x for it in words("a").chat.values() for f in ("questions", "shares") for x in it[f]}
    assert not m.is_in(list(fixed_a)).any() and m.str.contains("一室一厅").any()
    recorded = json.loads((tmp_path / "b/truth/constants.json").read_text(encoding="utf-8"))
    assert recorded["vocabulary"] == "b"
    with pytest.raises(ConfigError, match=r"--vocabulary must be one of a, b\. Got 'c' instead"):
        generate(tmp_path / "c", users=20, vocabulary="c")
    assert not (tmp_path / "c").exists()


def test_constants_are_drawn_per_seed_inside_their_ranges_and_recorded(demo300: Path) -> None:
    from segments.demo.constants import BASE_PROMOTIONS, PROMO_SHIFT_DAYS, RANGES, draw

    seven, thirteen = draw(7), draw(13)
    assert seven == draw(7) and seven.knobs != thirteen.knobs
    for c in (draw(s) for s in range(40)):
        for knob, (lo, hi) in RANGES.items():
            assert lo <= c.knobs[knob] <= hi, knob
        assert all(abs(s) <= PROMO_SHIFT_DAYS for s in c.promo_shift_days)
        assert len(c.promotions) == len(BASE_PROMOTIONS) + c.brand_sale
        assert abs(sum(c.persona_shares) - 1) < 1e-9
        assert c.persona_shares[3] == pytest.approx(c.knobs["hunter_share"])
    spread = [draw(s).knobs["hunter_share"] for s in range(40)]
    assert max(spread) - min(spread) > 0.06  # the ranges are used, not a point
    assert (demo300 / "truth/constants.json").read_text(encoding="utf-8") == seven.to_json("a")
    moved = draw(7, {"hunter_share": 1.5, "order_value": 0.5})
    assert moved.knobs["hunter_share"] == pytest.approx(1.5 * seven.knobs["hunter_share"])
    assert moved.aov_range[0][0] == pytest.approx(0.5 * seven.aov_range[0][0])
    assert moved.promotions == seven.promotions and moved.moves == {
        "hunter_share": 1.5,
        "order_value": 0.5,
    }
    with pytest.raises(ConfigError, match="unknown constant"):
        draw(7, {"hunters": 2.0})
