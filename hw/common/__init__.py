"""Pieces every block uses: fixed-point gates, the MAC array, the requantizer, buffers, the manifest and
the resource primitives (:class:`~tokensift.hw.common.resources.Resources`, memory mapping, multiplier
DSPs, the LUT/FF fit) that each block's resource model builds on."""
