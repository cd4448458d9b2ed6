"""One generated accelerator runs compiled models of every method end to end in Verilator, driven as a host
drives it (AXI4-Lite registers, the DRAM an ``AxiRam`` over AXI4): the logits of every image equal the
reference sequencer's (and so ``IntegerViT``'s) bit for bit, back to back across methods, keep counts, SaiT
densities and the dense setting of a pruned model's image, with DRAM back-pressure, and after a reset in the
middle of an image. SPViT's selection has no engine yet: its image stops with an op fault at its first
selection step, and runs under the dense setting."""

from __future__ import annotations

import dataclasses
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "hw"))
from accel_models import built, steps  # noqa: E402

from tokensift.hw.accel.config import AccelConfig  # noqa: E402
from tokensift.hw.accel.regmap import Fault  # noqa: E402
from tokensift.quant.accel.executor import run  # noqa: E402
from tokensift.quant.accel.image import decode_image  # noqa: E402
from tokensift.quant.accel.isa import Instruction, Opcode  # noqa: E402
from tokensift.sim.accel_layout import covering_envelope, place_images, relocate  # noqa: E402

# the whole design's Verilator build takes minutes on 2 cores: these runs are behind `slow` (`make test-accel`),
# the engines' own tests (tests/hw/test_accel_*.py) are in the default suite
pytestmark = [pytest.mark.sim, pytest.mark.slow]

METHODS = ("dense", "dynamicvit", "evit", "asvit", "sait", "spvit")


#: the GEMM engine's columns in these designs: a quarter of the demo's, so the whole design builds in Verilator
#: in a fraction of the time (the engine's shape is a parameter every engine test covers)
COLS = 16


def _setup(cols: int = COLS):
    images = [built(v, cols)[1].image for v in METHODS]
    dram, offsets = place_images(images)
    regs = {v: relocate(built(v, cols)[1].registers, off) for v, off in zip(METHODS, offsets, strict=True)}
    inputs = {}
    for v in METHODS:
        d, r, _ = steps(v, 0, cols)
        size = decode_image(built(v, cols)[1].image).regions["input"].size
        inputs[v] = bytes(d[r.input_base:r.input_base + size])
    cfg = AccelConfig(envelope=covering_envelope(images), gemm_cols=cols)
    return cfg, dram, regs, inputs


def _expected(dram, registers, data):
    ref = bytearray(dram)
    ref[registers.input_base:registers.input_base + len(data)] = data
    return run(ref, registers)


def test_every_method_through_one_design():
    from tokensift.sim.accel_runs import run_accelerator

    cfg, dram, regs, inputs = _setup()
    cases = [("dense", regs["dense"]), ("dynamicvit", regs["dynamicvit"]),
             ("dynamicvit", regs["dynamicvit"].replace(keep=(20, 5))),
             ("dynamicvit", regs["dynamicvit"].replace(method="dense")),
             ("evit", regs["evit"]), ("asvit", regs["asvit"]), ("sait", regs["sait"]),
             ("sait", regs["sait"].replace(density=1 << 15)), ("spvit", regs["spvit"].replace(method="dense"))]
    runs, want = [], []
    for variant, r in cases:
        runs.append({"registers": r.encode(), "input": inputs[variant].hex(), "logits_base": r.logits_base,
                     "classes": 10})
        want.append(_expected(dram, r, inputs[variant]))
    # a reset in the middle of an image, then the same image again
    runs.insert(2, {**runs[1], "reset_after": 3000})
    want.insert(2, None)
    # SPViT's own selection: an op fault at its first SELECT, the bus still answering
    spvit_select = next(pc for pc, ins in enumerate(decode_image(built("spvit", COLS)[1].image).program)
                        if ins.opcode is Opcode.SELECT)
    runs.append({"registers": regs["spvit"].encode(), "input": inputs["spvit"].hex(),
                 "logits_base": regs["spvit"].logits_base, "classes": 10})
    want.append("fault")
    report = run_accelerator(cfg, dram, runs, latency=10, pause=0.15, seed=3)
    for i, (got, expected) in enumerate(zip(report["runs"], want, strict=True)):
        if expected is None:
            assert got["reset"] and got["busy_before_reset"] == 1
        elif expected == "fault":
            assert (got["done"], got["fault"], got["fault_pc"]) == (3, Fault.OP, spvit_select)
        else:
            assert got["fault"] == 0 and got["done"] == 1, (i, got)
            assert got["logits"] == [int(v) for v in expected.logits], i
            assert got["overflows"] == expected.counter.total, i  # the OVERFLOWS register counts what the model does
            assert got["register_error"] == 0 and got["irq_cleared"]
    # the images saturate at every kind of site, so the OVERFLOWS check above compares counts that are not zero
    sites = {site.split(".", 1)[1] if site.startswith("pc") else site
             for e in want if hasattr(e, "counter") for site in e.counter.by_site}
    assert {"attention.out", "gemm.out", "gelu", "layernorm"} <= sites, sites
    pruned, dense = report["runs"][1], report["runs"][5]
    assert pruned["cycles"] < dense["cycles"]  # DynamicViT's own registers vs the same image run dense
    assert np.unique([r["logits"][0] for r in report["runs"] if r.get("logits")]).size > 3


