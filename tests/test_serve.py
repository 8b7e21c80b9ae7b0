"""`segments serve`: a real server process on loopback, driven over HTTP.

One small workspace per module: the demo population cut into deliveries, d0 + d1 built as
2026-W46 and refreshed (live v000001); the last test lands d2 with a refresh (v000002) while
requests run. Answers are checked against oracles read from the live version's files with
polars (hand-written filters, hashlib for phones), not against the server's own code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import segments
from segments import pipeline
from segments.config import load_config
from segments.demo.deliveries import gather, split
from segments.layout import Layout
from segments.serve.snapshot import json_value

pytestmark = pytest.mark.slow

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CUTS = [datetime(2026, 11, 9), datetime(2026, 11, 16)]
NOW = "2026-11-23T00:00:00"  # the server's wall clock (SEGMENTS_NOW)
PERSON_ROUTE = "/v1/people/{id_type}/{id:path}"

AUDIENCES = """
[packs.high_value]
where = "is_high_value"
min_size = 1
platforms = ["tencent", "oceanengine"]
refresh = ["parquet"]
refresh_options = { parquet = { min_size = 1 } }

[packs.frequent]
where = "frequency_52w >= 2"
min_size = 1
holdout = 0.2
platforms = ["tencent"]

[packs.everyone]
description = "every person the table holds: only the opted-out are left out"
where = "identifier_count >= 0"
suppress_coupon_hunters = false
min_size = 1

[packs.too_small]
where = "frequency_52w >= 1"
min_size = 1000000
"""
# exporter options for packs the server builds on request (a small workspace: no floor)
EXPORT_OPTIONS = """
[parquet]
min_size = 1

[tencent]
min_size = 1
"""


# ---------------------------------------------------------------------------------------------
# The workspace and the server


@pytest.fixture(scope="module")
def built(demo_input: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve")
    deliveries = split(demo_input, root / "deliveries", CUTS)
    audiences = root / "audiences.toml"
    audiences.write_text(AUDIENCES, encoding="utf-8")
    (root / "export_options.toml").write_text(EXPORT_OPTIONS, encoding="utf-8")
    ws, inc = root / "ws", root / "inc"
    cfg = load_config()
    pipeline.run(cfg, gather(inc, deliveries[0], deliveries[1]), ws, as_of="2026-W46")
    pipeline.refresh(cfg, inc, ws, audiences=audiences)
    assert Layout(ws).live_version() == "v000001"
    return {"ws": ws, "inc": inc, "d2": deliveries[2], "audiences": audiences, "root": root}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(built: dict[str, Path]):
    port = _free_port()
    log_path = built["root"] / "server.log"
    env = {
        **os.environ,
        "SEGMENTS_API_TOKEN": TOKEN,
        "SEGMENTS_NOW": NOW,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(segments.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    cmd = [
        sys.executable,
        "-m",
        "segments.cli",
        "serve",
        "--workspace",
        str(built["ws"]),
        "--port",
        str(port),
        "--audiences",
        str(built["audiences"]),
        "--poll-seconds",
        "0.1",
        "--export-options",
        str(built["root"] / "export_options.toml"),
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base, headers=AUTH, timeout=30)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.get("/v1/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("server did not start: " + log_path.read_text()[-2000:])
            time.sleep(0.1)
        yield {"client": client, "base": base, "log": log_path, "proc": proc}
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def live_frames(ws: Path, version: str) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    layout = Layout(ws)
    tags = pl.read_parquet(layout.current("tags.parquet", version))
    id_map = pl.read_parquet(layout.current("one_id_map.parquet", version))
    manifest = json.loads(layout.current("manifest.json", version).read_text())
    return tags, id_map, manifest


def one_line_error(r: Any, status: int) -> dict[str, Any]:
    """The response is the one-line JSON error shape with `status`."""
    assert r.status_code == status, r.text
    assert "\n" not in r.text
    body = r.json()
    assert set(body) == {"error", "message", "status"} and body["status"] == status
    assert body["message"] and "\n" not in body["message"]
    return body


def a_raw_phone(demo_input: Path, id_map: pl.DataFrame) -> str:
    """An 11-digit phone from the demo's order file whose hash (by hashlib) is in the map."""
    orders = pl.read_csv(demo_input / "orders" / "orders.csv", infer_schema=False)
    known = set(id_map.filter(pl.col("id_type") == "phone_sha256").get_column("id"))
    for phone in orders.get_column("phone").drop_nulls().unique().sort():
        if (
            re.fullmatch(r"1[3-9]\d{9}", phone)
            and hashlib.sha256(phone.encode()).hexdigest() in known
        ):
            return phone
    raise AssertionError("no known phone in the demo orders")


