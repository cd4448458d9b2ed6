"""CLI glue of the AXI4 write DMA (:mod:`tokensift.hw.axi.writer`), the read DMA's glue with the other kind."""

from __future__ import annotations

from tokensift.commands.block_axi_reader import (
    add_dma_arguments,
    add_simulate_dma_arguments,
    build_dma,
    simulate_dma,
)

HELP = "AXI4 master write DMA: (address, length) commands + bus words -> INCR bursts with WSTRB, done per command"
KIND = "writer"


def add_generate_arguments(parser):
    add_dma_arguments(parser)


def build(args):
    return build_dma(args, KIND)


def add_simulate_arguments(parser):
    add_simulate_dma_arguments(parser)


def simulate(args) -> dict:
    return simulate_dma(args, KIND)
