"""tutorial.ipynb: valid nbformat 4 JSON, and every code cell runs, in order, without Jupyter."""
from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import matplotlib
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "tutorial.ipynb"
BUDGET_S = 600  # CI takes ~1-2 min on two free cores; generous, so a loaded machine passes


def load_notebook() -> dict:
    return json.loads(NOTEBOOK.read_text())


def test_notebook_structure():
    """nbformat 4.5 with a python3 kernel; every cell has an id; every code cell parses."""
    nb = load_notebook()
    assert (nb["nbformat"], nb["nbformat_minor"]) >= (4, 5)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    ids = [cell["id"] for cell in nb["cells"]]
    assert len(ids) == len(set(ids)), "cell ids must be unique"
    code = [cell for cell in nb["cells"] if cell["cell_type"] == "code"]
    assert code, "the notebook has no code cell"
    for cell in code:
        ast.parse("".join(cell["source"]))
    sections = [cell for cell in nb["cells"] if cell["cell_type"] == "markdown"
                and "".join(cell["source"]).startswith("## ")]
    assert len(sections) >= 10, "the tutorial has ten numbered sections"
    # committed with outputs, but small ones (a reviewer reads the diff)
    assert all(cell.get("execution_count") for cell in code), "commit the notebook executed"
    assert any(out.get("output_type") == "display_data" for cell in code
               for out in cell.get("outputs", [])), "the executed notebook shows its figures"
    assert NOTEBOOK.stat().st_size < 2_000_000


@pytest.mark.slow
def test_notebook_runs(tmp_path, monkeypatch):
    """Execute all code cells in one fresh namespace, as a kernel would, in a scratch folder."""
    matplotlib.use("Agg")  # no display in CI
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)  # the notebook writes out/tutorial relative to the working dir
    monkeypatch.setenv("FACET_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("FACET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": "__main__"}
    start = time.perf_counter()
    cells = [c for c in load_notebook()["cells"] if c["cell_type"] == "code"]
    try:
        for number, cell in enumerate(cells, 1):
            source = "".join(cell["source"])
            try:
                exec(compile(source, f"tutorial.ipynb code cell {number}", "exec"), namespace)
            except Exception as err:
                raise AssertionError(f"code cell {number} failed:\n{source}") from err
            plt.close("all")
    finally:
        plt.close("all")
    elapsed = time.perf_counter() - start
    assert elapsed < BUDGET_S, f"the notebook took {elapsed:.0f} s (budget {BUDGET_S} s)"
    assert (tmp_path / "out" / "tutorial" / "small" / "ckpt.pt").is_file()
