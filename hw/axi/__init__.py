"""The bus blocks of the whole-model accelerator: an AXI4-Lite register bank for the host (Zynq/PYNQ
convention) and AXI4 master read/write DMAs for the design's DRAM traffic (program, weights, input, logits).

Nothing here comes from amaranth-soc (PyPI holds only an empty placeholder of it): the register bank and the
bus signatures are this package's own, in the shape amaranth-soc gives its CSR bank (`docs/axi.md`).
"""
