"""Bad input over every subcommand: one line on stderr, exit code 2, no traceback, found before any work.

``CASES`` has an entry per subcommand (per block for ``generate`` and ``simulate``); a subcommand without
one fails :func:`test_every_subcommand_has_bad_input_cases`, so a new subcommand cannot ship without its
bad-input cases: add ``"name": [case("--option value", r"message regex"), ...]`` and nothing else.

Each case runs the CLI in-process with the expensive steps (Verilog, Verilator, training, the demo, the
benchmark scripts) replaced by a tripwire, so an error found only after the work has started fails the
case. ``{file}``, ``{under_file}``, ``{unwritable}``, ``{missing}``, ``{out}``, ``{bad_images}`` and
``{empty_class}`` in a case's command line are paths made per test (see :func:`paths`).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass

import pytest

from tokensift import cli


@dataclass(frozen=True)
class Case:
    argv: str
    message: str  # regex of the one line after "<prog>: error: ", anchored at both ends

    def __str__(self) -> str:
        return self.argv


def case(argv: str, message: str) -> Case:
    return Case(argv, message)


NOT_WRITABLE = r"is not a writable folder: .+"

#: `simulate model` and its alias `simulate accelerator` take the same arguments
SIMULATE_MODEL_CASES = [
    case("", r"the following arguments are required: --checkpoint"),
    case("--checkpoint {file} --device pynq-z2 --banks 2", r"--device sizes the design: give it or the shape "
         r"options \(--banks, --lanes, --gemm-cols, --axi-bytes, --pack-pairs\), not both"),
    case("--checkpoint {file} --target-ms 1", r"--target-ms needs --device and must be positive, not 1\.0"),
    case("--checkpoint {file} --device pynq-z2 --target-ms 0", r"--target-ms needs --device and must be "
         r"positive, not 0\.0"),
    case("--checkpoint {file} --device nope", r"unknown device 'nope'; choose one of .+"),
    case("--checkpoint {missing}", r"--checkpoint '.*missing\.pth' does not exist"),
    case("--checkpoint {file} --images 0", r"--images must be at least 1, not 0"),
    case("--checkpoint {file} --pause 1", r"--pause must be a probability in \[0, 1\), not 1"),
    case("--checkpoint {file} --latency 1", r"--latency must be at least 2 \(the DRAM model's own\), not 1"),
    case("--checkpoint {file} --lanes 6", r"--lanes must be a power of two between 1 and 64, not 6"),
    case("--checkpoint {file} --registers keep=x", r"--registers keep takes comma-separated integers, not 'x'"),
]


CASES: dict[str, list[Case]] = {
    "doctor": [
        case("extra", r"unrecognized arguments: extra"),
        case("--require-yosys=1", r"argument --require-yosys: ignored explicit argument '1'"),
    ],
    "flops": [
        case("--model nope", r"argument --model: invalid choice: 'nope' \(choose from .*\)"),
        case("--method dynamicvit --keep 1.5", r".*keep.*1\.5.*"),
        case("--method dynamicvit --keep nan", r".*keep.*nan.*"),
        case("--model vit_mnist_patch4_28 --images 0",
             r"--images must be between 1 and 1000 \(the MNIST test split\), not 0"),
        case("--model vit_mnist_patch4_28 --checkpoint {missing}", r".*missing\.pth.*"),
        case("--locs 3,x", r"argument --locs: expected comma-separated block indices, not '3,x'"),
    ],
    "generate requant": [
        case("--shift 99 --out {out}", r"shift must be an integer between 0 and 62, not 99"),
        case("--out {file}", r"--out '.*a_file\.txt' is a file, not a folder"),
        case("--out {under_file}", r"--out '.*a_file\.txt/sub' " + NOT_WRITABLE),
        case("--out {unwritable}", r"--out '.*' " + NOT_WRITABLE),
        case("--multiplier x --out {out}", r"argument --multiplier: invalid int value: 'x'"),
        case("", r"the following arguments are required: --out"),
    ],
    "generate attention": [
        case("--lanes 0 --out {out}", r"lanes must be .*, not 0"),
        case("--head-dim 30 --lanes 16 --out {out}", r".*head_dim.*30.*"),
        case("--out {file}", r"--out '.*a_file\.txt' is a file, not a folder"),
    ],
    "generate selector": [
        case("--n-max 0 --out {out}", r"n_max must be .*, not 0"),
        case("--weight-bits 8 --out {out}", r"weight_bits=8 needs package=True \(the weights only feed the package "
                                            r"token\)"),
        case("--mass-mode --mass-frac 30 --out {out}", r"mass_frac must be between 0 and 24, not 30"),
        case("--out {under_file}", r"--out '.*' " + NOT_WRITABLE),
    ],
    "generate score_combiner": [
        case("--heads 0 --out {out}", r"heads must be .*, not 0"),
        case("--out {file}", r"--out '.*a_file\.txt' is a file, not a folder"),
    ],
    "generate gemm": [
        case("--rows 3 --out {out}", r"rows must be a power of two, not 3"),
        case("--cols 10 --weight-bytes 4 --out {out}", r"cols \(10\) must be a multiple of weight_bytes \(4\)"),
        case("--out-bits 1 --out {out}", r"out_bits must be between 2 and 32, not 1"),
        case("--cols 7 --weight-bytes 1 --pack-pairs --out {out}",
             r"pack_pairs shares one multiplier between two columns: cols must be even, not 7"),
        case("--out {file}", r"--out '.*a_file\.txt' is a file, not a folder"),
    ],
    "generate layernorm": [
        case("--lanes 12 --out {out}", r"lanes must be a power of two, not 12"),
        case("--c-max 0 --out {out}", r"c_max must be .*, not 0"),
        case("--c-max 4096 --in-bits 16 --out {out}",
             r"c_max 4096 with 16-bit inputs and 32-bit epsilon overflows the 62-bit variance; use fewer input or "
             r"epsilon bits"),
        case("--rounding half_even --out {out}",
             r"argument --rounding: invalid choice: 'half_even' \(choose from 'half_up', 'floor'\)"),
        case("--out {file}", r"--out '.*a_file\.txt' is a file, not a folder"),
    ],
    "simulate layernorm": [
        case("--c-max 32 --dim 33", r"--dim must be between 1 and --c-max 32, not 33"),
        case("--dim 0", r"--dim must be between 1 and --c-max 384, not 0"),
        case("--tokens 70000", r"--tokens must be between 1 and the header's 65535, not 70000"),
        case("--jobs 0", r"--jobs must be at least 1, not 0"),
        case("--stall 1", r"--stall must be a probability in \[0, 1\), not 1"),
        case("--norm-bits 20", r"norm_bits \+ gamma_bits must be at most acc_bits = 32, not 20 \+ 16"),
        case("--build-dir {file}", r"--build-dir '.*a_file\.txt' is a file, not a folder"),
    ],
    "simulate requant": [
        case("--stall 1.5", r"--stall must be a probability in \[0, 1\), not 1\.5"),
        case("--stall -0.5", r"--stall must be a probability in \[0, 1\), not -0\.5"),
        case("--stall nan", r"--stall must be a finite number, not nan"),
        case("--count 0", r"--count must be at least 1, not 0"),
        case("--build-dir {file}", r"--build-dir '.*a_file\.txt' is a file, not a folder"),
        case("--waves png", r"argument --waves: invalid choice: 'png' \(choose from 'vcd', 'fst'\)"),
        case("--shift 63", r"shift must be an integer between 0 and 62, not 63"),
    ],
    "simulate selector": [
        case("--n-max 64 --dim 32 --lanes 8 --tokens 65 --keep 5", r"--tokens must be between 1 and --n-max 64, not 65"),
        case("--n-max 64 --dim 32 --lanes 8 --tokens 0 --keep 0", r"--tokens must be between 1 and --n-max 64, not 0"),
        case("--n-max 64 --dim 32 --lanes 8 --keep 64",
             r"--keep must be at most --tokens - 1 = 63 \(the class token is always kept\), not 64"),
        case("--n-max 64 --dim 32 --lanes 8 --threshold 70000",
             r"--threshold: threshold must be between 0 and 65535, not 70000"),
        case("--n-max 64 --dim 32 --lanes 8 --keep -1", r"--keep: k must be between 0 and .*, not -1"),
        case("--n-max 64 --dim 32 --lanes 8", r"one of the arguments --keep --threshold --mass is required"),
        case("--n-max 64 --dim 32 --lanes 8 --mass 40000 --mass-frac 15",
             r"--mass must be at most 2\*\*--mass-frac = 32768 \(the whole\), not 40000"),
        case("--n-max 64 --dim 32 --lanes 8 --keep 3 --package-rule max",
             r"argument --package-rule: invalid choice: 'max' \(choose from 'mean', 'sum'\)"),
        case("--keep 5 --build-dir {under_file}", r"--build-dir '.*' " + NOT_WRITABLE),
    ],
    "simulate score_combiner": [
        case("--tokens 300", r"--tokens must be between 1 and --n-max 197, not 300"),
        case("--frame-heads 7", r"--frame-heads must be between 1 and --heads 6, not 7"),
        case("--frames 0", r"--frames must be at least 1, not 0"),
        case("--stall 1", r"--stall must be a probability in \[0, 1\), not 1"),
        case("--n-max 0", r"n_max must be .*, not 0"),
        case("--per-token", r"--per-token needs a block built with --per-token-weights"),
        case("--signed --attn-bits 1", r"attn_bits must be at least 2 with a signed score, not 1"),
    ],
    "simulate attention": [
        case("--n-max 64 --head-dim 32 --lanes 8 --tokens 65", r"--tokens must be between 1 and --n-max 64, not 65"),
        case("--n-max 64 --head-dim 32 --lanes 8 --heads 0", r"--heads must be at least 1, not 0"),
        case("--lanes 0", r"lanes must be .*, not 0"),
        case("--build-dir {unwritable}", r"--build-dir '.*' " + NOT_WRITABLE),
    ],
    "simulate gemm": [
        case("--tokens 300", r"--tokens must be between 1 and --max-tokens 197, not 300"),
        case("--in-features 0", r"--in-features must be between 1 and --max-in 384, not 0"),
        case("--out-features 2000", r"--out-features must be between 1 and --max-out 1536, not 2000"),
        case("--jobs 0", r"--jobs must be at least 1, not 0"),
        case("--stall 1", r"--stall must be a probability in \[0, 1\), not 1"),
        case("--rate 0", r"--rate must be at least 1, not 0"),
        case("--latency -1", r"--latency must be at least 0, not -1"),
        case("--max-tokens 0", r"max_tokens must be between 1 and 65536, not 0"),
        case("--build-dir {file}", r"--build-dir '.*a_file\.txt' is a file, not a folder"),
    ],
    "synth requant": [
        case("--pnr --family xcup", r"--pnr places and routes on ECP5 only \(no open place and route exists for "
                                    r"xcup\); use --family ecp5"),
        case("--speed 5", r"--speed must be one of 6, 7, 8, not 5"),
        case("--constraint-mhz 200", r"--constraint-mhz is a place-and-route option; add --pnr"),
        case("--pnr --constraint-mhz nan", r"--constraint-mhz must be between 0 and 1000, not nan"),
        case("--shift 99", r"shift must be an integer between 0 and 62, not 99"),
    ],
    "synth attention": [
        case("--family nope", r"--family must be one of .*, not 'nope'"),
        case("--lanes 0", r"lanes must be .*, not 0"),
    ],
    "synth selector": [
        case("--n-max 0", r"n_max must be .*, not 0"),
        case("--pnr --speed 9", r"--speed must be one of 6, 7, 8, not 9"),
    ],
    "synth layernorm": [
        case("--lanes 0", r"lanes must be .*, not 0"),
        case("--pnr --family xc7", r"--pnr places and routes on ECP5 only .*"),
    ],
    "synth score_combiner": [
        case("--heads 0", r"heads must be .*, not 0"),
        case("--pnr --family xc7", r"--pnr places and routes on ECP5 only .*"),
    ],
    "synth gemm": [
        case("--rows 0", r"rows must be between 1 and 64, not 0"),
        case("--pnr --family xcup", r"--pnr places and routes on ECP5 only .*"),
    ],
    "generate gelu": [
        case("--in-bits 17 --out {out}", r"in_bits must be between 2 and 16, not 17"),
        case("--multiplier-bits 32 --out {out}", r"multiplier_bits must be between 2 and 31, not 32"),
        case("--out {file}", r"--out '.*a_file\.txt' is a file, not a folder"),
    ],
    "simulate gelu": [
        case("--scales 0.05:x", r"--scales must be comma-separated IN:OUT scale pairs, not '0\.05:x'"),
        case("--scales 0.05", r"--scales must be comma-separated IN:OUT scale pairs, not '0\.05'"),
        case("--scales 0.05:-1", r"--scales output scale must be a positive finite number, not -1\.0"),
        case("--scales 9:0.1", r"in_scale 9\.0 is too coarse for the GELU polynomial \(clip point 0, constant one 0\); "
                               r"use a finer input scale"),
        case("--count 0", r"--count must be at least 1, not 0"),
        case("--beats 0", r"--beats must be at least 1, not 0"),
        case("--stall 1", r"--stall must be a probability in \[0, 1\), not 1"),
        case("--lanes 0", r"lanes must be between 1 and 64, not 0"),
    ],
    "synth gelu": [
        case("--lanes 65", r"lanes must be between 1 and 64, not 65"),
        case("--pnr --family xcup", r"--pnr places and routes on ECP5 only .*"),
    ],
    "generate residual": [
        case("--res-bits 40 --out {out}", r"--res-bits must be between 2 and 32, not 40"),
        case("--overflow clip --out {out}", r"argument --overflow: invalid choice: 'clip' \(choose from .*\)"),
    ],
    "simulate residual": [
        case("--beats 0", r"--beats must be at least 1, not 0"),
        case("--timed-beats -3", r"--timed-beats must be at least 1, not -3"),
        case("--stall 1.5", r"--stall must be a probability in \[0, 1\), not 1\.5"),
        case("--lanes 0", r"lanes must be between 1 and 64, not 0"),
    ],
    "synth residual": [
        case("--res-bits 1", r"--res-bits must be between 2 and 32, not 1"),
    ],
    "generate token_mean": [
        case("--lanes 3 --out {out}", r"lanes must be a power of two, not 3"),
        case("--n-max 0 --out {out}", r"n_max must be between 1 and 65535, not 0"),
    ],
    "simulate token_mean": [
        case("--tokens 198", r"--tokens must be between 1 and --n-max 197, not 198"),
        case("--channels 0", r"--channels must be between 1 and --c-max 192, not 0"),
        case("--channels 193", r"--channels must be between 1 and --c-max 192, not 193"),
        case("--frames 0", r"--frames must be at least 1, not 0"),
        case("--c-max 70000", r"c_max must be between 1 and 65535, not 70000"),
        case("--bits 1", r"bits must be between 2 and 16, not 1"),
    ],
    "synth token_mean": [
        case("--lanes 128", r"lanes must be between 1 and 64, not 128"),
    ],
    "generate axi_lite": [
        case("--regmap {missing} --out {out}", r"--regmap '.*missing\.pth' does not exist"),
        case("--regmap {file} --out {out}", r"--regmap '.*a_file\.txt' is not JSON: .+"),
    ],
    "simulate axi_lite": [
        case("--accesses 0", r"--accesses must be at least 1, not 0"),
        case("--pause 1", r"--pause must be a probability in \[0, 1\), not 1"),
        case("--regmap {out}", r"--regmap '.*out' does not exist"),
    ],
    "synth axi_lite": [
        case("--regmap {file}", r"--regmap '.*a_file\.txt' is not JSON: .+"),
    ],
    "generate axi_reader": [
        case("--data-bytes 12 --out {out}", r"data_bytes must be a power of two, not 12"),
        case("--max-burst 0 --out {out}", r"max_burst must be between 1 and 256, not 0"),
        case("--data-bytes 32 --max-burst 256 --out {out}",
             r"max_burst \(256\) x data_bytes \(32\) must be at most 4096 bytes, the 4 KiB a burst may span"),
    ],
    "simulate axi_reader": [
        case("--latency 1", r"--latency must be at least 2 \(AxiRam's own\), not 1"),
        case("--commands 0", r"--commands must be at least 1, not 0"),
        case("--max-length 40000", r"--max-length must be at most 32768, not 40000"),
        case("--stall 1", r"--stall must be a probability in \[0, 1\), not 1"),
        case("--max-outstanding 0", r"max_outstanding must be between 1 and 16, not 0"),
    ],
    "synth axi_reader": [
        case("--addr-width 8", r"addr_width must be between 12 and 64, not 8"),
    ],
    "generate axi_writer": [
        case("--length-bits 40 --out {out}", r"length_bits must be between 4 and 32, not 40"),
    ],
    "simulate axi_writer": [
        case("--pause -0.1", r"--pause must be a probability in \[0, 1\), not -0\.1"),
        case("--max-length 0", r"--max-length must be at least 1, not 0"),
    ],
    "synth axi_writer": [
        case("--max-burst 257", r"max_burst must be between 1 and 256, not 257"),
    ],
    "generate accelerator": [
        case("--out {out}", r"one of the arguments --image --model is required"),
        case("--model vit_mnist_patch4_28 --banks 3 --out {out}", r"--banks must be a power of two between 1 and 64, not 3"),
        case("--model vit_mnist_patch4_28 --gemm-cols 60 --out {out}", r"--gemm-cols must be a multiple of --axi-bytes \(8\) between 1 and 1024, not 60"),
        case("--image {missing} --out {out}", r"--image '.*missing\.pth' does not exist"),
        case("--model vit_mnist_patch4_28 --attention-cores 17 --out {out}", r"--attention-cores must be between 1 and 16, not 17"),
        case("--image {file} --out {out}", r"--image '.*a_file\.txt' is not a tokensift memory image: .+"),
        case("--model vit_mnist_patch4_28 --device nope --out {out}", r"unknown device 'nope'; choose one of .+"),
    ],
    "generate model": [
        case("--out {out}", r"one of the arguments --image --model is required"),
        case("--model vit_mnist_patch4_28 --banks 3 --out {out}", r"--banks must be a power of two between 1 and 64, not 3"),
        case("--model vit_mnist_patch4_28 --gemm-cols 60 --out {out}", r"--gemm-cols must be a multiple of --axi-bytes \(8\) between 1 and 1024, not 60"),
        case("--image {missing} --out {out}", r"--image '.*missing\.pth' does not exist"),
        case("--model vit_mnist_patch4_28 --attention-cores 17 --out {out}", r"--attention-cores must be between 1 and 16, not 17"),
        case("--image {file} --out {out}", r"--image '.*a_file\.txt' is not a tokensift memory image: .+"),
        case("--model vit_mnist_patch4_28 --device nope --out {out}", r"unknown device 'nope'; choose one of .+"),
    ],
    "simulate accelerator": SIMULATE_MODEL_CASES,
    "simulate model": SIMULATE_MODEL_CASES,
    "synth accelerator": [
        case("--model vit_mnist_patch4_28 --banks 3", r"--banks must be a power of two between 1 and 64, not 3"),
        case("--model vit_mnist_patch4_28 --attention-cores 0", r"--attention-cores must be between 1 and 16, not 0"),
        case("", r"one of the arguments --image --model is required"),
    ],
    "synth model": [
        case("--model vit_mnist_patch4_28 --lanes 0", r"--lanes must be a power of two between 1 and 64, not 0"),
    ],
    "estimate": [
        case("--clock-mhz inf", r"--clock-mhz must be a positive finite number, not inf"),
        case("--clock-mhz nan", r"--clock-mhz must be a positive finite number, not nan"),
        case("--clock-mhz 0", r"--clock-mhz must be a positive finite number, not 0"),
        case("--block attention --clock-mhz inf", r"--clock-mhz must be a positive finite number, not inf"),
        case("--block layernorm --dim 5000", r"c_max must be .*, not 5000"),
        case("--block layernorm --lanes 6", r"lanes must be a power of two, not 6"),
        case("--block layernorm --n-tokens 70000", r"n_tokens must be .*, not 70000"),
        case("--keep 1.5", r".*keep.*1\.5.*"),
        case("--lanes 0", r"--lanes must be at least 1, not 0"),
        case("--device nope", r".*'nope'.*"),
        case("--block gemm --rows 3", r"rows must be a power of two, not 3"),
        case("--block gemm --in-features 2000", r"--in-features must be at most 1536, not 2000"),
        case("--block gemm --rate 0", r"--rate must be at least 1, not 0"),
        case("--block gemm --latency -1", r"--latency must be at least 0, not -1"),
        case("--block gelu --n-values 0", r"--n-values must be at least 1, not 0"),
        case("--block residual --lanes 65", r"lanes must be between 1 and 64, not 65"),
        case("--block token_mean --channels 0", r"c_max must be between 1 and 65535, not 0"),
        case("--block token_mean --n-tokens 300", r"n_tokens must be between 1 and 197, not 300"),
    ],
    "co-opt": [
        case("--target-fps 1000 --report {file}", r"--report '.*a_file\.txt' is a file, not a folder"),
        case("--target-fps 1000 --report {unwritable}", r"--report '.*' " + NOT_WRITABLE),
        case("--target-fps 1000 --keep-step 0.0001 --no-progress",
             r"the grid has [\d,]+ design points \([\d,]+ hardware x [\d,]+ keep ratios\), more than the "
             r"50,000,000 the search holds in memory; coarsen the keep step, narrow the axes or use the nsga2 "
             r"search"),
        case("--target-fps 1000 --clock-mhz 100,inf", r"--clock-mhz must be a finite number, not inf"),
        case("--target-fps nan", r"--target-fps must be a positive number, not nan"),
        case("--target-fps 1000 --keep-step nan", r"--keep-step must be in \(0, 1\], not nan"),
        case("--target-fps 1000 --accuracy measured --checkpoint {missing}",
             r"--checkpoint '.*missing\.pth' does not exist"),
        case("--target-fps 1000 --trials 0", r"--trials must be at least 1, not 0"),
        case("", r"one of the arguments --target-latency-ms --target-fps is required"),
        case("--target-fps 100 --cost accelerator --method evit",
             r"--cost accelerator plans the keep ratio of a method whose registers fix the token counts "
             r"\(dynamicvit\), not evit"),
        case("--target-fps 100 --cost accelerator --method dynamicvit --lanes 8",
             r"--cost accelerator searches the accelerator's own shapes and keep ratios; it does not take --lanes"),
        case("--target-fps 100 --cost accelerator --method dynamicvit --accuracy measured",
             r"--cost accelerator searches the accelerator's own shapes and keep ratios; it does not take "
             r"--accuracy"),
        case("--target-fps 100 --cost accelerator --method dynamicvit --clock-mhz 100,200",
             r"--cost accelerator takes one positive --clock-mhz, not '100,200'"),
        case("--target-fps 100 --cost accelerator --method dynamicvit --keep-min 0",
             r"--keep-min must be in \(0, 1\], not 0"),
        case("--target-fps 100 --cost nope", r"argument --cost: invalid choice: 'nope' \(choose from .*\)"),
    ],
    "train": [
        case("--lr inf", r"--lr must be a finite number, not inf"),
        case("--lr nan", r"--lr must be a finite number, not nan"),
        case("--lr 0", r"--lr must be positive, not 0"),
        case("--finetune-lr -1", r"--finetune-lr must be positive, not -1"),
        case("--out {file} --cache-dir {out}", r"--out '.*a_file\.txt' is a file, not a folder"),
        case("--cache-dir {under_file}", r"--cache-dir '.*' " + NOT_WRITABLE),
        case("--method evit --device pynq-z2 --target-latency-ms 1 --stage-keep 0.5,0.5 --cache-dir {out}",
             r"--stage-keep needs 3 ratios for vit_mnist_patch4_28 \(one per pruning stage\), not 2"),
        case("--method dynamicvit --keep 1.5", r".*keep.*1\.5.*"),
        case("--checkpoint {missing} --cache-dir {out}", r"--checkpoint '.*missing\.pth' does not exist"),
        case("--dense-checkpoint {bad_images}", r"--dense-checkpoint '.*' is a folder, not a file"),
        case("--data {missing} --cache-dir {out}", r"dataset folder '.*missing\.pth' does not exist"),
        case("--data {bad_images} --cache-dir {out}",
             r"2 of 5 images in '.*bad_images' cannot be read: a/not_an_image\.png \(.+\); a/truncated\.jpg "
             r"\(.+\); fix or remove them, or skip them \(tokensift train --skip-bad-images\)"),
        case("--data {empty_class} --cache-dir {out}",
             r"class folder 'b' of '.*empty_class' holds no images; remove it or add images"),
        case("--batch-size 0", r"argument --batch-size: expected a positive integer, not '0'"),
        case("--workers -1", r"--workers must be a non-negative integer, not -1"),
        case("--device pynq-z2", r"--device sets the latency budget, so it needs --target-latency-ms"),
    ],
    "compile": [
        case("", r"the following arguments are required: --checkpoint, --out"),
        case("--checkpoint {missing} --out {out}", r"--checkpoint '.*missing\.pth' does not exist"),
        case("--checkpoint {file} --out {out}", r"checkpoint file '.*a_file\.txt' could not be read \(.+\)"),
        case("--checkpoint {file} --out {file}", r"--out '.*a_file\.txt' is a file, not a folder"),
        case("--checkpoint {file} --out {under_file}", r"--out '.*' " + NOT_WRITABLE),
        case("--checkpoint {file} --out {out} --model nope", r"argument --model: invalid choice: 'nope' \(choose from .*\)"),
        case("--checkpoint {file} --out {out} --calib-images 0", r"--calib-images must be at least 1, not 0"),
        case("--checkpoint {file} --out {out} --verify -1", r"--verify must be at least 0, not -1"),
        case("--checkpoint {file} --out {out} --registers density=2",
             r"--registers density must be a keep ratio in \(0, 1\], not '2'"),
        case("--checkpoint {file} --out {out} --registers keep=3,x",
             r"--registers keep takes comma-separated integers, not '3,x'"),
        case("--checkpoint {file} --out {out} --registers threshold=70000",
             r"--registers threshold values must be between 0 and 65535 \(16-bit registers\), not 70000"),
        case("--checkpoint {file} --out {out} --registers method=tome",
             r"--registers method must be one of dense, evit, dynamicvit, spvit, asvit, sait, not 'tome'"),
        case("--checkpoint {file} --out {out} --registers rule=topk,best",
             r"--registers rule takes topk, threshold, mass per stage, not 'best'"),
        case("--checkpoint {file} --out {out} --registers speed=3",
             r"--registers takes KEY=VALUE with KEY one of method, density, keep, threshold, rule, not 'speed=3'"),
        case("--checkpoint {file} --out {out} --registers keep=1 keep=2", r"--registers sets keep twice"),
    ],
    "demo": [
        case("--out {file}", r"--out '.*a_file\.txt' is a file, not a folder"),
        case("--cache-dir {under_file}", r"--cache-dir '.*' " + NOT_WRITABLE),
        case("--device nope", r".*'nope'.*"),
        case("--speedup 0", r"--speedup must be positive, not 0"),
        case("--target-fps inf", r"--target-fps must be a finite number, not inf"),
        case("--sim-images 0", r"--sim-images must be at least 1, not 0"),
        case("--target-fps 1 --speedup 2", r"argument --speedup: not allowed with argument --target-fps"),
    ],
    "bench": [
        case("nope", r"unknown benchmark 'nope'; known: .*"),
        case("attention --script-args '\"'", r"--script-args '\"' cannot be split into options: .+"),
        case("--bogus", r"unrecognized arguments: --bogus"),
    ],
}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every parser of the CLI with its command path (``("simulate", "selector")``)."""
    yield path, parser
    for name, sub in _subparsers(parser).items():
        yield from walk(sub, (*path, name))


