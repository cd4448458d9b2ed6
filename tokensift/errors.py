"""Exceptions a user can hit, and the one rule the CLI applies to every error.

The rule (stated once in the README, enforced once in :func:`tokensift.cli.main`):

- a user error (an argument, a file or folder, the data, a memory budget) is one line on stderr that names
  the thing and what is wrong, exit code 2, found before expensive work starts; with ``--json`` the error is
  also one JSON object on stdout;
- anything else is a bug in tokensift: one line that says so and where to report it, exit code 1; the
  traceback is printed only with ``tokensift --debug`` or ``TOKENSIFT_DEBUG=1``.

User errors are :class:`TokensiftError` subclasses, or ``ValueError``/``TypeError`` with one sentence (the
Python API's contract), or ``OSError``/``MemoryError`` that escaped a check (:func:`describe_user_error`).
"""

from __future__ import annotations

__all__ = ["TokensiftError", "ToolchainError", "NotYetAvailableError", "BUG_REPORTS", "DEBUG_ENV",
           "is_user_error", "describe_user_error"]

#: where a bug in tokensift is reported (printed with every unexpected exception); the project publishes
#: no web address of its own, so the message names the tracker, not a guessed URL
BUG_REPORTS = "the tokensift issue tracker"
#: set to 1 to see the traceback of an unexpected exception (the same as ``tokensift --debug``)
DEBUG_ENV = "TOKENSIFT_DEBUG"


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


class PathError(TokensiftError, ValueError):
    """A file or folder that cannot be read or written (the message names it and says why)."""


class MemoryBudgetError(TokensiftError, ValueError):
    """Work that would need more memory than this machine has (the message says what to make smaller)."""


class TrainingDivergedError(TokensiftError, ValueError):
    """Training whose loss stopped being a finite number (the learning rate is the usual cause)."""


__all__ += ["InvalidArgumentError", "PathError", "MemoryBudgetError", "TrainingDivergedError"]

_USER_ERRORS = (TokensiftError, ValueError, TypeError, OSError, MemoryError)


def is_user_error(exc: BaseException) -> bool:
    """True for the errors the CLI reports as a user's mistake (exit 2), False for a bug (exit 1)."""
    return isinstance(exc, _USER_ERRORS)


def describe_user_error(exc: BaseException) -> str:
    """One line for a user error: its message, or for an ``OSError`` the file and the reason."""
    if isinstance(exc, OSError) and not isinstance(exc, TokensiftError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        if exc.filename is not None:
            target = f" -> {str(exc.filename2)!r}" if exc.filename2 is not None else ""
            return f"{str(exc.filename)!r}{target}: {reason}"
        return reason
    if isinstance(exc, MemoryError) and not isinstance(exc, TokensiftError):
        return "out of memory" + (f" ({exc})" if str(exc) else "") + "; make the problem smaller"
    text = str(exc) or type(exc).__name__
    # a multi-line message (a library's) keeps the one-line contract: its lines joined
    return " ".join(line.strip() for line in text.splitlines() if line.strip())
