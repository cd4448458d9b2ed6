"""tokensift.sim: cocotb testbenches and the Verilator runner."""