def leaf_commands() -> list[str]:
    """The commands a user runs: each subcommand, or each block of one that has blocks."""
    return [" ".join(path) for path, p in walk(cli.build_parser()) if path and not _subparsers(p)]


def test_every_subcommand_has_bad_input_cases():
    missing = [name for name in leaf_commands() if not CASES.get(name)]
    assert not missing, f"subcommands without bad-input cases in CASES: {missing}"
    assert set(CASES) <= set(leaf_commands()), set(CASES) - set(leaf_commands())


@pytest.fixture
def paths(tmp_path):
    from PIL import Image

    (tmp_path / "a_file.txt").write_text("not a folder\n")
    good = Image.new("L", (28, 28), 128)
    bad = tmp_path / "bad_images"
    for cls, n in (("a", 2), ("b", 1)):
        (bad / cls).mkdir(parents=True)
        for i in range(n):
            good.save(bad / cls / f"ok{i}.png")
    (bad / "a" / "not_an_image.png").write_text("hello\n")
    jpeg = tmp_path / "full.jpg"
    Image.new("RGB", (64, 64), (10, 200, 30)).save(jpeg, quality=90)
    (bad / "a" / "truncated.jpg").write_bytes(jpeg.read_bytes()[: len(jpeg.read_bytes()) // 2])
    empty = tmp_path / "empty_class"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir()
    good.save(empty / "a" / "ok.png")
    return {"file": tmp_path / "a_file.txt", "under_file": tmp_path / "a_file.txt" / "sub",
            "unwritable": "/sys/tokensift-bad-input", "missing": tmp_path / "missing.pth",
            "out": tmp_path / "out", "bad_images": bad, "empty_class": empty}


@pytest.fixture
def tripwires(monkeypatch):
    """The expensive steps of each subcommand, replaced by an error that is a bug (exit code 1)."""
    import subprocess as real_subprocess

    def tripped(*args, **kwargs):
        raise AssertionError("expensive work started before the bad input was found")

    class Subprocess:
        def run(self, *args, **kwargs):
            tripped()

    monkeypatch.setattr("tokensift.hw.common.manifest.write_outputs", tripped)
    monkeypatch.setattr("tokensift.hw.cost.synth.synthesize_verilog", tripped)
    monkeypatch.setattr("tokensift.hw.cost.pnr.place_and_route_verilog", tripped)
    monkeypatch.setattr("tokensift.sim.runner.run_cocotb", tripped)
    monkeypatch.setattr("tokensift.sim.attention_harness.run_attention", tripped)
    monkeypatch.setattr("tokensift.sw.pipeline.fit", tripped)
    monkeypatch.setattr("tokensift.coopt.demo.run_demo", tripped)
    monkeypatch.setattr("tokensift.quant.integer_model.IntegerViT.from_float", tripped)
    monkeypatch.setattr("tokensift.commands.bench.subprocess", Subprocess())
    assert real_subprocess.run is not tripped


ALL_CASES = [(name, c) for name, cases in CASES.items() for c in cases]


def _has_json(name: str) -> bool:
    parser = dict(walk(cli.build_parser()))[tuple(name.split())]
    return any("--json" in a.option_strings for a in parser._actions)


@pytest.mark.parametrize("name, bad", ALL_CASES, ids=[f"{n}: {c}" for n, c in ALL_CASES])
def test_bad_input_is_one_line_and_exit_2(name, bad, paths, tripwires, capsys):
    argv = [*name.split(), *(arg.format(**paths) for arg in shlex.split(bad.argv))]
    with_json = _has_json(name)
    code = cli.main([*argv, "--json"] if with_json else argv)
    out, err = capsys.readouterr()
    lines = err.rstrip("\n").split("\n")
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    # "tokensift: error: unrecognized arguments" comes from the top parser, which sees the extra words
    assert re.match(r"tokensift( [\w-]+){0,2}: error: ", lines[0]), err
    message = lines[0].split(": error: ", 1)[1]
    assert re.fullmatch(bad.message, message), message
    if with_json:
        data = json.loads(out)  # exactly one object: json.loads refuses trailing text
        assert data["error"] == message and out.count("\n") == 1
    else:
        assert out == ""


def test_options_have_help_that_states_the_default():
    formatter = cli.HelpFormatter("tokensift")
    problems = []
    for path, parser in walk(cli.build_parser()):
        required_groups = [g for g in parser._mutually_exclusive_groups if g.required]
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            where = f"{' '.join(path) or 'tokensift'} {'/'.join(action.option_strings) or action.dest}"
            if not action.help:
                problems.append(f"{where}: no help")
            elif (cli.takes_value(action) and not action.required
                  and not any(action in g._group_actions for g in required_groups)
                  and "default" not in formatter._get_help_string(action)):
                problems.append(f"{where}: help does not state the default")
    assert not problems, problems


def test_help_shows_the_defaults():
    text = dict(walk(cli.build_parser()))[("simulate", "requant")].format_help()
    assert re.search(r"--count COUNT\s+values to stream through \(default: 1000\)", text)
    assert re.search(r"--shift SHIFT\s+rounding right shift after the multiply, 0 to 62\s+\(default: 20\)", text)


# -- the errors that are not a user's: one line that says it is a bug, exit 1 ------------------------------
def _raise(exc):
    def run(args):
        raise exc

    return run


@pytest.mark.parametrize("exc, code, message", [
    (KeyError("x"), 1, r"this is a bug in tokensift [\d.]+ \(KeyError: 'x'\); please report it to "
                       r"the tokensift issue tracker with the command line and the traceback that TOKENSIFT_DEBUG=1 prints"),
    (PermissionError(13, "Permission denied", "/x/y.v"), 2, r"'/x/y\.v': Permission denied"),
    (FileExistsError(17, "File exists", "/a", None, "/b"), 2, r"'/a' -> '/b': File exists"),
    (MemoryError(), 2, r"out of memory; make the problem smaller"),
    (ValueError("two\nlines"), 2, r"two lines"),
])
def test_error_classes(exc, code, message, monkeypatch, capsys):
    monkeypatch.setattr("tokensift.commands.doctor.run", _raise(exc))
    monkeypatch.delenv("TOKENSIFT_DEBUG", raising=False)
    assert cli.main(["doctor", "--json"]) == code
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "Traceback" not in err
    assert re.fullmatch(r"tokensift doctor: error: " + message, err.strip()), err
    assert json.loads(out) == {"error": err.strip().split(": error: ", 1)[1], "type": type(exc).__name__}


def test_debug_shows_the_traceback_of_a_bug(monkeypatch, capsys):
    monkeypatch.setattr("tokensift.commands.doctor.run", _raise(KeyError("x")))
    assert cli.main(["--debug", "doctor"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err
    monkeypatch.setenv("TOKENSIFT_DEBUG", "1")
    assert cli.main(["doctor"]) == 1
    assert "KeyError: 'x'" in capsys.readouterr().err


def test_a_bug_in_a_real_process_is_one_line():
    # the console entry point end to end: a bad import path inside a subcommand is a bug, not a user error
    code = ("import sys, tokensift.commands.doctor as d\n"
            "d.run = lambda args: [][1]\n"
            "from tokensift.cli import main\nsys.exit(main(['doctor']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1
    assert re.fullmatch(r"tokensift doctor: error: this is a bug in tokensift .*IndexError.*\n", proc.stderr)


def test_tripwires_catch_work_that_starts(paths, tripwires, capsys):
    # the guard of the cases above: each good command reaches its tripwire (a bug: exit 1)
    for argv in (["generate", "requant", "--out", str(paths["out"])], ["simulate", "requant", "--count", "5"],
                 ["simulate", "attention", "--n-max", "8", "--head-dim", "8", "--lanes", "8"],
                 ["train", "--max-steps", "1", "--cache-dir", str(paths["out"]), "--no-cache"],
                 ["demo", "--out", str(paths["out"])], ["bench", "attention"]):
        assert cli.main(argv) == 1, argv
        assert "expensive work started before the bad input was found" in capsys.readouterr().err


# -- the documented Python API: one sentence with the right type --------------------------------------------
def _api_cases():
    import numpy as np
    import torch

    from tokensift.hw.common import fixed as hw_fixed
    from tokensift.quant.fixed import INT8, FixedFormat, Rounding, requantize, round_shift
    from tokensift.sw.data import ImageFolder
    from tokensift.sw.registry import create_model

    def model_on(images):
        return lambda: create_model("vit_mnist_patch4_28").eval()(images)

    def hw_fit(fmt):
        from amaranth.hdl import Signal

        return lambda: hw_fixed.fit(Signal(8), fmt)

    return [
        ("requantize out=None", lambda: requantize([1], 1, 0, None), TypeError, r"out must be a FixedFormat, not NoneType"),
        ("requantize shift=1.5", lambda: requantize([1], 1, 1.5, INT8), TypeError, r"shift must be an integer, not float"),
        ("requantize counter=[]", lambda: requantize([1], 1, 0, INT8, counter=[]), TypeError,
         r"counter must be an OverflowCounter or None, not list"),
        ("hw fit(sig, None)", hw_fit(None), TypeError, r"fmt must be a FixedFormat, not NoneType"),
        ("hw round_shift rounding='x'", lambda: hw_fixed.round_shift(1, 0, "x"), TypeError,
         r"rounding must be a Rounding, not 'x'"),
        ("quantize counter=[]", lambda: INT8.quantize([1.0], counter=[]), TypeError,
         r"counter must be an OverflowCounter or None, not list"),
        ("fit counter=[]", lambda: INT8.fit([1], counter=[]), TypeError,
         r"counter must be an OverflowCounter or None, not list"),
        ("FixedFormat.fit([2**70])", lambda: FixedFormat(bits=8).fit([2**70]), ValueError,
         r"integer values must fit in int64 \(-2\*\*63 to 2\*\*63 - 1\), not 1180591620717411303424"),
        ("fit uint64 above int64", lambda: INT8.fit(np.array([2**64 - 1], dtype=np.uint64)), ValueError,
         r"integer values must fit in int64 \(-2\*\*63 to 2\*\*63 - 1\), not 18446744073709551615"),
        ("fit strings", lambda: INT8.fit(["1"]), TypeError, r"integer values expected, not <U1"),
        ("round_shift left shift past int64", lambda: round_shift([3], -62), ValueError,
         r"round_shift: 3 << 62 does not fit in int64"),
        ("round_shift rounding='half_up'", lambda: round_shift([3], 1, "half_up"), TypeError,
         r"rounding must be a Rounding, not 'half_up'"),
        ("round_shift floats", lambda: round_shift([1.5], 1, Rounding.FLOOR), TypeError,
         r"integer values expected, not float64"),
        ("model on uint8 images", model_on(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)), TypeError,
         r"input images must be a floating-point tensor, not torch\.uint8; convert them with \.float\(\) and "
         r"normalise them as the training data was"),
        ("model on a list", model_on([[0.0]]), TypeError, r"input images must be a torch\.Tensor, not list"),
        ("model on the wrong size", model_on(torch.zeros(2, 3, 28, 28)), ValueError,
         r"input images must have shape \(batch, 1, 28, 28\), not \(2, 3, 28, 28\)"),
        ("ImageFolder in_chans=2", lambda: ImageFolder(".", in_chans=2), ValueError, r"in_chans must be 1 or 3, not 2"),
    ]


API_CASES = _api_cases()


@pytest.mark.parametrize("call, exc_type, message", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_python_api_bad_input(call, exc_type, message):
    with pytest.raises(exc_type) as info:
        call()
    assert type(info.value) is exc_type or issubclass(type(info.value), exc_type)
    assert re.fullmatch(message, str(info.value)), str(info.value)


def test_image_folder_names_every_unreadable_file_or_skips_them(paths):
    from tokensift.errors import DatasetError
    from tokensift.sw.data import ImageFolder, load_image_folder

    with pytest.raises(DatasetError, match=r"^2 of 5 images in '.*bad_images' cannot be read: "
                                           r"a/not_an_image\.png \(.+\); a/truncated\.jpg \(.+\); fix or remove"):
        ImageFolder(paths["bad_images"], img_size=28, in_chans=1)
    ds = ImageFolder(paths["bad_images"], img_size=28, in_chans=1, skip_bad=True)
    assert len(ds) == 3 and [p.name for p in ds.skipped] == ["not_an_image.png", "truncated.jpg"]
    assert ds.classes == ["a", "b"] and all(tuple(ds[i][0].shape) == (1, 28, 28) for i in range(3))
    train, val = load_image_folder(paths["bad_images"], img_size=28, in_chans=1, val_fraction=0.34, skip_bad=True)
    assert len(train) + len(val) == 3
    with pytest.raises(DatasetError, match=r"^class folder 'b' of '.*empty_class' holds no images; remove it or "
                                           r"add images$"):
        ImageFolder(paths["empty_class"], img_size=28, in_chans=1)


def test_an_image_that_breaks_after_the_scan_is_named(paths):
    from tokensift.errors import DatasetError
    from tokensift.sw.data import ImageFolder

    ds = ImageFolder(paths["bad_images"], img_size=28, in_chans=1, skip_bad=True)
    ds.samples[0][0].write_text("overwritten\n")
    with pytest.raises(DatasetError, match=r"^image '.*ok0\.png' cannot be read: .+$"):
        ds[0]


def test_train_skips_bad_images_with_a_count(paths, capsys):
    code = cli.main(["train", "--data", str(paths["bad_images"]), "--skip-bad-images", "--max-steps", "1",
                     "--epochs", "1", "--batch-size", "2", "--no-cache", "--no-progress", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert result["skipped_images"] == 2 and "skipped 2 unreadable images" in err
    # --no-cache without --out writes no checkpoint, so none is reported
    assert result["dense_checkpoint"] is None and result["checkpoint"] is None


def test_training_that_diverges_stops_with_an_error(tmp_path, capsys):
    # a finite but absurd learning rate: the loss becomes NaN in the first steps; no NaN model is saved
    code = cli.main(["train", "--lr", "1e30", "--max-steps", "3", "--epochs", "1", "--no-cache", "--no-progress",
                     "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert re.fullmatch(r"tokensift train: error: training diverged: the mean loss of epoch 1 is (nan|inf); "
                        r"lower the learning rate \(now 1e\+30\)", err[-1]), err
    assert not (tmp_path / "run" / "dense.pth").exists()


# -- tokensift bench runs what the README cites; the wheel holds every package ------------------------------
def test_bench_runs_every_script_the_readme_cites():
    from pathlib import Path

    from tokensift.commands import bench

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    cited = sorted(set(re.findall(r"bench/(\w+)\.py", readme)))
    assert len(cited) >= 8
    found = bench.available()
    assert {Path(p).stem for p in found.values()} >= set(cited)
    names = {Path(p).stem: name for name, p in found.items()}
    # the results scripts (up to an hour each) run by name; without a name, the bench_* benchmarks run
    assert {names[s] for s in ("sw_results", "sw_methods_results", "quant_accuracy")}.isdisjoint(
        bench.default_names(found))
    assert {names[s] for s in cited if s.startswith("bench_")} <= set(bench.default_names(found))


def test_bench_passes_script_args(monkeypatch, tmp_path, capsys):
    from tokensift.commands import bench

    (tmp_path / "echo_args.py").write_text("import sys\nprint(sys.argv[1:], file=sys.stderr)\n"
                                           "sys.exit(0 if sys.argv[1:] == ['--quick', '--limit', '2'] else 5)\n")
    monkeypatch.setattr(bench, "bench_dir", lambda: tmp_path)
    assert cli.main(["bench", "echo_args", "--script-args=--quick --limit 2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"returncodes": {"echo_args": 0}, "ok": True}


def test_every_package_folder_is_in_the_wheel():
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("tokensift_setup", root / "setup.py")
    setup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup)
    found = set(setup.discover())
    on_disk = set()
    for name, folder in setup.PACKAGE_DIRS.items():
        for init in (root / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(root / folder).parts
            on_disk.add(".".join((name, *rel)))
    assert found == on_disk
    assert {"tokensift.commands", "tokensift.coopt", "tokensift.hw.cost", "tokensift.sw.methods"} <= found
