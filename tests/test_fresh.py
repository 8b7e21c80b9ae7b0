"""Fresh data: a workspace that folds each delivery in equals a cold build of the same files.

The demo population is cut by time into deliveries (`segments.demo.deliveries`): d0 up to
2026-W45, d1 the week W46, d2 the week W47. People are compared by their smallest identifier,
so that one_ids kept stable by history do not count as differences.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from segments import pipeline
from segments.config import load_config
from segments.demo.deliveries import gather, split
from segments.ingest import ingest
from segments.layout import Layout
from segments.runs import code_digest

pytestmark = pytest.mark.slow

CUTS = [datetime(2026, 11, 9), datetime(2026, 11, 16)]
HISTORY_MADE = ("cluster", "cluster_name")  # numbered as history makes them


@pytest.fixture(scope="module")
def deliveries(demo_input: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return split(demo_input, tmp_path_factory.mktemp("deliveries"), CUTS)


def by_person(tags: pl.DataFrame, id_map: pl.DataFrame) -> pl.DataFrame:
    """The tag table keyed by each person's smallest identifier instead of their one_id."""
    key = id_map.group_by("one_id").agg(
        pl.concat_str("id_type", pl.lit(":"), "id").min().alias("person")
    )
    out = tags.join(key, on="one_id", how="left").drop("one_id")
    assert out.get_column("person").null_count() == 0
    return out.select("person", *[c for c in out.columns if c != "person"]).sort("person")


def week_table(ws: Path, week: str, drop: tuple[str, ...] = HISTORY_MADE) -> pl.DataFrame:
    layout = Layout(ws)
    tags = pl.read_parquet(layout.tags(week))
    id_map = pl.read_parquet(layout.identity_history(week) / "one_id_map.parquet")
    return by_person(tags, id_map).drop(drop)


def live_table(ws: Path, drop: tuple[str, ...] = ()) -> pl.DataFrame:
    layout = Layout(ws)
    tags = pl.read_parquet(layout.current("tags.parquet"))
    id_map = pl.read_parquet(layout.current("one_id_map.parquet"))
    return by_person(tags, id_map).drop(drop)


def _joinable(people: pl.DataFrame) -> tuple[str, str]:
    """Two people whose identifiers together stay within every per-type limit."""
    limits = load_config().identity.max_per_person
    counts = [
        (row["one_id"], {c["id_type"]: c["count"] for c in row["types"]})
        for row in people.head(300).iter_rows(named=True)
    ]
    for i, (a, ca) in enumerate(counts):
        for b, cb in counts[i + 1 :]:
            if all(ca.get(k, 0) + cb.get(k, 0) <= limits.get(k, 99) for k in {*ca, *cb}):
                return a, b
    raise AssertionError("no two people can be joined")


def _run(input_dir: Path, ws: Path, as_of: str) -> pipeline.WeekResult:
    return pipeline.run(load_config(), input_dir, ws, as_of=as_of)[0]


def test_the_next_week_folds_only_what_is_new_and_equals_a_cold_build(
    deliveries: list[Path], tmp_path: Path
) -> None:
    inc_in, ws = tmp_path / "inc-input", tmp_path / "inc"
    _run(gather(inc_in, deliveries[0]), ws, "2026-W45")
    _run(gather(inc_in, deliveries[1]), ws, "2026-W46")
    result = _run(gather(inc_in, deliveries[2]), ws, "2026-W47")
    # only the new files went into the state: six files, one piece each
    assert result.state["pieces_added"] == {"orders": 2, "events": 1, "messages": 1}
    assert result.state["pieces_removed"] == {"orders": 0, "events": 0, "messages": 0}
    assert result.state["event_long"] == "moved"
    cold_in, cold = tmp_path / "cold-input", tmp_path / "cold"
    _run(gather(cold_in, *deliveries), cold, "2026-W47")
    assert_frame_equal(week_table(ws, "2026-W47"), week_table(cold, "2026-W47"), check_exact=True)


def test_a_refresh_with_a_new_day_equals_one_that_had_the_files_all_along(
    deliveries: list[Path], tmp_path: Path
) -> None:
    """Files that land mid-week, folded in by a refresh, give the live table that a workspace
    which read them at its weekly build (as rows after its as-of) gives on its refresh."""
    cfg = load_config()
    inc_in, ws = tmp_path / "inc-input", tmp_path / "inc"
    _run(gather(inc_in, deliveries[0], deliveries[1]), ws, "2026-W46")
    live = pipeline.refresh(cfg, gather(inc_in, deliveries[2]), ws)
    assert live.as_of.label == "2026-11-22" and live.based_on == "2026-W46"
    assert live.state["pieces_added"]["events"] == 1
    all_in, ws2 = tmp_path / "all-input", tmp_path / "all"
    _run(gather(all_in, *deliveries), ws2, "2026-W46")
    live2 = pipeline.refresh(cfg, all_in, ws2)
    assert live2.state["pieces_added"] == {"orders": 0, "events": 0, "messages": 0}
    assert_frame_equal(live_table(ws), live_table(ws2), check_exact=True)
    # the live table's one_ids are those of the week it applies
    assert_frame_equal(
        pl.read_parquet(Layout(ws).current("tags.parquet")),
        pl.read_parquet(Layout(ws2).current("tags.parquet")),
        check_exact=True,
    )


