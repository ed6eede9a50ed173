"""RoIAlign as a matrix product (spinebench.models.roi_pool) gives torchvision's numbers, forward and backward."""

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign, roi_align

from spinebench.models.roi_pool import MatmulMultiScaleRoIAlign, roi_align_matmul


def _rois(n_images: int, k: int, h: int, w: int, scale: float, g: torch.Generator) -> torch.Tensor:
    """Boxes in image pixels, some past the borders and some thinner than a feature pixel."""
    H, W = h / scale, w / scale
    x1 = torch.rand(k, generator=g) * W * 1.1 - 0.05 * W
    y1 = torch.rand(k, generator=g) * H * 1.1 - 0.05 * H
    bw = torch.rand(k, generator=g) * W * 0.6 + torch.where(torch.rand(k, generator=g) < 0.2, 0.0, 2 / scale)
    bh = torch.rand(k, generator=g) * H * 0.6 + 0.1
    idx = torch.randint(0, n_images, (k,), generator=g).float()
    return torch.stack([idx, x1, y1, x1 + bw, y1 + bh], 1)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("output_size,sampling_ratio", [((7, 7), 2), ((3, 5), 1), ((4, 4), 3)])
def test_roi_align_matmul_is_torchvisions(aligned, output_size, sampling_ratio):
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(3, 8, 13, 9, generator=g, dtype=torch.float64)
    rois = _rois(3, 40, 13, 9, 0.125, g).double()
    a = feat.clone().requires_grad_(True)
    b = feat.clone().requires_grad_(True)
    ref = roi_align(a, rois, output_size, spatial_scale=0.125, sampling_ratio=sampling_ratio, aligned=aligned)
    out = roi_align_matmul(b, rois, output_size, 0.125, sampling_ratio, aligned)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    grad = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    ref.backward(grad)
    out.backward(grad)
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-10, atol=1e-10)
    assert a.grad.abs().sum() > 0


def test_roi_align_matmul_refuses_the_adaptive_grid():
    with pytest.raises(ValueError, match="sampling_ratio"):
        roi_align_matmul(torch.zeros(1, 2, 4, 4), torch.tensor([[0.0, 0, 0, 2, 2]]), (2, 2), 1.0, 0)


def test_multiscale_pooler_is_torchvisions():
    """The detectors' pooler: same levels and scales as torchvision's MultiScaleRoIAlign, same result and gradient."""
    g = torch.Generator().manual_seed(1)
    shapes = [(800, 400), (800, 360)]  # large enough for boxes of all three levels (224 px is level 4's)
    feats = {str(i): torch.randn(2, 16, 800 // s, 400 // s, generator=g, requires_grad=True)
             for i, s in enumerate((8, 16, 32))}
    boxes = []
    for h, w in shapes:  # small, medium and large boxes inside the image, so that every level gets some
        x1, y1 = torch.rand(30, generator=g) * w * 0.5, torch.rand(30, generator=g) * h * 0.5
        size = torch.rand(30, generator=g) ** 2 * 900 + 4
        boxes.append(torch.stack([x1, y1, (x1 + size * 0.5).clamp(max=w), (y1 + size).clamp(max=h)], 1))
    names = list(feats)
    ref_pool = MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2)
    ours = MatmulMultiScaleRoIAlign(names, output_size=7, sampling_ratio=2)
    ref = ref_pool(feats, boxes, shapes)
    grads_ref = torch.autograd.grad(ref.square().sum(), list(feats.values()))
    out = ours(feats, boxes, shapes)
    grads = torch.autograd.grad(out.square().sum(), list(feats.values()))
    assert len(set(ref_pool.map_levels(boxes).tolist())) == 3  # the boxes reach all three levels
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
