"""Link set-up through XMPP and STUN/TURN, in a small social world."""

import json
import os
import re
import select
import shutil
import subprocess
import time

from .common import BenchError, log
from .world import run, wait_for
from .procstat import summary
from .tunnels import DpNode, make_ca_and_certs, tail


# Link set-up through XMPP and STUN/TURN: a small social world (prosody, coturn, a cone NAT,
# a symmetric NAT), alice behind the cone NAT, carol with no NAT (direct), bob behind the
# symmetric NAT (relayed through TURN).

W_SERVER = "198.18.10.1"
W_SERVER_ALT = "198.18.10.2"
W_CONE_WAN = "198.18.10.10"
W_SYM_WAN = "198.18.10.11"
W_CAROL = "198.18.10.20"
W_CONE_LAN = "198.19.1.1"
W_SYM_LAN = "198.19.2.1"
W_ALICE = "198.19.1.2"
W_BOB = "198.19.2.2"
DOMAIN = "svpn.test"
TURN_USER, TURN_PASS = "svpn", "turnpass"
SOCIAL_SUBNETS = {"alice": "100.64.0.0/16", "bob": "100.65.0.0/16", "carol": "100.66.0.0/16"}


def bridge_port(up_ns, bridge, up_if, down_ns, down_if):
    run(["ip", "-n", up_ns, "link", "add", up_if, "type", "veth", "peer", "name", down_if,
         "netns", down_ns])
    run(["ip", "-n", up_ns, "link", "set", up_if, "master", bridge])
    run(["ip", "-n", up_ns, "link", "set", up_if, "up"])
    run(["ip", "-n", down_ns, "link", "set", down_if, "up"])


