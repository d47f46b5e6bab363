"""The benchmark suite runs, in its smallest form, so it cannot rot unnoticed.

``python -m benchmarks --smoke --soak --in-process`` runs every workload once
with tiny sizes in a child interpreter (the figures mean nothing; the code
paths, the summaries and the JSON are what is checked). When APScheduler is
importable here, the same run adds ``--peers apscheduler``, so the peer units
run in that process too and their figures must land on quiv's rows; without it
the peer checks are skipped (``make bench PEERS=apscheduler`` installs it into
a side environment, not this one).
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the benchmarks package lives beside src/, not in it
    sys.path.insert(0, str(ROOT))

from benchmarks import peer_apscheduler  # noqa: E402
from benchmarks._harness import Metric  # noqa: E402
from benchmarks._runner import DEFAULT_SET, _verdict  # noqa: E402

HAVE_APSCHEDULER = importlib.util.find_spec("apscheduler") is not None
NO_APSCHEDULER = "APScheduler is not installed here (make bench PEERS=apscheduler uses a side venv)"

pytestmark = pytest.mark.timeout(150)

#: Every workload but W14, which starts processes of its own (its own test, below).
IN_PROCESS_SET = (*(w for w in DEFAULT_SET if w != "W14"), "W8")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The JSON document of one smoke run (with the peer when it is importable)."""
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    command = [sys.executable, "-m", "benchmarks", "--smoke", "--soak", "--in-process"]
    command += ["--only", ",".join(IN_PROCESS_SET), "--json", str(out)]
    if HAVE_APSCHEDULER:
        command += ["--peers", "apscheduler"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=140)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    document: dict[str, Any] = json.loads(out.read_text())
    document["stdout"] = done.stdout
    return document


def test_every_workload_reports_finite_figures(smoke: dict[str, Any]) -> None:
    assert smoke["crashed"] == []
    assert smoke["sizes"] == "smoke"
    metrics = smoke["metrics"]
    assert {m["workload"] for m in metrics} == set(IN_PROCESS_SET)
    assert {m["variant"] for m in metrics if m["workload"] in ("W8", "W11")} == {
        "AsyncQuiv",
        "Quiv",
    }
    assert [m for m in metrics if m["value"] is None] == []
    # Every target carries a verdict, and the facade call cost covers every call named
    # in issue #9 with its own target.
    assert all(isinstance(m["met"], bool) for m in metrics if m["target"] is not None)
    targeted_calls = {
        m["metric"].removesuffix(" p50")
        for m in metrics
        if m["workload"] == "W9" and m["target"] is not None
    }
    assert targeted_calls == {
        "add_task",
        "run_task_immediately",
        "pause_task",
        "resume_task",
        "cancel_job",
        "get_task",
        "get_job",
    }
    assert "targets:" in smoke["stdout"]


@pytest.mark.skipif(not HAVE_APSCHEDULER, reason=NO_APSCHEDULER)
def test_peer_figures_sit_beside_the_rows_they_mirror(smoke: dict[str, Any]) -> None:
    compared = [m for m in smoke["metrics"] if m["peer"] is not None]
    # Each mirrored quiv unit got peer figures, in each workload the peer runs.
    seen = {(m["workload"], m["variant"].split(" / ")[0]) for m in compared}
    expected = {(w, unit) for w, units in peer_apscheduler.WORKLOADS.items() for unit in units}
    assert seen == expected
    for m in compared:
        peer = m["peer"]
        assert peer["setup"].startswith("APScheduler: ")
        assert math.isfinite(peer["value"])
        if m["target_met"] and peer["behind_peer"]:
            assert m["met"] is False
    assert smoke["environment"]["peers"]["apscheduler"]["version"].startswith("3.")
    assert "vs peer" in smoke["stdout"]


def _row(value: float, peer: float | None, better: Literal["lower", "higher"] = "lower") -> Metric:
    return Metric("W9", "Quiv", "add_task p50", value, "ms", better, target=0.05, peer=peer)


def test_a_target_is_met_only_when_quiv_is_not_behind_the_peer() -> None:
    assert _row(0.04, None).met is True
    assert _verdict(_row(0.04, None)) == "ok"
    assert _row(0.04, 0.08).met is True
    assert _row(0.04, 0.08).peer_ratio == pytest.approx(2.0)
    behind = _row(0.04, 0.02)
    assert (behind.target_met, behind.behind_peer, behind.met) == (True, True, False)
    assert _verdict(behind) == "MISS (peer)"
    assert _verdict(_row(0.06, 0.02)) == "MISS"
    # A tie is not behind (counts such as missed runs are often 0 on both sides).
    assert _row(0.0, 0.0).behind_peer is False
    # For rates, higher is better.
    assert _row(10.0, 20.0, "higher").behind_peer is True
    assert _row(20.0, 10.0, "higher").behind_peer is False


@pytest.mark.processes
def test_several_processes_workload_reports_each_backend(tmp_path: Path) -> None:
    """W14 at its smoke size: real processes on a SQLite file (and on PostgreSQL
    when ``QUIV_TEST_POSTGRES_URL`` is set); duplicates and misses must be zero."""
    out = tmp_path / "w14.json"
    command = [sys.executable, "-m", "benchmarks", "--smoke", "--only", "W14", "--in-process"]
    done = subprocess.run(
        [*command, "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=140
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    metrics = json.loads(out.read_text())["metrics"]
    assert {m["workload"] for m in metrics} == {"W14"}
    variants = {m["variant"] for m in metrics}
    assert "sqlite" in variants
    for metric in metrics:
        assert metric["value"] is not None and math.isfinite(metric["value"]), metric
        if metric["metric"] in ("duplicate runs", "missed due times"):
            assert metric["value"] == 0, metric
