"""End to end: outputs, determinism, privacy, the lock, and the CLI's exit codes and lines."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from polars.testing import assert_frame_equal

from segments import pipeline
from segments.cli import cli
from segments.config import load_config
from segments.errors import LockError
from segments.io import WorkspaceLock
from segments.tags import CONTRACT_COLUMNS, REGISTRY

# A mobile number standing on its own (inside a hex hash, digits sit between letters).
PHONE = re.compile(r"(?<![0-9A-Za-z])1[3-9]\d{9}(?![0-9A-Za-z])")


def parquet_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet"))


def strings_of(path: Path) -> list[str]:
    """Every text a file holds, decoded: Parquet cells (lists flattened), zip members, text."""
    if path.suffix == ".parquet":
        df = pl.read_parquet(path)
        out: list[str] = []
        for name, dtype in df.schema.items():
            col = df[name]
            if isinstance(dtype, pl.List):
                col = col.explode()
            out.extend(str(v) for v in col.drop_nulls().to_list())
        meta = pl.read_parquet_metadata(path)
        out.extend(f"{k}={v}" for k, v in meta.items())
        return out
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as z:
            return [z.read(n).decode("utf-8", "replace") for n in z.namelist()]
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return [data.decode("utf-8", "replace")]


def test_run_writes_the_contract_outputs(demo_run: Path) -> None:
    id_map = pl.read_parquet(demo_run / "identity" / "one_id_map.parquet")
    assert {"one_id", "id_type", "id"} <= set(id_map.columns)
    assert "phone" not in set(id_map["id_type"])
    weeks = sorted(p.name for p in (demo_run / "weeks").iterdir())
    assert weeks == ["2026-W47"]
    tags = pl.read_parquet(demo_run / "weeks" / "2026-W47" / "tags.parquet")
    assert set(CONTRACT_COLUMNS) <= set(tags.columns)
    assert tags.columns == [t.name for t in REGISTRY]
    assert len(REGISTRY) - 1 >= 80
    assert tags["one_id"].is_unique().all()
    assert set(tags["one_id"]) == set(id_map["one_id"])
    meta = pl.read_parquet_metadata(demo_run / "weeks" / "2026-W47" / "tags.parquet")
    assert meta["segments.week"] == "2026-W47" and "segments.config_hash" in meta
    manifest_path = next((demo_run / "runs").glob("*/manifest.json"))
    manifest = json.loads(manifest_path.read_text())
    for name, c in manifest["tables"].items():
        assert c["read"] == c["accepted"] + c["rejected"] + c["duplicates"] + c["skipped"], name
    assert all(len(i["sha256"]) == 64 for i in manifest["inputs"])
    assert {s["name"] for s in manifest["stages"]} >= {"ingest", "identity", "tags"}
    assert manifest["peak_rss_mib"] > 0


def test_high_value_follows_the_contract_rule(demo_run: Path) -> None:
    tags = pl.read_parquet(demo_run / "weeks" / "2026-W47" / "tags.parquet")
    rule = (pl.col("frequency_52w") >= 3) & (
        pl.col("monetary_52w") / pl.col("frequency_52w") >= 800
    )
    assert tags.select((pl.col("is_high_value") == rule.fill_null(False)).all()).item()
    assert tags["is_high_value"].sum() > 0


def test_two_runs_give_byte_identical_parquet(
    demo_input: Path, demo_run: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    pipeline.run(load_config(), demo_input, again)
    first = {p.relative_to(demo_run): p.read_bytes() for p in parquet_files(demo_run)}
    second = {p.relative_to(again): p.read_bytes() for p in parquet_files(again)}
    assert first.keys() == second.keys()
    different = [str(k) for k in first if first[k] != second[k]]
    assert different == []
    # and rerunning into the same workspace changes nothing either
    pipeline.run(load_config(), demo_input, again)
    third = {p.relative_to(again): p.read_bytes() for p in parquet_files(again)}
    assert [str(k) for k in first if first[k] != third[k]] == []


def test_no_raw_phone_in_any_output(demo_run: Path, demo_input: Path) -> None:
    raw_phones = set()
    orders = pl.read_csv(demo_input / "orders" / "orders.csv", infer_schema=False)
    for v in orders["phone"].drop_nulls().to_list():
        digits = re.sub(r"\D", "", v)[-11:]
        if re.fullmatch(r"1[3-9]\d{9}", digits):
            raw_phones.add(digits)
    assert len(raw_phones) > 50  # the demo has phones to leak
    leaks = []
    for path in sorted(p for p in demo_run.rglob("*") if p.is_file()):
        for text in strings_of(path):
            for m in PHONE.findall(text):
                leaks.append((str(path.relative_to(demo_run)), m))
            leaks.extend((str(path.relative_to(demo_run)), p) for p in raw_phones if p in text)
    assert leaks == []


def test_lock_refuses_a_second_run_and_clears_a_stale_one(tmp_path: Path) -> None:
    with (
        WorkspaceLock(tmp_path),
        pytest.raises(LockError, match="locked by another run"),
        WorkspaceLock(tmp_path),
    ):
        pass
    assert not (tmp_path / ".lock").exists()
    # a lock left by a dead process is cleared
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (tmp_path / ".lock").write_text(f"pid={dead.stdout.strip()} host={os.uname().nodename}\n")
    with WorkspaceLock(tmp_path):
        assert (tmp_path / ".lock").read_text().startswith(f"pid={os.getpid()}")


def test_cli_run_json_and_exit_codes(demo_input: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli, ["run", "--input", str(demo_input), "--out", str(tmp_path / "o"), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # stdout holds the JSON alone
    assert summary[0]["week"] == "2026-W47"
    assert summary[0]["tables"]["orders"]["rejected"] > 0
    assert "[segments] identity done in" in result.stderr  # the stage lines, for a log

    result = runner.invoke(
        cli, ["run", "--input", str(tmp_path / "nope"), "--out", str(tmp_path / "o2")]
    )
    assert result.exit_code == 3
    assert (
        result.stderr.strip().splitlines()[-1]
        == f"DataError: {tmp_path / 'nope'}: no such input folder."
    )

    bad = tmp_path / "bad.toml"
    bad.write_text("[run]\ntimezone = 'Mars/Olympus'\nspeed = 3\n")
    result = runner.invoke(
        cli,
        ["run", "--input", str(demo_input), "--out", str(tmp_path / "o3"), "--config", str(bad)],
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"ConfigError: {bad} has 2 problems:"
    assert len(lines) == 3
    assert any("run.speed: unknown key" in line for line in lines)
    assert any("run.timezone" in line and "Mars/Olympus" in line for line in lines)

    result = runner.invoke(
        cli,
        ["run", "--input", str(demo_input), "--out", str(tmp_path / "o4"), "--as-of", "2026-W99"],
    )
    assert result.exit_code == 2
    assert "2026 has no week 99" in result.stderr


def test_cli_validate_reports_and_fails_on_missing_column(demo_input: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["validate", "--input", str(demo_input)])
    assert result.exit_code == 0, result.output
    assert "orders" in result.stdout and "rejected" in result.stdout
    broken = tmp_path / "in"
    shutil.copytree(demo_input, broken, ignore=shutil.ignore_patterns("truth"))
    (broken / "orders" / "orders.csv").write_text("order_id,source\no1,tmall\n")
    result = runner.invoke(cli, ["validate", "--input", str(broken)])
    assert result.exit_code == 3
    assert result.stderr.strip() == (
        "DataError: orders/orders.csv: missing required column 'buyer_id_type' for table 'orders' "
        "(and buyer_id, paid_at, amount); found columns: order_id, source."
    )


def test_as_of_excludes_later_records_and_counts_them(demo_input: Path, tmp_path: Path) -> None:
    [r] = pipeline.run(load_config(), demo_input, tmp_path / "o", as_of="2026-11-08")
    assert r.week.label == "2026-W45"
    assert r.after_as_of["orders"] > 0
    tags = pl.read_parquet(tmp_path / "o" / "weeks" / "2026-W45" / "tags.parquet")
    assert tags["last_purchase_at"].max() < r.week.end


def test_every_command_has_help() -> None:
    runner = CliRunner()

    def walk(group, prefix):
        for name, cmd in group.commands.items():
            res = runner.invoke(cli, [*prefix, name, "--help"])
            assert res.exit_code == 0, (prefix, name)
            assert (cmd.help or "").strip(), f"{' '.join([*prefix, name])} has no help"
            if hasattr(cmd, "commands"):
                walk(cmd, [*prefix, name])

    walk(cli, [])


def test_buckets_give_the_same_tags_as_one_bucket(
    demo_input: Path, demo_run: Path, tmp_path: Path
) -> None:
    cfg = load_config().model_copy(
        update={"run": load_config().run.model_copy(update={"buckets": 3})}
    )
    pipeline.run(cfg, demo_input, tmp_path / "b3")
    one = pl.read_parquet(demo_run / "weeks" / "2026-W47" / "tags.parquet")
    three = pl.read_parquet(tmp_path / "b3" / "weeks" / "2026-W47" / "tags.parquet")
    assert_frame_equal(one, three, check_exact=True)
    assert not (tmp_path / "b3" / "staging").exists() or not any(
        (tmp_path / "b3" / "staging").iterdir()
    )


def test_a_person_alone_in_a_bucket_gets_the_same_unrounded_tags(
    demo_input: Path, demo_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every float tag is rounded at the end, which hides last-bit differences; here the tag
    table is caught before rounding. 30 buyers each get a bucket of their own (everyone else
    shares bucket 0): their values must equal those of a one-bucket run bit for bit. polars
    divides a one-row column by a constant, and takes a grouped std, in another way than a
    longer one; without `segments.exprs.div` and the integer std this fails."""
    from segments.build import staging, week

    tags = pl.read_parquet(demo_run / "weeks" / "2026-W47" / "tags.parquet")
    alone = (
        tags.filter((pl.col("frequency_lifetime") >= 3) & (pl.col("events_13w") > 0))
        .get_column("one_id")
        .sort()
        .head(30)
        .to_list()
    )
    assert len(alone) == 30
    caught: list[pl.DataFrame] = []
    finalize = week.finalize

    def catch(table: pl.DataFrame, *rest: object) -> pl.DataFrame:
        caught.append(table.sort("one_id"))
        return finalize(table, *rest)

    def own_bucket(one_id: str | pl.Expr, buckets: int) -> pl.Expr:
        expr = pl.col(one_id) if isinstance(one_id, str) else one_id
        home = {oid: i + 1 for i, oid in enumerate(alone)} if buckets > 1 else {}
        return expr.replace_strict(home, default=0, return_dtype=pl.Int32)

    monkeypatch.setattr(week, "finalize", catch)
    monkeypatch.setattr(staging, "bucket_of", own_bucket)
    pipeline.run(load_config(), demo_input, tmp_path / "one")
    weeks = len(caught)
    cfg = load_config()
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"buckets": len(alone) + 1})})
    pipeline.run(cfg, demo_input, tmp_path / "apart")
    assert len(caught) == 2 * weeks
    for one, apart in zip(caught[:weeks], caught[weeks:], strict=True):
        assert_frame_equal(one, apart, check_exact=True)


