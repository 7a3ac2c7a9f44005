"""Focal cosine loss on small hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from hypernet_qgis.core.hypernet.loss import focal_cosine_loss, training_loss
from hypernet_qgis.core.hypernet.network import HyperNet


def _img(*pixels):
    """(1, C, 1, n) tensor from n pixel vectors."""
    return torch.tensor(pixels, dtype=torch.float64).T.reshape(len(pixels[0]), 1, len(pixels))[None]


def test_hand_computed_gamma_two():
    # pixel 0: cos(p1, z2) = 1 ; pixel 1: cos(p1, z2) = 0.6 ; pixel 2 (not in g): anything
    p1 = _img((2.0, 0.0), (1.0, 0.0), (0.0, 1.0))
    z2 = _img((5.0, 0.0), (0.6, 0.8), (1.0, 0.0))
    # date 2 -> 1: pixel 0: cos = 0 ; pixel 1: cos = -1
    p2 = _img((0.0, 3.0), (-1.0, 0.0), (1.0, 1.0))
    z1 = _img((1.0, 0.0), (2.0, 0.0), (1.0, 1.0))
    idx = torch.tensor([0, 1])
    term1 = ((2 - 1) ** 2 * 1 + (2 - 0.6) ** 2 * 0.6) / 2  # (1 + 1.176) / 2
    term2 = ((2 - 0) ** 2 * 0 + (2 + 1) ** 2 * -1) / 2  # (0 - 9) / 2
    expected = -0.5 * (term1 + term2)
    got = focal_cosine_loss(p1, z1, p2, z2, idx, gamma=2.0)
    assert float(got) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(-0.5 * (1.088 - 4.5))


def test_gamma_zero_is_negative_cosine():
    g = torch.Generator().manual_seed(0)
    p1, z1, p2, z2 = (torch.randn(1, 5, 4, 3, generator=g, dtype=torch.float64) for _ in range(4))
    idx = torch.tensor([0, 3, 7, 11])
    cos1 = torch.nn.functional.cosine_similarity(p1, z2, dim=1).reshape(-1)[idx]
    cos2 = torch.nn.functional.cosine_similarity(p2, z1, dim=1).reshape(-1)[idx]
    expected = -0.5 * (cos1.mean() + cos2.mean())
    assert float(focal_cosine_loss(p1, z1, p2, z2, idx, 0.0)) == pytest.approx(float(expected), rel=1e-12)


def test_mean_only_over_index():
    g = torch.Generator().manual_seed(1)
    p1, z1, p2, z2 = (torch.randn(1, 3, 2, 2, generator=g, dtype=torch.float64) for _ in range(4))
    idx = torch.tensor([1, 2])
    base = focal_cosine_loss(p1, z1, p2, z2, idx, 2.0)
    p1b = p1.clone()
    p1b[0, :, 0, 0] = torch.tensor([9.0, -4.0, 1.0])  # pixel 0 is not in g
    assert float(focal_cosine_loss(p1b, z1, p2, z2, idx, 2.0)) == pytest.approx(float(base), rel=1e-14)
    p1b[0, :, 0, 1] = torch.tensor([9.0, -4.0, 1.0])  # pixel 1 is
    assert float(focal_cosine_loss(p1b, z1, p2, z2, idx, 2.0)) != pytest.approx(float(base), rel=1e-6)


def test_no_gradient_into_z_and_hand_gradient_into_p():
    p1 = _img((1.0, 0.0)).requires_grad_()
    p2 = _img((1.0, 0.0)).requires_grad_()
    z1 = _img((0.0, 2.0)).requires_grad_()
    z2 = _img((0.0, 3.0)).requires_grad_()
    loss = focal_cosine_loss(p1, z1, p2, z2, torch.tensor([0]), gamma=0.0)
    loss.backward()
    assert z1.grad is None and z2.grad is None
    # d cos(p, z)/dp at p=(1,0), z=(0,1)-direction is (0, 1); times -0.5
    torch.testing.assert_close(p1.grad.reshape(2), torch.tensor([0.0, -0.5], dtype=torch.float64))
    torch.testing.assert_close(p2.grad.reshape(2), torch.tensor([0.0, -0.5], dtype=torch.float64))


def test_focal_gradient_gamma_two():
    # f(c) = (2 - c)^2 c ; f'(c) = (2 - c)(2 - 3c). At p=(1,0), z=(0.6,0.8): c = 0.6, dc/dp = z - c p = (0, 0.8)
    p1 = _img((1.0, 0.0)).requires_grad_()
    z2 = _img((0.6, 0.8))
    p2, z1 = _img((1.0, 0.0)), _img((1.0, 0.0))
    focal_cosine_loss(p1, z1, p2, z2, torch.tensor([0]), gamma=2.0).backward()
    fprime = (2 - 0.6) * (2 - 3 * 0.6)
    torch.testing.assert_close(p1.grad.reshape(2), torch.tensor([0.0, -0.5 * fprime * 0.8], dtype=torch.float64))


def test_zero_vector_is_finite():
    zero = _img((0.0, 0.0))
    loss = focal_cosine_loss(zero, zero, zero, zero, torch.tensor([0]), 2.0)
    assert math.isfinite(float(loss)) and float(loss) == 0.0


def test_empty_index_refused():
    x = _img((1.0, 0.0))
    with pytest.raises(ValueError):
        focal_cosine_loss(x, x, x, x, torch.tensor([], dtype=torch.long), 2.0)


def test_training_loss_updates_running_stats_twice():
    torch.manual_seed(0)
    model = HyperNet(4, 16).double().train()
    x1, x2 = torch.randn(1, 4, 6, 5, dtype=torch.float64), torch.randn(1, 4, 6, 5, dtype=torch.float64)
    training_loss(model, x1, x2, torch.arange(30), 2.0).backward()
    assert int(model.rsab1.bn.num_batches_tracked) == 2
    assert int(model.predictor[1].num_batches_tracked) == 2


@pytest.mark.parametrize("batch", [1, 3])
def test_training_loss_at_training_pixels_equals_full_computation(batch):
    """training_loss runs the predictor's last conv and the cosine only at mask-g pixels: same loss and gradients
    as computing p and z everywhere and indexing (the published way), for one image and for crop batches."""
    torch.manual_seed(3)
    x1, x2 = torch.randn(batch, 9, 6, 7, dtype=torch.float64), torch.randn(batch, 9, 6, 7, dtype=torch.float64)
    index = torch.tensor(sorted(torch.randperm(batch * 42)[: batch * 20].tolist()))
    fast = HyperNet(9, 16).double().train()
    full = HyperNet(9, 16).double().train()
    full.load_state_dict(fast.state_dict())

    loss_fast = training_loss(fast, x1, x2, index, 2.0)
    _, z1, p1 = full.features_and_projections(x1)
    _, z2, p2 = full.features_and_projections(x2)
    loss_full = focal_cosine_loss(p1, z1, p2, z2, index, 2.0)
    loss_fast.backward()
    loss_full.backward()

    assert loss_fast.item() == pytest.approx(loss_full.item(), rel=1e-12)
    for (name, a), (_, b) in zip(fast.named_parameters(), full.named_parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-9, atol=1e-14), name
    for (name, a), (_, b) in zip(fast.named_buffers(), full.named_buffers()):
        assert torch.equal(a, b), name
