"""The streaming vector units next to the GEMM engine (issue 16): one module per unit, each with its
parameters, stream layouts, cycle formula and resource model."""