@pytest.mark.parametrize("fix_rows", [2_000_000, 0], ids=["in place", "by hash range"])
def test_tables_in_many_partitions_give_the_same_tags(
    demo_input: Path,
    demo_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fix_rows: int,
) -> None:
    """Brand-sized inputs are staged in parts, deduplicated in place or by hash range, and big
    Parquet inputs validated in pieces; on the demo, forced small, the tags and the identity
    map are the same as in one piece."""
    from segments.ingest import dedup as ingest_mod

    monkeypatch.setattr(ingest_mod, "ROWS_PER_PART", 1_000)  # events: 8 parts and more
    monkeypatch.setattr(ingest_mod, "CHUNK_ROWS", 777)
    monkeypatch.setattr(ingest_mod, "FIX_ROWS", fix_rows)
    out = tmp_path / "parts"
    pipeline.run(load_config(), demo_input, out)
    for rel in ("weeks/2026-W47/tags.parquet", "identity/one_id_map.parquet"):
        assert_frame_equal(
            pl.read_parquet(demo_run / rel), pl.read_parquet(out / rel), check_exact=True
        )
    manifest = json.loads(next((out / "runs").glob("*/manifest.json")).read_text())
    want = json.loads(next((demo_run / "runs").glob("*/manifest.json")).read_text())
    assert manifest["tables"] == want["tables"]


