"""Attacks of the issue-11 classes, each against the full sandbox and against each layer alone.

Every attack first runs with the layers off (degraded mode, accepted explicitly) and must succeed
there -- the control that makes each containment test able to fail -- then with all layers on,
then with one layer at a time. The Python guards are off in most attacks: they are early
feedback, not a layer anything depends on (class 2 shows the program can switch them off).
"""

import json
import os
import random
import resource
import struct
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from creditlab.programs import ProgramError, SandboxedProgram
from creditlab.programs import sandbox as sb
from creditlab.programs.validate import check_static
from tests.helpers.hostile_programs import render
from tests.helpers.programs_helpers import FAST, no_leftovers  # noqa: F401  (autouse fixture)
from tests.programs.test_programs_sandbox import ACT, ALL_OFF, OBS, require_layers, run

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox layers are Linux-specific")

NO_GUARDS = FAST.replace(python_guards=False)
ROOT = os.geteuid() == 0


def alone(layer: str):
    return FAST.replace(**{**ALL_OFF, layer: True})


# ---------------------------------------------------------------------- 1 + 2: static rules and guards are not the boundary

BYPASS = """
import numpy as np
def evaluation_func(observation, action):
    data = np.ma.core.builtins.open("{PATH}").read()
    return [observation[:, :1] * 0 + len(data)]
"""

DISARM = """
import numpy as np
def evaluation_func(observation, action):
    b = np.ma.core.builtins
    worker = np.ma.core.inspect.sys.modules["_" + "_main_" + "_"]
    b.getattr(worker, "_st" + "ate")["untrusted"] = False
    data = b.open("{PATH}").read()
    return [observation[:, :1] * 0 + len(data)]
"""


