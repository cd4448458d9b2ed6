"""Fake-quant PyTorch modules for quantization-aware fine-tuning, consistent with the integer kernels.

:class:`QuantLinear` (and :class:`QuantConv2d` for the patch embedding) replace ``nn.Linear`` (``nn.Conv2d``)
keeping the parameter names (``weight``, ``bias``), so state dicts stay loadable, and compute with the
values the integer kernels hold:

* input: per-tensor symmetric ``bits``-bit codes at the calibrated ``act_scale``,
  ``q = clamp(floor(x / act_scale + 1/2), -2**(bits-1), 2**(bits-1) - 1)`` (round half up, saturate),
  exactly :func:`tokensift.quant.qparams.quantize_tensor`;
* weight: per-output-channel symmetric codes from the current weights, exactly
  :func:`tokensift.quant.qparams.quantize_weight_per_channel`;
* bias: accumulator codes at ``act_scale * weight_scale[c]``, exactly :func:`~tokensift.quant.qparams.quantize_bias`.

Rounding is evaluated in float64, like the NumPy reference, so the integer codes agree bit for bit.
Gradients use the straight-through estimator: identity for values inside the clamping range, zero for
saturated inputs.

:func:`quantize_model` wraps every ``nn.Linear`` and ``nn.Conv2d`` of a model (backbone, head and token
selectors alike; a timm-style patch embedding as a whole, :class:`QuantPatchEmbed`), calibrates the input
scales on a few batches and returns the fake-quant model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokensift.checks import check_int
from tokensift.quant.calibrate import Observer, calibrate

__all__ = ["fake_quant", "fake_quant_weight", "QuantLinear", "QuantConv2d", "QuantPatchEmbed", "quantize_model",
           "quant_modules"]


def _check_bits(bits: object) -> int:
    return check_int("bits", bits, low=2, high=16, numpy=False, show="repr")


def fake_quant(x: Tensor, scale: Tensor | float, bits: int = 8) -> Tensor:
    """``scale * clamp(floor(x / scale + 1/2))`` with a clipped straight-through gradient.

    ``scale`` is a positive number or a tensor broadcastable to ``x``.
    """
    bits = _check_bits(bits)
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    s = torch.as_tensor(scale, dtype=torch.float64, device=x.device)
    if not bool(torch.all(s > 0)):
        raise ValueError("fake-quant scales must be positive; calibrate the model first")
    ratio = x.detach().double() / s
    q = torch.floor(ratio + 0.5).clamp(qmin, qmax)
    value = (q * s).to(x.dtype)
    inside = ((ratio >= qmin - 0.5) & (ratio < qmax + 0.5)).to(x.dtype)
    return value + (x - x.detach()) * inside


def fake_quant_weight(weight: Tensor, bits: int = 8) -> tuple[Tensor, Tensor]:
    """Per-output-channel (axis 0) symmetric fake quantization; returns ``(fake weight, scales float64)``."""
    bits = _check_bits(bits)
    qmax = (1 << (bits - 1)) - 1
    absmax = weight.detach().double().abs().reshape(weight.shape[0], -1).amax(dim=1)
    scales = torch.where(absmax > 0, absmax / qmax, torch.ones_like(absmax))
    shape = (-1,) + (1,) * (weight.ndim - 1)
    return fake_quant(weight, scales.reshape(shape), bits), scales


def _fake_bias(bias: Tensor | None, in_scale: Tensor, w_scales: Tensor) -> Tensor | None:
    if bias is None:
        return None
    s = in_scale.double() * w_scales
    q = torch.floor(bias.detach().double() / s + 0.5).clamp(-(1 << 31), (1 << 31) - 1)
    return (q * s).to(bias.dtype) + (bias - bias.detach())


class _QuantMixin:
    """State shared by the fake-quant layers: ``act_scale`` buffer, widths and an on/off switch."""

    def _init_quant(self, bits: int, w_bits: int) -> None:
        self.bits = _check_bits(bits)
        self.w_bits = _check_bits(w_bits)
        self.register_buffer("act_scale", torch.zeros((), dtype=torch.float64))
        self.quant_enabled = True

    @property
    def calibrated(self) -> bool:
        return bool(self.act_scale > 0)

    def _quant_params(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        if not self.calibrated:
            raise RuntimeError(f"{type(self).__name__} has no activation scale; run quantize_model (calibration) first")
        xq = fake_quant(x, self.act_scale, self.bits)
        wq, ws = fake_quant_weight(self.weight, self.w_bits)
        return xq, wq, _fake_bias(self.bias, self.act_scale, ws)


class QuantLinear(_QuantMixin, nn.Linear):
    """``nn.Linear`` on fake-quantized inputs, weights and bias (see the module docstring)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, bits: int = 8,
                 w_bits: int = 8, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._init_quant(bits, w_bits)

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, bits: int = 8, w_bits: int = 8) -> QuantLinear:
        """A QuantLinear that shares ``linear``'s parameters."""
        q = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, bits=bits, w_bits=w_bits,
                device=linear.weight.device, dtype=linear.weight.dtype)
        q.weight = linear.weight
        q.bias = linear.bias
        q.train(linear.training)
        return q

    def forward(self, x: Tensor) -> Tensor:
        if not self.quant_enabled:
            return super().forward(x)
        xq, wq, bq = self._quant_params(x)
        return F.linear(xq, wq, bq)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bits={self.bits}, w_bits={self.w_bits}, act_scale={float(self.act_scale):.4g}"


