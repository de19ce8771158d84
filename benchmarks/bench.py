"""Time tune_async against ray.tune on the same machine, in one run.

Each (workload, framework, repeat) runs in a fresh child process (this same
file with ``--child``) so Ray instances never collide and both frameworks pay
``ray.init`` the same way. The child calls ``ray.init(num_cpus=2)`` itself and
times it apart from the ``tune.run`` call.

Usage::

    python benchmarks/bench.py [--only tune_async|ray]
                               [--workload many_short|throughput] [--repeat N]
                               [--ray-loggers json-csv|default] [--timeout S]

Writes ``benchmarks/results.json`` (all samples, medians, machine info) and
prints a table. ray.tune's column is "n/a" when it is not importable.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS_PATH = HERE / "results.json"
FRAMEWORKS = ("tune_async", "ray")
NUM_CPUS = 2
DEFAULT_TIMEOUT_S = 600
MARKER = "BENCH_RESULT "


@attrs.frozen
class Workload:
    """One benchmark shape: ``num_samples`` trials each reporting ``num_results`` times."""

    name: str
    title: str
    num_samples: int
    num_results: int


WORKLOADS = {
    "many_short": Workload("many_short", "many short trials (100 x 10)", 100, 10),
    "throughput": Workload("throughput", "result throughput (8 x 2000)", 8, 2000),
}


# ---------------------------------------------------------------- trainables
# Built by factories so the child's __main__ closures are pickled by value to
# the trial workers. Both do exactly the same thing; only the report call's
# spelling differs (ray.tune 2.x's ``tune.report`` takes a dict, no kwargs).

def tune_async_trainable(num_results: int) -> Callable[[dict], None]:
    def trainable(config: dict) -> None:
        import tune_async as tune

        for i in range(num_results):
            tune.report(score=i + config["x"])

    return trainable


def ray_trainable(num_results: int) -> Callable[[dict], None]:
    def trainable(config: dict) -> None:
        from ray import tune

        for i in range(num_results):
            tune.report({"score": i + config["x"]})

    return trainable


# --------------------------------------------------------------------- child

def _peak_rss_mib() -> float:
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _run_tune_async(wl: Workload, storage: str, ray_loggers: str) -> tuple[Any, float]:
    import tune_async as tune

    t0 = time.perf_counter()
    analysis = tune.run(
        tune_async_trainable(wl.num_results),
        config={"x": tune.uniform(0, 1)},
        num_samples=wl.num_samples,
        local_dir=storage,
        verbose=0,
    )
    return analysis, time.perf_counter() - t0


def _run_ray(wl: Workload, storage: str, ray_loggers: str) -> tuple[Any, float]:
    from ray import tune

    kwargs: dict[str, Any] = {}
    if ray_loggers == "json-csv":
        # Same files as tune_async: ray's defaults would add TensorBoard too.
        from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

        kwargs["callbacks"] = [JsonLoggerCallback(), CSVLoggerCallback()]
    t0 = time.perf_counter()
    analysis = tune.run(
        ray_trainable(wl.num_results),
        config={"x": tune.uniform(0, 1)},
        num_samples=wl.num_samples,
        storage_path=storage,
        verbose=0,
        **kwargs,
    )
    return analysis, time.perf_counter() - t0


def _check(analysis: Any, wl: Workload, storage: str) -> dict[str, Any]:
    """Did every trial finish with all its results reported and logged?"""
    trials = analysis.trials
    statuses = sorted({str(t.status) for t in trials})
    iters = [t.last_result.get("training_iteration") for t in trials]
    json_lines = 0
    files: set[str] = set()
    for path in Path(storage).rglob("*"):
        if path.is_file():
            files.add("events.out.tfevents" if path.name.startswith("events.out") else path.name)
            if path.name == "result.json":
                json_lines += sum(1 for _ in path.open())
    ok = (
        len(trials) == wl.num_samples
        and statuses == ["TERMINATED"]
        and all(i == wl.num_results for i in iters)
        and json_lines == wl.num_samples * wl.num_results
    )
    return {
        "ok": ok,
        "trials": len(trials),
        "statuses": statuses,
        "result_json_lines": json_lines,
        "files": sorted(files),
    }


def child_main(framework: str, workload: str, storage: str, ray_loggers: str) -> None:
    """Run one measurement and print it as a ``BENCH_RESULT {json}`` line."""
    wl = WORKLOADS[workload]
    if framework == "ray" and ray_loggers == "json-csv":
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=NUM_CPUS)
    init_s = time.perf_counter() - t0
    rss_after_init = _peak_rss_mib()
    t0 = time.perf_counter()
    importlib.import_module("tune_async" if framework == "tune_async" else "ray.tune")
    import_s = time.perf_counter() - t0
    runner = _run_tune_async if framework == "tune_async" else _run_ray
    analysis, run_s = runner(wl, storage, ray_loggers)
    peak_rss = _peak_rss_mib()
    check = _check(analysis, wl, storage)
    ray.shutdown()
    out = {
        "framework": framework,
        "workload": workload,
        "init_s": init_s,
        "import_s": import_s,
        "run_s": run_s,
        "peak_rss_mib": peak_rss,
        "peak_rss_after_init_mib": rss_after_init,
        **check,
    }
    print(MARKER + json.dumps(out), flush=True)


# -------------------------------------------------------------------- parent

def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # Ray workers inherit the driver's environment: they must import tune_async too.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _progress(storage: str) -> str:
    """How far a killed child got: trials whose result.json has lines, of those started."""
    files = list(Path(storage).rglob("result.json"))
    with_results = sum(1 for f in files if f.stat().st_size > 0)
    return f"{with_results} of {len(files)} started trials had written results"


def run_child(framework: str, workload: str, args: argparse.Namespace) -> dict[str, Any]:
    """One fresh-process measurement; a failure is returned as ``{"error": ...}``."""
    storage = tempfile.mkdtemp(prefix=f"bench_{framework}_{workload}_")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", framework,
           "--workload", workload, "--storage", storage, "--ray-loggers", args.ray_loggers]
    base = {"framework": framework, "workload": workload}
    t0 = time.perf_counter()
    # A session of its own: on timeout the whole tree (driver + its Ray) is killed.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_child_env(), cwd=tempfile.gettempdir(),
                            start_new_session=True)
    try:
        try:
            out, err = proc.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {**base, "error": f"hung: killed after {args.timeout:g} s; "
                                     f"{_progress(storage)}"}
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    for line in reversed(out.splitlines()):
        if line.startswith(MARKER):
            return {**json.loads(line[len(MARKER):]), "process_s": time.perf_counter() - t0}
    tail = "\n".join((err or out).splitlines()[-25:])
    return {**base, "error": f"exit code {proc.returncode}\n{tail}"}


def probe_ray() -> str | None:
    """ray's version when ``ray.tune`` imports in a fresh interpreter, else None."""
    proc = subprocess.run([sys.executable, "-c", "import ray, ray.tune; print(ray.__version__)"],
                          capture_output=True, text=True, env=_child_env())
    return proc.stdout.strip() if proc.returncode == 0 else None


