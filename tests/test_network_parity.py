"""HyperNet, the focal cosine loss and one SGD step match the authors' published code number for number.

The fixture (shared/fixtures/hypernet_reference_parity.npz, see its README) holds arrays produced by the authors'
code in float64: initial weights, the training-mode loss, every gradient, every parameter/buffer after one SGD step,
and the eval-mode fused features afterwards.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hypernet_qgis.core.hypernet.loss import training_loss, training_step
from hypernet_qgis.core.hypernet.network import HyperNet, default_widths, reference_to_ours

RTOL = 1e-9
ATOL = 1e-12


@pytest.fixture(scope="module")
def ref(shared_dir):
    path = shared_dir / "fixtures" / "hypernet_reference_parity.npz"
    if not path.is_file():
        pytest.skip("parity fixture absent")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _section(ref: dict, prefix: str) -> dict[str, np.ndarray]:
    return {reference_to_ours(k[len(prefix) :]): v for k, v in ref.items() if k.startswith(prefix)}


def _model_from_reference(ref: dict) -> HyperNet:
    bands, width, proj_width, pred_hidden = (int(v) for v in ref["layernum"])
    model = HyperNet(bands, width, proj_width, pred_hidden).double()
    init = _section(ref, "init/")
    ours = model.state_dict()
    assert set(init) == set(ours), (
        f"not covered by the fixture: {sorted(set(ours) - set(init))}; unused fixture keys: {sorted(set(init) - set(ours))}"
    )
    for name, value in init.items():
        assert tuple(ours[name].shape) == value.shape, name
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in init.items()}, strict=True)
    return model


def _inputs(ref: dict):
    x1 = torch.from_numpy(ref["x1"])[None]
    x2 = torch.from_numpy(ref["x2"])[None]
    return x1, x2, torch.from_numpy(ref["idx"]).long()


def _close(actual: torch.Tensor, expected: np.ndarray, what: str) -> None:
    np.testing.assert_allclose(actual.detach().cpu().numpy(), expected, rtol=RTOL, atol=ATOL, err_msg=what)


def test_name_mapping_is_one_to_one(ref):
    names = [k[len("init/") :] for k in ref if k.startswith("init/")]
    mapped = [reference_to_ours(n) for n in names]
    assert len(set(mapped)) == len(names)


def test_loss_and_gradients(ref):
    model = _model_from_reference(ref)
    model.train()
    x1, x2, idx = _inputs(ref)
    loss = training_loss(model, x1, x2, idx, float(ref["gamma"]))
    _close(loss, ref["loss"], "loss")
    loss.backward()
    grads = _section(ref, "grad/")
    params = dict(model.named_parameters())
    assert set(grads) == set(params)
    for name, g in grads.items():
        assert params[name].grad is not None, name
        _close(params[name].grad, g, f"grad {name}")


def test_one_sgd_step_and_eval_features(ref):
    model = _model_from_reference(ref)
    x1, x2, idx = _inputs(ref)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=float(ref["lr"]),
        momentum=float(ref["momentum"]),
        weight_decay=float(ref["weight_decay"]),
    )
    loss = training_step(model, opt, x1, x2, idx, float(ref["gamma"]))
    assert loss == pytest.approx(float(ref["loss"]), rel=RTOL)
    step1 = _section(ref, "step1/")
    state = model.state_dict()
    assert set(step1) == set(state)
    for name, value in step1.items():
        if name.endswith("num_batches_tracked"):
            assert int(state[name]) == int(value) == 2, name
        else:
            _close(state[name], value, f"step1 {name}")
    model.eval()
    with torch.no_grad():
        f1, f2 = model(x1)[0], model(x2)[0]
    _close(f1, ref["eval_f1"], "eval_f1")
    _close(f2, ref["eval_f2"], "eval_f2")
    _close(((f1 - f2) ** 2).mean(dim=0), ref["eval_mse"], "eval_mse")


def test_parity_fails_when_a_weight_changes(ref):
    """The comparison is sharp: perturbing one weight by 1e-6 breaks it."""
    model = _model_from_reference(ref)
    with torch.no_grad():
        model.rsab3.sa.conv.weight[0, 0, 3, 3] += 1e-6
    model.train()
    x1, x2, idx = _inputs(ref)
    loss = training_loss(model, x1, x2, idx, float(ref["gamma"]))
    assert not np.isclose(float(loss.detach()), float(ref["loss"]), rtol=RTOL, atol=0)


def test_default_widths():
    assert default_widths(204) == (102, 204, 102)
    assert default_widths(6) == (16, 32, 16)
    assert default_widths(20) == (16, 32, 16)
    assert default_widths(33) == (17, 34, 17)
    assert default_widths(204, width=32) == (32, 64, 32)
    with pytest.raises(ValueError):
        default_widths(0)


def test_small_width_attention_hidden_at_least_one():
    model = HyperNet(3, 4)
    assert model.rsab1.ca.fc1.out_channels == 1
    out = model.eval()(torch.randn(1, 3, 9, 10))
    assert out.shape == (1, 8, 9, 10)
    assert HyperNet(20, 32).rsab1.ca.fc1.out_channels == 2


def test_channels_last_gives_the_same_features():
    torch.manual_seed(2)
    model = HyperNet(8, 16).double().eval()
    x = torch.randn(1, 8, 13, 17, dtype=torch.float64)
    with torch.no_grad():
        a = model(x)
        b = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 5, 9, 11), (2, 3, 4, 3)])
def test_box_mean_is_the_published_average_pooling(shape):
    """The 5x5 mean of the spatial branch equals nn.AvgPool2d(5, 1, 2) (zero padding counted), values and
    gradients, including the borders and images smaller than the window."""
    from hypernet_qgis.core.hypernet.network import BoxMean

    torch.manual_seed(4)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(*shape, dtype=torch.float64)
    ours, published = BoxMean(5)(x), torch.nn.AvgPool2d(5, stride=1, padding=2)(x)
    torch.testing.assert_close(ours, published, rtol=1e-13, atol=1e-15)
    (g_ours,) = torch.autograd.grad((ours * weight).sum(), x)
    (g_pub,) = torch.autograd.grad((published * weight).sum(), x)
    torch.testing.assert_close(g_ours, g_pub, rtol=1e-13, atol=1e-15)
