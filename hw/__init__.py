"""tokensift.hw: Amaranth generators of the accelerator blocks.

One subpackage per block family, each with its generator, stream layouts, cycle formula and resource model
side by side (:mod:`~tokensift.hw.attention`, :mod:`~tokensift.hw.selector`,
:mod:`~tokensift.hw.score_combiner`); the pieces every block uses in :mod:`~tokensift.hw.common`
(fixed-point gates, MAC array, requantizer, buffers, manifest, resource primitives); and what is about all
of them in :mod:`~tokensift.hw.cost` (synthesis, layer and model cost, latency, registry, validation).
Blocks import ``common`` only; ``cost`` imports the blocks; nothing imports upwards.
"""
