"""How a classifier pools its implant class map (``implant_pool``): log-sum-exp over the cells of the class
activation map for the implant logit, the mean for scoliosis, with torchvision's parameters and state-dict keys."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spinebench.models import create_model
from spinebench.models.classifiers import LSE_SHARPNESS, pool_class_maps

SIZES = {"cls_resnet50": (128, 56), "cls_densenet121": (128, 56), "cls_squeezenet1_1": (128, 56),
         "cls_inception_v3": (192, 80)}


def _pair(name: str):
    """The same weights built with torchvision's average pooling and with the implant map pooled by log-sum-exp
    (eval mode), and a batch of films with a bright spot each."""
    torch.manual_seed(0)
    avg = create_model(name).eval()
    lse = create_model(name, implant_pool="lse").eval()
    lse.load_state_dict(avg.state_dict())  # strict: the same keys
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 1, *SIZES[name], generator=g) * 0.5
    x[:, :, 40:46, 20:26] = 1.0
    return avg, lse, x


@pytest.mark.parametrize("name", list(SIZES))
def test_the_implant_logit_is_the_lse_of_the_class_map_and_scoliosis_stays_the_mean(name):
    from spinebench.gradcam import target_layer

    avg, lse, x = _pair(name)
    layer, rectify = target_layer(lse)
    seen = []
    hook = layer.register_forward_hook(lambda m, i, out: seen.append(F.relu(out) if rectify else out))
    with torch.no_grad():
        y_avg, y_lse = avg(x), lse(x)
    hook.remove()
    fc = lse.get_submodule(lse.default_cfg["classifier"][0])
    w, b = fc.weight.reshape(fc.weight.shape[0], -1), fc.bias
    cam = torch.einsum("bchw,kc->bkhw", seen[-1], w).flatten(2) + b[:, None]   # (B, 2, cells), by hand
    r = LSE_SHARPNESS
    expected = (torch.logsumexp(r * cam[:, 0], -1) - math.log(cam.shape[-1])) / r
    torch.testing.assert_close(y_lse[:, 0], expected, rtol=1e-4, atol=1e-4)
    # torchvision's head is the mean of the same map: the scoliosis logit is unchanged, and the implant logit can
    # only rise (log-sum-exp is at least the mean)
    torch.testing.assert_close(y_avg, cam.mean(-1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y_lse[:, 1], y_avg[:, 1], rtol=1e-5, atol=1e-5)
    assert bool((y_lse[:, 0] >= y_avg[:, 0] - 1e-5).all())
    assert lse.default_cfg["implant_pool"] == "lse" and avg.default_cfg["implant_pool"] == "avg"


def test_one_bright_cell_moves_the_lse_logit_and_barely_the_mean():
    maps = torch.zeros(1, 2, 8)
    maps[0, :, 3] = 6.0
    avg, lse = pool_class_maps(maps, "avg"), pool_class_maps(maps, "lse")
    torch.testing.assert_close(avg, torch.tensor([[0.75, 0.75]]))
    assert lse[0, 1] == avg[0, 1]                  # scoliosis: the mean
    assert 4.5 < float(lse[0, 0]) < 6.0            # near the cell's 6, below the max
    flat = torch.full((1, 2, 8), -1.5)
    torch.testing.assert_close(pool_class_maps(flat, "lse"), flat.mean(-1))   # a uniform map: the mean


def test_a_bad_implant_pool_is_refused_with_the_choices():
    from spinebench.errors import SpinebenchError

    with pytest.raises(SpinebenchError, match="unknown implant_pool 'max'.*avg, lse"):
        create_model("cls_resnet50", implant_pool="max")


@pytest.mark.parametrize("name", ["cls_densenet121", "cls_resnet50", "cls_squeezenet1_1"])
def test_grad_cam_of_an_lse_model_follows_its_own_head(name):
    """Grad-CAM's head (eager hook and the traced body + ``HEADS``) must be the model's: its logits equal the
    model's, and the implant map has a gradient through the log-sum-exp."""
    from spinebench.gradcam import GradCAM

    _, lse, x = _pair(name)
    fc = lse.get_submodule(lse.default_cfg["classifier"][0])
    with torch.no_grad():
        fc.weight[0].abs_()  # the maps are rectified: every cell then adds to the implant logit, so its CAM is > 0
        y = lse(x)
    maps = {}
    for optimize in (False, True):
        cam = GradCAM(lse, optimize=optimize, example=x[:1])
        assert cam.optimized == optimize
        logits, maps[optimize] = cam(x)
        torch.testing.assert_close(logits, y, rtol=1e-4, atol=1e-4)
        cam.remove()
    assert maps[True].shape[:2] == (3, 2) and float(maps[True][:, 0].amin((1, 2)).max()) >= 0
    assert float(maps[True][:, 0].amax((1, 2)).min()) > 0
    torch.testing.assert_close(maps[False], maps[True], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", ["cls_resnet50", "cls_inception_v3"])
def test_the_pooled_shape_head_reads_pooled_features_of_a_map_head(name):
    """ResNet-50 and Inception-v3 hand their classifier layer the flattened map when it pools per class; the
    pooled spine-shape head must still get (B, C) features, the ones average pooling gives."""
    from spinebench.tasks.classification import SpineShapeHead

    avg, lse, x = _pair(name)
    head, plain = SpineShapeHead(lse, torch.ones(34), spatial=False), SpineShapeHead(avg, torch.ones(34))
    for m in (avg, lse):
        if hasattr(m.net, "dropout"):  # Inception's dropout: on the pooled vector in one, on the map in the other
            m.net.dropout.p = 0.0
        m.train()(x)
    feats = head.features()
    fc = lse.get_submodule(lse.default_cfg["classifier"][0])
    assert feats.shape == (3, fc.in_features)
    torch.testing.assert_close(feats, plain.features(), rtol=1e-4, atol=1e-4)
    lse(x)
    loss = head.loss(torch.zeros(3, 34))
    loss.backward()
    assert torch.isfinite(loss) and head.head.weight.grad is not None
    head.close()


def test_the_quick_profile_pools_by_lse_where_measured_and_the_record_rebuilds_it(tmp_path):
    from spinebench.engine.profiles import get_profile
    from spinebench.engine.weights import save_weights
    from spinebench.models.classifiers import ClassMapPool
    from spinebench.tasks import get_task
    from spinebench.weights import get_record

    quick = get_profile("quick")
    task = get_task("cls_densenet121")
    for other in ("cls_resnet50", "cls_squeezenet1_1", "cls_inception_v3"):   # measured not to pay
        assert "implant_pool" not in task.model_kwargs(quick, quick.settings_for(other, 100))
    name = "cls_squeezenet1_1"   # the cheapest model to save and rebuild; the same record path for all four
    settings = quick.settings_for(name, 100)
    kwargs = {**task.model_kwargs(quick, settings), "implant_pool": "lse"}
    assert task.model_kwargs(quick, quick.settings_for("cls_densenet121", 100))["implant_pool"] == "lse"
    model = create_model(name, **kwargs).eval()
    save_weights(model, tmp_path / "w", meta={"task": "classification", "max_side": 320, "pretrained": False,
                                              "image_size": list(settings.image_size), "model_kwargs": kwargs})
    rebuilt = get_record(name, tmp_path / "w").load("cpu")
    assert rebuilt.default_cfg["implant_pool"] == "lse"
    assert isinstance(rebuilt.net.classifier[3], ClassMapPool)
    x = torch.from_numpy(np.random.default_rng(0).random((2, 1, 128, 56), dtype=np.float32))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))
    # weights saved before the choice existed rebuild as they were trained: torchvision's average pooling
    assert create_model(name).default_cfg["implant_pool"] == "avg"