def build_social_world(w, tmp, name="world", users=("alice", "bob", "carol")):
    """The world in namespaces (see above); `users` get XMPP accounts `USER@svpn.test` with
    the password `pw-USER`. Its files go to TMP/NAME."""
    st = tmp / name
    st.mkdir()
    st.chmod(0o755)
    inet = w.netns("inet")
    w.etc_netns(inet, f"{W_SERVER} {DOMAIN}\n")
    run(["ip", "-n", inet, "link", "add", "br0", "type", "bridge"])
    run(["ip", "-n", inet, "addr", "add", f"{W_SERVER}/24", "dev", "br0"])
    run(["ip", "-n", inet, "addr", "add", f"{W_SERVER_ALT}/24", "dev", "br0"])
    run(["ip", "-n", inet, "link", "set", "br0", "up"])
    # A default route into a black hole (frames to a neighbour that never answers), as the
    # real internet would swallow them: coturn gives up an allocation after one failed send.
    run(["ip", "-n", inet, "link", "add", "bh0", "type", "veth", "peer", "name", "bh1"])
    run(["ip", "-n", inet, "addr", "add", "198.18.255.1/30", "dev", "bh0"])
    run(["ip", "-n", inet, "link", "set", "bh0", "up"])
    run(["ip", "-n", inet, "link", "set", "bh1", "up"])
    run(["ip", "-n", inet, "neigh", "add", "198.18.255.2", "lladdr", "02:53:56:50:4e:01",
         "dev", "bh0", "nud", "permanent"])
    run(["ip", "-n", inet, "route", "add", "default", "via", "198.18.255.2", "dev", "bh0"])
    routers = {}
    for rname, wan, lan, symmetric in (("cone", W_CONE_WAN, W_CONE_LAN, False),
                                       ("sym", W_SYM_WAN, W_SYM_LAN, True)):
        r = w.netns(rname)
        w.etc_netns(r)
        bridge_port(inet, "br0", f"p-{rname}", r, "wan")
        run(["ip", "-n", r, "addr", "add", f"{wan}/24", "dev", "wan"])
        run(["ip", "-n", r, "route", "add", "default", "via", W_SERVER])
        run(["ip", "-n", r, "link", "add", "lan0", "type", "bridge"])
        run(["ip", "-n", r, "addr", "add", f"{lan}/24", "dev", "lan0"])
        run(["ip", "-n", r, "link", "set", "lan0", "up"])
        run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], ns=r)
        masq = ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"]
        if symmetric:
            masq.append("--random-fully")
        run(masq, ns=r)
        run(["iptables", "-A", "FORWARD", "-i", "wan", "-m", "conntrack", "!", "--ctstate",
             "ESTABLISHED,RELATED", "-j", "DROP"], ns=r)
        routers[rname] = r
    hosts = {}
    for hname, up_ns, bridge, addr, gw in (("alice", routers["cone"], "lan0", W_ALICE, W_CONE_LAN),
                                           ("bob", routers["sym"], "lan0", W_BOB, W_SYM_LAN),
                                           ("carol", inet, "br0", W_CAROL, W_SERVER)):
        h = w.netns(hname)
        w.etc_netns(h, f"{W_SERVER} {DOMAIN}\n")
        bridge_port(up_ns, bridge, f"h-{hname}", h, "eth0")
        run(["ip", "-n", h, "addr", "add", f"{addr}/24", "dev", "eth0"])
        run(["ip", "-n", h, "route", "add", "default", "via", gw])
        hosts[hname] = h

    # Certificates, prosody, coturn.
    make_ca_and_certs(st / "ca", [DOMAIN], [f"*.{DOMAIN}"])
    pd = st / "prosody"
    for sub in ("data", "log", "certs"):
        (pd / sub).mkdir(parents=True)
    shutil.copy(st / "ca" / f"{DOMAIN}.crt", pd / "certs" / f"{DOMAIN}.crt")
    shutil.copy(st / "ca" / f"{DOMAIN}.key", pd / "certs" / f"{DOMAIN}.key")
    cfg = pd / "prosody.cfg.lua"
    cfg.write_text(f"""-- bench/run social world (generated)
prosody_user = "prosody"
prosody_group = "prosody"
data_path = "{pd / 'data'}"
plugin_paths = {{ }}
interfaces = {{ "{W_SERVER}" }}
c2s_ports = {{ 5222 }}
c2s_direct_tls_ports = {{ }}
modules_enabled = {{
  "roster"; "saslauth"; "tls"; "disco"; "carbons"; "pep"; "private"; "blocklist";
  "ping"; "smacks"; "posix";
}}
modules_disabled = {{ "s2s" }}
c2s_require_encryption = true
allow_unencrypted_plain_auth = false
allow_registration = false
authentication = "internal_hashed"
storage = "internal"
log = {{ info = "{pd / 'log' / 'prosody.log'}"; error = "{pd / 'log' / 'prosody.err'}" }}
certificates = "certs"
ssl = {{ certificate = "{pd / 'certs' / (DOMAIN + '.crt')}"; key = "{pd / 'certs' / (DOMAIN + '.key')}" }}

VirtualHost "{DOMAIN}"
""")
    run(["chown", "-R", "prosody:prosody", pd])
    td = st / "turn"
    td.mkdir()
    coturn = w.spawn("coturn", inet, [
        "turnserver", "-n", "--db", td / "turndb", "--pidfile", td / "turnserver.pid",
        "--log-file", td / "turnserver.log", "--simple-log",
        "--listening-ip", W_SERVER, "--listening-ip", W_SERVER_ALT, "--relay-ip", W_SERVER,
        "--listening-port", "3478", "--min-port", "49152", "--max-port", "49251",
        "--lt-cred-mech", "--user", f"{TURN_USER}:{TURN_PASS}", "--realm", DOMAIN,
        "--fingerprint", "--no-tls", "--no-dtls", "--no-cli"])
    prosody = w.spawn("prosody", inet, [
        "setpriv", "--reuid", "prosody", "--regid", "prosody", "--init-groups",
        "prosody", "--config", cfg, "-F"])

    def tcp_open():
        if prosody.poll() is not None:
            raise BenchError(f"prosody exited: {tail(w.workdir / 'prosody.log')}")
        return run(["bash", "-c", f"exec 3<>/dev/tcp/{W_SERVER}/5222"], ns=inet, check=False,
                   timeout=5).returncode == 0

    def udp_listening():
        if coturn.poll() is not None:
            raise BenchError(f"coturn exited: {tail(td / 'turnserver.log')}")
        return ":3478" in run(["ss", "-Hlun", "sport", "=", ":3478"], ns=inet,
                              check=False).stdout

    wait_for("prosody", tcp_open, 20, 0.2)
    wait_for("coturn", udp_listening, 10, 0.2)
    for user in users:
        run(["prosodyctl", "--config", cfg, "register", user, DOMAIN, f"pw-{user}"], ns=inet,
            timeout=30)
    return {"hosts": hosts, "state": st, "ca": st / "ca" / "ca.crt"}


def start_social_node(w, world, host, user=None, tun="svpn0", subnet=None, listen="0.0.0.0:0"):
    """A socialvpn-dpnode on `host` logged in as USER@svpn.test (default: the host's name)."""
    # A fresh UDP port on every start (as the daemon's default `0.0.0.0:0`): a restart on the
    # same port would meet its predecessor's TURN allocation at coturn (same 5-tuple) and be
    # refused until that allocation expires.
    user = user or host
    st = world["state"] / f"node-{user}"
    st.mkdir(parents=True, exist_ok=True)
    social = st / "social.json"
    social.write_text(json.dumps({
        "jid": f"{user}@{DOMAIN}", "password": f"pw-{user}", "resource": user,
        "server": f"{W_SERVER}:5222", "ca_file": str(world["ca"]),
        "stun": f"{W_SERVER}:3478", "turn": f"{W_SERVER}:3478",
        "turn_user": TURN_USER, "turn_password": TURN_PASS,
        "policy": {"proactive": {"max_links": 64}},
    }))
    n = DpNode(w, f"social-{user}", world["hosts"][host], st, tun,
               subnet or SOCIAL_SUBNETS[host], listen, social)
    wait_for(f"{user} to log in",
             lambda: (n.ask("status").get("xmpp") or {}).get("state") == "online", 20, 0.1)
    return n


