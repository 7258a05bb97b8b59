"""A bounded load test of `janus serve` on loopback, with the official `openai` client.

1. Mixed load: N concurrent requests (chat with and without an image, streamed and not;
   image generation with n = 1..2, some streamed through the `"stream": true` extension),
   all started at once. Every one must succeed and be well formed.
2. Batching: K single-image requests waiting together (the server runs them as one CFG
   batch) against the same K sent one at a time; images/s of both and their ratio, over
   several rounds in alternating order.

It starts its own server on the tiny fixture model (or uses --url), never waits longer than
its deadline, stops the server with SIGTERM and exits non-zero on any failure.

    python tests/e2e/load_test.py [--quick] [--k K] [--rounds R] [--skip-mixed] [--json results.json]
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).resolve().parent))
from janus_proc import IMAGES, JanusServer, data_url, png_info, post_stream, sse_events  # noqa: E402

IMAGE = data_url(IMAGES / "wide.png")
PHOTO = data_url(IMAGES / "photo.jpg")


def check_png(b64: str) -> None:
    w, h, _ = png_info(base64.b64decode(b64))
    if (w, h) != (384, 384):
        raise AssertionError(f"image is {w}x{h}, expected 384x384")


def image_chat(question: str, image: str) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image}},
                {"type": "text", "text": question},
            ],
        }
    ]


class Load:
    def __init__(self, url: str, model: str):
        self.url = url
        self.model = model
        self.client = openai.OpenAI(base_url=f"{url}/v1", api_key="load-test", max_retries=0, timeout=600)

    # Each job returns a short description of what it did; any exception is a failure.

    def chat(self, i: int, image: str | None, stream: bool) -> str:
        messages = (
            image_chat(f"Question {i}: what is this?", image)
            if image
            else [{"role": "user", "content": f"Question {i}: tell me something."}]
        )
        kwargs = dict(model=self.model, messages=messages, max_tokens=16, temperature=0)
        if stream:
            chunks = list(self.client.chat.completions.create(**kwargs, stream=True))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
            if len(finish) != 1:
                raise AssertionError(f"stream finished {finish}")
        else:
            resp = self.client.chat.completions.create(**kwargs)
            text = resp.choices[0].message.content
            if resp.choices[0].finish_reason not in ("stop", "length"):
                raise AssertionError(f"finish_reason {resp.choices[0].finish_reason}")
        if not isinstance(text, str):
            raise AssertionError(f"answer {text!r}")
        return f"chat{'+image' if image else ''}{' stream' if stream else ''}"

    def images(self, i: int, n: int, stream: bool) -> str:
        body = dict(model=self.model, prompt=f"Load test picture {i}", n=n, size="384x384", seed=1000 + i)
        if stream:
            conn, resp = post_stream(self.url, "/v1/images/generations", {**body, "stream": True})
            try:
                if resp.status != 200:
                    raise AssertionError(f"status {resp.status}: {resp.read()[:300]!r}")
                results = [e for e in map(json.loads, sse_events(resp)) if e.get("type") == "result"]
            finally:
                conn.close()
            if len(results) != 1:
                raise AssertionError(f"{len(results)} result events")
            data = [d["b64_json"] for d in results[0]["data"]]
        else:
            seed = body.pop("seed")
            resp = self.client.images.generate(**body, response_format="b64_json", extra_body={"seed": seed})
            data = [d.b64_json for d in resp.data]
        if len(data) != n:
            raise AssertionError(f"{len(data)} images, expected {n}")
        for b64 in data:
            check_png(b64)
        return f"images n={n}{' stream' if stream else ''}"


def mixed_jobs(load: Load, count: int):
    """The mixed request list: a fixed rotation of eight kinds, so both sizes see all."""
    kinds = [
        lambda i: load.chat(i, None, False),
        lambda i: load.chat(i, IMAGE, True),
        lambda i: load.images(i, 1, False),
        lambda i: load.chat(i, PHOTO, False),
        lambda i: load.chat(i, None, True),
        lambda i: load.images(i, 2, True),
        lambda i: load.chat(i, IMAGE, False),
        lambda i: load.chat(i, PHOTO, True),
    ]
    return [(i, kinds[i % len(kinds)]) for i in range(count)]


def timed(fn, i):
    t0 = time.perf_counter()
    try:
        what = fn(i)
        return {"i": i, "what": what, "ok": True, "s": time.perf_counter() - t0}
    except Exception as e:  # noqa: BLE001 - every failure is reported, then fails the run
        return {"i": i, "what": repr(e)[:400], "ok": False, "s": time.perf_counter() - t0}


def run_concurrently(jobs, deadline_s: float) -> tuple[list[dict], float]:
    """Runs every job at once; raises TimeoutError if any is still running at the deadline
    (the caller then kills the server, which ends the stragglers)."""
    t0 = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=len(jobs))
    futures = [pool.submit(timed, fn, i) for i, fn in jobs]
    _, not_done = wait(futures, timeout=deadline_s)
    pool.shutdown(wait=not not_done, cancel_futures=True)
    if not_done:
        raise TimeoutError(f"{len(not_done)} requests still running after {deadline_s:.0f} s")
    return [f.result() for f in futures], time.perf_counter() - t0


def metrics(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        out = {}
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out


def wait_until(cond, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.02)


def delta(name: str, a: dict, b: dict) -> float:
    return b.get(name, 0.0) - a.get(name, 0.0)


def server_rates(a: dict, b: dict) -> dict:
    """What the server's metrics say about the work between two snapshots: batches, the
    sampling loop's own images/s (janus_image_seconds_total times sampling only) and the VQ
    decoder's seconds per image."""
    sampling_s = delta("janus_image_seconds_total", a, b)
    vq_images = delta("janus_vq_decoded_images_total", a, b)
    return {
        "batches": delta("janus_image_batches_total", a, b),
        "sampling_images_per_s": delta("janus_images_total", a, b) / sampling_s if sampling_s > 0 else float("nan"),
        "vq_s_per_image": delta("janus_vq_decode_seconds_total", a, b) / vq_images if vq_images else float("nan"),
    }


