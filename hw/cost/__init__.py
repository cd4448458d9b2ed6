"""What is about all blocks: synthesis, per-layer and whole-model cost, latency, the block registry,
validation against synthesis and the probes that measure primitives."""
