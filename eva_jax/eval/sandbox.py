"""Run untrusted Python programs (model-written code) each in its own process, isolated by bubblewrap.

Every program runs under `bwrap` in fresh PID, network, IPC, UTS and cgroup namespaces (a user namespace too,
unless we are root), so it sees:
- a read-only filesystem holding only /usr (and /bin, /lib... as on the host) and the interpreter's own prefix;
  the project, /home, /root, the host's /tmp and its sockets are simply absent;
- a fresh, size-limited tmpfs as its working directory /work (the program is /work/program.py) and another as
  /tmp, both gone when it ends; nothing else is writable;
- a network namespace with nothing but its own loopback: no connection reaches the host or beyond;
- its own PID namespace: when its first process ends or the time limit passes, the kernel kills every process
  left in it.

Inside, before the program's interpreter starts, a small launcher sets hard resource limits that the program
cannot raise: address space (RLIMIT_AS), processes (RLIMIT_NPROC), file size (RLIMIT_FSIZE), open files, CPU
seconds, no core files. The wall-clock limit is enforced from outside: the whole bwrap process group is killed,
and `--die-with-parent` takes the namespace down with it.

RLIMIT_NPROC counts processes per user, and the kernel exempts the host's root from it. So as an ordinary user
the program runs in its own user namespace (where the count is per sandbox); as root, bwrap runs privileged and
the launcher switches to an unprivileged uid of its own (one per concurrent sandbox, from SANDBOX_UID_BASE) and
drops every capability before the program starts.

The program sees only the standard library (the interpreter runs with -I -S). No unsandboxed fallback exists
unless asked for with `allow_unsandboxed=True` (development only: resource limits, no isolation).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import itertools
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from eva_jax.eval.errors import EvalError

PASSED, FAILED, TIMED_OUT = "passed", "failed", "timed out"
WORKDIR = "/work"
PROGRAM = f"{WORKDIR}/program.py"
SANDBOX_UID_BASE = 1 << 30  # as root: the unprivileged uids sandboxes run as (no passwd entry needed)
NOBODY = 65534  # the uid and gid a sandbox shows inside its user namespace
INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: apt-get install -y bubblewrap; Fedora: dnf install bubblewrap)"
MIN_BWRAP = (0, 8, 0)  # --disable-userns and --size

# Runs inside the sandbox, as the first process of the program: hard limits (which the program cannot raise),
# then, as root, a switch to an unprivileged uid (which drops all capabilities), then the program itself.
LAUNCHER = """\
import os, resource, sys
limits, uid, program = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for name, value in (item.split("=") for item in limits.split(",")):
    resource.setrlimit(getattr(resource, name), (int(value), int(value)))
if uid:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
os.execv(sys.executable, [sys.executable, "-I", "-S", "-B", program])
"""


class SandboxUnavailable(EvalError):
    """bubblewrap is missing or cannot create its namespaces here; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one program may use. Memory is address space (RLIMIT_AS), so it bounds what it can touch too."""
    timeout: float = 10.0  # wall-clock seconds, from the sandbox's start
    memory_bytes: int = 1 << 30
    max_processes: int = 16  # processes and threads, the program's first process included
    file_size_bytes: int = 16 << 20  # largest file it may write (its captured output included)
    disk_bytes: int = 64 << 20  # size of each writable tmpfs (/work and /tmp)
    open_files: int = 256
    output_bytes: int = 64 << 10  # tail of stdout+stderr kept in the result

    def __post_init__(self) -> None:
        for name in ("timeout", "memory_bytes", "max_processes", "file_size_bytes", "disk_bytes", "open_files"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Limits.{name}={getattr(self, name)} must be positive")

    def rlimits(self) -> str:
        """The launcher's argument: NAME=value pairs for resource.setrlimit."""
        cpu = math.ceil(self.timeout) + 1  # a backstop only; the wall clock is the limit
        return ",".join(f"{k}={v}" for k, v in (
            ("RLIMIT_AS", self.memory_bytes), ("RLIMIT_NPROC", self.max_processes),
            ("RLIMIT_FSIZE", self.file_size_bytes), ("RLIMIT_NOFILE", self.open_files),
            ("RLIMIT_CPU", cpu), ("RLIMIT_CORE", 0)))


@dataclasses.dataclass(frozen=True)
class Result:
    status: str  # PASSED (exit status 0), FAILED, or TIMED_OUT
    reason: str  # "passed", "timed out after 3 s", or the failure: its exception line or how it ended
    returncode: int | None  # the program's exit status (None when timed out; 128+N when killed by signal N)
    seconds: float
    output: str  # the tail of stdout and stderr together

    @property
    def passed(self) -> bool:
        return self.status == PASSED


def bwrap_path() -> str:
    """The bwrap executable, or SandboxUnavailable naming the package to install."""
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxUnavailable(f"sandboxed execution needs bubblewrap (`bwrap` is not on PATH): {INSTALL_HINT}. "
                                 f"Running model-written code without a sandbox is possible only by asking for it "
                                 f"(allow_unsandboxed=True), and is not safe")
    return path


