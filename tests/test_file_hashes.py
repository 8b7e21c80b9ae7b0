"""The ingest cache remembers each input file's SHA-256 by the file's identity on disk, so a
refresh does not hash gigabytes it hashed before; a file changed in any way is hashed again."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from segments.ingest import cache as cache_mod
from segments.ingest.cache import FileHashes


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files `FileHashes` reads to hash them."""
    calls: list[Path] = []
    real = cache_mod.sha256_file

    def spy(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(cache_mod, "sha256_file", spy)
    return calls


def test_a_known_file_is_not_read_again(tmp_path: Path, counted: list[Path]) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_bytes(b"order_id\n1\n")
    b.write_bytes(b"order_id\n2\n")
    first = FileHashes(cache)
    assert first.sha256(a) == _sha(b"order_id\n1\n")
    assert first.sha256(b) == _sha(b"order_id\n2\n")
    first.save()
    assert len(counted) == 2
    again = FileHashes(cache)
    assert again.sha256(a) == _sha(b"order_id\n1\n")
    assert len(counted) == 2  # remembered
    again.save()
    # only the files of the last run are remembered: b is hashed again
    third = FileHashes(cache)
    assert third.sha256(b) == _sha(b"order_id\n2\n")
    assert counted[-1] == b and len(counted) == 3


def test_a_file_rewritten_in_place_with_its_old_size_and_time_is_hashed_again(
    tmp_path: Path, counted: list[Path]
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    f = tmp_path / "orders.csv"
    f.write_bytes(b"order_id,amount\n1,100\n")
    hashes = FileHashes(cache)
    hashes.sha256(f)
    hashes.save()
    st = f.stat()
    time.sleep(0.01)
    f.write_bytes(b"order_id,amount\n1,900\n")  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # the old modification time put back
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    assert FileHashes(cache).sha256(f) == _sha(b"order_id,amount\n1,900\n")
    assert len(counted) == 2


def test_a_damaged_memo_is_ignored(tmp_path: Path, counted: list[Path]) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    f = tmp_path / "events.csv"
    f.write_bytes(b"event_id\n7\n")
    FileHashes.memo_of(cache).write_text("{not json")
    assert FileHashes(cache).sha256(f) == _sha(b"event_id\n7\n")
    FileHashes.memo_of(cache).write_text(json.dumps({str(f.resolve()): [1, 2, 3]}))
    assert FileHashes(cache).sha256(f) == _sha(b"event_id\n7\n")
    assert len(counted) == 2
