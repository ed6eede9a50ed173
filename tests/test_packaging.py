"""Packaging facts that must agree across files: the Gradio pin and the Hugging Face Space's SDK version."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def _requirements(path: Path) -> dict[str, Requirement]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "-")):
            req = Requirement(line)  # an inline comment or a typo would fail here, as setuptools would
            out[req.name.lower()] = req
    return out


def _front_matter(readme: Path) -> dict:
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("---\n"), "README.md must open with the Space's YAML front matter"
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_gradio_pin_and_space_sdk_version_agree():
    gradio = _requirements(ROOT / "requirements.txt")["gradio"]
    meta = _front_matter(ROOT / "README.md")
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    sdk = Version(str(meta["sdk_version"]))
    assert gradio.specifier.contains(sdk), f"Space sdk_version {sdk} is outside requirements' {gradio}"
    # the pin names one major version: the one whose arguments app.py uses
    majors = {v for v in range(1, 20) if gradio.specifier.contains(Version(f"{v}.0"))
              or gradio.specifier.contains(Version(f"{v}.99"))}
    assert majors == {sdk.major}, f"{gradio} allows Gradio majors {sorted(majors)}, the Space runs {sdk.major}"


def test_installed_gradio_is_the_pinned_one():
    gr = pytest.importorskip("gradio")
    gradio = _requirements(ROOT / "requirements.txt")["gradio"]
    assert gradio.specifier.contains(Version(gr.__version__)), f"installed gradio {gr.__version__} is not {gradio}"


def test_every_requirement_parses():
    reqs = _requirements(ROOT / "requirements.txt")
    assert {"torch", "plotly", "matplotlib", "gradio", "tqdm"} <= set(reqs)
    assert "kaleido" not in reqs  # static figures are matplotlib's: no browser needed