def test_dense_and_pruned_images_faults_and_a_reset():
    """The default-suite run on the same design: a DynamicViT image under its own registers and under the dense
    setting, bit-exact, its cycles exactly the cost model's (:func:`tokensift.hw.accel.cycles.image_cycles`);
    a reset mid-image; every check of the image, the registers and the program stops an
    image with its fault code and pc, raises the interrupt and leaves the bus answering."""
    from tokensift.sim.accel_runs import run_accelerator

    cfg, dram, regs, inputs = _setup()
    r = regs["dynamicvit"]
    words = r.encode()
    # copies of the image with a reserved bit set in instruction 0, and with a bad magic
    image = built("dynamicvit", COLS)[1].image
    bad_prog, bad_magic = bytearray(image), bytearray(image)
    program_at = r.program_base - r.memory_base
    bad_prog[program_at + 2] |= 0x80
    bad_magic[0] ^= 0xFF
    dram2, offsets = place_images([bytes(dram), bytes(bad_prog), bytes(bad_magic)])
    moved = [relocate(built("dynamicvit", COLS)[1].registers, off) for off in offsets[1:]]
    run_args = {"input": inputs["dynamicvit"].hex(), "logits_base": r.logits_base, "classes": 10}
    runs = [{"registers": words, **run_args},
            {"registers": words, **run_args, "reset_after": 2000},
            {"registers": r.replace(method="dense").encode(), **run_args},
            {"registers": {**words, 0x18: words[0x18] + 4}},  # a misaligned MEMORY_BASE
            {"registers": {**words, 0x10: 1}},  # a method the image was not compiled for (EViT)
            {"registers": moved[0].encode()},  # the reserved bit
            {"registers": moved[1].encode()}]  # the bad magic
    report = run_accelerator(cfg, dram2, runs, latency=10, pause=0.0, seed=5)
    got = report["runs"]
    from tokensift.hw.accel.cycles import image_cycles

    image = built("dynamicvit", COLS)[1].image
    for g, regs_ in ((got[0], r), (got[2], r.replace(method="dense"))):  # own method; dense: skipped ops
        assert g["cycles"] == image_cycles(cfg, image, regs_, inputs["dynamicvit"], latency=10)["cycles"]
    pruned = _expected(dram, r, inputs["dynamicvit"])
    assert got[0]["logits"] == [int(v) for v in pruned.logits] and got[0]["overflows"] == pruned.counter.total
    assert got[1]["reset"] and got[1]["busy_before_reset"] == 1
    dense = _expected(dram, r.replace(method="dense"), inputs["dynamicvit"])
    assert got[2]["logits"] == [int(v) for v in dense.logits] and got[2]["overflows"] == dense.counter.total
    assert got[0]["cycles"] < got[2]["cycles"]
    assert [(g["done"], g["fault"], g["fault_pc"]) for g in got[3:]] == [
        (3, Fault.REGISTERS, 0), (3, Fault.REGISTERS, 0), (3, Fault.PROGRAM, 0), (3, Fault.IMAGE, 0)]
    for g in [got[0], got[2], *got[3:]]:
        assert g["register_error"] == 0 and g["irq_cleared"] and g["cycles"] > 0
    assert 0 < got[0]["sim_seconds"] < report["wall_s"]  # the run alone, what cycles per wall second divide by


def test_simulate_model_cli(tmp_path, capsys):
    """``tokensift simulate model``: a checkpoint in, one JSON object out, the logits of real test images
    bit-exact through the generated design and its cycles equal to the cost model's."""
    import json

    import torch

    from tokensift import cli
    from tokensift.sw import create_model
    from tokensift.sw.checkpoint import save_checkpoint

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "dvit.pth", create_model("vit_mnist_patch4_28", method="dynamicvit",
                                                               keep_ratio=0.7))
    code = cli.main(["simulate", "model", "--checkpoint", str(ckpt), "--images", "1", "--calib-images", "20",
                     "--banks", "2", "--gemm-cols", str(COLS), "--registers", "keep=20,10,5", "--json"])
    text, err = capsys.readouterr()
    assert code == 0, err
    s = json.loads(text)
    assert s["bit_exact"] and s["images"] == 1 and s["faults"] == [0] and s["method"] == "dynamicvit"
    assert s["registers"]["keep"] == [20, 10, 5]
    assert s["cycles_equal_model"] and s["cycles"] == s["expected_cycles"] and 0 < s["mac_utilization"][0] < 1
    assert s["clock_source"].startswith("assumed") and s["latency_ms"][0] == round(s["cycles"][0] / 1e5, 4)


