"""The token predictors on the accelerator: their steps, and their cycles as the blocks' own cycle models."""

import pytest

from tokensift.hw.cost.layer import HwConfig, ModelCost
from tokensift.hw.cost.linear import linear_cycles
from tokensift.hw.cost.predictor import PredictorOp, predictor_ops
from tokensift.hw.vector.gelu import LATENCY as GELU_LATENCY
from tokensift.hw.vector.layernorm_cost import cycles as layernorm_cycles
from tokensift.hw.vector.token_mean import cycles as token_mean_cycles


def _cost(method, **kw):
    return ModelCost.from_name("deit_small_patch16_224", method=method, keep_ratio=0.7,
                               hw=HwConfig(lanes=16, linear_lanes=1024, linear_rows=8, **kw))


def test_dynamicvit_predictor_is_its_integer_model_step_by_step():
    cost = _cost("dynamicvit")
    st = cost.schedule().stages[0]
    ops = predictor_ops(st.selector, st.n_in, 384)
    n = st.n_in - 1
    assert [op.unit for op in ops] == ["layernorm", "linear", "gelu", "token_mean", "linear", "gelu", "linear",
                                       "gelu", "linear"]
    assert [(op.in_features, op.out_features) for op in ops if op.unit == "linear"] == [
        (384, 384), (384, 192), (192, 96), (96, 1)]
    assert all(op.tokens == n for op in ops)
    # the float model's last layer has two outputs; the integer one folds them into their difference
    assert sum(op.macs for op in ops) == st.selector.macs(st.n_in, st.n_out, 384) - n * 96
    want = (layernorm_cycles(cost.vector.layernorm, dim=384, n_tokens=n)
            + sum(linear_cycles(cost.linear, n_tokens=n, in_features=k, out_features=m)
                  for k, m in ((384, 384), (384, 192), (192, 96), (96, 1)))
            + 3 * GELU_LATENCY + token_mean_cycles(cost.vector.token_mean, n, 192))
    assert cost.stage_cycles(st)["predictor"] == want
    # the 1-channel job fills one column tile of 128 and every job waits for its first weights: 1.75x the
    # cycles of the MACs at the array's peak rate (what the cost model charged before)
    assert want > 1.5 * sum(op.macs for op in ops) / cost.linear.macs


def test_spvit_predictor_runs_each_head_then_the_head_weights():
    cost = _cost("spvit")
    st = cost.schedule().stages[0]
    ops = predictor_ops(st.selector, st.n_in, 384)
    heads, hd = 6, 64
    assert len(ops) == heads * 9 + 4
    assert ops[-4] == PredictorOp("channel_sum", st.n_in - 1, 384, heads)
    hidden = st.selector.predictor.se[0].out_features
    assert [(o.in_features, o.out_features) for o in ops[-3:] if o.unit == "linear"] == [(heads, hidden),
                                                                                        (hidden, heads)]
    n = st.n_in - 1
    pruned = st.n_in - st.n_out + 1
    # the float count: every head's two-output last layer (one in integers) and one MAC per pruned channel
    # into the package token (the selector's)
    assert sum(op.macs for op in ops) == (st.selector.macs(st.n_in, st.n_out, 384) - n * heads * hd // 4
                                          - pruned * 384)
    assert cost.vector.token_mean.c_max == hd // 2
    assert cost.stage_cycles(st)["predictor"] == cost.predictor_cycles(ops)


@pytest.mark.parametrize("method", ["evit", "asvit", "sait"])
def test_attention_scored_methods_have_no_predictor(method):
    cost = ModelCost.from_name("deit_small_patch16_224", method=method, keep_ratio=0.7, hw=HwConfig(lanes=16))
    for st in cost.schedule().stages:
        assert predictor_ops(st.selector, st.n_in, 384) == ()
        assert cost.stage_cycles(st)["predictor"] == 0
    assert cost.vector.token_mean is None and "token_mean" not in cost.units("xcup")


def test_the_token_mean_unit_is_counted_in_resources_and_the_clock():
    cost = _cost("dynamicvit")
    units = cost.units("ecp5")
    assert units["token_mean"].lut > 0
    assert cost.resources("ecp5") == sum(units.values(), type(units["linear"])())
    from tokensift.devices import get_device

    clock = cost.clock(get_device("ecp5-85f"))
    # fmax.json holds a token-mean baseline, so the ECP5 clock is measured over it too
    assert clock.source == "measured" and "token_mean" in clock.fmax


def test_an_unknown_step_is_refused():
    with pytest.raises(ValueError, match=r"^no unit runs a predictor step on 'softmax'$"):
        _cost("dynamicvit").predictor_cycles([PredictorOp("softmax", 4, 8, 8)])


def test_dynamicvit_steps_are_the_integer_predictors_layers():
    """The costed GEMM jobs are the integer model's own layers, shape for shape and in order."""
    import torch

    from tokensift.quant.integer_model import IntegerViT
    from tokensift.sw import create_model

    torch.manual_seed(0)
    model = create_model("vit_mnist_patch4_28", method="dynamicvit", keep_ratio=0.7).eval()
    iv = IntegerViT.from_float(model, [torch.randn(8, 1, 28, 28)], num_batches=1)
    dim = model.blocks[0].attn.qkv.in_features
    stages = [b.selector for b in iv.blocks if b.selector is not None]
    sels = [sel for _, sel in sorted(model.selectors.items(), key=lambda kv: int(kv[0]))]
    assert len(stages) == len(sels) > 0
    for stage, sel in zip(stages, sels, strict=True):
        p = stage.predictor
        layers = [p.fc, p.fc1, p.fc2, p.out]
        ops = [op for op in predictor_ops(sel, 20, dim) if op.unit == "linear"]
        assert [(op.in_features, op.out_features) for op in ops] == [
            (lin.in_features, lin.out_features) for lin in layers]
        norm = [op for op in predictor_ops(sel, 20, dim) if op.unit == "layernorm"]
        assert [op.in_features for op in norm] == [dim]
