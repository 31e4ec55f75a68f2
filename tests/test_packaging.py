"""pyproject.toml: metadata that installs without deprecation warnings."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8"))


def test_license_is_an_spdx_string() -> None:
    # a TOML table ({ text = "MIT" }) makes setuptools >= 77 warn on every install
    assert PYPROJECT["project"]["license"] == "MIT"


def test_build_system_setuptools_accepts_an_spdx_license() -> None:
    requires = " ".join(PYPROJECT["build-system"]["requires"])
    m = re.search(r"setuptools>=(\d+)", requires)
    assert m is not None and int(m.group(1)) >= 77  # PEP 639 support arrived in setuptools 77


def test_torch_is_an_optional_extra_pinned_to_the_cpu_release() -> None:
    assert "torch" not in " ".join(PYPROJECT["project"]["dependencies"])
    assert PYPROJECT["project"]["optional-dependencies"]["torch"] == ["torch==2.13.0"]


def test_the_tensorflow_extra_cannot_pull_the_full_tensorflow_wheel() -> None:
    """tf-keras requires `tensorflow` (572 MB, not tensorflow-cpu): it is left out of the extra and goes in with
    --no-deps in the Makefile, which CI runs (make test -> frameworks -> tensorflow)."""
    extra = PYPROJECT["project"]["optional-dependencies"]["tensorflow"]
    assert "tensorflow-cpu==2.21.0" in extra and "tensorflow-probability==0.25.0" in extra
    assert not any(re.match(r"(tensorflow|tf-keras)\b(?!-)", r) for r in extra)
    make = (Path(__file__).resolve().parents[1] / "Makefile").read_text(encoding="utf-8")
    assert "TF_NODEPS := 'tf-keras==2.21.0' 'tensorflow-probability==0.25.0'" in make
    assert "--no-deps $(TF_NODEPS)" in make and "$(MAKE) --no-print-directory tensorflow" in make