# ---------------------------------------------------------------------------------------------
# Oracles: written with polars here, not with the server's code


def oracle_final(tags: pl.DataFrame, where: pl.Expr, coupon: bool = True) -> pl.DataFrame:
    """People a pack with no limit, holdout or exclusions keeps: matched, not opted out (null
    counts as opted out), not a coupon hunter when suppressed."""
    keep = where.fill_null(False) & ~pl.col("is_opted_out").fill_null(True)
    if coupon:
        keep = keep & ~pl.col("is_coupon_hunter").fill_null(False)
    return tags.filter(keep).select("one_id").sort("one_id")


def holdout_of(one_ids: list[str], pack: str, share: float) -> set[str]:
    return {
        o
        for o in one_ids
        if int(hashlib.sha256(f"{pack}:{o}".encode()).hexdigest()[:8], 16) / 2**32 < share
    }


# ---------------------------------------------------------------------------------------------
# Tests


def test_health_reports_the_built_week_the_live_version_and_the_data_age(server, built) -> None:
    r = server["client"].get("/v1/health")
    assert r.status_code == 200
    body = r.json()
    _, _, manifest = live_frames(built["ws"], "v000001")
    assert body["status"] == "ok" and body["version"] == "v000001" == body["pointer"]
    assert r.headers["X-Segments-Version"] == "v000001"
    assert body["built_week"] == "2026-W46" and body["based_on_week"] == "2026-W46"
    assert body["as_of"] == manifest["as_of"] == "2026-11-15"
    newest = datetime.fromisoformat(manifest["newest_row"])
    expected_age = (datetime.fromisoformat(NOW) - newest).total_seconds()
    assert body["newest_row_age_seconds"] == pytest.approx(expected_age, abs=1e-3)
    assert body["fresh"] is (expected_age <= 300)
    assert body["people"] == pl.read_parquet(Layout(built["ws"]).current("tags.parquet")).height


def test_a_token_is_required_and_compared(server) -> None:
    base = server["base"]
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-0123456789abcdef"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
    ):
        for path in ("/v1/health", "/v1/tags", "/v1/people/one_id/U1", "/v1/packs"):
            r = httpx.get(base + path, headers=headers)
            body = one_line_error(r, 401)
            assert body["error"] == "Unauthorized"
            assert r.headers["WWW-Authenticate"] == "Bearer"
            assert TOKEN not in r.text
    r = httpx.post(base + "/v1/preview", json={"where": "is_high_value"})
    one_line_error(r, 401)
    # the docs are open, and list every endpoint with the bearer scheme
    assert httpx.get(base + "/docs").status_code == 200
    spec = httpx.get(base + "/openapi.json").json()
    assert set(spec["paths"]) == {
        "/v1/health",
        PERSON_ROUTE.replace(":path", ""),
        "/v1/tags",
        "/v1/packs",
        "/v1/packs/{name}/preview",
        "/v1/preview",
        "/v1/packs/{name}/platforms/{platform}",
        "/v1/packs/{name}/platforms/{platform}/files/{version}/{file}",
    }
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_a_person_by_every_kind_of_identifier(server, built) -> None:
    client = server["client"]
    tags, id_map, _ = live_frames(built["ws"], "v000001")
    # someone with an openid and a member id
    both = (
        id_map.filter(pl.col("id_type").is_in(["openid", "member_id"]))
        .group_by("one_id")
        .agg(pl.col("id_type").n_unique().alias("n"))
        .filter(pl.col("n") == 2)
        .sort("one_id")
    )
    one_id = both.get_column("one_id")[0]
    ids = id_map.filter(pl.col("one_id") == one_id)
    expected = {
        k: json_value(v)
        for k, v in tags.filter(pl.col("one_id") == one_id).row(0, named=True).items()
    }
    answers = [client.get(f"/v1/people/one_id/{one_id}")]
    for id_type, id_ in ids.select("id_type", "id").iter_rows():
        answers.append(client.get(f"/v1/people/{id_type}/{httpx.URL(id_).raw_path.decode()}"))
    for r in answers:
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["one_id"] == one_id and body["version"] == "v000001"
        assert body["tags"] == {k: v for k, v in expected.items() if k != "one_id"}
        assert body["cluster"] == {"id": expected["cluster"], "name": expected["cluster_name"]}
    # the packs they are in: the oracle of each pack's rule
    frequent = oracle_final(tags, pl.col("frequency_52w") >= 2).get_column("one_id").to_list()
    held = holdout_of(frequent, "frequent", 0.2)
    everyone = oracle_final(tags, pl.col("identifier_count") >= 0, coupon=False)
    high = oracle_final(tags, pl.col("is_high_value"))
    want = [
        name
        for name, members in (
            ("high_value", set(high.get_column("one_id"))),
            ("frequent", set(frequent) - held),
            ("everyone", set(everyone.get_column("one_id"))),
            ("too_small", set(oracle_final(tags, pl.col("frequency_52w") >= 1)["one_id"])),
        )
        if one_id in members
    ]
    assert answers[0].json()["packs"] == want
    assert answers[0].json()["held_out_of"] == (["frequent"] if one_id in held else [])


