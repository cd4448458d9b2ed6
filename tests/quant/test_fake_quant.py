"""Fake-quant modules: bit-exact codes against the NumPy reference, straight-through gradients, every sw model."""

import numpy as np
import pytest
import torch
from torch import nn

from tokensift.quant.fake import (
    QuantConv2d,
    QuantLinear,
    QuantPatchEmbed,
    _fake_bias,
    fake_quant,
    fake_quant_weight,
    quant_modules,
    quantize_model,
)
from tokensift.quant.gemm import IntLinear
from tokensift.quant.qparams import quantize_bias, quantize_tensor, quantize_weight_per_channel
from tokensift.sw import create_model, list_models
from tokensift.sw.methods import list_methods

torch.set_num_threads(1)


class TestFakeQuant:
    def test_codes_match_the_numpy_reference(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1000, generator=g) * 3
        s = 0.0173
        fq = fake_quant(x.double(), s)
        codes = quantize_tensor(x.double().numpy(), s)
        assert torch.equal(fq, torch.from_numpy(codes * s))

    def test_float32_inputs_round_in_float64(self):
        g = torch.Generator().manual_seed(1)
        x = torch.randn(5000, generator=g)
        s = float(x.abs().max()) / 127
        codes = quantize_tensor(x.numpy().astype(np.float64), s)
        assert torch.equal(fake_quant(x, s), torch.from_numpy(codes * s).float())

    def test_ties_round_half_up_and_saturate(self):
        x = torch.tensor([0.125, -0.125, 0.375, -0.375, 100.0, -100.0])
        assert (fake_quant(x, 0.25) / 0.25).tolist() == [1.0, 0.0, 2.0, -1.0, 127.0, -128.0]

    def test_straight_through_gradient(self):
        x = torch.tensor([0.3, -0.7, 40.0, -40.0, 31.7], requires_grad=True)
        fake_quant(x, 0.25).sum().backward()
        # inside [-128.5, 127.5) steps the gradient is 1; saturated inputs get 0
        assert x.grad.tolist() == [1.0, 1.0, 0.0, 0.0, 1.0]

    def test_weight_codes_match(self):
        g = torch.Generator().manual_seed(2)
        w = torch.randn(16, 9, generator=g)
        fw, scales = fake_quant_weight(w)
        q, s = quantize_weight_per_channel(w.double().numpy())
        assert np.array_equal(scales.numpy(), s)
        assert torch.equal(fw, torch.from_numpy(q * s[:, None]).float())

    @pytest.mark.parametrize("bits, error, message", [
        (1, ValueError, r"^bits must be between 2 and 16, not 1$"),
        (8.0, TypeError, r"^bits must be an integer, not 8\.0$"),
    ])
    def test_rejects_bits(self, bits, error, message):
        with pytest.raises(error, match=message):
            fake_quant(torch.ones(2), 1.0, bits=bits)

    def test_rejects_scale(self):
        with pytest.raises(ValueError, match=r"^fake-quant scales must be positive; calibrate the model first$"):
            fake_quant(torch.ones(2), 0.0)


def calibrated_linear(seed=0, n_in=32, n_out=12):
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(n_in, n_out)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n_out, n_in, generator=g) * 0.2)
        lin.bias.copy_(torch.randn(n_out, generator=g))
    x = torch.randn(64, n_in, generator=g) * 2
    q = quantize_model(nn.Sequential(lin), [x], num_batches=1)[0]
    return q, x


