"""The data-path measurements over one tunnel: TCP, UDP, ping, wake-ups, memory, losses."""

import json
import os
import re
import statistics
import subprocess
import sys
import time

from .common import A_UL, B_UL, BenchError, PEER_TITLES, SVPN_PORT, UL_PREFIX, VETH_MTU, log
from .world import run, wait_ping
from .procstat import (percentile, proc_cpu_seconds, proc_ctxt_switches, proc_rss_kib, summary,
                       system_busy_seconds)
from .tunnels import DpNode, SETUPS


# Measurements


class Ctx:
    pass


def iperf3(ctx, target, extra, duration):
    argv = ["iperf3", "-c", target, "-t", duration, "-O", ctx.args.omit, "-J",
            "--connect-timeout", "3000"] + extra
    r = run(argv, ns=ctx.ns_a, check=False, timeout=duration + ctx.args.omit + 30)
    try:
        data = json.loads(r.stdout)
    except json.JSONDecodeError as e:
        raise BenchError(f"iperf3 {' '.join(map(str, extra))}: no JSON: {r.stderr[-400:]}") from e
    if "error" in data:
        raise BenchError(f"iperf3 {' '.join(map(str, extra))}: {data['error']}")
    return data


def netns_udp_errors(ns):
    """The namespace's UDP RcvbufErrors and SndbufErrors (/proc/net/snmp is per namespace):
    datagrams the kernel dropped because a socket's receive or send buffer was full."""
    rows = [line.split() for line in run(["cat", "/proc/net/snmp"], ns=ns).stdout.splitlines()
            if line.startswith("Udp:")]
    if len(rows) < 2:
        return {}
    d = dict(zip(rows[0][1:], (int(v) for v in rows[1][1:])))
    return {"udp_rcvbuf_errors": d.get("RcvbufErrors"),
            "udp_sndbuf_errors": d.get("SndbufErrors")}


def iface_drops(ns, iface):
    """The interface's RX/TX dropped counters and its root qdisc's drops. On a tun, TX
    dropped counts packets the kernel routed into it that the VPN process did not read in
    time (its queue was full), RX dropped packets the process wrote that the stack refused."""
    out = {}
    r = run(["ip", "-s", "-j", "link", "show", "dev", iface], ns=ns, check=False)
    try:
        st = json.loads(r.stdout)[0]["stats64"]
        out["iface_rx_dropped"] = st["rx"]["dropped"]
        out["iface_tx_dropped"] = st["tx"]["dropped"]
    except (ValueError, LookupError, TypeError):
        pass
    r = run(["tc", "-s", "-j", "qdisc", "show", "dev", iface], ns=ns, check=False)
    try:
        qds = json.loads(r.stdout)
        roots = [q for q in qds if q.get("root")] or qds
        out["qdisc_drops"] = sum(int(q.get("drops", 0)) for q in roots)
    except (ValueError, TypeError, AttributeError):
        pass
    return out


def loss_snapshot(ctx, tun):
    """Loss counters in both namespaces: kernel UDP buffer errors, the tunnel interface's
    drops, and for SocialVPN the engine's own drop counters by reason."""
    snap = {}
    for side, ns, iface in (("a", ctx.ns_a, tun.ifaces[0]), ("b", ctx.ns_b, tun.ifaces[1])):
        d = netns_udp_errors(ns)
        if iface:
            d.update(iface_drops(ns, iface))
        node = tun.extra.get(f"node_{side}")
        if node is not None:
            d["engine_drops"] = node.drops()
        snap[side] = d
    return snap


def loss_diff(before, after):
    out = {}
    for side, now in after.items():
        then = before.get(side, {})
        o = {}
        for k, v in now.items():
            if k == "engine_drops":
                b = then.get(k) or {}
                o[k] = {r: v.get(r, 0) - b.get(r, 0) for r in sorted(set(v) | set(b))}
            elif v is not None and then.get(k) is not None:
                o[k] = v - then[k]
        out[side] = o
    return out


