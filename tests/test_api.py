"""The public API (``import spinebench as sb``) and the README's Python example, run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from test_hub import make_weights

ROOT = Path(__file__).resolve().parent.parent


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_import_is_fast_and_lazy():
    """``import spinebench`` does not import torch; the API names resolve on first use."""
    code = ("import sys, spinebench as sb; assert 'torch' not in sys.modules; "
            "names = [sb.list_models, sb.create_model, sb.load_trained, sb.load_records, sb.SpineDataset, "
            "sb.Predictor, sb.TrainedWeights, sb.load_image]; print(len(names))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "8"


def test_api_names_are_the_library_objects():
    import spinebench as sb
    from spinebench.data.dataset import SpineDataset
    from spinebench.models import create_model, list_models
    from spinebench.predict import Predictor

    assert sb.list_models is list_models and sb.create_model is create_model
    assert sb.SpineDataset is SpineDataset and sb.Predictor is Predictor
    assert "cls_squeezenet1_1" in sb.list_models()
    with pytest.raises(AttributeError):
        sb.no_such_thing  # noqa: B018


def test_readme_example_runs(tmp_path, capsys):
    weights = make_weights(tmp_path / "weights")
    code = readme_example()
    image = ROOT / "spinebench" / "assets" / "examples" / "05_dicom_monochrome1.dcm"
    code = re.sub(r'^WEIGHTS = ".*?"', f"WEIGHTS = {str(weights)!r}", code, flags=re.M)
    code = re.sub(r'^IMAGE = ".*?"', f"IMAGE = {str(image)!r}", code, flags=re.M)
    assert str(weights) in code and str(image) in code
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "cls_squeezenet1_1" in out and "'implant':" in out and "any_sensitivity" in out and "both" in out


def test_unknown_model_is_one_clear_error(tmp_path):
    import spinebench as sb

    with pytest.raises(sb.SpinebenchError, match="unknown model|no_such_model"):
        sb.create_model("no_such_model")
