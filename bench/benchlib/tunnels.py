"""The tunnels: one set-up per peer and per SocialVPN tun mode, on the veth pair."""

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from .common import (A_UL, B_UL, BenchError, DEFAULT_MTU, DPNODE, OVERLAY, SVPN_A_SUBNET,
                     SVPN_B_SUBNET, SVPN_MODES, SVPN_PORT)
from .world import ping_ok, run, wait_for, wait_ping
from .install import boringtun_bin, wireguard_go_bin


# The tunnels. Each set-up returns a Tunnel: where B's iperf3 server is as A sees it, the
# PIDs of the VPN processes on each side (empty for kernel-only paths) and the interface
# the packets enter and leave through on each side (the tun; the veth for the raw path).


class Tunnel:
    def __init__(self, target, pids_a, pids_b, notes=None, stop=None, extra=None, ifaces=None):
        self.target = target
        self.pids_a = pids_a
        self.pids_b = pids_b
        self.notes = notes or []
        self._stop = stop
        self.extra = extra or {}
        self.ifaces = ifaces or (None, None)

    def stop(self):
        if self._stop:
            self._stop()
            self._stop = None


def setup_raw(w, ctx):
    return Tunnel(B_UL, [], [], ["no tunnel: the veth itself (the physical limit here)"],
                  ifaces=("eth0", "eth0"))


def wg_keys(d):
    """A WireGuard key pair per side: private keys in d/{a,b}.key, public keys returned."""
    keys = {}
    for side in ("a", "b"):
        priv = run(["wg", "genkey"]).stdout.strip()
        pub = run(["wg", "pubkey"], input=priv + "\n").stdout.strip()
        (d / f"{side}.key").write_text(priv + "\n")
        (d / f"{side}.key").chmod(0o600)
        keys[side] = pub
    return keys


def wg_configure(ctx, d, names, keys, a_ip, b_ip, plen):
    """Keys, peer, listen port (51820 on both veth ends), address and inner MTU, with `wg` and
    `ip`, for the user-space WireGuards that speak the cross-platform UAPI socket."""
    for side, ns, me, other_side, other_ul, my_ip in (
        ("a", ctx.ns_a, names["a"], "b", B_UL, a_ip),
        ("b", ctx.ns_b, names["b"], "a", A_UL, b_ip),
    ):
        peer_ip = b_ip if side == "a" else a_ip
        run(["wg", "set", me, "private-key", d / f"{side}.key", "listen-port", "51820",
             "peer", keys[other_side], "endpoint", f"{other_ul}:51820",
             "allowed-ips", f"{peer_ip}/32"], ns=ns)
        run(["ip", "addr", "add", f"{my_ip}/{plen}", "dev", me], ns=ns)
        run(["ip", "link", "set", me, "mtu", ctx.mtu, "up"], ns=ns)


def uapi_wireguards(w, ctx, peer, prefix, argv, env=None):
    """Starts a user-space WireGuard (`argv(side, d, ifname)`) in each namespace, configures
    both with `wg` and waits for a ping: the tunnel, and its notes still to be given. Their
    control sockets are /var/run/wireguard/<ifname>.sock, shared by all namespaces: the
    interface names (`prefix` and our PID) must differ from each other and from anyone
    else's."""
    a_ip, b_ip, plen = OVERLAY[peer]
    d = ctx.tmp / peer
    d.mkdir()
    procs = []
    names = {side: f"{prefix}{os.getpid() % 100000}{side}" for side in ("a", "b")}
    keys = wg_keys(d)
    for side, ns in (("a", ctx.ns_a), ("b", ctx.ns_b)):
        sock = Path("/var/run/wireguard") / f"{names[side]}.sock"
        w.files.append(str(sock))
        p = w.spawn(f"{peer}-{side}", ns, argv(side, d, names[side]), env=env)
        procs.append(p)
        wait_for(f"{peer} control socket {sock}",
                 lambda s=sock, p=p: s.exists() or p.poll() is not None, 10)
        if p.poll() is not None:
            raise BenchError(f"{peer} ({side}) exited: {tail(w.workdir / f'{peer}-{side}.log')}")
    wg_configure(ctx, d, names, keys, a_ip, b_ip, plen)
    wait_ping(ctx.ns_a, b_ip, 15, peer)

    def stop():
        for p in procs:
            w.stop(p)

    return lambda notes: Tunnel(b_ip, [procs[0].pid], [procs[1].pid], notes, stop,
                                ifaces=(names["a"], names["b"]))