def test_an_opted_out_person_is_in_no_pack(server, built) -> None:
    tags, _, _ = live_frames(built["ws"], "v000001")
    opted = tags.filter(pl.col("is_opted_out").fill_null(True)).get_column("one_id")
    assert opted.len() > 0
    for one_id in opted.head(5):
        body = server["client"].get(f"/v1/people/one_id/{one_id}").json()
        assert body["packs"] == [] and body["held_out_of"] == []


def test_a_phone_in_every_accepted_form_finds_the_person_and_is_never_echoed(
    server, built, demo_input: Path
) -> None:
    client = server["client"]
    _, id_map, _ = live_frames(built["ws"], "v000001")
    phone = a_raw_phone(demo_input, id_map)
    key = hashlib.sha256(phone.encode()).hexdigest()
    one_id = id_map.filter((pl.col("id_type") == "phone_sha256") & (pl.col("id") == key))["one_id"][
        0
    ]
    p = phone
    full_width = "".join(chr(ord("０") + int(d)) for d in p)
    forms = [
        p,
        f"+86{p}",
        f"+86 {p[:3]} {p[3:7]} {p[7:]}",
        f"{p[:3]}-{p[3:7]}-{p[7:]}",
        f"0086-{p}",
        f"86 {p}",
        f"({p[:3]}) {p[3:7]} {p[7:]}",
        full_width,
    ]
    for form in forms:
        r = client.get("/v1/people/phone/" + httpx.URL(form).raw_path.decode())
        assert r.status_code == 200, (form, r.text)
        assert r.json()["one_id"] == one_id
        for variant in (p, p[3:], f"{p[:3]} {p[3:7]}", f"{p[:3]}-{p[3:7]}", full_width, key):
            assert variant not in r.text
    # the same person by the hash the engine keeps
    assert client.get(f"/v1/people/phone_sha256/{key}").json()["one_id"] == one_id
    # not a mobile number, or nobody's: a one-line error that does not echo it
    for bad, status in ((p[:-1], 400), ("2" + p[1:], 400), ("abc", 400), ("19999999999", 404)):
        if bad == "19999999999" and hashlib.sha256(bad.encode()).hexdigest() in set(id_map["id"]):
            continue
        r = client.get("/v1/people/phone/" + bad)
        one_line_error(r, status)
        assert bad not in r.text and p[3:] not in r.text


def test_unknown_identifiers_and_id_types_are_one_line_errors(server) -> None:
    client = server["client"]
    assert one_line_error(client.get("/v1/people/email/a@b.c"), 400)["error"] == "UnknownIdType"
    r = client.get("/v1/people/openid/o-nobody-has-this-openid")
    assert one_line_error(r, 404)["error"] == "PersonNotFound"
    assert "o-nobody-has-this-openid" not in r.text
    r = client.get("/v1/people/openid/" + "x" * 300)
    assert one_line_error(r, 400)["error"] == "InvalidIdentifier" and "xxxx" not in r.text
    r = client.get("/v1/no/such/endpoint/13800138000")
    assert one_line_error(r, 404)["error"] == "NotFound" and "13800138000" not in r.text
    one_line_error(client.delete("/v1/tags"), 405)