def test_a_refresh_as_of_the_built_week_equals_the_weekly_table(
    demo_input: Path, tmp_path: Path
) -> None:
    """With nothing after the week, the live table is the week's table: same state, same
    yardsticks, the clusters assigned by the week's own model. A live table built on the
    week before, from the same files, is not kept once the new week is built."""
    ws = tmp_path / "ws"
    _run(demo_input, ws, "2026-W46")
    before = pipeline.refresh(load_config(), demo_input, ws)
    assert before.based_on == "2026-W46" and before.as_of.label == "2026-11-22"
    _run(demo_input, ws, "2026-W47")
    live = pipeline.refresh(load_config(), demo_input, ws)
    assert not live.unchanged and live.based_on == "2026-W47"
    assert live.as_of.label == "2026-11-22"
    weekly = pl.read_parquet(Layout(ws).tags("2026-W47"))
    assert_frame_equal(
        pl.read_parquet(Layout(ws).current("tags.parquet")), weekly, check_exact=True
    )
    manifest = json.loads(Layout(ws).current("manifest.json").read_text())
    assert manifest["newest_row"].startswith("2026-11-22")
    assert manifest["based_on_week"] == "2026-W47"
    # nothing new: the next refresh reads nothing and keeps the version
    again = pipeline.refresh(load_config(), demo_input, ws)
    assert again.unchanged and Layout(ws).live_version() == "v000002"


def test_a_replaced_file_and_a_late_refund_equal_a_cold_build(
    deliveries: list[Path], tmp_path: Path
) -> None:
    """A delivery replaced by a corrected copy (one order refunded, one event gone), and a
    refund for an old order that arrives in a later file: the state takes the old rows out."""
    inc_in, ws = tmp_path / "inc-input", tmp_path / "inc"
    gather(inc_in, *deliveries)
    _run(inc_in, ws, "2026-W47")
    orders = inc_in / "orders" / "orders-d1.csv"
    df = pl.read_csv(orders, infer_schema=False)
    paid = df.filter(pl.col("status") == "paid").head(1)
    fixed = df.with_columns(
        pl.when(pl.col("order_id") == paid["order_id"][0])
        .then(pl.lit("refunded"))
        .otherwise(pl.col("status"))
        .alias("status")
    )
    fixed.write_csv(orders)
    events = inc_in / "events" / "events-d2.parquet"
    pl.read_parquet(events).slice(1).write_parquet(events)
    old = pl.read_csv(inc_in / "orders" / "orders-d0.csv", infer_schema=False)
    late = (
        old.filter(pl.col("status") == "paid")
        .head(1)
        .with_columns(pl.lit("refunded").alias("status"))
    )
    late.write_csv(inc_in / "orders" / "orders-late-refund.csv")
    result = _run(inc_in, ws, "2026-W47")
    # the replaced files and the file whose row the late refund replaced left the state
    assert result.state["pieces_removed"]["orders"] == 2
    assert result.state["pieces_removed"]["events"] == 1
    cold = tmp_path / "cold"
    _run(inc_in, cold, "2026-W47")
    assert_frame_equal(week_table(ws, "2026-W47"), week_table(cold, "2026-W47"), check_exact=True)


def test_a_late_file_for_a_closed_week_and_a_merging_link_equal_a_cold_build(
    deliveries: list[Path], tmp_path: Path
) -> None:
    """Events of W45 that arrive with the W47 delivery, and a new link that joins two people
    who were apart, change what a cold build of the same files gives, and nothing else."""
    inc_in, ws = tmp_path / "inc-input", tmp_path / "inc"
    _run(gather(inc_in, deliveries[0], deliveries[1]), ws, "2026-W46")
    gather(inc_in, deliveries[2])
    d0_events = pl.read_parquet(deliveries[0] / "events" / "events-d0.parquet")
    late = (
        d0_events.filter(pl.col("ts") >= datetime(2026, 11, 2))
        .head(50)
        .with_columns(pl.concat_str(pl.lit("late-"), pl.col("event_id")).alias("event_id"))
    )
    late.write_parquet(inc_in / "events" / "events-late.parquet")
    id_map = pl.read_parquet(Layout(ws).identity_history("2026-W46") / "one_id_map.parquet")
    later = pl.read_csv(deliveries[2] / "identities" / "links-d2.csv", infer_schema=False)
    seen_later = pl.concat([later["id_a"], later["id_b"]])
    people = (
        id_map.group_by("one_id")
        .agg(
            pl.col("id_type").value_counts().alias("types"),
            (pl.col("id_type") == "unionid").any().alias("has_unionid"),
            pl.col("id").is_in(seen_later.implode()).any().alias("linked_later"),
        )
        .filter(~pl.col("linked_later"))
        .sort("one_id")
    )
    ids = {
        "merge": id_map.filter(pl.col("one_id").is_in(list(_joinable(people)))),
        # two people with a unionid each: one person may hold one, so the guard cuts the link
        "cut": id_map.filter(
            pl.col("one_id").is_in(people.filter("has_unionid")["one_id"].head(2).implode())
        ),
    }
    ids = {
        k: v.sort("id_type", "id").unique("one_id", keep="first").sort("one_id")
        for k, v in ids.items()
    }
    assert all(f.height == 2 for f in ids.values())
    pl.DataFrame(
        {
            "id_type_a": [ids["merge"]["id_type"][0], ids["cut"]["id_type"][0]],
            "id_a": [ids["merge"]["id"][0], ids["cut"]["id"][0]],
            "id_type_b": [ids["merge"]["id_type"][1], ids["cut"]["id_type"][1]],
            "id_b": [ids["merge"]["id"][1], ids["cut"]["id"][1]],
            "source": ["crm_merge", "crm_merge"],
            "observed_at": ["2026-11-20 10:00:00", "2026-11-20 10:00:00"],
        }
    ).write_csv(inc_in / "identities" / "links-merge.csv")
    _run(inc_in, ws, "2026-W47")
    merged = pl.read_parquet(Layout(ws).identity_history("2026-W47") / "one_id_map.parquet")
    owners = merged.filter(pl.col("id").is_in(ids["merge"]["id"].implode())).get_column("one_id")
    assert owners.n_unique() == 1  # the link joined them
    cut = pl.read_parquet(Layout(ws).identity_history("2026-W47") / "rejected_links.parquet")
    # the two unionid holders stay two people: the guard cut a link of theirs
    theirs = id_map.filter(pl.col("one_id").is_in(ids["cut"]["one_id"].implode()))["id"]
    unionids = merged.filter(
        pl.col("id").is_in(theirs.implode()) & (pl.col("id_type") == "unionid")
    )
    assert unionids.height == 2 and unionids["one_id"].n_unique() == 2
    touching = pl.col("id_a").is_in(theirs.implode()) | pl.col("id_b").is_in(theirs.implode())
    assert cut.filter(touching & pl.col("reason").str.starts_with("limit:")).height >= 1
    cold = tmp_path / "cold"
    _run(inc_in, cold, "2026-W47")
    assert_frame_equal(week_table(ws, "2026-W47"), week_table(cold, "2026-W47"), check_exact=True)


