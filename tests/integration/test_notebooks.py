"""Every notebook runs top to bottom on the workshop model (stored without outputs); exercises have blanks and run
up to their first blank."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers.pages import OUTSIDE

ROOT = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(p for p in ROOT.rglob("*.ipynb") if not p.name.endswith("_exercise.ipynb"))
EXERCISES = sorted(ROOT.rglob("*_exercise.ipynb"))


def test_exercises_pair_with_solutions():
    """Every workshop exercise has its solution and back (docs/layout.md's notebook list: test_docs.py)."""
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
    if "workshop" in path.parts:
        missing = stated_numbers_missing(notebook)
        assert not missing, f"numbers a 'You should see' cell states that the cells around it do not print: {missing}"


BOLD = re.compile(r"\*\*(.+?)\*\*", flags=re.S)
NUMBER = re.compile(r"(?<![A-Za-z\d.])[+\-−]?\d+(?:\.\d+)?")  # "L1H3" names no number; "91.7-95.0" is two


def printed_text(cell) -> str:
    """What a code cell printed or returned as text."""
    parts = [o.get("text", "") for o in cell.get("outputs", [])]
    parts += [o.get("data", {}).get("text/plain", "") for o in cell.get("outputs", [])]
    return "".join(parts)


def outputs_near(cells, index: int) -> str:
    """The printed text of the run of code cells just before cell `index` and the run just after it."""
    near = []
    for step in (-1, 1):
        j = index + step
        while 0 <= j < len(cells) and cells[j].cell_type == "code":
            near.append(printed_text(cells[j]))
            j += step
    return "\n".join(near)


def stated_numbers_missing(notebook) -> list[str]:
    """Each number in bold after "You should see" in a markdown cell that the code cells next to it do not print.

    A number counts as printed when it appears in their output as a whole number (not inside a longer one), with
    its sign where one is stated (a stated "−0.018" matches a printed "-0.018", not "+0.018").
    """
    missing = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "markdown" or "You should see" not in cell.source:
            continue
        text = outputs_near(notebook.cells, index)
        stated = cell.source.split("You should see", 1)[1].removeprefix("**")  # "**You should see**" opens bold
        for bold in BOLD.findall(stated):
            for number in NUMBER.findall(bold):
                printed = re.escape(number.replace("−", "-"))
                if not re.search(rf"(?<![\d.]){printed}(?![\d])", text):
                    missing.append(f"cell {index}: {number} (in **{bold}**)")
    return missing


def test_stated_numbers_are_checked_against_the_outputs():
    """The check above fails on a number the cells do not print, passes on one they do, and skips L1H3-style names."""
    notebook = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("print(...)")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="accuracy 76.7% | L1H3 0.99 r -0.018\n")]
    notebook.cells = [code, nbformat.v4.new_markdown_cell(
        "You should see **76.7%**, **L1H3 (0.99)** and **−0.018**, and **76.0%** once (in 76.70 too).")]
    assert stated_numbers_missing(notebook) == ["cell 1: 76.0 (in **76.0%**)"]
    notebook.cells[1].source = "You should see **+0.018** and **0.99-1.00**."
    assert stated_numbers_missing(notebook) == ["cell 1: +0.018 (in **+0.018**)", "cell 1: 1.00 (in **0.99-1.00**)"]
    notebook.cells[1].source = "You should see **76.7%**."
    assert stated_numbers_missing(notebook) == []
    notebook.cells[1].source = "**6.7** before the words is not a stated number. You should see **76.7**."
    assert stated_numbers_missing(notebook) == []
    notebook.cells[1].source = "**You should see** the accuracy, **76.0%**, and a name, L1H3 (0.42)."
    assert stated_numbers_missing(notebook) == ["cell 1: 76.0 (in **76.0%**)"]


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




def test_nothing_points_outside_the_repository():
    """No README line, notebook, session page or docstring cites an issue number, development jargon or a path on
    one machine; the sessions' relative links resolve inside the repository."""
    repo = ROOT.parent
    files = [repo / "README.md", *ROOT.rglob("*.md"), *ROOT.rglob("*.ipynb")]
    files += [p for folder in ("lens_audio", "tests", "benchmarks") for p in (repo / folder).rglob("*.py")]
    hits = []
    for path in files:
        text = path.read_text()
        if path.suffix == ".ipynb":
            text = "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells)
        if path.name == "pages.py":
            text = text.replace(OUTSIDE.pattern, "")
        hits += [f"{path.relative_to(repo)}: {m.group(0)!r}" for m in OUTSIDE.finditer(text)]
    assert not hits, f"references a reader cannot follow: {hits}"
    for path in (ROOT / "workshop").glob("*.ipynb"):
        source = "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells)
        for link in re.findall(r"\]\(([^)#:]+\.md)\)", source):
            assert (path.parent / link).is_file(), f"{path.name} links to {link}, which is not in the repository"