def test_the_tag_dictionary_describes_every_live_column(server, built) -> None:
    body = server["client"].get("/v1/tags").json()
    tags, _, _ = live_frames(built["ws"], "v000001")
    names = [t["name"] for t in body["tags"]]
    assert (
        names
        == pl.read_parquet(Layout(built["ws"]).week_file("2026-W46", "tag_dictionary.parquet"))
        .get_column("name")
        .to_list()
    )
    assert set(tags.columns) <= set(names)
    assert all(t["in_live_table"] is (t["name"] in tags.columns) for t in body["tags"])
    entry = next(t for t in body["tags"] if t["name"] == "recency_days")
    assert entry["family"] == "rfm" and entry["label_zh"]


def test_pack_list_and_previews_match_the_rules(server, built) -> None:
    client = server["client"]
    tags, _, _ = live_frames(built["ws"], "v000001")
    frequent = oracle_final(tags, pl.col("frequency_52w") >= 2)["one_id"].to_list()
    held = holdout_of(frequent, "frequent", 0.2)
    counts = {p["name"]: p.get("count") for p in client.get("/v1/packs").json()["packs"]}
    assert counts == {
        "high_value": oracle_final(tags, pl.col("is_high_value")).height,
        "frequent": len(frequent) - len(held),
        "everyone": oracle_final(tags, pl.col("identifier_count") >= 0, coupon=False).height,
        "too_small": oracle_final(tags, pl.col("frequency_52w") >= 1).height,
    }
    named = client.get("/v1/packs/frequent/preview").json()
    assert named == client.post("/v1/preview", json={"pack": "frequent"}).json()
    assert named["count"] == len(frequent) - len(held) and named["holdout"] == len(held)
    matched = tags.filter(pl.col("frequency_52w") >= 2)
    assert named["counts"]["matched"] == matched.height
    assert (
        named["counts"]["after_opted_out"]
        == matched.filter(~pl.col("is_opted_out").fill_null(True)).height
    )
    # an ad-hoc filter: counts and a breakdown that adds up
    where = "recency_days <= 60 AND monetary_52w > 300"
    body = client.post("/v1/preview", json={"where": where}).json()
    oracle = oracle_final(tags, (pl.col("recency_days") <= 60) & (pl.col("monetary_52w") > 300))
    assert body["count"] == oracle.height > 0 and body["version"] == "v000001"
    people = tags.join(oracle, on="one_id", how="semi")
    lifecycle = people.group_by("lifecycle_stage").len()
    assert body["breakdowns"]["lifecycle_stage"] == {
        (k if k is not None else "(none)"): n for k, n in lifecycle.iter_rows()
    }
    assert sum(body["breakdowns"]["cluster"].values()) == oracle.height


def test_previews_equal_the_cli_preview_of_the_live_table(server, built) -> None:
    """The server counts breakdowns from keys it worked out at load; the CLI's preview
    (`segments audience preview --week live`) joins and explodes: the same answer."""
    from segments.audiences import preview_pack

    client = server["client"]
    asks = [({"pack": name}, {"name": name}) for name in ("high_value", "frequent", "everyone")]
    asks += [({"where": w}, {"where": w}) for w in ("frequency_52w >= 1", "is_linked")]
    for payload, kwargs in asks:
        body = client.post("/v1/preview", json=payload).json()
        cli = preview_pack(built["ws"], week="live", audiences=built["audiences"], **kwargs)
        assert body.pop("version") == "v000001" and body.pop("as_of") == cli.pop("week")
        assert body == json.loads(json.dumps(cli)), payload
        assert body["breakdowns"]["source"]


