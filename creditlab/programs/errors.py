"""Exceptions of :mod:`creditlab.programs` (all are :class:`creditlab.errors.CreditlabError`)."""

from __future__ import annotations

import re

from ..errors import CreditlabError

__all__ = [
    "ProgramError",
    "SandboxUnavailableError",
    "SpecError",
    "LLMError",
    "BudgetExceededError",
    "ResponseFormatError",
    "printable",
]

# C0 controls (but tab and newline), DEL, C1 controls, and the Unicode format characters that
# reorder or hide text on a terminal (bidi overrides and isolates, zero-width, line separators).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_UNSAFE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _escape(match: re.Match) -> str:
    ch = match.group()
    code = ord(ch)
    if ch == "\n":
        return "\\n"
    if ch == "\t":
        return "\\t"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, *, one_line: bool = False, limit: int | None = None) -> str:
    """``text`` with every control character escaped (``\\x1b``, ``\\u202e`` ...), safe to print.

    Program-provided text (error messages, printed output) goes through this before it reaches a
    terminal or a log, so it cannot move the cursor, recolour, clear the screen or fake lines.
    With ``one_line=True`` newlines and tabs are escaped too.

    Example:
        >>> printable("ok\\x1b[2K\\rPASSED\\nnext", one_line=True)
        'ok\\\\x1b[2K\\\\x0dPASSED\\\\nnext'
    """
    s = text if isinstance(text, str) else str(text)
    if limit is not None and len(s) > limit:
        s = s[:limit] + "..."
    return (_UNSAFE_LINE if one_line else _UNSAFE).sub(_escape, s)


class ProgramError(CreditlabError, RuntimeError):
    """A program failed: rejected by validation, or it crashed, timed out or hit a limit in the sandbox.

    Attributes:
        kind: short machine-readable cause: ``static`` (rejected before running), ``timeout``,
            ``cpu``, ``memory``, ``crash``, ``refused`` (the sandbox refused an operation),
            ``error`` (the program raised), ``output`` (too large result), ``protocol`` (the
            worker's reply was malformed: forged or corrupted frames, bad sizes, bad JSON),
            ``invalid`` (ran, but the result failed a check), ``startup`` (the worker did not start).
        reason: the human-readable explanation, also fed back to the LLM in repair rounds. Control
            characters in it are escaped (it carries program-provided text); newlines are kept.
    """

    def __init__(self, kind: str, reason: str) -> None:
        reason = printable(reason)
        super().__init__(f"{kind}: {printable(reason, one_line=True)}")
        self.kind = kind
        self.reason = reason


class SandboxUnavailableError(CreditlabError, RuntimeError):
    """The kernel isolation the sandbox needs is missing here, and no degraded mode was accepted.

    The message says exactly which layer is missing and how to get it (``apt-get install
    bubblewrap``, ``pip install pyseccomp``, unprivileged user namespaces) or how to accept a
    weaker sandbox (``SandboxConfig(allow_degraded=True)``). No untrusted code ran.
    """


class SpecError(CreditlabError, ValueError):
    """A task spec file is malformed (names the field, the expectation and what was found)."""


class LLMError(CreditlabError, RuntimeError):
    """The LLM endpoint failed after all retries, or is not configured."""


class BudgetExceededError(LLMError):
    """A request would exceed the configured token or cost budget; no request was sent."""


class ResponseFormatError(CreditlabError, ValueError):
    """An LLM answer has no usable code or JSON in the expected format."""
