"""Ingest at scale: tables spooled to disk, deduplication by hash range, Parquet read in pieces,
the content-keyed cache of validated files, and phones masked in free text."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from segments import pipeline
from segments.config import load_config
from segments.contract import TABLES
from segments.errors import DataError
from segments.ingest import dedup as ingest_mod
from segments.ingest import ingest, mask_phones

EVENTS_HEADER = "user_id_type,user_id,ts,event,category,item_id,query,event_id"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def events_csv(rows: list[tuple]) -> str:
    lines = [EVENTS_HEADER] + [",".join("" if v is None else str(v) for v in r) for r in rows]
    return "\n".join(lines) + "\n"


def ordered(df: pl.DataFrame) -> pl.DataFrame:
    """Row order of a table is not part of its meaning: compare as sorted rows."""
    return df.sort([c for c, t in df.schema.items() if not isinstance(t, pl.List)])


def _events(n: int, first: int = 0, user: str = "u") -> list[tuple]:
    return [
        (
            "openid",
            f"{user}{i % 37}",
            f"2026-11-{1 + i % 20:02d} 10:{i % 60:02d}:00",
            "view",
            "帐篷",
            f"I{i}",
            None,
            f"ev{i}",
        )
        for i in range(first, first + n)
    ]


@pytest.fixture
def overlapping(tmp_path: Path) -> Path:
    """Three event files whose event_ids overlap (re-exports), plus rows without an event_id."""
    root = tmp_path / "in"
    write(root / "events" / "a.csv", events_csv(_events(300)))
    write(root / "events" / "b.csv", events_csv(_events(300, first=200, user="v")))
    no_id = [(*r[:7], None) for r in _events(20, first=1000)]
    write(root / "events" / "c.csv", events_csv(_events(50, first=250, user="w") + no_id))
    return root


def test_spooled_tables_equal_the_in_memory_ones(demo_input: Path, tmp_path: Path) -> None:
    memory = ingest(demo_input)
    spooled = ingest(demo_input, spool=tmp_path / "spool")
    assert spooled.tables == {} and set(spooled.parts) == set(memory.tables)
    for name, df in memory.tables.items():
        lf = spooled.scan(name)
        assert lf is not None
        assert ordered(lf.collect()).equals(ordered(df)), name
        files = [f for part in spooled.parts[name] for f in part.files]
        assert files and all(f.stat().st_mode & 0o077 == 0 for f in files)
    assert spooled.counts == memory.counts
    assert spooled.phone_hashes.equals(memory.phone_hashes)


@pytest.mark.parametrize("in_place", [True, False])
def test_partitioned_dedup_equals_one_partition(
    overlapping: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_place: bool
) -> None:
    whole = ingest(overlapping)
    c = whole.counts["events"]
    # a.csv 0..299, b.csv 200..499 (ev200..ev299 again), c.csv 250..299 again + 20 without id
    assert (c.read, c.accepted, c.duplicates) == (670, 520, 150)
    # the last file read wins: ev250..ev299 come from c.csv (user w*), ev200..ev249 from b.csv
    owners = dict(whole.tables["events"].select("event_id", "user_id").iter_rows())
    assert owners["ev260"].startswith("w") and owners["ev210"].startswith("v")
    assert owners["ev10"].startswith("u")

    monkeypatch.setattr(ingest_mod, "ROWS_PER_PART", 64)  # 670 rows -> 16 hash ranges
    monkeypatch.setattr(ingest_mod, "CHECK_ROWS", 100)  # repeated keys found in 8 ranges
    # 250 rows share a key hash: resolved in place, or with a lower limit by hash range
    monkeypatch.setattr(ingest_mod, "FIX_ROWS", 250 if in_place else 249)
    spool = tmp_path / "spool"
    spooled = ingest(overlapping, spool=spool, cache=tmp_path / "cache")
    metas = [json.loads(p.read_text()) for p in (tmp_path / "cache").glob("*/meta.json")]
    assert len(metas) == 3
    assert spooled.counts["events"] == c
    lf = spooled.scan("events")
    assert lf is not None
    assert ordered(lf.collect()).equals(ordered(whole.tables["events"]))
    parts = spooled.parts["events"]
    ids = [set(part.scan().collect().get_column("event_id").drop_nulls()) for part in parts]
    if in_place:
        # nothing copied: parts are 64-row slices of the three cached files, in the order read
        assert not (spool / "events").exists()
        assert [part.rows for part in parts] == [64] * 10 + [30]
        assert {f.parent.parent for part in parts for f in part.files} == {tmp_path / "cache"}
        # a.csv's ev200..ev299 and b.csv's ev250..ev299 are left out
        runs = {
            (run.path, run.drop.len())
            for part in parts
            for run in part.runs
            if run.drop is not None
        }
        assert sorted(n for _, n in runs) == [50, 100]
    else:
        assert len(parts) == 16 and (spool / "events").is_dir()
        # hash ranges hold disjoint event_ids
        assert sum(len(s) for s in ids) == len(set().union(*ids)) == 500
    assert len(set().union(*ids)) == 500


def test_keys_that_never_repeat_are_not_read_again(
    overlapping: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a repeated key nothing is resolved: the parts are the cached files as they are."""
    for name in ("b.csv", "c.csv"):
        (overlapping / "events" / name).unlink()
    read: list[int] = []
    original = ingest_mod._replaced_rows

    def spy(table, pieces, memo=None):  # type: ignore[no-untyped-def]
        out = original(table, pieces, memo)
        read.append(len(out[0]) if out else -1)
        return out

    monkeypatch.setattr(ingest_mod, "_replaced_rows", spy)
    spooled = ingest(overlapping, spool=tmp_path / "spool", cache=tmp_path / "cache")
    assert read == [0] and spooled.counts["events"].duplicates == 0
    (part,) = spooled.parts["events"]
    assert all(run.drop is None for run in part.runs) and part.rows == 300
    assert part.files == list((tmp_path / "cache").glob("*/good-00000.parquet"))


