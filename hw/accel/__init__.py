"""The whole-model accelerator: token buffers, op engines and the sequencer that walks a program from DRAM."""
