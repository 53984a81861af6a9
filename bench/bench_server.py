"""Server benchmark: N concurrent websocket clients each queue M prompts and wait for them.

    python bench/bench_server.py                       # 20 clients x 10 prompts, toy nodes, then 1,000 for memory
    python bench/bench_server.py --workload tiny       # the SD1.x tiny checkpoint (txt2img, 64x64, 2 steps)

Reports: completed / lost / duplicated history entries, p50 / p99 latency of POST /prompt, the
server's time per prompt beyond execution (measured in the worker: dequeue, events, history
write, status), throughput, and the server's RSS before, after the first round and after 1,000
prompts. The server runs as its own process on 127.0.0.1 (a free port, a temporary user dir).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(workload: str, base: Path, port: int) -> subprocess.Popen:
    if workload == "toy":
        command = [sys.executable, "-m", "tests.server.toy_server", str(base), str(port)]
    else:
        command = [sys.executable, "-m", "nodegraph.cli", "serve", "--base-dir", str(base), "--port", str(port),
                   "--quiet", "--preview-method", "none"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process


async def wait_up(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError("the server exited")
            try:
                async with session.get(url + "/prompt") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError("server did not start")


def make_prompt(workload: str, template: dict | None, n: int) -> dict:
    if workload == "toy":
        return {"1": {"class_type": "Number", "inputs": {"value": float(n)}},
                "2": {"class_type": "Multiply", "inputs": {"a": ["1", 0], "factor": 2.0}},
                "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    prompt = json.loads(json.dumps(template))
    for node in prompt.values():
        if node["class_type"] == "KSampler":
            node["inputs"].update(seed=n, steps=2)
    return prompt


async def client(url: str, ws_url: str, index: int, count: int, workload: str, template: dict | None,
                 latencies: list[float], offset: int) -> list[str]:
    client_id = f"bench-{offset}-{index}"
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{ws_url}?clientId={client_id}") as ws:
            ids = []
            for i in range(count):
                body = json.dumps({"prompt": make_prompt(workload, template, offset + index * count + i),
                                   "client_id": client_id})
                start = time.perf_counter()
                async with session.post(url + "/prompt", data=body) as response:
                    answer = await response.json()
                latencies.append(time.perf_counter() - start)
                assert response.status == 200, answer
                ids.append(answer["prompt_id"])
            waiting = set(ids)
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(message.data)
                if data["type"] == "executing" and data["data"]["node"] is None:
                    waiting.discard(data["data"]["prompt_id"])
                    if not waiting:
                        break
            return ids


async def round_of(url: str, ws_url: str, clients: int, per_client: int, workload: str, template: dict | None,
                   offset: int) -> tuple[list[str], list[float], float]:
    latencies: list[float] = []
    start = time.perf_counter()
    results = await asyncio.gather(*(client(url, ws_url, i, per_client, workload, template, latencies, offset)
                                     for i in range(clients)))
    return [pid for ids in results for pid in ids], latencies, time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def main_async(args: argparse.Namespace) -> dict:
    base = Path(tempfile.mkdtemp(prefix="nodegraph-bench-")) / "home"
    port = free_port()
    url, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws"
    process = start_server(args.workload, base, port)
    report: dict = {"workload": args.workload, "clients": args.clients, "prompts_per_client": args.prompts}
    try:
        await wait_up(url, process)
        proc = psutil.Process(process.pid)
        template = None
        if args.workload == "tiny":
            sys.path.insert(0, str(ROOT))
            from nodegraph import NodeRegistry
            from nodegraph.workflow import load_document
            import nodes
            registry = NodeRegistry()
            nodes.register_nodes(registry)
            template = load_document(ROOT / "workflows" / "txt2img.json").to_api(registry)
        report["rss_start_mb"] = proc.memory_info().rss / 2**20

        ids, latencies, seconds = await round_of(url, ws_url, args.clients, args.prompts, args.workload, template, 0)
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/history") as response:
                history = await response.json()
            async with session.get(url + "/system_stats") as response:
                stats = await response.json()
        expected = args.clients * args.prompts
        report.update(
            completed=sum(1 for pid in ids if pid in history and history[pid]["status"]["status_str"] == "success"),
            expected=expected, lost=len(set(ids) - set(history)), duplicated=len(ids) - len(set(ids)),
            history_entries=len(history), seconds=seconds, prompts_per_second=expected / seconds,
            post_prompt_ms={"p50": pct(latencies, 0.5) * 1000, "p99": pct(latencies, 0.99) * 1000,
                            "mean": statistics.mean(latencies) * 1000},
            worker_overhead_ms=stats["queue"]["worker_overhead_ms"],
            rss_after_first_round_mb=proc.memory_info().rss / 2**20)

        done = expected
        while done < args.memory_prompts:
            batch, _, _ = await round_of(url, ws_url, args.clients, args.prompts, args.workload, template, done)
            done += len(batch)
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/system_stats") as response:
                stats = await response.json()
            async with session.get(url + "/history", params={"max_items": "1"}) as response:
                await response.read()
        report.update(prompts_total=done, rss_after_total_mb=proc.memory_info().rss / 2**20,
                      cache=stats["cache"], worker_overhead_ms_all=stats["queue"]["worker_overhead_ms"])
    finally:
        process.terminate()
        process.wait(20)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=["toy", "tiny"], default="toy")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=10, help="per client")
    parser.add_argument("--memory-prompts", type=int, default=1000, help="total prompts before the last RSS reading")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"workload {report['workload']}: {report['clients']} clients x {report['prompts_per_client']} prompts")
    print(f"  completed {report['completed']}/{report['expected']}, lost {report['lost']}, "
          f"duplicated {report['duplicated']}, history entries {report['history_entries']}")
    p = report["post_prompt_ms"]
    print(f"  POST /prompt latency: p50 {p['p50']:.2f} ms, p99 {p['p99']:.2f} ms (mean {p['mean']:.2f} ms)")
    o = report["worker_overhead_ms"]
    print(f"  server overhead per prompt beyond execution: p50 {o['p50']:.2f} ms, p99 {o['p99']:.2f} ms")
    print(f"  {report['prompts_per_second']:.0f} prompts/s end to end ({report['seconds']:.2f} s)")
    print(f"  RSS: start {report['rss_start_mb']:.0f} MB, after {report['expected']} prompts "
          f"{report['rss_after_first_round_mb']:.0f} MB, after {report['prompts_total']} prompts "
          f"{report['rss_after_total_mb']:.0f} MB (cache {report['cache']['used_bytes'] / 2**20:.1f} MB "
          f"of {report['cache']['budget_bytes'] / 2**20:.0f} MB, {report['cache']['entries']} entries)")


if __name__ == "__main__":
    main()
