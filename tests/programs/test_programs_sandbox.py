"""The sandbox: results, limits, and containment of hostile code with the static checks bypassed.

Static validation and the Python guards are early feedback only; here every hostile program is
sent straight to the sandbox (no AST check), with the guards on and off, to show that the kernel
layers contain it. Controls run the same attack with the layers switched off (degraded mode,
accepted explicitly), so each containment test could fail. Attacks of the issue-11 classes are in
tests/programs/test_programs_sandbox_attacks.py.
"""

import os
import signal
import socket
import sys
import sysconfig
import threading
import time

import numpy as np
import pytest

from creditlab.programs import ProgramError, SandboxConfig, SandboxedProgram, probe_layers
from creditlab.programs.errors import SandboxUnavailableError
from creditlab.programs.sandbox import _view
from tests.helpers.hostile_programs import HOSTILE, render
from tests.helpers.programs_helpers import FAST, no_leftovers  # noqa: F401  (autouse fixture)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox layers are Linux-specific")

ALL_OFF = dict(
    namespaces=False, landlock=False, seccomp=False, drop_privileges=False, python_guards=False, allow_degraded=True
)
LAYERS = {
    "namespaces",
    "seccomp",
    "landlock",
    "rlimits",
    "filesystem",
    "uid",
    "no_new_privs",
    "cgroup",
    "python_guards",
}
OBS = np.arange(12, dtype=np.float64).reshape(4, 3)
ACT = np.ones((4, 2))


