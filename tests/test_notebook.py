"""notebooks/quickstart.ipynb is kept without outputs and runs top to bottom in a fresh kernel."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def test_notebook_is_stored_without_outputs() -> None:
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert len(code) >= 10
    for cell in code:
        assert cell["outputs"] == [] and cell["execution_count"] is None, cell["id"]
    source = "\n".join("".join(c["source"]) for c in code)
    for call in (
        "demo.generate(",
        "pipeline.run(",
        "ws.tags()",
        ".filter(",
        "ws.identity.lookup(",
        "ws.diff(",
        "preview_pack(",
        "except ImportError",
        "build_report(",
    ):
        assert call in source, call


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")

    # A kernel of this very interpreter (the venv's python), whatever kernels are installed.
    kernels = tmp_path / "jupyter" / "kernels" / "segments-test"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "segments (test)",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("MPLBACKEND", "Agg")

    work = tmp_path / "run"
    work.mkdir()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name="segments-test",
        timeout=600,
        resources={"metadata": {"path": str(work)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error

    # It ran where it was told to, and wrote what it says it writes.
    assert (work / "quickstart-demo" / "out" / "weeks" / "2026-W47" / "tags.parquet").is_file()
    assert (work / "quickstart-demo" / "report.html").is_file()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = json.dumps([o for o in outputs], ensure_ascii=False)
    assert "2026-W46" in text and "2026-W47" in text
    assert "tags 2026-W46 -> 2026-W47" in text  # the diff cell printed