class QuantConv2d(_QuantMixin, nn.Conv2d):
    """``nn.Conv2d`` on fake-quantized inputs, per-output-channel weights and bias (the patch embedding)."""

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, *, bits: int = 8, w_bits: int = 8) -> QuantConv2d:
        """A QuantConv2d that shares ``conv``'s parameters."""
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                padding_mode=conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype)
        q._init_quant(bits, w_bits)
        q.weight = conv.weight
        q.bias = conv.bias
        q.train(conv.training)
        return q

    def forward(self, x: Tensor) -> Tensor:
        if not self.quant_enabled:
            return super().forward(x)
        xq, wq, bq = self._quant_params(x)
        return self._conv_forward(xq, wq, bq)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bits={self.bits}, w_bits={self.w_bits}, act_scale={float(self.act_scale):.4g}"


def _is_patch_embed(module: nn.Module) -> bool:
    proj = getattr(module, "proj", None)
    # a convolutional stem (LV-ViT) feeds ``proj`` from its own convolutions, not from the image: its layers
    # are wrapped one by one instead
    return (isinstance(proj, nn.Conv2d) and not isinstance(proj, QuantConv2d) and hasattr(module, "patch_size")
            and proj.kernel_size == proj.stride and proj.padding == (0, 0) and proj.groups == 1
            and proj.dilation == (1, 1) and proj.in_channels == getattr(module, "in_chans", proj.in_channels))


class QuantPatchEmbed(nn.Module):
    """A timm-style patch embedding (``proj``: a convolution with stride = kernel size, then ``norm``) on
    fake-quantized inputs and weights.

    Patch embeddings often call ``F.linear`` on ``proj.weight`` directly instead of calling ``proj`` (it is
    faster on CPU), so wrapping ``proj`` alone would not quantize them; this module replaces the whole
    embedding, keeps the state-dict keys (``proj.weight``, ``proj.bias``, ``act_scale`` under ``proj``) and
    computes the same linear map of each flattened patch.
    """

    _COPIED = ("img_size", "patch_size", "in_chans", "grid_size", "num_patches")

    def __init__(self, embed: nn.Module, *, bits: int = 8, w_bits: int = 8):
        super().__init__()
        if not _is_patch_embed(embed):
            raise TypeError(f"expected a patch embedding with a stride = kernel size 'proj' convolution, "
                            f"not {type(embed).__name__}")
        for attr in self._COPIED:
            if hasattr(embed, attr):
                setattr(self, attr, getattr(embed, attr))
        self.proj = QuantConv2d.from_conv(embed.proj, bits=bits, w_bits=w_bits)
        self.norm = getattr(embed, "norm", None) or nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        proj = self.proj
        B, C, H, W = x.shape
        ph, pw = proj.kernel_size
        if C != proj.in_channels or H % ph or W % pw:
            raise ValueError(f"input images must have {proj.in_channels} channels and sides that are multiples "
                             f"of {ph}x{pw}, not shape {tuple(x.shape)}")
        gh, gw = H // ph, W // pw
        patches = x.reshape(B, C, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5).reshape(B, gh * gw, C * ph * pw)
        weight, bias = proj.weight, proj.bias
        if proj.quant_enabled:
            patches, weight, bias = proj._quant_params(patches)
        return self.norm(F.linear(patches, weight.reshape(proj.out_channels, -1), bias))


def quant_modules(model: nn.Module) -> dict[str, QuantLinear | QuantConv2d]:
    """Name -> fake-quant layer, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, (QuantLinear, QuantConv2d))}


def _swap_layers(model: nn.Module, bits: int, w_bits: int) -> None:
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, (QuantLinear, QuantConv2d, QuantPatchEmbed)):
                continue
            if _is_patch_embed(child):
                setattr(parent, child_name, QuantPatchEmbed(child, bits=bits, w_bits=w_bits))
            elif type(child) is nn.Linear:
                setattr(parent, child_name, QuantLinear.from_linear(child, bits=bits, w_bits=w_bits))
            elif type(child) is nn.Conv2d:
                setattr(parent, child_name, QuantConv2d.from_conv(child, bits=bits, w_bits=w_bits))


def quantize_model(model: nn.Module, calib_loader: Iterable, observer: str | Callable[[], Observer] = "minmax", *,
                   num_batches: int = 4, bits: int = 8, w_bits: int = 8, inplace: bool = False) -> nn.Module:
    """Wrap every ``nn.Linear``/``nn.Conv2d`` of ``model`` in fake-quant layers and calibrate their inputs.

    Args:
        model: any ``nn.Module`` (every model and method of :mod:`tokensift.sw`).
        calib_loader: iterable of image batches or ``(images, labels)`` pairs.
        observer: ``"minmax"``, ``"percentile"`` or an :class:`~tokensift.quant.calibrate.Observer` factory.
        num_batches: calibration batches.
        bits, w_bits: activation and weight widths (2..16).
        inplace: modify ``model`` instead of a deep copy.

    Returns:
        The fake-quant model (in the training mode ``model`` was in), ready to evaluate or fine-tune.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    bits, w_bits = _check_bits(bits), _check_bits(w_bits)
    if not inplace:
        model = copy.deepcopy(model)
    _swap_layers(model, bits, w_bits)
    layers = quant_modules(model)
    if not layers:
        raise ValueError("model has no nn.Linear or nn.Conv2d layer to quantize")
    # a patch embedding's convolution is observed through the embedding's input (the same values)
    sites = {name: (m, "input") for name, m in layers.items()}
    for name, m in model.named_modules():
        if isinstance(m, QuantPatchEmbed):
            sites[f"{name}.proj" if name else "proj"] = (m, "input")
    for layer in layers.values():
        layer.quant_enabled = False
    try:
        scales = calibrate(model, calib_loader, sites, observer=observer, num_batches=num_batches, bits=bits)
    finally:
        for layer in layers.values():
            layer.quant_enabled = True
    for name, layer in layers.items():
        layer.act_scale.fill_(scales[name])
    return model