@pytest.fixture
def listener():
    """A TCP server on 127.0.0.1 that records every connection (the exfiltration target)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    hits = []
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except (TimeoutError, OSError):
                continue
            hits.append(conn.recv(100))
            conn.close()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield srv.getsockname()[1], hits
    stop.set()
    t.join(2)
    srv.close()


@pytest.fixture
def paths(tmp_path, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    os.chmod(secret, 0o600)
    target = tmp_path / "pwned.txt"
    monkeypatch.setenv("CREDITLAB_TEST_SECRET", "s3cr3t-value")
    return {"SECRET_FILE": secret, "TARGET": target, "SECRET_NAME": "CREDITLAB_TEST_SECRET", "PARENT_PID": os.getpid()}


_LAYERS: dict[str, str] = {}


def require_layers(*names: str) -> None:
    """Namespaces and seccomp are installed by scripts/install.sh: a missing one fails the test.
    Landlock is a kernel feature (>= 5.13) and dropping privileges needs root: those may skip."""
    if not _LAYERS:
        _LAYERS.update(probe_layers(FAST.replace(allow_degraded=True)))
    for name in names:
        if name in ("namespaces", "seccomp"):
            assert _LAYERS[name].startswith("on"), f"{name} is unavailable here: {_LAYERS[name]}"
        elif name == "landlock" and not _LAYERS[name].startswith("on"):
            pytest.skip(f"Landlock unavailable on this kernel: {_LAYERS[name]}")
        elif name == "drop_privileges" and os.geteuid() != 0:
            pytest.skip("dropping privileges is tested as root (CI); a non-root caller is unprivileged already")


def run(code: str, config: SandboxConfig = FAST, *args):
    with SandboxedProgram(code, entry="evaluation_func", config=config) as prog:
        return prog.call(*(args or (OBS, ACT)))


# ---------------------------------------------------------------------- ordinary use


def test_results_and_layers():
    code = "import numpy as np\ndef evaluation_func(o, a):\n    print('hi')\n    return [o[:, :1] * 2, np.sum(a, axis=1, keepdims=True)]\n"
    with SandboxedProgram(code, entry="evaluation_func", config=FAST) as prog:
        out = prog.call(OBS, ACT)
        layers = prog.layers
        pid = prog.pid
        assert pid != os.getpid()
    # factor 0 = obs[:, 0] * 2 = [0, 3, 6, 9] * 2; factor 1 = sum of two ones = 2
    assert out.outputs["factor_0"].ravel().tolist() == [0.0, 6.0, 12.0, 18.0]
    assert out.outputs["factor_1"].ravel().tolist() == [2.0] * 4
    assert out.structure == "list" and out.stdout == "hi\n"
    assert set(layers) == LAYERS
    assert all(v.startswith("on") or v.startswith("off: ") for v in layers.values()), layers
    for name in ("namespaces", "seccomp", "filesystem", "uid", "no_new_privs", "rlimits", "python_guards"):
        assert layers[name].startswith("on"), (name, layers[name])
    assert "not a security layer" in layers["python_guards"]


def test_reward_mode_with_components():
    code = (
        "import numpy as np\ndef compute_reward(o, a, n):\n"
        "    d = -np.abs(n[:, 0])\n    e = -0.1 * np.sum(a ** 2, axis=1)\n    return d + e, {'distance': d, 'effort': e}\n"
    )
    with SandboxedProgram(code, entry="compute_reward", mode="reward", config=FAST) as prog:
        out = prog.call(OBS, ACT, OBS + 1)
    # distance = -|obs[:, 0] + 1| = -[1, 4, 7, 10]; effort = -0.1 * 2
    assert out.outputs["component:distance"].tolist() == [-1.0, -4.0, -7.0, -10.0]
    np.testing.assert_allclose(out.outputs["reward"], [-1.2, -4.2, -7.2, -10.2])
    assert out.structure == "tuple"


def test_worker_is_reused_and_restarted_after_a_timeout():
    code = "def evaluation_func(o, a):\n    while o[0, 0] < 0:\n        pass\n    return [o[:, :1]]\n"
    prog = SandboxedProgram(code, entry="evaluation_func", config=FAST)
    try:
        prog.call(OBS, ACT)
        first = prog.pid
        prog.call(OBS, ACT)
        assert prog.pid == first  # persistent worker
        with pytest.raises(ProgramError) as exc:
            prog.call(-OBS - 1, ACT)
        assert exc.value.kind == "timeout"
        out = prog.call(OBS, ACT)  # a fresh worker, same program
        assert prog.pid != first and prog.restarts == 1
        assert out.outputs["factor_0"].ravel().tolist() == [0.0, 3.0, 6.0, 9.0]
    finally:
        prog.close()


def test_large_batches_round_trip_exactly():
    rng = np.random.default_rng(0)
    obs, act = rng.standard_normal((200_000, 17)), rng.standard_normal((200_000, 6))
    code = "import numpy as np\ndef evaluation_func(o, a):\n    return [o[:, :1] - a[:, 1:2], np.tanh(o[:, 16:17])]\n"
    out = run(code, FAST.replace(output_mb=64), obs, act)
    np.testing.assert_array_equal(out.outputs["factor_0"], obs[:, :1] - act[:, 1:2])
    np.testing.assert_array_equal(out.outputs["factor_1"], np.tanh(obs[:, 16:17]))


def test_program_exceptions_are_reported_with_the_program_line():
    code = "def evaluation_func(o, a):\n    x = 1\n    return [o[:, :1] / 0 + undefined_name]\n"
    with pytest.raises(ProgramError) as exc:
        run(code)
    assert exc.value.kind == "error"
    assert "NameError" in exc.value.reason and "line 3" in exc.value.reason


def test_load_errors_are_failures_of_the_program():
    with pytest.raises(ProgramError) as exc:
        run("def evaluation_func(o, a)\n    return []\n")
    assert exc.value.kind == "error" and "SyntaxError" in exc.value.reason
    with pytest.raises(ProgramError) as exc:
        run("def other(o, a):\n    return []\n")
    assert "defines no function 'evaluation_func'" in exc.value.reason


def test_config_validation():
    with pytest.raises(ValueError, match="timeout"):
        SandboxConfig(timeout=0)
    with pytest.raises(ValueError, match="memory_mb"):
        SandboxConfig(memory_mb=100)


def test_probe_layers_reports_every_layer():
    layers = probe_layers(FAST)
    assert set(layers) == LAYERS


def test_missing_tool_refuses_unless_degraded_mode_is_accepted(tmp_path):
    missing = FAST.replace(bwrap=str(tmp_path / "no-bwrap"))
    layers = probe_layers(missing)  # no worker is started: the report says what is missing
    assert layers["namespaces"].startswith("off: bubblewrap (bwrap) not found")
    assert layers["degraded"].startswith("refused: namespaces")
    code = "def evaluation_func(o, a):\n    return [o[:, :1]]\n"
    with pytest.raises(SandboxUnavailableError, match="apt-get install bubblewrap"):
        SandboxedProgram(code, entry="evaluation_func", config=missing).start()
    with pytest.raises(SandboxUnavailableError, match="seccomp"):
        SandboxedProgram(code, entry="evaluation_func", config=FAST.replace(seccomp=False)).start()
    out = run(code, missing.replace(allow_degraded=True))  # accepted explicitly: runs, and says so
    assert out.outputs["factor_0"].ravel().tolist() == [0.0, 3.0, 6.0, 9.0]
    with SandboxedProgram(code, entry="evaluation_func", config=missing.replace(allow_degraded=True)) as prog:
        assert prog.layers["namespaces"].startswith("off: bubblewrap (bwrap) not found")
        assert "namespaces" in prog.layers["degraded"]


# ---------------------------------------------------------------------- hostile code, static checks bypassed

# name -> failure kinds accepted when every layer is on (the static check is skipped)
EXPECTED = {
    "endless_loop": {"timeout"},
    "alloc_20gb": {"memory"},
    "alloc_20gb_list": {"memory"},
    "fork_loop": {"error", "refused"},
    "socket_loopback": {"error", "refused"},
    "read_outside": {"error", "refused"},
    "read_world_readable": {"error", "refused"},
    "write_outside": {"error", "refused"},
    "read_env": {"error", "refused"},
    "read_parent_environ": {"error", "refused"},
    "subclasses_escape": {"error", "refused"},
    "eval_import": {"error", "refused"},
    "ctypes_libc": {"error", "refused"},
    "kill_parent": {"error", "refused"},
    "output_flood": {"timeout"},
    "stdout_flood": {"error", "refused", "timeout"},
    "huge_result": {"output", "timeout", "memory"},  # building 400 MB may already exceed the time limit
    "numpy_cpu_burn": {"timeout", "cpu"},
    "recursion_bomb": {"error"},
}


@pytest.mark.parametrize("guards", [True, False], ids=["python_guards", "os_layers_only"])
def test_hostile_programs_are_contained_without_static_checks(guards, listener, paths):
    port, hits = listener
    config = FAST.replace(python_guards=guards, timeout=1.0, cpu_seconds=1.0)
    assert set(EXPECTED) == set(HOSTILE)
    outcomes = {}
    for name, template in HOSTILE.items():
        code = render(template, PORT=port, **paths)
        try:
            out = run(code, config)
        except ProgramError as exc:
            outcomes[name] = exc.kind
            assert exc.reason, name
            assert "s3cr3t-value" not in exc.reason and "top secret" not in exc.reason
            continue
        # Ran to the end: only acceptable when the attack achieved nothing.
        outcomes[name] = "ran"
        vals = out.outputs["factor_0"].ravel()
        if name == "read_env":
            assert vals.tolist() == [0.0] * 4, "the worker saw the parent's environment"
        elif name in ("subclasses_escape", "eval_import", "ctypes_libc", "write_outside"):
            pass  # the harm check below (no file created outside) decides
        else:
            pytest.fail(f"{name} ran to completion in the sandbox (guards={guards})")
    for name, kind in outcomes.items():
        ran_ok = ("read_env", "subclasses_escape", "eval_import", "ctypes_libc", "write_outside")
        allowed = EXPECTED[name] | ({"ran"} if name in ran_ok and not guards else set())
        assert kind in allowed, f"{name}: {kind} not in {allowed}"
    assert not paths["TARGET"].exists(), "a hostile program wrote outside its folder"
    assert hits == [], "a hostile program reached the loopback listener"
    assert os.getpid() and threading.main_thread().is_alive()


# ---------------------------------------------------------------------- each layer alone (with controls)

CONNECT = """
import socket
def evaluation_func(observation, action):
    s = socket.create_connection(("127.0.0.1", {PORT}), timeout=1)
    s.sendall(b"x")
    s.close()
    return [observation[:, :1]]
