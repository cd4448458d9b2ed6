"""Exceptions a user can hit. Each carries one sentence that says what to change."""

__all__ = ["TokensiftError", "ToolchainError", "NotYetAvailableError"]


class TokensiftError(Exception):
    """Base class of errors the CLI reports as one line instead of a traceback."""


class ToolchainError(TokensiftError, RuntimeError):
    """A required external tool (Verilator, Yosys) is missing or too old."""


class NotYetAvailableError(TokensiftError, NotImplementedError):
    """A subcommand whose implementation has not landed yet."""