def tcp_run(ctx, tun, streams, losses=False):
    """One TCP run: Mbit/s and bytes received, bytes moved over the CPU window, VPN and
    system CPU seconds, the sender's retransmissions and (losses=True) the loss counters'
    differences over the run."""
    pids = tun.pids_a + tun.pids_b
    before = loss_snapshot(ctx, tun) if losses else None
    cpu0 = sum(proc_cpu_seconds(p) for p in pids)
    sys0 = system_busy_seconds()
    data = iperf3(ctx, tun.target, ["-P", streams], ctx.args.duration)
    cpu1 = sum(proc_cpu_seconds(p) for p in pids)
    sys1 = system_busy_seconds()
    loss = loss_diff(before, loss_snapshot(ctx, tun)) if losses else None
    recv = data["end"]["sum_received"]
    # The CPU window also covers the omitted first second: scale the bytes to match.
    total_s = ctx.args.duration + ctx.args.omit
    moved = recv["bytes"] * total_s / max(recv["seconds"], 1e-9)
    # Retransmissions (the sender's, from TCP_INFO) and received bytes both leave the
    # omitted first second out.
    retrans = data["end"].get("sum_sent", {}).get("retransmits")
    return {
        "mbps": recv["bits_per_second"] / 1e6,
        "received": recv["bytes"],
        "moved": moved,
        "cpu": cpu1 - cpu0,
        "sys_cpu": sys1 - sys0,
        "retransmits": retrans,
        "retrans_per_gb": (retrans / (recv["bytes"] / 1e9)
                           if retrans is not None and recv["bytes"] > 0 else None),
        "loss": loss,
    }


def udp_run(ctx, tun, size):
    data = iperf3(ctx, tun.target, ["-u", "-b", ctx.args.udp_rate, "-l", size],
                  ctx.args.duration)
    # Datagrams that arrived, from the receiver's byte count (its packet and loss counters
    # also count the omitted first second).
    recv = data["end"]["sum_received"]
    return recv["bytes"] / size / max(recv["seconds"], 1e-9)


def ping_stats(ctx, target, count):
    r = run(["ping", "-c", count, "-i", ctx.args.ping_interval, "-W", "1",
             "-w", int(count * float(ctx.args.ping_interval)) + 10, target],
            ns=ctx.ns_a, check=False, timeout=count * float(ctx.args.ping_interval) + 30)
    # A duplicated reply ("(DUP!)") is not a second answer.
    rtts = sorted(float(m) for m in re.findall(r"time=([0-9.]+) ms(?! \(DUP!\))", r.stdout))
    if not rtts:
        raise BenchError(f"ping {target}: no replies: {r.stdout[-300:]} {r.stderr[-300:]}")
    return {
        "avg_ms": sum(rtts) / len(rtts),
        "p99_ms": percentile(rtts, 99),
        "lost": count - len(rtts),
    }


