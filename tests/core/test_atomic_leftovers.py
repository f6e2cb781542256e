"""Atomic writes (issue 10, defects 14 and 16): leftovers of killed writers are removed by the next
write of the same target, and only those; written files get the umask's permissions, not 0600."""

import os
import stat
import subprocess
import sys
import time

import pytest

from creditlab import atomic
from creditlab.atomic import atomic_path, remove_stale_temp_files, write_json, write_text

# A writer that stops inside atomic_path (after writing half a file) until it is killed.
_WRITER = """
import sys, time
from creditlab.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("half a fi")
    print(tmp, flush=True)
    time.sleep(120)
"""


def _start_writer(target):
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    tmp = proc.stdout.readline().strip()
    assert tmp, "the writer did not start"
    return proc, tmp


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_leftover_of_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "result.json"
    proc, tmp = _start_writer(target)
    proc.kill()  # SIGKILL: no finally block runs
    proc.wait()
    assert os.path.exists(tmp), "a killed writer leaves its temporary file"
    write_text(target, "complete")
    assert _names(tmp_path) == ["result.json"]
    assert target.read_text() == "complete"


def test_temp_file_of_a_live_writer_is_kept(tmp_path):
    target = tmp_path / "result.json"
    proc, tmp = _start_writer(target)
    try:
        write_text(target, "mine")
        assert os.path.exists(tmp), "a write in progress in another process was removed"
    finally:
        proc.kill()
        proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # reaped: no process has this pid until the kernel reuses it


def test_only_our_pattern_for_the_same_target_is_touched(tmp_path):
    dead = f"{_dead_pid()}-{atomic._HOST}"
    other_host = "ffffff" if atomic._HOST != "ffffff" else "eeeeee"
    keep = [
        f".other.json.{dead}.abcdefgh.tmp",  # another target
        ".result.json.not-ours.tmp",  # not our pattern
        "result.json.tmp",
        f".result.json.{dead}.abcdefgh.tmp.bak",
        ".result.json.abcdefgh.tmp",  # old-style name (no pid), fresh: could be a live writer
        f".result.json.{dead.split('-')[0]}-{other_host}.abcdefgh.tmp",  # another host: its pids mean nothing here
    ]
    for name in keep:
        (tmp_path / name).write_text("x")
    (tmp_path / "victim").write_text("do not follow links")
    os.symlink(tmp_path / "victim", tmp_path / f".result.json.{dead}.linklink.tmp")
    gone = [f".result.json.{dead}.abcdefgh.tmp"]
    old = tmp_path / ".result.json.oldstyle.tmp"  # old-style and two days old: a leftover
    old.write_text("x")
    two_days = time.time() - 2 * 86400
    os.utime(old, (two_days, two_days))
    gone.append(old.name)
    (tmp_path / gone[0]).write_text("x")
    removed = remove_stale_temp_files(tmp_path / "result.json")
    assert sorted(p.name for p in removed) == sorted(gone)
    assert _names(tmp_path) == sorted([*keep, "victim", f".result.json.{dead}.linklink.tmp"])
    assert (tmp_path / "victim").read_text() == "do not follow links"


def test_a_folder_with_our_name_is_never_removed(tmp_path):
    folder = tmp_path / f".r.json.{_dead_pid()}-{atomic._HOST}.abcdefgh.tmp"
    folder.mkdir()
    write_text(tmp_path / "r.json", "x")
    assert folder.is_dir()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        paths = [write_text(tmp_path / "a.txt", "x"), write_json(tmp_path / "sub" / "b.json", {"a": 1})]
        with atomic_path(tmp_path / "c.png") as tmp:
            tmp.write_bytes(b"png")
        paths.append(tmp_path / "c.png")
    finally:
        os.umask(old)
    for p in paths:
        assert stat.S_IMODE(os.stat(p).st_mode) == mode, p