def test_eval_meets_the_accuracy_targets_on_demo_data(demo_input: Path, demo_run: Path) -> None:
    from segments.evaluate import evaluate

    metrics = evaluate(demo_run, demo_input / "truth", demo_input)
    # The rule-based families meet their targets on any population; the learned ones (interest,
    # hunters, clusters) are held to theirs on 1500-person held-out seeds
    # (test_evaluate_heldout.py): 400 people hold ~40 hunters, where one false flag is 2.5 %.
    learned = {"primary_interest", "is_coupon_hunter", "cluster"}
    failed = [
        (m.tag, m.metric, round(m.value, 4), m.target)
        for m in metrics
        if m.passed is False and m.tag not in learned
    ]
    assert failed == []
    names = {(m.tag, m.metric) for m in metrics}
    assert ("one_id", "B-cubed recall (evidence truth)") in names
    assert ("cluster", "adjusted Rand index vs personas") in names
    assert ("cluster", "ARI of standardised KMeans (baseline)") in names
    assert ("primary_interest", "precision (everyone assigned)") in names
    assert ("primary_interest", "coverage (planted interest, any signal)") in names
    assert ("is_coupon_hunter", "coverage (recall)") in names


def test_cli_eval_json(demo_input: Path, demo_run: Path) -> None:
    result = CliRunner().invoke(
        cli, ["eval", "--workspace", str(demo_run), "--truth", str(demo_input / "truth"), "--json"]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["tag"] for r in rows} >= {"one_id", "is_coupon_hunter", "primary_interest"}


