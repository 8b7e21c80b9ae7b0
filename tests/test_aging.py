"""A refresh on a new day recomputes from rows only the people with a row on a window edge or
touched by the delivery, and ages everyone else (`segments.build.aging`). Its live table must
equal a refresh that recomputes everyone from the same workspace, day after day."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import segments
from segments import pipeline
from segments.build import aging
from segments.config import load_config
from segments.demo.deliveries import gather, split
from segments.layout import Layout
from segments.stages.interests import decay_epoch
from segments.weeks import Day

# Monday to Sunday of W47 in single days, after W46 (built from d0)
CUTS = [datetime(2026, 11, 16 + k) for k in range(7)]


@pytest.fixture(scope="module")
def days(demo_input: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return split(demo_input, tmp_path_factory.mktemp("days"), CUTS)


def _tags(ws: Path) -> pl.DataFrame:
    return pl.read_parquet(Layout(ws).current("tags.parquet"))


def _refresh_both(cfg, inputs: Path, ws: Path, tmp: Path) -> pipeline.LiveResult:
    """Refresh `ws` (aging when it can) and a copy of it recomputing everyone; both tables
    must be equal."""
    everyone = tmp / "everyone"
    shutil.rmtree(everyone, ignore_errors=True)
    shutil.copytree(ws, everyone)
    got = pipeline.refresh(cfg, inputs, ws)
    pipeline.refresh(cfg, inputs, everyone, touched_only=False)
    assert_frame_equal(_tags(ws), _tags(everyone), check_exact=True)
    # what the next day ages from: carried and recomputed rows, as a build of everyone has them
    for name in aging.SIDE_TABLES:
        paths = [aging.side_path(Layout(w).current_dir / Layout(w).live_version(), name)
                 for w in (ws, everyone)]  # fmt: skip
        assert paths[0].stat().st_mode & 0o077 == 0, paths[0]
        assert_frame_equal(*(pl.read_parquet(p) for p in paths), check_exact=True)
    return got


def _renewed_of_each_aging(monkeypatch: pytest.MonkeyPatch) -> list[aging.Renewed | None]:
    """The `renewed` argument of every `aging.aged` call from now on, in order."""
    renewed: list[aging.Renewed | None] = []
    aged = aging.aged

    def spy(*args, **kwargs):
        renewed.append(args[-1] if len(args) > 6 else kwargs.get("renewed"))
        return aged(*args, **kwargs)

    monkeypatch.setattr(aging, "aged", spy)
    return renewed


@pytest.mark.slow
def test_new_days_age_the_people_without_a_row_on_an_edge_and_equal_a_refresh_of_everyone(
    days: list[Path], tmp_path: Path
) -> None:
    """W46 built, then W47 day by day (each delivery the next day's rows), one day skipped,
    and a day whose delivery also brings a late refund for an old order: every refresh equals
    one of everyone, and every refresh after the first recomputes fewer than everyone."""
    cfg = load_config()
    inputs, ws = tmp_path / "in", tmp_path / "ws"
    pipeline.run(cfg, gather(inputs, days[0]), ws, as_of="2026-W46")
    first = _refresh_both(cfg, gather(inputs, days[1]), ws, tmp_path)
    assert first.as_of.label == "2026-11-16"
    assert first.recomputed == first.people  # the first refresh after the week: everyone
    seen, with_state = [], []
    for k in (2, 4, 5):  # 11-17, then 11-18 and 11-19 together (a day skipped), 11-20
        if k == 4:
            gather(inputs, days[3])
        if k == 5:
            old = pl.read_csv(inputs / "orders" / "orders-d0.csv", infer_schema=False)
            old.filter(pl.col("status") == "paid").head(1).with_columns(
                pl.lit("refunded").alias("status")
            ).write_csv(inputs / "orders" / "orders-late-refund.csv")
        got = _refresh_both(cfg, gather(inputs, days[k]), ws, tmp_path)
        assert got.as_of.label == f"2026-11-{15 + k}"
        assert got.recomputed is not None and 0 < got.recomputed < got.people
        seen.append(got.recomputed / got.people)
        with_state.append(got.aged_with_state)
        manifest = pl.read_json(Layout(ws).current("manifest.json"))
        assert manifest["aged_from"][0] is not None
        assert manifest["people_aged_with_state"][0] == got.aged_with_state
    assert max(seen) < 0.9, seen
    # people whose events left a window: aged with the state's counts and sums, not recomputed
    assert all(n and n > 0 for n in with_state), with_state


def _own_windows():
    """The configuration with every configurable window a length of its own (the defaults
    share 4, 13 and 52 weeks with the R/F/M windows, so one missing from `window_weeks`
    would go unseen), short enough for the demo's rows to cross each of them daily."""
    cfg = load_config()

    def moved(section, **weeks):
        return getattr(cfg, section).model_copy(update=weeks)

    return cfg.model_copy(
        update={
            "rfm": moved("rfm", aipl_interest_weeks=2, aipl_awareness_weeks=7),
            "interests": moved("interests", lookback_weeks=6),
            "promo": moved("promo", lookback_weeks=11, window_weeks=3),
            "community": moved("community", recent_weeks=5, window_weeks=9, lookback_weeks=10),
        }
    )


@pytest.mark.slow
def test_every_window_of_its_own_length_is_an_edge(days: list[Path], tmp_path: Path) -> None:
    """With each window its own length, aging still equals a refresh of everyone: a window
    that `aging.window_weeks` left out would leave a row's exit unseen."""
    cfg = _own_windows()
    assert {3, 6, 11} <= set(aging.window_weeks(cfg, "orders"))  # promotion, interests
    assert {3, 6} <= set(aging.window_weeks(cfg, "events"))  # promotion counts, interests
    assert aging.window_weeks(cfg, "messages") == (6,)
    inputs, ws = tmp_path / "in", tmp_path / "ws"
    pipeline.run(cfg, gather(inputs, days[0]), ws, as_of="2026-W46")
    _refresh_both(cfg, gather(inputs, days[1]), ws, tmp_path)
    for k in range(2, len(days)):
        got = _refresh_both(cfg, gather(inputs, days[k]), ws, tmp_path)
        assert got.recomputed is not None and got.recomputed < got.people
        assert got.aged_with_state, k  # events left a window: aged with the moved state


def test_edge_identifiers_name_the_rows_pass_2_reads_as_rows() -> None:
    """As of 11-18 then 11-20, with the promotion's window 3 weeks and the interest lookback
    6 (own lengths): an order on any edge, and a message entering, recompute their person
    (`rows`); an event entering or leaving a window, or a message leaving one, changes only
    the state's aggregates, unless it is a coupon claim or check-in entering or leaving the
    promotion's window."""
    base = load_config()
    cfg = base.model_copy(
        update={
            "promo": base.promo.model_copy(update={"window_weeks": 3}),
            "interests": base.interests.model_copy(update={"lookback_weeks": 6}),
        }
    )
    old, new = Day(date(2026, 11, 18)), Day(date(2026, 11, 20))
    noon = timedelta(hours=12)
    before = {w: datetime(2026, 11, 19) - timedelta(weeks=w) + noon for w in (1, 3, 4, 6, 52)}
    orders = pl.DataFrame(
        {"buyer_id_type": ["member_id"] * 2, "buyer_id": ["O52", "Oin"],
         "paid_at": [before[52], datetime(2026, 11, 19, 9)]}
    )  # fmt: skip
    events = pl.DataFrame(
        {
            "user_id_type": ["member_id"] * 7,
            "user_id": ["E4", "C3", "C4", "V3", "Ein", "E4", "Cin"],
            "event": ["view", "coupon_claim", "coupon_claim", "view", "view", "checkin",
                      "checkin"],
            "ts": [before[4], before[3], before[4], before[3], datetime(2026, 11, 20, 8),
                   before[4] - timedelta(days=3), datetime(2026, 11, 19, 7)],
        }
    )  # fmt: skip
    messages = pl.DataFrame(
        {"sender_id_type": ["wecom_external_userid"] * 2, "sender_id": ["wmM6", "wmMin"],
         "ts": [before[6], datetime(2026, 11, 19, 10)]}
    )  # fmt: skip
    tables = {"orders": (orders, "paid_at"), "events": (events, "ts"), "messages": (messages, "ts")}

    def scan(table: str, start: datetime, end: datetime) -> pl.LazyFrame:
        df, ts = tables[table]
        return df.lazy().filter((pl.col(ts) >= start) & (pl.col(ts) < end))

    got = aging.edge_identifiers(scan, old, new, cfg)
    assert dict(zip(got["id"], got["rows"], strict=True)) == {
        "O52": True,  # an order leaving the 52 weeks
        "Oin": True,  # entering
        "E4": False,  # a view leaving the 4 weeks (its check-in, earlier, is on no edge)
        "C3": True,  # a coupon claim leaving the promotion's 3 weeks
        "C4": False,  # a coupon claim leaving the 4 weeks only
        "V3": False,  # a view leaving the 3 weeks: no promotion count, no other window
        "Ein": False,  # a view entering: the state's counts, sums and last times move
        "Cin": True,  # a check-in entering: the promotion counts it beside the orders
        "wmM6": False,  # a message leaving the interest lookback
        "wmMin": True,  # a message entering
    }


def test_edge_ranges_hold_every_row_entering_or_leaving_a_window() -> None:
    """Worked by hand for a 1-week and a 4-week window, and checked against every window:
    a row is in an edge range exactly when some window holds it on one day and not the other."""
    cfg = load_config()
    old, new = Day(date(2026, 11, 18)), Day(date(2026, 11, 20))
    weeks = aging.window_weeks(cfg)
    ranges = aging.edge_ranges(old, new, weeks)
    # entering: 11-19 and 11-20; leaving the 1-week window: 11-12 and 11-13 (a window of
    # 7 days as of 11-18 starts on 11-12, as of 11-20 on 11-14); the 4-week: 10-22, 10-23
    assert (datetime(2026, 11, 19), datetime(2026, 11, 21)) in ranges
    assert (datetime(2026, 11, 12), datetime(2026, 11, 14)) in ranges
    assert (datetime(2026, 10, 22), datetime(2026, 10, 24)) in ranges
    assert {1, 4, 13, 26, 52, cfg.interests.lookback_weeks} <= set(weeks)

    def held(ts: datetime, day: Day, w: int) -> bool:
        return day.window_start(w) <= ts < day.end

    start = datetime(2024, 10, 1)
    for h in range(0, 24 * 800, 7):  # every 7 hours over 800 days
        ts = start + (datetime(2024, 10, 1, 1) - start) * h
        moved = any(held(ts, old, w) != held(ts, new, w) for w in weeks)
        inside = any(a <= ts < b for a, b in ranges)
        assert moved == inside, ts


def test_aging_is_refused_across_a_decay_epoch_and_beyond_its_days() -> None:
    cfg = load_config()
    d = Day(date(2026, 11, 18))
    assert aging.can_age(d, Day(date(2026, 11, 19)), cfg)
    assert not aging.can_age(d, d, cfg)
    assert not aging.can_age(d, Day(date(2026, 11, 18 + aging.MAX_DAYS + 1)), cfg)
    assert not aging.can_age(Day(date(2026, 11, 19)), d, cfg)
    # the sums' epoch moves when the lookback's start crosses a block of half-lives
    block = timedelta(weeks=cfg.interests.half_life_weeks * 16)
    end = datetime(2000, 1, 3) + 2 * block + timedelta(weeks=cfg.interests.lookback_weeks)
    # (a Day's end is the midnight after it)
    before, after = Day(end.date() - timedelta(days=2)), Day(end.date() - timedelta(days=1))
    assert decay_epoch(before.end, cfg.interests) != decay_epoch(after.end, cfg.interests)
    assert not aging.can_age(before, after, cfg)
    assert aging.can_age(after, Day(after.last_day + timedelta(days=1)), cfg)


def test_a_week_label_is_no_day() -> None:
    assert aging.day_of("2026-11-16") == Day(date(2026, 11, 16))
    assert aging.day_of("2026-W46") is None  # (`date.fromisoformat` reads it as a Monday)
    assert aging.day_of("None") is None


@pytest.mark.slow
def test_a_version_another_code_wrote_is_recomputed_not_aged(
    days: list[Path], tmp_path: Path
) -> None:
    """A release installed mid-week: the version in force was written by other code (here one
    tag fewer, and another code digest in its manifest). The next day's refresh recomputes
    everyone instead of aging rows it cannot trust, and the table has every tag."""
    cfg = load_config()
    inputs, ws = tmp_path / "in", tmp_path / "ws"
    pipeline.run(cfg, gather(inputs, days[0]), ws, as_of="2026-W46")
    pipeline.refresh(cfg, gather(inputs, days[1]), ws)
    layout = Layout(ws)
    path = layout.current("tags.parquet")
    pl.read_parquet(path).drop("cart_to_view_13w").write_parquet(path)
    manifest = json.loads(layout.current("manifest.json").read_text())
    manifest["code_digest"] = "another release"
    layout.current("manifest.json").write_text(json.dumps(manifest))
    # the same files: not "nothing new", since the table was built by other code
    same = pipeline.refresh(cfg, inputs, ws)
    assert not same.unchanged and same.recomputed == same.people
    assert "cart_to_view_13w" in _tags(ws).columns
    pl.read_parquet(path := layout.current("tags.parquet")).drop("cart_to_view_13w").write_parquet(
        path
    )
    manifest = json.loads(layout.current("manifest.json").read_text())
    manifest["code_digest"] = "another release"
    layout.current("manifest.json").write_text(json.dumps(manifest))
    got = pipeline.refresh(cfg, gather(inputs, days[2]), ws)
    assert got.recomputed == got.people and got.aged_from is None
    assert "cart_to_view_13w" in _tags(ws).columns


@pytest.mark.slow
def test_a_message_leaving_the_interest_lookback_ages_its_sender_with_the_state(
    days: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender whose one row is a chat message naming a tent, 6 weeks (the lookback here)
    before the second refresh's day: that day the message leaves the window, and the sender,
    aged with the person state's moved sums (a message on the lookback's edge changes only
    those), loses the interest, as in a refresh of everyone. No other window of this
    configuration ends on that day for a message."""
    cfg = _own_windows()
    inputs, ws = tmp_path / "in", tmp_path / "ws"
    gather(inputs, days[0])
    sender = "wmAgingLookbackSender00001"
    sent = datetime(2026, 10, 6, 12, tzinfo=timezone(timedelta(hours=8)))  # local noon
    message = {
        "msgid": "aging-lookback-1",
        "action": "send",
        "from": sender,
        "tolist": [],
        "roomid": "wrAgingLookbackRoom0000000000001",
        "msgtime": int(sent.timestamp() * 1000),
        "msgtype": "text",
        "text": {"content": "周末去山里露营，新帐篷很好用"},
    }
    (inputs / "messages" / "wecom_archive-aging.jsonl").write_text(
        json.dumps(message, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    pipeline.run(cfg, inputs, ws, as_of="2026-W46")

    def signals() -> int | None:
        layout = Layout(ws)
        ids = pl.read_parquet(layout.current("one_id_map.parquet"))
        one_id = ids.filter(pl.col("id") == sender)["one_id"].item()
        row = _tags(ws).filter(pl.col("one_id") == one_id)
        return row["interest_signal_count"].item()

    _refresh_both(cfg, gather(inputs, days[1]), ws, tmp_path)  # as of 11-16
    assert signals() == 1
    renewed = _renewed_of_each_aging(monkeypatch)
    got = _refresh_both(cfg, gather(inputs, days[2]), ws, tmp_path)  # 11-17: it left
    assert got.aged_from == "2026-11-16"
    assert signals() == 0
    # the sender was aged with the moved sums, not recomputed from rows
    layout = Layout(ws)
    one_id = (
        pl.read_parquet(layout.current("one_id_map.parquet"))
        .filter(pl.col("id") == sender)["one_id"]
        .item()
    )
    assert [one_id in r.one_ids["one_id"] for r in renewed] == [True]
    sums = pl.read_parquet(
        aging.side_path(layout.current_dir / layout.live_version(), "signal_sums")
    )
    assert sums.filter(pl.col("one_id") == one_id).height == 0  # the next day's: none left


def _digest_of(src: Path) -> str:
    code = "from segments.runs import code_digest; print(code_digest())"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(src)},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_the_code_digest_follows_the_package_data_and_not_its_location(tmp_path: Path) -> None:
    """A release that changes only the tag registry (types, rounding, fills) is another
    release; the same files elsewhere, a cache or an editor's lock file are not."""
    package = Path(segments.__file__).parent
    copies = []
    for name in ("a", "b"):
        copy = tmp_path / name / "segments"
        shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
        copies.append(copy)
    first = _digest_of(copies[0].parent)
    assert _digest_of(copies[1].parent) == first
    (copies[1] / ".#live.py").symlink_to(copies[1] / "gone.py")  # a dangling lock file
    assert _digest_of(copies[1].parent) == first
    registry = copies[1] / "tags" / "registry.toml"
    registry.write_text(registry.read_text(encoding="utf-8") + "\n# another release\n")
    assert _digest_of(copies[1].parent) != first


@pytest.mark.slow
def test_a_same_day_delivery_of_events_ages_their_people_with_the_state(
    days: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same day, a delivery of two events: a view of a tent (read by pass 2 only through
    the state's window counts, interest sums and last times) and a coupon claim (the
    promotion counts it beside the orders). The viewer is aged with the moved state, the
    claimer recomputed from rows, and the table equals a refresh of everyone."""
    cfg = load_config()
    inputs, ws = tmp_path / "in", tmp_path / "ws"
    pipeline.run(cfg, gather(inputs, days[0]), ws, as_of="2026-W46")
    _refresh_both(cfg, gather(inputs, days[1]), ws, tmp_path)  # as of 11-16: everyone
    before = _tags(ws)
    ids = pl.read_parquet(Layout(ws).current("one_id_map.parquet"))
    seen = pl.read_parquet(inputs / "events" / "events-d1.parquet")
    users = (
        seen.filter(pl.col("user_id_type") == "openid")
        .join(ids, left_on=["user_id_type", "user_id"], right_on=["id_type", "id"])
        .unique("one_id", keep="first")
        .sort("one_id")
        .head(2)
    )
    viewer, claimer = users.rows(named=True)
    new = pl.DataFrame(
        {
            "user_id_type": ["openid", "openid"],
            "user_id": [viewer["user_id"], claimer["user_id"]],
            "ts": [datetime(2026, 11, 16, 23, 0), datetime(2026, 11, 16, 23, 10)],
            "event": ["view", "coupon_claim"],
            "category": ["帐篷", None],
            "item_id": [None, None],
            "query": [None, None],
            "event_id": ["aging-same-day-1", "aging-same-day-2"],
        },
        schema=seen.schema,
    )
    new.write_parquet(inputs / "events" / "events-same-day.parquet")
    renewed = _renewed_of_each_aging(monkeypatch)
    got = _refresh_both(cfg, inputs, ws, tmp_path)
    assert got.aged_from is None  # the same day
    assert len(renewed) == 1 and renewed[0] is not None
    assert renewed[0].one_ids["one_id"].to_list() == [viewer["one_id"]]
    assert got.aged_with_state == 1
    assert got.recomputed is not None and got.recomputed >= 1  # the claimer, and whom it moved
    after = _tags(ws)

    def row(df: pl.DataFrame, one_id: str) -> dict:
        return df.filter(pl.col("one_id") == one_id).row(0, named=True)

    was, now = row(before, viewer["one_id"]), row(after, viewer["one_id"])
    assert now["events_1w"] == was["events_1w"] + 1
    assert row(after, claimer["one_id"])["coupon_claims_13w"] == (
        row(before, claimer["one_id"])["coupon_claims_13w"] + 1
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_side_tables_carried_by_the_people_gone_equal_those_carried_by_the_people_kept(
    tmp_path: Path, seed: int
) -> None:
    """`carried_side_tables` with `gone` (the previous version's people not kept: a filter by
    few one_ids) gives the tables the join with everyone kept gives, with people aged with
    the state among the kept (their sums and last times replaced) and recomputed people new
    to the table."""
    import random

    rng = random.Random(seed)
    people = sorted(f"U{i:04d}" for i in rng.sample(range(5000), 300))
    t0 = datetime(2026, 11, 1)
    tables = {
        "summary": pl.DataFrame(
            {"one_id": people, "frequency": [rng.randint(0, 5) for _ in people],
             "recency": [float(rng.randint(0, 90)) for _ in people],
             "monetary_value": [rng.random() * 500 for _ in people]},
        ),
        "event_last": pl.DataFrame(
            {"one_id": people, **{c: [t0 + timedelta(hours=rng.randint(0, 500)) for _ in people]
                                  for c in aging.EVENT_LAST[1:]}},
        ),
        "signal_sums": pl.DataFrame(
            [(p, f"i{k}", rng.random(), rng.randint(1, 9)) for p in people
             for k in rng.sample(range(6), rng.randint(0, 3))],
            schema={"one_id": pl.String, "interest": pl.String, "_s": pl.Float64, "_n": pl.Int64},
            orient="row",
        ),
    }  # fmt: skip
    tables = {n: df.sort(aging._SORT[n]) for n, df in tables.items()}
    aging.write_side_tables(tables, tmp_path)
    gone = [p for p in people if rng.random() < 0.2]
    keep = pl.DataFrame({"one_id": [p for p in people if p not in set(gone)]})
    redone = sorted({*rng.sample(gone, len(gone) // 2), "U9998", "U9999"})  # two new people
    # the recomputed people's new rows: their old ones with the recency moved, and two new
    fresh = {n: df.filter(pl.col("one_id").is_in(redone)) for n, df in tables.items()}
    new_rows = pl.DataFrame(
        {"one_id": ["U9998", "U9999"], "frequency": [1, 2], "recency": [3.0, 4.0],
         "monetary_value": [10.0, 20.0]},
    )  # fmt: skip
    fresh["summary"] = pl.concat(
        [fresh["summary"].with_columns(pl.col("recency") + 1), new_rows]
    ).sort("one_id")
    aged = keep.sample(fraction=0.3, seed=seed).sort("one_id")
    renewed = aging.Renewed(
        aged,
        pl.DataFrame(),
        tables["signal_sums"].join(aged, on="one_id", how="semi").with_columns(pl.col("_n") + 1),
        tables["event_last"]
        .join(aged, on="one_id", how="semi")
        .with_columns(pl.col(aging.EVENT_LAST[1]) + timedelta(days=1)),
    )
    out_ids = pl.Series("one_id", [*gone, *redone])
    for r in (None, renewed):
        want = aging.carried_side_tables(tmp_path, keep, fresh, r)
        got = aging.carried_side_tables(tmp_path, keep, fresh, r, gone=out_ids)
        assert set(got) == set(aging.SIDE_TABLES)
        for name in aging.SIDE_TABLES:
            assert_frame_equal(got[name], want[name])
            assert got[name].get_column("one_id").is_sorted()
        if r is not None:
            sums = got["signal_sums"].join(aged, on="one_id", how="semi")
            assert_frame_equal(sums, renewed.sums.sort(aging._SORT["signal_sums"]))