@pytest.mark.parametrize(
    ("payload", "status", "error"),
    [
        ({"where": "is_high_value; DROP TABLE tags"}, 400, "ConfigError"),
        ({"where": "one_id IN (SELECT one_id FROM tags)"}, 400, "ConfigError"),
        ({"where": "no_such_tag > 1"}, 400, "ConfigError"),
        ({"where": "frequency_52w + 1"}, 400, "ConfigError"),
        ({"where": "frequency_52w >>> 2"}, 400, "ConfigError"),
        ({"where": "__import__('os').system('true')"}, 400, "ConfigError"),
        ({"where": ""}, 400, "ConfigError"),
        ({"where": "frequency_52w >= 1 OR " * 60 + "true"}, 400, "FilterTooLong"),
        ({"pack": "high_value", "where": "is_high_value"}, 400, "InvalidRequest"),
        ({}, 400, "InvalidRequest"),
        ({"pack": "no_such_pack"}, 400, "ConfigError"),
        ({"where": 3}, 422, "InvalidRequest"),
        ({"where": "is_high_value", "sql": "x"}, 422, "InvalidRequest"),
    ],
)
def test_bad_previews_are_one_line_4xx(server, payload, status, error) -> None:
    r = server["client"].post("/v1/preview", json=payload)
    assert one_line_error(r, status)["error"] == error


def test_request_size_is_limited(server) -> None:
    client = server["client"]
    big = {"where": "is_high_value", "pad": "x" * 20_000}
    assert one_line_error(client.post("/v1/preview", json=big), 413)["error"] == "PayloadTooLarge"
    # chunked, with no Content-Length
    chunks = (b'{"where": "' + b"x" * 4096 for _ in range(8))
    r = client.post("/v1/preview", content=chunks, headers={"content-type": "application/json"})
    one_line_error(r, 413)
    r = client.post(
        "/v1/preview", content=b"{not json", headers={"content-type": "application/json"}
    )
    one_line_error(r, 422)


def test_pack_exports_for_a_platform(server, built) -> None:
    client = server["client"]
    tags, _, _ = live_frames(built["ws"], "v000001")
    # the refresh exported high_value as parquet: taken as is
    body = client.get("/v1/packs/high_value/platforms/parquet").json()
    assert body["source"] == "refresh" and body["version"] == "v000001"
    # everyone: built on request, once per version; its file holds exactly the people who
    # did not opt out
    first = client.get("/v1/packs/everyone/platforms/parquet")
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["source"] == "served" and body["manifest"]["people"] > 0
    again = client.get("/v1/packs/everyone/platforms/parquet").json()
    assert again["manifest"] == body["manifest"]
    data_files = [f for f in body["files"] if f["path"].endswith(".parquet")]
    assert len(data_files) == 1
    r = client.get(data_files[0]["url"])
    assert r.status_code == 200 and r.headers["X-Segments-Version"] == "v000001"
    listed = body["manifest"]["other_files"][0]
    assert hashlib.sha256(r.content).hexdigest() == listed["sha256"]
    path = built["root"] / "everyone.parquet"
    path.write_bytes(r.content)
    exported = set(pl.read_parquet(path).get_column("one_id"))
    opted = set(tags.filter(pl.col("is_opted_out").fill_null(True))["one_id"])
    assert opted and not exported & opted
    assert exported == set(tags["one_id"]) - opted
    manifest = client.get(body["files"][-1]["url"]).json()
    assert manifest == body["manifest"]
    # refused: one-line 4xx
    assert (
        one_line_error(client.get("/v1/packs/too_small/platforms/parquet"), 422)["error"]
        == "ExportError"
    )
    one_line_error(client.get("/v1/packs/frequent/platforms/oceanengine"), 422)
    one_line_error(client.get("/v1/packs/frequent/platforms/myspace"), 422)
    one_line_error(client.get("/v1/packs/no_such_pack/platforms/parquet"), 400)
    url = data_files[0]["url"]
    one_line_error(client.get(url.replace("v000001", "v000009")), 410)
    one_line_error(client.get(url.replace("v000001", "latest")), 400)
    one_line_error(client.get(url.rsplit("/", 1)[0] + "/..%2F..%2Fmanifest.json"), 404)
    one_line_error(client.get(url.rsplit("/", 1)[0] + "/other.parquet"), 404)


def test_the_export_of_a_platform_with_holdout_leaves_the_held_out_people_out(
    server, built
) -> None:
    client = server["client"]
    tags, _, _ = live_frames(built["ws"], "v000001")
    body = client.get("/v1/packs/frequent/platforms/tencent").json()
    frequent = oracle_final(tags, pl.col("frequency_52w") >= 2)["one_id"].to_list()
    held = holdout_of(frequent, "frequent", 0.2)
    assert held and body["manifest"]["people"] == len(frequent) - len(held)