def test_weeks_range_builds_rfm_history_from_the_panel(demo_input: Path, tmp_path: Path) -> None:
    results = pipeline.run(load_config(), demo_input, tmp_path / "h", weeks="2026-W44..2026-W47")
    assert [r.week.label for r in results] == ["2026-W47"]  # full tags for the last week only
    history = pl.read_parquet(tmp_path / "h" / "history" / "rfm_weekly.parquet")
    assert sorted(history["week"].unique()) == ["2026-W44", "2026-W45", "2026-W46", "2026-W47"]
    tags = pl.read_parquet(tmp_path / "h" / "weeks" / "2026-W47" / "tags.parquet")
    cols = ["one_id", "recency_days", "frequency_52w", "monetary_52w", "frequency_lifetime"]
    from_panel = history.filter(pl.col("week") == "2026-W47").select(cols).sort("one_id")
    from_orders = tags.filter(pl.col("frequency_lifetime") > 0).select(cols).sort("one_id")
    assert_frame_equal(from_panel, from_orders, check_dtypes=False)
    # an earlier week's snapshot sees nothing after that week's end
    w44 = history.filter(pl.col("week") == "2026-W44")
    assert w44["last_purchase_at"].max() < datetime(2026, 11, 2)


def test_mixed_sources_run_explains_every_reject(tmp_path: Path) -> None:
    """Issue 2's acceptance: a broken CSV row, the GBK Taobao export and a WeCom archive."""
    fixtures = Path(__file__).parent / "fixtures"
    inp = tmp_path / "in"
    (inp / "orders").mkdir(parents=True)
    (inp / "messages").mkdir()
    shutil.copy(fixtures / "ExportOrderList_202611.csv", inp / "orders")
    (inp / "orders" / "shop.csv").write_text(
        "order_id,source,buyer_id_type,buyer_id,phone,paid_at,amount\n"
        "s1,store,member_id,M1,13912345678,2026-11-20 10:00:00,900\n"
        's2,store,member_id,M2,,2026-11-20 10:00:00,"12\n'  # an unterminated quote
        "s3,store,member_id,M3,,2026-11-21 10:00:00,-3\n",
        encoding="utf-8",
    )
    archive = [
        {
            "msgid": "m1",
            "action": "send",
            "from": "wmAAAA1234567890",
            "tolist": [],
            "roomid": "r1",
            "msgtime": 1763600000000,
            "msgtype": "text",
            "text": {"content": "周末去营地过夜"},
        },
        {
            "msgid": "m2",
            "action": "recall",
            "from": "wmAAAA1234567890",
            "roomid": "r1",
            "msgtime": 1763600000000,
        },
    ]
    (inp / "messages" / "archive.jsonl").write_text(
        "\n".join(json.dumps(x, ensure_ascii=False) for x in archive) + "\nnot json\n",
        encoding="utf-8",
    )
    [result] = pipeline.run(load_config(), inp, tmp_path / "out", as_of="2026-W47")
    for name, c in result.counts.items():
        assert c.reconciles(), name
    rejects = pl.concat(
        [pl.read_parquet(p) for p in (tmp_path / "out" / "rejects").glob("*.parquet")]
    )
    assert rejects["reason"].null_count() == 0 and rejects["file"].null_count() == 0
    total_rejected = sum(c.rejected for c in result.counts.values())
    identifier_rejects = pl.read_parquet(
        tmp_path / "out" / "rejects" / "identifiers.parquet"
    ).height
    assert rejects.height == total_rejected + identifier_rejects
    assert set(rejects["file"]) >= {
        "orders/shop.csv",
        "orders/ExportOrderList_202611.csv",
        "messages/archive.jsonl",
    }
    assert result.counts["messages"].skipped == 1 and result.counts["orders"].skipped == 1


def test_a_brand_without_orders_still_gets_tags(tmp_path: Path) -> None:
    inp = tmp_path / "in" / "events"
    inp.mkdir(parents=True)
    (inp / "e.csv").write_text(
        "user_id_type,user_id,ts,event,category,query\n"
        "openid,oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,2026-11-20 10:00:00,view,帐篷,\n"
        "openid,oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,2026-11-21 10:00:00,search,,轻量帐篷 两人\n"
        "openid,oUpF8uKCPMgDkd0uBsH2uFAPpbRw,2026-11-21 11:00:00,view,登山鞋,\n",
        encoding="utf-8",
    )
    [r] = pipeline.run(load_config(), tmp_path / "in", tmp_path / "out", as_of="2026-W47")
    tags = pl.read_parquet(tmp_path / "out" / "weeks" / "2026-W47" / "tags.parquet").sort("one_id")
    assert tags.height == 2 and r.people == 2
    assert tags["lifecycle_stage"].to_list() == ["prospect", "prospect"]
    assert tags["frequency_52w"].to_list() == [0, 0] and tags["p_alive"].null_count() == 2
    assert set(tags["aipl_stage"].drop_nulls()) <= {"awareness", "interest"}


