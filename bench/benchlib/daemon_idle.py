"""Idle wake-ups of the real daemon (`socialvpn up`) with 10 linked XMPP friends."""

import datetime
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from .common import BenchError, SOCIALVPN, log
from .world import ping_ok, run, wait_for
from .procstat import proc_rss_kib, summary
from .tunnels import API_VERSION, tail, unpack_reply
from .social import (DOMAIN, SOCIAL_SUBNETS, TURN_PASS, TURN_USER, W_CAROL, W_SERVER, befriend,
                     build_social_world, roster_device, start_social_node)


# Idle wake-ups of the real daemon (issue 16): `socialvpn up` as alice behind the cone NAT,
# XMPP session included, linked with 10 friends who then stay idle. Each friend is a
# socialvpn-dpnode with its own XMPP account (friend0…friend9@svpn.test) on the public host
# carol, each its own UDP port, tun and subnet.

DAEMON_FRIENDS = 10
DAEMON_FRIEND_PORT = 51900
DAEMON_KEY = "daemon_idle_wakeups_10_xmpp_friends_per_s"
DAEMON_LABEL = "idle wake-ups, `socialvpn up` daemon (XMPP) with 10 linked idle friends"
DAEMON_GOAL_MAX = 0.1


def daemon_friend_subnet(k):
    return f"100.{70 + k}.0.0/16"  # 100.70–100.79: inside 100.64.0.0/10, apart from the rest


