"""Hostile LaRe factor programs used by the sandbox and pipeline tests.

Each entry is ``evaluation_func(observation, action)`` source with placeholders filled by
:func:`render`: ``{PORT}`` (a listening socket on 127.0.0.1 owned by the test), ``{SECRET_FILE}``
(a 0600 file outside the sandbox), ``{TARGET}`` (a path outside the sandbox that must never be
created), ``{SECRET_NAME}`` (an environment variable set in the test process).
"""

from __future__ import annotations

HOSTILE: dict[str, str] = {
    "endless_loop": """
def evaluation_func(observation, action):
    while True:
        pass
""",
    "alloc_20gb": """
import numpy as np
def evaluation_func(observation, action):
    big = np.ones(20 * 1024 ** 3 // 8)
    return [big[: observation.shape[0], None]]
""",
    "alloc_20gb_list": """
def evaluation_func(observation, action):
    big = [1.0] * (20 * 1024 ** 3 // 8)
    return [observation[:, :1] * big[0]]
""",
    "fork_loop": """
import os
def evaluation_func(observation, action):
    while True:
        os.fork()
""",
    "socket_loopback": """
import socket
def evaluation_func(observation, action):
    s = socket.create_connection(("127.0.0.1", {PORT}), timeout=1)
    s.sendall(b"exfiltrated")
    return [observation[:, :1]]
""",
    "read_outside": """
def evaluation_func(observation, action):
    data = open("{SECRET_FILE}").read()
    return [observation[:, :1] * 0 + len(data)]
""",
    "read_world_readable": """
def evaluation_func(observation, action):
    data = open("/etc/passwd").read()
    return [observation[:, :1] * 0 + len(data)]
""",
    "write_outside": """
def evaluation_func(observation, action):
    with open("{TARGET}", "w") as fh:
        fh.write("pwned")
    return [observation[:, :1]]
""",
    "read_env": """
import os
def evaluation_func(observation, action):
    secret = os.environ.get("{SECRET_NAME}", "")
    return [observation[:, :1] * 0 + len(secret)]
""",
    "read_parent_environ": """
def evaluation_func(observation, action):
    data = open("/proc/{PARENT_PID}/environ", "rb").read()
    return [observation[:, :1] * 0 + len(data)]
""",
    "subclasses_escape": """
def evaluation_func(observation, action):
    for cls in ().__class__.__base__.__subclasses__():
        if cls.__name__ == "_wrap_close":
            cls.__init__.__globals__["system"]("touch {TARGET}")
    return [observation[:, :1]]
""",
    "eval_import": """
def evaluation_func(observation, action):
    eval("__import__('os').system('touch {TARGET}')")
    return [observation[:, :1]]
""",
    "ctypes_libc": """
import ctypes
def evaluation_func(observation, action):
    ctypes.CDLL(None).system(b"touch {TARGET}")
    return [observation[:, :1]]
""",
    "kill_parent": """
import os, signal
def evaluation_func(observation, action):
    os.kill({PARENT_PID}, signal.SIGKILL)
    return [observation[:, :1]]
""",
    "output_flood": """
def evaluation_func(observation, action):
    while True:
        print("A" * 1000000)
""",
    "stdout_flood": """
import sys
def evaluation_func(observation, action):
    while True:
        sys.stdout.write("A" * 1000000)
""",
    "huge_result": """
import numpy as np
def evaluation_func(observation, action):
    return [np.ones((observation.shape[0], 1))] * 60 + [np.ones(50_000_000)]
""",
    "numpy_cpu_burn": """
import numpy as np
def evaluation_func(observation, action):
    a = np.random.rand(2000, 2000)
    for _ in range(10000):
        a = a @ a
    return [observation[:, :1]]
""",
    "recursion_bomb": """
def evaluation_func(observation, action):
    return evaluation_func(observation, action)
""",
}

#: programs whose source passes the static rules (containment happens in the sandbox only)
PASS_STATIC = {
    "endless_loop",
    "alloc_20gb",
    "alloc_20gb_list",
    "output_flood",
    "huge_result",
    "numpy_cpu_burn",
    "recursion_bomb",
}


def render(code: str, **values: object) -> str:
    for key, value in values.items():
        code = code.replace("{" + key + "}", str(value))
    return code.lstrip("\n")