def test_static_rules_are_bypassable_and_the_kernel_still_contains(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("0123456789")
    code = render(BYPASS, PATH=secret)
    assert check_static(code, entry="evaluation_func", min_args=2) == []  # the static rules miss it
    assert run(code, FAST.replace(**ALL_OFF)).outputs["factor_0"][0, 0] == 10  # control: it works
    for config in (FAST, NO_GUARDS, alone("namespaces")):
        with pytest.raises(ProgramError) as exc:
            run(code, config)
        assert exc.value.kind in ("refused", "error") and "0123456789" not in exc.value.reason


def test_guards_can_be_switched_off_from_inside_and_nothing_depends_on_them(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("0123456789")
    code = render(DISARM, PATH=secret)
    assert check_static(code, entry="evaluation_func", min_args=2) == []
    # control: with the guards as the only layer, the program disarms them and reads the file
    out = run(code, FAST.replace(**{**ALL_OFF, "python_guards": True}))
    assert out.outputs["factor_0"][0, 0] == 10
    with pytest.raises(ProgramError) as exc:  # every layer on: disarmed guards, and still no file
        run(code, FAST)
    assert "No such file" in exc.value.reason


# ---------------------------------------------------------------------- 3: SysV IPC

SHM_WRITE = """
import ctypes
def evaluation_func(observation, action):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    shmid = libc.shmget({KEY}, 1 << 20, 0o1666)
    if shmid < 0:
        raise OSError(ctypes.get_errno(), "shmget")
    addr = libc.shmat(shmid, None, 0)
    if addr is None or addr == ctypes.c_void_p(-1).value:
        raise OSError(ctypes.get_errno(), "shmat")
    ctypes.memmove(addr, b"leak", 4)
    return [observation[:, :1] * 0 + shmid]
"""

SHM_READ = """
import ctypes
def evaluation_func(observation, action):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmat.restype = ctypes.c_void_p
    shmid = libc.shmget({KEY}, 0, 0)
    if shmid < 0:
        raise OSError(ctypes.get_errno(), "shmget")
    addr = libc.shmat(shmid, None, 0o10000)
    if addr is None or addr == ctypes.c_void_p(-1).value:
        raise OSError(ctypes.get_errno(), "shmat")
    return [observation[:, :1] * 0 + float(ctypes.string_at(addr, 4) == b"leak")]
"""


def _remove_shm(key: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    shmid = libc.shmget(key, 0, 0)
    if shmid >= 0:
        libc.shmctl(shmid, 0, None)  # IPC_RMID


def test_sysv_shared_memory_does_not_pass_between_programs():
    key = random.randrange(1 << 20, 1 << 30)
    write, read = render(SHM_WRITE, KEY=key), render(SHM_READ, KEY=key)
    try:
        run(write, FAST.replace(**ALL_OFF))  # control: a later program in a fresh worker reads it
        assert run(read, FAST.replace(**ALL_OFF)).outputs["factor_0"][0, 0] == 1.0
    finally:
        _remove_shm(key)
    for config in (NO_GUARDS, alone("namespaces"), alone("seccomp")):
        try:
            try:
                run(write, config)  # refused by seccomp, or created in the sandbox's own ipc namespace
            except ProgramError:
                pass
            with pytest.raises(ProgramError) as exc:
                run(read, config)
            assert exc.value.kind == "error"
        finally:
            _remove_shm(key)
    require_layers("seccomp")
    with pytest.raises(ProgramError, match=r"\[Errno 1\] shmget"):  # EPERM from the allow-list
        run(write, alone("seccomp"))


# ---------------------------------------------------------------------- 4: other processes

PRLIMIT = """
import ctypes
def evaluation_func(observation, action):
    libc = ctypes.CDLL(None, use_errno=True)
    class R(ctypes.Structure):
        _fields_ = [("cur", ctypes.c_uint64), ("max", ctypes.c_uint64)]
    new = R(7, 7)
    if libc.prlimit({PID}, 7, ctypes.byref(new), None) != 0:
        raise OSError(ctypes.get_errno(), "prlimit64")
    if libc.setpriority(0, {PID}, 19) != 0:
        raise OSError(ctypes.get_errno(), "setpriority")
    return [observation[:, :1]]
"""


def _victim():
    kw = {"user": 65534, "group": 65534, "extra_groups": []} if ROOT else {}
    return subprocess.Popen(["sleep", "60"], **kw)


def _files_limit(pid: int) -> str:
    with open(f"/proc/{pid}/limits") as fh:
        return next(line for line in fh if line.startswith("Max open files")).split()[3]


def test_other_processes_of_the_same_uid_are_out_of_reach():
    victim = _victim()
    try:
        before = _files_limit(victim.pid)
        code = render(PRLIMIT, PID=victim.pid)
        run(code, FAST.replace(**{**ALL_OFF, "drop_privileges": True}))  # control: nobody cripples nobody
        assert _files_limit(victim.pid) == "7"
    finally:
        victim.kill()
        victim.wait()
    victim = _victim()
    try:
        code = render(PRLIMIT, PID=victim.pid)
        before = _files_limit(victim.pid)
        for config in (NO_GUARDS, alone("namespaces"), alone("seccomp")):
            with pytest.raises(ProgramError) as exc:
                run(code, config)
            assert (
                "[Errno 3] prlimit64" in exc.value.reason or "[Errno 1] prlimit64" in exc.value.reason
            )  # ESRCH / EPERM
        assert _files_limit(victim.pid) == before
    finally:
        victim.kill()
        victim.wait()


def test_the_program_runs_as_an_unprivileged_host_uid():
    with SandboxedProgram(
        "def evaluation_func(o, a):\n    return [o[:, :1]]\n", entry="evaluation_func", config=FAST
    ) as prog:
        init = prog.sandbox_pid
        with open(f"/proc/{init}/task/{init}/children") as fh:
            workers = [int(p) for p in fh.read().split()]
        assert len(workers) == 1
        with open(f"/proc/{workers[0]}/status") as fh:
            uids = next(line for line in fh if line.startswith("Uid:")).split()[1:]
        expected = "65534" if ROOT else str(os.geteuid())
        assert uids == [expected] * 4, uids
        assert prog.layers["uid"].startswith("on")


# ---------------------------------------------------------------------- 5 + 6: metadata and reads outside the view

META = """
import os
def evaluation_func(observation, action):
    size = os.stat("{SECRET}").st_size
    os.chmod("{OWNED}", 0o777)
    os.utime("{OWNED}", (0, 0))
    return [observation[:, :1] * 0 + size]
"""


def test_metadata_outside_the_folder_is_out_of_reach(tmp_path):
    os.chmod(tmp_path, 0o755)
    secret = tmp_path / "shadow"
    secret.write_text("x" * 1234)
    os.chmod(secret, 0o600)
    owned = tmp_path / "owned"
    owned.write_text("mine")
    os.chmod(owned, 0o644)
    if ROOT:
        os.chown(owned, 65534, 65534)
    code = render(META, SECRET=secret, OWNED=owned)
    assert run(code, FAST.replace(**ALL_OFF)).outputs["factor_0"][0, 0] == 1234  # control
    assert owned.stat().st_mode & 0o777 == 0o777 and owned.stat().st_mtime == 0
    os.chmod(owned, 0o644)
    os.utime(owned, (1e9, 1e9))
    for config in (NO_GUARDS, alone("namespaces"), alone("seccomp")):
        with pytest.raises(ProgramError):
            run(code, config)
        assert owned.stat().st_mode & 0o777 == 0o644 and owned.stat().st_mtime == 1e9


READ_VENV = """
def evaluation_func(observation, action):
    data = open("{PATH}", "rb").read()
    return [observation[:, :1] * 0 + len(data)]
"""


def test_reads_are_limited_to_the_interpreter_stdlib_and_numpy():
    import creditlab

    for path in (creditlab.__file__, json.__file__.replace("json/__init__.py", "site.py")):
        code = render(READ_VENV, PATH=path)
        assert run(code, FAST.replace(**ALL_OFF)).outputs["factor_0"][0, 0] > 0  # control
    code = render(READ_VENV, PATH=creditlab.__file__)  # the project's own code, in site-packages/editable
    for layer in ("namespaces", "landlock"):
        require_layers(layer)
        with pytest.raises(ProgramError):
            run(code, alone(layer))
    with pytest.raises(ProgramError, match="No such file"):
        run(code, NO_GUARDS)
    # numpy and the stdlib are readable (what the documented view holds)
    stdlib = render(READ_VENV, PATH=json.__file__)
    assert run(stdlib, NO_GUARDS).outputs["factor_0"][0, 0] > 0


# ---------------------------------------------------------------------- 8: a parent that never trusts the reply

FORGE = """
import json, os, struct, sys
def evaluation_func(observation, action):
    fd = json.loads(sys.argv[1])["out_fd"]
    payload = {PAYLOAD}
    if isinstance(payload, dict):
        raw = json.dumps(payload).encode()
        payload = struct.pack("!I", len(raw)) + raw
    os.write(fd, payload)
    {AFTER}
"""


def _frame(header: dict) -> str:
    return repr(header)


GOOD = {"seq": 2, "ok": True, "structure": "list", "seconds": 0.0, "cpu": 0.0, "stdout": ""}
FORGED = {
    "int64_overflow": _frame({**GOOD, "arrays": [{"name": "factor_0", "shape": [2**39, 2**39, 2**39]}]}),
    "beyond_output_mb": _frame({**GOOD, "arrays": [{"name": "factor_0", "shape": [100_000_000, 1]}]}),
    "negative_size": _frame({**GOOD, "arrays": [{"name": "a", "shape": [-1]}, {"name": "b", "shape": [4, 1]}]}),
    "non_numeric": _frame({**GOOD, "cpu": "a lot", "arrays": []}),
    "bool_as_int": _frame({**GOOD, "seq": True, "arrays": []}),
    "wrong_seq": _frame({**GOOD, "seq": 7, "arrays": []}),
    "unknown_field": _frame({**GOOD, "arrays": [], "layers": {"seccomp": "on"}}),
    "deep_json": "struct.pack('!I', 60000) + b'[' * 30000 + b']' * 30000",
    "huge_length": "struct.pack('!I', 0xFFFFFFFF) + b'x' * 100",
    "garbage": "b'\\x00\\x00\\x00\\x05{{{{{'",
    "nan": "struct.pack('!I', 9) + b'{\"seq\":NaN}'[:9]",
}


@pytest.mark.parametrize("after", ["exit", "return"])
def test_forged_frames_are_protocol_errors(after):
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ending = "os._exit(0)" if after == "exit" else "return [observation[:, :1]]"
    kinds = {}
    for name, payload in FORGED.items():
        code = FORGE.replace("{PAYLOAD}", payload).replace("{AFTER}", ending)
        with pytest.raises(ProgramError) as exc:
            run(code, NO_GUARDS)
        kinds[name] = exc.value.kind
    assert set(kinds.values()) == {"protocol"}, kinds
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - maxrss) / 1024
    assert grown_mb < 100, f"the parent allocated {grown_mb:.0f} MB for forged replies"


def test_a_valid_forged_frame_followed_by_the_real_reply_is_detected():
    frame = _frame({**GOOD, "arrays": [{"name": "factor_0", "shape": [4, 1]}]})
    code = FORGE.replace(
        "{PAYLOAD}",
        f"None\n    raw = json.dumps({frame}).encode()\n    payload = struct.pack('!I', len(raw)) + raw + bytes(32)",
    ).replace("{AFTER}", "return [observation[:, :1]]")
    # The forged frame is indistinguishable from a reply (the program could have returned those
    # numbers); the genuine reply behind it puts the stream out of step, which is caught at once
    # (data pending after a reply) or on the next call (its sequence number).
    with SandboxedProgram(code, entry="evaluation_func", config=NO_GUARDS) as prog:
        with pytest.raises(ProgramError) as exc:
            prog.call(OBS, ACT)
            prog.call(OBS, ACT)
    assert exc.value.kind == "protocol"
    assert "more than one reply" in exc.value.reason or "reply number 2 to request 3" in exc.value.reason


def _fake_worker():
    """A _Worker whose 'worker' end is a pipe the test writes: the parser alone, no process."""
    w = sb._Worker(FAST)
    reply_r, reply_w = os.pipe()
    req_r, req_w = os.pipe()
    w.fds[:] = [req_w, reply_r]
    os.set_blocking(reply_r, False)
    return w, reply_w, req_r


def _receive(data: bytes, max_bytes: int = 1 << 20):
    import time

    w, reply_w, req_r = _fake_worker()
    try:
        os.write(reply_w, data[:60000])
        os.close(reply_w)
        reply_w = None
        return w.receive(time.monotonic() + 2, what="call", max_bytes=max_bytes, seq=2)
    finally:
        if reply_w is not None:
            os.close(reply_w)
        os.close(req_r)
        for fd in w.fds:
            try:
                os.close(fd)
            except OSError:
                pass


def _pack(header: dict, tail: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("!I", len(raw)) + raw + tail


def test_parser_accepts_a_well_formed_reply():
    data = _pack({**GOOD, "arrays": [{"name": "factor_0", "shape": [2, 1]}]}, np.array([1.5, -2.0]).tobytes())
    header, arrays = _receive(data)
    assert arrays["factor_0"].ravel().tolist() == [1.5, -2.0] and header["structure"] == "list"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
            lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
            max_leaves=20,
        ).map(lambda h: _pack(h) if not isinstance(h, bytes) else h),
        st.fixed_dictionaries(
            {
                "arrays": st.lists(
                    st.fixed_dictionaries(
                        {"name": st.text(max_size=3), "shape": st.lists(st.integers(-(2**70), 2**70), max_size=5)}
                    ),
                    max_size=3,
                )
            }
        ).map(lambda extra: _pack({**GOOD, **extra}, b"\x00" * 64)),
    )
)
def test_any_reply_is_a_result_or_a_program_error(data):
    try:
        header, arrays = _receive(data, max_bytes=4096)
    except ProgramError as exc:
        assert exc.kind in ("protocol", "crash")
        return
    assert sum(a.nbytes for a in arrays.values()) <= 4096
    assert header["ok"] is True


