"""Reading the documentation pages for the tests: README.md, docs/*.md and the model cards, their code blocks,
prose, links and anchors, and the command line's help."""

from __future__ import annotations

import contextlib
import functools
import io
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CARDS = sorted((ROOT / "lens_audio" / "organisms").glob("*/README.md"))
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md")), *CARDS]
PUBLIC = {"lens_audio", "lens_audio.analysis", "lens_audio.benchmark", "lens_audio.paper", "lens_audio.organisms",
          "lens_audio.sae", "lens_audio.model", "lens_audio.inputs", "lens_audio.workshop.exercises"}
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(.*?)\s*-->$")
MAX_NOT_RUN = 3  # blocks that cannot run in CI; keep them few
FENCE = re.compile(r"^```(\S*)\s*$")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # line of the first code line, 1-based
    language: str
    code: str
    not_run: str | None  # the reason given by a `<!-- not run: ... -->` line above the fence


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, in order."""
    found, lines = [], page.read_text().splitlines()
    i = 0
    while i < len(lines):
        start = FENCE.match(lines[i])
        if start is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        above = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = NOT_RUN.match(above)
        code = "\n".join(lines[i + 1 : end]) + "\n"
        found.append(Block(page, i + 2, start.group(1), code, marker.group(1) if marker else None))
        i = end + 1
    return found


def prose(page: Path) -> str:
    """The page without its front matter and fenced code blocks (fence lines kept blank so line numbers hold)."""
    out, inside = [], False
    text = page.read_text()
    if text.startswith("---\n"):
        head = text.index("\n---\n", 4) + 5
        text = "\n" * text[:head].count("\n") + text[head:]
    for line in text.splitlines():
        if FENCE.match(line) or (inside and line.startswith("```")):
            inside = not inside if line.startswith("```") else inside
            out.append("")
            continue
        out.append("" if inside else line)
    return "\n".join(out)


PYTHON = {page: [b for b in blocks(page) if b.language == "python"] for page in PAGES}
RUN_PAGES = [page for page, found in PYTHON.items() if any(b.not_run is None for b in found)]



def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    text = re.sub(r"[\u2000-\u206f\u2e00-\u2e7f\\'!\"#$%&()*+,./:;<=>?@\[\]^`{|}~]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose(page).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def links(page: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in enumerate(prose(page).splitlines(), 1):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            found.append((number, target))
    return found


@functools.cache
def cli_help(path: tuple[str, ...]) -> str | None:
    """`lens-audio PATH --help` as printed, or None where PATH is not a command."""
    from lens_audio import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit) as exit_:
        cli.main([*path, "--help"])
    return out.getvalue() if exit_.value.code == 0 else None


# Text a page or notebook must not hold: issue numbers, stage jargon, one machine's paths.
OUTSIDE = re.compile(r"issue #?\d+|\(#\d+[):]|stage-3|(?:^|[^\w.~-])/(?:work|home|Users)/", flags=re.I)
