"""The roster-memory bench (bench/roster-memory), run as part of bench/run."""

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from .common import BENCH, Interrupted, REPO, log


ROSTER_MEMORY = BENCH / "roster-memory"
# bench/roster-memory's cases that issue 16's memory goal names, and the figure each goes by.
ROSTER_MEMORY_KEYS = {"proactive": "peak_rss_mb_1000_contacts_200_online_proactive",
                      "on-demand": "peak_rss_mb_1000_contacts_200_online_on_demand"}
# "< 12 MB", read strictly: 12 × 10^6 bytes.
ROSTER_MEMORY_GOAL_MB = 12
# Two cases of login, 30 s settle and teardown take about 3 minutes.
ROSTER_MEMORY_LIMIT_S = 900


def roster_memory_bench(args, tmp, results):
    """Runs bench/roster-memory (its own world: prosody, coturn, NATs) for the two cases of
    issue 16's memory goal and keeps its figures; its full tables stay in its own files."""
    out = results["roster_memory"] = {}
    rdir = tmp / "roster-memory"
    # Installed and built by bench/run already (install, build).
    cmd = [sys.executable, str(ROSTER_MEMORY), "--skip-install", "--skip-build",
           "--out", str(rdir), "--cases", ",".join(ROSTER_MEMORY_KEYS)]
    if args.mode == "quick":
        cmd.append("--quick")
    log("roster memory: " + " ".join(cmd[1:]))
    # Its progress goes to stderr as it comes; its table (stdout) is kept for a failure.
    printed = tmp / "roster-memory.out"
    with open(printed, "w") as sink:
        child = subprocess.Popen(cmd, cwd=str(REPO), stdout=sink)
        try:
            code = child.wait(timeout=ROSTER_MEMORY_LIMIT_S)
        except (subprocess.TimeoutExpired, Interrupted) as e:
            # Its own handler tears its world down on SIGTERM; SIGKILL would leave it.
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=120)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            if isinstance(e, Interrupted):
                raise
            out["error"] = f"bench/roster-memory took over {ROSTER_MEMORY_LIMIT_S} s"
            log(f"roster memory failed: {out['error']}")
            return
    files = sorted(rdir.glob("*-roster-memory*.json")) if rdir.exists() else []
    if code != 0 or not files:
        tail = " | ".join(printed.read_text().strip().splitlines()[-3:])
        out["error"] = f"bench/roster-memory exited {code}: {tail}"
        log(f"roster memory failed: {out['error']}")
        return
    try:
        data = json.loads(files[-1].read_text())
    except ValueError as e:
        out["error"] = f"bench/roster-memory's results unreadable: {e}"
        return
    out["settings"] = data.get("settings") or {}
    full_sizes = (out["settings"].get("contacts"), out["settings"].get("devices")) == (1000, 200)
    out["cases"] = {}
    for c in data.get("cases") or []:
        fig = {k.replace("_kib", "_mib"): round(c[k] / 1024, 2)
               for k in ("vm_rss_kib", "vm_hwm_kib", "rss_anon_kib", "rss_file_kib")
               if c.get(k) is not None}
        phases = (c.get("after") or {}).get("link_phases") or {}
        fig["links"] = {k: v for k, v in phases.items() if k != "none" and v}
        out["cases"][c["case"]] = fig
        key = ROSTER_MEMORY_KEYS.get(c["case"])
        # The goal's figure only at the goal's sizes (not a quick run's 100 contacts).
        if key and c.get("vm_hwm_kib") is not None and full_sizes:
            mb = c["vm_hwm_kib"] * 1024 / 1e6
            out[key] = {"median": mb, "min": mb, "max": mb, "n": 1}
    missing = [k for k in ROSTER_MEMORY_KEYS if k not in out["cases"]]
    if not full_sizes:
        out["note"] = "not the goal's sizes (1 000 contacts, 200 devices): no goal figure"
    if missing:
        out["error"] = f"bench/roster-memory did not measure {missing}"
    # Kept beside the other results: the run's own tables and per-mapping breakdown.
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    for f in rdir.glob("*-roster-memory*"):
        shutil.copy(f, dest / f.name)
    out["file"] = files[-1].name

