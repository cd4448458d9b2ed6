"""`tokensift compile` end to end: a checkpoint in, the memory image, registers and manifest out, each usable."""

from __future__ import annotations

import json
import re

import pytest
import torch

from tokensift import cli
from tokensift.quant.accel import Registers, decode_image, run_images
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
