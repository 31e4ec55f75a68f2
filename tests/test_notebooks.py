"""The lecture notebooks: committed without outputs, titled as the docs say (nbmake runs them: pyproject addopts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "docs" / "notebooks"
TITLES = {"second_order_by_hand.ipynb": "# Second-order backpropagation by hand",
          "why_second_order.ipynb": "# Why second-order?"}


@pytest.mark.parametrize("name", sorted(TITLES))
def test_notebook_is_committed_clean(name: str) -> None:
    nb = json.loads((NOTEBOOKS / name).read_text(encoding="utf-8"))
    assert nb["cells"][0]["cell_type"] == "markdown"
    assert "".join(nb["cells"][0]["source"]).startswith(TITLES[name])
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, name