def ping_under_load(ctx, tun, count):
    ping_s = count * float(ctx.args.ping_interval)
    load_s = int(ping_s + 4)
    p = ctx.w.spawn("iperf3-load", ctx.ns_a,
                    ["iperf3", "-c", tun.target, "-t", load_s, "--connect-timeout", "3000"],
                    stdout=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        stats = ping_stats(ctx, tun.target, count)
        try:
            p.wait(load_s + 20)  # let the load end by itself (bounded by its -t)
        except subprocess.TimeoutExpired:
            pass
    finally:
        ctx.w.stop(p)
    return stats


# A child that answers each byte on stdin with the monotonic time it woke up at.
HANDOFF_CHILD = (
    "import os, time\n"
    "while os.read(0, 1):\n"
    "    os.write(1, time.perf_counter_ns().to_bytes(8, 'little'))\n"
)


def wake_handoffs(count, interval):
    """Microseconds from one process's write to a pipe until the process sleeping on it runs,
    with the machine idle in between (the ping's rhythm). A user-space VPN's round trip has
    four such hand-offs that the raw veth's has none of: ping -> side A's engine (tun), A -> B
    (UDP), B -> A (UDP), A -> ping (tun); what one costs is this machine's, not the VPN's."""
    p = subprocess.Popen([sys.executable, "-c", HANDOFF_CHILD], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, bufsize=0)
    out = []
    try:
        for _ in range(count):
            time.sleep(interval)
            t0 = time.perf_counter_ns()
            os.write(p.stdin.fileno(), b"x")
            woke = os.read(p.stdout.fileno(), 8)
            if len(woke) != 8:
                raise BenchError("the hand-off child stopped answering")
            out.append((int.from_bytes(woke, "little") - t0) / 1000)
    finally:
        p.stdin.close()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return out


def idle_wakeups(ctx, pids, settle, window):
    time.sleep(settle)
    c0 = sum(proc_ctxt_switches(p) for p in pids)
    t0 = time.monotonic()
    time.sleep(window)
    c1 = sum(proc_ctxt_switches(p) for p in pids)
    return (c1 - c0) / (time.monotonic() - t0)


def rss_mib(pids):
    return sum(proc_rss_kib(p) for p in pids) / 1024


# The wake-ups right after traffic: this many pings 0.2 s apart, then a window this long.
AFTER_PINGS_COUNT = 5
AFTER_PINGS_S = 20


def measure_round(ctx, name, tun, fig, loss_runs, i):
    """One run of every figure a tunnel gets; `fig` maps figure name -> list of run values,
    `loss_runs` gets the loss counters' differences over the 1-stream TCP run."""
    a = ctx.args
    for f in ("tcp1_mbps", "tcp4_mbps", "tcp1_retrans_per_gb", "tcp4_retrans_per_gb",
              "udp_small_pps", "udp_large_pps", "rtt_idle_avg_ms", "rtt_idle_p99_ms",
              "rtt_load_avg_ms", "rtt_load_p99_ms", "cpu_s_per_gb", "system_cpu_s_per_gb"):
        fig.setdefault(f, [])
    log(f"{name}: run {i + 1}/{a.repeats}: TCP 1 stream")
    r = tcp_run(ctx, tun, 1, losses=True)
    fig["tcp1_mbps"].append(r["mbps"])
    fig["tcp1_retrans_per_gb"].append(r["retrans_per_gb"])
    gb = r["moved"] / 1e9
    if tun.pids_a or tun.pids_b:
        fig["cpu_s_per_gb"].append(r["cpu"] / gb if gb > 0 else None)
    fig["system_cpu_s_per_gb"].append(r["sys_cpu"] / gb if gb > 0 else None)
    loss_runs.append(dict(r["loss"], retransmits=r["retransmits"], received=r["received"]))
    log(f"{name}:   {r['mbps']:.0f} Mbit/s, {r['retransmits']} retransmissions; "
        f"losses {json.dumps(r['loss'], separators=(',', ':'))}")
    log(f"{name}: run {i + 1}/{a.repeats}: TCP 4 streams")
    r = tcp_run(ctx, tun, 4)
    fig["tcp4_mbps"].append(r["mbps"])
    fig["tcp4_retrans_per_gb"].append(r["retrans_per_gb"])
    log(f"{name}: run {i + 1}/{a.repeats}: UDP {a.udp_small} B and {a.udp_large} B")
    fig["udp_small_pps"].append(udp_run(ctx, tun, a.udp_small))
    fig["udp_large_pps"].append(udp_run(ctx, tun, a.udp_large))
    log(f"{name}: run {i + 1}/{a.repeats}: RTT idle and under TCP load")
    s = ping_stats(ctx, tun.target, a.ping_count)
    fig["rtt_idle_avg_ms"].append(s["avg_ms"])
    fig["rtt_idle_p99_ms"].append(s["p99_ms"])
    s = ping_under_load(ctx, tun, a.ping_count)
    fig["rtt_load_avg_ms"].append(s["avg_ms"])
    fig["rtt_load_p99_ms"].append(s["p99_ms"])


def wakeups_after_pings(ctx, tun):
    """Side A's wake-ups in the AFTER_PINGS_S seconds after a few pings: what a phone pays
    after each message of a chat app, beyond the packets themselves."""
    run(["ping", "-c", AFTER_PINGS_COUNT, "-i", "0.2", "-W", "1", "-q", tun.target],
        ns=ctx.ns_a, check=False, timeout=30)
    return idle_wakeups(ctx, tun.pids_a, 0, AFTER_PINGS_S) * AFTER_PINGS_S


def measure_idle(ctx, name, tun, fig):
    """The figures measured once per tunnel: memory and wake-ups of side A, right after a
    few pings and idle."""
    a = ctx.args
    if tun.pids_a:
        fig["rss_1_mib"] = [rss_mib(tun.pids_a)]
        log(f"{name}: wake-ups of side A in the {AFTER_PINGS_S}s after {AFTER_PINGS_COUNT} pings")
        fig["wakeups_after_pings"] = [wakeups_after_pings(ctx, tun)]
        log(f"{name}: idle wake-ups of side A over {a.idle_secs}s (after {a.idle_settle}s quiet)")
        fig["idle_wakeups_1_per_s"] = [idle_wakeups(ctx, tun.pids_a, a.idle_settle, a.idle_secs)]


def socialvpn_friends(ctx, tun, fig):
    """SocialVPN only: 10 connected friends (idle wake-ups, memory), then 100 (memory)."""
    a = ctx.args
    w = ctx.w
    node_a = tun.extra["node_a"]
    d = tun.extra["dir"]
    friends = []
    # Friend 1 is node B; 9 more real nodes in B's namespace, each with its own subnet, so
    # every ping gets its answer back through its own TUN.
    for k in range(1, 10):
        n = DpNode(w, f"svpn-f{k}", ctx.ns_b, d / f"f{k}", f"svpnf{k}", f"100.{90 + k}.0.0/16",
                   f"{B_UL}:{SVPN_PORT + k}")
        tun.extra["nodes"].append(n)
        n.add_peer(node_a.public_key, f"{A_UL}:{SVPN_PORT}")
        _uid, addr = node_a.add_peer(n.public_key, f"{B_UL}:{SVPN_PORT + k}")
        friends.append(addr)
    for addr in friends:
        wait_ping(ctx.ns_a, addr, 15, "socialvpn friend")
    log(f"socialvpn: 10 linked friends; RSS, then idle wake-ups over {a.idle_secs}s "
        f"(after {a.idle_settle}s quiet)")
    fig["rss_10_mib"] = [rss_mib([node_a.pid])]
    fig["idle_wakeups_10_per_s"] = [idle_wakeups(ctx, [node_a.pid], a.idle_settle, a.idle_secs)]
    # 90 simulated friends: fresh keys, endpoints on unused veth addresses; nobody answers.
    for i in range(90):
        key = os.urandom(32).hex()
        node_a.add_peer(key, f"198.18.0.{100 + i}:{SVPN_PORT}")
    time.sleep(2)
    fig["rss_100_mib"] = [rss_mib([node_a.pid])]
    log(f"socialvpn: RSS 1/10/100 friends: {fig['rss_1_mib'][0]:.1f} / "
        f"{fig['rss_10_mib'][0]:.1f} / {fig['rss_100_mib'][0]:.1f} MiB")


def summarize_losses(runs):
    """Per side, each counter's summary over the runs; engine drops per reason (a reason
    missing from a run counted 0 there)."""
    out = {"runs": runs}
    for side in ("a", "b"):
        keys = sorted({k for r in runs for k in (r.get(side) or {}) if k != "engine_drops"})
        s = {k: summary([(r.get(side) or {}).get(k) for r in runs]) for k in keys}
        reasons = sorted({k for r in runs for k in ((r.get(side) or {}).get("engine_drops") or {})})
        if any("engine_drops" in (r.get(side) or {}) for r in runs):
            s["engine_drops"] = {
                reason: summary([((r.get(side) or {}).get("engine_drops") or {}).get(reason, 0)
                                 for r in runs]) for reason in reasons}
        out[side] = s
    return out


def veth_world(w, args, tmp):
    """The data-path world: namespaces a and b joined by one veth pair (A_UL, B_UL)."""
    ctx = Ctx()
    ctx.w = w
    ctx.args = args
    ctx.tmp = tmp
    ctx.mtu = args.mtu
    log("creating the two namespaces and their veth pair")
    ctx.ns_a = w.netns("a")
    ctx.ns_b = w.netns("b")
    run(["ip", "-n", ctx.ns_a, "link", "add", "eth0", "mtu", VETH_MTU, "type", "veth", "peer",
         "name", "eth0", "mtu", VETH_MTU, "netns", ctx.ns_b])
    run(["ip", "-n", ctx.ns_a, "addr", "add", f"{A_UL}/{UL_PREFIX}", "dev", "eth0"])
    run(["ip", "-n", ctx.ns_b, "addr", "add", f"{B_UL}/{UL_PREFIX}", "dev", "eth0"])
    run(["ip", "-n", ctx.ns_a, "link", "set", "eth0", "up"])
    run(["ip", "-n", ctx.ns_b, "link", "set", "eth0", "up"])
    wait_ping(ctx.ns_a, B_UL, 10, "veth")
    return ctx


def datapath_bench(w, args, tmp, results):
    ctx = veth_world(w, args, tmp)
    log("wake-up hand-offs between two processes (the machine's share of any VPN's idle RTT)")
    avgs, medians = [], []
    for _ in range(args.repeats):
        us = sorted(wake_handoffs(args.ping_count, float(args.ping_interval)))
        avgs.append(sum(us) / len(us))
        medians.append(percentile(us, 50))
    results["wake_handoff_us"] = {"avg": summary(avgs), "median": summary(medians)}

    # Round-robin: each round measures every tunnel once, in alternating order (A B C, C B A,
    # ...). This VM has slow stretches that cut a tunnel's rate to a fifth for minutes; measured
    # one tunnel after the other, a stretch would fall on some tunnels' runs only, and their
    # ratios would mean nothing. Spread over rounds, it touches one run of each.
    peers = list(args.peers)
    figs = {name: {} for name in peers}
    losses = {name: [] for name in peers}
    for name in peers:
        results["peers"][name] = {"title": PEER_TITLES[name], "figures": {}, "notes": []}
    for i in range(args.repeats):
        last = i == args.repeats - 1
        # Each round's tunnels get fresh keys and state of their own.
        ctx.tmp = tmp / f"round{i + 1}"
        ctx.tmp.mkdir(exist_ok=True)
        for name in peers if i % 2 == 0 else peers[::-1]:
            entry = results["peers"][name]
            if "error" in entry:
                continue
            tun = None
            server = None
            log(f"=== {PEER_TITLES[name]} (round {i + 1}/{args.repeats})")
            try:
                tun = SETUPS[name](w, ctx)
                if i == 0:
                    entry["notes"] += tun.notes
                    if not (tun.pids_a or tun.pids_b):
                        entry["notes"].append("CPU per GB: no VPN process (kernel only); see "
                                              "the system-wide figure")
                server = w.spawn(f"iperf3-server-{name}", ctx.ns_b, ["iperf3", "-s"])
                time.sleep(0.3)
                measure_round(ctx, name, tun, figs[name], losses[name], i)
                if last:
                    measure_idle(ctx, name, tun, figs[name])
                    if name == "socialvpn":
                        # The friends figures depend on the engine, not on how it gets its
                        # tun: the Linux mode only.
                        socialvpn_friends(ctx, tun, figs[name])
            except BenchError as e:
                log(f"{name}: FAILED: {e}")
                entry["error"] = str(e)
            finally:
                if server is not None:
                    w.stop(server)
                if tun is not None:
                    tun.stop()
    ctx.tmp = tmp

    raw_idle = (figs.get("raw") or {}).get("rtt_idle_avg_ms") or []
    for name in peers:
        entry = results["peers"][name]
        if "error" in entry:
            continue
        raw_fig = figs[name]
        entry["loss_tcp1"] = summarize_losses(losses[name])
        if raw_idle and name != "raw":
            # Against the raw veth's run of the same round where every round has one.
            same_round = len(raw_idle) == len(raw_fig["rtt_idle_avg_ms"])
            raw_median = statistics.median(raw_idle)
            raw_fig["rtt_idle_added_ms"] = [
                v - (raw_idle[k] if same_round else raw_median)
                for k, v in enumerate(raw_fig["rtt_idle_avg_ms"])]
        entry["figures"] = {k: summary(v) for k, v in raw_fig.items() if summary(v)}

