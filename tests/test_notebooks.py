"""Every notebook runs top to bottom on the workshop model (stored without outputs); exercises have blanks and run
up to their first blank."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(p for p in ROOT.rglob("*.ipynb") if not p.name.endswith("_exercise.ipynb"))
EXERCISES = sorted(ROOT.rglob("*_exercise.ipynb"))


def test_the_notebooks_are_the_ones_the_readme_lists_and_exercises_pair_with_solutions():
    """The README's layout names notebooks 01-04 (stems), and every workshop exercise has its solution and back."""
    readme = (ROOT.parent / "README.md").read_text()
    listed = re.search(r"^notebooks/ +(.+)$", readme, flags=re.M).group(1).replace(",", " ").split()
    assert sorted(p.stem for p in ROOT.glob("*.ipynb")) == sorted(listed), "README's notebook list is stale"
    solutions = sorted(p.name.replace("_solution", "") for p in ROOT.rglob("*_solution.ipynb"))
    assert solutions == sorted(p.name.replace("_exercise", "") for p in EXERCISES) and len(solutions) >= 3


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_runs(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        "store notebooks without outputs"
    )
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    if path.parent == ROOT:  # the main notebooks display their key figures inline (plotly's mimetype, offline)
        shown = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if "data" in o]
        assert any("application/vnd.plotly.v1+json" in o["data"] for o in shown), f"{path.name} draws no figure"


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_exercise_has_blanks_and_a_solution(path):
    solution = path.with_name(path.name.replace("_exercise", "_solution"))
    exercise, answer = nbformat.read(path, as_version=4), nbformat.read(solution, as_version=4)
    assert len(exercise.cells) == len(answer.cells)
    blanks = sum(cell.source.count("...  # TODO") for cell in exercise.cells if cell.cell_type == "code")
    assert blanks >= 3 and all("# TODO" not in cell.source for cell in answer.cells)


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: str(p.relative_to(ROOT)))
def test_exercise_runs_up_to_its_first_blank(path, tmp_path):
    """The setup check and everything before the learner's first `...  # TODO` run without error."""
    notebook = nbformat.read(path, as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        "store notebooks without outputs"
    )
    first_blank = next(
        i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code" and "...  # TODO" in cell.source
    )
    notebook.cells = notebook.cells[:first_blank]
    assert any("setup OK" in cell.source for cell in notebook.cells if cell.cell_type == "code"), (
        "the first code cell should check the setup (and say what it prints)"
    )
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "setup OK" in outputs, "the setup cell ran but did not print 'setup OK'"
