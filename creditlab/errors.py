"""Exceptions and warnings raised by creditlab.

Every error raised for bad user input is a :class:`CreditlabError` and also a
:class:`ValueError` or :class:`TypeError`, so ``except ValueError`` keeps working.
Messages name the argument, what was expected and what was received.
"""

from __future__ import annotations

__all__ = [
    "CreditlabError",
    "ShapeError",
    "DtypeError",
    "NonFiniteError",
    "RangeError",
    "EmptyBatchError",
    "MaskError",
    "GroupError",
    "MissingColumnError",
    "DataFormatError",
    "UnknownMethodError",
    "PluginError",
    "DependencyVersionError",
    "DegenerateGroupWarning",
    "CreditlabWarning",
]


class CreditlabError(Exception):
    """Base class of every creditlab error."""


class ShapeError(CreditlabError, ValueError):
    """An array has the wrong shape, or is ragged where a padded array is needed."""


class DtypeError(CreditlabError, TypeError):
    """An array has a dtype that cannot be used (strings, complex numbers, fractional ids)."""


class NonFiniteError(CreditlabError, ValueError):
    """An array holds NaN or +/-inf where finite numbers are required."""


class RangeError(CreditlabError, ValueError):
    """A scalar or array value lies outside its allowed range (e.g. gamma outside [0, 1])."""


class EmptyBatchError(CreditlabError, ValueError):
    """A batch holds no episodes, or an episode holds no steps."""


class MaskError(CreditlabError, ValueError):
    """A mask is not a prefix mask (a padding step inside an episode) or is not boolean."""


class GroupError(CreditlabError, ValueError):
    """Group ids do not match the batch (wrong length, wrong type)."""


class MissingColumnError(CreditlabError, ValueError):
    """A Parquet/JSONL episodes file lacks a required column."""


class DataFormatError(CreditlabError, ValueError):
    """An episodes file or record list is malformed (duplicate steps, gaps, inconsistent values)."""


class UnknownMethodError(CreditlabError, KeyError):
    """A method name is not in the registry."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class PluginError(CreditlabError, ImportError):
    """A method provider or a CLI command (an entry point) failed to import."""


class DependencyVersionError(CreditlabError, ImportError):
    """An installed package is outside the versions a creditlab adapter is tested with."""


class CreditlabWarning(UserWarning):
    """Base class of creditlab warnings."""


class DegenerateGroupWarning(CreditlabWarning):
    """Some groups had a single member or zero reward spread; they received advantage 0."""
