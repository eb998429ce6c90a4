"""Paths, addresses and settings every part of the benchmark shares; its log and errors."""

import os
import signal
import sys
import time
from pathlib import Path


# bench/, the folder of bench/run, bench/ab and this package.
BENCH = Path(__file__).resolve().parent.parent
REPO = BENCH.parent
TOOLS = BENCH / ".tools"
RESULTS = BENCH / "results"
DPNODE = REPO / "target" / "release" / "socialvpn-dpnode"
# The Linux client as users run it (`socialvpn up`): the daemon-idle figure.
SOCIALVPN = REPO / "target" / "release" / "socialvpn"
ROSTER_WORLD = REPO / "target" / "release" / "socialvpn-roster-bench"

# The one veth pair every tunnel runs over (underlay, 198.18.0.0/15 only).
A_UL = "198.18.0.1"
B_UL = "198.18.0.2"
UL_PREFIX = 24
VETH_MTU = 1500
# The SocialVPN test node's TUN MTU (fixed in socialvpn-dpnode; also the daemon's default).
# Every tunnel gets the same inner MTU; see README.
DEFAULT_MTU = 1360

# Overlay addresses (100.64.0.0/10 only), one /24 per peer so nothing overlaps.
OVERLAY = {
    "boringtun": ("100.64.1.1", "100.64.1.2", 24),
    "nebula": ("100.64.2.1", "100.64.2.2", 24),
    "tinc": ("100.64.3.1", "100.64.3.2", 24),
    "openvpn": ("100.64.4.1", "100.64.4.2", 24),
    "wireguard-go": ("100.64.5.1", "100.64.5.2", 24),
}
# SocialVPN: each node owns a subnet (it takes the first address); friends of the idle test
# get 100.(90+k).0.0/16.
SVPN_A_SUBNET = "100.80.0.0/16"
SVPN_B_SUBNET = "100.81.0.0/16"
SVPN_PORT = 51830

# wireguard-go, built from the Go module proxy with `go install` (a pseudo-version module:
# `go list -m -versions` lists none; this is what @latest resolved to, pinned).
WIREGUARD_GO_MODULE = "golang.zx2c4.com/wireguard"
WIREGUARD_GO_VERSION = "v0.0.0-20260522210424-ecfc5a8d5446"
GO = "/usr/local/go/bin/go"

PEER_ORDER = ["raw", "wireguard-go", "boringtun", "nebula", "tinc", "openvpn", "socialvpn",
              "socialvpn-phone", "socialvpn-utun"]
PEER_TITLES = {
    "raw": "raw veth",
    "wireguard-go": "wireguard-go",
    "boringtun": "boringtun",
    "nebula": "nebula",
    "tinc": "tinc",
    "openvpn": "openvpn",
    "socialvpn": "SocialVPN (Linux offloads)",
    "socialvpn-phone": "SocialVPN (phone fd)",
    "socialvpn-utun": "SocialVPN (utun framing)",
}
# SocialVPN's three ways of getting its tun (socialvpn-dpnode's SOCIALVPN_TUN_MODE), each
# compared with the peers that get their packets the same way: the Linux mode with every
# peer, the phone-fd and utun modes only with peers that read bare packets from a tun
# without offloads (a phone's VPN API has none to give).
SVPN_MODES = {
    "socialvpn": {"env": "offload", "prefix": "linux_offload", "ratio": "linux_offload_vs_best",
                  "short": "Linux offloads", "group": "all"},
    "socialvpn-phone": {"env": "raw", "prefix": "phone_fd",
                        "ratio": "phone_fd_vs_best_no_offload", "short": "phone fd",
                        "group": "no_offload"},
    "socialvpn-utun": {"env": "utun", "prefix": "utun", "ratio": "utun_vs_best_no_offload",
                       "short": "utun framing", "group": "no_offload"},
}
# Peers whose tun uses the kernel's offloads (TSO/GRO through IFF_VNET_HDR): not what a phone
# gets, so left out of the phone-fd and utun comparisons.
TUN_OFFLOAD_PEERS = {"wireguard-go"}
NOT_PEERS = {"raw"} | set(SVPN_MODES)

CLK_TCK = os.sysconf("SC_CLK_TCK")
T0 = time.monotonic()


def log(msg):
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


class Interrupted(BaseException):
    pass


def on_signal(signum, _frame):
    raise Interrupted(f"signal {signal.Signals(signum).name}")

