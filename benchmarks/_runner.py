"""Command line, process isolation, the table and the JSON file."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

from . import peer_apscheduler
from ._harness import FULL, QUICK, SMOKE, Metric, Sizes, WorkloadModule, environment

__all__ = ["main"]

#: Workload id -> module in this package; W8 only runs with --soak.
WORKLOADS: dict[str, str] = {
    "W1": "w1_dispatch",
    "W2": "w2_throughput",
    "W3": "w3_cadence",
    "W4": "w4_progress",
    "W5": "w5_scale",
    "W6": "w6_cancel",
    "W7": "w7_lifecycle",
    "W8": "w8_soak",
    "W9": "w9_calls",
    "W10": "w10_import",
    "W11": "w11_history",
    "W12": "w12_cron",
    "W13": "w13_retries",
    "W14": "w14_processes",
}
DEFAULT_SET = (
    "W1",
    "W2",
    "W3",
    "W4",
    "W5",
    "W6",
    "W7",
    "W9",
    "W10",
    "W11",
    "W12",
    "W13",
    "W14",
)
#: Peer schedulers for ``--peers``: name -> module in this package.
PEERS = {"apscheduler": peer_apscheduler}
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "latest.json"


def _module(workload: str) -> WorkloadModule:
    module = importlib.import_module(f"benchmarks.{WORKLOADS[workload]}")
    return cast(WorkloadModule, module)


def _run_units(workload: str, names: list[str], sizes: Sizes) -> dict[str, dict[str, Any]]:
    """Run some units of one workload here; runs in a child process unless --in-process."""
    module = _module(workload)
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        started = time.perf_counter()
        print(f"  [{workload}] {name} ...", file=sys.stderr, flush=True)
        try:
            out[name] = module.run_unit(name, sizes)
        except Exception:
            out[name] = {"error": traceback.format_exc()}
            print(out[name]["error"], file=sys.stderr, flush=True)
        print(
            f"  [{workload}] {name} done in {time.perf_counter() - started:.1f}s",
            file=sys.stderr,
            flush=True,
        )
    return out


def _in_child(workload: str, names: list[str], sizes: Sizes) -> dict[str, dict[str, Any]]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_run_units, workload, names, sizes).result()


def _run_workload(workload: str, sizes: Sizes, in_process: bool) -> dict[str, dict[str, Any]]:
    module = _module(workload)
    names = module.units(sizes)
    if in_process:
        return _run_units(workload, names, sizes)
    if module.ISOLATE and not sizes.quick:  # memory figures: each unit in a fresh interpreter
        data: dict[str, dict[str, Any]] = {}
        for name in names:
            data.update(_in_child(workload, [name], sizes))
        return data
    return _in_child(workload, names, sizes)


# -- peers -----------------------------------------------------------------------


def _peer_ready(name: str, python: str | None) -> str | None:
    """The peer's version if its interpreter can import it, else None (a message is printed)."""
    peer = PEERS[name]
    if python is None:
        import importlib.util

        if importlib.util.find_spec(name) is None:
            print(
                f"{peer.NAME} is not importable here; `make bench PEERS={name}` installs "
                f"{peer.REQUIREMENT!r} into a side environment",
                file=sys.stderr,
            )
            return None
        return str(peer.version())
    done = subprocess.run(
        [python, "-m", peer.__name__, "--version"], cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode != 0:
        print(f"{python} cannot run the {peer.NAME} peer:\n{done.stderr}", file=sys.stderr)
        return None
    return done.stdout.strip()


def _run_peer(
    name: str, workload: str, sizes: Sizes, python: str | None
) -> dict[str, dict[str, Any]]:
    """Run the peer's units of one workload: in this process if ``python`` is None."""
    peer = PEERS[name]
    names = peer.units(workload, sizes)
    if python is None:
        out: dict[str, dict[str, Any]] = {}
        for unit in names:
            print(f"  [{workload}] {peer.NAME} {unit} ...", file=sys.stderr, flush=True)
            try:
                out[unit] = peer.run_unit(workload, unit, sizes)
            except Exception:
                out[unit] = {"error": traceback.format_exc()}
                print(out[unit]["error"], file=sys.stderr, flush=True)
        return out
    groups = [[unit] for unit in names] if workload in peer.ISOLATE else [names]
    data: dict[str, dict[str, Any]] = {}
    for group in groups:
        with tempfile.TemporaryDirectory() as folder:
            result = Path(folder) / "peer.json"
            command = [python, "-m", peer.__name__, workload, *group]
            command += ["--sizes", sizes.name, "--out", str(result)]
            done = subprocess.run(command, cwd=ROOT)
            if done.returncode != 0 or not result.exists():
                for unit in group:
                    data[unit] = {"error": f"peer process exited with {done.returncode}"}
                continue
            data.update(json.loads(result.read_text())["units"])
    return data


def attach_peer(
    name: str, workload: str, data: dict[str, dict[str, Any]], sizes: Sizes, metrics: list[Metric]
) -> list[str]:
    """Put the peer's figures on quiv's rows; return the figures that found no row."""
    peer = PEERS[name]
    rows = {(m.workload, m.variant, m.name): m for m in metrics}
    unmatched: list[str] = []
    for figure in peer.figures(workload, data, sizes):
        metric = rows.get((figure.workload, figure.variant, figure.name))
        if metric is None:
            unmatched.append(f"{figure.workload} {figure.variant}: {figure.name}")
            continue
        metric.peer = figure.value
        metric.peer_setup = f"{peer.NAME}: {figure.setup}"
    return unmatched


# -- output ----------------------------------------------------------------------


def _number(value: float | None, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if unit in ("jobs/s", "tasks/s", "events/s"):
        return f"{value:,.0f}"
    if unit in ("runs", "jobs", "threads", "fds", "rows", "count"):
        return f"{value:,.0f}"
    if unit == "bool":
        return "yes" if value else "no"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def _target(metric: Metric) -> str:
    if metric.target is None:
        return ""
    if metric.unit == "bool":
        return "yes" if metric.target else "no"
    sign = ">=" if metric.better == "higher" else "<="
    return f"{sign} {_number(metric.target, metric.unit)}"


def _verdict(metric: Metric) -> str:
    met, behind = metric.target_met, metric.behind_peer
    if met is False:
        return "MISS"
    if met and behind:
        return "MISS (peer)"
    if met:
        return "ok"
    return "behind peer" if behind else ""


def _times(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def render_table(metrics: list[Metric], titles: dict[str, str]) -> str:
    with_peer = any(m.peer is not None for m in metrics)
    header = ["", "variant", "metric", "value", "unit", "ceiling", "vs ceil"]
    if with_peer:
        header += ["peer", "vs peer"]
    header += ["target", "met"]
    right = {3, 5, 6, 7, 8} if with_peer else {3, 5, 6}
    rows: list[list[str] | str] = []
    current = None
    for metric in metrics:
        if metric.workload != current:
            current = metric.workload
            rows.append(f"{current}  {titles.get(current, '')}")
        ratio = metric.ratio
        cells = [
            "",
            metric.variant,
            metric.name,
            _number(metric.value, metric.unit),
            metric.unit,
            _number(metric.ceiling, metric.unit),
            "-" if ratio is None else f"{ratio * 100:.0f}%",
        ]
        if with_peer:
            cells += [_number(metric.peer, metric.unit), _times(metric.peer_ratio)]
        rows.append([*cells, _target(metric), _verdict(metric)])
    table_rows = [r for r in rows if isinstance(r, list)]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *table_rows, strict=True)]

    def line(cells: list[str]) -> str:
        parts = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "-" * len(line(header))
    out = [line(header), rule]
    for row in rows:
        if isinstance(row, str):
            out.append(row)
        else:
            out.append(line(row))
    out.append(rule)
    out.append(
        "vs ceil: quiv as a fraction of the raw mechanism measured in the same run "
        "(value/ceiling for rates, ceiling/value for times and sizes; 100% = as good as raw)"
    )
    if with_peer:
        setups = sorted({m.peer_setup for m in metrics if m.peer is not None})
        out.append(
            "vs peer: the same ratio against the peer (above 1.00x: quiv ahead); with a peer "
            "figure a target is only met if quiv is not behind it: 'MISS (peer)' otherwise"
        )
        out.append("peer set-ups: " + "; ".join(setups))
    return "\n".join(out)


def _compact(value: Any, depth: int = 0) -> Any:
    """Make unit data fit for the JSON file: long sample lists become their summary."""
    if isinstance(value, dict):
        return {str(k): _compact(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if len(value) > 20 and all(isinstance(v, int | float) for v in value):
            numbers = [float(v) for v in value]
            return {
                "n": len(numbers),
                "min": min(numbers),
                "max": max(numbers),
                "mean": sum(numbers) / len(numbers),
            }
        if len(value) > 20 or depth > 6:
            return f"<{len(value)} items>"
        return [_compact(v, depth + 1) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# -- main --------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="quiv benchmark suite: W1-W7 and W9-W13 by default, W8 with --soak.",
    )
    parser.add_argument(
        "--only",
        metavar="W1,W2",
        help="comma-separated workloads to run (default: all but W8, plus W8 with --soak)",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_true", help="shrink every workload (CI smoke run, about a minute)"
    )
    size.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes for the test suite: every code path once, meaningless figures",
    )
    parser.add_argument(
        "--soak", action="store_true", help="also run W8: a million short jobs back to back"
    )
    parser.add_argument(
        "--peers",
        choices=sorted(PEERS),
        help="also run the workloads a peer scheduler can run, through its own API, "
        "and print its figures beside quiv's (make bench PEERS=apscheduler)",
    )
    parser.add_argument(
        "--peer-python",
        metavar="PATH",
        help="the interpreter that has the peer installed (default: run it in this process "
        "with --in-process, else with this interpreter)",
    )
    parser.add_argument(
        "--json", type=Path, default=RESULTS, help=f"where to write the results (default {RESULTS})"
    )
    parser.add_argument("--no-json", action="store_true", help="do not write the JSON file")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every unit in this process (for profilers; figures are less isolated)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 if any target is missed"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    sizes = SMOKE if args.smoke else QUICK if args.quick else FULL
    if args.only:
        selected = [w.strip().upper() for w in args.only.split(",") if w.strip()]
        unknown = [w for w in selected if w not in WORKLOADS]
        if unknown:
            print(f"unknown workload(s): {', '.join(unknown)}", file=sys.stderr)
            return 2
    else:
        selected = list(DEFAULT_SET) + (["W8"] if args.soak else [])

    peer_python: str | None = None
    peer_version: str | None = None
    if args.peer_python and not args.peers:
        print("--peer-python needs --peers", file=sys.stderr)
        return 2
    if args.peers:
        if args.peer_python:
            peer_python = args.peer_python
        elif not args.in_process:
            peer_python = sys.executable
        peer_version = _peer_ready(args.peers, peer_python)
        if peer_version is None:
            return 2

    load_before = os.getloadavg()[0]
    cpus = os.cpu_count() or 1
    if load_before > 0.5 * cpus:
        print(
            f"warning: load average {load_before:.1f} on {cpus} CPU(s); other work on this "
            "machine will colour the figures",
            file=sys.stderr,
        )
    started = time.perf_counter()
    metrics: list[Metric] = []
    titles: dict[str, str] = {}
    raw: dict[str, Any] = {}
    peer_raw: dict[str, Any] = {}
    crashed: list[str] = []
    for workload in selected:
        module = _module(workload)
        titles[workload] = module.TITLE
        print(f"{workload}: {module.TITLE}", file=sys.stderr, flush=True)
        data = _run_workload(workload, sizes, args.in_process)
        raw[workload] = _compact(data)
        failed = [name for name, unit in data.items() if "error" in unit]
        crashed.extend(f"{workload}/{name}" for name in failed)
        try:
            rows = module.summarize(data, sizes)
        except Exception:
            rows = []
            crashed.append(f"{workload}/summary")
            traceback.print_exc()
        metrics.extend(rows)
        if args.peers and workload in PEERS[args.peers].WORKLOADS:
            peer_data = _run_peer(args.peers, workload, sizes, peer_python)
            peer_raw[workload] = _compact(peer_data)
            failed = [name for name, unit in peer_data.items() if "error" in unit]
            crashed.extend(f"{workload}/{args.peers}:{name}" for name in failed)
            try:
                unmatched = attach_peer(args.peers, workload, peer_data, sizes, rows)
            except Exception:
                unmatched = ["summary"]
                traceback.print_exc()
            crashed.extend(f"{workload}/{args.peers} figure {u!r} has no row" for u in unmatched)
    elapsed = time.perf_counter() - started

    setting = environment()
    if args.peers:
        setting["peers"] = {
            args.peers: {"version": peer_version, "python": peer_python or sys.executable}
        }
    source = setting["quiv_source"]
    measured = setting["git"] or setting["quiv"]
    if not source["path"].startswith(str(ROOT / "src")):
        measured = f"sources {source['sha1']} from {source['path']}"
    peer_note = f", peer {PEERS[args.peers].NAME} {peer_version}" if args.peers else ""
    print()
    print(
        f"quiv benchmarks ({sizes.name} sizes, "
        f"{elapsed:.0f}s, {len(metrics)} figures) - quiv {measured}{peer_note}, "
        f"Python {setting['python']}, {setting['cpus']} CPU(s), "
        f"load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after"
    )
    print(render_table(metrics, titles))
    missed = [m for m in metrics if m.met is False]
    met = [m for m in metrics if m.met is True]
    behind = [m for m in metrics if m.behind_peer]
    summary = f"targets: {len(met)} met, {len(missed)} missed"
    if args.peers:
        compared = sum(1 for m in metrics if m.peer is not None)
        summary += f"; behind the peer on {len(behind)} of {compared} compared figures"
    print(summary)
    for metric in missed:
        reason = "behind the peer" if metric.target_met else f"target {_target(metric)}"
        print(
            f"  MISS {metric.workload} {metric.variant}: {metric.name} = "
            f"{_number(metric.value, metric.unit)} {metric.unit} ({reason}"
            + (f"; peer {_number(metric.peer, metric.unit)}" if metric.peer is not None else "")
            + ")"
        )
    if crashed:
        print(f"units that crashed: {', '.join(crashed)}")

    if not args.no_json:
        document = {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "sizes": sizes.name,
            "argv": sys.argv[1:] if argv is None else argv,
            "elapsed_seconds": elapsed,
            "environment": setting,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "metrics": [m.as_json() for m in metrics],
            "units": raw,
            "peer_units": peer_raw,
            "crashed": crashed,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
        print(f"results written to {args.json}")

    if crashed:
        return 2
    if args.strict and missed:
        return 1
    return 0
