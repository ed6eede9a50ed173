"""In-domain transfer (spinebench.models.transfer): a trained classifier's weights start a detector's body.

Offline and small: classifiers are trained for one step on random 96 px images, detectors built at 128 / 160 px.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from spinebench.errors import SpinebenchError
from spinebench.models import create_model
from spinebench.models.transfer import body_classifier, init_backbone_from_classifier, load_body_state

DET_KW = dict(min_size=128, max_size=160)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("SPINEBENCH_OFFLINE", "1")
    torch.manual_seed(0)


def _one_step(model: torch.nn.Module) -> dict:
    """A classifier after one real SGD step (BatchNorm statistics moved too), as a CPU state dict."""
    model.train()
    x, y = torch.rand(4, 1, 96, 96), torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    out = model(x)
    logits = out[0] if isinstance(out, tuple) else out
    F.binary_cross_entropy_with_logits(logits, y).backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.01 * p.grad
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def inception_cls_state() -> dict:
    torch.manual_seed(1)
    return _one_step(create_model("cls_inception_v3", pretrained="none"))


def test_cls_inception_v3_maps_onto_the_v2_detector_body(inception_cls_state):
    det = create_model("det_faster_rcnn_inception_v2", **DET_KW)
    before = {k: v.clone() for k, v in det.backbone.body.state_dict().items()}
    rep = init_backbone_from_classifier(det, inception_cls_state, source="in-domain:cls_inception_v3")
    assert rep.missing == [] and rep.mismatched == []           # every body weight came from the classifier
    assert len(rep.loaded) == len(before)
    assert all(k.startswith(("AuxLogits.", "fc.")) for k in rep.unused)  # only the heads had no place
    after = det.backbone.body.state_dict()
    for k in ("Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch_pool.conv.weight", "Mixed_6e.branch7x7_1.bn.running_var"):
        assert torch.equal(after[k], inception_cls_state["net." + k])
        assert not torch.equal(after[k], before[k])
    # BatchNorm frozen: statistics are constants, train mode gives the eval output
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in det.backbone.body.modules())
    x = torch.rand(1, 1, 96, 64)
    det.backbone.body.train()
    y_train = det.backbone.body(x)
    det.backbone.body.eval()
    assert all(torch.allclose(a, b) for a, b in zip(y_train, det.backbone.body(x)))
    assert det.default_cfg["backbone_init"] == "in-domain:cls_inception_v3"
    assert det.pretrained_loaded is False  # pretrained_loaded keeps meaning "ImageNet weights arrived"
    # the detector still trains
    det.train()
    losses = det([torch.rand(1, 128, 96)], [dict(boxes=torch.tensor([[30.0, 40.0, 50.0, 70.0]]),
                                                   labels=torch.tensor([1]))])
    assert all(torch.isfinite(v) for v in losses.values())


def test_transferred_body_computes_the_classifiers_features(inception_cls_state):
    """Key for key the same network: a timm body (VALID paddings, as the classifier) loaded from the classifier
    gives the classifier's own Mixed_5d / 6e / 7c maps on the same normalised input."""
    cls = create_model("cls_inception_v3", pretrained="none")
    cls.load_state_dict(inception_cls_state)
    cls.eval()
    feats = {}
    for n in ("Mixed_5d", "Mixed_6e", "Mixed_7c"):
        cls.net.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: feats.__setitem__(n, o))
    body = timm.create_model("inception_v3", pretrained=False, features_only=True, out_indices=(2, 3, 4), in_chans=1)
    rep = load_body_state(body, inception_cls_state)
    assert rep.missing == []
    body.eval()
    x = torch.rand(2, 1, 120, 96)
    with torch.no_grad():
        cls(x)
        out = body((x - 0.5) / 0.5)  # FindingClassifier normalises inside; the detector's transform does it
    for o, n in zip(out, ("Mixed_5d", "Mixed_6e", "Mixed_7c")):
        assert torch.allclose(o, feats[n], atol=1e-5), n


def test_trainable_from_freezes_the_stem(inception_cls_state):
    det = create_model("det_faster_rcnn_inception_v2", **DET_KW)
    init_backbone_from_classifier(det, inception_cls_state, trainable_from="Mixed_6a")
    body = det.backbone.body
    assert not any(p.requires_grad for p in body.Mixed_5d.parameters())
    assert all(p.requires_grad for p in body.Mixed_6a.parameters())
    assert all(p.requires_grad for p in det.backbone.fpn.parameters())
    with pytest.raises(SpinebenchError, match="no stage"):
        init_backbone_from_classifier(create_model("det_faster_rcnn_inception_v2", **DET_KW), inception_cls_state,
                                      trainable_from="Mixed_9z")


