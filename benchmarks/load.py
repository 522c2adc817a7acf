"""The demo under a crowd: concurrent gradio_client visitors send mixed requests to one server.

    PYTHONPATH=. python -m benchmarks.load                       # 30 visitors, 300 requests (issue 29)
    PYTHONPATH=. python -m benchmarks.load --requests 2000       # the soak: memory over a long sitting

The server is `python app.py` in its own process, as on a Space (the embedded model and detector; the queue as
the app sizes it); its memory is its resident set (/proc/PID/status VmRSS, so Linux). Before the crowd, every
kind of request is answered once alone (the warm-up, and the reference answers); then `--visitors` clients, each
its own session in its own thread, send `--requests` in all, the kinds in turn, each visitor waiting for its
answer before its next request (a person at a page does the same).

Kinds: (a) /describe with a box; (b) /detect_visual, one support with 3 marked points; (c) /detect_text, 17
keypoints; In the wild /detect_wild, 2 typed boxes x 17 keypoints; Benchmarks /benchmarks_gallery, 24 units.
Every answer must equal the same request's answer alone (its answer text or table); an error other than the
queue's own "busy" answer counts as one. Printed: latency p50 / p95 per kind and overall, busy answers, errors,
and the server's memory after warm-up, after the crowd, and every `--every` requests (growth per 1,000, fitted
after the first sample: the first answers fill each session's state and the caches once).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"
PERSON = EXAMPLES / "keypointworld_person.jpg"
SUPPORT = EXAMPLES / "keypointworld_support_person.jpg"
PERSON_BOX = "63,136,84,96"
PRESET = "KeypointWorld person (17)"
KINDS = ("describe", "visual", "text", "wild", "gallery")


def _requests():
    """kind -> (api_name, arguments builder, answer extractor): what is compared with the answer alone."""
    from gradio_client import handle_file

    support = json.loads((EXAMPLES / "keypointworld_supports.json").read_text())["keypointworld_support_person.jpg"]
    point = json.loads((EXAMPLES / "keypointworld.json").read_text())["keypointworld_person.jpg"]["keypoints"][5]
    points = {"headers": ["support", "keypoint", "x", "y", "name"],
              "data": [[1, k + 1, x, y, ""] for k, (x, y) in enumerate(support["keypoints"][:3])]}
    support_box = ",".join(f"{v:g}" for v in support["bbox"])
    from demo.presets import presets

    names = "\n".join(presets()[PRESET].names)  # 17

    def table(out):
        value = out[1]
        return json.dumps(value["data"] if isinstance(value, dict) else value)

    return {
        "describe": ("/describe", lambda: (handle_file(str(PERSON)), point[0], point[1], PERSON_BOX), lambda out: out[1]),
        "visual": ("/detect_visual", lambda: (handle_file(str(PERSON)), handle_file(str(SUPPORT)), None, None, None, None,
                                              points, support_box, PERSON_BOX, 0.0), table),
        "text": ("/detect_text", lambda: (handle_file(str(PERSON)), PRESET, names, False, PERSON_BOX, 0.0), table),
        "wild": ("/detect_wild", lambda: (handle_file(str(PERSON)), "", PRESET, names, 0.3, 0.25,
                                          f"{PERSON_BOX}\n10,10,120,150", 0.0, "embedded"), table),
        "gallery": ("/benchmarks_gallery", lambda: ("decision/keypointworld-visual", "(none)", "worst", None, None, 24),
                    lambda out: json.dumps([item.get("caption") for item in out[0]]) + out[1]),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def start_server(port: int, log: Path, queue_size: int | None = None) -> subprocess.Popen:
    """`python app.py` on 127.0.0.1:`port`, offline; returns once it answers (or raises with its log)."""
    import httpx

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    if queue_size:
        env["KPTLLM_QUEUE_SIZE"] = str(queue_size)
    server = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--device", "cpu"],
                              cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server stopped (exit {server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(1)
    server.kill()
    raise RuntimeError(f"the server did not answer in 300 s:\n{log.read_text()[-3000:]}")


def crowd(url: str, pid: int, visitors: int, total: int, every: int = 100) -> dict:
    """Warm-up (each kind alone: the reference answers), then `visitors` sessions sending `total` requests in
    all. Returns the measurements (see the module docstring)."""
    from gradio_client import Client

    requests = _requests()
    alone = Client(url, verbose=False, download_files=False)
    reference = {}
    for kind, (api, args, answer) in requests.items():
        for _ in range(2):  # the second call's answer is the reference (the first may load lazily)
            reference[kind] = answer(alone.predict(*args(), api_name=api))
    memory = {"after warm-up": rss_mb(pid)}
    samples: list[tuple[int, float]] = [(0, memory["after warm-up"])]
    lock = threading.Lock()
    done = {"n": 0}
    latencies: dict[str, list[float]] = {kind: [] for kind in KINDS}
    busy, errors, mismatches = [], [], []

    def visitor(v: int) -> None:
        client = Client(url, verbose=False, download_files=False)
        for n in range(v, total, visitors):
            kind = KINDS[n % len(KINDS)]
            api, args, answer = requests[kind]
            start = time.perf_counter()
            try:
                out = client.predict(*args(), api_name=api)
            except Exception as err:  # noqa: BLE001 - counted and reported, the crowd goes on
                (busy if "queue is full" in str(err).lower() else errors).append(f"{kind}: {err}")
                continue
            finally:
                seconds = time.perf_counter() - start
            with lock:
                latencies[kind].append(seconds)
                if answer(out) != reference[kind]:
                    mismatches.append(kind)
                done["n"] += 1
                if done["n"] % every == 0:
                    samples.append((done["n"], rss_mb(pid)))

    start = time.perf_counter()
    with ThreadPoolExecutor(visitors) as pool:
        list(pool.map(visitor, range(visitors)))
    wall = time.perf_counter() - start
    memory["after the crowd"] = rss_mb(pid)
    every_latency = [s for kind in KINDS for s in latencies[kind]]
    growth = 0.0
    steady = samples[1:]  # the first `every` answers fill per-session state and caches once: the slope is after them
    if len(steady) >= 3:  # MB per 1,000 requests, fitted by least squares
        xs, ys = [x for x, _ in steady], [y for _, y in steady]
        mx, my = statistics.mean(xs), statistics.mean(ys)
        growth = 1000 * sum((x - mx) * (y - my) for x, y in steady) / sum((x - mx) ** 2 for x in xs)
    return {"visitors": visitors, "requests": total, "answered": len(every_latency), "wall": wall,
            "latencies": latencies, "all": every_latency, "busy": busy, "errors": errors, "mismatches": mismatches,
            "memory": memory, "samples": samples, "growth_per_1000": growth}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def report(result: dict) -> str:
    lines = [f"{result['visitors']} visitors, {result['requests']} requests, {result['answered']} answered in "
             f"{result['wall']:.1f} s ({result['answered'] / result['wall']:.1f} per second), {os.cpu_count()} CPUs, "
             f"load average {os.getloadavg()[0]:.1f}",
             f"{'kind':10} {'n':>5} {'p50 s':>7} {'p95 s':>7} {'max s':>7}"]
    for kind in (*KINDS, "all"):
        values = result["all"] if kind == "all" else result["latencies"][kind]
        lines.append(f"{kind:10} {len(values):5} {_percentile(values, 50):7.2f} {_percentile(values, 95):7.2f} "
                     f"{max(values, default=float('nan')):7.2f}")
    memory = result["memory"]
    lines += [f"busy answers (queue full): {len(result['busy'])}; errors: {len(result['errors'])}; answers unlike the "
              f"same request alone: {len(result['mismatches'])}",
              f"server memory: {memory['after warm-up']:.0f} MB after warm-up, {memory['after the crowd']:.0f} MB after "
              f"the crowd ({memory['after the crowd'] - memory['after warm-up']:+.0f} MB); growth after the first "
              f"samples {result['growth_per_1000']:+.1f} MB per 1,000 requests (least squares)",
              "memory by requests answered: " + ", ".join(f"{n}: {mb:.0f}" for n, mb in result["samples"])]
    lines += [f"  error: {e}" for e in result["errors"][:5]]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--visitors", type=int, default=30)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--every", type=int, default=100, help="sample the server's memory every this many answers")
    parser.add_argument("--log", default="/tmp/kptllm-load-server.log")
    args = parser.parse_args(argv)
    port = _free_port()
    server = start_server(port, Path(args.log))
    try:
        result = crowd(f"http://127.0.0.1:{port}/", server.pid, args.visitors, args.requests, args.every)
    finally:
        server.terminate()
        server.wait(30)
    print(report(result))
    return result


if __name__ == "__main__":
    main()