def test_rows_without_a_key_never_count_as_repeated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events without an event_id in two files share row numbers, not keys: nothing is
    resolved, even with no room for any repeated row, and nothing is rewritten."""
    for name in ("x.csv", "y.csv"):
        write(tmp_path / "in" / "events" / name, events_csv([(*r[:7], None) for r in _events(40)]))
    monkeypatch.setattr(ingest_mod, "FIX_ROWS", 0)
    spool = tmp_path / "spool"
    r = ingest(tmp_path / "in", spool=spool, cache=tmp_path / "cache")
    assert (r.counts["events"].accepted, r.counts["events"].duplicates) == (80, 0)
    assert not (spool / "events").exists()
    # deduplicated by hash range (forced), keyless rows are kept and spread over the ranges
    monkeypatch.setattr(ingest_mod, "ROWS_PER_PART", 16)
    write(tmp_path / "in" / "events" / "z.csv", events_csv(_events(3) + _events(3)))
    monkeypatch.setattr(ingest_mod, "FIX_ROWS", 5)
    r = ingest(tmp_path / "in", spool=spool, cache=tmp_path / "cache")
    assert (r.counts["events"].accepted, r.counts["events"].duplicates) == (83, 3)
    sizes = [part.rows for part in r.parts["events"]]
    assert len(sizes) == 8 and sum(sizes) == 83 and max(sizes) < 40


def test_hash_ranges_cover_every_hash_once() -> None:
    hashes = pl.DataFrame(
        {
            ingest_mod.HASH: pl.Series(
                [0, 1, 2**60, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1], dtype=pl.UInt64
            )
        }
    )
    for parts in (1, 2, 8, 1024):
        seen = [hashes.filter(ingest_mod._hash_range(k, parts)).height for k in range(parts)]
        assert sum(seen) == hashes.height, parts


@pytest.mark.parametrize("typed", [False, True], ids=["text", "typed"])
def test_parquet_read_in_pieces_equals_whole(tmp_path: Path, typed: bool) -> None:
    rows = _events(50)
    rows[17] = (*rows[17][:2], "not a time", *rows[17][3:])  # record 18 is rejected
    frame = pl.DataFrame(
        [list(r) for r in rows], schema=EVENTS_HEADER.split(","), orient="row"
    ).with_columns(pl.all().cast(pl.String))
    if typed:  # timestamps as a Parquet timestamp column (row 18's becomes null: a missing ts)
        frame = frame.with_columns(pl.col("ts").str.to_datetime(strict=False))
    (tmp_path / "events").mkdir()
    frame.write_parquet(tmp_path / "events" / "e.parquet", row_group_size=8)
    whole = ingest(tmp_path)
    pieces = ingest(tmp_path, chunk_rows=7)
    assert pieces.tables["events"].equals(whole.tables["events"])
    assert pieces.counts == whole.counts
    assert pieces.rejects["events"]["row"].to_list() == [18]
    assert whole.rejects["events"]["row"].to_list() == [18]
    assert pieces.tables["events"].height == 49


def test_the_cache_validates_only_new_or_changed_files(overlapping: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = ingest(overlapping, cache=cache)
    assert first.reused == 0 and len(list(cache.iterdir())) == 3
    again = ingest(overlapping, cache=cache)
    assert again.reused == 3
    assert again.tables["events"].equals(first.tables["events"])
    assert again.counts == first.counts
    # one file changes, one is renamed (same content: still cached), one is removed
    write(overlapping / "events" / "a.csv", events_csv(_events(310)))
    (overlapping / "events" / "b.csv").rename(overlapping / "events" / "b2.csv")
    (overlapping / "events" / "c.csv").unlink()
    third = ingest(overlapping, cache=cache)
    assert third.reused == 1
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 2  # c.csv's is gone
    fresh = ingest(overlapping)
    assert third.tables["events"].equals(fresh.tables["events"])
    assert third.counts == fresh.counts


def test_a_cache_entry_depends_on_the_settings(overlapping: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    utc = ingest(overlapping, cache=cache, tz="UTC")
    local = ingest(overlapping, cache=cache, tz="Asia/Shanghai")
    assert local.reused == 0  # same files, other timezone: validated again
    assert utc.tables["events"]["ts"].to_list() == local.tables["events"]["ts"].to_list()
    offset = write(overlapping / "events" / "d.csv", events_csv([]))
    offset.write_text(
        EVENTS_HEADER + "\nopenid,z1,2026-11-20T10:00:00Z,view,,,,evz\n", encoding="utf-8"
    )
    ts = {
        tz: ingest(overlapping, cache=cache, tz=tz)
        .tables["events"]
        .filter(pl.col("event_id") == "evz")["ts"]
        .item()
        for tz in ("UTC", "Asia/Shanghai")
    }
    assert ts["UTC"].hour == 10 and ts["Asia/Shanghai"].hour == 18


def test_a_half_written_cache_entry_is_never_used(overlapping: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = ingest(overlapping, cache=cache)
    entry = next(p for p in cache.iterdir() if not p.name.startswith("."))
    (entry / "meta.json").unlink()  # as if killed before the entry was complete
    stale = cache / ".deadbeef.123.tmpdir"
    stale.mkdir()
    (stale / "good-00000.parquet").write_bytes(b"half")
    again = ingest(overlapping, cache=cache)
    assert again.reused == 2 and not stale.exists()
    assert again.tables["events"].equals(first.tables["events"])


def test_phones_in_free_text_are_masked_on_the_way_in(tmp_path: Path) -> None:
    write(
        tmp_path / "messages" / "m.csv",
        "msg_id,sender_id,ts,text\n"
        "m1,wm1,2026-11-20 10:00:00,加我 13912345678 或 +86 150-1111-2222\n"
        "m2,wm1,2026-11-20 10:01:00,订单号 2026111312345678 帐篷\n",
    )
    write(
        tmp_path / "events" / "e.csv",
        events_csv(
            [("openid", "o1", "2026-11-20 10:00:00", "search", None, None, "18633334444", "e1")]
        ),
    )
    r = ingest(tmp_path)
    texts = r.tables["messages"].sort("msg_id")["text"].to_list()
    assert texts == ["加我 <phone> 或 <phone>", "订单号 2026111312345678 帐篷"]
    assert r.tables["events"]["query"].to_list() == ["<phone>"]
    df = pl.DataFrame(
        {
            "t": [
                "13912345678,13811112222",
                "a1391234567",
                None,
                "电话１３９１２３４５６７８谢谢",  # full-width, as Chinese input methods type it
                "＋８６ １３９-1234-5678",
                "１３９１２３４５６７８９",  # 12 digits: not a phone
            ]
        }
    )
    got = df.select(mask_phones(pl.col("t")))["t"].to_list()
    assert got == [
        "<phone>,<phone>",
        "a1391234567",
        None,
        "电话<phone>谢谢",
        "<phone>",
        "１３９１２３４５６７８９",
    ]


def test_a_rerun_reads_the_cache_and_writes_identical_outputs(
    demo_input: Path, tmp_path: Path
) -> None:
    cfg = load_config()
    out = tmp_path / "ws"
    pipeline.run(cfg, demo_input, out, as_of="2026-W47")
    tags = (out / "weeks" / "2026-W47" / "tags.parquet").read_bytes()
    ids = (out / "identity" / "one_id_map.parquet").read_bytes()
    entries = sorted(p.name for p in (out / "cache" / "ingest").iterdir())
    assert len(entries) == sum(len(list((demo_input / t).glob("*.*"))) for t in TABLES)
    assert not (out / "staging" / "tables").exists()
    pipeline.run(cfg, demo_input, out, as_of="2026-W47")
    assert (out / "weeks" / "2026-W47" / "tags.parquet").read_bytes() == tags
    assert (out / "identity" / "one_id_map.parquet").read_bytes() == ids
    assert sorted(p.name for p in (out / "cache" / "ingest").iterdir()) == entries
    # without the cache the same outputs come out
    shutil.rmtree(out / "cache")
    pipeline.run(cfg, demo_input, out, as_of="2026-W47")
    assert (out / "weeks" / "2026-W47" / "tags.parquet").read_bytes() == tags


def test_a_damaged_cache_entry_stops_with_one_line(overlapping: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ingest(overlapping, cache=cache)
    piece = next(cache.glob("*/good-00000.parquet"))
    piece.write_bytes(b"not parquet")  # meta.json still says the entry is complete
    with pytest.raises(DataError) as e:
        ingest(overlapping, cache=cache)
    msg = str(e.value)
    assert "ingest cache of table 'events' cannot be read" in msg and str(cache) in msg
    assert "\n" not in msg


def _hash_piece(folder: Path, name: str, hashes: list[int | None]) -> ingest_mod._Piece:
    path = folder / name / "good-00000.parquet"
    path.parent.mkdir(parents=True)
    pl.DataFrame({ingest_mod.HASH: pl.Series(hashes, dtype=pl.UInt64)}).write_parquet(path)
    return ingest_mod._Piece(path, None, len(hashes))  # type: ignore[arg-type]


def test_repeated_keys_of_added_pieces_equal_those_found_by_sorting(tmp_path: Path) -> None:
    """Property: for random pieces, some delivered later, the repeated hashes found from the
    last run's and the new pieces' equal those found by sorting every hash; a piece that is
    gone (or one fewer copy of a piece delivered twice) makes the memo useless."""
    import random

    rng = random.Random(5)
    table = TABLES["events"]
    for trial in range(12):
        folder = tmp_path / f"t{trial}"
        pieces = [
            _hash_piece(
                folder,
                f"e{i}",
                [rng.choice([None, *range(60)]) for _ in range(rng.randint(0, 25))],
            )
            for i in range(rng.randint(1, 6))
        ]
        if rng.random() < 0.5:  # a file delivered twice: the same piece twice
            pieces.append(pieces[0])
        cut = rng.randint(0, len(pieces))
        memo = ingest_mod.SharedKeys(folder / "cache")
        first = ingest_mod._shared_hashes(table, pieces[:cut])
        assert first is not None
        memo.known = {"events": {"pieces": [p.key for p in pieces[:cut]], "shared": list(first)}}
        got = memo.added_to("events", pieces)
        want = ingest_mod._shared_hashes(table, pieces)
        assert got is not None and want is not None
        assert got.to_list() == want.to_list(), trial
        if cut:  # every copy of a piece the memo holds is gone
            less = [p for p in pieces if p.key != pieces[0].key]
            assert memo.added_to("events", less) is None


def test_a_second_ingest_with_an_added_file_finds_repeated_keys_without_sorting(
    overlapping: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file added since the last run (repeating an old key and one of its own): the rows
    and counts equal a fresh ingest's, and no hash is sorted; a damaged memo is ignored."""
    cache = tmp_path / "cache"
    ingest(overlapping, spool=tmp_path / "s1", cache=cache)
    memo = cache.with_name("cache.shared_keys.json")
    assert memo.is_file() and memo.stat().st_mode & 0o077 == 0
    write(
        overlapping / "events" / "d.csv", events_csv(_events(3, first=10) + _events(1, first=400))
    )
    sorted_: list[int] = []
    original = ingest_mod._shared_hashes

    def spy(table, pieces):  # type: ignore[no-untyped-def]
        sorted_.append(len(pieces))
        return original(table, pieces)

    monkeypatch.setattr(ingest_mod, "_shared_hashes", spy)
    again = ingest(overlapping, spool=tmp_path / "s2", cache=cache)
    assert sorted_ == []
    fresh = ingest(overlapping, spool=tmp_path / "s3", cache=tmp_path / "other")
    assert sorted_ == [4]
    assert again.counts == fresh.counts and again.counts["events"].duplicates == 150 + 4
    a, b = again.scan("events"), fresh.scan("events")
    assert a is not None and b is not None
    assert ordered(a.collect()).equals(ordered(b.collect()))
    memo.write_text("{not json")
    ingest(overlapping, spool=tmp_path / "s4", cache=cache)
    assert sorted_ == [4, 4]


