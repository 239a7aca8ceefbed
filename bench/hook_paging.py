"""Benchmark: page a large usage file through ConnectHook.iter_pages and report memory and speed.

Why: the hook promises that paging keeps memory independent of the collection's size (one page in
memory at a time). This starts a sandbox with ``--usage-records N`` on a free port, pages every
record of its generated file in a separate child process (so the peak RSS measured is the hook
process's alone, not the server's), and reports that child's peak RSS and records per second.

    .venv/bin/python bench/hook_paging.py                  # 1,000,000 records
    .venv/bin/python bench/hook_paging.py --records 100000 --page-size 500 --raw
    .venv/bin/python bench/hook_paging.py --raw --latency-ms 150 --concurrency 1,4,8

With ``--latency-ms L`` the sandbox answers every call L ms late (its latency fault), as the real
Connect does over the internet; ``--concurrency`` lists the pages side by side to compare (each in
its own child process, the hook's ``max_concurrency``), reported with the wait no client avoids
at that concurrency, ``pages x L / c``.

Exit status 1 if the peak RSS reaches ``--limit-mb`` (200 MB by default). Not a test: timings vary.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import running_sandbox

GENERATED_FILE = "UF-2026-10-9000000001"


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def child(page_size: int, raw: bool, concurrency: int) -> None:
    """Runs in the measured process: import the hook, page everything, print one JSON line.

    The connection to the sandbox comes from the parent, as ``AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT``.
    """
    from connect_provider.hooks.connect import ConnectHook

    hook = ConnectHook(page_size=page_size, max_concurrency=concurrency)
    hook.get_conn()
    baseline = _peak_rss_mb()
    started = time.perf_counter()
    records = pages = 0
    if raw:
        for page in hook.iter_usage_record_raw_pages(GENERATED_FILE):
            records += page.count
            pages += 1
    else:
        for items in hook.iter_usage_record_pages(GENERATED_FILE):
            records += len(items)
            pages += 1
    seconds = time.perf_counter() - started
    result = {
        "records": records,
        "pages": pages,
        "seconds": round(seconds, 2),
        "records_per_s": round(records / seconds) if seconds else None,
        "rss_after_imports_mb": round(baseline, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }
    print("RESULT " + json.dumps(result), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000, help="records in the generated usage file")
    parser.add_argument("--page-size", type=int, default=1000, help="page size of the hook (1-1000)")
    parser.add_argument("--raw", action="store_true", help="page with iter_raw_pages (no JSON decoding)")
    parser.add_argument("--limit-mb", type=float, default=200.0, help="fail if the peak RSS reaches this")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="the sandbox's latency per call")
    parser.add_argument(
        "--concurrency", default="4", help="pages side by side, comma-separated to compare (default 4)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        child(args.page_size, args.raw, int(args.concurrency))
        return 0

    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    results = []
    with tempfile.TemporaryDirectory(prefix="hook-bench-") as tmp:
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(Path(tmp) / "airflow_home"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }
        faults = ["--faults", f"latency_ms={args.latency_ms:g}"] if args.latency_ms > 0 else []
        started = time.perf_counter()
        with running_sandbox(
            "--usage-records", str(args.records), *faults, timeout=600, log_dir=tmp
        ) as server:
            print(
                f"sandbox with {args.records:,} records ready in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
            env["AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT"] = server.conn_json(timeout=120)
            for level in levels:
                cmd = [sys.executable, __file__, "--child", "--page-size", str(args.page_size)]
                cmd += ["--concurrency", str(level)] + (["--raw"] if args.raw else [])
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
                lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
                if out.returncode != 0 or not lines:
                    sys.stderr.write(out.stdout[-4000:] + out.stderr[-4000:])
                    return 2
                results.append((level, json.loads(lines[-1].removeprefix("RESULT "))))
    return report(args, results)


def report(args: argparse.Namespace, results: list[tuple[int, dict]]) -> int:
    """One line per concurrency; exit 1 if a run missed records or reached the RSS limit."""
    mode = "iter_raw_pages" if args.raw else "iter_pages"
    failed = False
    for level, result in results:
        wait = ""
        if args.latency_ms > 0:
            floor = -(-args.records // args.page_size) * args.latency_ms / 1000.0 / level
            wait = f"; the wait alone at {level} at once: {floor:.1f} s"
        print(
            f"{mode}, {level} at once: {result['records']:,} records in {result['pages']:,} pages of "
            f"{args.page_size} in {result['seconds']} s = {result['records_per_s']:,} records/s; peak RSS "
            f"{result['peak_rss_mb']} MB (after imports {result['rss_after_imports_mb']} MB){wait}"
        )
        if result["records"] != args.records:
            print(f"FAIL: expected {args.records:,} records, got {result['records']:,}")
            failed = True
        if result["peak_rss_mb"] >= args.limit_mb:
            print(f"FAIL: peak RSS {result['peak_rss_mb']} MB >= {args.limit_mb} MB")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
