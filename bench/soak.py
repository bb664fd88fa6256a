"""Soak: mixed predict / compare / upload / delete against one server, RSS sampled.

    .venv/bin/python bench/soak.py [--duration 600] [--clients 8] [--write]

Starts foldserve on 127.0.0.1 (its own copy of the demo repository), then for
``--duration`` seconds runs ``--clients`` threads sending a mix of requests:
TF Serving and V2 predictions (most of the traffic), :compare, a bad request now
and then, and one thread that uploads a model, predicts with it and deletes it
in a loop. Every 5 s it samples the resident memory of the server process and of
its children (the fold worker). Prints status counts, request rates, and the RSS
samples; with ``--write``, writes docs/soak.md. Only ever targets 127.0.0.1; stops
by itself.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from common import DEMO_SOURCE as DEMO
from common import ROOT, make_repository, serving


def rss_mb(pid: int) -> tuple[float, float]:
    """Resident memory (MB) of ``pid`` itself, and of all its descendants."""
    own, children_total = 0, 0
    pending = [(pid, True)]
    while pending:
        current, is_root = pending.pop()
        try:
            with open(f"/proc/{current}/statm") as handle:
                size = int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            children = subprocess.run(
                ["pgrep", "-P", str(current)], capture_output=True, text=True
            ).stdout.split()
        except (OSError, ValueError):
            continue
        if is_root:
            own += size
        else:
            children_total += size
        pending.extend((int(child), False) for child in children)
    return own / 1e6, children_total / 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=600)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--write", action="store_true", help="write docs/soak.md")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    try:
        with serving(make_repository(workdir)) as server:
            run(server.url, server.process.pid, args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(url: str, pid: int, args: argparse.Namespace, workdir: Path) -> None:
    statuses: collections.Counter[tuple[str, int]] = collections.Counter()
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + args.duration
    rows = np.random.default_rng(0).uniform(0, 16, (64, 64)).round(2)

    def record(kind: str, reply: httpx.Response) -> None:
        with lock:
            statuses[(kind, reply.status_code)] += 1
            if reply.status_code >= 500:
                errors.append(f"{kind}: {reply.status_code} {reply.text[:200]}")

    def client(index: int) -> None:
        rng = np.random.default_rng(index)
        with httpx.Client(base_url=url, timeout=60) as http:
            while time.monotonic() < stop:
                batch = rows[: int(rng.integers(1, 33))].tolist()
                roll = rng.random()
                if roll < 0.45:
                    record(
                        "tf predict",
                        http.post("/v1/models/digits:predict", json={"instances": batch}),
                    )
                elif roll < 0.9:
                    body = {
                        "inputs": [
                            {
                                "name": "pixels",
                                "shape": [len(batch), 64],
                                "datatype": "FP32",
                                "data": batch,
                            }
                        ]
                    }
                    record("v2 infer", http.post("/v2/models/digits/infer", json=body))
                elif roll < 0.97:
                    body = {"instances": batch, "repeats": 3, "return_outputs": False}
                    record("compare", http.post("/v1/models/digits:compare", json=body))
                else:
                    record("bad request", http.post("/v1/models/digits:predict", json={"x": 1}))

    def uploader() -> None:
        with httpx.Client(base_url=url, timeout=300) as http:
            while time.monotonic() < stop:
                with open(DEMO, "rb") as handle:
                    reply = http.post(
                        "/v1/models?wait=true",
                        files={"file": ("soaked.keras", handle, "application/octet-stream")},
                        data={"name": "soaked"},
                    )
                record("upload", reply)
                if reply.status_code == 201:
                    record(
                        "new predict",
                        http.post(
                            "/v1/models/soaked:predict", json={"instances": rows[:4].tolist()}
                        ),
                    )
                    record("delete", http.delete("/v1/models/soaked"))

    samples: list[tuple[float, tuple[float, float]]] = []
    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    threads.append(threading.Thread(target=uploader))
    for thread in threads:
        thread.start()
    while time.monotonic() < stop:
        samples.append((time.monotonic() - started, rss_mb(pid)))
        time.sleep(5)
    for thread in threads:
        thread.join()
    samples.append((time.monotonic() - started, rss_mb(pid)))
    report(statuses, errors, samples, args)


def report(statuses, errors, samples, args) -> None:
    total = sum(statuses.values())
    fives = sum(count for (_, status), count in statuses.items() if status >= 500)
    lines = [f"{'kind':<14} {'status':>6} {'count':>8}"]
    for (kind, status), count in sorted(statuses.items()):
        lines.append(f"{kind:<14} {status:>6} {count:>8}")
    lines += [
        "",
        f"requests {total} in {args.duration:.0f} s ({total / args.duration:.0f}/s), 5xx: {fives}",
    ]
    for index, label in enumerate(("server", "fold worker")):
        rss = [mbs[index] for _, mbs in samples]
        warm = rss[len(rss) // 5 :] or rss  # past start-up and the first folds
        lines.append(
            f"RSS of the {label}, MB: start {rss[0]:.0f}, after the first fifth min "
            f"{min(warm):.0f} max {max(warm):.0f}, end {rss[-1]:.0f}"
        )
    lines.append(
        "RSS samples (s: server/worker MB): "
        + ", ".join(f"{t:.0f}:{a:.0f}/{b:.0f}" for t, (a, b) in samples[::4])
    )
    text = "\n".join(lines)
    print(text)
    for error in errors[:10]:
        print("5xx:", error)
    if args.write:
        (ROOT / "docs" / "soak.md").write_text(
            "# Soak\n\n"
            f"Made by `.venv/bin/python bench/soak.py --duration {args.duration:.0f} "
            f"--clients {args.clients} --write` on {platform.machine()}, Python "
            f"{platform.python_version()}, 2 cores, against 127.0.0.1: {args.clients} "
            "threads of predictions (TF Serving and V2, 1-32 rows), :compare and bad "
            "requests, plus one thread uploading, predicting with and deleting a model in a "
            "loop. RSS is the server process plus its fold worker, sampled every 5 s.\n\n"
            f"```\n{text}\n```\n"
        )


if __name__ == "__main__":
    main()