def setup_wireguard_go(w, ctx):
    wgg = wireguard_go_bin()
    if not wgg:
        raise BenchError("wireguard-go is not installed (run without --skip-install)")
    # Its defaults: the tun with IFF_VNET_HDR (TSO/GRO offloads) and UDP GSO/GRO, GOMAXPROCS
    # = the cores. LOG_LEVEL=error: no per-handshake lines.
    env = dict(os.environ, LOG_LEVEL="error", WG_PROCESS_FOREGROUND="1")
    tunnel = uapi_wireguards(w, ctx, "wireguard-go", "wgg",
                             lambda _side, _d, ifname: [wgg, "-f", ifname], env)
    return tunnel(["wireguard-go -f, configured with wg; its Linux defaults: tun offloads "
                   "(IFF_VNET_HDR, TSO/GRO) and UDP GSO/GRO on, GOMAXPROCS = cores"])


def setup_boringtun(w, ctx):
    bt = boringtun_bin()
    if not bt:
        raise BenchError("boringtun-cli is not installed (run without --skip-install)")
    threads = ctx.args.boringtun_threads
    tunnel = uapi_wireguards(w, ctx, "boringtun", "btun", lambda side, d, ifname: [
        bt, "-f", "--disable-drop-privileges", "--threads", threads,
        "--log", d / f"{side}.log", ifname])
    return tunnel([f"boringtun-cli --threads {threads}, configured with wg"])


def setup_nebula(w, ctx):
    a_ip, b_ip, plen = OVERLAY["nebula"]
    d = ctx.tmp / "nebula"
    d.mkdir()
    run(["nebula-cert", "ca", "-name", "svpn-bench-ca", "-duration", "24h",
         "-out-crt", d / "ca.crt", "-out-key", d / "ca.key"])
    procs = []
    for side, ip in (("a", a_ip), ("b", b_ip)):
        run(["nebula-cert", "sign", "-name", f"bench-{side}", "-ip", f"{ip}/{plen}",
             "-ca-crt", d / "ca.crt", "-ca-key", d / "ca.key",
             "-out-crt", d / f"{side}.crt", "-out-key", d / f"{side}.key"])
    for side, ns, my_ul, other_ip, other_ul in (
        ("a", ctx.ns_a, A_UL, b_ip, B_UL),
        ("b", ctx.ns_b, B_UL, a_ip, A_UL),
    ):
        cfg = f"""pki:
  ca: {d / 'ca.crt'}
  cert: {d / f'{side}.crt'}
  key: {d / f'{side}.key'}
static_host_map:
  "{other_ip}": ["{other_ul}:4242"]
lighthouse:
  am_lighthouse: false
  interval: 60
  hosts: []
listen:
  host: {my_ul}
  port: 4242
punchy:
  punch: false
relay:
  use_relays: false
tun:
  disabled: false
  dev: neb{side}0
  drop_local_broadcast: false
  drop_multicast: false
  tx_queue: 500
  mtu: {ctx.mtu}
logging:
  level: warning
  format: text
firewall:
  outbound:
    - port: any
      proto: any
      host: any
  inbound:
    - port: any
      proto: any
      host: any
"""
        (d / f"{side}.yml").write_text(cfg)
        procs.append(w.spawn(f"nebula-{side}", ns, ["nebula", "-config", d / f"{side}.yml"]))
    time.sleep(0.5)
    for side, p in zip("ab", procs):
        if p.poll() is not None:
            raise BenchError(f"nebula ({side}) exited: {tail(w.workdir / f'nebula-{side}.log')}")
    wait_ping(ctx.ns_a, b_ip, 20, "nebula")

    def stop():
        for p in procs:
            w.stop(p)

    return Tunnel(b_ip, [procs[0].pid], [procs[1].pid], ["nebula, static host map, no lighthouse"],
                  stop, ifaces=("neba0", "nebb0"))


