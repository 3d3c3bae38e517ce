"""Long fuzz run of the ``.hvq`` decoder: >= 10,000 mutated files in rlimited worker processes.

    .venv/bin/python benchmarks/fuzz_decoder.py                      # 10,000 inputs, 2 workers
    .venv/bin/python benchmarks/fuzz_decoder.py --n 30000 --mem-gib 6 --time-limit 30 --progress

The corpus is ``tests/fuzzing.py`` (every mutation kind in turn, deterministic) plus ``crafted_huge``:
*valid* files of 2048x2048, 4096x4096 (= 2**24 pixels) and 8192x8192 (= 2**26, the container's
``MAX_PIXELS``) that store almost nothing (:func:`fuzzing.craft_flat_file`), to measure what a tiny file
can make the decoder allocate.

Each worker is a separate process (``spawn``) that builds the smoke model (seed 0, one torch thread),
decodes the seed files once, then sets ``RLIMIT_AS`` (its whole address space, the ~3.3 GB that torch
maps at import included) and decodes the inputs it is sent, one at a time, each under a ``SIGALRM``
bound (``--time-limit``). The parent kills a worker that has not answered within ``--hard-limit``
seconds (a decode stuck in C code) and starts a new one; a worker that dies is replaced too. Per
input the worker reports the status, the time and its peak RSS (``VmHWM``, reset before each input
through ``/proc/self/clear_refs``, so it is the peak of that decode, the worker's baseline included).

Prints a markdown table of outcomes per mutation kind, the largest peak RSS and time, and the first
failures with how to rebuild them (``fuzzing.make_case(seeds, kind, index)``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import re
import resource
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import fuzzing as fz  # noqa: E402

#: Columns of the table, in order ("crash": the worker process died; a killed one counts as a timeout).
COLUMNS = ("decoded", "BitstreamError", "error", "timeout", "memory", "crash")
CRAFTED_SIZES = ((2048, 2048), (4096, 4096), (8192, 8192))


def _status_kb(field_name: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _normalise(message: str) -> str:
    """A message's text before its first colon, with numbers (not those inside words) as N."""
    text = re.sub(r"\d+x\d+", "NxN", message.split(":")[0])
    return re.sub(r"(?<![A-Za-z\d])\d+", "N", text)[:70]


def worker_main(conn: Connection, mem_bytes: int, time_limit_s: float) -> None:
    """Build the model, set the address-space limit, then decode what the parent sends until ``None``."""
    import torch

    torch.set_num_threads(1)
    model = fz.build_smoke_model()
    for data in fz.make_seed_files(model):  # warm up every code path once, before the limit
        model.decompress(data)
    baseline = _status_kb("VmSize")
    resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
    conn.send(("ready", model.model_tag().hex(), baseline, _status_kb("VmRSS")))
    while True:
        msg = conn.recv()
        if msg is None:
            return
        case_id, data = msg
        _reset_peak_rss()
        out = fz.run_one(model, data, time_limit_s)
        conn.send((case_id, out.status, out.detail[:300], out.seconds, out.digest, _status_kb("VmHWM")))


@dataclass
class Worker:
    """A worker process, its pipe, and the case it is decoding (``None`` when idle)."""

    proc: mp.process.BaseProcess
    conn: Connection
    case: tuple[int, str, int] | None = None
    started: float = 0.0


@dataclass
class Results:
    """Counts and extremes per kind, and the failures."""

    counts: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    same_as_seed: Counter = field(default_factory=Counter)
    max_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    max_rss_kb: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failures: list[str] = field(default_factory=list)
    messages: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))


def _start(ctx, mem_bytes: int, time_limit_s: float, tag: str | None) -> Worker:
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=worker_main, args=(child, mem_bytes, time_limit_s), daemon=True)
    proc.start()
    child.close()
    msg = parent.recv()
    if msg[0] != "ready" or (tag is not None and msg[1] != tag):
        raise SystemExit(f"worker did not start with the same model: {msg}")
    print(f"worker {proc.pid} ready: VmSize {msg[2] >> 10} MiB before RLIMIT_AS, VmRSS {msg[3] >> 10} MiB",
          file=sys.stderr)  # fmt: skip
    return Worker(proc, parent)