def test_no_token_means_loopback_only(built) -> None:
    from click.testing import CliRunner

    from segments.cli import cli

    env = {"SEGMENTS_API_TOKEN": ""}
    r = CliRunner().invoke(
        cli, ["serve", "--workspace", str(built["ws"]), "--host", "0.0.0.0"], env=env
    )
    assert r.exit_code == 2
    assert "no API token, so it binds to loopback only" in r.output
    assert len(r.output.strip().splitlines()) == 1
    short = {"SEGMENTS_API_TOKEN": "short"}
    r = CliRunner().invoke(cli, ["serve", "--workspace", str(built["ws"])], env=short)
    assert r.exit_code == 2 and "at least 16 characters" in r.output


def test_importing_segments_does_not_import_the_server_stack() -> None:
    code = (
        "import sys, segments, segments.cli, segments.serve, segments.audiences;"
        "bad = [m for m in ('fastapi', 'uvicorn', 'starlette') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})


def test_without_the_serve_extra_the_command_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['fastapi'] = None; sys.modules['uvicorn'] = None\n"
        "from segments.cli import cli\n"
        f"cli(['serve', '--workspace', {str(tmp_path)!r}], prog_name='segments')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 1
    assert (
        r.stderr.strip()
        == "Error: segments serve needs the serve extra: pip install 'segments[serve]'"
    )


def test_without_a_live_table_it_answers_503_then_serves_the_first_refresh(
    built, tmp_path: Path
) -> None:
    import asyncio
    import shutil

    from segments.serve import LiveHolder
    from segments.serve.app import ServeSettings, asgi_app

    holder = LiveHolder(Layout(tmp_path), {}, poll_seconds=60)
    app = asgi_app(ServeSettings(workspace=tmp_path, token=TOKEN), holder)

    async def get(path: str) -> Any:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=AUTH) as c:
            return await c.get(path)

    r = asyncio.run(get("/v1/health"))
    assert r.status_code == 503 and r.json()["status"] == "no_live_table"
    assert one_line_error(asyncio.run(get("/v1/tags")), 503)["error"] == "NoLiveTable"
    shutil.copytree(Layout(built["ws"]).current_dir, Layout(tmp_path).current_dir)
    assert holder.check() and not holder.check()  # swapped in once
    r = asyncio.run(get("/v1/health"))
    assert r.status_code == 200 and r.json()["version"] == Layout(tmp_path).live_version()


def test_an_internal_error_is_a_one_line_500_logged_without_digits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    from segments.serve import LiveHolder
    from segments.serve.app import ServeSettings, asgi_app

    class Broken(LiveHolder):
        @property
        def current(self):  # type: ignore[override]
            raise RuntimeError("boom for 13800138000")

    holder = Broken(Layout(tmp_path), {}, poll_seconds=60)
    app = asgi_app(ServeSettings(workspace=tmp_path, token=TOKEN), holder)

    async def get(path: str) -> Any:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=AUTH) as c:
            return await c.get(path)

    with caplog.at_level("INFO", logger="segments.serve"):
        r = asyncio.run(get("/v1/tags"))
    assert one_line_error(r, 500)["error"] == "InternalError"
    assert "boom" not in r.text
    lines = [rec.getMessage() for rec in caplog.records]
    assert "internal error: RuntimeError: boom for <digits>" in lines
    assert "GET /v1/tags 500" in " ".join(lines)
    assert not any("13800138000" in line or "Traceback" in line for line in lines)


def test_one_ids_are_found_by_number_or_by_text_alike(built) -> None:
    from segments.serve.snapshot import _one_id_keys, _one_id_numbers

    one_ids = pl.read_parquet(Layout(built["ws"]).current("tags.parquet"))["one_id"]
    keys = _one_id_keys(one_ids)
    assert keys is not None and keys.len() == one_ids.len()
    some = one_ids.gather(list(range(0, one_ids.len(), 7)))
    by_text = one_ids.search_sorted(some)
    assert (keys.search_sorted(_one_id_numbers(some)) == by_text).all()
    assert by_text.to_list() == list(range(0, one_ids.len(), 7))
    # any other form, or out of order: the text search
    assert _one_id_keys(pl.Series(["U00000000000000ff", "person-2"])) is None
    assert _one_id_keys(pl.Series(["U00000000000000FF"])) is None
    assert _one_id_keys(pl.Series(["U00000000000000ff", "U000000000000000a"])) is None