def machine_info(ray_version: str | None) -> dict[str, Any]:
    cpu_model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem_gib = None
    if hasattr(os, "sysconf"):
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": nproc,
        "cpu": cpu_model,
        "mem_gib": mem_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "ray_version": ray_version,
        "ray_init_num_cpus": NUM_CPUS,
    }


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Medians over the successful repeats (None when all failed)."""
    good = [s for s in samples if "error" not in s]
    if not good:
        return None
    keys = ("run_s", "init_s", "import_s", "peak_rss_mib")
    summary: dict[str, Any] = {k: statistics.median(s[k] for s in good) for k in keys}
    summary["repeats"] = len(good)
    summary["all_ok"] = all(s["ok"] for s in good)
    return summary


def _fmt(value: float | None, spec: str, missing: str = "n/a") -> str:
    return missing if value is None else format(value, spec)


def _get(per_fw: dict[str, Any], fw: str, key: str) -> float | None:
    summary = per_fw.get(fw)
    return summary[key] if summary else None


def _run_cell(per_fw: dict[str, Any], fw: str) -> str:
    # "failed": ran but no repeat succeeded; "n/a": not run (skipped).
    return _fmt(_get(per_fw, fw, "run_s"), ".2f", "failed" if fw in per_fw else "n/a")


def _pair(per_fw: dict[str, Any], key: str, spec: str) -> str:
    return f"{_fmt(_get(per_fw, 'tune_async', key), spec)} / {_fmt(_get(per_fw, 'ray', key), spec)}"


def print_table(summary: dict[str, dict[str, Any]]) -> None:
    header = ("workload", "tune_async s", "ray.tune s", "ratio ray/ta",
              "init ta/ray s", "peak RSS ta/ray MiB")
    rows = [header]
    for wl_name, per_fw in summary.items():
        ta, ry = _get(per_fw, "tune_async", "run_s"), _get(per_fw, "ray", "run_s")
        ratio = ry / ta if ta and ry else None
        rows.append((
            WORKLOADS[wl_name].title,
            _run_cell(per_fw, "tune_async"),
            _run_cell(per_fw, "ray"),
            _fmt(ratio, ".1f") + ("x" if ratio else ""),
            _pair(per_fw, "init_s", ".2f"),
            _pair(per_fw, "peak_rss_mib", ".0f"),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=FRAMEWORKS, help="run one framework only")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), help="run one workload only")
    parser.add_argument("--repeat", type=int, default=1, help="fresh runs per cell (median)")
    parser.add_argument("--ray-loggers", choices=("json-csv", "default"), default="json-csv",
                        help="json-csv: ray.tune writes the same JSON+CSV files as tune_async "
                             "(default); default: ray.tune's own defaults (adds TensorBoard)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds before a run counts as hung and is killed")
    parser.add_argument("--out", type=Path, default=RESULTS_PATH, help="results JSON path")
    parser.add_argument("--child", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--storage", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")
    if args.timeout <= 0:
        parser.error(f"--timeout must be > 0 seconds, got {args.timeout}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        storage = args.storage or tempfile.mkdtemp(prefix="bench_child_")
        child_main(args.child, args.workload or "many_short", storage, args.ray_loggers)
        return 0
    ray_version = probe_ray()
    frameworks = [args.only] if args.only else list(FRAMEWORKS)
    workloads = [args.workload] if args.workload else list(WORKLOADS)
    samples: list[dict[str, Any]] = []
    summary: dict[str, dict[str, Any]] = {}
    for wl_name in workloads:
        summary[wl_name] = {}
        for fw in frameworks:
            if fw == "ray" and ray_version is None:
                print(f"[{wl_name}] ray: ray.tune not importable, skipped", flush=True)
                continue
            fw_samples = []
            for rep in range(args.repeat):
                result = run_child(fw, wl_name, args)
                result["repeat"] = rep
                fw_samples.append(result)
                status = (f"FAILED: {result['error']}" if "error" in result else
                          f"run {result['run_s']:.2f} s, init {result['init_s']:.2f} s, "
                          f"peak RSS {result['peak_rss_mib']:.0f} MiB, ok={result['ok']}")
                print(f"[{wl_name}] {fw} #{rep}: {status}", flush=True)
            samples += fw_samples
            summary[wl_name][fw] = summarize(fw_samples)
    print()
    print_table(summary)
    report = {
        "machine": machine_info(ray_version),
        "settings": {"repeat": args.repeat, "ray_loggers": args.ray_loggers,
                     "timeout_s": args.timeout,
                     "workloads": {n: attrs.asdict(WORKLOADS[n]) for n in workloads}},
        "summary": summary,
        "samples": samples,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    failed = [s for s in samples if "error" in s or not s.get("ok")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