def test_an_added_file_that_repeats_more_rows_than_the_limit_is_deduplicated_by_range(
    overlapping: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The memo names the repeated keys of an added file without counting their rows: a file
    delivered again in full (300 rows sharing keys, past a limit of 280) is deduplicated by
    hash range, as a fresh ingest does, and not resolved in place; at 310 it is resolved in
    place. Rows and counts equal a fresh ingest's either way."""
    cache = tmp_path / "cache"
    ingest(overlapping, spool=tmp_path / "s1", cache=cache)
    shutil.copy(overlapping / "events" / "a.csv", overlapping / "events" / "e.csv")
    fresh = ingest(overlapping, spool=tmp_path / "f", cache=tmp_path / "other")
    want = fresh.scan("events")
    assert want is not None
    # b.csv's 100 and c.csv's 50 repeats of a.csv, then a.csv's 300 rows again in e.csv:
    # rows sharing a hash: a.csv 300 + b.csv 100 + c.csv 50 + e.csv 300
    for limit, in_place in ((749, False), (750, True)):
        monkeypatch.setattr(ingest_mod, "FIX_ROWS", limit)
        shutil.rmtree(tmp_path / "s2", ignore_errors=True)
        again = ingest(overlapping, spool=tmp_path / "s2", cache=cache)
        assert again.counts == fresh.counts and again.counts["events"].duplicates == 150 + 300
        got = again.scan("events")
        assert got is not None
        assert ordered(got.collect()).equals(ordered(want.collect()))
        spooled = (tmp_path / "s2" / "events").exists()
        assert spooled is not in_place, limit


def test_the_phone_hash_table_is_written_again_only_when_its_files_change(
    demo_input: Path, tmp_path: Path
) -> None:
    """The phone table carries the digest of the validated files it was gathered from: an
    ingest of the same files neither gathers nor writes it; a new file, or a damaged table,
    writes it again, equal to the table gathered from every file."""
    from segments.io import parquet_metadata
    from segments.layout import Layout
    from segments.outputs import PHONE_TOKEN_KEY, write_rejects

    root = tmp_path / "in"
    shutil.copytree(demo_input, root, ignore=shutil.ignore_patterns("truth"))
    late = root.parent / "store_orders.parquet"
    shutil.move(root / "orders" / "store_orders.parquet", late)
    layout = Layout(tmp_path / "ws")
    layout.phone_hashes.parent.mkdir(parents=True)

    def run() -> tuple[object, int]:
        got = ingest(root, spool=tmp_path / "spool", cache=tmp_path / "cache")
        write_rejects(got, layout)
        return got, layout.phone_hashes.stat().st_mtime_ns

    first, stamp = run()
    before = pl.read_parquet(layout.phone_hashes)
    assert parquet_metadata(layout.phone_hashes)[PHONE_TOKEN_KEY] == first.phone_token
    again, stamp_again = run()
    assert again.phone_token == first.phone_token
    assert again._phones is None and stamp_again == stamp  # neither gathered nor written
    # a new file that holds no phone (an openid's events) changes nothing of the table
    events = pl.DataFrame(
        {"user_id_type": ["openid"], "user_id": ["oNoPhone0001"],
         "ts": ["2026-11-20 10:00:00"], "event": ["view"]}
    )  # fmt: skip
    events.write_csv(root / "events" / "events-no-phone.csv")
    quiet, stamp_quiet = run()
    assert quiet.phone_token == first.phone_token
    assert quiet._phones is None and stamp_quiet == stamp
    alone = tmp_path / "alone"
    (alone / "events").mkdir(parents=True)
    events.write_csv(alone / "events" / "events.csv")
    nothing = ingest(alone).phone_hashes  # no file holds a phone: an empty table, same columns
    assert nothing.height == 0 and nothing.schema == before.schema

    shutil.move(late, root / "orders" / "store_orders.parquet")
    grown, _ = run()
    assert grown.phone_token != first.phone_token
    whole = ingest(root).phone_hashes
    assert whole.height > before.height  # the store orders bring phones of their own
    assert pl.read_parquet(layout.phone_hashes).equals(whole)

    layout.phone_hashes.write_bytes(b"PAR1 not a table")
    run()
    assert pl.read_parquet(layout.phone_hashes).equals(whole)
