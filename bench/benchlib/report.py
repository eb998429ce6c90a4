"""The figures, ratios and goals, and the Markdown report."""


from .common import NOT_PEERS, PEER_ORDER, REPO, SOCIALVPN, SVPN_MODES, TUN_OFFLOAD_PEERS, VETH_MTU
from .procstat import summary
from .daemon_idle import DAEMON_FRIENDS, DAEMON_GOAL_MAX, DAEMON_KEY, DAEMON_LABEL
from .roster import ROSTER_MEMORY_GOAL_MB, ROSTER_MEMORY_KEYS


FIGURES = [
    # key, label, unit, higher is better
    ("tcp1_mbps", "TCP, 1 stream", "Mbit/s", True),
    ("tcp4_mbps", "TCP, 4 streams", "Mbit/s", True),
    ("tcp1_retrans_per_gb", "TCP retransmissions, 1 stream", "/GB", False),
    ("tcp4_retrans_per_gb", "TCP retransmissions, 4 streams", "/GB", False),
    ("udp_small_pps", "UDP {small} B payload, received", "packets/s", True),
    ("udp_large_pps", "UDP {large} B payload, received", "packets/s", True),
    ("rtt_idle_avg_ms", "RTT idle, avg", "ms", False),
    ("rtt_idle_p99_ms", "RTT idle, p99", "ms", False),
    ("rtt_idle_added_ms", "RTT idle added to raw veth's, avg", "ms", False),
    ("rtt_load_avg_ms", "RTT under TCP load, avg", "ms", False),
    ("rtt_load_p99_ms", "RTT under TCP load, p99", "ms", False),
    ("cpu_s_per_gb", "CPU of the VPN processes per GB (1 stream)", "s/GB", False),
    ("system_cpu_s_per_gb", "CPU of the whole machine per GB (1 stream)", "s/GB", False),
    ("wakeups_after_pings", "wake-ups in the 20 s after 5 pings, 1 peer", "in 20 s", False),
    ("idle_wakeups_1_per_s", "idle wake-ups, 1 peer", "/s", False),
    ("idle_wakeups_10_per_s", "idle wake-ups, 10 friends", "/s", False),
    ("rss_1_mib", "resident memory, 1 peer", "MiB", False),
    ("rss_10_mib", "resident memory, 10 friends", "MiB", False),
    ("rss_100_mib", "resident memory, 100 friends (90 simulated)", "MiB", False),
]
HIGHER = {key: higher for key, _label, _unit, higher in FIGURES}

# Issue 16's goals, each a ratio of one SocialVPN mode's median to one peer's ("best": the
# best peer for that mode) in the same run: (mode, figure, peer, comparison, factor, words).
GOALS = [
    ("socialvpn-phone", "tcp1_mbps", "boringtun", ">=", 2.0,
     "phone fd: TCP 1 stream ≥ 2× boringtun"),
    ("socialvpn-phone", "tcp1_retrans_per_gb", "wireguard-go", "<=", 1.0,
     "phone fd: retransmissions (1 stream) ≤ wireguard-go's"),
    ("socialvpn", "tcp1_mbps", "wireguard-go", ">=", 2.0,
     "Linux offloads: TCP 1 stream ≥ 2× wireguard-go"),
    ("socialvpn", "cpu_s_per_gb", "wireguard-go", "<=", 0.5,
     "Linux offloads: CPU per GB ≤ ½ wireguard-go's"),
] + [
    (mode, "rtt_idle_added_ms", "boringtun", "<=", 1.0,
     f"{spec['short']}: idle RTT added ≤ boringtun's")
    for mode, spec in SVPN_MODES.items()
] + [
    (mode, "rtt_load_avg_ms", "best", "<=", 0.5,
     f"{spec['short']}: RTT under load ≤ ½ the best peer's")
    for mode, spec in SVPN_MODES.items()
]


def fmt(v):
    if v is None:
        return "–"
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}".replace(",", " ")
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def fmt_count(v):
    return "–" if v is None else f"{v:,.0f}".replace(",", " ")


