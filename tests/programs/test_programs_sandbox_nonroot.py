"""The sandbox run by a non-root user (an unprivileged user namespace), also when the suite runs as root.

CI runs as root, so the rest of the suite covers the root path (the parent writes the uid map).
Here, as root, the sandbox modules and NumPy are copied to a folder the user ``nobody`` can read
and the system Python of the same version runs them as ``nobody``; as a non-root user the same
script runs directly.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import creditlab

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="the sandbox is Linux-specific")]

SCRIPT = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, sys.argv[1])
    import numpy as np
    from creditlab.programs.errors import ProgramError
    from creditlab.programs.sandbox import SandboxConfig, SandboxedProgram, probe_layers

    config = SandboxConfig(timeout=30, startup_timeout=60)
    layers = probe_layers(config)
    code = "import numpy as np\\ndef evaluation_func(o, a):\\n    return [o[:, :1] * 2]\\n"
    with SandboxedProgram(code, entry="evaluation_func", config=config) as prog:
        out = prog.call(np.arange(3.0).reshape(3, 1), np.ones((3, 1))).outputs
    hostile = {
        "read": "def evaluation_func(o, a):\\n    return [o[:, :1] * 0 + len(open('/etc/passwd').read())]\\n",
        "fork": "import os\\ndef evaluation_func(o, a):\\n    os.fork()\\n    return [o[:, :1]]\\n",
    }
    results = {}
    for name, src in hostile.items():
        try:
            with SandboxedProgram(src, entry="evaluation_func", config=config.replace(python_guards=False)) as prog:
                prog.call(np.ones((2, 1)), np.ones((2, 1)))
            results[name] = "ran"
        except ProgramError as exc:
            results[name] = exc.kind + ": " + exc.reason.splitlines()[0]
    print(json.dumps({"euid": os.geteuid(), "layers": layers, "factor": out["factor_0"].ravel().tolist(), "hostile": results}))
""")


def _copy_tree(dst):
    """creditlab's sandbox modules (not the package's heavy imports), NumPy and pyseccomp."""
    src = os.path.dirname(creditlab.__file__)
    pkg = os.path.join(dst, "creditlab")
    os.makedirs(os.path.join(pkg, "programs"))
    open(os.path.join(pkg, "__init__.py"), "w").close()
    open(os.path.join(pkg, "programs", "__init__.py"), "w").close()
    shutil.copy(os.path.join(src, "errors.py"), pkg)
    for name in ("errors.py", "sandbox.py", "_worker.py"):
        shutil.copy(os.path.join(src, "programs", name), os.path.join(pkg, "programs"))
    np_dir = os.path.dirname(np.__file__)
    shutil.copytree(np_dir, os.path.join(dst, "numpy"), ignore=shutil.ignore_patterns("tests", "__pycache__"))
    libs = os.path.join(os.path.dirname(np_dir), "numpy.libs")
    if os.path.isdir(libs):
        shutil.copytree(libs, os.path.join(dst, "numpy.libs"))
    import pyseccomp

    shutil.copy(pyseccomp.__file__, dst)
    for root, _dirs, files in os.walk(dst):
        os.chmod(root, 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o755 if f.endswith(".so") or ".so." in f else 0o644)


@pytest.fixture
def shared_tmp():
    """A folder under the system temp dir that other users can read (pytest's tmp_path is 0700 as root)."""
    import tempfile
    from pathlib import Path

    path = tempfile.mkdtemp(prefix="creditlab-nonroot-")
    os.chmod(path, 0o755)
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


def test_sandbox_works_for_a_non_root_user(shared_tmp):
    tmp_path = shared_tmp
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    if os.geteuid() == 0:
        python = f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"
        if not os.path.exists(python):
            pytest.skip(f"no system {python} to run as a non-root user (the venv's interpreter may be under /root)")
        root = tmp_path / "tree"
        _copy_tree(str(root))
        os.chmod(tmp_path, 0o755)
        os.chmod(script, 0o644)
        kw = {"user": 65534, "group": 65534, "extra_groups": []}
    else:
        python, root, kw = sys.executable, os.path.dirname(os.path.dirname(creditlab.__file__)), {}
    done = subprocess.run(
        [python, "-I", str(script), str(root)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=str(tmp_path),
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        **kw,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["euid"] != 0
    layers = report["layers"]
    for name in ("namespaces", "seccomp", "filesystem", "uid", "no_new_privs"):
        assert layers[name].startswith("on"), (name, layers[name])
    assert "unprivileged user namespace" in layers["uid"]
    assert report["factor"] == [0.0, 2.0, 4.0]
    assert report["hostile"]["read"].startswith("error: FileNotFoundError")
    assert report["hostile"]["fork"].startswith("error: PermissionError")
