"""GET /studies latency under concurrent clients, on a study with many trials.

A real service (`prefsweep serve`, uvicorn on 127.0.0.1) over a real Optuna SQLite storage:
the study's trials are created directly in it (no sweep runs), with its study.json and its
row in the service's studies table, state `running` so every list recomputes its progress
and best value from Optuna (an ended study's summary is cached). Ray is not needed: the row
has no Ray job, as a study started with `prefsweep run` would. Each client is a keep-alive
connection sending its next request when the last one answered (no think time), for a fixed
number of requests; a warm-up round runs first.

    .venv/bin/python benchmarks/bench_api.py [--clients 20] [--trials 1000] [--requests 500]

Prints p50/p90/p99/max latency, throughput and the machine's load (`uptime`) before and after.
Not a test: the figures depend on the machine and what else runs on it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TOKEN = "bench-token"
NAME = "bench-1000"
TARGET_P99_MS = 50.0


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def plant_study(base: Path, trials: int) -> None:
    """The study as a sweep would leave it: Optuna trials, study.json, the service's row."""
    import optuna

    from sweep.config.redact import write_private
    from sweep.config.schema import PrefsweepConfig
    from sweep.service.index import Database, Study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = base / "runs"
    storage.mkdir(parents=True)
    url = f"sqlite:///{storage}/optuna.db"
    cfg = PrefsweepConfig.model_validate({"name": NAME, "storage": {"path": str(storage)},
                                          "sweep": {"num_trials": trials}})
    study = optuna.create_study(study_name=NAME, storage=url, direction="maximize")
    dists = {"objective.beta": optuna.distributions.FloatDistribution(0.01, 0.5),
             "train.learning_rate": optuna.distributions.FloatDistribution(1e-6, 1e-3, log=True)}
    study.add_trials([optuna.trial.create_trial(
        params={"objective.beta": 0.01 + 0.49 * i / trials, "train.learning_rate": 1e-6 * 1000 ** (i / trials)},
        distributions=dists, value=(i * 7919 % trials) / trials,
        intermediate_values={step: (i % 97) / 97 for step in range(1, 5)}) for i in range(trials)])
    record = {"name": NAME, "config": cfg.model_dump(mode="json"), "tracking_uri": f"sqlite:///{storage}/mlflow.db",
              "experiment_id": "0", "parent_run_id": "none", "optuna_url": url, "state": "running"}
    write_private(storage / NAME / "study.json", json.dumps(record))
    db = Database(f"sqlite:///{base / 'svc' / 'prefsweep-api.db'}")
    db.add(Study(id=NAME, name=NAME, config=cfg.model_dump(mode="json"), owner="bench", state="running"))
    db.engine.dispose()


def start_service(base: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    from sweep.study.ray_cluster import free_port

    port = free_port()
    env = {**os.environ, "PREFSWEEP_API_TOKEN": TOKEN, "PREFSWEEP_DATA_DIR": str(base / "svc"),
           "PREFSWEEP_STORAGE_PATH": str(base / "runs"), "PREFSWEEP_WORKDIR": str(base),
           "PREFSWEEP_RAY_ADDRESS": f"http://127.0.0.1:{free_port()}",  # nothing there: Ray is not asked
           "RAY_USAGE_STATS_ENABLED": "0"}
    log = open(base / "serve.log", "wb")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("prefsweep")), "serve", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"the service did not start:\n{(base / 'serve.log').read_text()[-3000:]}")


def run_clients(url: str, clients: int, requests: int) -> tuple[list[float], float]:
    """`clients` keep-alive connections, each sending its next request when the last one
    answered. The load generator is one asyncio loop speaking plain HTTP/1.1 (as wrk would):
    threads with an HTTP library each would measure their own GIL waits as latency."""
    import asyncio

    host, port = url.removeprefix("http://").split(":")
    request = (f"GET /studies HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").encode()

    async def get(reader, writer) -> bytes:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        body = await reader.readexactly(length)
        if status != b"200" or b'"done":0' in body:
            raise SystemExit(f"bad answer {status}: {body[:300]}")
        return body

    async def client(start: asyncio.Event, latencies: list[float]) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        await get(reader, writer)  # connected and answered once before the clock starts
        await start.wait()
        for _ in range(requests):
            began = time.perf_counter()
            await get(reader, writer)
            latencies.append(time.perf_counter() - began)
        writer.close()

    async def run() -> tuple[list[float], float]:
        latencies: list[float] = []
        start = asyncio.Event()
        tasks = [asyncio.create_task(client(start, latencies)) for _ in range(clients)]
        await asyncio.sleep(0.5)
        began = time.perf_counter()
        start.set()
        await asyncio.gather(*tasks)
        return latencies, time.perf_counter() - began

    return asyncio.run(run())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=500, help="requests per client")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        base = Path(tmp)
        plant_study(base, args.trials)
        proc, url = start_service(base)
        try:
            run_clients(url, args.clients, 20)  # warm-up: Optuna's cache, imports, connections
            before = uptime()
            latencies, seconds = run_clients(url, args.clients, args.requests)
            after = uptime()
        finally:
            proc.terminate()
            proc.wait(30)
    ms = [x * 1000 for x in latencies]
    p99 = percentile(ms, 99)
    print(f"## GET /studies, {args.clients} concurrent clients, study with {args.trials} Optuna trials (SQLite)")
    print(f"requests {len(ms)}, {len(ms) / seconds:.0f}/s over {seconds:.1f} s")
    print(f"latency ms: p50 {percentile(ms, 50):.1f}  p90 {percentile(ms, 90):.1f}  p99 {p99:.1f}  "
          f"max {max(ms):.1f}  mean {statistics.mean(ms):.1f}")
    print(f"load before: {before}\nload after:  {after}")
    print(f"GET /studies p99 {p99:.1f} ms: {'under' if p99 < TARGET_P99_MS else 'OVER'} the {TARGET_P99_MS:.0f} ms target")


if __name__ == "__main__":
    main()