def setup_tinc(w, ctx):
    a_ip, b_ip, plen = OVERLAY["tinc"]
    d = ctx.tmp / "tinc"
    procs = []
    for side, my_ul, my_ip in (("a", A_UL, a_ip), ("b", B_UL, b_ip)):
        conf = d / side
        (conf / "hosts").mkdir(parents=True)
        lines = [f"Name = bench{side}", "AddressFamily = ipv4", "Mode = router",
                 f"Interface = tinc{side}0", "Device = /dev/net/tun", f"BindToAddress = {my_ul}",
                 "Port = 655"]
        if side == "a":
            lines.append("ConnectTo = benchb")
        (conf / "tinc.conf").write_text("\n".join(lines) + "\n")
        (conf / "hosts" / f"bench{side}").write_text(
            f"Address = {my_ul}\nPort = 655\nSubnet = {my_ip}/32\n")
        up = conf / "tinc-up"
        up.write_text(f"#!/bin/sh\nip link set \"$INTERFACE\" mtu {ctx.mtu} up\n"
                      f"ip addr add {my_ip}/{plen} dev \"$INTERFACE\"\n")
        up.chmod(0o755)
        run(["tincd", "-c", conf, "-K2048"], timeout=120)
    # Exchange host files (with the public keys now appended).
    for side, other in (("a", "b"), ("b", "a")):
        shutil.copy(d / other / "hosts" / f"bench{other}", d / side / "hosts" / f"bench{other}")
    for side, ns in (("a", ctx.ns_a), ("b", ctx.ns_b)):
        conf = d / side
        procs.append(w.spawn(f"tinc-{side}", ns, ["tincd", "-c", conf, "-D", "-d0",
                                                   "--pidfile", conf / "tinc.pid",
                                                   "--logfile", conf / "tinc.log"]))
    time.sleep(0.5)
    for side, p in zip("ab", procs):
        if p.poll() is not None:
            raise BenchError(f"tincd ({side}) exited: {tail(d / side / 'tinc.log')}")
    wait_ping(ctx.ns_a, b_ip, 30, "tinc")
    # tinc 1.0 sends over TCP until its path-MTU discovery settles on UDP.
    time.sleep(ctx.args.tinc_settle)
    for _ in range(3):
        ping_ok(ctx.ns_a, b_ip)

    def stop():
        for p in procs:
            w.stop(p)

    return Tunnel(b_ip, [procs[0].pid], [procs[1].pid],
                  [f"tinc 1.0 router mode, {ctx.args.tinc_settle} s for path-MTU discovery"], stop,
                  ifaces=("tinca0", "tincb0"))


def make_ca_and_certs(d, names, server_names=()):
    """A throwaway EC CA and one certificate per name (clientAuth+serverAuth)."""
    d.mkdir(parents=True, exist_ok=True)
    run(["openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", d / "ca.key", "-out", d / "ca.crt",
         "-days", "2", "-subj", "/CN=svpn bench CA", "-addext",
         "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    for i, name in enumerate(names):
        run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", d / f"{name}.key", "-out", d / f"{name}.csr",
             "-subj", f"/CN={name}"])
        san = ",".join([f"DNS:{name}"] + [f"DNS:{s}" for s in server_names])
        (d / f"{name}.ext").write_text(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\n"
            f"extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName={san}\n")
        run(["openssl", "x509", "-req", "-in", d / f"{name}.csr", "-CA", d / "ca.crt",
             "-CAkey", d / "ca.key", "-set_serial", str(int(time.time() * 1000) + i),
             "-days", "2", "-out", d / f"{name}.crt", "-extfile", d / f"{name}.ext"])
        (d / f"{name}.key").chmod(0o600)


