"""Installing the peers and building SocialVPN."""

import os
import re
import shutil
import subprocess
from pathlib import Path

from .common import (BenchError, DPNODE, GO, REPO, ROSTER_WORLD, SOCIALVPN, SVPN_MODES, TOOLS,
                     WIREGUARD_GO_MODULE, WIREGUARD_GO_VERSION, log)


# Installing and building


def have(cmd):
    return shutil.which(cmd) is not None


def install(args):
    apt_wanted = {
        "iperf3": "iperf3",
        "wg": "wireguard-tools",
        "nebula": "nebula",
        "nebula-cert": "nebula",
        "tincd": "tinc",
        "openvpn": "openvpn",
        "ip": "iproute2",
        "ping": "iputils-ping",
        "openssl": "openssl",
    }
    if not args.skip_setup_time or not args.skip_daemon_idle or not args.skip_roster_memory:
        apt_wanted.update({"prosody": "prosody", "turnserver": "coturn", "iptables": "iptables"})
    apt_install(apt_wanted)
    install_boringtun()
    install_wireguard_go()


def apt_install(wanted):
    """Installs with apt the packages (values) of the commands (keys) not on PATH."""
    missing = sorted({pkg for cmd, pkg in wanted.items() if not have(cmd)})
    if missing:
        log(f"installing with apt: {' '.join(missing)}")
        # Installing starts host services unless a policy-rc.d refuses; add one only if the
        # machine has none, and remove only the one we added.
        policy = Path("/usr/sbin/policy-rc.d")
        added = False
        if not policy.exists():
            policy.write_text("#!/bin/sh\n# added by bench/run for the install\nexit 101\n")
            policy.chmod(0o755)
            added = True
        try:
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
            subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env,
                           timeout=1200, stdout=subprocess.DEVNULL)
        finally:
            if added:
                policy.unlink(missing_ok=True)


def install_boringtun():
    if not boringtun_bin():
        log("installing boringtun-cli with cargo (into bench/.tools)")
        env = dict(os.environ)
        env.pop("CARGO_TARGET_DIR", None)
        subprocess.run(["cargo", "install", "boringtun-cli", "--locked", "--root", str(TOOLS)],
                       check=True, env=env, timeout=1800, cwd=str(TOOLS.parent))
    if not boringtun_bin():
        raise BenchError("boringtun-cli not found after installing")


def install_wireguard_go():
    if wireguard_go_module_version() != WIREGUARD_GO_VERSION:
        go = go_bin()
        if not go:
            raise BenchError(f"wireguard-go: no Go toolchain ({GO} or go on PATH)")
        log(f"installing wireguard-go ({WIREGUARD_GO_MODULE}@{WIREGUARD_GO_VERSION}) with "
            f"go install (into bench/.tools)")
        # The machine's own Go builds it (the module asks for 1.23.1): GOTOOLCHAIN=local keeps
        # the go command from fetching another toolchain.
        env = dict(os.environ, GOBIN=str(TOOLS / "bin"), GOTOOLCHAIN="local", GOFLAGS="")
        (TOOLS / "bin").mkdir(parents=True, exist_ok=True)
        subprocess.run([go, "install", f"{WIREGUARD_GO_MODULE}@{WIREGUARD_GO_VERSION}"],
                       check=True, env=env, timeout=1800, cwd=str(TOOLS))
    if not wireguard_go_bin():
        raise BenchError("wireguard-go not found after installing")


def boringtun_bin():
    local = TOOLS / "bin" / "boringtun-cli"
    if local.exists():
        return str(local)
    return shutil.which("boringtun-cli")


def go_bin():
    return GO if Path(GO).exists() else shutil.which("go")


def wireguard_go_bin():
    """`go install` names the binary after the module's last element: bench/.tools/bin/wireguard."""
    local = TOOLS / "bin" / "wireguard"
    if local.exists():
        return str(local)
    return shutil.which("wireguard-go")


def wireguard_go_module_version():
    """The module version the binary was built from (`go version -m`), or None."""
    local = TOOLS / "bin" / "wireguard"
    go = go_bin()
    if not local.exists() or not go:
        return None
    r = subprocess.run([go, "version", "-m", str(local)], capture_output=True, text=True,
                       timeout=30)
    m = re.search(r"^\s*mod\s+" + re.escape(WIREGUARD_GO_MODULE) + r"\s+(\S+)", r.stdout, re.M)
    return m.group(1) if m else None


def needed_binaries(args):
    """The test node for SocialVPN's peers, the link set-up world and the daemon's friends;
    the client (`socialvpn`) for the daemon-idle and roster-memory figures, and the latter's
    world."""
    out = []
    if any(p in SVPN_MODES for p in args.peers) or not args.skip_setup_time \
            or not args.skip_daemon_idle:
        out.append(("socialvpn-tests", "socialvpn-dpnode", DPNODE))
    if not args.skip_daemon_idle or not args.skip_roster_memory:
        out.append(("socialvpn-cli", "socialvpn", SOCIALVPN))
    if not args.skip_roster_memory:
        out.append(("socialvpn-tests", "socialvpn-roster-bench", ROSTER_WORLD))
    return out


def build(args):
    for pkg, binary, path in needed_binaries(args):
        log(f"building SocialVPN (release): {binary}")
        subprocess.run(["cargo", "build", "--release", "-p", pkg, "--bin", binary],
                       check=True, cwd=str(REPO), timeout=3600)
        if not path.exists():
            raise BenchError(f"{path} missing after the build")


def first_line(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        text = (r.stdout or r.stderr).strip().splitlines()
        return text[0].strip() if text else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine_info():
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    debian = "?"
    try:
        debian = Path("/etc/debian_version").read_text().strip()
    except OSError:
        pass
    rev = first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "core",
                            "cli", "tests", "Cargo.toml", "Cargo.lock"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1048576, 1),
        "kernel": os.uname().release,
        "debian": debian,
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "versions": {
            "iperf3": first_line(["iperf3", "--version"]),
            "wireguard-go": (f"{first_line([wireguard_go_bin() or 'wireguard-go', '--version'])}"
                             f" (module {WIREGUARD_GO_MODULE}@"
                             f"{wireguard_go_module_version() or '?'}, built with "
                             f"{first_line([go_bin() or 'go', 'version'])})"),
            "boringtun-cli": first_line([boringtun_bin() or "boringtun-cli", "--version"]),
            "wireguard-tools": first_line(["wg", "--version"]),
            "nebula": first_line(["nebula", "-version"]),
            "tinc": first_line(["tincd", "--version"]),
            "openvpn": first_line(["openvpn", "--version"]),
            "socialvpn": f"git {rev}{' (uncommitted changes)' if dirty else ''}",
            "rustc": first_line(["rustc", "--version"]),
            "prosody": first_line(["dpkg-query", "-W", "-f", "${Version}", "prosody"]),
            "coturn": first_line(["dpkg-query", "-W", "-f", "${Version}", "coturn"]),
        },
    }