def test_simulate_model_sized_for_a_device(tmp_path, capsys):
    """``tokensift simulate model --device``: the design sized for the device by the accelerator's own models
    is the one simulated, and the cycles the sizing predicted are Verilator's."""
    import json

    import torch

    from tokensift import cli
    from tokensift.devices import get_device
    from tokensift.sw import create_model
    from tokensift.sw.checkpoint import save_checkpoint

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "dvit.pth", create_model("vit_mnist_patch4_28", method="dynamicvit",
                                                               keep_ratio=0.7))
    code = cli.main(["simulate", "model", "--checkpoint", str(ckpt), "--images", "1", "--calib-images", "20",
                     "--device", "ecp5-85f", "--json"])
    text, err = capsys.readouterr()
    assert code == 0, err
    s = json.loads(text)
    chosen = s["sizing"]["chosen"]
    assert s["bit_exact"] and s["shape"] == chosen["shape"] and s["sizing"]["fit"] >= 1
    assert s["cycles"] == s["expected_cycles"] == chosen["cycles"]
    cap = get_device("ecp5-85f").capacity()
    assert all(chosen["resources"][k] <= cap[k] for k in cap)
    # the latency's clock: the whole design's measured Fmax where this shape was placed and routed
    from tokensift.hw.cost.clock import accelerator_clock

    clk = accelerator_clock("ecp5-85f", chosen["shape"], model="vit_mnist_patch4_28")
    assert (s["clock_mhz"], s["clock_source"]) == (clk.mhz, clk.note)


def _packed_project():
    """The MNIST model (random int8 weights, DynamicViT keep 0.7) on a packed 4 x 16 GEMM with four attention
    cores, and two images."""
    from tokensift.coopt.accel_sizing import project_for, random_int_model

    int_model, images, _ = random_int_model("vit_mnist_patch4_28", "dynamicvit", 0.7, images=2)
    return project_for(int_model, {"banks": 4, "lanes": 8, "gemm_cols": 16, "axi_bytes": 8, "pack_pairs": True,
                                   "attention_cores": 4}), images


def test_packed_gemm_and_four_attention_cores_through_the_whole_design():
    """The GEMM engine with two int8 products per DSP48 and four attention core copies (one per head of the
    MNIST model's layers, round robin) inside the whole design: the same images pruned and dense, logits
    bit-exact, cycles equal to the model's (packing changes no cycle: the model gives this shape's unpacked twin
    the same counts; one core copy would take 277,132 and 461,082)."""
    project, images = _packed_project()
    assert project.config.gemm_config().pack_pairs and project.config.attention_cores == 4
    own = project.registers()
    m = project.measure(images, register_sets=[own, own.replace(method="dense")], latency=10, clock_mhz=100.0)
    assert m["bit_exact"]
    for run_ in m["sets"]:
        assert run_["bit_exact"] and run_["cycles_equal_model"] and run_["faults"] == [0, 0]
    assert [s["cycles"] for s in m["sets"]] == [[199_978] * 2, [282_234] * 2]


def test_a_fault_while_heads_are_in_flight():
    """An ``ATTENTION`` op that faults while the layer's earlier heads still compute on their core copies (its
    head index out of range, in a copy of the image): the image stops with an op fault at that instruction,
    raises the interrupt and leaves the bus answering; the next image then runs bit-exact in exactly the
    model's cycles, so no head of the stopped image wrote into it (the sequencer waits for the attention
    engine's ``busy`` before it reports the fault)."""
    from tokensift.hw.accel.cycles import image_cycles
    from tokensift.sim.accel_runs import run_accelerator

    project, images = _packed_project()
    cfg, regs = project.config, project.registers()
    program = decode_image(project.image).program
    heads = [pc for pc, ins in enumerate(program) if ins.opcode is Opcode.ATTENTION]
    bad_pc = heads[2]  # the first layer's third head: heads 0 and 1 are on copies 0 and 1
    assert program[bad_pc].arg == 2 and project.config.envelope.heads == 4
    bad = bytearray(project.image)
    program_at = regs.program_base - regs.memory_base
    bad[program_at + 16 * bad_pc + 3] = 0xFF  # the instruction's arg (bits 31:24 of its first word): head 255
    at = program_at + 16 * bad_pc
    assert Instruction.decode(bytes(bad[at:at + 16])) == dataclasses.replace(program[bad_pc], arg=0xFF)
    assert regs.memory_base == 0  # the image at its start, so a copy can sit after it
    dram, (good_at, bad_at) = place_images([project.image, bytes(bad)])
    good_regs, bad_regs = relocate(regs, good_at), relocate(regs, bad_at)
    data = project.inputs(images[:1])[0]
    run_args = {"input": data.hex(), "classes": 10}
    runs = [{"registers": bad_regs.encode(), **run_args, "logits_base": bad_regs.logits_base},
            {"registers": good_regs.encode(), **run_args, "logits_base": good_regs.logits_base}]
    got = run_accelerator(cfg, dram, runs, latency=10, pause=0.0, seed=2)["runs"]
    assert (got[0]["done"], got[0]["fault"], got[0]["fault_pc"]) == (3, Fault.OP, bad_pc)
    assert got[0]["register_error"] == 0 and got[0]["irq_cleared"]
    assert got[1]["fault"] == 0 and got[1]["done"] == 1
    assert got[1]["logits"] == [int(v) for v in _expected(dram, good_regs, data).logits]
    assert got[1]["cycles"] == image_cycles(cfg, project.image, good_regs, data, latency=10)["cycles"]