"""


@pytest.mark.parametrize("layer", ["namespaces", "landlock", "seccomp", "python_guards"])
def test_each_network_layer_alone_blocks_loopback(layer, listener):
    require_layers(layer)
    port, hits = listener
    code = render(CONNECT, PORT=port)
    run(code, FAST.replace(**ALL_OFF))  # control: with no layer the connection goes through
    deadline = time.monotonic() + 10  # the listener thread records it (a loaded machine may lag)
    while not hits and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(hits) == 1
    with pytest.raises(ProgramError):
        run(code, FAST.replace(**{**ALL_OFF, layer: True}))
    assert len(hits) == 1


READ = """
def evaluation_func(observation, action):
    return [observation[:, :1] * 0 + len(open("{PATH}").read())]
"""


@pytest.mark.parametrize("layer", ["namespaces", "landlock", "drop_privileges", "python_guards"])
def test_each_file_layer_alone_blocks_reading_a_private_file(layer, tmp_path):
    secret = tmp_path / "key"
    secret.write_text("0123456789")
    os.chmod(secret, 0o600)
    code = render(READ, PATH=secret)
    out = run(code, FAST.replace(**ALL_OFF))  # control
    assert out.outputs["factor_0"].ravel()[0] == 10
    require_layers(layer)
    with pytest.raises(ProgramError) as exc:
        run(code, FAST.replace(**{**ALL_OFF, layer: True}))
    assert exc.value.kind in ("error", "refused")


WRITE = """
def evaluation_func(observation, action):
    with open("{PATH}", "w") as fh:
        fh.write("x")
    return [observation[:, :1]]
