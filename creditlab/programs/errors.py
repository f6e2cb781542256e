"""Exceptions of :mod:`creditlab.programs` (all are :class:`creditlab.errors.CreditlabError`)."""

from __future__ import annotations

from ..errors import CreditlabError

__all__ = ["ProgramError", "SpecError", "LLMError", "BudgetExceededError", "ResponseFormatError"]


class ProgramError(CreditlabError, RuntimeError):
    """A program failed: rejected by validation, or it crashed, timed out or hit a limit in the sandbox.

    Attributes:
        kind: short machine-readable cause: ``static`` (rejected before running), ``timeout``,
            ``cpu``, ``memory``, ``crash``, ``refused`` (the sandbox refused an operation),
            ``error`` (the program raised), ``output`` (too large or malformed result),
            ``invalid`` (ran, but the result failed a check), ``startup`` (the worker did not start).
        reason: the human-readable explanation, also fed back to the LLM in repair rounds.
    """

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


class SpecError(CreditlabError, ValueError):
    """A task spec file is malformed (names the field, the expectation and what was found)."""


class LLMError(CreditlabError, RuntimeError):
    """The LLM endpoint failed after all retries, or is not configured."""


class BudgetExceededError(LLMError):
    """A request would exceed the configured token or cost budget; no request was sent."""


class ResponseFormatError(CreditlabError, ValueError):
    """An LLM answer has no usable code or JSON in the expected format."""
