"""The README is a front door: short, the two set-up commands CI runs, a quick start that runs (executed with every
other page's code by test_docs.py), one figure, the three shipped models with their cards, every command, and
links into docs/ and notebooks/. No machine-specific timings or lab history: those live in docs/ and the cards."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers.pages import PYTHON, RUN_PAGES, cli_help, links, prose

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TEXT = README.read_text()
SETUP = [
    "# 1. set everything up and run the main job: the paper's experiment on the shipped workshop model, every figure "
    "in figures/",
    '(command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)) && pip install torch==2.13.0 '
    "&& pip install -e . && lens-audio figures",
    "# 2. set everything up and run the tests",
    '(command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)) && pip install torch==2.13.0 '
    '&& pip install -e ".[dev]" && python -m pytest -q',
]


def section(title: str) -> str:
    start = TEXT.index(f"\n## {title}\n")
    end = TEXT.find("\n## ", start + 1)
    return TEXT[start : end if end != -1 else None]


def table_rows(text: str) -> list[list[str]]:
    rows = [line.strip().strip("|").split("|") for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row] for row in rows[2:]]  # without the header and its rule


def test_readme_is_short():
    assert len(TEXT.splitlines()) <= 250, "README.md is the front door (<= 250 lines): reference goes to docs/"


def test_the_two_setup_commands_come_first_and_ci_runs_them():
    first = re.search(r"```bash\n(.*?)```", TEXT, re.DOTALL).group(1).splitlines()
    assert first == SETUP, "the README's two set-up commands changed: .ci/run runs them as written"
    ci = (ROOT / ".ci" / "run").read_text()
    assert SETUP[1] in ci and SETUP[3] in ci


def test_quick_start_is_python_that_runs():
    code = re.search(r"```python\n(.*?)```", section("Quick start"), re.DOTALL).group(1)
    assert 'from_pretrained("workshop")' in code
    assert README in RUN_PAGES and PYTHON[README][0].not_run is None  # test_docs.py runs it and checks its output


def test_one_figure():
    images = [t for _, t in links(README) if re.search(r"\.(png|svg|gif|jpe?g)$", t)]
    assert len(images) == 1 and images[0].startswith("figures/") and (ROOT / images[0]).is_file(), images


def test_the_shipped_models_table_links_every_card():
    from lens_audio.model import model_card
    from lens_audio.model.registry import registered_names

    rows = table_rows(section("The shipped models"))
    cards = [(ROOT / re.search(r"\]\(([^)]+)\)", row[0]).group(1)).resolve() for row in rows]
    assert len(rows) == 3 and all(len(row) == 3 and row[1] and row[2] for row in rows)
    assert sorted(cards) == sorted(model_card(n).resolve() for n in registered_names() if model_card(n)), cards


def test_the_commands_table_lists_every_command():
    listed = {row[0].strip("`").removeprefix("lens-audio ") for row in table_rows(section("Commands"))}
    expected = set()
    for command in re.search(r"\{([a-z,-]+)\}", cli_help(())).group(1).split(","):
        groups = re.search(r"^  \{([a-z,-]+)\}", cli_help((command,)), flags=re.M)
        expected |= {f"{command} {sub}" for sub in groups.group(1).split(",")} if groups else {command}
    assert listed == expected, f"README's command table differs from `lens-audio --help`: {listed ^ expected}"


def test_links_into_docs_and_notebooks():
    targets = {(ROOT / t.partition("#")[0]).resolve() for _, t in links(README) if t.partition("#")[0]}
    assert (ROOT / "docs" / "index.md").resolve() in targets
    assert {p for p in (ROOT / "docs").glob("*.md") if p.name != "index.md"} <= targets, "link every docs page"
    assert set((ROOT / "notebooks").glob("*.ipynb")) <= targets and (ROOT / "notebooks" / "workshop") in targets


def test_no_timings_or_status_changelog():
    text = prose(README)
    timings = re.findall(r"\b\d+(?:\.\d+)? ?(?:s|ms|min|minutes|hours?)\b|\d-core|load average|this machine", text)
    assert not timings, f"machine-specific timings belong in docs/speed-and-memory.md or a model card: {timings}"
    assert "Status" not in text and "Tried" not in text, "history belongs in the model cards"