def test_a_classifier_of_another_family_is_refused():
    det = create_model("det_faster_rcnn_inception_v2", **DET_KW)
    resnet = create_model("cls_resnet50", pretrained="none").state_dict()
    with pytest.raises(SpinebenchError, match="none of its"):
        init_backbone_from_classifier(det, resnet, source="in-domain:cls_resnet50")
    # the right names with the wrong shapes load nothing either, and say which shapes differ
    bad = {"net.Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}
    with pytest.raises(SpinebenchError, match="shapes differ"):
        init_backbone_from_classifier(det, bad)
    # a partial match that misses the stem is refused too (the stem is where transfer matters most)
    partial = {"net.Mixed_7c.branch_pool.conv.weight": det.backbone.body.state_dict()["Mixed_7c.branch_pool.conv.weight"]}
    with pytest.raises(SpinebenchError, match="no match"):
        init_backbone_from_classifier(det, partial)


def test_body_classifier_pretrains_the_inception_resnet_v2_body():
    """Inception-ResNet-v2 has no registered classifier: its own timm body, trained as one, maps onto the
    detector's atrous features_only body name for name (the atrous surgery changes strides, not weights)."""
    torch.manual_seed(2)
    cls = body_classifier("inception_resnet_v2")
    assert cls.default_cfg["task"] == "classification"
    state = {k: v.clone() for k, v in cls.state_dict().items()}
    state["net.conv2d_1a.conv.weight"] += 1.0  # stands in for training (a forward pass of this body is slow)
    det = create_model("det_faster_rcnn_inception_resnet_v2", **DET_KW)
    rep = init_backbone_from_classifier(det, state, source="in-domain:body_inception_resnet_v2")
    assert rep.missing == [] and sorted(rep.unused) == ["classif.bias", "classif.weight"]
    assert torch.equal(det.backbone.body.state_dict()["conv2d_1a.conv.weight"], state["net.conv2d_1a.conv.weight"])


def test_inception_v3_stem_starts_the_inception_resnet_v2_stem(inception_cls_state):
    """A partial transfer: the five stem layers load and their BatchNorm is frozen; the stages left at their init
    keep a BatchNorm that trains (a frozen one that never saw data would normalise nothing)."""
    from spinebench.models.transfer import INCEPTION_V3_STEM_TO_IRV2

    det = create_model("det_faster_rcnn_inception_resnet_v2", **DET_KW)
    rep = init_backbone_from_classifier(det, inception_cls_state, rename=INCEPTION_V3_STEM_TO_IRV2,
                                        trainable_from="mixed_5b")
    assert {k.split(".")[0] for k in rep.loaded} == set(INCEPTION_V3_STEM_TO_IRV2.values())
    body = det.backbone.body
    assert torch.equal(body.state_dict()["conv2d_4a.conv.weight"], inception_cls_state["net.Conv2d_4a_3x3.conv.weight"])
    assert not isinstance(body.conv2d_4a.bn, torch.nn.BatchNorm2d)      # frozen
    assert isinstance(body.mixed_5b.branch0.bn, torch.nn.BatchNorm2d)   # still trains
    assert not any(p.requires_grad for p in body.conv2d_4a.parameters())
    assert all(p.requires_grad for p in body.mixed_5b.parameters())


def test_inception_resnet_v2_body_pretraining_starts_from_the_inception_v3_stem(inception_cls_state):
    """The plan's start: the body classifier the runner pre-trains gets cls_inception_v3's five stem layers
    (weights and BatchNorm statistics), the rest stays at its init, nothing is frozen; a state without the whole
    stem is refused rather than half-loaded. The plan names what it needs from the run."""
    from spinebench.models.transfer import IN_DOMAIN, INCEPTION_V3_STEM_TO_IRV2, start_body_classifier

    plan = IN_DOMAIN["det_faster_rcnn_inception_resnet_v2"]
    assert plan.start_from == "cls_inception_v3" and plan.needs == "cls_inception_v3"
    assert plan.pretrained == "in-domain:body:inception_resnet_v2+cls_inception_v3:stem"
    assert IN_DOMAIN["det_faster_rcnn_inception_v2"].needs == "cls_inception_v3"
    torch.manual_seed(3)
    body = plan.make_classifier()
    before = {k: v.clone() for k, v in body.state_dict().items()}
    rep = start_body_classifier(body, plan, inception_cls_state)
    assert {k.split(".")[0] for k in rep.loaded} == set(INCEPTION_V3_STEM_TO_IRV2.values())
    after = body.state_dict()
    for v3, irv2 in INCEPTION_V3_STEM_TO_IRV2.items():
        for leaf in ("conv.weight", "bn.weight", "bn.running_mean", "bn.running_var"):
            assert torch.equal(after[f"net.{irv2}.{leaf}"], inception_cls_state[f"net.{v3}.{leaf}"])
    assert not torch.equal(before["net.conv2d_4a.conv.weight"], after["net.conv2d_4a.conv.weight"])
    assert torch.equal(before["net.mixed_5b.branch0.conv.weight"], after["net.mixed_5b.branch0.conv.weight"])
    assert all(p.requires_grad for p in body.parameters())
    partial = {k: v for k, v in inception_cls_state.items() if not k.startswith("net.Conv2d_4a_3x3")}
    with pytest.raises(SpinebenchError, match="conv2d_4a"):
        start_body_classifier(plan.make_classifier(), plan, partial)


@pytest.mark.parametrize("name", ["det_faster_rcnn_inception_v2", "det_faster_rcnn_inception_resnet_v2"])
def test_every_detector_has_an_in_domain_plan(name, inception_cls_state):
    from spinebench.models import list_models
    from spinebench.models.transfer import IN_DOMAIN, init_in_domain

    assert set(IN_DOMAIN) == set(list_models("detection"))
    plan = IN_DOMAIN[name]
    state = inception_cls_state if plan.classifier == "cls_inception_v3" else plan.make_classifier().state_dict()
    if plan.model_kwargs:  # built without what the plan needs: refused, not silently worse
        with pytest.raises(SpinebenchError, match="needs the detector built with"):
            init_in_domain(create_model(name, **DET_KW), state)
    det = create_model(name, **DET_KW, **plan.model_kwargs)
    rep, pretrained = init_in_domain(det, state)
    assert pretrained == plan.pretrained and pretrained.startswith("in-domain:" + plan.classifier)
    assert rep.missing == []
    assert det.default_cfg["backbone_init"] == pretrained
    trains = {n for n, p in det.backbone.body.named_parameters() if p.requires_grad}
    assert not trains if plan.freeze_body else trains
    with pytest.raises(SpinebenchError, match="no in-domain transfer"):
        init_in_domain(det, state, name="det_unknown")


def test_groupnorm_fpn_tames_a_transferred_bodys_scale(inception_cls_state):
    """fpn_norm="gn": whatever the scale of the (frozen, transferred) body's maps, the FPN hands unit-scale maps
    to the heads; a plain FPN passes a trained classifier's larger maps on. Unknown norms are refused."""
    x = torch.rand(1, 1, 128, 96)
    stds = {}
    for norm in (None, "gn"):
        torch.manual_seed(0)
        det = create_model("det_faster_rcnn_inception_v2", fpn_norm=norm, **DET_KW)
        init_backbone_from_classifier(det, inception_cls_state, freeze_body=True)
        assert not any(p.requires_grad for p in det.backbone.body.parameters())
        assert det.default_cfg["fpn_norm"] == norm
        with torch.no_grad():
            stds[norm] = [float(f.std()) for f in det.backbone((x - 0.5) / 0.5).values()]
    assert any(isinstance(m, torch.nn.GroupNorm) for m in det.backbone.fpn.modules())
    assert all(abs(s - 1) < 0.05 for s in stds["gn"])
    with pytest.raises(SpinebenchError, match="fpn_norm"):
        create_model("det_faster_rcnn_inception_v2", fpn_norm="bn", **DET_KW)


def test_a_transferred_detectors_weights_load_into_a_fresh_one(inception_cls_state):
    """Saved weights are rebuilt with create_model + load_state_dict (spinebench.weights): the frozen BatchNorm
    of a transferred body loads strictly into a plain one and gives the same detections in eval mode."""
    from spinebench.models.transfer import init_in_domain

    det = create_model("det_faster_rcnn_inception_v2", **DET_KW)
    init_in_domain(det, inception_cls_state)
    fresh = create_model("det_faster_rcnn_inception_v2", **DET_KW)
    fresh.load_state_dict(det.state_dict())  # strict
    det.eval()
    fresh.eval()
    x = [torch.rand(1, 128, 96)]
    with torch.no_grad():
        a, b = det.backbone(x[0][None]), fresh.backbone(x[0][None])
    # relative: a barely trained Inception's maps are huge in eval mode (running statistics of one batch)
    assert all(float((a[k] - b[k]).abs().max()) <= 1e-4 * float(a[k].abs().max()) for k in a)