# ---------------------------------------------------------------------- 9: cleanup

NEST = """
import os
os.chdir("{ROOT}")
for i in range(1500):
    os.mkdir("d")
    os.chdir("d")
    if i % 300 == 0 and {LOCK}:
        os.chmod(".", 0)
def evaluation_func(observation, action):
    return [observation[:, :1]]
"""


def test_deeply_nested_locked_folders_are_removed(tmp_path):
    prog = SandboxedProgram(render(NEST, ROOT=".", LOCK=True), entry="evaluation_func", config=FAST.replace(**ALL_OFF))
    try:
        prog.start()
        folder = prog.temp_dir
        assert os.path.isdir(os.path.join(folder, "d", "d"))
    finally:
        prog.close()
    assert not os.path.exists(folder)


def test_remove_tree_never_follows_a_swapped_symlink(tmp_path):
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "keep.txt").write_text("keep")
    os.chmod(victim, 0o755)
    private = tmp_path / "private"
    (private / "a" / "b").mkdir(parents=True)
    os.chmod(private / "a" / "b", 0)
    os.chmod(private / "a", 0)
    os.rename(private / "a", private / "renamed")  # the program's swap: the old name now points outside
    os.symlink(victim, private / "a")
    os.symlink(victim / "keep.txt", private / "link.txt")
    assert sb.remove_tree(private)
    assert not private.exists()
    assert (victim / "keep.txt").read_text() == "keep" and (victim / "sub").is_dir()
    assert victim.stat().st_mode & 0o777 == 0o755 and (victim / "sub").stat().st_mode & 0o777 == 0o755