class Daemon:
    """`socialvpn up --config FILE` in a namespace, driven as a user drives it: friend
    requests with the `socialvpn friend …` command, everything else (status, roster) with
    one control-protocol request per connection on its Unix control socket, as `socialvpn
    status` and `socialvpn friends` send them."""

    def __init__(self, w, world, host, user, subnet, log_filter=None):
        self.w = w
        self.name = f"daemon-{user}"
        d = world["state"] / self.name
        d.mkdir(mode=0o700)
        (d / "run").mkdir(mode=0o700)  # the socket's directory: ours, closed to others
        password = d / "password"
        password.write_text(f"pw-{user}\n")
        password.chmod(0o600)
        self.socket = d / "run" / "control.sock"
        self.config = d / "socialvpn.toml"
        q = json.dumps  # a JSON string is a TOML basic string (ASCII paths)
        self.config.write_text(
            f"state_dir = {q(str(d / 'state'))}\n"
            f"control_socket = {q(str(self.socket))}\n"
            "[account]\n"
            f"jid = {q(f'{user}@{DOMAIN}')}\n"
            f"password_file = {q(str(password))}\n"
            f"server = {q(f'{W_SERVER}:5222')}\n"
            f"ca_file = {q(str(world['ca']))}\n"
            "[network]\n"
            f"subnet = {q(subnet)}\n"
            "[ice]\n"
            f"stun = {q(f'{W_SERVER}:3478')}\n"
            f"turn = {q(f'{W_SERVER}:3478')}\n"
            f"turn_user = {q(TURN_USER)}\n"
            f"turn_password = {q(TURN_PASS)}\n")
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        if log_filter:
            env["RUST_LOG"] = log_filter
        self.log = w.workdir / f"{self.name}.log"
        self.p = w.spawn(self.name, world["hosts"][host],
                         [SOCIALVPN, "up", "--config", self.config], env=env)
        self.pid = self.p.pid

    def _alive(self):
        if self.p.poll() is not None:
            raise BenchError(f"{self.name} exited ({self.p.returncode}): {tail(self.log)}")

    def ask(self, cmd, timeout=10, **fields):
        self._alive()
        request = {"v": API_VERSION, "cmd": cmd, **fields}
        buf = b""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(str(self.socket))
                s.sendall((json.dumps(request) + "\n").encode())
                while not buf.endswith(b"\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
        except OSError as e:
            raise BenchError(f"{self.name}: control socket {self.socket}: {e}") from e
        try:
            r = json.loads(buf)
        except json.JSONDecodeError as e:
            raise BenchError(f"{self.name}: {json.dumps(request)}: no JSON reply: "
                             f"{buf[:200]!r}") from e
        return unpack_reply(self.name, request, r)

    def friend(self, action, jid):
        """`socialvpn friend ACTION JID --socket SOCKET`, as a user types it."""
        self._alive()
        r = run([SOCIALVPN, "friend", action, jid, "--socket", self.socket], check=False,
                timeout=20)
        if r.returncode != 0:
            raise BenchError(f"socialvpn friend {action} {jid}: {r.stderr.strip()[-400:]}")
        return {"done": True}

    def wait_online(self, timeout):
        def online():
            self._alive()
            if not self.socket.exists():
                return False
            try:
                return (self.ask("status").get("xmpp") or {}).get("state") == "online"
            except BenchError:
                return False  # not listening yet
        wait_for(f"{self.name} to log in", online, timeout, 0.2)

    def close(self):
        """SIGTERM: the daemon closes its links (friends are told) and removes its tun."""
        self.w.stop(self.p, grace=10.0)


def netns_snmp(ns):
    """The namespace's UDP datagrams and TCP segments in and out (/proc/net/snmp)."""
    rows = {}
    for line in run(["cat", "/proc/net/snmp"], ns=ns).stdout.splitlines():
        proto, _, rest = line.partition(":")
        rows.setdefault(proto, []).append(rest.split())
    out = {}
    for proto, keys in (("Udp", ("InDatagrams", "OutDatagrams")), ("Tcp", ("InSegs", "OutSegs"))):
        if len(rows.get(proto, [])) >= 2:
            d = dict(zip(rows[proto][0], rows[proto][1]))
            for k in keys:
                out[f"{proto.lower()}_{k.lower()}"] = int(d.get(k, 0))
    return out


def thread_switches(pid):
    """Per thread (TID): its name and voluntary + involuntary context switches, and the
    involuntary ones alone (a thread preempted while runnable: not a wake-up of its own)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            n = invol = 0
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    n += int(line.split()[1])
                if line.startswith("nonvoluntary_ctxt_switches"):
                    invol += int(line.split()[1])
            out[task.name] = (comm, n, invol)
        except OSError:
            pass  # a thread that ended meanwhile
    return out


def parse_duration_s(text):
    """A Rust `Duration`'s Debug text (`0ns`, `250ms`, `1.5s`, `3µs`) in seconds."""
    m = re.fullmatch(r"([0-9.]+)(ns|µs|us|ms|s)", text.strip())
    if not m:
        return None
    return float(m.group(1)) * {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]


TIMER_LINE = re.compile(r"^(\S+)\s+TRACE\s.*\btimer\s+sources=\[(.*)\]\s*$")
TIMER_SOURCE = re.compile(r"\((\w+), (?:None|Some\(([^)]*)\))\)")


def timer_breakdown(log_bytes, window_start):
    """The engine's `timer` trace records (RUST_LOG=…socialvpn_core::engine=trace) in a part
    of the daemon's log: how many, which sources were due at each (deadline reached, i.e.
    at most 1 ms ahead) and when (seconds into the window, from the record's timestamp)."""
    by_sources, at = {}, []
    for line in log_bytes.decode(errors="replace").splitlines():
        m = TIMER_LINE.match(line)
        if not m:
            continue
        due = []
        for reason, left in TIMER_SOURCE.findall(m.group(2)):
            secs = parse_duration_s(left) if left else None
            if secs is not None and secs <= 0.001:
                due.append(reason)
        key = "+".join(sorted(due)) or "(none due)"
        by_sources[key] = by_sources.get(key, 0) + 1
        try:
            t = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
            at.append(round(t - window_start, 3))
        except ValueError:
            pass
    return {"count": sum(by_sources.values()), "by_due_sources": by_sources, "at_s": at}


# A passive packet count on one interface for a fixed time (run inside a namespace with `ip
# netns exec`): every IPv4 packet's time, direction, remote address and kind, as JSON on
# stdout at the end. It reads copies from a packet socket, so the daemon is not woken by it.
CAPTURE_CHILD = r'''
import json, socket, struct, sys, time
iface, secs = sys.argv[1], float(sys.argv[2])
STUN = {0x0001: "stun-binding-request", 0x0101: "stun-binding-success",
        0x0111: "stun-binding-error", 0x0011: "stun-binding-indication",
        0x0003: "turn-allocate-request", 0x0103: "turn-allocate-success",
        0x0113: "turn-allocate-error", 0x0004: "turn-refresh-request",
        0x0104: "turn-refresh-success", 0x0114: "turn-refresh-error",
        0x0008: "turn-permission-request", 0x0108: "turn-permission-success",
        0x0118: "turn-permission-error", 0x0009: "turn-channel-bind-request",
        0x0109: "turn-channel-bind-success", 0x0119: "turn-channel-bind-error",
        0x0016: "turn-send-indication", 0x0017: "turn-data-indication"}
WG = {1: "wg-handshake-initiation", 2: "wg-handshake-response", 3: "wg-cookie-reply"}
def kind(p):
    if len(p) >= 20 and p[0] & 0xC0 == 0 and p[4:8] == b"\x21\x12\xa4\x42":
        t = struct.unpack("!H", p[0:2])[0]
        return STUN.get(t, "stun-0x%04x" % t)
    if len(p) >= 4 and 0x40 <= p[0] <= 0x4F:
        return "turn-channel-data(" + kind(p[4:]) + ")"
    if len(p) >= 4 and p[1:4] == b"\0\0\0" and p[0] in (1, 2, 3, 4):
        if p[0] == 4:
            return "wg-keepalive" if len(p) == 32 else "wg-data"
        return WG[p[0]]
    return "udp-other"
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((iface, 0))
start = time.time()
end = start + secs
out = []
while True:
    left = end - time.time()
    if left <= 0:
        break
    s.settimeout(min(left, 1.0))
    try:
        data, addr = s.recvfrom(65535)
    except socket.timeout:
        continue
    t = time.time() - start
    if len(data) < 34 or data[12:14] != b"\x08\x00":
        continue
    ip = data[14:]
    ihl = (ip[0] & 15) * 4
    proto = ip[9]
    outgoing = addr[2] == socket.PACKET_OUTGOING
    remote = socket.inet_ntoa(ip[16:20] if outgoing else ip[12:16])
    if proto == 17:
        sport, dport = struct.unpack("!HH", ip[ihl:ihl + 4])
        k = kind(ip[ihl + 8:])
    elif proto == 6:
        sport, dport = struct.unpack("!HH", ip[ihl:ihl + 4])
        k = "tcp-data" if len(ip) > ihl + (ip[ihl + 12] >> 4) * 4 else "tcp-ack"
    else:
        sport = dport = 0
        k = "ip-proto-%d" % proto
    port = dport if outgoing else sport
    out.append([round(t, 3), "out" if outgoing else "in", "%s:%d" % (remote, port), k])
print(json.dumps({"start": start, "secs": secs, "packets": out}))
'''


def capture_start(w, ns, iface, secs):
    return w.spawn(f"capture-{ns}", ns, [sys.executable, "-c", CAPTURE_CHILD, iface, secs],
                   stdout=subprocess.PIPE)


def capture_result(w, p, secs, names, detail=None):
    """The capture's packets summed up: per (direction, remote named by `names`, kind), per
    (remote named by `detail`, direction and kind) if given, and as bursts (packets less
    than 1 s apart), times in seconds from the capture's start."""
    try:
        raw, _ = p.communicate(timeout=secs + 15)
    except subprocess.TimeoutExpired:
        raw = b""
    w.stop(p)
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return {"error": "the capture gave no result"}
    by_kind, by_remote = {}, {}
    for _t, direction, remote, k in data["packets"]:
        key = f"{direction} {names(remote)} {k}"
        by_kind[key] = by_kind.get(key, 0) + 1
        if detail:
            r = by_remote.setdefault(detail(remote), {})
            r[f"{direction} {k}"] = r.get(f"{direction} {k}", 0) + 1
    bursts = []
    last = None
    for t, *_ in data["packets"]:
        if last is None or t - last > 1.0:
            bursts.append([t, 0])
        bursts[-1][1] += 1
        last = t
    out = {"start": data["start"], "packets": len(data["packets"]),
           "by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
           "bursts": bursts}
    if detail:
        out["by_remote"] = dict(sorted(by_remote.items()))
    return out


def daemon_idle_bench(w, args, tmp, results):
    n_friends = DAEMON_FRIENDS
    log(f"=== idle wake-ups of `socialvpn up` with {n_friends} XMPP friends: building the "
        "social world")
    out = results["daemon_idle"] = {}
    daemon = None
    try:
        friends_users = [f"friend{k}" for k in range(n_friends)]
        world = build_social_world(w, tmp, "world-daemon", ["alice"] + friends_users)
        alice_ns = world["hosts"]["alice"]
        alice_jid = f"alice@{DOMAIN}"
        daemon = Daemon(w, world, "alice", "alice", SOCIAL_SUBNETS["alice"], args.daemon_log)
        daemon.wait_online(30)
        log(f"daemon logged in (PID {daemon.pid}); starting {n_friends} friends on carol")
        friends = []
        for k, user in enumerate(friends_users):
            friends.append(start_social_node(
                w, world, "carol", user=user, tun=f"svpnf{k}", subnet=daemon_friend_subnet(k),
                listen=f"0.0.0.0:{DAEMON_FRIEND_PORT + k}"))
        for user, node in zip(friends_users, friends):
            # alice asks with `socialvpn friend add`, the friend accepts on its control protocol
            befriend(daemon, alice_jid, node, f"{user}@{DOMAIN}")
        log(f"{n_friends} mutual friends; waiting for every link")
        t0 = time.monotonic()

        def states():
            roster = daemon.ask("roster")
            return {user: (((roster_device(roster, n.uid) or {}).get("link") or {}).get("state"))
                    for user, n in zip(friends_users, friends)}
        try:
            wait_for(f"links to all {n_friends} friends",
                     lambda: all(s == "connected" for s in states().values()), 120, 0.5)
        except BenchError:
            missing = {u: s for u, s in states().items() if s != "connected"}
            raise BenchError(f"no link within 120 s to {len(missing)} of {n_friends} friends: "
                             + ", ".join(f"{u} ({s or 'no device/link'})"
                                         for u, s in missing.items())) from None
        out["links_up_after_s"] = time.monotonic() - t0
        roster = daemon.ask("roster")
        paths = {}
        for user, n in zip(friends_users, friends):
            dev = roster_device(roster, n.uid)
            addr = dev["overlay_address"]
            if not ping_ok(alice_ns, addr, count=1, wait=5):
                raise BenchError(f"link to {user} is up but {addr} does not answer a ping")
            paths[user] = "relayed" if (dev.get("link") or {}).get("relayed") else "direct"
        out["paths"] = paths
        log(f"all {n_friends} links up after {out['links_up_after_s']:.1f} s, each pinged once "
            f"({sum(p == 'direct' for p in paths.values())} direct); {args.idle_settle} s quiet, "
            f"then the daemon's context switches over {args.daemon_idle_secs} s")
        # Nothing asks the daemon anything from here until the window has ended: a control
        # request is a wake-up of its own. Readings come from /proc only.
        time.sleep(max(0.0, args.idle_settle - 0.5))
        # What crosses alice's interface meanwhile, counted passively from a packet socket.
        capture = capture_start(w, alice_ns, "eth0", args.daemon_idle_secs + 1.0)
        time.sleep(0.5)
        log_at0 = daemon.log.stat().st_size
        snmp0 = netns_snmp(alice_ns)
        strace = None
        if os.environ.get("BENCH_DAEMON_STRACE"):
            # Investigation only: which calls return at each wake-up. Tracing stops the
            # daemon at every call, so its context switches are not the idle figure then.
            strace = subprocess.Popen(
                ["strace", "-f", "-tt", "-o", os.environ["BENCH_DAEMON_STRACE"], "-e",
                 "trace=epoll_wait,epoll_pwait,epoll_pwait2,recvmsg,recvmmsg,recvfrom,read,"
                 "write,sendto,sendmsg,sendmmsg,futex,clock_nanosleep,epoll_ctl",
                 "-p", str(daemon.pid)], stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        th0 = thread_switches(daemon.pid)
        wall0 = time.time()
        m0 = time.monotonic()
        time.sleep(args.daemon_idle_secs)
        th1 = thread_switches(daemon.pid)
        if strace is not None:
            strace.terminate()
            strace.wait(10)
            out["strace"] = os.environ["BENCH_DAEMON_STRACE"]
        secs = time.monotonic() - m0
        snmp1 = netns_snmp(alice_ns)
        log_at1 = daemon.log.stat().st_size
        daemon._alive()
        friend_ports = {DAEMON_FRIEND_PORT + k: u for k, u in enumerate(friends_users)}

        def remote_name(remote, each=False):
            ip, _, port = remote.rpartition(":")
            if ip == W_SERVER:
                return "server:xmpp" if port == "5222" else f"server:{port}"
            if ip == W_CAROL and int(port) in friend_ports:
                # In the table one of them; the JSON has each
                return friend_ports[int(port)] if each else "friend"
            return remote
        traffic = capture_result(w, capture, args.daemon_idle_secs + 1.0, remote_name,
                                 lambda r: remote_name(r, each=True))
        if "start" in traffic:
            shift = traffic.pop("start") - wall0
            traffic["bursts"] = [[round(t + shift, 2), n] for t, n in traffic["bursts"]]
        out["alice_packets"] = traffic
        per_thread = {}
        involuntary = 0
        for tid, (comm, n, invol) in th1.items():
            before = th0.get(tid, (comm, 0, 0))
            per_thread[comm] = per_thread.get(comm, 0) + n - before[1]
            involuntary += invol - before[2]
        total = sum(per_thread.values())
        out["context_switches_involuntary"] = involuntary
        # A wake-up is a sleep that ended: a voluntary switch. An involuntary one is the
        # daemon preempted while it runs (the friends' ten processes share the 2 cores at
        # each tick): no wake-up of its own, reported beside it.
        out["wakeups"] = total - involuntary
        out[DAEMON_KEY] = summary([(total - involuntary) / secs])
        out["window_s"] = secs
        out["settle_s"] = args.idle_settle
        out["context_switches"] = total
        out["context_switches_by_thread"] = per_thread
        out["threads"] = len(th1)
        out["alice_netns_traffic"] = {k: snmp1[k] - snmp0.get(k, 0) for k in snmp1}
        with open(daemon.log, "rb") as f:
            f.seek(log_at0)
            part = f.read(log_at1 - log_at0)
        if args.daemon_log:
            out["rust_log"] = args.daemon_log
            out["engine_timers"] = timer_breakdown(part, wall0)
        out["rss_mib"] = proc_rss_kib(daemon.pid) / 1024
        after = states()
        out["links_connected_after"] = sum(s == "connected" for s in after.values())
        out["binary"] = {"path": str(SOCIALVPN), "mtime": datetime.datetime.fromtimestamp(
            SOCIALVPN.stat().st_mtime).astimezone().isoformat(timespec="seconds")}
        log(f"daemon idle: {out['wakeups']} wake-ups in {secs:.1f} s = "
            f"{out['wakeups'] / secs:.3f}/s ({total} context switches, {involuntary} of them "
            f"involuntary; by thread {per_thread}; alice's namespace "
            f"{out['alice_netns_traffic']}); "
            f"{out['links_connected_after']}/{n_friends} links still connected")
        if "engine_timers" in out:
            log(f"daemon idle: engine timer wake-ups {out['engine_timers']['count']}: "
                f"{out['engine_timers']['by_due_sources']} at {out['engine_timers']['at_s']}")
        if out["links_connected_after"] != n_friends:
            raise BenchError(f"only {out['links_connected_after']} of {n_friends} links were "
                             f"still connected after the idle window: {after}")
    except BenchError as e:
        log(f"daemon idle: FAILED: {e}")
        out["error"] = str(e)
    finally:
        if daemon is not None:
            daemon.close()


# Report