def cell(s, f=fmt):
    if not s:
        return "–"
    if len(s["runs"]) == 1:
        return f(s["median"])
    return f"{f(s['median'])} ({f(s['min'])}–{f(s['max'])})"


def nonzero(s):
    return bool(s) and any(s["runs"])


def figure(results, name, key):
    return ((results["peers"].get(name) or {}).get("figures") or {}).get(key)


def best_peer(results, key, group):
    """The peer with the best median of `key`: among all peers, or (no_offload) among those
    whose tun has no offloads. Raw veth and SocialVPN's modes are not peers."""
    best_name, best = None, None
    for name in results["peers"]:
        if name in NOT_PEERS or (group == "no_offload" and name in TUN_OFFLOAD_PEERS):
            continue
        s = figure(results, name, key)
        if not s:
            continue
        if best is None or (s["median"] > best if HIGHER[key] else s["median"] < best):
            best_name, best = name, s["median"]
    return best_name


def ratio_entry(results, mode, key, peer):
    sv = figure(results, mode, key)
    ps = figure(results, peer, key) if peer else None
    if not sv or not ps:
        return None
    return {"peer": peer, "peer_median": ps["median"], "socialvpn_median": sv["median"],
            "ratio": sv["median"] / ps["median"] if ps["median"] else None}


def compute_ratios(results):
    """ratios[figure][name] = {peer, peer_median, socialvpn_median, ratio}; name is
    <mode>_vs_best (Linux offloads, against every peer), <mode>_vs_best_no_offload (phone fd,
    utun: against peers without tun offloads) or <mode>_vs_<peer> for the goals' fixed peers.
    ratio is null where the peer's median is 0."""
    ratios = {}
    for key, _label, _unit, _higher in FIGURES:
        per = {}
        for mode, spec in SVPN_MODES.items():
            e = ratio_entry(results, mode, key, best_peer(results, key, spec["group"]))
            if e:
                per[spec["ratio"]] = e
        if per:
            ratios[key] = per
    for mode, key, peer, _cmp, _factor, _words in GOALS:
        if peer == "best":
            continue
        e = ratio_entry(results, mode, key, peer)
        if e:
            ratios.setdefault(key, {})[goal_ratio_name(mode, peer)] = e
    return ratios


def goal_ratio_name(mode, peer):
    if peer == "best":
        return SVPN_MODES[mode]["ratio"]
    return f"{SVPN_MODES[mode]['prefix']}_vs_{peer.replace('-', '_')}"


def roster_memory_section(results):
    rm = results.get("roster_memory")
    if rm is None:
        return []
    s = rm.get("settings") or {}
    lines = ["", "## Memory with a large roster (`bench/roster-memory`)", "",
             f"`socialvpn up` as alice logged in to prosody with {s.get('contacts', '?')} "
             f"contacts, {s.get('devices', '?')} SocialVPN devices of them online (each its own "
             "XMPP session announcing a device), measured "
             f"{s.get('settle_secs', '?')} s after login with no control request; full tables "
             f"in `{rm.get('file', '?')}`. MiB unless said; the goal reads VmHWM as MB "
             "(10^6 bytes).", ""]
    if rm.get("error"):
        lines += [f"Failed: {rm['error']}", ""]
    if rm.get("note"):
        lines += [f"Note: {rm['note']}.", ""]
    lines += ["| case | VmRSS | VmHWM (peak) | peak, MB | RssAnon (private) | RssFile (code, "
              "shared) | links |", "|---|---|---|---|---|---|---|"]
    for case, key in ROSTER_MEMORY_KEYS.items():
        c = (rm.get("cases") or {}).get(case)
        if not c:
            continue
        links = ", ".join(f"{k} {v}" for k, v in (c.get("links") or {}).items())
        lines.append(f"| {case} | {fmt(c.get('vm_rss_mib'))} | {fmt(c.get('vm_hwm_mib'))} | "
                     f"{fmt((rm.get(key) or {}).get('median'))} | {fmt(c.get('rss_anon_mib'))} | "
                     f"{fmt(c.get('rss_file_mib'))} | {links or 'none'} |")
    return lines


