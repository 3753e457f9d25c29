"""The example notebook, executed headless as a user would run it: it searches, shows the report, predicts."""

from __future__ import annotations

import re
import shutil

import pytest

from conftest import EXAMPLE_DATA, REPO


def _text(output: dict) -> str:
    if output["output_type"] == "stream":
        return output["text"]
    data = output.get("data", {})
    return data.get("text/html", "") + data.get("text/plain", "")


@pytest.mark.slow
def test_example_notebook_shows_the_report_inline_and_predicts(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    # the notebook reads ../search_spaces/data/auto_mpg.csv and writes studies/ next to itself: run a copy
    (tmp_path / "search_spaces" / "data").mkdir(parents=True)
    shutil.copy(EXAMPLE_DATA / "auto_mpg.csv", tmp_path / "search_spaces" / "data")
    (tmp_path / "examples").mkdir()
    nb = nbformat.read(REPO / "examples" / "auto_mpg.ipynb", as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")  # stored without outputs
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path / "examples")}}).execute()
    cells = {c.source: "".join(_text(o) for o in c.outputs) for c in nb.cells if c.cell_type == "code"}

    search = next(out for src, out in cells.items() if "automlp.search(" in src)
    assert "4/4" in search and "best r2" in search  # the live bar, at its end
    assert "Trial 0 finished" not in search and "Traceback" not in search  # no Optuna log storm, no error
    assert "Warning" not in search  # e.g. tqdm's "IProgress not found" when Optuna is imported in Jupyter
    inline = cells["result"]
    assert "automlp study mpg" in inline and 'class="verdict"' in inline
    assert "Best model: trial #" in inline and "Top trials side by side" in inline
    assert "<iframe" in cells[next(s for s in cells if "IFrame" in s)] and \
        (tmp_path / "examples" / "studies" / "mpg" / "report.html").is_file()
    predictions = cells[next(s for s in cells if "predicted mpg" in s)]
    rows = re.findall(r"^\d+\s+.+?\s+(\d+\.\d)\s+(\d+\.\d)\s*$", predictions.split("</table>")[-1], re.M)
    assert len(rows) == 5
    assert all(abs(float(p) - float(a)) < 10 for p, a in rows)  # miles per gallon near the truth
