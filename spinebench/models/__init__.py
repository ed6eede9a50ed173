"""The model zoo: the paper's four classifiers and two detectors behind one timm-style registry.

    from spinebench.models import create_model, list_models, model_info
    model = create_model("cls_densenet121", pretrained="auto")   # "none" | "auto" | "imagenet"

Every model takes the pixel contract (one channel, float in [0, 1], bright = dense), normalises inside, and
carries ``model.pretrained_loaded`` and ``model.default_cfg``.
"""

from spinebench.models.registry import create_model, list_models, model_entry, model_info, register_model
from spinebench.models import classifiers, detectors  # noqa: F401  (registers the models)
from spinebench.models import cobb_net, cobb_regress  # noqa: F401  (register the two ``cobb`` landmark models)

__all__ = ["create_model", "list_models", "model_entry", "model_info", "register_model"]