# Issue 16's goals that are an absolute limit, not a ratio: (results section, figure, comparison,
# limit, unit, words).
ABS_GOALS = [
    ("daemon_idle", DAEMON_KEY, "<=", DAEMON_GOAL_MAX, "/s",
     "`socialvpn up` (XMPP) with 10 linked idle friends: idle wake-ups ≤ 0.1/s"),
    ("roster_memory", ROSTER_MEMORY_KEYS["proactive"], "<", ROSTER_MEMORY_GOAL_MB, "MB",
     "`socialvpn up`, 1 000 contacts, 200 devices online, default linking (proactive, "
     "64 links): peak RSS < 12 MB"),
    ("roster_memory", ROSTER_MEMORY_KEYS["on-demand"], "<", ROSTER_MEMORY_GOAL_MB, "MB",
     "`socialvpn up`, 1 000 contacts, 200 devices online, linking on demand: peak RSS "
     "< 12 MB"),
]


def compute_goals(results):
    goals = []
    for section, key, cmp, limit, unit, words in ABS_GOALS:
        if section not in results:
            continue
        s = results[section].get(key)
        g = {"goal": words, "mode": "daemon", "section": section, "figure": key,
             "ratio_name": None, "target": f"{cmp} {limit:g}", "unit": unit, "peer": None,
             "ratio": None, "met": None}
        if s:
            v = s["median"]
            met = {"<=": v <= limit, "<": v < limit, ">=": v >= limit}[cmp]
            g.update(socialvpn_median=v, met=met)
        goals.append(g)
    for mode, key, peer, cmp, factor, words in GOALS:
        name = goal_ratio_name(mode, peer)
        e = (results["ratios"].get(key) or {}).get(name)
        g = {"goal": words, "mode": mode, "figure": key, "ratio_name": name,
             "target": f"{cmp} {factor:g}", "peer": None, "ratio": None, "met": None}
        if e:
            sv, pv = e["socialvpn_median"], e["peer_median"]
            g.update(peer=e["peer"], ratio=e["ratio"], socialvpn_median=sv, peer_median=pv,
                     met=(sv >= factor * pv) if cmp == ">=" else (sv <= factor * pv))
        goals.append(g)
    return goals


def ratio_cell(results, e):
    if not e:
        return "–"
    title = results["peers"][e["peer"]]["title"]
    if e["ratio"] is None:
        if e["socialvpn_median"] == 0:
            return f"– (both 0, {title})"
        return f"– ({title}: 0)"
    return f"{e['ratio']:.2f} (vs {title})"


LOSS_ROWS = [
    # key, label
    ("udp_rcvbuf_errors", "UDP receive-buffer errors"),
    ("udp_sndbuf_errors", "UDP send-buffer errors"),
    ("iface_tx_dropped", "tunnel interface TX dropped (not read in time)"),
    ("iface_rx_dropped", "tunnel interface RX dropped"),
    ("qdisc_drops", "tunnel interface qdisc drops"),
]


