"""tokensift.quant: the integer arithmetic contract and the bit-exact reference of the hardware."""

from tokensift.quant.fixed import (
    INT8,
    INT32,
    UINT8,
    FixedFormat,
    Overflow,
    OverflowCounter,
    Rounding,
    requantize,
    round_shift,
)

__all__ = [
    "FixedFormat",
    "Rounding",
    "Overflow",
    "OverflowCounter",
    "round_shift",
    "requantize",
    "INT8",
    "UINT8",
    "INT32",
]

# -- quantization parameters and the integer kernels of the encoder block (NumPy only). The PyTorch
# fake-quant modules live in ``tokensift.quant.fake`` and the end-to-end integer model in
# ``tokensift.quant.integer_model`` (imported on demand: they pull in torch and tokensift.sw).
from tokensift.quant.calibrate import MinMaxObserver, PercentileObserver, calibrate  # noqa: E402
from tokensift.quant.gelu import GeluParams, gelu_int  # noqa: E402
from tokensift.quant.gemm import IntLinear, matmul_int, requantize_per_channel  # noqa: E402
from tokensift.quant.intmath import isqrt  # noqa: E402
from tokensift.quant.layernorm import LayerNormParams, layernorm_int  # noqa: E402
from tokensift.quant.qparams import (  # noqa: E402
    quantize_bias,
    quantize_multiplier,
    quantize_tensor,
    quantize_weight_per_channel,
    symmetric_scale,
)

__all__ += [
    "quantize_multiplier",
    "symmetric_scale",
    "quantize_tensor",
    "quantize_weight_per_channel",
    "quantize_bias",
    "matmul_int",
    "requantize_per_channel",
    "IntLinear",
    "GeluParams",
    "gelu_int",
    "LayerNormParams",
    "layernorm_int",
    "isqrt",
    "MinMaxObserver",
    "PercentileObserver",
    "calibrate",
]