def roster_device(roster, uid):
    for e in roster or []:
        for d in e.get("devices") or []:
            if d.get("uid") == uid:
                return d
    return None


def roster_entry(roster, jid):
    for e in roster or []:
        if e.get("jid") == jid:
            return e
    return None


def befriend(a, a_jid, b, b_jid):
    a.friend("add", b_jid)
    wait_for(f"{b_jid} to see {a_jid}'s request",
             lambda: (roster_entry(b.ask("roster"), a_jid) or {}).get("pending_in"), 15, 0.2)
    b.friend("accept", a_jid)
    for n, other in ((a, b_jid), (b, a_jid)):
        wait_for(f"mutual friendship with {other}",
                 lambda n=n, o=other: (roster_entry(n.ask("roster"), o) or {}).get("mutual"),
                 15, 0.2)


def link_of(node, uid):
    d = roster_device(node.ask("roster"), uid)
    return (d or {}).get("link") or {}


def measure_setup_once(w, world, alice, nodes, host):
    """Stops `host`'s node, waits until alice no longer shows it, starts it again and times
    (from its presence at alice, and from its start) the first ping reply through the link."""
    old = nodes[host]
    uid = old.uid
    addr = roster_device(alice.ask("roster"), uid)["overlay_address"]
    old.close()
    wait_for(f"alice to see {host} gone", lambda: link_of(alice, uid).get("state") != "connected",
             40, 0.2)
    time.sleep(1)
    t_start = time.time()
    node = None
    pinger = w.spawn(f"ping-{host}", world["hosts"]["alice"],
                     ["ping", "-D", "-n", "-i", "0.005", "-W", "1", "-w", "90", addr],
                     stdout=subprocess.PIPE)
    try:
        node = start_social_node(w, world, host)
        nodes[host] = node
        t_presence = None
        t_reply = None
        buf = b""
        deadline = time.monotonic() + 80
        while t_reply is None and time.monotonic() < deadline:
            if t_presence is None and roster_device(alice.ask("roster"), uid) is not None:
                t_presence = time.time()
            r, _, _ = select.select([pinger.stdout], [], [], 0.02)
            if r:
                chunk = os.read(pinger.stdout.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
                m = re.search(rb"\[([0-9.]+)\] \d+ bytes from", buf)
                if m:
                    t_reply = float(m.group(1))
        if t_reply is None:
            raise BenchError(f"no ping reply from {host} within the limit")
        relayed = link_of(alice, uid).get("relayed")
    finally:
        w.stop(pinger)
    if t_presence is None or t_presence > t_reply:
        t_presence = t_reply  # the reply came before the roster poll saw the presence
    return {"from_presence_s": t_reply - t_presence, "from_start_s": t_reply - t_start,
            "relayed": relayed}


def setup_time_bench(w, args, tmp, results):
    log("=== link set-up time: building the social world (prosody, coturn, two NATs)")
    out = results["link_setup"] = {}
    try:
        world = build_social_world(w, tmp)
        nodes = {h: start_social_node(w, world, h) for h in ("alice", "bob", "carol")}
        alice = nodes["alice"]
        befriend(alice, f"alice@{DOMAIN}", nodes["carol"], f"carol@{DOMAIN}")
        befriend(alice, f"alice@{DOMAIN}", nodes["bob"], f"bob@{DOMAIN}")
        for host in ("carol", "bob"):
            uid = nodes[host].uid
            wait_for(f"alice's first link to {host}",
                     lambda u=uid: link_of(alice, u).get("state") == "connected", 60, 0.2)
        for host, kind in (("carol", "direct"), ("bob", "turn")):
            runs = []
            for i in range(args.repeats):
                log(f"link set-up {kind} ({host}), run {i + 1}/{args.repeats}")
                runs.append(measure_setup_once(w, world, alice, nodes, host))
                log(f"  {runs[-1]}")
            out[kind] = {
                "from_presence_s": summary([r["from_presence_s"] for r in runs]),
                "from_start_s": summary([r["from_start_s"] for r in runs]),
                "relayed": [r["relayed"] for r in runs],
            }
    except BenchError as e:
        log(f"link set-up: FAILED: {e}")
        out["error"] = str(e)

