"""The public surface: every name in __all__ imports and is documented."""

import inspect

import creditlab


def test_all_names_import_and_have_docstrings():
    for name in creditlab.__all__:
        obj = getattr(creditlab, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert obj.__doc__, f"{name} has no docstring"


def test_estimator_docstrings_state_shapes():
    for name in ("gae", "grpo", "gdpo", "rloo", "broadcast_to_tokens", "potential_shaping"):
        doc = getattr(creditlab, name).__doc__
        assert "[" in doc and "]" in doc, f"{name} docstring does not document shapes"