def interpreter() -> str:
    """The interpreter programs run with: this one's base interpreter (a virtualenv's own is not needed)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def _system_binds() -> list[str]:
    """/usr read-only, and /bin, /lib, ... as the host has them (symlinks into /usr on merged-/usr systems)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = Path("/") / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            args += ["--ro-bind", str(host), str(host)]
    if Path("/etc/ld.so.cache").exists():
        args += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    return args


def _interpreter_binds(python: str) -> list[str]:
    """The interpreter's installation, read-only at its own path, when it lives outside /usr. Its parent
    directories are made 0755 in the sandbox (bwrap would copy /root's 0700, which the program's uid cannot
    cross)."""
    roots = {Path(os.path.realpath(p)) for p in (sys.base_prefix, sys.base_exec_prefix)}
    roots.add(Path(os.path.realpath(python)).parent.parent)
    roots = {r for r in roots if not (r == Path("/usr") or Path("/usr") in r.parents)}
    args: list[str] = []
    made: set[Path] = set()
    for root in sorted(roots):
        if any(parent in roots for parent in root.parents):
            continue  # inside another bound root
        for parent in reversed(root.parents[:-1]):
            if parent not in made:
                made.add(parent)
                args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", str(root), str(root)]
    return args


def bwrap_command(limits: Limits, program_fd: int, switch_uid: int = 0, python: str | None = None) -> list[str]:
    """The full command line that runs the program read from `program_fd` (copied to /work/program.py).
    switch_uid 0: we are not root, and the program runs in its own user namespace (as uid 65534 there);
    otherwise (we are root) bwrap runs privileged and the launcher switches to this unprivileged uid."""
    python = python or interpreter()
    args = [bwrap_path()]
    if switch_uid == 0:
        args += ["--unshare-user", "--disable-userns", "--uid", str(NOBODY), "--gid", str(NOBODY)]
    else:
        # bwrap run by root keeps every capability unless told; keep only the launcher's two, which its switch
        # to an unprivileged uid then clears (and no_new_privs, which bwrap always sets, keeps them away)
        args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    args += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
             "--hostname", "sandbox", "--die-with-parent", "--new-session",
             "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", WORKDIR,
             "--setenv", "LANG", "C.UTF-8"]
    args += _system_binds() + _interpreter_binds(python)
    args += ["--dev", "/dev", "--proc", "/proc",
             "--size", str(limits.disk_bytes), "--perms", "1777", "--tmpfs", "/tmp",
             "--size", str(limits.disk_bytes), "--perms", "1777", "--tmpfs", WORKDIR,
             "--perms", "0644", "--file", str(program_fd), PROGRAM,
             "--remount-ro", "/", "--remount-ro", "/dev", "--chdir", WORKDIR,
             "--", python, "-I", "-S", "-c", LAUNCHER, limits.rlimits(), str(switch_uid), PROGRAM]
    return args


_uids = itertools.count()
_uids_lock = threading.Lock()


def _sandbox_uid() -> int:
    """As root, a uid no other running sandbox (of this process or, by the pid, of another) uses, so that each
    has its own RLIMIT_NPROC count; 0 when we are not root (the user namespace keeps the counts apart)."""
    if os.geteuid() != 0:
        return 0
    with _uids_lock:
        n = next(_uids) % 256
    return SANDBOX_UID_BASE + (os.getpid() % (1 << 21)) * 256 + n


def _reason(status: str, returncode: int | None, output: str, timeout: float) -> str:
    if status == PASSED:
        return PASSED
    if status == TIMED_OUT:
        return f"timed out after {timeout:g} s"
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if returncode is not None and returncode > 128 and returncode - 128 < signal.NSIG:
        how = f"killed by {signal.Signals(returncode - 128).name}"
        return f"{how}: {lines[-1][:300]}" if lines else how
    return lines[-1][:300] if lines else f"exit status {returncode}"


def _tail(f, limit: int) -> str:
    size = f.seek(0, os.SEEK_END)
    f.seek(max(0, size - limit))
    return f.read().decode("utf-8", errors="replace")


