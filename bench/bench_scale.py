"""Scale-out benchmark: throughput with 1, 2 and 4 Ray workers, and what the Ray path costs per prompt.

    python bench/bench_scale.py                  # N = 1, 2, 4 on sleeping nodes; dispatch overhead
    python bench/bench_scale.py --workers 1 2 --prompts-per-worker 8 --step 0.05

Throughput: each server (`nodegraph serve --backend ray --workers N`, its own process, joined to one
local Ray runtime that this script starts) gets `prompts-per-worker x N` prompts at once from a
websocket client; every prompt sleeps `steps x step` seconds in a node (so 2 cores can show the
scaling: the work waits, it does not compute). Figures: prompts/s and the ratio to N = 1 (target
>= 0.85 N). Dispatch overhead: one prompt at a time of near-zero work (Number -> Multiply -> Show),
end-to-end latency with the Ray backend minus the same with the local backend (target < 10 ms), and
the server's own time per prompt beyond the worker's execution (/system_stats). Real work: the demo
model's txt2img (`workflows/txt2img.json`, the built-in node library), one prompt at a time, 1 Ray
worker vs the local backend, on this machine's CPU (`--demo-prompts 0` skips it). The GPU comparison
(real SD1.5 prompts, target: the Ray path costs < 3 %) needs a GPU machine and SD1.5 weights:
`--workers 1 --workflow sd15_txt2img.json --models-dir /models` there.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LIBRARY = "tests.scale.scale_nodes:make_registry"

from tests.server.server_nodes import number_prompt, slow_prompt  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(base: Path, port: int, *, address: str | None, workers: int, library: str | None = LIBRARY,
                 threads: int | None = None, models: Path | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "nodegraph.cli", "-q", "--base-dir", str(base), "serve", "--port", str(port),
               "--preview-method", "none"] + (["--node-library", library] if library else [])
    if models is not None:
        command += ["--models-dir", str(models)]
    if address is not None:
        command += ["--backend", "ray", "--ray-address", address, "--workers", str(workers), "--cpus-per-worker", "0",
                    "--ray-namespace", f"bench-{uuid.uuid4().hex[:8]}"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


async def wait_ready(session: aiohttp.ClientSession, url: str, process: subprocess.Popen, workers: int) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the server exited")
        try:
            async with session.get(url + "/system_stats") as response:
                stats = await response.json()
                ready = sum(w["state"] in ("ready", "busy") for w in stats.get("workers", []))
                if response.status == 200 and (workers == 0 or ready >= workers):
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError("server did not get ready")


async def run_batch(session: aiohttp.ClientSession, url: str, prompts: list[dict]) -> float:
    """Queue all prompts at once, wait until each is done; wall seconds from the first POST."""
    client = uuid.uuid4().hex
    async with session.ws_connect(url.replace("http", "ws") + f"/ws?clientId={client}") as ws:
        await ws.receive()
        started = time.perf_counter()
        pending = set()
        for prompt in prompts:
            async with session.post(url + "/prompt", json={"prompt": prompt, "client_id": client}) as response:
                pending.add((await response.json())["prompt_id"])
        while pending:
            message = await ws.receive(timeout=600)
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if data["type"] == "executing" and data["data"]["node"] is None:
                pending.discard(data["data"]["prompt_id"])
        return time.perf_counter() - started


async def latencies(session: aiohttp.ClientSession, url: str, count: int, offset: float) -> list[float]:
    """End-to-end seconds of `count` near-zero prompts, one at a time."""
    out = []
    for i in range(count):
        out.append(await run_batch(session, url, [number_prompt(offset + i)]))
    return out


async def measure(args: argparse.Namespace, address: str, base: Path) -> dict:
    results: dict = {"throughput": {}, "overhead": {}}
    work = args.steps * args.step
    async with aiohttp.ClientSession() as session:
        for workers in args.workers:
            port = free_port()
            process = start_server(base / f"n{workers}", port, address=address, workers=workers)
            url = f"http://127.0.0.1:{port}"
            try:
                await wait_ready(session, url, process, workers)
                await run_batch(session, url, [slow_prompt(-1.0 - i, steps=1, delay=0.0) for i in range(2 * workers)])
                count = args.prompts_per_worker * workers
                prompts = [slow_prompt(1000.0 * workers + i, steps=args.steps, delay=args.step) for i in range(count)]
                seconds = await run_batch(session, url, prompts)
                results["throughput"][workers] = {"prompts": count, "seconds": seconds, "per_second": count / seconds,
                                                  "ideal_per_second": workers / work}
                if workers == 1:
                    results["overhead"]["ray"] = await latencies(session, url, args.sequential, 5000.0)
                    async with session.get(url + "/system_stats") as response:
                        results["overhead"]["server_beyond_worker_ms"] = (await response.json())["queue"][
                            "worker_overhead_ms"]
            finally:
                process.terminate()
                process.wait(60)
        port = free_port()
        process = start_server(base / "local", port, address=None, workers=0)
        url = f"http://127.0.0.1:{port}"
        try:
            await wait_ready(session, url, process, 0)
            await latencies(session, url, 5, 9000.0)
            results["overhead"]["local"] = await latencies(session, url, args.sequential, 7000.0)
        finally:
            process.terminate()
            process.wait(60)
        if args.demo_prompts:
            results["demo"] = {}
            for name, address in (("local", None), ("ray", address)):
                results["demo"][name] = await demo_seconds(session, base / f"demo-{name}", address, args)
    return results


async def demo_seconds(session: aiohttp.ClientSession, base: Path, address: str | None,
                       args: argparse.Namespace) -> dict:
    """End-to-end seconds of `count` txt2img prompts on the demo model, one at a time (after one warm-up
    that loads the model), and the execution seconds the history's timestamps give (start to success)."""
    from nodegraph.registry import default_registry
    from nodegraph.workflow import load_document

    count = args.demo_prompts
    template = load_document(args.workflow).to_api(default_registry())
    port = free_port()
    # Ray gives a worker with --cpus-per-worker 0 one torch thread (OMP_NUM_THREADS): the local server too.
    process = start_server(base, port, address=address, workers=1, library=None, threads=args.torch_threads or None,
                           models=args.models_dir)
    url = f"http://127.0.0.1:{port}"

    def seeded(seed: int) -> dict:
        prompt = json.loads(json.dumps(template))
        for node in prompt.values():
            if node["class_type"] == "KSampler":
                node["inputs"]["seed"] = seed
        return prompt

    try:
        await wait_ready(session, url, process, 0 if address is None else 1)
        await run_batch(session, url, [seeded(10_000)])
        total = [await run_batch(session, url, [seeded(seed)]) for seed in range(count)]
        async with session.get(url + "/history") as response:
            history = await response.json()
        executing = []
        for entry in list(history.values())[1:]:
            stamps = {event: data["timestamp"] for event, data in entry["status"]["messages"] if "timestamp" in data}
            executing.append((stamps["execution_success"] - stamps["execution_start"]) / 1000)
        return {"total": total, "executing": executing}
    finally:
        process.terminate()
        process.wait(60)


