"""`tokensift compile` end to end: a checkpoint in, the memory image, registers and manifest out, each usable."""

from __future__ import annotations

import json
import re

import pytest
import torch

from tokensift import cli
from tokensift.quant.accel import GemmShape, Registers, decode_image, run_images
from tokensift.quant.stages.sait import mass_code
from tokensift.sw import create_model
from tokensift.sw.checkpoint import save_checkpoint


def _checkpoint(path, method: str, keep: float | None, **meta):
    torch.manual_seed(0)
    return save_checkpoint(path, create_model("vit_mnist_patch4_28", method=method, keep_ratio=keep), **meta)


def test_compile_writes_an_image_that_runs(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "dvit.pth", "dynamicvit", 0.7)
    out = tmp_path / "build"
    code = cli.main(["compile", "--checkpoint", str(ckpt), "--out", str(out), "--calib-images", "20", "--verify", "2",
                     "--json"])
    text, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(text)
    assert text.count("\n") == 1
    assert summary["method"] == "dynamicvit" and summary["model"] == "vit_mnist_patch4_28"
    assert summary["verified"]["bit_exact"] is True and summary["verified"]["images"] == 2
    image = (out / "image.bin").read_bytes()
    mem = decode_image(image)
    manifest = json.loads((out / "manifest.json").read_text())
    registers = Registers.from_json((out / "registers.json").read_text())
    assert manifest["checksum"] == f"{mem.checksum:#010x}" == summary["checksum"]
    assert manifest["bytes"] == len(image) and manifest["ops"] == len(mem.program)
    assert manifest["envelope"] == mem.envelope.to_dict() and mem.envelope.stages == 3
    assert registers.method == "dynamicvit" and registers.rule == ("topk",) * 3
    # the default engine shape, in the header and the manifest
    assert mem.gemm == GemmShape(cols=64, stream_bytes=8)
    assert manifest["gemm"] == summary["gemm"] == {"cols": 64, "stream_bytes": 8, "acc_bits": 32,
                                                    "multiplier_bits": 16, "shift_bits": 6, "record_bytes": 8}
    assert manifest["version"] == 2 and manifest["weight_streams"]["count"] == 1 + 4 * 6 + 1 + 4 * 3
    assert manifest["registers"] == registers.to_json() == summary["registers"]
    # the files alone run an image: what a host (or the RTL testbench) does with them
    from tokensift.sw.data import load_mnist

    images = torch.stack([load_mnist()[1][i][0] for i in range(2)])
    logits, results = run_images(image, registers, images)
    assert logits.argmax(axis=1).tolist() == summary["verified"]["predictions"]
    assert [r.trace[-1]["tokens"] for r in results] == summary["verified"]["tokens_at_head"]


def test_compile_sets_registers_without_changing_the_image(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "sait.pth", "sait", 0.7)
    outs = []
    for name, extra in (("a", []), ("b", ["--registers", "density=0.5"]), ("c", ["--registers", "method=dense"])):
        out = tmp_path / name
        code = cli.main(["compile", "--checkpoint", str(ckpt), "--out", str(out), "--calib-images", "20",
                         "--verify", "1", *extra])
        text, err = capsys.readouterr()
        assert code == 0, err
        assert "bit-exact" in text and "image.bin" in text
        outs.append(out)
    images = [(o / "image.bin").read_bytes() for o in outs]
    assert images[0] == images[1] == images[2]
    regs = [Registers.from_json((o / "registers.json").read_text()) for o in outs]
    assert (regs[0].density, regs[1].density, regs[2].method) == (mass_code(0.7), mass_code(0.5), "dense")
    assert regs[1].replace(density=regs[0].density) == regs[0]


def test_a_plain_state_dict_needs_the_model_named(tmp_path, capsys):
    torch.manual_seed(0)
    state = create_model("vit_mnist_patch4_28").state_dict()
    path = tmp_path / "plain.pth"
    torch.save(state, path)
    code = cli.main(["compile", "--checkpoint", str(path), "--out", str(tmp_path / "o")])
    assert code == 2
    assert capsys.readouterr().err.strip() == (f"tokensift compile: error: checkpoint {str(path)!r} does not name its "
                                               "model; pass --model")
    code = cli.main(["compile", "--checkpoint", str(path), "--out", str(tmp_path / "o"), "--model",
                     "vit_mnist_patch4_28", "--calib-images", "10", "--verify", "1", "--json"])
    text, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(text)["method"] == "dense" and json.loads(text)["verified"]["bit_exact"] is True


