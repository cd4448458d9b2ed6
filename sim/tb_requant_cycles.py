"""cocotb: the requantizer's cycles with no stalls, for :func:`tokensift.hw.common.requant_resources.cycles`.

``count`` values stream in back to back with ``o_stream.ready`` held high; the testbench counts the
clock edges from the first input transfer to the last output transfer, both included, and reports it
as ``cycles`` (and how many outputs came, to check nothing was lost).
"""

from __future__ import annotations

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly

from tokensift.sim.runner import tb_params, tb_report
from tokensift.sim.streams import StreamSource, reset, start_clock


@cocotb.test()
async def stall_free_stream(dut):
    p = tb_params()
    n = p["count"]
    start_clock(dut)
    dut.o_stream__ready.value = 1
    await reset(dut)
    src = StreamSource(dut, "i_stream", idle=0.0)
    src.send([(i % 200) - 100 for i in range(n)])
    cycle, first_in, last_out, outputs = 0, None, None, 0
    while outputs < n and cycle < 10 * n + 100:
        # mid-cycle, after the source has driven: valid & ready now is a transfer at the next rising edge
        await FallingEdge(dut.clk)
        await ReadOnly()
        cycle += 1
        if first_in is None and dut.i_stream__valid.value and dut.i_stream__ready.value:
            first_in = cycle
        if dut.o_stream__valid.value and dut.o_stream__ready.value:
            outputs += 1
            last_out = cycle
    assert outputs == n, f"{outputs} of {n} outputs"
    tb_report(count=n, outputs=outputs, cycles=last_out - first_in + 1)
