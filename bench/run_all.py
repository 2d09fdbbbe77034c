"""Run every benchmark and write bench/results/latest.json and latest.md (`make bench`).

P1–P3 run here (as subprocesses, sharing one temporary image set and embedding cache); P4 (inference API)
and P5 (aggregator) are other packages' scripts, run when present with their quick flag. Budget: under
15 minutes on a 2-core CPU machine with the default sizes, which every script prints.

    python bench/run_all.py              # full
    python bench/run_all.py --quick      # smallest sizes (tests)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
OURS = ("p2_compute.py", "p1_upload.py", "p3_embed.py")  # P2 first: it fills the cache P1 then reuses
EXTERNAL = ("p4_predict.py", "p5_round_close.py", "p8_secagg.py")
QUICK_FLAGS = ("--quick", "--small")

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _run(command: list[str], timeout: float) -> dict[str, Any]:
    print(f"\n$ {' '.join(command)}", flush=True)
    started = time.perf_counter()
    try:
        completed = subprocess.run(command, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"status": f"timed out after {timeout:.0f} s", "seconds": time.perf_counter() - started}
    status = "ok" if completed.returncode == 0 else f"failed (exit {completed.returncode})"
    return {"status": status, "returncode": completed.returncode, "seconds": time.perf_counter() - started}


def _external_arguments(script: Path, result: Path, quick: bool) -> list[str]:
    """Flags for another package's benchmark, read off its --help: its own small mode when we run quick
    (otherwise its defaults: they are its real measurement), and its output path when it takes one."""
    try:
        shown = subprocess.run(
            [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120, check=False
        ).stdout
    except subprocess.TimeoutExpired:
        return []
    arguments: list[str] = []
    if quick:
        arguments += [flag for flag in QUICK_FLAGS if flag in shown][:1]
    if "--out" in shown:
        arguments += ["--out", str(result)]
    return arguments


def _run_all(options: argparse.Namespace) -> dict[str, dict[str, Any]]:
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="fedmedclip-bench-") as work:
        for name in OURS:
            key = name.split("_")[0]
            (options.results / f"{key}.json").unlink(missing_ok=True)  # never report a stale figure as new
            command = [sys.executable, str(HERE / name), "--work", work, "--results", str(options.results)]
            runs[key] = _run(command + (["--quick"] if options.quick else []), options.timeout)
    for name in EXTERNAL:
        key, script = name.split("_")[0], HERE / name
        if options.no_external:
            runs[key] = {"status": "skipped (--no-external)"}
        elif not script.is_file():
            exists = (options.results / f"{key}.json").is_file()
            runs[key] = {"status": f"bench/{name} not present" + ("; an earlier result was kept" if exists else "")}
        else:
            result = options.results / f"{key}.json"
            result.unlink(missing_ok=True)
            arguments = _external_arguments(script, result, options.quick)
            runs[key] = _run([sys.executable, str(script), *arguments], options.timeout)
            if not result.is_file() and (RESULTS_DIR / f"{key}.json").is_file() and options.results != RESULTS_DIR:
                # A script without --out writes to bench/results/; bring its figure along.
                result.write_bytes((RESULTS_DIR / f"{key}.json").read_bytes())
    return runs


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smallest sizes everywhere (for tests)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--no-external", action="store_true", help="do not run the P4/P5 scripts")
    parser.add_argument("--collect-only", action="store_true", help="run nothing; rebuild latest.* from p*.json")
    parser.add_argument("--timeout", type=float, default=420.0, help="seconds allowed per script")
    options = parser.parse_args(argv)
    options.results.mkdir(parents=True, exist_ok=True)

    from fedmedclip.experiment.machine import machine_info
    from fedmedclip.experiment.perf.collect import assemble, read_results, to_markdown
    from fedmedclip.experiment.perf.common import write_json

    started = time.perf_counter()
    machine = machine_info("cpu")  # the load average before our own work starts
    if options.collect_only:
        runs = {p.stem: {"status": "collected from an existing file"} for p in options.results.glob("p*.json")}
    else:
        runs = _run_all(options)
    results = read_results(options.results)
    extra: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "total_seconds": time.perf_counter() - started,
        "quick": options.quick,
    }
    gpu_file = options.results / "gpu.json"
    if gpu_file.is_file():
        extra["gpu"] = json.loads(gpu_file.read_text()).get("gpu", {})
    latest = assemble(results, machine, runs, extra)
    write_json(options.results / "latest.json", latest)
    markdown = to_markdown(latest)
    (options.results / "latest.md").write_text(markdown)
    print("\n" + markdown)
    print(f"total {latest['total_seconds']:.0f} s; wrote {options.results / 'latest.json'} and latest.md")
    return latest


if __name__ == "__main__":
    main()