def _children(pid: int) -> list[int]:
    """The pids of a process's children, from the kernel."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN: every process's parent
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
        return found


def _end(proc: subprocess.Popen, sandboxed: bool) -> None:
    """Kill a sandbox and return once every process in it is gone. SIGKILL goes to bwrap's child, the init of
    the sandbox's PID namespace: the kernel then kills every process in the namespace and lets the init exit
    only after the last one, and bwrap exits after its child. (Killing bwrap itself would leave them dying
    after we return.) A pidfd makes sure the signal reaches that child, not a process that reused its pid.
    Unsandboxed, the program's process group is all there is to kill."""
    for pid in _children(proc.pid) if sandboxed else ():
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            if pid in _children(proc.pid):  # still bwrap's (unreaped) child, so the pidfd is that process
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        finally:
            os.close(pidfd)
    try:
        proc.wait(timeout=10 if sandboxed else 0)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _run(command: list[str], limits: Limits, pass_fds: Sequence[int], cwd: str, sandboxed: bool) -> Result:
    start = time.monotonic()
    with tempfile.TemporaryFile() as out:  # a file, not a pipe: RLIMIT_FSIZE bounds what a program can print
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                pass_fds=tuple(pass_fds), cwd=cwd, start_new_session=True)
        try:
            returncode = proc.wait(timeout=limits.timeout)
            status = PASSED if returncode == 0 else FAILED
        except subprocess.TimeoutExpired:
            returncode, status = None, TIMED_OUT
        finally:
            if proc.returncode is None:
                _end(proc, sandboxed)
        if returncode is not None and returncode < 0:  # bwrap itself was killed
            returncode = 128 - returncode
        output = _tail(out, limits.output_bytes)
    return Result(status, _reason(status, returncode, output, limits.timeout), returncode,
                  time.monotonic() - start, output)


def _run_sandboxed(source: str, limits: Limits) -> Result:
    fd = os.memfd_create("program")
    try:
        os.write(fd, source.encode("utf-8"))
        os.lseek(fd, 0, os.SEEK_SET)
        return _run(bwrap_command(limits, fd, _sandbox_uid()), limits, [fd], cwd="/", sandboxed=True)
    finally:
        os.close(fd)


def _run_unsandboxed(source: str, limits: Limits) -> Result:
    with tempfile.TemporaryDirectory(prefix="eva-unsandboxed-") as work:
        program = Path(work) / "program.py"
        program.write_text(source, encoding="utf-8")
        command = [interpreter(), "-I", "-S", "-c", LAUNCHER, limits.rlimits(), "0", str(program)]
        return _run(command, limits, [], cwd=work, sandboxed=False)


@functools.cache
def check_sandbox() -> None:
    """Runs a trivial program in the sandbox once per process; SandboxUnavailable says why it cannot run."""
    version = subprocess.run([bwrap_path(), "--version"], capture_output=True, text=True).stdout.split()
    try:
        found = tuple(int(part) for part in version[-1].split(".")[:3])
    except (IndexError, ValueError):
        found = None
    if found is None or found < MIN_BWRAP:
        raise SandboxUnavailable(f"the sandbox needs bubblewrap >= {'.'.join(map(str, MIN_BWRAP))} (for "
                                 f"--disable-userns and sized tmpfs); found {' '.join(version) or 'no version'}")
    probe = "import os, socket\nassert os.getcwd() == '/work'\nprint('sandbox ok')\n"
    result = _run_sandboxed(probe, Limits(timeout=60.0))
    if result.passed and "sandbox ok" in result.output:
        return
    detail = result.output.strip().splitlines()[-1] if result.output.strip() else result.reason
    hint = ("as root, bwrap needs CAP_SYS_ADMIN (a container started without it cannot create namespaces)"
            if os.geteuid() == 0 else
            "unprivileged user namespaces must be allowed: sysctl kernel.unprivileged_userns_clone=1 (Debian), "
            "kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for bwrap (Ubuntu 24.04+), "
            "user.max_user_namespaces > 0")
    raise SandboxUnavailable(f"bubblewrap cannot start a sandbox here ({detail}); {hint}")


def run_program(source: str, limits: Limits = Limits(), *, allow_unsandboxed: bool = False) -> Result:
    """Run one Python program (its source text) in a fresh sandbox and say how it ended: PASSED when it exits
    with status 0, FAILED otherwise (`reason` holds its last error line, e.g. "AssertionError" or
    "MemoryError"), TIMED_OUT when it runs past `limits.timeout` (then every process it started is killed).

    Raises SandboxUnavailable when bubblewrap is missing or cannot start here; `allow_unsandboxed=True` runs the
    program with its resource limits only, without isolation (never for untrusted code)."""
    return run_programs([source], limits, workers=1, allow_unsandboxed=allow_unsandboxed)[0]


def run_programs(sources: Sequence[str], limits: Limits = Limits(), *, workers: int | None = None,
                 allow_unsandboxed: bool = False, progress: Callable[[int], None] | None = None) -> list[Result]:
    """`run_program` for each source, `workers` sandboxes at a time (default: one per CPU), results in order.
    `progress(1)` is called as each one ends."""
    if allow_unsandboxed:
        warnings.warn("running programs WITHOUT a sandbox (allow_unsandboxed=True): only resource limits apply",
                      stacklevel=2)
        run = _run_unsandboxed
    else:
        check_sandbox()
        run = _run_sandboxed
    workers = max(1, min(workers or os.cpu_count() or 1, len(sources) or 1, 256))

    def one(source: str) -> Result:
        result = run(source, limits)
        if progress is not None:
            progress(1)
        return result

    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="sandbox") as pool:
        return list(pool.map(one, sources))
