"""docs/api.md's examples run as doctests against the small two-week workspace the doc describes."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

from segments import demo, pipeline
from segments.config import load_config

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


@pytest.fixture(scope="module")
def doc_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the doc's examples run in: `input/` and the workspace `out/`, built exactly
    as the doc's shell block says (300 users, seed 3; weeks 2026-W46 and 2026-W47)."""
    base = tmp_path_factory.mktemp("apidocs")
    demo.generate(base / "input", users=300, seed=3)
    cfg = load_config()
    for as_of in ("2026-11-15", "2026-11-22"):
        pipeline.run(cfg, base / "input", base / "out", as_of=as_of)
    return base


@pytest.mark.slow
def test_api_md_examples_run(doc_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(doc_folder)
    result = doctest.testfile(
        str(DOC),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        raise_on_error=False,
        verbose=False,
    )
    assert result.failed == 0, (
        f"{result.failed} of {result.attempted} doc examples failed (see above)"
    )
    assert result.attempted >= 40  # the doc is mostly examples: a lost code fence shows here
    assert (doc_folder / "report.html").is_file()


def test_doc_mentions_every_workspace_method() -> None:
    """The API doc covers the public surface of Workspace and the report."""
    text = DOC.read_text(encoding="utf-8")
    for name in (
        "open_workspace(",
        "ws.weeks",
        "ws.week(",
        "ws.tags(",
        "ws.person(",
        "ws.identity.stats()",
        "ws.identity.map()",
        "ws.identity.lookup(",
        "ws.diff(",
        "ws.audience(",
        "describe_tag(",
        "build_report(",
        "collect_report(",
        "segments report --workspace",
    ):
        assert name in text, name
