"""`tokensift estimate`: whole model, one block, infeasible settings, validation, errors."""

import json
import re

import pytest

from tokensift.cli import main


def _json(capsys, *argv):
    code = main(["estimate", *argv, "--json"])
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out  # exactly one JSON object
    return code, json.loads(out)


@pytest.fixture(scope="module")
def deit_zcu102():
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["estimate", "--device", "zcu102", "--model", "deit_small_patch16_224", "--lanes", "16",
                     "--keep", "0.7", "--json"])
    assert code == 0
    return json.loads(buf.getvalue())


def test_whole_model_json(deit_zcu102):
    d = deit_zcu102
    assert d["device"] == "ZCU102" and d["clock_mhz"] == 300 and d["fits"] is True and d["problems"] == []
    assert set(d["resources"]) >= {"dsp", "bram36", "lut", "ff"}
    assert set(d["utilization"]) == {"dsp", "bram36", "uram", "lut", "ff"}
    assert d["utilization"]["dsp"] == pytest.approx(d["resources"]["dsp"] / 2520)
    assert d["latency_ms"] == pytest.approx(d["cycles"] / 300e3)
    assert len(d["per_block"]) == 12
    assert d["cycles"] == sum(b["total"] for b in d["per_block"]) + sum(d["fixed"].values())
    for key in ("dsp", "bram36", "lut", "ff"):
        assert d["resources"][key] == pytest.approx(sum(u["resources"][key] for u in d["units"].values()), abs=1)
    assert d["tokens"] == [197, 197, 197, 138, 138, 138, 97, 97, 97, 68, 68, 68]


def test_block_estimates_are_what_the_model_adds(deit_zcu102, capsys):
    d = deit_zcu102
    code, att = _json(capsys, "--block", "attention", "--n-max", "197", "--head-dim", "64", "--lanes", "16",
                      "--family", "xcup", "--n-tokens", "138", "--heads", "6")
    assert code == 0
    assert att["resources"] == d["units"]["attention"]["resources"]
    assert att["cycles"] == d["per_block"][4]["cycles"]["attention"]
    code, sel = _json(capsys, "--block", "selector", "--n-max", "197", "--dim", "384", "--lanes", "16",
                      "--device", "zcu102", "--n-tokens", "197", "--kept", "138")
    assert code == 0 and sel["family"] == "xcup"
    assert sel["resources"] == d["units"]["selector"]["resources"]
    assert sel["cycles"] == d["per_block"][3]["cycles"]["selector"]


def test_issue_block_example(capsys):
    code, out = _json(capsys, "--block", "attention", "--n-max", "100", "--head-dim", "48", "--lanes", "12",
                      "--family", "xcup")
    assert code == 0 and set(out) == {"block", "family", "params", "resources", "cycles"}
    assert out["resources"]["dsp"] >= 12 and out["cycles"] > 100 * 100 * 4
    code, ecp = _json(capsys, "--block", "selector", "--n-max", "64", "--dim", "64", "--lanes", "8", "--package",
                      "--family", "ecp5")
    assert code == 0 and set(ecp["resources"]) == {"dsp", "ebr", "lut", "ff"} and ecp["resources"]["dsp"] == 8


def test_infeasible_says_by_how_much(capsys):
    code, out = _json(capsys, "--device", "pynq-z2", "--model", "deit_small_patch16_224", "--lanes", "64",
                      "--heads-parallel", "4")
    assert code == 0 and out["fits"] is False
    need = out["resources"]["dsp"]
    assert need > 220
    assert f"needs {need} DSPs, {need - 220} more than PYNQ-Z2 has (220)" in out["problems"]
    assert all(re.match(r"^needs [\d.]+ [\w-]+( [\w-]+)?, [\d.]+ more than PYNQ-Z2 has \(\d+\)$", p)
               for p in out["problems"])
    assert main(["estimate", "--device", "pynq-z2", "--lanes", "64", "--heads-parallel", "4"]) == 0
    text = capsys.readouterr().out
    assert "does not fit on PYNQ-Z2: needs" in text


def test_readable_table(capsys):
    assert main(["estimate", "--device", "kv260", "--model", "deit_tiny_patch16_224", "--lanes", "16"]) == 0
    text = capsys.readouterr().out
    assert "cycles per encoder layer" in text and "ms at 300 MHz" in text and "fits on KV260" in text


def test_unknown_device_one_line(capsys):
    code = main(["estimate", "--device", "zcu999", "--json"])
    captured = capsys.readouterr()
    assert code == 2
    assert json.loads(captured.out)["type"] == "UnknownDeviceError"
    assert re.match(r"^tokensift estimate: error: unknown device 'zcu999'; choose one of ZCU102, ZCU104, KV260, "
                    r"PYNQ-Z2, Alveo-U250, ECP5-85F$", captured.err.strip())


def test_bad_hardware_parameters_one_line(capsys):
    code = main(["estimate", "--lanes", "24"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and re.match(r"^tokensift estimate: error: head_dim must be a multiple of lanes 24, not 64$", err)
    code = main(["estimate", "--lanes", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and re.match(r"^tokensift estimate: error: --lanes must be at least 1, not 0$", err)
    code = main(["estimate", "--block", "selector", "--dim", "30", "--lanes", "8"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and re.match(r"^tokensift estimate: error: dim must be a multiple of lanes, not dim=30 with "
                                  r"lanes=8$", err)


def test_validate_report(capsys):
    code, out = _json(capsys, "--validate", "--block", "requant")
    assert code == 0 and out["ok"] is True and out["failures"] == 0
    assert {r["family"] for r in out["rows"]} == {"xcup", "xc7", "ecp5"}
    assert set(out["summary"]["requant"]) == {"xcup", "xc7", "ecp5"}
    assert main(["estimate", "--validate", "--block", "multiplier", "--family", "xc7"]) == 0
    text = capsys.readouterr().out
    assert "cost model vs Yosys synthesis" in text and "x32x15s" in text


def test_probe_blocks_are_validation_only(capsys):
    code = main(["estimate", "--block", "memory"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and re.match(r"^tokensift estimate: error: --block memory is only compared with synthesis "
                                  r"\(--validate\); estimate one of attention, selector, requant, gemm, layernorm, gelu, "
                                  r"residual, token_mean$", err)


def test_vector_unit_estimates(capsys):
    """The streaming units: their exact DSPs and cycle formulas, and their memories on ECP5."""
    from tokensift.hw.vector.gelu import GeluUnitParams
    from tokensift.hw.vector.gelu import cycles as gelu_cycles
    from tokensift.hw.vector.token_mean import TokenMeanParams
    from tokensift.hw.vector.token_mean import cycles as mean_cycles

    code, gelu = _json(capsys, "--block", "gelu", "--lanes", "16", "--n-values", str(197 * 1536), "--family", "xcup")
    assert code == 0 and gelu["resources"]["dsp"] == 80
    assert gelu["cycles"] == gelu_cycles(GeluUnitParams(lanes=16), 197 * 1536 // 16) == 197 * 96 + 15
    code, res = _json(capsys, "--block", "residual", "--lanes", "16", "--n-values", "100", "--family", "xc7")
    assert code == 0 and res["resources"]["dsp"] == 0 and res["cycles"] == 7 + 2
    code, mean = _json(capsys, "--block", "token_mean", "--lanes", "16", "--n-tokens", "138", "--family", "ecp5")
    assert code == 0 and mean["resources"]["dsp"] == 0 and mean["params"]["channels"] == 192
    assert mean["cycles"] == mean_cycles(TokenMeanParams(lanes=16, n_max=197, c_max=192), 138, 192)