def test_remove_tree_refuses_a_private_folder_swapped_for_a_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "x").write_text("x")
    os.symlink(victim, tmp_path / "private")
    assert sb.remove_tree(tmp_path / "private") is False
    assert (victim / "x").exists()


def test_remove_tree_handles_100k_levels_without_recursion(tmp_path):
    root = tmp_path / "deep"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY)
    for _ in range(3000):  # deeper than any fd stack or Python recursion limit we allow
        os.mkdir("d", dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(fd)
    assert sb.remove_tree(root, max_depth=16)
    assert not root.exists()


def test_nested_folders_in_the_tmpfs_leave_nothing_on_the_host():
    code = render(NEST, ROOT="/tmp", LOCK=False)  # chmod is not on the allow-list
    with SandboxedProgram(code, entry="evaluation_func", config=NO_GUARDS) as prog:
        assert prog.temp_dir is None
        prog.call(OBS, ACT)


# ---------------------------------------------------------------------- 7: terminal injection

HOSTILE_TEXT = """
def evaluation_func(observation, action):
    raise ValueError("\\x1b[2J\\x1b[H\\rPASSED\\n\\x1b[32mall checks passed\\x1b[0m\\u202e\\x07")
"""


def test_check_prints_one_sanitized_line_per_problem(tmp_path, capsys):
    from creditlab.cli import main

    path = tmp_path / "program.py"
    path.write_text(HOSTILE_TEXT.lstrip())
    code = main(["program", "check", str(path), "--obs-dim", "3", "--act-dim", "2", "--timeout", "5"])
    out, err = capsys.readouterr()
    assert code == 1
    assert not any(ch in out + err for ch in "\x1b\r\x07\u202e"), repr(out)
    problems = [line for line in out.splitlines() if line.startswith("  problem:")]
    assert len(problems) == 1 and "\\x1b[2J" in problems[0] and "\\x0dPASSED\\n" in problems[0]
    assert "Traceback (most recent call last)" not in out + err
    assert out.splitlines()[0].endswith("REJECTED (error at stage run)")


# ---------------------------------------------------------------------- values clipped later are counted and warned

LATE_HUGE = """
import numpy as np
def evaluation_func(observation, action):
    return [np.where(observation[:, :1] > 100, 1e300, observation[:, :1])]
"""


def test_values_clipped_after_validation_are_counted_and_warned_once():
    from creditlab.credit.features import FeatureValueWarning
    from creditlab.programs import Program, lare_features

    prog = Program(code=LATE_HUGE.lstrip(), kind="factors", obs_dim=3, act_dim=2, num_factors=1, origin="hand-written")
    with lare_features(prog, config=FAST) as phi:
        assert phi(OBS, ACT)[:, 0].tolist() == [0.0, 3.0, 6.0, 9.0]
        assert phi.metrics["features/clipped"] == 0
        big = OBS.copy()
        big[:2, 0] = 1000.0
        with pytest.warns(FeatureValueWarning, match="2 value"):
            out = phi(big, ACT)
        assert out[:2, 0].tolist() == [1e6, 1e6]
        assert phi.metrics["features/clipped"] == 2 and phi.metrics["features/nonfinite"] == 0
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # warned once: the second batch is counted, not warned
            phi(big, ACT)
        assert phi.metrics["features/clipped"] == 2
