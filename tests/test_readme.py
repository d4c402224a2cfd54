"""The README's quick-start code runs as written on the workshop model."""

from __future__ import annotations

import re
from pathlib import Path


def test_quick_start_runs(capsys):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Quick start") :]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    exec(compile(code, "README quick start", "exec"), {})
    out = capsys.readouterr().out
    assert "| model:" in out and "steered:" in out
