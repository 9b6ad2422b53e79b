"""A TLCP 2.1.0 client we did not write: npm `lightstreamer-client-node` 8.0.5 (the version IG's
labs page names, and IG accepts its TLCP 2.1.0) receives ticks equal to ground truth.

The package is installed at test time into a cache folder outside git (`.cache/npm`, ignored);
without node or npm the test is skipped with the reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from simkit import RestLogin, tick_item

from collector.simulator.server import Simulator

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / ".cache" / "npm"
PACKAGE = "lightstreamer-client-node@8.0.5"
SCRIPT = Path(__file__).with_name("node") / "tick_client.js"


@pytest.fixture(scope="module")
def node_client() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the TLCP 2.1.0 client (npm lightstreamer-client-node 8.0.5)")
    if not (NODE_DIR / "node_modules" / "lightstreamer-client-node").is_dir():
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([npm, "install", "--prefix", str(NODE_DIR), PACKAGE, "--no-audit", "--no-fund"],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
        if r.returncode != 0:
            pytest.skip(f"npm could not install {PACKAGE}: {r.stderr.strip()[-300:]}")
    return NODE_DIR


def _run(sim: Simulator, rest: RestLogin, node_dir: Path, count: int, transport: str = "") -> list[dict]:
    env = {"NODE_PATH": str(node_dir / "node_modules"), "PATH": "/usr/bin:/bin"}
    args = ["node", str(SCRIPT), sim.url, rest.ls_password, sim.account_id, tick_item("EURUSD"), str(count)]
    r = subprocess.run([*args, transport] if transport else args, capture_output=True, text=True, timeout=60,
                       env=env)  # fmt: skip
    lines = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert r.returncode == 0, (r.returncode, lines[-5:], r.stderr[-500:])
    return lines


@pytest.mark.parametrize("transport", ["", "HTTP-STREAMING", "HTTP-POLLING"])
def test_tlcp_2_1_client_receives_ticks_equal_to_ground_truth(
    sim: Simulator, rest: RestLogin, node_client: Path, transport: str
) -> None:
    lines = _run(sim, rest, node_client, 25, transport)
    statuses = [ln["status"] for ln in lines if "status" in ln]
    assert f"CONNECTED:{transport or 'WS-STREAMING'}" in statuses
    got = [(int(ln["utm"]), float(ln["bid"]), float(ln["ofr"])) for ln in lines if "utm" in ln]
    truth = [(t.time_ms, t.bid, t.ask) for t in sim.ticks("EURUSD")]
    start = truth.index(got[0])
    assert truth[start : start + len(got)] == got
    assert len(got) == 25
