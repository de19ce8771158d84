"""Cloud sync of a checkpoint-heavy experiment to a local S3 server (issue 9).

    python benchmarks/sync_bench.py [--trials 4] [--checkpoints 20] [--mb 10] [--repeat 1]

The same workload (each trial writes ``--checkpoints`` checkpoints of ``--mb`` MB
of random bytes, one per step, on the Ray executor with 1 CPU per trial) runs
without and with ``SyncConfig(upload_dir="s3://bench/exp")`` against moto's S3
server, started as a separate process on a free port (so its work does not share
the driver's GIL). Each run is awaited beside bench.py's 5 ms heartbeat. Printed
side by side: wall time, the trials' own time (mean ``time_total_s``), how long
the final sync took (from the end hooks' start to their end: the final upload
runs there, after the final state snapshot), what reached the bucket, and the
heartbeat's lateness.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench import _beside_heartbeat  # noqa: E402 - the heartbeat every benchmark uses

import tune_async as tune  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                             "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("moto server did not start")


def point_s3fs_at(port: int) -> None:
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{port}")


def cpu_s(pid: int | None = None, who: int = resource.RUSAGE_SELF) -> float:
    """CPU seconds (user + system) of this process (``who``: or of its ended children),
    or of process ``pid`` (Linux /proc)."""
    if pid is None:
        usage = resource.getrusage(who)
        return usage.ru_utime + usage.ru_stime
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def s3() -> object:
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)


def trainable(config: dict) -> None:
    size = config["mb"] * 1024 * 1024
    for step in range(config["checkpoints"]):
        with tune.checkpoint_dir(step=step) as d:
            with open(os.path.join(d, "weights.bin"), "wb") as f:
                f.write(os.urandom(size))
        tune.report(step=step)


class EndTimes(tune.Callback):
    """When the end hooks began (registered first) and ended (registered last)."""

    def setup(self, context=None, **info):
        self.context = context
        self.began = self.ended = None
        context.at_end(self._begin)

    def on_experiment_end(self, trials, **info):
        self.context.at_end(self._end)  # after the syncer's final upload

    async def _begin(self):
        self.began = time.perf_counter()

    async def _end(self):
        self.ended = time.perf_counter()


async def one_run(args: argparse.Namespace, local_dir: str, upload_dir: str | None,
                  moto_pid: int) -> dict:
    ends = EndTimes()
    cpu0, moto0 = cpu_s(), cpu_s(moto_pid)
    children0 = cpu_s(who=resource.RUSAGE_CHILDREN)  # the upload worker, once it ended
    sync_config = tune.SyncConfig(upload_dir=upload_dir) if upload_dir else None

    async def work():
        return await tune.arun(trainable, name="exp", local_dir=local_dir, verbose=0,
                               num_samples=args.trials, resources_per_trial={"cpu": 1},
                               config={"mb": args.mb, "checkpoints": args.checkpoints},
                               sync_config=sync_config, callbacks=[ends])

    analysis, wall, late = await _beside_heartbeat(work)
    row = {
        "driver_cpu_s": cpu_s() - cpu0, "server_cpu_s": cpu_s(moto_pid) - moto0,
        "worker_cpu_s": cpu_s(who=resource.RUSAGE_CHILDREN) - children0,
        "wall_s": wall,
        "trial_s": statistics.mean(t.last_result["time_total_s"] for t in analysis.trials),
        "final_sync_s": (ends.ended - ends.began) if upload_dir else None,
        "late_p99_ms": late.get("p99_ms"), "late_max_ms": late.get("max_ms"),
        "late_max_at_s": late.get("max_at_s"),
    }
    if upload_dir:
        fs = s3()
        found = fs.find(upload_dir.replace("s3://", "") + "/exp", detail=True)
        local = os.path.join(local_dir, "exp")
        local_count = sum(len(files) for _, _, files in os.walk(local))
        row["uploaded_mb"] = sum(i["size"] for i in found.values()) / 2**20
        row["complete"] = len(found) == local_count
    return row


def fmt(value, spec=".2f") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return format(value, spec)


async def main_async(args: argparse.Namespace, moto_pid: int) -> list[tuple[str, dict]]:
    rows = []
    for _ in range(args.repeat):
        for label, upload in (("local only", None), ("upload_dir s3://", "s3://bench")):
            local_dir = tempfile.mkdtemp(prefix="sync_bench_", dir=args.local_dir)
            try:
                if upload:
                    fs = s3()
                    if fs.exists("bench"):
                        fs.rm("bench", recursive=True)
                    fs.mkdir("bench")
                rows.append((label, await one_run(args, local_dir, upload, moto_pid)))
            finally:
                shutil.rmtree(local_dir, ignore_errors=True)
            print(label, rows[-1][1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--checkpoints", type=int, default=20)
    parser.add_argument("--mb", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--local-dir", default=None)
    args = parser.parse_args()
    import ray

    port = free_port()
    moto = start_moto(port)
    try:
        point_s3fs_at(port)
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False,
                 address="local")
        rows = asyncio.run(main_async(args, moto.pid))
    finally:
        moto.terminate()
        moto.wait()
    total_mb = args.trials * args.checkpoints * args.mb
    print(f"\n{args.trials} trials x {args.checkpoints} checkpoints x {args.mb} MB "
          f"({total_mb} MB) on Ray, 2 CPUs; moto S3 server on localhost\n")
    print("| run | wall s | trial time s (mean) | final sync s | uploaded MB | complete "
          "| driver CPU s | upload worker CPU s | S3 server CPU s | heartbeat p99 ms "
          "| heartbeat max ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label, r in rows:
        print(f"| {label} | {fmt(r['wall_s'])} | {fmt(r['trial_s'])} | "
              f"{fmt(r['final_sync_s'])} | {fmt(r.get('uploaded_mb'), '.0f')} | "
              f"{fmt(r.get('complete'))} | {fmt(r['driver_cpu_s'], '.1f')} | "
              f"{fmt(r['worker_cpu_s'], '.1f')} | "
              f"{fmt(r['server_cpu_s'], '.1f')} | {fmt(r['late_p99_ms'], '.1f')} | "
              f"{fmt(r['late_max_ms'], '.1f')} |")


if __name__ == "__main__":
    main()