def test_workspace_api_previews_a_pack_like_the_cli(demo_run: Path) -> None:
    import segments as sg

    ws = sg.open_workspace(demo_run)
    view = ws.audience("high_value")
    preview = view.preview()
    tags = ws.tags().collect()
    expected = tags.filter(
        pl.col("is_high_value") & ~pl.col("is_opted_out") & ~pl.col("is_coupon_hunter")
    )
    assert preview["week"] == "2026-W47"
    assert preview["counts"]["matched"] == tags["is_high_value"].sum()
    assert preview["counts"]["final"] == expected.height
    result = CliRunner().invoke(
        cli, ["audience", "preview", "high_value", "--workspace", str(demo_run), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"] == preview["counts"]


def test_a_bad_week_is_refused_before_anything_is_written(demo_input: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["run", "--input", str(demo_input), "--out", str(tmp_path / "o"), "--as-of", "2026-W54"],
    )
    assert result.exit_code == 2
    assert (
        result.stderr.strip() == "ConfigError: '2026-W54' is not an ISO week: 2026 has no week 54."
    )
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------
# Identity reads only the new files' identifiers


def _identity_and_tags(ws: Path) -> dict[str, bytes]:
    # Clusters are compared too: their population means once depended on how the tag table
    # happened to be chunked in memory, and clusters.parquet differed in about one run in ten.
    week = ws / "weeks" / "2026-W47"
    files = [
        *sorted((ws / "identity").glob("*.parquet")),
        ws / "identity" / "stats.json",
        *(
            week / f"{name}.parquet"
            for name in ("tags", "interest_graph", "tag_dictionary", "clusters")
        ),
    ]
    return {p.name: p.read_bytes() for p in files}


def _last_manifest(ws: Path) -> dict:
    return json.loads(sorted((ws / "runs").glob("*/manifest.json"))[-1].read_text())


def test_identity_reuses_last_runs_identifiers_and_equals_a_full_read(
    demo_input: Path, tmp_path: Path
) -> None:
    cfg = load_config()
    inp = tmp_path / "input"
    shutil.copytree(demo_input, inp)
    ws = tmp_path / "ws"
    pipeline.run(cfg, inp, ws, as_of="2026-W47")
    first = _last_manifest(ws)["identity_pieces"]
    files = sum(
        1
        for t in ("orders", "events", "messages", "identities", "consent")
        for _ in (inp / t).iterdir()
    )
    assert first == {"read": files, "reused": 0}
    before = _identity_and_tags(ws)

    # Next delivery: a link of a known openid to a new member number, and a new person's events.
    links = pl.read_csv(inp / "identities" / "links.csv", infer_schema=False)
    link = links.filter(
        (pl.col("id_type_b") == "openid") & (pl.col("id_b").str.len_chars() > 8)
    ).row(0, named=True)  # a real openid (the first row need not hold one)
    known = link["id_b"]
    (inp / "identities" / "zz_new.csv").write_text(
        "id_type_a,id_a,id_type_b,id_b,source,observed_at\n"
        f"openid,{known},member_id,MNEW0000001,loyalty,2026-11-20 10:00:00\n"
        "openid,oNEWPERSON000000000000000001,unionid,oNEWUNION0000000000000000001,"
        "miniprogram_login,2026-11-20 11:00:00\n",
        encoding="utf-8",
    )
    (inp / "events" / "zz_new.csv").write_text(
        "user_id_type,user_id,ts,event,category,item_id,query,event_id\n"
        "openid,oNEWPERSON000000000000000001,2026-11-21 09:00:00,view,帐篷,i1,,zz1\n",
        encoding="utf-8",
    )
    pipeline.run(cfg, inp, ws, as_of="2026-W47")
    assert _last_manifest(ws)["identity_pieces"] == {"read": 2, "reused": files}
    fresh = tmp_path / "fresh"
    pipeline.run(cfg, inp, fresh, as_of="2026-W47")
    assert _last_manifest(fresh)["identity_pieces"] == {"read": files + 2, "reused": 0}
    incremental = _identity_and_tags(ws)
    assert incremental == _identity_and_tags(fresh)
    ids = pl.read_parquet(ws / "identity" / "one_id_map.parquet")
    person = ids.filter(pl.col("id") == known)["one_id"].item()
    assert ids.filter(pl.col("id") == "MNEW0000001")["one_id"].item() == person
    assert ids.filter(pl.col("id") == "oNEWPERSON000000000000000001").height == 1

    # Files leave: last run's aggregate includes their identifiers, so the nodes are those the
    # other files gave on their own (kept per file), and nothing is read.
    (inp / "events" / "zz_new.csv").unlink()
    (inp / "identities" / "zz_new.csv").unlink()
    pipeline.run(cfg, inp, ws, as_of="2026-W47")
    assert _last_manifest(ws)["identity_pieces"] == {"read": 0, "reused": files}
    assert _identity_and_tags(ws) == before

    # A correction replaces an order of an old file: that file's rows change, so it is read
    # again with the new one, and the others' own nodes are reused.
    orders = pl.read_csv(inp / "orders" / "orders.csv", infer_schema=False)
    orders.head(1).with_columns(pl.lit("1.00").alias("amount")).write_csv(
        inp / "orders" / "zz_fix.csv"
    )
    pipeline.run(cfg, inp, ws, as_of="2026-W47")
    assert _last_manifest(ws)["identity_pieces"] == {"read": 2, "reused": files - 1}
    again = tmp_path / "again"
    pipeline.run(cfg, inp, again, as_of="2026-W47")
    assert _identity_and_tags(ws) == _identity_and_tags(again)


def test_identity_cache_follows_the_week_cut(demo_input: Path, tmp_path: Path) -> None:
    # Week 46 leaves out the rows after it; week 47 must not take week 46's identifiers for
    # those files (their key holds the cut). The oracle: the same two weeks with the cache
    # deleted in between.
    cfg = load_config()
    ws, oracle = tmp_path / "ws", tmp_path / "oracle"
    for out in (ws, oracle):
        pipeline.run(cfg, demo_input, out, as_of="2026-W46")
    shutil.rmtree(oracle / "cache" / "identity")
    for out in (ws, oracle):
        pipeline.run(cfg, demo_input, out, as_of="2026-W47")
    pieces = _last_manifest(ws)["identity_pieces"]
    assert pieces["read"] > 0
    assert pieces["read"] + pieces["reused"] == _last_manifest(oracle)["identity_pieces"]["read"]
    assert _identity_and_tags(ws) == _identity_and_tags(oracle)


def test_a_damaged_or_foreign_identity_cache_is_read_around(
    demo_input: Path, tmp_path: Path
) -> None:
    cfg = load_config()
    ws = tmp_path / "ws"
    pipeline.run(cfg, demo_input, ws, as_of="2026-W47")
    files = _last_manifest(ws)["identity_pieces"]["read"]
    want = _identity_and_tags(ws)
    cache = ws / "cache" / "identity"
    meta = json.loads((cache / "meta.json").read_text())
    # another engine version wrote it: not used, replaced
    (cache / "meta.json").write_text(json.dumps({**meta, "code": "another"}))
    pipeline.run(cfg, demo_input, ws, as_of="2026-W47")
    assert _last_manifest(ws)["identity_pieces"] == {"read": files, "reused": 0}
    assert _identity_and_tags(ws) == want
    pipeline.run(cfg, demo_input, ws, as_of="2026-W47")
    assert _last_manifest(ws)["identity_pieces"] == {"read": 0, "reused": files}
    # its graph's edges damaged on disk: its nodes stand for every file, the guards run over
    # everything, and the graph is written again
    graph = json.loads((cache / "meta.json").read_text())["graph"]
    (cache / graph["edges"]).write_bytes(b"PAR1 not a parquet file")
    pipeline.run(cfg, demo_input, ws, as_of="2026-W47")
    assert _last_manifest(ws)["identity_pieces"] == {"read": 0, "reused": files}
    assert _last_manifest(ws)["identity_graph"]["edges_evaluated"] > 0
    assert _identity_and_tags(ws) == want
    pl.read_parquet(cache / graph["edges"])
    # its nodes damaged: not used, every file read again, rewritten
    (cache / graph["valid"]).write_bytes(b"PAR1 not a parquet file")
    pipeline.run(cfg, demo_input, ws, as_of="2026-W47")
    assert _last_manifest(ws)["identity_pieces"] == {"read": files, "reused": 0}
    assert _identity_and_tags(ws) == want
    pl.read_parquet(cache / graph["valid"])


def test_identity_cache_survives_new_part_boundaries(
    demo_input: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Parts are slices in read order: a new file that sorts first moves every boundary. The
    # old files' rows are the same, so their identifiers are still reused.
    from segments.ingest import dedup as ingest_mod

    monkeypatch.setattr(ingest_mod, "ROWS_PER_PART", 1_000)
    cfg = load_config()
    inp = tmp_path / "input"
    shutil.copytree(demo_input, inp)
    ws = tmp_path / "ws"
    pipeline.run(cfg, inp, ws, as_of="2026-W47")
    files = _last_manifest(ws)["identity_pieces"]["read"]
    (inp / "events" / "aa_first.csv").write_text(
        "user_id_type,user_id,ts,event,category,item_id,query,event_id\n"
        + "".join(
            f"openid,oFIRSTFILE00000000000000000{k},2026-11-21 09:00:00,view,帐篷,i1,,aa{k}\n"
            for k in range(7)
        ),
        encoding="utf-8",
    )
    pipeline.run(cfg, inp, ws, as_of="2026-W47")
    assert _last_manifest(ws)["identity_pieces"] == {"read": 1, "reused": files}
    fresh = tmp_path / "fresh"
    pipeline.run(cfg, inp, fresh, as_of="2026-W47")
    assert _identity_and_tags(ws) == _identity_and_tags(fresh)


def test_staging_on_disk_and_in_memory_give_the_same_week(
    demo_input: Path, demo_run: Path, tmp_path: Path
) -> None:
    """The in-process engine keeps a build's rows in memory; the staging folder (what Spark's
    workers read, and what a brand-sized week falls back to) gives the same bytes."""
    cfg = load_config()
    disk = cfg.model_copy(update={"run": cfg.run.model_copy(update={"staging": "disk"})})
    pipeline.run(disk, demo_input, tmp_path / "disk")
    a = pl.read_parquet(demo_run / "weeks" / "2026-W47" / "tags.parquet")
    b = pl.read_parquet(tmp_path / "disk" / "weeks" / "2026-W47" / "tags.parquet")
    assert_frame_equal(a, b, check_exact=True)


def test_a_brand_sized_week_stages_on_disk_and_a_live_build_of_few_people_in_memory() -> None:
    """`[run] staging = "auto"`: a weekly build covering more rows than `memory_staging_rows`
    stages on disk (at 2M people: 5.9 GiB instead of 8.6), one covering fewer in memory; a
    live build of the people it touches stages in memory at any size; "memory" and "disk"
    are obeyed; Spark's executor always reads the folder."""
    from segments.build.week import BuildInputs, Touched, _in_memory
    from segments.engine import LocalExecutor

    cfg = load_config()
    limit = cfg.run.memory_staging_rows
    assert limit == 12_000_000

    def inputs(rows: int) -> BuildInputs:
        empty = pl.LazyFrame()
        return BuildInputs({}, empty, empty, empty, [], rows)

    empty = pl.DataFrame()
    touched = Touched(empty, empty, empty)
    local = LocalExecutor()
    assert _in_memory(cfg, local, inputs(limit))
    assert not _in_memory(cfg, local, inputs(limit + 1))
    assert _in_memory(cfg, local, inputs(10 * limit), touched)
    for mode, want in (("memory", True), ("disk", False)):
        forced = cfg.model_copy(update={"run": cfg.run.model_copy(update={"staging": mode})})
        assert _in_memory(forced, local, inputs(10 * limit)) is want
        assert _in_memory(forced, local, inputs(1), touched) is want

    class Remote:
        in_process = False

    assert not _in_memory(cfg, Remote(), inputs(1), touched)  # type: ignore[arg-type]


def test_validate_says_how_much_of_the_input_the_taxonomy_reads(tmp_path: Path) -> None:
    """A brand's own category names: validate counts the rows whose category, search query or
    chat text the taxonomy finds an interest in, and names the commonest categories it cannot
    place (hand-counted below)."""
    root = tmp_path / "in"
    for d in ("orders", "events", "messages"):
        (root / d).mkdir(parents=True)
    buyer, user, sender = (
        "AA1yw1Y071vReLi5sRDjUyXl",
        "oAbPVbpqyaQidaMr8COr1Yd2TihW",
        "wmKJpWCqJ80jA4PfY4Jl9RZn",
    )
    orders = [("o1", "帐篷", "paid"), ("o2", "Camping Tent", "paid"), ("o3", "望远镜", "paid"),
              ("o4", "望远镜", "paid"), ("o5", "Umbrella", "paid"), ("o6", "望远镜", "cancelled"),
              ("o7", "", "paid"), ("o8", "13812345678", "paid")]  # fmt: skip
    # (o8: a phone in the category column, as a shifted column puts it: never printed)
    (root / "orders" / "orders.csv").write_text(
        "order_id,source,buyer_id_type,buyer_id,paid_at,amount,status,category\n"
        + "".join(
            f"{o},tmall,taobao_ouid,{buyer},2026-11-02 10:00:00,99,{s},{c}\n" for o, c, s in orders
        ),
        encoding="utf-8",
    )
    (root / "events" / "events.csv").write_text(
        "user_id_type,user_id,ts,event,category,query\n"
        f"openid,{user},2026-11-02 10:00:00,view,鱼竿,\n"
        f"openid,{user},2026-11-02 10:01:00,search,,ski goggles\n"
        f"openid,{user},2026-11-02 10:02:00,search,Water Bottle,露营装备\n",
        encoding="utf-8",
    )
    (root / "messages" / "messages.csv").write_text(
        "msg_id,sender_id,ts,text\n"
        f"m1,{sender},2026-11-02 10:00:00,去莫干山露营\n"
        f"m2,{sender},2026-11-02 10:01:00,哈哈\n"
        f"m3,{sender},2026-11-02 10:02:00,\n",
        encoding="utf-8",
    )
    runner = CliRunner()
    result = runner.invoke(cli, ["validate", "--input", str(root), "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)["interests"]
    assert got == {
        "orders": {
            "categories": {
                "rows": 6,  # o7 is blank, o6 cancelled
                "with_interest": 2,  # 帐篷 by name, "Camping Tent" by its words
                "distinct": 5,
                "distinct_with_interest": 2,
                # one buyer: too few people to lean anywhere (5 must hold an interest)
                "top_without_interest": [
                    {
                        "category": "望远镜",
                        "rows": 2,
                        "people": 1,
                        "people_placed": 1,
                        "leans_to": None,
                        "learned": None,
                    },
                    {
                        "category": "<phone>",
                        "rows": 1,
                        "people": 1,
                        "people_placed": 1,
                        "leans_to": None,
                        "learned": None,
                    },
                    {
                        "category": "Umbrella",
                        "rows": 1,
                        "people": 1,
                        "people_placed": 1,
                        "leans_to": None,
                        "learned": None,
                    },
                ],
            }
        },
        "events": {
            "categories": {
                "rows": 2,
                "with_interest": 1,
                "distinct": 2,
                "distinct_with_interest": 1,
                "top_without_interest": [
                    {
                        "category": "Water Bottle",
                        "rows": 1,
                        "people": 1,
                        "people_placed": 1,
                        "leans_to": None,
                        "learned": None,
                    },
                ],
            },
            "queries": {"rows": 2, "with_interest": 2},
        },
        "messages": {"texts": {"rows": 2, "with_interest": 1}},
    }
    text = runner.invoke(cli, ["validate", "--input", str(root)]).stdout
    assert "orders    categories 6 rows, 33.3% with an interest (2 of 5 names)" in text
    assert "13812345678" not in text + result.stdout
    assert (
        "most rows without one:\n                望远镜 (2 rows)\n                <phone> (1 row)\n"
        "                Umbrella (1 row)" in text
    )


def _buyers(rows: list[tuple[str, str, str]]) -> pl.LazyFrame:
    """Orders of (buyer, category, status), every buyer a taobao_ouid."""
    return pl.LazyFrame(
        [("taobao_ouid", b, c, s) for b, c, s in rows],
        schema=["buyer_id_type", "buyer_id", "category", "status"],
        orient="row",
    )


def test_an_unplaced_category_leans_to_the_interest_its_people_hold() -> None:
    """Hand-counted: b1-b6 buy 望远镜 and 帐篷 (camping), b7-b9 望远镜 and 鱼竿 (fishing), b10-b19
    鱼竿 only; a cancelled order does not count. Of 望远镜's 9 buyers (all placed), 6 hold camping
    against 6 of the 19 placed buyers: share 2/3, lift 19/9; fishing is held by 3 (< 5)."""
    from segments.stages.interests import InterestConfig, vocabulary_coverage
    from segments.taxonomy import load_taxonomy

    rows = [(f"b{i}", c, "paid") for i in range(1, 7) for c in ("望远镜", "帐篷")]
    rows += [(f"b{i}", c, "paid") for i in range(7, 10) for c in ("望远镜", "鱼竿")]
    rows += [(f"b{i}", "鱼竿", "paid") for i in range(10, 20)]
    rows += [("b20", "望远镜", "cancelled"), ("b20", "帐篷", "cancelled")]
    got = vocabulary_coverage({"orders": _buyers(rows)}, load_taxonomy())
    [hammock] = got["orders"]["categories"]["top_without_interest"]
    assert hammock == {
        "category": "望远镜",
        "rows": 9,
        "people": 9,
        "people_placed": 9,
        "leans_to": "camping",
        "share": round(6 / 9, 4),
        "lift": round((6 / 9) / (6 / 19), 2),
        # a weekly build's rule (each buyer a person, each row a signal): 6 of the 9 lead with
        # camping, whose rate is 6/19; P(p > 12/19 | 6 of 9) = 0.536 < 0.99: not learned
        "learned": None,
    }
    # 30 buyers of 望远镜 and 帐篷, 3 of 望远镜 and 鱼竿, 100 of 鱼竿 only: camping's rate is
    # 30/133, and P(p > 60/133 | 30 of 33) = 0.99999998: a weekly build counts 望远镜 for camping
    rows = [(f"c{i}", c, "paid") for i in range(30) for c in ("望远镜", "帐篷")]
    rows += [(f"f{i}", c, "paid") for i in range(3) for c in ("望远镜", "鱼竿")]
    rows += [(f"g{i}", "鱼竿", "paid") for i in range(100)]
    got = vocabulary_coverage({"orders": _buyers(rows)}, load_taxonomy())
    [scope] = got["orders"]["categories"]["top_without_interest"]
    assert scope["leans_to"] == "camping" and scope["learned"] == "camping"
    off = InterestConfig(learn_categories=False)
    got = vocabulary_coverage({"orders": _buyers(rows)}, load_taxonomy(), cfg=off)
    assert got["orders"]["categories"]["top_without_interest"][0]["learned"] is None
