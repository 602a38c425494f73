"""The sandbox HumanEval's programs run in (bubblewrap): what a program inside can see and do, and hostile
programs (an endless loop, a fork bomb, a memory bomb, deleting a host file, a connection to the host, a huge
file, endless output, a daemon left behind) each failing on their own while a correct program beside them
passes, with the host file intact, the host socket never connected, and no process of theirs left."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from eva_jax.eval import sandbox
from eva_jax.eval.sandbox import FAILED, PASSED, TIMED_OUT, Limits, SandboxUnavailable, run_program, run_programs

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None,
                                 reason="needs bubblewrap (apt-get install -y bubblewrap; .ci/run installs it)")


def test_without_bwrap_it_refuses_and_names_the_package(monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    sandbox.check_sandbox.cache_clear()
    try:
        with pytest.raises(SandboxUnavailable, match="apt-get install -y bubblewrap"):
            run_program("print('hi')")
    finally:
        sandbox.check_sandbox.cache_clear()


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")
def test_an_old_bwrap_is_refused(monkeypatch):
    monkeypatch.setattr(sandbox, "MIN_BWRAP", (99, 0, 0))
    sandbox.check_sandbox.cache_clear()
    try:
        with pytest.raises(SandboxUnavailable, match=r"needs bubblewrap >= 99.0.0 .* found bubblewrap \d"):
            run_program("print('hi')")
    finally:
        sandbox.check_sandbox.cache_clear()


def test_limits_are_validated():
    with pytest.raises(ValueError, match="Limits.timeout=0 must be positive"):
        Limits(timeout=0)
    assert "RLIMIT_NPROC=16" in Limits().rlimits() and "RLIMIT_AS=1073741824" in Limits().rlimits()


@needs_bwrap
def test_command_line_isolates():
    args = sandbox.bwrap_command(Limits(), 3)
    for flag in ("--unshare-user", "--disable-userns", "--unshare-pid", "--unshare-net", "--unshare-ipc",
                 "--die-with-parent", "--new-session", "--clearenv"):
        assert flag in args
    assert ["--remount-ro", "/"] == args[args.index("--remount-ro"):args.index("--remount-ro") + 2]
    assert "--bind" not in args  # nothing of the host is writable
    root = sandbox.bwrap_command(Limits(), 3, switch_uid=sandbox.SANDBOX_UID_BASE)
    assert "--unshare-user" not in root and root[root.index("--cap-drop") + 1] == "ALL"


@needs_bwrap
def test_what_a_program_sees_inside():
    probe = f"""
import os, socket, sys
assert os.getcwd() == "/work" and os.listdir("/work") == ["program.py"], os.listdir("/work")
assert os.getuid() != 0 and os.getgid() != 0
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
assert all(int(status[c], 16) == 0 for c in ("CapPrm", "CapEff", "CapAmb")), status  # no capabilities
assert int(status["NoNewPrivs"]) == 1
assert os.getpid() == 2 and sorted(int(p) for p in os.listdir("/proc") if p.isdigit()) == [1, 2]  # own PID ns
assert socket.gethostname() == "sandbox"
interfaces = [line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:]]
assert interfaces == ["lo"], interfaces
assert sorted(os.environ) == ["HOME", "LANG", "PATH", "PWD"], sorted(os.environ)
for absent in ({str(Path.cwd())!r}, "/root/.ssh", "/home", "/run", "/var", "/etc/passwd"):
    assert not os.path.exists(absent), absent
for path in ("/", "/usr", "/dev", os.path.dirname(os.__file__)):
    try:
        open(os.path.join(path, "x"), "w")
    except OSError:
        pass
    else:
        raise SystemExit(f"{{path}} is writable")