def test_a_refresh_swaps_in_while_requests_run(server, built) -> None:
    """d2 lands and a refresh publishes v000002 while four clients keep asking: no request
    fails, and every answer is wholly the version it names."""
    client = server["client"]
    tags1, _, _ = live_frames(built["ws"], "v000001")
    one_id = tags1.filter(pl.col("frequency_52w") > 0).sort("one_id")["one_id"][0]
    where = "frequency_52w >= 1 AND recency_days <= 30"
    stop = threading.Event()
    answers: list[tuple[str, int, dict[str, Any] | str]] = []
    lock = threading.Lock()

    def ask(kind: str, call) -> None:
        with httpx.Client(base_url=server["base"], headers=AUTH, timeout=30) as c:
            while not stop.is_set():
                try:
                    r = call(c)
                    item = (kind, r.status_code, r.json() if r.status_code == 200 else r.text)
                except httpx.HTTPError as e:
                    item = (kind, -1, repr(e))
                with lock:
                    answers.append(item)

    calls = {
        "person": lambda c: c.get(f"/v1/people/one_id/{one_id}"),
        "pack": lambda c: c.get("/v1/packs/frequent/preview"),
        "where": lambda c: c.post("/v1/preview", json={"where": where}),
        "health": lambda c: c.get("/v1/health"),
    }
    threads = [threading.Thread(target=ask, args=kv) for kv in calls.items()]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        gather(built["inc"], built["d2"])
        pipeline.refresh(load_config(), built["inc"], built["ws"], audiences=built["audiences"])
        assert Layout(built["ws"]).live_version() == "v000002"
        deadline = time.monotonic() + 20
        while client.get("/v1/health").json()["version"] != "v000002":
            assert time.monotonic() < deadline, "the new version was not swapped in"
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    failed = [a for a in answers if a[1] != 200]
    assert not failed, failed[:3]
    versions = {a[2]["version"] for a in answers}
    assert versions == {"v000001", "v000002"}

    # each answer equals the oracle of the version it names
    tables = {v: live_frames(built["ws"], v)[0] for v in versions}
    expected_person = {
        v: {
            k: json_value(x)
            for k, x in t.filter(pl.col("one_id") == one_id).row(0, named=True).items()
            if k != "one_id"
        }
        for v, t in tables.items()
    }
    assert expected_person["v000001"] != expected_person["v000002"]
    counts = {}
    for v, t in tables.items():
        freq = oracle_final(t, pl.col("frequency_52w") >= 2)["one_id"].to_list()
        counts[v] = {
            "pack": len(freq) - len(holdout_of(freq, "frequent", 0.2)),
            "where": oracle_final(
                t, (pl.col("frequency_52w") >= 1) & (pl.col("recency_days") <= 30)
            ).height,
        }
    assert counts["v000001"] != counts["v000002"]
    seen = {k: set() for k in calls}
    for kind, _, body in answers:
        v = body["version"]
        seen[kind].add(v)
        if kind == "person":
            assert body["tags"] == expected_person[v]
        elif kind in ("pack", "where"):
            assert body["count"] == counts[v][kind]
            assert sum(body["breakdowns"]["lifecycle_stage"].values()) == counts[v][kind]
        else:
            as_of = json.loads(Layout(built["ws"]).current("manifest.json", v).read_text())["as_of"]
            assert body["as_of"] == as_of
    assert all(s == {"v000001", "v000002"} for s in seen.values()), seen


def test_the_server_log_names_routes_not_identifiers(server, built, demo_input: Path) -> None:
    _, id_map, _ = live_frames(built["ws"], "v000001")
    phone = a_raw_phone(demo_input, id_map)
    text = server["log"].read_text(encoding="utf-8")
    assert f"GET {PERSON_ROUTE} 200" in text and "serving v000002" in text
    for secret in (
        phone,
        phone[3:],
        phone[:3] + " " + phone[3:7],
        hashlib.sha256(phone.encode()).hexdigest(),
        TOKEN,
    ):
        assert secret not in text
    openids = id_map.filter(pl.col("id_type") == "openid")["id"].to_list()
    assert not [o for o in openids if o in text]
    assert "Traceback" not in text