def loss_section(results, names, a):
    names = [n for n in names if (results["peers"][n].get("loss_tcp1") or {}).get("runs")]
    if not names:
        return []
    lines = ["", "## Where packets were lost (1-stream TCP)", "",
             f"Differences over each 1-stream TCP run ({a['duration']} s + {a['omit']} s "
             "omitted), median (min–max), in namespace A (iperf3 client, the sender) and B "
             "(server). Kernel: `/proc/net/snmp` Udp RcvbufErrors/SndbufErrors and the "
             "tunnel interface's drops (`ip -s link`, `tc -s qdisc`; the raw veth's own for "
             "raw veth). Engine: SocialVPN's drop counters by reason (`status`), only reasons "
             "that counted in some run.", ""]
    hdr = ["counter", "side"] + [results["peers"][n]["title"] for n in names]
    lines.append("| " + " | ".join(hdr) + " |")
    lines.append("|" + "---|" * len(hdr))

    def loss(n, side):
        return (results["peers"][n].get("loss_tcp1") or {}).get(side) or {}

    retr = ["TCP retransmissions (sender)", "A"]
    for n in names:
        runs = results["peers"][n]["loss_tcp1"]["runs"]
        retr.append(cell(summary([r.get("retransmits") for r in runs]), fmt_count))
    lines.append("| " + " | ".join(retr) + " |")
    zero = []
    for key, label in LOSS_ROWS:
        for side in ("a", "b"):
            vals = [loss(n, side).get(key) for n in names]
            if not any(nonzero(v) for v in vals):
                zero.append(f"{label} ({side.upper()})")
                continue
            lines.append("| " + " | ".join([label, side.upper()]
                                           + [cell(v, fmt_count) for v in vals]) + " |")
    for side in ("a", "b"):
        reasons = sorted({r for n in names
                          for r, s in (loss(n, side).get("engine_drops") or {}).items()
                          if nonzero(s)})
        for reason in reasons:
            row = [f"engine drops: `{reason}`", side.upper()]
            for n in names:
                d = loss(n, side).get("engine_drops")
                row.append("–" if d is None else cell(d.get(reason) or summary([0]), fmt_count))
            lines.append("| " + " | ".join(row) + " |")
    if zero:
        lines += ["", f"0 for every tunnel in every run: {'; '.join(zero)}."]
    engines = [n for n in names if any("engine_drops" in loss(n, s) for s in "ab")]
    if engines and not any(nonzero(s) for n in engines for side in "ab"
                           for s in (loss(n, side).get("engine_drops") or {}).values()):
        lines += ["", "SocialVPN's engine counted no drop in these runs."]
    return lines


def daemon_idle_section(results):
    di = results.get("daemon_idle")
    if di is None:
        return []
    a = results["settings"]
    lines = ["", "## Idle wake-ups of the `socialvpn up` daemon (XMPP, 10 friends)", "",
             f"`socialvpn up` (the Linux client, `{SOCIALVPN.relative_to(REPO)}`) as alice "
             "behind the cone NAT, logged in to prosody (STARTTLS, the world's CA), STUN and "
             f"TURN at coturn; {DAEMON_FRIENDS} friends, each its own XMPP account and a "
             "socialvpn-dpnode on the public host (own UDP port), befriended with "
             "`socialvpn friend add` and the friend's accept. Once every link was connected "
             "and each friend's address had answered one ping, "
             f"{di.get('settle_s', a['idle_settle'])} s quiet, then the daemon's context "
             "switches (all threads, `/proc/PID/task/*/status`) over "
             f"{fmt(di.get('window_s', a['idle_secs']))} s (a whole number of 25-s keepalive "
             "intervals, so that the figure does not depend on where the window falls), with "
             "no control request in between. A wake-up is a voluntary switch (a sleep that "
             "ended); involuntary ones (preempted while running) are shown apart.", ""]
    if di.get("error"):
        lines += [f"Failed: {di['error']}", ""]
    if di.get("strace"):
        lines += [f"This run was traced (`strace`, written to `{di['strace']}`): tracing stops "
                  "the daemon at every call, so its counts are not the figure.", ""]
    lines += ["| figure | value |", "|---|---|"]
    if di.get(DAEMON_KEY):
        lines.append(f"| {DAEMON_LABEL} ↓ (/s) | {cell(di[DAEMON_KEY])} |")
    if "context_switches" in di:
        by = ", ".join(f"{k} {v}" for k, v in sorted(di["context_switches_by_thread"].items(),
                                                       key=lambda kv: -kv[1]))
        lines.append(f"| context switches in the window (by thread name) | "
                     f"{di['context_switches']} ({by}; {di['threads']} threads) |")
        if "context_switches_involuntary" in di:
            lines.append(f"| … of them involuntary (preempted while runnable, at the ticks "
                         f"when the friends' processes run too) | "
                         f"{di['context_switches_involuntary']} |")
    pk = di.get("alice_packets")
    if pk and "by_kind" in pk:
        kinds = ", ".join(f"{k} {v}" for k, v in pk["by_kind"].items()) or "none"
        lines.append(f"| packets on alice's interface in the window ({pk['packets']}), by "
                     f"direction, remote and kind | {kinds} |")
        lines.append("| … in bursts (packets < 1 s apart): start s into the window × packets | "
                     + (", ".join(f"{t:.1f}×{n}" for t, n in pk["bursts"]) or "–") + " |")
    t = di.get("alice_netns_traffic")
    if t:
        lines.append(f"| alice's namespace in the window: UDP datagrams in / out (links, "
                     f"STUN, TURN) | {t.get('udp_indatagrams')} / {t.get('udp_outdatagrams')} |")
        lines.append(f"| alice's namespace in the window: TCP segments in / out (the XMPP "
                     f"session) | {t.get('tcp_insegs')} / {t.get('tcp_outsegs')} |")
    et = di.get("engine_timers")
    if et:
        by = ", ".join(f"{k} {v}" for k, v in sorted(et["by_due_sources"].items(),
                                                       key=lambda kv: -kv[1])) or "none"
        lines.append(f"| engine timer wake-ups (`timer` trace records, RUST_LOG="
                     f"`{di.get('rust_log')}`), by the sources due | {et['count']} ({by}) |")
        lines.append(f"| … at (s into the window) | "
                     f"{', '.join(f'{x:.1f}' for x in et['at_s']) or '–'} |")
    if "links_up_after_s" in di:
        paths = di.get("paths") or {}
        lines.append(f"| links: all up after (s), paths | {fmt(di['links_up_after_s'])}; "
                     f"{sum(p == 'direct' for p in paths.values())} direct, "
                     f"{sum(p == 'relayed' for p in paths.values())} relayed |")
    if "links_connected_after" in di:
        lines.append(f"| links still connected after the window | "
                     f"{di['links_connected_after']} of {DAEMON_FRIENDS} |")
    if "rss_mib" in di:
        lines.append(f"| daemon's resident memory after the window (MiB) | {fmt(di['rss_mib'])} |")
    if di.get("settle_s", a["idle_settle"]) < 20:
        lines += ["", f"The quiet time ({di.get('settle_s', a['idle_settle'])} s) is shorter "
                  "than the 20 s a link keeps its WireGuard timers after its last packet: "
                  "this is the rate just after traffic, not the idle one."]
    return lines


