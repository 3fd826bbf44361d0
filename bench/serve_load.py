"""Load test for `hylo serve` (stdlib only, so it runs on the GPU machine's bare python3 too).

  python bench/serve_load.py --url http://127.0.0.1:8080 [--clients 32] [--rounds 1] [--max-tokens 64]
                             [--chat] [--key K] [--ignore-eos] [--check-alone] [--json OUT]

Each of --clients threads sends --rounds greedy streaming requests, each with its own prompt (lines of a fixed
text, so runs are comparable); per request it measures time to the first text and to [DONE]. With --check-alone
every prompt is first answered alone (one request at a time, not streamed) and every concurrent answer must
equal it: nothing lost, truncated or mixed up between streams. Prints one JSON line: p50/p99 latency, p50 time
to first token, generated tokens per second and requests per second over the concurrent phase.
"""
import argparse
import http.client
import json
import statistics
import sys
import threading
import time
from urllib.parse import urlparse

TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness, "
        "it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, it was the season of "
        "Darkness, it was the spring of hope, it was the winter of despair, we had everything before us, we had "
        "nothing before us, we were all going direct to Heaven, we were all going direct the other way").split(", ")


def prompt_for(i):
    return f"Continue the story ({i}): " + ", ".join(TEXT[i % len(TEXT):] + TEXT[:i % len(TEXT)])


def request(url, key, body, stream):
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
    t0 = time.perf_counter()
    conn.request("POST", path, json.dumps(dict(body, stream=stream)), headers)
    r = conn.getresponse()
    if r.status != 200:
        raise RuntimeError(f"{r.status}: {r.read().decode(errors='replace')}")
    if not stream:
        answer = json.loads(r.read())
        choice = answer["choices"][0]
        return (choice["message"]["content"] if "message" in choice else choice["text"]), answer["usage"], None, \
            time.perf_counter() - t0
    text, usage, first = "", None, None
    buffer = b""
    while True:
        chunk = r.read1(65536)
        if not chunk:
            break
        buffer += chunk
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            if not event.startswith(b"data: "):
                continue
            data = event[6:]
            if data == b"[DONE]":
                conn.close()
                return text, usage, first, time.perf_counter() - t0
            obj = json.loads(data)
            if "error" in obj:
                raise RuntimeError(obj["error"]["message"])
            if obj.get("usage"):
                usage = obj["usage"]
            for c in obj["choices"]:
                piece = (c.get("delta") or {}).get("content") or c.get("text") or ""
                if piece and first is None:
                    first = time.perf_counter() - t0
                text += piece
    raise RuntimeError("stream ended without [DONE]")


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--key", default="")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--chat", action="store_true")
    ap.add_argument("--ignore-eos", action="store_true")
    ap.add_argument("--check-alone", action="store_true")
    ap.add_argument("--json", default="")
    a = ap.parse_args()

    n = a.clients * a.rounds

    def body(i):
        b = {"max_tokens": a.max_tokens, "temperature": 0, "stream_options": {"include_usage": True}}
        if a.ignore_eos:
            b["ignore_eos"] = True
        if a.chat:
            b["messages"] = [{"role": "user", "content": prompt_for(i)}]
        else:
            b["prompt"] = prompt_for(i)
        return b

    alone = [request(a.url, a.key, body(i), stream=False)[0] for i in range(n)] if a.check_alone else None
    results = [None] * n
    errors = []

    def client(c):
        for r in range(a.rounds):
            i = c * a.rounds + r
            try:
                results[i] = request(a.url, a.key, body(i), stream=True)
            except Exception as e:  # noqa: BLE001 -- reported below
                errors.append(f"request {i}: {e}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        sys.exit("errors:\n" + "\n".join(errors[:10]))
    mismatches = [i for i in range(n) if alone is not None and results[i][0] != alone[i]]
    tokens = sum(r[1]["completion_tokens"] for r in results)
    report = {"clients": a.clients, "requests": n, "max_tokens": a.max_tokens, "generated_tokens": tokens,
              "wall_s": round(wall, 3), "p50_latency_s": round(statistics.median(r[3] for r in results), 4),
              "p99_latency_s": round(percentile([r[3] for r in results], 0.99), 4),
              "p50_ttft_s": round(statistics.median(r[2] for r in results if r[2] is not None), 4),
              "tokens_per_s": round(tokens / wall, 1), "requests_per_s": round(n / wall, 2),
              "checked_alone": a.check_alone, "mismatches": len(mismatches)}
    print(json.dumps(report))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)
    if mismatches:
        i = mismatches[0]
        sys.exit(f"{len(mismatches)} answers differ from their request alone; first: {i}: {results[i][0]!r} vs "
                 f"{alone[i]!r}")


if __name__ == "__main__":
    main()