@pytest.mark.parametrize("registers, message", [
    (["keep=3"], r"--registers: keep, threshold and rule need one entry per stage each, not 1, 3 and 3"),
])
def test_register_settings_the_model_cannot_take(tmp_path, capsys, registers, message):
    ckpt = _checkpoint(tmp_path / "dvit.pth", "dynamicvit", 0.7)
    code = cli.main(["compile", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--calib-images", "10",
                     "--verify", "0", "--registers", *registers])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert re.fullmatch(f"tokensift compile: error: {message}\n", err), err
    assert not (tmp_path / "o" / "image.bin").exists()


def test_register_settings_the_model_cannot_take_are_found_before_calibration(tmp_path, capsys, monkeypatch):
    def tripped(*args, **kwargs):
        raise AssertionError("calibration started before the bad register setting was found")

    monkeypatch.setattr("tokensift.quant.integer_model.IntegerViT.from_float", tripped)
    ckpt = _checkpoint(tmp_path / "dvit.pth", "dynamicvit", 0.7)
    for registers, message in ((["method=evit"], r"the image runs dynamicvit or dense, not evit"),
                               (["rule=mass,mass,mass"], r"rule 'mass' is not a rule of dynamicvit \(its stages run "
                                                         r"topk\)")):
        code = cli.main(["compile", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--registers",
                         *registers])
        assert code == 2
        assert re.fullmatch(f"tokensift compile: error: --registers: {message}\n", capsys.readouterr().err)


def test_compile_lays_the_weights_out_for_the_engine_shape_given(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "dense.pth", "none", None)
    out = tmp_path / "build"
    code = cli.main(["compile", "--checkpoint", str(ckpt), "--out", str(out), "--calib-images", "10", "--verify", "1",
                     "--gemm-cols", "32", "--stream-bytes", "16"])
    text, err = capsys.readouterr()
    assert code == 0, err
    assert re.search(r"weights: 26 GEMM weight streams, [\d,]+ bytes, for 32-column tiles in 16-byte beats \(16-byte "
                     r"channel records\)", text), text
    assert "bit-exact" in text
    mem = decode_image((out / "image.bin").read_bytes())
    manifest = json.loads((out / "manifest.json").read_text())
    assert mem.gemm == GemmShape(cols=32, stream_bytes=16)
    assert manifest["gemm"]["cols"] == 32 and manifest["gemm"]["stream_bytes"] == 16
    assert manifest["weight_streams"]["bytes"] == sum(mem.gemm.stream_length(i.m, i.k) for i in mem.program
                                                      if i.opcode.name in ("PATCH_EMBED", "GEMM"))


@pytest.mark.parametrize("options, message", [
    (["--gemm-cols", "12"], r"--gemm-cols must be a multiple of --stream-bytes \(8\) from 8 to 1024 \(a weight row is "
                            r"whole beats\), not 12"),
    (["--gemm-cols", "0"], r"--gemm-cols must be a multiple of --stream-bytes \(8\) from 8 to 1024 .*, not 0"),
    (["--gemm-cols", "2048"], r"--gemm-cols must be a multiple of --stream-bytes \(8\) from 8 to 1024 .*, not 2048"),
    (["--gemm-cols", "8", "--stream-bytes", "16"], r"--gemm-cols must be a multiple of --stream-bytes \(16\) from 16 "
                                                   r"to 1024 .*, not 8"),
    (["--stream-bytes", "12"], r"--stream-bytes must be a power of two from 1 to 128 \(the AXI data width in bytes\), "
                               r"not 12"),
    (["--stream-bytes", "0"], r"--stream-bytes must be a power of two from 1 to 128 .*, not 0"),
    (["--stream-bytes", "256"], r"--stream-bytes must be a power of two from 1 to 128 .*, not 256"),
    (["--gemm-cols", "x"], r"argument --gemm-cols: invalid int value: 'x'"),
])
def test_engine_shapes_the_weights_cannot_take_are_found_before_anything_is_read(tmp_path, capsys, monkeypatch,
                                                                                  options, message):
    def tripped(*args, **kwargs):
        raise AssertionError("the checkpoint was read before the bad engine shape was found")

    monkeypatch.setattr("tokensift.sw.checkpoint.read_checkpoint", tripped)
    code = cli.main(["compile", "--checkpoint", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "o"),
                     *options])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert re.fullmatch(f"tokensift compile: error: {message}\n", err), err
