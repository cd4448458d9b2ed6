"""``tokensift simulate model`` / ``generate model``: the whole-model accelerator (:mod:`.block_accelerator`)."""

from tokensift.commands.block_accelerator import (  # noqa: F401
    HELP,
    add_generate_arguments,
    add_simulate_arguments,
    build,
    simulate,
)
