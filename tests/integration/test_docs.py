"""The documentation is checked like code: README.md, docs/*.md and the shipped models' cards.

- Every ```python block runs, on the shipped workshop model: a page's blocks run in order in one namespace (so later
  blocks use earlier names), in a fresh working folder. A block that needs what CI does not have (a 7B checkpoint, a
  GPU) says so on the line above it, `<!-- not run: REASON -->`; those are counted and listed, and kept few.
- Code on these pages imports only from the packages' `__init__`s, which are the public surface.
- Every relative link points at a file or folder of the repository, and every `#anchor` at a heading there.
- Every `lens-audio ...` command shown exists with the flags shown, and every `python -m MODULE` can run.
- The model cards carry Hugging Face metadata whose config and test metrics equal their checkpoint's files.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import json
import re
from fnmatch import fnmatch
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers.pages import (
    CARDS,
    DOCS,
    MAX_NOT_RUN,
    NOT_RUN,
    PAGES,
    PUBLIC,
    PYTHON,
    ROOT,
    RUN_PAGES,
    anchors,
    cli_help,
    links,
    rel,
)

# ------------------------------------------------------------------ running the code


def _check_readme(scope, out, folder):
    assert "| model:" in out and "steered:" in out


def _check_saes(scope, out, folder):
    assert scope["latents"].shape[-1] == 256 and (folder / "feature.html").stat().st_size > 1_000_000
    assert scope["board"].top[0].snippet[:4] == b"RIFF"


def _check_transformerlens(scope, out, folder):
    assert "answer loss" in out and "top components:" in out  # the block asserts logit lens and DLA itself


def _check_experiment(scope, out, folder):
    assert len(scope["heads"].specialists) == 4 and "'letters'" in out  # the refusal names what differs


# What a page's code must also show, beyond its own asserts.
AFTER = {
    "README.md": _check_readme,
    "docs/saes.md": _check_saes,
    "docs/transformerlens.md": _check_transformerlens,
    "docs/experiment.md": _check_experiment,
}


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A fresh working folder; the registry of named models and torch's grad mode restored afterwards."""
    from lens_audio.model import registry

    registry.model_entry("workshop")  # the providers register before the snapshot
    entries, grad = dict(registry._ENTRIES), torch.is_grad_enabled()
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    registry._ENTRIES.clear()
    registry._ENTRIES.update(entries)
    torch.set_grad_enabled(grad)


