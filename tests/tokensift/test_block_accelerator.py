"""``tokensift generate accelerator``: the Verilog and manifest of the whole design for a backbone's every method
(its envelope covers the package tokens and every stage), with the engines and registers it has."""

from __future__ import annotations

import json

from tokensift import cli
from tokensift.commands.block_accelerator import model_envelope


def test_generate_from_a_backbone(tmp_path, capsys):
    assert cli.main(["generate", "accelerator", "--model", "vit_mnist_patch4_28", "--device", "pynq-z2",
                     "--out", str(tmp_path), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    env = model_envelope("vit_mnist_patch4_28")
    assert (env.max_tokens, env.width, env.stages, env.patches) == (53, 64, 3, 49)
    params = manifest["parameters"]
    assert params["envelope"] == env.to_dict()
    assert params["device"] == "pynq-z2"
    assert set(params["opcodes"]) == {"PATCH_EMBED", "GEMM", "POS_EMBED", "LAYERNORM", "TOKEN_MEAN", "ATTENTION",
                                        "RESIDUAL_ADD", "GELU", "SELECT", "WRITE_LOGITS"}
    names = {r["name"] for r in params["registers"]["registers"]}
    assert {"start", "done", "cycles", "status", "method", "density", "stage_keep0"} <= names
    # the estimated resources: ECP5 and the device's family (the PYNQ-Z2's xc7), its capacity and the verdict
    from tokensift.hw.accel.resources import params_from_dict, resources

    est = manifest["estimated_resources"]
    cfg = params_from_dict({k: params[k] for k in ("envelope", "banks", "lanes", "gemm_cols", "axi")})
    assert est["families"] == {f: resources(cfg, f).as_dict(f) for f in ("ecp5", "xc7")}
    assert est["device"]["name"] == "PYNQ-Z2" and est["device"]["capacity"]["dsp"] == 220
    assert est["device"]["fits"] == all(u <= 1 for u in est["device"]["utilization"].values())
    verilog = (tmp_path / "tokensift_accel.v").read_text()
    assert "module tokensift_accel(" in verilog and "m_axi__araddr" in verilog and "s_axil__awaddr" in verilog
