"""README's Python snippets run as they are written, from the repository's root (where ``cases/`` is)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNIPPETS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_the_readme_has_its_snippets() -> None:
    assert len(SNIPPETS) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("code", SNIPPETS, ids=[f"snippet-{k + 1}" for k in range(len(SNIPPETS))])
def test_a_readme_snippet_runs(code: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    if re.search(r"^import torch|hessverify\.torch", code, re.M):
        pytest.importorskip("torch")
    monkeypatch.chdir(ROOT)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})  # noqa: S102 - the README's own code
    if "summary()" in code:
        assert "check passed" in capsys.readouterr().out