@pytest.mark.parametrize("page", RUN_PAGES, ids=rel)
def test_page_code_runs(page, isolated):
    scope: dict = {"__name__": "__docs__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for block in PYTHON[page]:
            if block.not_run is None:
                # padded so that a traceback names the page and the line of the Markdown file
                exec(compile("\n" * (block.line - 1) + block.code, rel(page), "exec"), scope)
    if rel(page) in AFTER:
        AFTER[rel(page)](scope, out.getvalue(), isolated)


def test_blocks_not_run_are_few_and_say_why(capsys):
    skipped = [f"{rel(b.page)}:{b.line}: {b.not_run}" for found in PYTHON.values() for b in found
               if b.not_run is not None]
    with capsys.disabled():
        print(f"\n{len(skipped)} documented Python block(s) not run in CI:", *skipped, sep="\n  ")
    assert all(reason.strip() for reason in (s.split(": ", 1)[1] for s in skipped)), skipped
    assert len(skipped) <= MAX_NOT_RUN, f"too many blocks are not run: {skipped}"
    for page in PAGES:  # every marker sits right above a Python block
        markers = [i for i, line in enumerate(page.read_text().splitlines(), 1) if NOT_RUN.match(line.strip())]
        assert len(markers) == sum(b.not_run is not None for b in PYTHON[page]), f"{rel(page)}: a stray marker"


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_pages_import_only_public_packages(page):
    for block in PYTHON[page]:
        for node in ast.walk(ast.parse(block.code)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for name in names:
                if name.split(".")[0] == "lens_audio":
                    assert name in PUBLIC, f"{rel(page)}:{block.line}: imports {name}; import from {sorted(PUBLIC)}"


# ------------------------------------------------------------------ links


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_relative_links_and_anchors_resolve(page):
    broken = []
    for number, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{rel(page)}:{number}: {target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{rel(page)}:{number}: {target} (no heading #{anchor} in {rel(resolved)})")
        elif resolved.exists() and ROOT not in resolved.parents and resolved != ROOT:
            broken.append(f"{rel(page)}:{number}: {target} (outside the repository)")
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme_or_the_index():
    linked = {(p.parent / t.partition("#")[0]).resolve() for p in (ROOT / "README.md", DOCS / "index.md")
              for _, t in links(p) if t.partition("#")[0]}
    assert not [rel(p) for p in DOCS.glob("*.md") if p.resolve() not in linked]


def test_nothing_points_outside_the_repository():
    """As for the README and notebooks (test_notebooks.py): no issue numbers, jargon or one machine's paths."""
    from tests.helpers.pages import OUTSIDE

    hits = [f"{rel(p)}: {m.group(0)!r}" for p in PAGES for m in OUTSIDE.finditer(p.read_text())]
    assert not hits, f"references a reader cannot follow: {hits}"


# ------------------------------------------------------------------ what the pages name


def commands_shown(page: Path) -> list[tuple[int, list[str]]]:
    """Each `lens-audio ...` invocation on a page (bash blocks and inline code) as its tokens."""
    shown = []
    lines = page.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        for snippet in re.findall(r"`(lens-audio[^`]*)`", line) + (
            [line.split("#")[0]] if line.startswith("lens-audio ") or " -m lens_audio.cli " in line else []
        ):
            words = snippet.split()
            if "lens-audio" in words:
                words = words[words.index("lens-audio") + 1 :]
            else:
                words = words[words.index("lens_audio.cli") + 1 :]
            shown.append((number, [w for w in words if not w.startswith("<")]))
    return shown


def command_path(words: list[str]) -> tuple[str, ...]:
    path = []
    for word in words:
        if word.startswith("-") or not re.fullmatch(r"[a-z][a-z-]*", word):
            break
        if cli_help((*path, word)) is None:
            break
        path.append(word)
    return tuple(path)


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_commands_and_flags_shown_exist(page):
    wrong = []
    for number, words in commands_shown(page):
        path = command_path(words)
        if not path:
            if words and not words[0].startswith("-"):
                wrong.append(f"{rel(page)}:{number}: lens-audio {words[0]} is not a command")
            continue
        text = cli_help(path)
        for flag in {w.split("=")[0].rstrip(",.;") for w in words if w.startswith("--")} - {"--help"}:
            if not re.search(rf"(^|[\s\[]){re.escape(flag)}([\s\]=,]|$)", text, flags=re.M):
                wrong.append(f"{rel(page)}:{number}: lens-audio {' '.join(path)} has no {flag}")
    assert not wrong, "\n".join(wrong)


def test_python_dash_m_modules_can_run():
    shown = {m for p in PAGES for m in re.findall(r"-m (lens_audio[\w.]*)", p.read_text())}
    for module in sorted(shown):
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"python -m {module}: no such module"
        if spec.submodule_search_locations is not None:  # a package runs its __main__
            assert importlib.util.find_spec(f"{module}.__main__") is not None, f"python -m {module}: no __main__.py"


def test_layout_lists_the_notebooks():
    listed = re.search(r"^notebooks/ +(.+)$", (DOCS / "layout.md").read_text(), flags=re.M).group(1)
    stems = listed.replace(",", " ").split()
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks == sorted(stems), "docs/layout.md's notebook list is stale"


# ------------------------------------------------------------------ model cards

REQUIRED = ("license", "library_name", "pipeline_tag", "tags", "datasets", "metrics", "config", "model-index")
HINTS = ("none", "congruent", "conflicting")


def front_matter(card: Path) -> dict:
    text = card.read_text()
    assert text.startswith("---\n"), f"{rel(card)} starts with YAML front matter"
    return yaml.safe_load(text[4 : text.index("\n---\n", 4)])


def card_names() -> dict[Path, str]:
    from lens_audio.model import model_card
    from lens_audio.model.registry import registered_names

    return {model_card(n).resolve(): n for n in registered_names() if model_card(n) is not None}


def test_every_shipped_model_has_its_card():
    names = card_names()
    assert sorted(names) == sorted(c.resolve() for c in CARDS), (names, CARDS)
    assert all(card.is_file() for card in names)


@pytest.mark.parametrize("card", CARDS, ids=rel)
def test_model_card_metadata(card):
    meta = front_matter(card)
    assert not [k for k in REQUIRED if not meta.get(k)], f"{rel(card)} lacks {[k for k in REQUIRED if not meta.get(k)]}"
    assert meta["license"] == "mit" and "MIT" in (ROOT / "pyproject.toml").read_text()
    assert isinstance(meta["tags"], list) and "lens_audio" in meta["tags"] and isinstance(meta["datasets"], list)
    assert "accuracy" in meta["metrics"]

    checkpoint = card.parent / "checkpoint"
    config = json.loads((checkpoint / "config.json").read_text())
    for key, value in meta["config"].items():
        expected = config[key]
        if isinstance(value, dict):
            assert value == {k: expected[k] for k in value}, (rel(card), key)
        else:
            assert value == expected, (rel(card), key)

    (entry,) = meta["model-index"]
    assert entry["name"] == card_names()[card.resolve()]
    (result,) = entry["results"]
    measured = json.loads((checkpoint / "metrics.json").read_text())
    expected = {hint: measured["test"]["accuracy"][hint]["all"] for hint in HINTS}
    expected["silence"] = measured["test_with_silence"]["accuracy"]["none"]["all"]
    stated = {m["config"]: m["value"] for m in result["metrics"] if m["type"] == "accuracy"}
    assert stated == {k: round(v, 1) for k, v in expected.items()}, f"{rel(card)}'s metrics differ from metrics.json"
    assert result["dataset"]["split"] == "test"


def test_model_cards_ship_as_package_data():
    text = (ROOT / "pyproject.toml").read_text()
    patterns = ast.literal_eval(re.search(r'^"lens_audio\.organisms" = (\[.*\])$', text, flags=re.M).group(1))
    for card in CARDS:
        inside = str(card.relative_to(ROOT / "lens_audio" / "organisms"))
        assert any(fnmatch(inside, p) for p in patterns), f"{inside} is not in lens_audio.organisms' package data"