def test_refreshes_within_a_day_recompute_only_whom_they_touch(
    demo_input: Path, tmp_path: Path
) -> None:
    """The second refresh of a day (new rows of that day, a late refund for an old order, a
    link that joins two people) recomputes only the people whose inputs changed, and its live
    table equals the one a refresh that recomputes everyone gives on the same files."""
    cuts = [datetime(2026, 11, 9), datetime(2026, 11, 16), datetime(2026, 11, 22, 12)]
    parts = split(demo_input, tmp_path / "deliveries", cuts)
    cfg = load_config()
    tables: dict[bool, pl.DataFrame] = {}
    results = {}
    for touched_only in (True, False):
        inputs, ws = tmp_path / f"in-{touched_only}", tmp_path / f"ws-{touched_only}"
        _run(gather(inputs, parts[0], parts[1]), ws, "2026-W46")
        first = pipeline.refresh(cfg, gather(inputs, parts[2]), ws)
        assert first.as_of.label == "2026-11-22"
        gather(inputs, parts[3])
        old = pl.read_csv(inputs / "orders" / "orders-d0.csv", infer_schema=False)
        old.filter(pl.col("status") == "paid").head(1).with_columns(
            pl.lit("refunded").alias("status")
        ).write_csv(inputs / "orders" / "orders-late-refund.csv")
        id_map = pl.read_parquet(Layout(ws).current("one_id_map.parquet"))
        # two people the afternoon's rows do not touch: only the link changes them
        afternoon = ingest(parts[3])
        busy = pl.concat(
            [
                rows.select(pl.col(c).cast(pl.String).alias("id")).collect()
                for t, c in (
                    ("orders", "buyer_id"),
                    ("events", "user_id"),
                    ("messages", "sender_id"),
                )
                if (rows := afternoon.scan(t)) is not None
            ]
        )
        people = (
            id_map.group_by("one_id")
            .agg(
                pl.col("id_type").value_counts().alias("types"),
                pl.col("id").is_in(busy["id"].implode()).any().alias("busy"),
            )
            .filter(~pl.col("busy"))
            .sort("one_id")
        )
        pair = id_map.filter(pl.col("one_id").is_in(list(_joinable(people))))
        pair = pair.sort("id_type", "id").unique("one_id", keep="first").sort("one_id")
        pl.DataFrame(
            {
                "id_type_a": [pair["id_type"][0]],
                "id_a": [pair["id"][0]],
                "id_type_b": [pair["id_type"][1]],
                "id_b": [pair["id"][1]],
                "source": ["crm_merge"],
                "observed_at": ["2026-11-22 13:00:00"],
            }
        ).write_csv(inputs / "identities" / "links-merge.csv")
        # and a third untouched person opts out (no chat, no shared phone, no new rows, not
        # opted out yet): only their opt-out changes
        was = pl.read_parquet(Layout(ws).current("tags.parquet"))
        calm = was.filter(
            (pl.col("messages_13w").fill_null(0) == 0)
            & (pl.col("replies_received_13w").fill_null(0) == 0)
            & (pl.col("mentions_received_13w").fill_null(0) == 0)
            & pl.col("accounts_on_shared_phone").is_null()
            & pl.col("koc_score").is_null()  # (PageRank moves every score in the graph)
            & ~pl.col("is_opted_out")
            & ~pl.col("one_id").is_in(pair["one_id"].implode())
        ).join(people, on="one_id", how="semi")
        quiet = id_map.join(calm.head(1), on="one_id", how="semi").sort("id_type", "id").head(1)
        assert quiet.height == 1
        pl.DataFrame(
            {
                "id_type": quiet["id_type"],
                "id": quiet["id"],
                "status": ["opt_out"],
                "updated_at": ["2026-11-22 14:00:00"],
            }
        ).write_csv(inputs / "consent" / "consent-opt-out.csv")
        second = pipeline.refresh(cfg, inputs, ws, touched_only=touched_only)
        opted = pl.read_parquet(Layout(ws).current("tags.parquet")).filter(
            pl.col("one_id") == quiet["one_id"][0]
        )
        assert opted["is_opted_out"].to_list() == [True]
        assert second.as_of.label == "2026-11-22"
        joined = pl.read_parquet(Layout(ws).current("one_id_map.parquet")).filter(
            pl.col("id").is_in(pair["id"].implode())
        )
        assert joined["one_id"].n_unique() == 1  # the link joined them
        results[touched_only] = (first, second)
        tables[touched_only] = pl.read_parquet(Layout(ws).current("tags.parquet"))
        _check_moved_sets(Layout(ws))
    inc = results[True][1]
    assert inc.recomputed is not None and 0 < inc.recomputed < inc.people
    assert results[False][1].recomputed == results[False][1].people
    assert results[True][0].recomputed == results[True][0].people  # another as-of: everyone
    assert_frame_equal(tables[True], tables[False], check_exact=True)