class TestQuantLinear:
    def test_same_codes_as_the_integer_layer(self):
        q, x = calibrated_linear()
        s_x = float(q.act_scale)
        ref = IntLinear.from_float(q.weight.detach().double().numpy(), q.bias.detach().double().numpy(),
                                   in_scale=s_x, out_scale=1.0)
        _, w_scales = fake_quant_weight(q.weight)
        assert np.array_equal(w_scales.numpy(), ref.weight_scale)
        xq = ref.quantize_input(x.double().numpy())
        acc = ref.accumulate(xq)
        # the fake-quant output is the integer accumulator times s_x s_w, up to float32 arithmetic:
        # each product of two float32 values (relative error 2**-24 each for x^ and w^, and one for the
        # product) is summed in float32 with K + 1 terms, so |out - acc s_x s_w| <= (K + 4) 2**-24 sum |terms|
        with torch.no_grad():
            out = q(x).double().numpy()
        real = acc * (s_x * ref.weight_scale)
        terms = np.abs(xq * s_x) @ np.abs(ref.weight * ref.weight_scale[:, None]).T + np.abs(ref.bias * s_x * ref.weight_scale)
        assert np.all(np.abs(out - real) <= (32 + 4) * 2.0**-24 * terms)

    def test_bias_codes(self):
        q, _ = calibrated_linear(1)
        _, ws = fake_quant_weight(q.weight)
        codes = quantize_bias(q.bias.detach().double().numpy(), float(q.act_scale), ws.numpy())
        fb = _fake_bias(q.bias, q.act_scale, ws)
        assert torch.equal(fb, torch.from_numpy(codes * float(q.act_scale) * ws.numpy()).float())

    def test_shares_parameters_and_keeps_state_dict_keys(self):
        lin = nn.Linear(4, 3)
        q = QuantLinear.from_linear(lin)
        assert q.weight is lin.weight and q.bias is lin.bias
        assert set(q.state_dict()) == {"weight", "bias", "act_scale"}
        assert isinstance(q, nn.Linear)

    def test_uncalibrated(self):
        q = QuantLinear(4, 3)
        with pytest.raises(RuntimeError, match=r"^QuantLinear has no activation scale; run quantize_model "
                                               r"\(calibration\) first$"):
            q(torch.ones(1, 4))

    def test_disabled_is_the_float_layer(self):
        q, x = calibrated_linear(2)
        q.quant_enabled = False
        assert torch.equal(q(x), nn.functional.linear(x, q.weight, q.bias))

    def test_gradients_reach_weights_and_inputs(self):
        q, x = calibrated_linear(3)
        x = x.clone().requires_grad_(True)
        q(x).square().sum().backward()
        assert q.weight.grad is not None and torch.all(torch.isfinite(q.weight.grad))
        assert float(q.weight.grad.abs().sum()) > 0 and float(x.grad.abs().sum()) > 0


class TestQuantConv:
    def test_plain_conv_is_wrapped(self):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
        x = torch.randn(3, 2, 5, 5)
        q = quantize_model(model, [x], num_batches=1)
        assert isinstance(q[0], QuantConv2d) and isinstance(q[2], QuantLinear)
        with torch.no_grad():
            xq = fake_quant(x, q[0].act_scale)
            wq, _ = fake_quant_weight(q[0].weight)
            ref = nn.functional.conv2d(xq, wq, None, padding=1)
            bias_free = q[0]._conv_forward(xq, wq, None)
        assert torch.equal(ref, bias_free)

    def test_patch_embedding_matches_a_linear_map(self):
        model = create_model("vit_mnist_patch4_28")
        x = torch.randn(2, 1, 28, 28)
        q = quantize_model(model, [x], num_batches=1)
        pe = q.patch_embed
        assert isinstance(pe, QuantPatchEmbed) and isinstance(pe.proj, QuantConv2d)
        assert pe.num_patches == 49
        # observed scale: the images themselves
        assert float(pe.proj.act_scale) == pytest.approx(float(x.abs().max()) / 127)
        with torch.no_grad():
            xq = fake_quant(x, pe.proj.act_scale)
            wq, ws = fake_quant_weight(pe.proj.weight)
            bq = _fake_bias(pe.proj.bias, pe.proj.act_scale, ws)
            conv = nn.functional.conv2d(xq, wq, bq, stride=4).flatten(2).transpose(1, 2)
            terms = nn.functional.conv2d(xq.abs(), wq.abs(), bq.abs(), stride=4).flatten(2).transpose(1, 2)
            mine = pe(x)
        # same float32 products summed in two orders (16 terms + bias): each sum is within 17 * 2**-24 of
        # the exact value, relative to the sum of magnitudes
        assert torch.all((mine - conv).abs() <= 2 * 17 * 2.0**-24 * terms)

    def test_rejects_wrong_images(self):
        q = quantize_model(create_model("vit_mnist_patch4_28"), [torch.randn(1, 1, 28, 28)], num_batches=1)
        with pytest.raises(ValueError, match=r"^input images must have 1 channels and sides that are multiples "
                                             r"of 4x4, not shape \(1, 2, 28, 28\)$"):
            q.patch_embed(torch.randn(1, 2, 28, 28))