def one_at_a_time(load: Load, seeds: list[int]) -> dict:
    """The requests sent one after another, each after the previous answer."""
    before = metrics(load.url)
    t0 = time.perf_counter()
    for seed in seeds:
        r = timed(lambda i: load.images(i, 1, False), seed)
        if not r["ok"]:
            raise AssertionError(f"sequential image request failed: {r['what']}")
    wall = time.perf_counter() - t0
    return {"s": wall, "images_per_s": len(seeds) / wall, **server_rates(before, metrics(load.url))}


def together(load: Load, seeds: list[int], deadline_s: float, blocker_n: int) -> dict:
    """The same requests waiting together. On an idle server the first of K simultaneous
    requests would start alone before the others arrive, so a blocker job (a streamed
    request for `blocker_n` images) holds the model while the K requests queue up; then its
    stream is closed, which cancels it, and the clock starts: the server can take all K as
    one CFG batch."""
    k = len(seeds)
    cancelled = 'janus_jobs_total{kind="image",outcome="cancelled"}'
    blocker_conn, blocker = post_stream(
        load.url,
        "/v1/images/generations",
        {"model": load.model, "prompt": "blocker", "n": blocker_n, "seed": 1, "stream": True},
    )
    pool = ThreadPoolExecutor(max_workers=k)
    try:
        if blocker.status != 200:
            raise AssertionError(f"blocker request: status {blocker.status}")
        next(sse_events(blocker))  # the blocker is on the model
        futures = [pool.submit(timed, lambda i: load.images(i, 1, False), seed) for seed in seeds]
        wait_until(lambda: metrics(load.url).get("janus_queue_depth", 0) >= k, f"{k} queued requests")
        base = metrics(load.url).get(cancelled, 0)
        blocker_conn.close()
        t0 = time.perf_counter()
        # The blocker's batch is recorded when it stops; the K batch only when it ends.
        wait_until(lambda: metrics(load.url).get(cancelled, 0) > base, "the blocker to stop")
        mid = metrics(load.url)
        _, not_done = wait(futures, timeout=deadline_s)
        if not_done:
            raise TimeoutError(f"{len(not_done)} image requests still running after {deadline_s:.0f} s")
        wall = time.perf_counter() - t0
    finally:
        blocker_conn.close()
        pool.shutdown(wait=False, cancel_futures=True)
    failed = [f.result() for f in futures if not f.result()["ok"]]
    if failed:
        raise AssertionError(f"concurrent image requests failed: {failed}")
    return {"s": wall, "images_per_s": k / wall, **server_rates(mid, metrics(load.url))}


