"""Command line, process isolation, the table and the JSON file."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import multiprocessing
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

from ._harness import FULL, QUICK, Metric, Sizes, WorkloadModule, environment

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
    "W9": "w9_cron",
}
DEFAULT_SET = ("W1", "W2", "W3", "W4", "W5", "W6", "W7")
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


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
    met = metric.met
    return "" if met is None else ("ok" if met else "MISS")


def render_table(metrics: list[Metric], titles: dict[str, str]) -> str:
    header = ["", "variant", "metric", "value", "unit", "ceiling", "vs ceil", "target", "met"]
    rows: list[list[str] | str] = []
    current = None
    for metric in metrics:
        if metric.workload != current:
            current = metric.workload
            rows.append(f"{current}  {titles.get(current, '')}")
        ratio = metric.ratio
        rows.append(
            [
                "",
                metric.variant,
                metric.name,
                _number(metric.value, metric.unit),
                metric.unit,
                _number(metric.ceiling, metric.unit),
                "-" if ratio is None else f"{ratio * 100:.0f}%",
                _target(metric),
                _verdict(metric),
            ]
        )
    table_rows = [r for r in rows if isinstance(r, list)]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *table_rows, strict=True)]
    right = {3, 5, 6}

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
        description="quiv benchmark suite: W1-W7 by default, W8 with --soak.",
    )
    parser.add_argument(
        "--only",
        metavar="W1,W2",
        help="comma-separated workloads to run (default: W1-W7, plus W8 with --soak)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="shrink every workload (CI smoke run, < 1 min)"
    )
    parser.add_argument(
        "--soak", action="store_true", help="also run W8: a million short jobs back to back"
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
    sizes = QUICK if args.quick else FULL
    if args.only:
        selected = [w.strip().upper() for w in args.only.split(",") if w.strip()]
        unknown = [w for w in selected if w not in WORKLOADS]
        if unknown:
            print(f"unknown workload(s): {', '.join(unknown)}", file=sys.stderr)
            return 2
    else:
        selected = list(DEFAULT_SET) + (["W8"] if args.soak else [])

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
            metrics.extend(module.summarize(data, sizes))
        except Exception:
            crashed.append(f"{workload}/summary")
            traceback.print_exc()
    elapsed = time.perf_counter() - started

    setting = environment()
    source = setting["quiv_source"]
    measured = setting["git"] or setting["quiv"]
    if not source["path"].startswith(str(Path(__file__).resolve().parent.parent / "src")):
        measured = f"sources {source['sha1']} from {source['path']}"
    print()
    print(
        f"quiv benchmarks ({'quick' if sizes.quick else 'full'} sizes, "
        f"{elapsed:.0f}s, {len(metrics)} figures) - quiv {measured}, "
        f"Python {setting['python']}, {setting['cpus']} CPU(s), "
        f"load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after"
    )
    print(render_table(metrics, titles))
    missed = [m for m in metrics if m.met is False]
    met = [m for m in metrics if m.met is True]
    print(f"targets: {len(met)} met, {len(missed)} missed")
    for metric in missed:
        print(
            f"  MISS {metric.workload} {metric.variant}: {metric.name} = "
            f"{_number(metric.value, metric.unit)} {metric.unit} (target {_target(metric)})"
        )
    if crashed:
        print(f"units that crashed: {', '.join(crashed)}")

    if not args.no_json:
        document = {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "sizes": "quick" if sizes.quick else "full",
            "argv": sys.argv[1:] if argv is None else argv,
            "elapsed_seconds": elapsed,
            "environment": setting,
            "load_average_before": load_before,
            "metrics": [m.as_json() for m in metrics],
            "units": raw,
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