open("/tmp/x", "w").write("tmp is writable")
open("/work/y", "w").write("so is the working directory")
print("ok")
"""
    result = run_program(probe)
    assert result.status == PASSED, result.output
    assert result.output.strip() == "ok"


@needs_bwrap
def test_results_say_how_a_program_ended():
    results = run_programs([
        "print('fine')",
        "assert 1 + 1 == 3",
        "raise ValueError('bad value')",
        "import sys; sys.exit(3)",
        "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
        "def f(:\n    pass",
        "while True:\n    pass",
    ], Limits(timeout=2), workers=4)
    assert [r.status for r in results] == [PASSED, FAILED, FAILED, FAILED, FAILED, FAILED, TIMED_OUT]
    assert [r.reason for r in results[:5]] == ["passed", "AssertionError", "ValueError: bad value", "exit status 3",
                                               "killed by SIGKILL"]
    assert results[5].reason.startswith("SyntaxError")
    assert results[6].reason == "timed out after 2 s" and results[6].returncode is None
    assert 2 <= results[6].seconds < 4
    assert results[0].output == "fine\n" and results[0].passed and not results[1].passed


class ProcessWatch:
    """Counts, every few milliseconds, the host's processes with a given name (/proc/PID/comm), keeping the
    peak: a program that names itself there is seen from the host however it forks."""

    def __init__(self, *names: str) -> None:
        self.names = names
        self.peak = dict.fromkeys(names, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def count(self) -> dict[str, int]:
        found = dict.fromkeys(self.names, 0)
        for pid in os.listdir("/proc"):
            try:
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if name in found:
                found[name] += 1
        return found

    def _watch(self) -> None:
        while not self._stop.is_set():
            for name, n in self.count().items():
                self.peak[name] = max(self.peak[name], n)
            time.sleep(0.01)

    def __enter__(self) -> ProcessWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@needs_bwrap
def test_hostile_programs_fail_and_harm_nothing(tmp_path):
    host_file = tmp_path / "precious.txt"
    host_file.write_text("keep me")
    stdlib_os = Path(os.__file__)
    stdlib_before = stdlib_os.read_bytes()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    name = "evabomb"
    programs = {
        "passes": "def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\n",
        "endless loop": "while True:\n    pass\n",
        "fork bomb": f"import os\nopen('/proc/self/comm', 'w').write({name!r})\n"
                     "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        "memory bomb": "hoard = []\nwhile True:\n    hoard.append(bytearray(16 << 20))\n",
        "delete a host file": f"import os\nos.remove({str(host_file)!r})\n",
        "overwrite a host file": f"open({str(host_file)!r}, 'w').write('gone')\n",
        "remove the host's directory": f"import shutil\nshutil.rmtree({str(tmp_path)!r})\n",
        "open the standard library for writing": "import os\nopen(os.__file__, 'r+b')\n",
        "connect to the host": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n",
        "connect out": "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)\n",
        "huge file": "with open('huge', 'wb') as f:\n    while True:\n        f.write(bytes(1 << 20))\n",
        "fill the disk": "i = 0\nwhile True:\n    open(f'/tmp/f{i}', 'wb').write(bytes(8 << 20))\n    i += 1\n",
        "endless output": "while True:\n    print('spam' * 1000)\n",
        "kill the evaluator": f"import os, signal\nos.kill({os.getpid()}, signal.SIGKILL)\n",
        "leave a daemon": "import os, time\nif os.fork() == 0:\n    os.setsid()\n"
                          "    open('/proc/self/comm', 'w').write('evadaemon')\n    time.sleep(600)\n",
        "passes too": "import math\nassert math.gcd(12, 18) == 6\n",
    }
    limits = Limits(timeout=4, memory_bytes=256 << 20, max_processes=8)
    start = time.monotonic()
    with ProcessWatch(name, "evadaemon") as watch:
        results = dict(zip(programs, run_programs(list(programs.values()), limits, workers=4)))
    elapsed = time.monotonic() - start
    status = {k: r.status for k, r in results.items()}
    reason = {k: r.reason for k, r in results.items()}

    assert status["passes"] == status["passes too"] == PASSED, reason
    assert status["endless loop"] == TIMED_OUT and results["endless loop"].seconds < limits.timeout + 2
    assert status["fork bomb"] != PASSED, reason["fork bomb"]
    assert 1 <= watch.peak[name] <= limits.max_processes, watch.peak  # never more than its own process limit
    assert status["memory bomb"] == FAILED and reason["memory bomb"] == "MemoryError"
    for k in ("delete a host file", "overwrite a host file", "remove the host's directory"):
        assert status[k] == FAILED and "FileNotFoundError" in reason[k], (k, reason[k])  # the host is not there
    assert status["open the standard library for writing"] == FAILED
    assert "Read-only file system" in reason["open the standard library for writing"] or \
        "Permission denied" in reason["open the standard library for writing"]
    assert status["connect to the host"] == FAILED and "ConnectionRefusedError" in reason["connect to the host"]
    assert status["connect out"] == FAILED and "Network is unreachable" in reason["connect out"]
    assert status["huge file"] == FAILED and "File too large" in reason["huge file"]
    assert status["fill the disk"] == FAILED and "No space left on device" in reason["fill the disk"]
    assert status["endless output"] == FAILED and len(results["endless output"].output) <= limits.output_bytes
    assert status["kill the evaluator"] == FAILED and "ProcessLookupError" in reason["kill the evaluator"]
    assert status["leave a daemon"] == PASSED  # it exits 0; its daemon dies with the sandbox

    # The host: the file, the socket, the interpreter, the process table.
    assert host_file.read_text() == "keep me"
    with pytest.raises(BlockingIOError):
        listener.accept()  # no connection ever arrived
    listener.close()
    assert stdlib_os.read_bytes() == stdlib_before
    assert watch.count() == {name: 0, "evadaemon": 0}  # nothing of theirs is left running
    assert elapsed < 30, elapsed


def test_unsandboxed_runs_only_when_asked_and_keeps_the_limits():
    with pytest.warns(UserWarning, match="WITHOUT a sandbox"):
        results = run_programs(["print('hi')", "hoard = []\nwhile True:\n    hoard.append(bytearray(16 << 20))\n"],
                               Limits(timeout=10, memory_bytes=256 << 20), allow_unsandboxed=True)
    assert results[0].status == PASSED and results[0].output == "hi\n"
    assert results[1].status == FAILED and results[1].reason == "MemoryError"