def batching(load: Load, k: int, rounds: int, deadline_s: float, blocker_n: int) -> dict:
    """K single-image requests (distinct seeds, the same prompt) one at a time, then the same
    K waiting together; `rounds` times, in the order AB BA AB ... so that a drift in the
    machine's load (the client shares its cores) does not favour either side."""
    per_round = []
    for r in range(rounds):
        seeds = [500 + 100 * r + i for i in range(k)]
        if r % 2 == 0:
            seq = one_at_a_time(load, seeds)
            tog = together(load, seeds, deadline_s, blocker_n)
        else:
            tog = together(load, seeds, deadline_s, blocker_n)
            seq = one_at_a_time(load, seeds)
        per_round.append({"one_at_a_time": seq, "together": tog, "speedup": seq["s"] / tog["s"]})
        print(
            f"  round {r + 1}: one at a time {seq['s']:.1f} s ({seq['images_per_s']:.3f} images/s, "
            f"{seq['batches']:.0f} batches), together {tog['s']:.1f} s ({tog['images_per_s']:.3f} images/s, "
            f"{tog['batches']:.0f} batches): {per_round[-1]['speedup']:.2f}x; sampling loop "
            f"{seq['sampling_images_per_s']:.2f} vs {tog['sampling_images_per_s']:.2f} images/s; "
            f"VQ {seq['vq_s_per_image']:.2f} vs {tog['vq_s_per_image']:.2f} s/image",
            flush=True,
        )
    return {
        "k": k,
        "rounds": per_round,
        "median_speedup": statistics.median(r["speedup"] for r in per_round),
        "sequential_s": sum(r["one_at_a_time"]["s"] for r in per_round),
        "concurrent_s": sum(r["together"]["s"] for r in per_round),
    }


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI size: 12 mixed requests, K=2")
    ap.add_argument("--requests", type=int, help="mixed requests (default 32, 12 with --quick)")
    ap.add_argument("--k", type=int, help="images in the batching comparison (default 4, 2 with --quick)")
    ap.add_argument("--rounds", type=int, help="rounds of the batching comparison (default 3, 1 with --quick)")
    ap.add_argument("--skip-mixed", action="store_true", help="only the batching comparison")
    ap.add_argument(
        "--blocker-n",
        type=int,
        default=16,
        help="images of the request that holds the model while the K requests queue (default 16; "
        "fewer for a large model, where one image takes minutes)",
    )
    ap.add_argument("--url", help="use a running server instead of starting one")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--deadline", type=float, default=400.0, help="seconds each phase may take")
    args = ap.parse_args()
    n_requests = args.requests or (12 if args.quick else 32)
    k = args.k or (2 if args.quick else 4)
    args.rounds = args.rounds or (1 if args.quick else 3)

    if args.url:
        try:
            return measure(args.url.rstrip("/"), args, n_requests, k)
        except TimeoutError as e:
            print(f"load test: {e}", file=sys.stderr)
            os._exit(2)  # the stragglers' threads would keep the interpreter alive
    # A queue as deep as the load, so nothing is refused with 429.
    server = JanusServer("--max-queue", str(max(64, 2 * n_requests))).start()
    try:
        rc = measure(server.url, args, n_requests, k)
    except TimeoutError as e:
        server.kill()  # ends the stragglers' connections
        print(f"load test: {e}\n{server.log_tail()}", file=sys.stderr)
        return 2
    except BaseException:
        server.kill()
        raise
    code = server.stop()
    if code != 0:
        print(f"janus serve exited {code} after SIGTERM\n{server.log_tail()}", file=sys.stderr)
        return 1
    if rc == 0:
        print("load test ok")
    return rc


def measure(url: str, args: argparse.Namespace, n_requests: int, k: int) -> int:
    """Both phases against the server at url; 0 when every request succeeded."""
    with urllib.request.urlopen(f"{url}/v1/models", timeout=10) as r:
        model = json.load(r)["data"][0]["id"]
    load = Load(url, model)
    # The client shares the machine with the server: other work on it moves the numbers.
    load_before = os.getloadavg()
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}", flush=True)

    failed: list[dict] = []
    mixed = None
    if not args.skip_mixed:
        print(f"mixed load: {n_requests} concurrent requests", flush=True)
        before = metrics(url)
        results, wall = run_concurrently(mixed_jobs(load, n_requests), args.deadline)
        failed = [r for r in results if not r["ok"]]
        lat = [r["s"] for r in results]
        by_kind: dict[str, list[float]] = {}
        for r in results:
            if r["ok"]:
                by_kind.setdefault(r["what"], []).append(r["s"])
        for kind, secs in sorted(by_kind.items()):
            print(f"  {kind:<22} x{len(secs):<3} mean {statistics.mean(secs):6.2f} s  max {max(secs):6.2f} s")
        print(
            f"  all: wall {wall:.1f} s, latency p50 {percentile(lat, 50):.2f} s, "
            f"p95 {percentile(lat, 95):.2f} s, max {max(lat):.2f} s; {len(failed)} failed"
        )
        for r in failed:
            print(f"  FAILED request {r['i']}: {r['what']}", file=sys.stderr)
        mixed = {
            "requests": n_requests,
            "failed": len(failed),
            "wall_s": wall,
            "p50_s": percentile(lat, 50),
            "p95_s": percentile(lat, 95),
            "max_s": max(lat),
            "by_kind": {
                kind: {"count": len(s), "mean_s": statistics.mean(s), "max_s": max(s)} for kind, s in by_kind.items()
            },
            "server": server_rates(before, metrics(url)),
        }

    print(
        f"batching: {k} single-image requests, one at a time vs waiting together, {args.rounds} round(s)",
        flush=True,
    )
    b = batching(load, k, args.rounds, args.deadline, args.blocker_n)
    print(
        f"  in all: one at a time {b['sequential_s']:.1f} s, together {b['concurrent_s']:.1f} s; "
        f"ratio {b['sequential_s'] / b['concurrent_s']:.2f}x (median of rounds {b['median_speedup']:.2f}x)"
    )
    final = metrics(url)

    if args.json:
        summary = {
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "load_average_before_after": [load_before, os.getloadavg()],
            "binary": str(os.environ.get("JANUS_BIN", "target/debug/janus")),
            "command": " ".join(["python", "tests/e2e/load_test.py", *sys.argv[1:]]),
            "model": model,
            "mixed": mixed,
            "batching": b,
            "server_metrics": {
                name: v
                for name, v in final.items()
                if name.startswith(("janus_image", "janus_text", "janus_jobs", "janus_vq"))
            },
        }
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
