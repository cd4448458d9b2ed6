"""tokensift: FPGA co-design for token-pruning vision transformers."""
__version__ = "0.1.0"
