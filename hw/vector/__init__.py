"""The streaming vector units that sit next to the GEMM engine (LayerNorm, GELU, residual add, token mean).

Each unit is a module of its own with its stream layouts, cycle formula and resource model beside it
(``layernorm.py`` with ``layernorm_*.py``, ...); import them from their modules, so one unit landing never
edits another's.
"""
