"""Exceptions a user can hit. Each carries one sentence that says what to change."""

__all__ = ["TokensiftError", "ToolchainError", "NotYetAvailableError"]


class TokensiftError(Exception):
    """Base class of errors the CLI reports as one line instead of a traceback."""


class ToolchainError(TokensiftError, RuntimeError):
    """A required external tool (Verilator, Yosys) is missing or too old."""


class NotYetAvailableError(TokensiftError, NotImplementedError):
    """A subcommand whose implementation has not landed yet."""


class UnknownModelError(TokensiftError, ValueError):
    """A model name that is not in the registry of :mod:`tokensift.sw`."""


class UnknownMethodError(TokensiftError, ValueError):
    """A token-pruning method name that is not registered in :mod:`tokensift.sw.methods`."""


class CheckpointError(TokensiftError, ValueError):
    """A checkpoint file that is missing, unreadable, or does not fit the model."""


class DatasetError(TokensiftError, ValueError):
    """A dataset folder that is missing or not laid out as class folders of images."""


__all__ += ["UnknownModelError", "UnknownMethodError", "CheckpointError", "DatasetError"]


class InvalidArgumentError(TokensiftError, ValueError):
    """A command-line argument whose value does not fit (the message says which and why)."""


__all__ += ["InvalidArgumentError"]