def small_variant(name):
    """Every registered architecture, shrunk (4 blocks, 64 pixels for the DeiTs) so the sweep stays fast."""
    if "mnist" in name:
        return {}
    return dict(img_size=64, depth=4, prune_locs=(1, 2, 3))


@pytest.mark.parametrize("method", list_methods())
@pytest.mark.parametrize("name", list_models())
def test_every_model_and_method(name, method):
    torch.manual_seed(0)
    model = create_model(name, method=method, **small_variant(name)).eval()
    cfg = model.config
    x = torch.randn(3, cfg.in_chans, cfg.img_size, cfg.img_size)
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    q = quantize_model(model, [x[:2]], observer="percentile", num_batches=1)
    layers = quant_modules(q)
    # every Linear is wrapped, and the patch embedding's convolution
    assert sum(isinstance(m, QuantLinear) for m in layers.values()) == n_linear
    assert not any(type(m) is nn.Linear for m in q.modules())
    assert all(m.calibrated for m in layers.values())
    # original untouched, state dict keys preserved (plus one act_scale per layer)
    assert not any(isinstance(m, QuantLinear) for m in model.modules())
    extra = set(q.state_dict()) - set(model.state_dict())
    assert extra == {f"{n}.act_scale" for n in layers}
    q.load_state_dict(q.state_dict())
    with torch.no_grad():
        ref = model(x)
        out = q(x)
        for m in layers.values():
            m.quant_enabled = False
        transparent = q(x)
    assert torch.isfinite(out).all()
    assert torch.equal(transparent, ref)  # with quantization off the wrapped model is the float model
    assert not torch.equal(out, ref)  # and with it on, the values really are quantized


def test_error_shrinks_with_more_bits():
    torch.manual_seed(0)
    model = create_model("vit_mnist_patch4_28").eval()
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        ref = model(x)
        errs = [float((quantize_model(model, [x], bits=b, w_bits=b, num_batches=1)(x) - ref).abs().max())
                for b in (4, 8, 12)]
    assert errs[0] > errs[1] > errs[2]


def test_quantization_aware_training_step():
    torch.manual_seed(0)
    model = create_model("vit_mnist_patch4_28", method="evit", keep_ratio=0.7)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    q = quantize_model(model, [x], num_batches=1)
    assert q.training
    opt = torch.optim.SGD(q.parameters(), lr=0.1)
    before = q.head.weight.detach().clone()
    loss = nn.functional.cross_entropy(q(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and not torch.equal(q.head.weight, before)


def test_quantize_model_rejects():
    with pytest.raises(TypeError, match=r"^model must be a torch\.nn\.Module, not int$"):
        quantize_model(3, [])
    with pytest.raises(ValueError, match=r"^model has no nn\.Linear or nn\.Conv2d layer to quantize$"):
        quantize_model(nn.ReLU(), [torch.ones(1)])
    with pytest.raises(ValueError, match=r"^bits must be between 2 and 16, not 17$"):
        quantize_model(nn.Linear(2, 2), [torch.ones(1, 2)], bits=17)
