"""Processes and namespaces, all owned by one World that removes everything it made."""

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .common import BenchError, log


# Processes and namespaces, all owned by one World that removes everything it made.


class World:
    def __init__(self, tag, workdir):
        self.tag = tag
        self.workdir = workdir
        self.namespaces = []
        self.procs = []  # (name, Popen)
        self.etc_dirs = []
        self.files = []  # stray files to remove (e.g. boringtun's control sockets)

    # --- namespaces
    def netns(self, role):
        name = f"{self.tag}-{role}"
        run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    def etc_netns(self, ns, hosts_extra=""):
        """/etc/netns/NS/{hosts,resolv.conf}: stray DNS look-ups fail at once."""
        d = Path("/etc/netns") / ns
        d.mkdir(parents=True, exist_ok=True)
        self.etc_dirs.append(d)
        (d / "hosts").write_text(f"127.0.0.1 localhost\n::1 localhost\n{hosts_extra}")
        (d / "resolv.conf").write_text("nameserver 127.0.0.1\n")

    # --- processes
    def spawn(self, name, ns, argv, stdin=subprocess.DEVNULL, stdout=None, user_log=None, **kw):
        """Starts argv inside ns (ip netns exec execs, so the PID is the program's own)."""
        logf = open(user_log or (self.workdir / f"{name}.log"), "ab")
        cmd = (["ip", "netns", "exec", ns] if ns else []) + [str(a) for a in argv]
        p = subprocess.Popen(
            cmd,
            stdin=stdin,
            stdout=stdout if stdout is not None else logf,
            stderr=logf,
            start_new_session=True,
            **kw,
        )
        logf.close()
        self.procs.append((name, p))
        return p

    def stop(self, p, sig=signal.SIGTERM, grace=3.0):
        if p.poll() is None:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    log(f"warning: PID {p.pid} survived SIGKILL")
        for s in (p.stdin, p.stdout):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        self.procs = [(n, q) for (n, q) in self.procs if q is not p]

    def cleanup(self):
        for _name, p in list(reversed(self.procs)):
            self.stop(p, grace=2.0)
        # Anything still running inside our own namespaces (e.g. a daemon's child): by PID.
        for ns in self.namespaces:
            out = subprocess.run(
                ["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10
            ).stdout
            for pid in out.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        self.namespaces = []
        for d in self.etc_dirs:
            shutil.rmtree(d, ignore_errors=True)
        self.etc_dirs = []
        for f in self.files:
            try:
                os.unlink(f)
            except OSError:
                pass
        self.files = []


def sweep_stale():
    """Removes what an earlier run killed with SIGKILL left behind: namespaces named
    svbench<PID>-* (and their /etc/netns entries, processes and boringtun's and wireguard-go's
    control sockets) whose PID no longer runs. Only this script's own naming scheme is
    touched."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                         timeout=10).stdout
    stale_pids = set()
    for line in out.splitlines():
        m = re.match(r"(svbench(\d+)-[a-z0-9]+)", line.strip())
        if not m or Path(f"/proc/{m.group(2)}").exists():
            continue
        ns = m.group(1)
        stale_pids.add(int(m.group(2)))
        log(f"removing namespace {ns} left by an earlier run")
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                              timeout=10).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
    for pid in stale_pids:
        for side in "ab":
            for prefix in ("btun", "wgg"):
                try:
                    os.unlink(f"/var/run/wireguard/{prefix}{pid % 100000}{side}.sock")
                except OSError:
                    pass


def run(argv, timeout=60, check=True, ns=None, input=None):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + [str(a) for a in argv]
    try:
        r = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"{' '.join(cmd)}: timed out after {timeout}s") from e
    if check and r.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-800:]}")
    return r


def wait_for(what, pred, timeout, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def ping_ok(ns, target, count=1, wait=1):
    r = run(["ping", "-c", count, "-W", wait, "-w", count * wait + 1, "-q", target],
            ns=ns, check=False, timeout=count * wait + 10)
    return r.returncode == 0


def wait_ping(ns, target, timeout, what):
    wait_for(f"{what}: ping {target} from {ns}", lambda: ping_ok(ns, target), timeout, 0.2)