def markdown(results):
    a = results["settings"]
    m = results["machine"]
    names = [n for n in PEER_ORDER if n in results["peers"]]
    modes = [n for n in SVPN_MODES if n in results["peers"]]
    lines = [f"# SocialVPN side-by-side benchmark, {results['started']}", ""]
    lines.append(f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, kernel "
                 f"{m['kernel']}, Debian {m['debian']}; load average at start "
                 f"{' '.join(m['loadavg_at_start'])}.")
    lines.append(f"Settings: {a['mode']} mode; {a['repeats']} run(s) per figure; iperf3 "
                 f"{a['duration']} s (+{a['omit']} s omitted) per run; inner MTU {a['mtu']} "
                 f"on every tunnel over a {VETH_MTU}-byte veth; UDP at -b {a['udp_rate']}; "
                 f"ping every {a['ping_interval']} s × {a['ping_count']}; idle window "
                 f"{a['idle_secs']} s after {a['idle_settle']} s quiet.")
    lines.append("Cells: median (min–max). Ratios: each SocialVPN mode ÷ the best peer for that "
                 "mode (raw veth is not a peer): Linux offloads against every peer, phone fd "
                 "and utun framing against the peers without tun offloads (all but "
                 f"{', '.join(sorted(TUN_OFFLOAD_PEERS))}); above 1 is better for ↑ figures, "
                 "below 1 for ↓ ones. The utun mode's figures include its relay's copies (a "
                 "socket pair and two threads stand in for the utun), a cost a real utun does "
                 "not have.")
    lines.append("")
    hdr = (["figure", "unit"] + [results["peers"][n]["title"] for n in names]
           + [f"{SVPN_MODES[m_]['short']} ÷ best"
              + ("" if SVPN_MODES[m_]["group"] == "all" else " w/o offloads") for m_ in modes])
    lines.append("| " + " | ".join(hdr) + " |")
    lines.append("|" + "---|" * len(hdr))
    for key, label, unit, higher in FIGURES:
        if not any(figure(results, n, key) for n in names):
            continue
        label = label.format(small=a["udp_small"], large=a["udp_large"])
        row = [f"{label} {'↑' if higher else '↓'}", unit]
        for n in names:
            row.append(cell(figure(results, n, key)))
        for m_ in modes:
            row.append(ratio_cell(results, (results["ratios"].get(key) or {}).get(
                SVPN_MODES[m_]["ratio"])))
        lines.append("| " + " | ".join(row) + " |")
    daemon_fig = (results.get("daemon_idle") or {}).get(DAEMON_KEY)
    if daemon_fig and "socialvpn" in names:
        # The daemon's tun is the Linux client's (offloads): its column.
        row = [f"{DAEMON_LABEL} ↓", "/s"]
        row += [cell(daemon_fig) if n == "socialvpn" else "–" for n in names]
        row += ["–" for _ in modes]
        lines.append("| " + " | ".join(row) + " |")
    ho = results.get("wake_handoff_us")
    if ho:
        lines += ["", f"Wake-up hand-off on this machine (a write to a pipe until the process "
                  f"sleeping on it runs, idle in between): avg {cell(ho['avg'])} µs, median "
                  f"{cell(ho['median'])} µs. A user-space VPN's round trip has four hand-offs "
                  "the raw veth's has none of (ping → side A's engine, A → B, B → A, A → "
                  "ping), so about four times this is the machine's part of every VPN's added "
                  "idle RTT."]
    lines += loss_section(results, names, a)
    goals = [g for g in results.get("goals") or []
             if g["mode"] in results["peers"] or g.get("section") in results]
    if goals:
        lines += ["", "## Issue 16 goals (this run's medians)", "",
                  "| goal | JSON name | SocialVPN | peer | ratio | target | met |",
                  "|---|---|---|---|---|---|---|"]
        for g in goals:
            target = g["target"].replace(">=", "≥").replace("<=", "≤")
            if g.get("section"):  # an absolute limit
                v = g.get("socialvpn_median")
                met = "–" if g["met"] is None else ("yes" if g["met"] else "no")
                lines.append(f"| {g['goal']} | `{g['section']}.{g['figure']}` | "
                             f"{fmt(v)} {g['unit'] if v is not None else ''} | – | – | "
                             f"{target} {g['unit']} | {met} |")
                continue
            if g["peer"] is None:
                lines.append(f"| {g['goal']} | `{g['figure']}.{g['ratio_name']}` | – | – | – | "
                             f"{target} | – |")
                continue
            title = results["peers"][g["peer"]]["title"]
            ratio = "–" if g["ratio"] is None else f"{g['ratio']:.2f}"
            lines.append(f"| {g['goal']} | `{g['figure']}.{g['ratio_name']}` | "
                         f"{fmt(g['socialvpn_median'])} | {fmt(g['peer_median'])} ({title}) | "
                         f"{ratio} | {target} | {'yes' if g['met'] else 'no'} |")
    ls = results.get("link_setup") or {}
    if ls:
        lines += ["", "## Link set-up (XMPP + ICE + WireGuard, SocialVPN)", ""]
        if ls.get("error"):
            lines.append(f"Failed: {ls['error']}")
        lines.append("| path | friend's presence → first ping reply, s | friend's start → "
                     "first ping reply, s | relayed |")
        lines.append("|---|---|---|---|")
        for kind in ("direct", "turn"):
            if kind in ls:
                lines.append(f"| {kind} | {cell(ls[kind]['from_presence_s'])} | "
                             f"{cell(ls[kind]['from_start_s'])} | {ls[kind]['relayed']} |")
    lines += daemon_idle_section(results)
    lines += roster_memory_section(results)
    lines += ["", "## Versions and notes", ""]
    for k, v in m["versions"].items():
        lines.append(f"- {k}: {v}")
    for n in names:
        e = results["peers"][n]
        for note in e.get("notes", []):
            lines.append(f"- {e['title']}: {note}")
        if e.get("error"):
            lines.append(f"- {e['title']}: FAILED: {e['error']}")
    return "\n".join(lines) + "\n"

