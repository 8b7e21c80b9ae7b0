"""Bad input never changes data silently: a file's text encoding is decided for the whole file
and recorded, a wrong path stops a run before any work, each with a one-line error that says
what to do. (The readers' side, property by property, is in test_fuzz_readers.py.)"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

import segments.io
from segments import pipeline
from segments.cli import cli
from segments.config import load_config
from segments.errors import DataError
from segments.ingest import ingest
from segments.io import check_paths

ORDER = (
    "order_id,source,buyer_id_type,buyer_id,phone,paid_at,amount,discount,refund,status,category\n"
    "o1,tmall,taobao_ouid,tb1,13812345678,2026-11-20 10:00:00,100,0,0,paid,帐篷\n"
    "o2,jd,jd_pin,jd2,,2026-11-21 09:30:00,59.5,0,0,paid,睡袋\n"
)


def one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def gbk_input(demo_input: Path, tmp_path: Path) -> Path:
    """The demo input with its orders CSV re-saved as GBK (as Excel does for a Chinese user)."""
    folder = tmp_path / "gbk"
    shutil.copytree(demo_input, folder, ignore=shutil.ignore_patterns("truth"))
    path = folder / "orders" / "orders.csv"
    path.write_bytes(path.read_text(encoding="utf-8").encode("gbk"))
    return folder


# ---------------------------------------------------------------------------------------------
# Encodings


def test_a_gbk_file_is_read_as_gbk_and_the_choice_is_reported(
    demo_input: Path, gbk_input: Path
) -> None:
    """Once every Chinese category became '����' with exit 0. Now the counts are those of the
    UTF-8 original, and validate says which files were read as GBK."""
    runner = CliRunner()
    want = json.loads(runner.invoke(cli, ["validate", "--input", str(demo_input), "--json"]).stdout)
    result = runner.invoke(cli, ["validate", "--input", str(gbk_input), "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert got["tables"]["orders"]["encodings"] == {"gbk": 1, "utf-8": 1}  # (+ Parquet)
    assert want["tables"]["orders"]["encodings"] == {"utf-8": 2}
    for name in want["tables"]:
        drop = {"encodings"}
        assert {k: v for k, v in got["tables"][name].items() if k not in drop} == {
            k: v for k, v in want["tables"][name].items() if k not in drop
        }, name
    text = runner.invoke(cli, ["validate", "--input", str(gbk_input)]).stdout
    assert "text read as gbk (1 file)" in text


def test_the_manifest_records_each_files_encoding(gbk_input: Path, tmp_path: Path) -> None:
    [r] = pipeline.run(load_config(), gbk_input, tmp_path / "ws")
    manifest = json.loads(r.manifest.read_text())
    encodings = {d["path"]: d["encoding"] for d in manifest["inputs"]}
    assert encodings["orders/orders.csv"] == "gbk"
    assert encodings["orders/store_orders.parquet"] == "utf-8"
    assert manifest["tables"]["orders"]["encodings"] == {"gbk": 1, "utf-8": 1}
    assert "text read as: orders gbk (1 file)" in r.describe()


def test_encoding_option_reads_strictly_and_names_row_column_and_option(gbk_input: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["validate", "--input", str(gbk_input), "--encoding", "utf-8"])
    assert result.exit_code == 3
    line = one_line_error(result)
    assert "orders.csv, row 1, column 'category': byte 0x" in line
    assert "is not UTF-8 text" in line and "--encoding" in line
    # every file is read as the option says: the chat archive is UTF-8, so not GBK
    result = runner.invoke(cli, ["validate", "--input", str(gbk_input), "--encoding", "gbk"])
    assert result.exit_code == 3
    line = one_line_error(result)
    assert "wecom_archive.jsonl, line 1, key 'content': byte 0x" in line
    assert "is not GBK text" in line
    result = runner.invoke(cli, ["validate", "--input", str(gbk_input), "--encoding", "latin-1"])
    assert result.exit_code == 2 and "latin-1" in result.stderr


def test_a_utf8_file_with_one_broken_byte_is_not_read_as_gbk(tmp_path: Path) -> None:
    """UTF-8 Chinese text is often valid GBK (as mojibake): one broken byte in a UTF-8 file
    must stop the run, not switch the whole file to GBK."""
    words = ["露营", "登山", "滑雪", "背包", "头灯", "雨衣"]  # each valid GBK as UTF-8 bytes
    header, _ = ORDER.split("\n", 1)
    rows = "".join(
        f"o{i},tmall,taobao_ouid,tb{i},,2026-11-20 10:00:00,1,0,0,paid,{w}\n"
        for i, w in enumerate(words, start=1)
    )
    data = (header + "\n" + rows).encode("utf-8")
    broken = data.replace("登".encode(), b"\x81" + "登".encode()[1:], 1)  # row 2's first byte
    assert not segments.io.is_utf8(broken)
    assert "露营" not in broken.decode("gbk")  # as GBK it "fits", as mojibake
    (tmp_path / "orders").mkdir()
    (tmp_path / "orders" / "x.csv").write_bytes(broken)
    with pytest.raises(DataError, match=r"row 2, column 'category': byte 0x81 is not UTF-8"):
        ingest(tmp_path)


def test_a_changed_encoding_reads_the_file_again(tmp_path: Path) -> None:
    (tmp_path / "in" / "orders").mkdir(parents=True)
    (tmp_path / "in" / "orders" / "x.csv").write_bytes(ORDER.encode("gbk"))
    cache = tmp_path / "cache"
    first = ingest(tmp_path / "in", cache=cache, spool=tmp_path / "s1")
    again = ingest(tmp_path / "in", cache=cache, spool=tmp_path / "s2")
    forced = ingest(tmp_path / "in", cache=cache, spool=tmp_path / "s3", encoding="gb18030")
    assert (first.reused, again.reused, forced.reused) == (0, 1, 0)
    assert [r.inputs[0]["encoding"] for r in (first, again, forced)] == ["gbk", "gbk", "gb18030"]
    assert sorted(forced.scan("orders").collect()["category"]) == ["帐篷", "睡袋"]


def test_a_bom_with_a_gbk_option_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "orders").mkdir()
    (tmp_path / "orders" / "x.csv").write_bytes(b"\xef\xbb\xbf" + ORDER.encode())
    with pytest.raises(DataError, match="byte-order mark but --encoding gbk"):
        ingest(tmp_path, encoding="gbk")
    assert ingest(tmp_path).counts["orders"].encodings == {"utf-8": 1}


# ---------------------------------------------------------------------------------------------
# Paths, checked before any work


@pytest.fixture
def small_input(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    (folder / "orders").mkdir(parents=True)
    (folder / "orders" / "x.csv").write_text(ORDER, encoding="utf-8")
    return folder


def _file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a folder\n")
    return path


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("out_is_a_file", "is a file, not a folder; give a folder path"),
        ("out_under_a_file", "is a file, so no folder can be made under it"),
        ("out_inside_input", "is inside the input folder"),
        ("out_is_input", "is inside the input folder"),
        ("workspace_folder_is_a_file", "is a file where the workspace keeps a folder"),
        ("no_permission", "no permission to write in"),
    ],
)
def test_a_bad_out_path_is_a_one_line_error_before_any_work(
    case: str, expected: str, small_input: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = {
        "out_is_a_file": lambda: _file(tmp_path / "ws"),
        "out_under_a_file": lambda: _file(tmp_path / "f") / "ws",
        "out_inside_input": lambda: small_input / "ws",
        "out_is_input": lambda: small_input,
        "workspace_folder_is_a_file": lambda: _file(tmp_path / "ws" / "rejects").parent,
        "no_permission": lambda: tmp_path / "locked" / "ws",
    }[case]()
    if case == "no_permission":  # (the tests may run as root, whom chmod does not stop)
        (tmp_path / "locked").mkdir()
        real = os.access
        monkeypatch.setattr(
            segments.io.os,
            "access",
            lambda p, mode: False if Path(p) == tmp_path / "locked" else real(p, mode),
        )
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = CliRunner().invoke(cli, ["run", "--input", str(small_input), "--out", str(out)])
    assert result.exit_code == 3, result.output
    line = one_line_error(result)
    assert line.startswith(f"DataError: --out {out}") and expected in line
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # no work
    with pytest.raises(DataError, match=expected):  # the library checks the same
        pipeline.run(load_config(), small_input, out)


def test_refresh_and_validate_check_their_paths(small_input: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    ws = _file(tmp_path / "ws")
    args = ["refresh", "--input", str(small_input), "--workspace", str(ws)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 3
    assert one_line_error(result).startswith(f"DataError: --workspace {ws} is a file")
    with pytest.raises(DataError, match="--workspace"):
        pipeline.refresh(load_config(), small_input, ws)
    not_a_folder = small_input / "orders" / "x.csv"
    result = runner.invoke(cli, ["validate", "--input", str(not_a_folder)])
    assert result.exit_code == 3
    assert "is a file; give the folder that holds the table folders" in one_line_error(result)


def test_check_paths_accepts_a_new_or_existing_workspace(small_input: Path, tmp_path: Path) -> None:
    check_paths(small_input, tmp_path / "new" / "ws")
    (tmp_path / "ws" / "rejects").mkdir(parents=True)
    check_paths(small_input, tmp_path / "ws")
    check_paths(small_input, None)


@pytest.mark.parametrize(
    ("name", "data", "where"),
    [
        ("x.csv", b"\xff,b\n1,2\n", "the header row, field 1"),
        ("x.csv", b"a,b\n\xff,2\n", "row 1, column 'a'"),
        ("x.csv", b"a,b\r1,\xff\r", "row 1, column 'b'"),  # old Mac line ends
        ("x.csv", b'a,b\n"x\n\xff",2\n', "row 1, column 'a'"),  # inside a quoted newline
        ("x.csv", b"a,b\n1,2\n\xff,3\n", "row 2, column 'a'"),
        ("x.csv", b"a,b\n1,2,\xff\n", "row 1, field 3"),
        ("x.jsonl", b'{"a": 1}\n{"b": "\xff"}\n', "line 2, key 'b'"),
    ],
)
def test_the_first_bad_byte_is_located_as_a_reader_counts(
    name: str, data: bytes, where: str
) -> None:
    with pytest.raises(DataError) as e:
        segments.io.as_utf8(data, Path(name))
    assert str(e.value).startswith(f"{name}, {where}: byte 0x")
    assert "--encoding" in str(e.value) and "\n" not in str(e.value)


def test_a_key_name_used_twice_on_a_line_but_never_twice_in_an_object_keeps_the_fast_reader() -> (
    None
):
    """WeCom archives write `"msgtype": "text"` beside a `"text"` object, and quotes hold a
    second `"text"` one level down: neither is a key named twice in one object, so the file
    keeps the fast reader (the line-by-line reader took 25 s instead of 3 on 650k messages);
    a key truly named twice in one object is still found."""
    import io as _io

    from segments.io import _keys_repeat

    lines = [
        '{"msgid":"1","msgtype":"text","text":{"content":"hi"},"tolist":["a","b"]}',
        '{"msgid":"2","msgtype":"text","text":{"content":"yo"},'
        '"quote":{"text":{"content":"hi"}},"tolist":[]}',
        '{"msgid":"3","msgtype":"mixed","items":[{"text":"a"},{"text":"b"}],"tolist":null}',
    ]
    data = "\n".join(lines).encode()
    df = pl.read_ndjson(_io.BytesIO(data))
    assert _keys_repeat(data, df) is False
    twice = "\n".join([*lines, '{"msgid":"4","msgtype":"text","msgtype":"image"}']).encode()
    assert _keys_repeat(twice, pl.read_ndjson(_io.BytesIO(twice))) is True
    nested = "\n".join([*lines, '{"msgid":"5","quote":{"text":{"content":"a","content":"b"}}}'])
    assert _keys_repeat(nested.encode(), pl.read_ndjson(_io.BytesIO(nested.encode()))) is True


def test_keys_repeat_counts_keys_written_with_spaces_before_the_colon() -> None:
    """The first pass counts `":` pairs in bytes only when every colon follows a quote; a file
    written `"key" : value` (or with a colon inside a value) is counted by the regex, and a
    key named twice in one object is found either way."""
    import io as _io

    from segments.io import _keys_repeat

    def check(text: str) -> bool:
        data = text.encode()
        return _keys_repeat(data, pl.read_ndjson(_io.BytesIO(data)))

    assert check('{"a":"1","b":"x"}\n{"a":"2","b":"y"}') is False
    assert check('{"a" : "1", "b":"x:y"}\n{"a"\t:"2","b":"下午 3:00"}') is False
    assert check('{"a" : "1", "b" : "x", "a" : "2"}\n{"a":"2","b":"y"}') is True
    assert check('{"a":"1","b":"x","a":"3"}\n{"a":"2","b":"y"}') is True
    # as many `":` pairs as values held, but a key written `"a" :` is one more key
    assert check('{"a" : "1", "b":"x", "a":"2"}\n{"a":"2","b":"y"}') is True


def test_byte_offsets_read_in_slices_are_those_of_the_whole_array() -> None:
    """`io._offsets` scans in slices: the offsets must not depend on where a slice ends."""
    from segments.io import _offsets

    rng = np.random.default_rng(3)
    data = rng.choice(np.frombuffer(b'ab,"\n[{', dtype=np.uint8), 10_007).tobytes()
    b = np.frombuffer(data, dtype=np.uint8)
    whole = [
        np.flatnonzero(b == ord("\n")),
        np.flatnonzero((b == ord("[")) | (b == ord("{"))),
        np.flatnonzero(b == ord('"')),
    ]
    for step in (1, 7, 4096, 1 << 20):
        got = _offsets(data, b"\n", b"[{", b'"', step=step)
        assert all(np.array_equal(g, w) for g, w in zip(got, whole, strict=True))
    assert [a.size for a in _offsets(b"", b"\n", b",")] == [0, 0]


def test_json_lines_of_only_empty_objects_is_a_missing_column_error(tmp_path: Path) -> None:
    """Every line `{}`: rows without columns, stopped as a missing required column (it was an
    InternalError: the row numbers had no frame to go in)."""
    (tmp_path / "messages").mkdir()
    (tmp_path / "messages" / "x.jsonl").write_text("{}\n{}\n")
    raw = segments.io.read_raw(tmp_path / "messages" / "x.jsonl")
    assert raw.frame.columns == ["_row"] and raw.frame["_row"].to_list() == [1, 2]
    with pytest.raises(DataError, match="missing required column 'msg_id'"):
        ingest(tmp_path)