def report(results: dict, args: argparse.Namespace, load: tuple[str, str]) -> None:
    print(f"load average before / after: {load[0]} / {load[1]}")
    print(f"workload: {args.steps} x {args.step:.3f} s of sleep per prompt, {args.prompts_per_worker} prompts per worker")
    one = results["throughput"].get(1)
    print(f"{'workers':>8} {'prompts':>8} {'seconds':>8} {'prompts/s':>10} {'x of N=1':>9} {'target':>7} {'of ideal':>9}")
    for workers, row in sorted(results["throughput"].items()):
        ratio = row["per_second"] / one["per_second"] if one else float("nan")
        print(f"{workers:>8} {row['prompts']:>8} {row['seconds']:>8.2f} {row['per_second']:>10.2f} {ratio:>9.2f} "
              f"{0.85 * workers:>7.2f} {row['per_second'] / row['ideal_per_second']:>9.0%}")
    overhead = results["overhead"]
    if "ray" in overhead and "local" in overhead:
        ray50, local50 = statistics.median(overhead["ray"]), statistics.median(overhead["local"])
        ray90 = sorted(overhead["ray"])[int(0.9 * (len(overhead["ray"]) - 1))]
        local90 = sorted(overhead["local"])[int(0.9 * (len(overhead["local"]) - 1))]
        print(f"one near-zero prompt end to end, p50 / p90: local {local50 * 1000:.1f} / {local90 * 1000:.1f} ms, "
              f"ray {ray50 * 1000:.1f} / {ray90 * 1000:.1f} ms")
        print(f"dispatch overhead per prompt (ray - local, p50): {(ray50 - local50) * 1000:.1f} ms (target < 10 ms)")
        beyond = overhead["server_beyond_worker_ms"]
        print(f"server time per prompt beyond the worker's execution: p50 {beyond['p50']:.1f} ms, "
              f"p99 {beyond['p99']:.1f} ms ({beyond['samples']} prompts)")
    demo = results.get("demo")
    if demo:
        local, ray = statistics.median(demo["local"]["total"]), statistics.median(demo["ray"]["total"])
        print(f"demo txt2img (CPU), one at a time, p50: local {local:.3f} s, ray (1 worker) {ray:.3f} s: "
              f"the Ray path costs {100 * (ray / local - 1):+.1f} % ({len(demo['ray']['total'])} prompts each); "
              f"execution alone (history timestamps) local {statistics.median(demo['local']['executing']):.3f} s, "
              f"ray {statistics.median(demo['ray']['executing']):.3f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--prompts-per-worker", type=int, default=12)
    parser.add_argument("--steps", type=int, default=4, help="sleeping steps per prompt")
    parser.add_argument("--step", type=float, default=0.05, help="seconds per step")
    parser.add_argument("--sequential", type=int, default=40, help="one-at-a-time prompts for the overhead")
    parser.add_argument("--demo-prompts", type=int, default=8, help="txt2img prompts on the demo model (0: skip)")
    parser.add_argument("--workflow", type=Path, default=ROOT / "workflows" / "txt2img.json",
                        help="the real-work workflow (e.g. an SD1.5 txt2img on a GPU machine)")
    parser.add_argument("--models-dir", type=Path, default=None, help="models for --workflow (e.g. SD1.5)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="OMP_NUM_THREADS of the local server, as Ray gives its worker (0: torch's default)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    import ray
    load_before = open("/proc/loadavg").read().split()[:3]
    ray.init(num_cpus=max(4, max(args.workers)), include_dashboard=False, object_store_memory=128 * 1024**2,
             log_to_driver=False, configure_logging=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results = asyncio.run(measure(args, ray.get_runtime_context().gcs_address, Path(tmp)))
    finally:
        ray.shutdown()
    load = (" ".join(load_before), " ".join(open("/proc/loadavg").read().split()[:3]))
    report(results, args, load)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"load": load, "args": vars(args) | {"json": str(args.json)},
                                         **results}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    sys.exit(main())
