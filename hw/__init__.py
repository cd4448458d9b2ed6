"""tokensift.hw: Amaranth generators of the accelerator blocks."""