class _Killed(BaseException):
    """A kill: nothing after it runs (no `except Exception` takes it)."""


@pytest.mark.parametrize("between", ["killed before it published", "weekly build"])
def test_rows_another_run_folded_in_are_recomputed_by_the_next_refresh(
    between: str, demo_input: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresh killed after its fold and before it published, or a weekly build run in
    between, leaves rows in the person state that the version in force never saw, and the
    next refresh's fold then takes in nothing: it must not recompute only whom its own fold
    touched. Its table equals a refresh that recomputes everyone from the same workspace."""
    from segments import live

    cuts = [datetime(2026, 11, 9), datetime(2026, 11, 16), datetime(2026, 11, 22, 12)]
    parts = split(demo_input, tmp_path / "deliveries", cuts)
    cfg = load_config()
    inputs, ws = tmp_path / "in", tmp_path / "ws"
    _run(gather(inputs, parts[0], parts[1]), ws, "2026-W46")
    pipeline.refresh(cfg, gather(inputs, parts[2]), ws)
    gather(inputs, parts[3])  # the afternoon of the same day
    if between == "weekly build":
        _run(inputs, ws, "2026-W46")
    else:
        with monkeypatch.context() as m:
            m.setattr(live, "publish", lambda *a, **k: (_ for _ in ()).throw(_Killed()))
            with pytest.raises(_Killed):
                pipeline.refresh(cfg, inputs, ws)
    everyone = tmp_path / "everyone"
    shutil.copytree(ws, everyone)
    got = pipeline.refresh(cfg, inputs, ws)
    want = pipeline.refresh(cfg, inputs, everyone, touched_only=False)
    assert got.as_of.label == want.as_of.label == "2026-11-22"
    assert_frame_equal(
        pl.read_parquet(Layout(ws).current("tags.parquet")),
        pl.read_parquet(Layout(everyone).current("tags.parquet")),
        check_exact=True,
    )
    # and the refresh after it, with the version in force built from the state it folds
    # onto, recomputes only whom it touches again
    pl.read_csv(inputs / "consent" / sorted(p.name for p in (inputs / "consent").iterdir())[0],
                infer_schema=False).head(0).write_csv(inputs / "consent" / "consent-empty.csv")  # fmt: skip
    again = pipeline.refresh(cfg, inputs, ws)
    assert again.recomputed is not None and again.recomputed < again.people


def _check_moved_sets(layout: Layout) -> None:
    """Oracle: the identifiers whose one_id moved between the last two versions, found from
    the two small sets of what each moved away from the week's map, are those a join of the
    two whole maps finds."""
    from segments import live

    versions = sorted(p for p in layout.current_dir.glob("v*") if p.is_dir())
    assert len(versions) >= 2
    old, new = versions[-2], versions[-1]
    ids = ["id_type", "id"]
    maps = [pl.read_parquet(v / "one_id_map.parquet", columns=["one_id", *ids]) for v in (old, new)]
    expected = (
        maps[0]
        .rename({"one_id": "old"})
        .join(maps[1], on=ids, how="full", coalesce=True)
        .filter(pl.col("old").ne_missing(pl.col("one_id")))
        .sort(ids)
    )
    moved = [pl.read_parquet(v / live.MOVED) for v in (old, new)]
    got = live._moved_between(*moved).select(expected.columns).sort(ids)
    assert_frame_equal(got, expected)
    assert expected.height > 0  # the link merged two people


def _live_version(ws: Path, as_of: str = "2026-11-22", week: str = "2026-W46") -> Layout:
    """A workspace whose version in force holds a hand-made map and global tables."""
    layout = Layout(ws)
    folder = layout.current_dir / "v000001"
    folder.mkdir(parents=True)
    (layout.current_dir / "LIVE").write_text("v000001\n")
    manifest = {
        "as_of": as_of,
        "based_on_week": week,
        "config_hash": "h",
        "state_token": "g1",
        "code_digest": code_digest(),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    pl.DataFrame(
        {
            "one_id": ["A", "A", "B", "C", "D"],
            "id_type": ["openid", "phone_sha256", "openid", "openid", "openid"],
            "id": ["a1", "pa", "b1", "c1", "d1"],
        }
    ).write_parquet(folder / "one_id_map.parquet")
    pl.DataFrame({"one_id": ["A"], "messages_13w": [1]}).write_parquet(folder / "community.parquet")
    pl.DataFrame({"phone_sha256": ["pa"], "accounts": [1]}).write_parquet(
        folder / "phone_counts.parquet"
    )
    return layout


def test_an_increment_recomputes_a_person_who_lost_an_identifier(tmp_path: Path) -> None:
    """Hand-made: A's phone pa left A (a link taken back, a phone corrected) and is G now; A
    keeps a1 and its one_id. A is dropped from the version in force and recomputed (it was
    once dropped only: the live table lost A until the next new day), G is new."""
    from segments import live

    layout = _live_version(tmp_path)
    new_map = tmp_path / "new.parquet"
    pl.DataFrame(
        {
            "one_id": ["A", "G", "B", "C", "D"],
            "id_type": ["openid", "phone_sha256", "openid", "openid", "openid"],
            "id": ["a1", "pa", "b1", "c1", "d1"],
        }
    ).write_parquet(new_map)
    none = pl.DataFrame(schema={"id_type": pl.String, "id": pl.String})
    inc = live.increment(layout, "2026-11-22", "2026-W46", "h", none, new_map, state_base="g1")
    assert inc is not None
    assert sorted(inc.touched.one_ids["one_id"]) == ["A", "G"]
    assert sorted(inc.dropped["one_id"]) == ["A"]


def test_an_increment_touches_rows_and_moved_identifiers_and_drops_old_one_ids(
    tmp_path: Path,
) -> None:
    """Hand-made: C's identifier got rows; B's identifier moved to D (a merge) and E is new.
    Touched: C (rows), D (gained b1), E (new); dropped: B (gone). A is kept as it was."""
    from segments import live

    layout = _live_version(tmp_path)
    new_map = tmp_path / "new.parquet"
    pl.DataFrame(
        {
            "one_id": ["A", "A", "D", "C", "D", "E"],
            "id_type": ["openid", "phone_sha256", "openid", "openid", "openid", "openid"],
            "id": ["a1", "pa", "b1", "c1", "d1", "e1"],
        }
    ).write_parquet(new_map)
    rows = pl.DataFrame({"id_type": ["openid"], "id": ["c1"]})
    inc = live.increment(layout, "2026-11-22", "2026-W46", "h", rows, new_map, state_base="g1")
    assert inc is not None
    assert sorted(inc.touched.one_ids["one_id"]) == ["C", "D", "E"]
    assert sorted(inc.dropped["one_id"]) == ["B"]  # D is recomputed, so replaced too
    assert inc.touched.community.height == 1 and inc.previous == layout.current_dir / "v000001"
    # the same increment from the two versions' identifiers away from the week's map: the
    # version in force had f1 (new since the week, not in the new map) as F
    moved_old = pl.DataFrame(
        {"id_type": ["openid"], "id": ["f1"], "prev": [None], "one_id": ["F"]},
        schema_overrides={"prev": pl.String},
    )
    folder = layout.current_dir / "v000001"
    live.write_moved(moved_old, "week-token", folder)
    moved_new = pl.DataFrame(
        {
            "id_type": ["openid", "openid"],
            "id": ["b1", "e1"],
            "prev": ["B", None],
            "one_id": ["D", "E"],
        }
    )
    fast = live.increment(
        layout, "2026-11-22", "2026-W46", "h", rows, new_map, moved_new, "week-token", "g1"
    )
    assert fast is not None
    assert sorted(fast.touched.one_ids["one_id"]) == ["C", "D", "E"]
    assert sorted(fast.dropped["one_id"]) == ["B", "F"]
    # the same through the whole maps, with f1 in the map in force
    pl.read_parquet(folder / "one_id_map.parquet").vstack(
        pl.DataFrame({"one_id": ["F"], "id_type": ["openid"], "id": ["f1"]})
    ).write_parquet(folder / "one_id_map.parquet")
    slow = live.increment(layout, "2026-11-22", "2026-W46", "h", rows, new_map, state_base="g1")
    assert slow is not None
    assert sorted(slow.touched.one_ids["one_id"]) == ["C", "D", "E"]
    assert sorted(slow.dropped["one_id"]) == ["B", "F"]
    # a set written against another week's map is not used: the maps are joined
    other = live.increment(
        layout, "2026-11-22", "2026-W46", "h", rows, new_map, moved_new.head(0), "rebuilt-week",
        "g1",
    )  # fmt: skip
    assert other is not None and sorted(other.dropped["one_id"]) == ["B", "F"]
    # everyone is recomputed on another day (without the edges an aging needs: `test_aging`),
    # after another week, other settings, a rebuilt state, and a fold onto another generation
    # of the state than the version in force's
    for args, base in (
        (("2026-11-23", "2026-W46", "h", rows), "g1"),
        (("2026-11-22", "2026-W47", "h", rows), "g1"),
        (("2026-11-22", "2026-W46", "other", rows), "g1"),
        (("2026-11-22", "2026-W46", "h", None), "g1"),
        (("2026-11-22", "2026-W46", "h", rows), "g2"),
        (("2026-11-22", "2026-W46", "h", rows), None),
    ):
        assert live.increment(layout, *args, new_map, state_base=base) is None
    # and when other code wrote the version in force (a release installed mid-week)
    manifest = json.loads((layout.current_dir / "v000001" / "manifest.json").read_text())
    manifest["code_digest"] = "another release"
    (layout.current_dir / "v000001" / "manifest.json").write_text(json.dumps(manifest))
    assert (
        live.increment(layout, "2026-11-22", "2026-W46", "h", rows, new_map, state_base="g1")
        is None
    )


def test_global_tables_are_reused_only_when_no_kept_row_can_read_what_changed() -> None:
    """Hand-made: the community features need no message to have come or gone, the phone
    counts no order, and both every changed identifier new to the map in force."""
    from segments import live

    def changed(*old: str | None) -> pl.DataFrame:
        return pl.DataFrame(
            {"id_type": ["openid"] * len(old), "id": [f"x{i}" for i in range(len(old))],
             "old": list(old)},
            schema={"id_type": pl.String, "id": pl.String, "old": pl.String},
        )  # fmt: skip

    both = {"community", "phone_counts"}
    quiet = ("events", "orders", "messages")
    assert live.same_globals(quiet, changed()) == both
    assert live.same_globals(quiet, changed(None, None)) == both
    # an identifier of the map in force moved (a merge): it may be on kept rows
    assert live.same_globals(quiet, changed("P1", None)) == set()
    # rows came or went
    assert live.same_globals(("events", "messages"), changed()) == {"community"}
    assert live.same_globals(("events", "orders"), changed(None)) == {"phone_counts"}
    assert live.same_globals(("events",), changed()) == set()


def test_a_refresh_of_events_only_keeps_the_community_and_phone_counts(
    demo_input: Path, tmp_path: Path
) -> None:
    """A same-day delivery of events only, two of them from identifiers new to the map and
    one from a person so far known only as mentioned in a message, reuses the version in
    force's community features and phone counts, and equals a refresh of everyone."""
    cuts = [datetime(2026, 11, 9), datetime(2026, 11, 16), datetime(2026, 11, 22, 12)]
    parts = split(demo_input, tmp_path / "deliveries", cuts)
    cfg = load_config()
    inputs, ws = tmp_path / "in", tmp_path / "ws"
    _run(gather(inputs, parts[0], parts[1]), ws, "2026-W46")
    gather(inputs, parts[2])
    mentioned = "wmNewcomer000000000001"
    sender = pl.read_parquet(Layout(ws).identity_history("2026-W46") / "one_id_map.parquet")
    sender = sender.filter(pl.col("id_type") == "wecom_external_userid").sort("id")["id"][0]
    pl.DataFrame(
        {
            "msg_id": ["m-newcomer"],
            "sender_id_type": ["wecom_external_userid"],
            "sender_id": [sender],
            "ts": ["2026-11-21 10:00:00"],
            "room_id": ["wrNewcomerRoom"],
            "text": ["welcome"],
            "mentions": [mentioned],
        }
    ).write_csv(inputs / "messages" / "messages-mention.csv")
    pipeline.refresh(cfg, inputs, ws)
    shutil.copytree(parts[3] / "events", inputs / "events", dirs_exist_ok=True)
    pl.DataFrame(
        {
            "user_id_type": ["openid", "wecom_external_userid", "wecom_external_userid"],
            "user_id": ["oNewcomer000000000001", "wmNewcomer000000000002", mentioned],
            "ts": ["2026-11-22 13:00:00"] * 3,
            "event": ["view"] * 3,
        }
    ).write_csv(inputs / "events" / "events-newcomers.csv")
    everyone = tmp_path / "everyone"
    shutil.copytree(ws, everyone)
    got = pipeline.refresh(cfg, inputs, ws)
    pipeline.refresh(cfg, inputs, everyone, touched_only=False)
    assert got.recomputed is not None and 0 < got.recomputed < got.people
    community = next(s for s in got.stages if s["name"] == "community graph")
    assert community["rows"] == 0  # reused: no edge counted
    tags = pl.read_parquet(Layout(ws).current("tags.parquet"))
    assert_frame_equal(
        tags, pl.read_parquet(Layout(everyone).current("tags.parquet")), check_exact=True
    )
    person = pl.read_parquet(Layout(ws).current("one_id_map.parquet")).filter(
        pl.col("id") == mentioned
    )
    mentioned_person = tags.join(person.select("one_id"), on="one_id", how="semi")
    assert mentioned_person["mentions_received_13w"].to_list() == [1]


def test_touched_people_follow_changed_community_rows_and_shared_phone_counts() -> None:
    """Hand-made: X's community row changed, Y ordered with a phone whose count changed, Z
    holds that phone as an identifier, W only had rows; V's rows and phone are unchanged."""
    from segments.build import Touched
    from segments.build.week import _touched_people

    phones = pl.DataFrame({"one_id": ["Y", "V"], "phone_sha256": ["p1", "p2"]})
    old_comm = pl.DataFrame({"one_id": ["X", "V"], "messages_13w": [1, 5]})
    new_comm = pl.DataFrame({"one_id": ["X", "V"], "messages_13w": [2, 5]})
    old_counts = pl.DataFrame({"phone_sha256": ["p1", "p2"], "accounts": [1, 3]})
    new_counts = pl.DataFrame({"phone_sha256": ["p1", "p2"], "accounts": [2, 3]})
    id_map = pl.DataFrame(
        {"one_id": ["Z", "V"], "id_type": ["phone_sha256", "phone_sha256"], "id": ["p1", "p2"]}
    )
    touched = Touched(pl.DataFrame({"one_id": ["W"]}), old_comm, old_counts)
    got = _touched_people(touched, new_comm, new_counts, phones, id_map)
    assert got["one_id"].to_list() == ["W", "X", "Y", "Z"]


def test_window_phones_are_the_staged_orders_phones_without_staging_them() -> None:
    """Hand-made: the distinct (phone, buyer) of everyone's orders in the lookback window with
    the one_id staging gives them; an order outside the window, without a phone or a buyer, or
    of a buyer the map lacks is not there; the same pair in two parts is there once. The
    counts from them equal `phone_account_counts` over the staged orders."""
    from segments.build import Staging
    from segments.build.staging import stage_tables
    from segments.build.week import window_phones
    from segments.stages.promo import count_phone_accounts, phone_account_counts
    from segments.state.rows import schema
    from segments.weeks import Week

    cfg = load_config()
    week = Week.parse("2026-W47")
    inside, outside = datetime(2026, 11, 20), datetime(2024, 1, 1)

    def part(rows: list[tuple]) -> pl.LazyFrame:
        cols = ("buyer_id_type", "buyer_id", "phone_sha256", "paid_at")
        df = pl.DataFrame([dict(zip(cols, r, strict=True)) for r in rows])
        return (
            df.with_columns(
                pl.lit(None, dtype).alias(c)
                for c, dtype in schema("orders").items()
                if c not in cols
            )
            .select(schema("orders").keys())
            .cast(schema("orders"))
            .lazy()
        )

    parts = [
        part(
            [
                ("openid", "a", "p1", inside),
                ("openid", "b", "p1", inside),
                ("openid", "c", "p2", outside),  # outside the window
                ("openid", "d", None, inside),  # no phone
                ("openid", "ghost", "p1", inside),  # not in the map
            ]
        ),
        part([("openid", "a", "p1", inside), ("unionid", "u", "p1", inside)]),
    ]
    id_map = pl.DataFrame(
        {
            "one_id": ["A", "B", "C", "D", "A"],
            "id_type": ["openid", "openid", "openid", "openid", "unionid"],
            "id": ["a", "b", "c", "d", "u"],
        }
    )
    got = window_phones(parts, id_map, week, cfg).sort("buyer_id_type", "buyer_id")
    assert got.select("one_id", "phone_sha256", "buyer_id_type", "buyer_id").rows() == [
        ("A", "p1", "openid", "a"),
        ("B", "p1", "openid", "b"),
        ("A", "p1", "unionid", "u"),
    ]
    staging = Staging(None, 1)
    stage_tables({"orders": parts}, id_map, cfg, staging, ("orders",), people=False)
    staged = phone_account_counts(staging.scan_all("orders"), week, cfg.promo).collect()
    from_phones = count_phone_accounts(got.lazy()).collect()
    assert from_phones.sort("phone_sha256").rows() == staged.sort("phone_sha256").rows()
    assert staged.rows() == [("p1", 2)]


@settings(max_examples=60, deadline=None)
@given(
    ids=st.lists(st.integers(0, 400), min_size=0, max_size=120, unique=True),
    fresh_share=st.floats(0, 1),
    sliced=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_merging_recomputed_rows_in_equals_sorting_the_whole_table(
    ids: list[int], fresh_share: float, sliced: bool, seed: int
) -> None:
    """`live.merge_in` (slices around the recomputed rows, or `merge_sorted` past
    `SLICE_MERGE_ROWS`) gives the table a sort of all the rows gives: runs of fresh rows
    between the same two kept rows, fresh rows before the first and after the last."""
    import random

    from segments import live

    rng = random.Random(seed)
    fresh_ids = {i for i in ids if rng.random() < fresh_share}
    frame = pl.DataFrame(
        {"one_id": [f"U{i:04d}" for i in ids], "v": [rng.random() for _ in ids]},
        schema={"one_id": pl.String, "v": pl.Float64},
    ).with_columns(pl.col("one_id").is_in([f"U{i:04d}" for i in fresh_ids]).alias("fresh"))
    kept = frame.filter(~pl.col("fresh")).drop("fresh").sort("one_id")
    fresh = frame.filter(pl.col("fresh")).drop("fresh").sort("one_id")
    old = live.SLICE_MERGE_ROWS
    live.SLICE_MERGE_ROWS = 10**9 if sliced else -1
    try:
        got = live.merge_in(kept, fresh)
    finally:
        live.SLICE_MERGE_ROWS = old
    assert_frame_equal(got, frame.drop("fresh").sort("one_id"))
    assert got.n_chunks() == 1


RENAMED = {"帐篷": "ZX-Dome 2P", "鱼竿": "Carbon Pole"}  # names the taxonomy places nowhere


def _renamed(src: Path, dst: Path, names: dict[str, str]) -> Path:
    """A copy of a demo input with its orders' and events' categories renamed."""
    shutil.copytree(src, dst)
    for path in [*(dst / "orders").iterdir(), *(dst / "events").iterdir()]:
        if path.suffix == ".csv":
            frame = pl.read_csv(path, infer_schema=False)
            frame.with_columns(pl.col("category").replace(names)).write_csv(path)
        elif path.suffix == ".parquet":
            frame = pl.read_parquet(path)
            frame.with_columns(pl.col("category").replace(names)).write_parquet(path)
    return dst


def test_categories_the_taxonomy_does_not_place_are_learned_and_fold_like_a_cold_build(
    demo_input: Path, deliveries: list[Path], tmp_path: Path
) -> None:
    """Two categories under a brand's own names: each week learns what they signal from the
    people who hold them (`interests.learn_category_map`), a refresh applies its week's map,
    and folding deliveries in equals a cold build. Once learned, the renamed categories give
    the very tags the taxonomy's own names give."""
    cfg = load_config()
    source = _renamed(demo_input, tmp_path / "renamed", RENAMED)
    parts = split(source, tmp_path / "deliveries", CUTS)
    inc_in, ws = tmp_path / "inc-input", tmp_path / "inc"
    _run(gather(inc_in, parts[0]), ws, "2026-W45")
    _run(gather(inc_in, parts[1]), ws, "2026-W46")
    learned = json.loads(Layout(ws).week_state("2026-W46", "interests").read_text())
    assert learned == {"category_map": {"Carbon Pole": "fishing", "ZX-Dome 2P": "camping"}}
    # a refresh mid-week applies W46's map, as one with the files all along does
    pipeline.refresh(cfg, gather(inc_in, parts[2]), ws)
    all_in, ws2 = tmp_path / "all-input", tmp_path / "all"
    _run(gather(all_in, *parts), ws2, "2026-W46")
    pipeline.refresh(cfg, all_in, ws2)
    # (cluster numbers as each workspace's history made them: ws built W45 first)
    assert_frame_equal(
        live_table(ws, HISTORY_MADE), live_table(ws2, HISTORY_MADE), check_exact=True
    )
    # the next week folds what is new, and equals a cold build
    _run(inc_in, ws, "2026-W47")
    cold = tmp_path / "cold"
    _run(gather(tmp_path / "cold-input", *parts), cold, "2026-W47")
    assert_frame_equal(week_table(ws, "2026-W47"), week_table(cold, "2026-W47"), check_exact=True)
    # ... and the tags of the taxonomy's own names (the same deliveries, under those names)
    named = tmp_path / "named"
    _run(gather(tmp_path / "named-input", *deliveries), named, "2026-W47")
    assert_frame_equal(
        week_table(cold, "2026-W47", drop=()),
        week_table(named, "2026-W47", drop=()),
        check_exact=True,
    )


def test_a_refresh_reads_config_files_and_input_files_edited_in_place(
    deliveries: list[Path], tmp_path: Path
) -> None:
    """Three edits no setting and no listed size or time shows were once ignored: a promotion
    calendar and a taxonomy edited in place between two refreshes of the same input (the
    refresh said `unchanged`, or recomputed only the people rows touched, on the old
    calendar), and an input file corrected in place and given back its size and modification
    time. Each now gives a new version, with everyone recomputed for a config file."""
    import os

    from segments.settings.run import Paths

    folder = tmp_path / "cfg"
    shutil.copytree(load_config().resolve("taxonomy.toml").parent, folder)  # type: ignore[union-attr]
    cfg = load_config().model_copy(
        update={
            "paths": Paths(
                taxonomy=str(folder / "taxonomy.toml"),
                promo_calendar=str(folder / "promo_calendar.toml"),
            )
        }
    )
    inputs, ws = gather(tmp_path / "in", *deliveries), tmp_path / "ws"
    pipeline.run(cfg, inputs, ws, as_of="2026-W46")
    first = pipeline.refresh(cfg, inputs, ws)
    assert pipeline.refresh(cfg, inputs, ws).unchanged
    calendar = folder / "promo_calendar.toml"
    calendar.write_text(
        calendar.read_text()
        + '\n[[windows]]\nname = "店庆"\nstart = "2026-11-12"\nend = "2026-11-22"\n'
    )
    again = pipeline.refresh(cfg, inputs, ws)
    assert not again.unchanged and again.recomputed == again.people == first.people
    taxonomy = folder / "taxonomy.toml"
    text = taxonomy.read_text()
    taxonomy.write_text(text.replace("keywords = [", 'keywords = [\n  "露营神器",', 1))
    third = pipeline.refresh(cfg, inputs, ws)
    assert not third.unchanged and third.recomputed == third.people
    # an orders file corrected in place: one amount, the same number of bytes, the old time
    path = next((inputs / "orders").glob("*.csv"))
    stat = path.stat()
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    row = lines[1].split(",")
    amount = next(i for i, v in enumerate(row) if v.replace(".", "", 1).isdigit() and "." in v)
    fixed = str(round(float(row[amount]) / 2, 2)).ljust(len(row[amount]), "0")[: len(row[amount])]
    assert len(fixed) == len(row[amount]) and fixed != row[amount]
    row[amount] = fixed
    path.unlink()  # a new file, as an editor writes it; then its old size and times
    path.write_text("".join([lines[0], ",".join(row), *lines[2:]]), encoding="utf-8")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    fourth = pipeline.refresh(cfg, inputs, ws)
    assert not fourth.unchanged
    # the file's rows out and its corrected rows in
    assert fourth.state["rows_removed"]["orders"] == fourth.state["rows_added"]["orders"] > 0