"""


@pytest.mark.parametrize("layer", ["namespaces", "landlock", "drop_privileges", "python_guards"])
def test_each_file_layer_alone_blocks_writing_outside(layer, tmp_path):
    os.chmod(tmp_path, 0o755)
    target = tmp_path / "out.txt"
    code = render(WRITE, PATH=target)
    run(code, FAST.replace(**ALL_OFF))  # control
    assert target.exists()
    target.unlink()
    require_layers(layer)
    with pytest.raises(ProgramError):
        run(code, FAST.replace(**{**ALL_OFF, layer: True}))
    assert not target.exists()


FORK_ONCE = """
import os
def evaluation_func(observation, action):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return [observation[:, :1] * 0 + 1]
"""


@pytest.mark.parametrize("layer", ["seccomp", "drop_privileges", "python_guards"])
def test_each_process_layer_alone_blocks_fork(layer):
    out = run(FORK_ONCE, FAST.replace(**ALL_OFF))  # control: one child, reaped at once
    assert out.outputs["factor_0"].ravel()[0] == 1
    require_layers(layer)
    with pytest.raises(ProgramError) as exc:
        run(FORK_ONCE, FAST.replace(**{**ALL_OFF, layer: True}))
    assert exc.value.kind in ("error", "refused")


def test_signals_to_other_processes_are_refused():
    victim_code = render(HOSTILE["kill_parent"], PARENT_PID=os.getpid())
    for layer in ("namespaces", "seccomp", "landlock", "drop_privileges"):
        require_layers(layer)
        with pytest.raises(ProgramError):
            run(victim_code, FAST.replace(**{**ALL_OFF, layer: True}))
    assert signal.getsignal(signal.SIGTERM) is not None  # still alive to check


def test_environment_is_clean_even_without_guards(monkeypatch):
    monkeypatch.setenv("CREDITLAB_TEST_SECRET", "abc")
    code = "import os\ndef evaluation_func(o, a):\n    return [o[:, :1] * 0 + len(os.environ)]\n"
    for config in (FAST.replace(python_guards=False), FAST.replace(**ALL_OFF)):
        out = run(code, config)
        assert out.outputs["factor_0"].ravel()[0] <= 10  # only the few variables the sandbox sets
    code2 = "import os\ndef evaluation_func(o, a):\n    return [o[:, :1] * 0 + len(os.environ.get('CREDITLAB_TEST_SECRET', ''))]\n"
    assert run(code2, FAST.replace(**ALL_OFF)).outputs["factor_0"].ravel()[0] == 0


def test_memory_limit_binds_without_guards():
    code = "import numpy as np\ndef evaluation_func(o, a):\n    x = np.ones(100 * 1024 ** 2)\n    return [o[:, :1] + x[0]]\n"
    # 800 MB of float64 does not fit in 512 MB of address space
    for config in (FAST.replace(python_guards=False), FAST.replace(**ALL_OFF)):
        with pytest.raises(ProgramError) as exc:
            run(code, config)
        assert exc.value.kind == "memory"


def test_file_size_limit_binds():
    code = "def evaluation_func(o, a):\n    with open('big.bin', 'wb') as fh:\n        fh.write(b'0' * (8 * 1024 * 1024))\n    return [o[:, :1]]\n"
    with pytest.raises(ProgramError) as exc:
        run(code, FAST.replace(python_guards=False, file_mb=1))
    assert "File too large" in exc.value.reason


def test_private_tmpfs_is_bounded_in_total():
    # many files under the per-file limit: the tmpfs size (2 MB) bounds the total
    code = (
        "def evaluation_func(o, a):\n    for i in range(100):\n        with open(f'f{i}', 'wb') as fh:\n"
        "            fh.write(b'0' * 500000)\n    return [o[:, :1]]\n"
    )
    with pytest.raises(ProgramError) as exc:
        run(code, FAST.replace(python_guards=False, tmpfs_mb=2))
    assert "No space left" in exc.value.reason


def test_view_holds_the_interpreter_stdlib_and_numpy_only():
    view = _view(None)
    hosts = [src for src, _ in view.binds]
    assert any(dst == "/sandbox/site/numpy" for _, dst in view.binds)
    site = sysconfig.get_paths()["purelib"]
    assert not any(h == site or (h.startswith(site + "/") and "/numpy" not in h) for h in hosts), hosts
    assert not any(h in ("/", "/etc", "/root", "/home", "/tmp", "/usr", "/usr/lib", "/proc", "/dev") for h in hosts)
    # what the program sees at the top: only these folders
    code = "import os\ndef evaluation_func(o, a):\n    print(sorted(os.listdir('/')))\n    return [o[:, :1]]\n"
    out = run(code, FAST.replace(python_guards=False, landlock=False))  # Landlock alone refuses to list '/'
    top = set(eval(out.stdout))  # noqa: S307  (our own print of a list of names)
    assert top <= {"etc", "lib", "lib64", "usr", "sandbox", "tmp", "root", "opt", "home", "work"}, top
    assert not {"proc", "dev", "sys", "var", "boot", "run"} & top, top


def test_interrupted_call_discards_the_worker(monkeypatch):
    from creditlab.programs import sandbox

    code = "def evaluation_func(o, a):\n    return [o[:, :1]]\n"
    with SandboxedProgram(code, entry="evaluation_func", config=FAST) as prog:
        first = prog.pid
        real = sandbox._Worker.receive
        calls = []

        def interrupted(self, *args, **kw):
            if not calls:
                calls.append(1)
                raise KeyboardInterrupt
            return real(self, *args, **kw)

        monkeypatch.setattr(sandbox._Worker, "receive", interrupted)
        with pytest.raises(KeyboardInterrupt):
            prog.call(OBS, ACT)
        out = prog.call(OBS, ACT)  # a fresh worker: no stale reply is read
        assert prog.pid != first and out.outputs["factor_0"].ravel().tolist() == [0.0, 3.0, 6.0, 9.0]


def test_failed_start_leaves_nothing_behind():
    for config in (FAST, FAST.replace(**ALL_OFF)):
        with pytest.raises(FileNotFoundError):
            SandboxedProgram(
                "def f(o, a):\n    return [o]\n", entry="f", config=config.replace(python="/nonexistent/python")
            ).start()


def test_private_folder_is_removed_even_when_the_program_locks_it_down():
    code = "def evaluation_func(o, a):\n    import numpy as np\n    return [o[:, :1]]\n"
    lock = (
        "import os\n"
        "os.makedirs('d/e', exist_ok=True)\n"
        "open('d/e/f', 'w').write('x')\n"
        "os.chmod('d/e', 0)\n"
        "os.chmod('d', 0)\n"
    )
    prog = SandboxedProgram(lock + code, entry="evaluation_func", config=FAST.replace(**ALL_OFF))
    prog.start()
    folder = prog.temp_dir
    assert os.path.isdir(folder)
    prog.close()
    assert not os.path.exists(folder)


def test_nothing_of_the_sandbox_survives_close():
    code = "def evaluation_func(o, a):\n    return [o[:, :1]]\n"
    prog = SandboxedProgram(code, entry="evaluation_func", config=FAST).start()
    outer, inner = prog.pid, prog.sandbox_pid
    assert outer and inner and prog.temp_dir is None  # no folder on the host: a tmpfs inside the sandbox
    assert os.path.exists(f"/proc/{inner}")
    prog.close()

    def gone(pid):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().rsplit(") ", 1)[1][0] in "ZX"
        except OSError:
            return True

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (gone(outer) and gone(inner)):
        time.sleep(0.05)
    assert gone(outer) and gone(inner)
