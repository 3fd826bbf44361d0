"""Encode throughput: hylo's tokenizer against Hugging Face `tokenizers`, single-threaded, same text.

Usage: python bench/tokenizer_vs_hf.py [--bin build/bin/tokenizer_throughput] [--text FILE] [--repeat N] TOKENIZER...
TOKENIZER is a directory with tokenizer.json (default: every one in $HYLO_DATA/tokenizers). Both sides encode
the whole text in one call and then line by line, without special tokens; each figure is the best of N timed
runs after one warm-up (warm BPE caches on both sides). Prints a markdown table with MB/s and the ratio.
"""
import argparse
import json
import os
import pathlib
import platform
import subprocess
import time

os.environ["RAYON_NUM_THREADS"] = "1"  # tokenizers' thread pool: one thread, like hylo's single-threaded encode
os.environ["TOKENIZERS_PARALLELISM"] = "false"

from tokenizers import Tokenizer  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path(os.environ.get("HYLO_DATA", pathlib.Path.home() / ".cache/hylo/data"))


def best_of(fn, repeat):
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "build/bin/tokenizer_throughput"))
    ap.add_argument("--text", default=str(DATA / "text/moby-dick.txt"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("tokenizers", nargs="*")
    a = ap.parse_args()
    paths = [pathlib.Path(p) for p in a.tokenizers] or sorted(p for p in (DATA / "tokenizers").iterdir() if p.is_dir())
    text = pathlib.Path(a.text).read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    mb = len(text.encode()) / 1e6
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"CPU: {cpu_name()}; {os.cpu_count()} logical CPUs; commit {commit}; text {a.text} ({mb:.2f} MB, {len(lines)} lines)")
    print("| tokenizer | mode | hylo MB/s | tokenizers MB/s | ratio hylo/tokenizers | same token count |")
    print("|---|---|---|---|---|---|")
    for p in paths:
        tj = p / "tokenizer.json" if p.is_dir() else p
        ours = json.loads(subprocess.run([a.bin, "--tokenizer", str(p), "--file", a.text, "--repeat", str(a.repeat)],
                                         capture_output=True, text=True, check=True).stdout)
        ref = Tokenizer.from_file(str(tj))
        n_whole = len(ref.encode(text, add_special_tokens=False).ids)
        t_whole = best_of(lambda: ref.encode(text, add_special_tokens=False), a.repeat)
        n_lines = sum(len(e.ids) for e in ref.encode_batch(lines, add_special_tokens=False))
        t_lines = best_of(lambda: ref.encode_batch(lines, add_special_tokens=False), a.repeat)
        for mode, ours_mbs, theirs_mbs, same in (("whole", ours["whole_mb_s"], mb / t_whole, n_whole == ours["tokens_whole"]),
                                                 ("by line", ours["lines_mb_s"], mb / t_lines, n_lines == ours["tokens_lines"])):
            print(f"| {p.name} | {mode} | {ours_mbs:.2f} | {theirs_mbs:.2f} | {ours_mbs / theirs_mbs:.2f} | {same} |")


if __name__ == "__main__":
    main()
