"""The CLI contract: subcommands listed, one JSON object with --json, one-line errors."""

import json
import subprocess
import sys

from tokensift import cli


def run_cli(*args):
    proc = subprocess.run([sys.executable, "-m", "tokensift", *args], capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def test_help_lists_every_subcommand():
    code, out, _ = run_cli("--help")
    assert code == 0
    for name in ["doctor", "flops", "generate", "simulate", "estimate", "co-opt", "train", "bench", "demo"]:
        assert name in out


def test_doctor_json_reports_versions():
    code, out, _ = run_cli("doctor", "--json")
    data = json.loads(out)
    assert code == 0 and data["ok"] and data["missing"] == []
    for key in ["python", "torch", "amaranth", "cocotb", "verilator", "yosys"]:
        assert data[key], key
    assert out.count("\n") == 1  # exactly one JSON object on stdout
    assert data["train on"] == "cpu (this torch sees no CUDA GPU)"  # the CPU build CI installs


def test_doctor_names_the_gpus_training_would_use(monkeypatch):
    from tokensift.commands.doctor import training_devices

    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 8)
    monkeypatch.setattr("torch.cuda.get_device_name", lambda i: "NVIDIA H100")
    assert training_devices() == "cuda x 8 (NVIDIA H100); torchrun --nproc-per-node 8"


def test_doctor_names_what_is_missing(monkeypatch, capsys):
    from tokensift import toolchain

    real = toolchain.versions

    monkeypatch.setattr(toolchain, "versions", lambda: {**real(), "verilator": None})
    code = cli.main(["doctor", "--json"])
    captured = capsys.readouterr()
    assert code == 1
    assert json.loads(captured.out)["missing"] == ["verilator"]
    assert "missing verilator; run `make install`" in captured.err


def test_generate_writes_verilog_and_manifest(tmp_path):
    code, out, _ = run_cli("generate", "requant", "--shift", "12", "--out", str(tmp_path), "--json")
    assert code == 0
    manifest = json.loads(out)
    assert manifest["parameters"]["shift"] == 12
    assert {p["name"] for p in manifest["ports"]} >= {"i_stream__payload", "o_stream__valid", "overflows"}
    assert manifest["streams"][0] == {"name": "i_stream", "direction": "input",
                                      "payload": {"width": 32, "signed": True},
                                      "always_valid": False, "always_ready": False}
    assert "module tokensift_requant" in (tmp_path / "tokensift_requant.v").read_text()
    assert json.loads((tmp_path / "tokensift_requant.json").read_text())["toplevel"] == "tokensift_requant"


def test_user_error_is_one_line_with_json(tmp_path):
    code, out, err = run_cli("generate", "requant", "--shift", "99", "--out", str(tmp_path), "--json")
    assert code == 2
    assert err.strip() == "tokensift generate: error: shift must be an integer between 0 and 62, not 99"
    assert json.loads(out) == {"error": "shift must be an integer between 0 and 62, not 99", "type": "ValueError"}


def test_bench_runs_scripts_and_reports_status(monkeypatch, tmp_path, capsys):
    from tokensift.commands import bench

    (tmp_path / "bench_good.py").write_text("print('ratio 1.00')\n")
    (tmp_path / "bench_bad.py").write_text("raise SystemExit(3)\n")
    monkeypatch.setattr(bench, "bench_dir", lambda: tmp_path)
    assert cli.main(["bench", "--list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"benchmarks": ["bad", "good"]}
    assert cli.main(["bench", "good", "bad", "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == {"returncodes": {"good": 0, "bad": 3}, "ok": False}
    assert cli.main(["bench", "nope"]) == 2
    assert "unknown benchmark 'nope'; known: bad, good" in capsys.readouterr().err