def setup_openvpn(w, ctx):
    a_ip, b_ip, _plen = OVERLAY["openvpn"]
    d = ctx.tmp / "openvpn"
    make_ca_and_certs(d, ["ovpn-a", "ovpn-b"])
    procs = []
    for side, ns, my_ul, other_ul, my_ip, other_ip, role in (
        ("a", ctx.ns_a, A_UL, B_UL, a_ip, b_ip, "--tls-server"),
        ("b", ctx.ns_b, B_UL, A_UL, b_ip, a_ip, "--tls-client"),
    ):
        argv = ["openvpn", "--dev", f"ovpn{side}0", "--dev-type", "tun", "--proto", "udp",
                "--local", my_ul, "--lport", "1194", "--remote", other_ul, "--rport", "1194",
                "--ifconfig", my_ip, other_ip, role, "--dh", "none",
                "--ca", d / "ca.crt", "--cert", d / f"ovpn-{side}.crt",
                "--key", d / f"ovpn-{side}.key", "--tun-mtu", ctx.mtu,
                "--disable-dco", "--verb", "3", "--mute-replay-warnings",
                "--writepid", d / f"{side}.pid", "--log", d / f"{side}.log"]
        procs.append(w.spawn(f"openvpn-{side}", ns, argv))
    for side, p in zip("ab", procs):
        wait_for(f"openvpn ({side}) to complete its start",
                 lambda s=side, p=p: p.poll() is not None or
                 "Initialization Sequence Completed" in read(d / f"{s}.log"), 30)
        if p.poll() is not None:
            raise BenchError(f"openvpn ({side}) exited: {tail(d / f'{side}.log')}")
    cipher = re.findall(r"Data Channel: cipher '([^']+)'", read(d / "a.log"))
    wait_ping(ctx.ns_a, b_ip, 20, "openvpn")

    def stop():
        for p in procs:
            w.stop(p)

    return Tunnel(b_ip, [procs[0].pid], [procs[1].pid],
                  [f"openvpn p2p TLS, UDP, tun, no DCO, cipher {cipher[-1] if cipher else '?'}"],
                  stop, ifaces=("ovpna0", "ovpnb0"))


API_VERSION = 1


def unpack_reply(who, request, r):
    """What a control-protocol reply carries: the status object, the friends or links list,
    `{"uid"}` for an added peer, `{"done": True}`. An error reply raises."""
    kind = r.get("reply") if isinstance(r, dict) else None
    if kind == "error":
        raise BenchError(f"{who}: {json.dumps(request)}: {r.get('error')}")
    if kind == "status":
        return r["status"]
    if kind == "roster":
        return r["friends"]
    if kind == "links":
        return r["links"]
    if kind == "peer_added":
        return {"uid": r["uid"]}
    if kind == "done":
        return {"done": True}
    raise BenchError(f"{who}: {json.dumps(request)}: not a reply: {r}")


class DpNode:
    """A socialvpn-dpnode process driven over stdin with the control protocol (one JSON
    request a line, `{"v":1,"cmd":...}`; one JSON reply a line). `tun_mode` is its
    SOCIALVPN_TUN_MODE: offload (IFF_VNET_HDR), raw (phone fd) or utun (AF header)."""

    def __init__(self, w, name, ns, state, tun, subnet, listen, social=None,
                 tun_mode="offload", binary=DPNODE, env=None):
        self.w = w
        self.name = name
        state.mkdir(parents=True, exist_ok=True)
        argv = [binary, state, tun, subnet, listen] + ([social] if social else [])
        # `env` (bench/ab's variants) may set RUST_LOG or even the tun mode too.
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn"),
               "SOCIALVPN_TUN_MODE": tun_mode, **(env or {})}
        self.p = w.spawn(name, ns, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.lines = queue.Queue()
        t = threading.Thread(target=self._reader, daemon=True)
        t.start()
        hello = self.reply(20)
        self.uid = hello["uid"]
        self.public_key = hello["public_key"]
        self.ipv4 = hello["ipv4"]
        self.pid = self.p.pid

    def _reader(self):
        for line in self.p.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def reply(self, timeout=20):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"{self.name} did not answer within {timeout}s") from None
        if line is None:
            raise BenchError(f"{self.name} exited: {tail(self.w.workdir / f'{self.name}.log')}")
        return json.loads(line)

    def ask(self, cmd, timeout=20, **fields):
        """Sends one request; returns what its reply carries: the status object, the friends
        or links list, `{"uid"}` for an added peer, `{"done": True}`. An error reply raises."""
        request = {"v": API_VERSION, "cmd": cmd, **fields}
        try:
            self.p.stdin.write((json.dumps(request) + "\n").encode())
            self.p.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise BenchError(f"{self.name}: {e}; {tail(self.w.workdir / f'{self.name}.log')}") from e
        return unpack_reply(self.name, request, self.reply(timeout))

    def friend(self, action, jid):
        return self.ask("friend", action=action, jid=jid)

    def drops(self):
        """The engine's drop counters, reason -> count (only reasons counted so far)."""
        return dict(self.ask("status")["counters"].get("drops") or {})

    def add_peer(self, public_key, endpoint):
        uid = self.ask("add_peer", public_key=public_key, endpoint=endpoint)["uid"]
        for link in self.ask("links"):
            if link.get("uid") == uid:
                return uid, link.get("overlay_address")
        raise BenchError(f"{self.name}: no link for {uid} after adding it")

    def close(self, grace=5.0):
        """EOF on stdin stops the node cleanly (closing its links); SIGKILL if it lingers."""
        if self.p.poll() is None:
            try:
                self.p.stdin.close()
            except OSError:
                pass
            try:
                self.p.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        self.w.stop(self.p, sig=signal.SIGKILL)