def run(args: argparse.Namespace) -> Results:
    import torch

    torch.set_num_threads(1)
    model = fz.build_smoke_model()
    seeds = fz.make_seed_files(model)
    seed_digests = {fz.run_one(model, d, 30.0).digest for d in seeds}
    cases: list[tuple[int, str, int, bytes]] = []
    if args.crafted:
        for i, (h, w) in enumerate(CRAFTED_SIZES):
            t0 = time.perf_counter()
            data = fz.craft_flat_file(model, h, w)
            print(f"crafted {h}x{w}: {len(data)} bytes ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
            cases.append((len(cases), "crafted_huge", i, data))
    for c in fz.corpus(seeds, args.n, seed=args.seed):
        cases.append((len(cases), c.kind, c.index, c.data))
    del model

    ctx = mp.get_context("spawn")
    mem_bytes = int(args.mem_gib * (1 << 30))
    tag = fz.build_smoke_model().model_tag().hex()
    workers = [_start(ctx, mem_bytes, args.time_limit, tag) for _ in range(args.workers)]
    res = Results()
    pending = iter(cases)
    left = len(cases)
    t_start = time.perf_counter()

    def record(kind: str, index: int, status: str, detail: str, seconds: float, rss_kb: int) -> None:
        res.counts[kind][status] += 1
        res.max_s[kind] = max(res.max_s[kind], seconds)
        res.max_rss_kb[kind] = max(res.max_rss_kb[kind], rss_kb)
        if status not in fz.OK_STATUSES:
            res.failures.append(f"{kind} #{index}: {status} after {seconds:.2f} s: {detail}")
        elif status == "BitstreamError":
            res.messages[kind][_normalise(detail)] += 1

    def feed(w: Worker) -> None:
        nxt = next(pending, None)
        if nxt is None:
            w.case = None
            return
        case_id, kind, index, data = nxt
        w.case = (case_id, kind, index)
        w.started = time.perf_counter()
        w.conn.send((case_id, data))

    for w in workers:
        feed(w)
    while left:
        busy = [w for w in workers if w.case is not None]
        ready = wait([w.conn for w in busy], timeout=1.0)
        now = time.perf_counter()
        for i, w in enumerate(workers):
            if w.case is None:
                continue
            _, kind, index = w.case
            if w.conn in ready:
                try:
                    _, status, detail, seconds, digest, rss_kb = w.conn.recv()
                except EOFError:  # the worker died (a signal, an abort)
                    code = w.proc.join(5) or w.proc.exitcode
                    record(kind, index, "crash", f"worker died, exit code {code}", now - w.started, 0)
                    workers[i] = w = _start(ctx, mem_bytes, args.time_limit, tag)
                else:
                    record(kind, index, status, detail, seconds, rss_kb)
                    if status == "decoded" and digest in seed_digests:
                        res.same_as_seed[kind] += 1
                left -= 1
                feed(w)
            elif now - w.started > args.hard_limit:
                w.proc.kill()
                w.proc.join()
                record(kind, index, "timeout", f"killed after {args.hard_limit} s", now - w.started, 0)
                left -= 1
                workers[i] = w = _start(ctx, mem_bytes, args.time_limit, tag)
                feed(w)
        if args.progress and ready:
            done = len(cases) - left
            if done // 2000 != (done - len(ready)) // 2000:
                print(f"{done} done, {time.perf_counter() - t_start:.0f} s", file=sys.stderr)
    for w in workers:
        w.conn.send(None)
        w.proc.join(10)
    res.counts["_wall_s"]["s"] = int(time.perf_counter() - t_start)
    return res


def table(res: Results) -> str:
    """The markdown table: one row per kind, then the totals."""
    head = "| kind | n | decoded (= a seed image) | BitstreamError | other error | timeout | memory | crash "
    head += "| max time s | max peak RSS MiB |"
    lines = [head, "|" + "---|" * 10]
    total, same = Counter(), 0
    kinds = [k for k in ("crafted_huge", *fz.MUTATIONS) if k in res.counts]
    for kind in kinds:
        c = res.counts[kind]
        total.update(c)
        same += res.same_as_seed[kind]
        cells = [f"{c['decoded']} ({res.same_as_seed[kind]})"] + [str(c[s]) for s in COLUMNS[1:]]
        lines.append(
            f"| {kind} | {sum(c.values())} | " + " | ".join(cells)
            + f" | {res.max_s[kind]:.2f} | {res.max_rss_kb[kind] / 1024:.0f} |"
        )  # fmt: skip
    cells = [f"{total['decoded']} ({same})"] + [str(total[s]) for s in COLUMNS[1:]]
    lines.append(
        f"| **all** | {sum(total.values())} | " + " | ".join(cells)
        + f" | {max(res.max_s.values()):.2f} | {max(res.max_rss_kb.values()) / 1024:.0f} |"
    )  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=10_000, help="corpus inputs (plus the crafted files)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--mem-gib", type=float, default=6.0, help="RLIMIT_AS of each worker, GiB")
    p.add_argument("--time-limit", type=float, default=30.0, help="SIGALRM bound of one decode, s")
    p.add_argument("--hard-limit", type=float, default=120.0, help="kill a worker silent this long, s")
    p.add_argument("--no-crafted", dest="crafted", action="store_false")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    res = run(args)
    n = sum(sum(c.values()) for k, c in res.counts.items() if not k.startswith("_"))
    print(
        f"hvq decoder fuzz run: {n} inputs, seed {args.seed}, {args.workers} workers, RLIMIT_AS "
        f"{args.mem_gib:g} GiB, {args.time_limit:g} s per decode (hard {args.hard_limit:g} s), "
        f"{res.counts['_wall_s']['s']} s wall; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores\n"
    )
    print(table(res))
    print("\nMost common BitstreamError messages (text before the first colon, digits as N):")
    overall = Counter()
    for c in res.messages.values():
        overall.update(c)
    for msg, count in overall.most_common(12):
        print(f"- {count:6d}  {msg}")
    print(f"\nFailures ({len(res.failures)}):")
    for line in res.failures[:30]:
        print(f"- {line}")
    return 1 if res.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