def setup_socialvpn(w, ctx, peer="socialvpn"):
    """Two test nodes linked by hand. `ctx.dpnode` and `ctx.dpnode_env`, when set, name
    another build of the node and extra environment for it (bench/ab's variants)."""
    mode = SVPN_MODES[peer]["env"]
    d = ctx.tmp / peer
    binary = getattr(ctx, "dpnode", DPNODE)
    env = getattr(ctx, "dpnode_env", None)
    a = DpNode(w, f"{peer}-a", ctx.ns_a, d / "a", "svpn0", SVPN_A_SUBNET, f"{A_UL}:{SVPN_PORT}",
               tun_mode=mode, binary=binary, env=env)
    b = DpNode(w, f"{peer}-b", ctx.ns_b, d / "b", "svpn0", SVPN_B_SUBNET, f"{B_UL}:{SVPN_PORT}",
               tun_mode=mode, binary=binary, env=env)
    nodes = [a, b]
    if ctx.mtu != DEFAULT_MTU:
        for ns in (ctx.ns_a, ctx.ns_b):
            run(["ip", "link", "set", "svpn0", "mtu", ctx.mtu], ns=ns)
    _uid_b, b_at_a = a.add_peer(b.public_key, f"{B_UL}:{SVPN_PORT}")
    b.add_peer(a.public_key, f"{A_UL}:{SVPN_PORT}")
    wait_ping(ctx.ns_a, b_at_a, 20, peer)

    def stop():
        for n in reversed(nodes):
            n.close()

    how = {
        "offload": "the tun with IFF_VNET_HDR (TSO/GRO offloads), as the Linux client has it",
        "raw": "SOCIALVPN_TUN_MODE=raw: bare IP packets, no vnet header, no offloads (what "
               "Android's VpnService hands over)",
        "utun": "SOCIALVPN_TUN_MODE=utun: 4-byte address-family framing over a datagram "
                "socket pair, relayed to a raw tun by two threads in the node; its figures "
                "include the relay's copies, a cost a real utun does not have",
    }[mode]
    return Tunnel(b_at_a, [a.pid], [b.pid],
                  ["socialvpn-dpnode (the engine on a TUN, links configured by hand, no XMPP); "
                   + how],
                  stop, {"node_a": a, "node_b": b, "nodes": nodes, "dir": d},
                  ifaces=("svpn0", "svpn0"))


SETUPS = {
    "raw": setup_raw,
    "wireguard-go": setup_wireguard_go,
    "boringtun": setup_boringtun,
    "nebula": setup_nebula,
    "tinc": setup_tinc,
    "openvpn": setup_openvpn,
    "socialvpn": lambda w, ctx: setup_socialvpn(w, ctx, "socialvpn"),
    "socialvpn-phone": lambda w, ctx: setup_socialvpn(w, ctx, "socialvpn-phone"),
    "socialvpn-utun": lambda w, ctx: setup_socialvpn(w, ctx, "socialvpn-utun"),
}


def read(path):
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def tail(path, n=15):
    return "\n".join(read(path).splitlines()[-n:])

