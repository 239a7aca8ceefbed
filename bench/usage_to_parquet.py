"""Usage records to Parquet, side by side: our exporter against what a Connect user would use instead.

    .venv/bin/python bench/usage_to_parquet.py --records 1000000 [--latency-ms L] [--rounds R] [--json]
        [--contenders ours,ours_c8,official,naive,dlt,cpu_floor] [--page-size P]
    .venv/bin/python bench/usage_to_parquet.py --scaling 1000000,5000000 [--rounds R] [--json]
    .venv/bin/python bench/usage_to_parquet.py --records 1000000 --profile DIR   # py-spy, client + server

One sandbox serves one generated usage file of N records (``UF-2026-10-9000000001``), with the
sandbox's ``latency_ms=L`` fault (every call waits L ms before it is answered, as a call to the
real Connect waits for the internet and Connect's own query) when ``--latency-ms`` is given. Every
contender exports that file to Parquet in its own fresh process, several rounds, alternating
contender by contender, so that the noise of a shared 2-core machine hits all of them alike. Per
contender: records/s (median over rounds, timed inside the child around the export, imports
excluded), the child's peak RSS (``ru_maxrss`` from ``os.wait4``, max over rounds) and its working
set (peak RSS minus the RSS right after the imports, max over rounds), the Parquet bytes written,
and the sandbox's CPU seconds spent serving it. Figures are reported as ratios, which is what
survives a noisy machine.

Contenders:

- ``ours``: ``ConnectUsageRecordsToParquetOperator(...).execute({})`` as the DAG runs it, with the
  connection from ``AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT`` and the operator's defaults (page
  size 1000, concurrency 4); ``ours_cN`` is the same with ``concurrency=N``.
- ``official``: CloudBlue's ``connect-openapi-client`` as its users write it (``bench/official_client.py``,
  in its own virtualenv ``.venv-official``, created here on first use: it cannot share a lock with
  Airflow 3.3).
- ``naive``: requests + ``json`` + ``pandas.json_normalize`` of every record + ``to_parquet``.
- ``dlt``: dlt's ``rest_api`` source, offset paginator, filesystem destination, Parquet files.
- ``cpu_floor``: the same page bodies, fetched before the clock starts and held in memory, each cut
  into NDJSON at the record boundaries and handed to ``pyarrow.json.read_json``, one zstd
  ``ParquetWriter`` with 20,000-row groups: no network, no checks, no types of ours. What this
  machine's CPU cannot go below with Arrow's reader.

Floors reported beside the contenders: the CPU floor's own time, and at latency L the **latency
floor** of a contender fetching c pages at once: ``pages x L / c`` + the CPU floor's time (the
wait no client at that concurrency avoids, plus the work no client avoids, one after the other).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # the bench folder is not a package: found through sys.path above
    DEMO_API_KEY,
    REPO,
    cpu_seconds,
    machine_info,
    median,
    ratio,
    run_child,
    start_sandbox,
    venv_python,
)

FILE_ID = "UF-2026-10-9000000001"
DEFAULT_PAGE_SIZE = 1000  # the exporter's default and the sandbox's (and Connect's) maximum
DEFAULT_CONCURRENCY = 4  # the operator's default
DEFAULT_CONTENDERS = ("ours", "naive", "dlt", "cpu_floor")
LATENCY_CONTENDERS = ("ours", "ours_c8", "official", "cpu_floor")
CONTENDERS = ("ours", "ours_cN", "official", "naive", "dlt", "cpu_floor")
#: Throughput ratios ours / X, at no latency and at latency.
TARGETS = {"ours_vs_naive": 5.0, "ours_vs_dlt": 10.0, "ours_vs_cpu_floor": 0.7}
LATENCY_TARGETS = {
    "ours_vs_latency_floor": 0.8,
    "ours_c8_vs_latency_floor": 0.8,
    "ours_vs_official": 3.5,
    "ours_c8_vs_official": 7.0,
}
WORKING_SET_TARGET_MB = 64.0
FLOOR_ROW_GROUP_ROWS = 20_000  # the exporter's default row group
OFFICIAL_VENV = REPO / ".venv-official"
OFFICIAL_LOCK = REPO / "requirements" / "bench-official.txt"


def concurrency_of(name: str) -> int | None:
    """``ours`` -> 4, ``ours_c8`` -> 8; ``None`` for the other contenders."""
    if name == "ours":
        return DEFAULT_CONCURRENCY
    if name.startswith("ours_c") and name[6:].isdigit():
        return int(name[6:])
    return None


def known(name: str) -> bool:
    return concurrency_of(name) is not None or name in CONTENDERS


# ----------------------------------------------------------------------------- contenders (child side)
def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _parquet_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.parquet") if p.is_file())


def _run_ours(
    api_url: str, out: Path, page_size: int | None, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The operator the DAG runs; its connection comes from ``AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT``.

    ``options`` are extra operator arguments (``--ours-kwargs``), e.g. ``{"row_group_rows": 25000}``
    to measure a setting before changing its default.
    """
    t0 = time.perf_counter()
    try:
        from connect_provider.operators.usage import ConnectUsageRecordsToParquetOperator
    except ImportError:  # the operator module not there yet: the exporter function it runs
        ConnectUsageRecordsToParquetOperator = None
    from connect_provider.hooks.connect import ConnectHook
    from connect_provider.usage.exporter import export_usage_file

    import_s = time.perf_counter() - t0
    rss_imports = _rss_mb()
    kwargs: dict[str, Any] = {} if page_size is None else {"page_size": page_size}
    kwargs.update(options or {})
    started = time.perf_counter()
    if ConnectUsageRecordsToParquetOperator is not None:
        operator = ConnectUsageRecordsToParquetOperator(
            task_id="bench_usage_to_parquet", usage_file_id=FILE_ID, destination=str(out), **kwargs
        )
        result = operator.execute({})
        via = "ConnectUsageRecordsToParquetOperator.execute"
    else:
        result = export_usage_file(ConnectHook(), FILE_ID, str(out), **kwargs).to_xcom()
        via = "export_usage_file"
    seconds = time.perf_counter() - started
    return {
        "records": int(result["rows"]),
        "bytes": int(result["bytes"]),
        "seconds": seconds,
        "import_s": import_s,
        "rss_after_imports_mb": rss_imports,
        "via": via,
    }


def _run_naive(api_url: str, out: Path, page_size: int | None) -> dict[str, Any]:
    """What a quick script does: every record as a dict, one DataFrame, ``to_parquet``."""
    t0 = time.perf_counter()
    import pandas as pd
    import requests

    import_s = time.perf_counter() - t0
    rss_imports = _rss_mb()
    size = page_size or DEFAULT_PAGE_SIZE
    started = time.perf_counter()
    session = requests.Session()
    session.headers["Authorization"] = DEMO_API_KEY
    records: list[dict[str, Any]] = []
    offset = 0
    while True:
        response = session.get(
            f"{api_url}/usage/records",
            params={"usagefile.id": FILE_ID, "limit": size, "offset": offset},
            timeout=60,
        )
        response.raise_for_status()
        page = json.loads(response.content)
        records.extend(page)
        offset += len(page)
        if len(page) < size:
            break
    fetched = time.perf_counter()
    frame = pd.json_normalize(records)
    normalized = time.perf_counter()
    path = out / "usage_records.parquet"
    frame.to_parquet(path, index=False)
    seconds = time.perf_counter() - started
    return {
        "records": len(frame),
        "bytes": path.stat().st_size,
        "seconds": seconds,
        "import_s": import_s,
        "rss_after_imports_mb": rss_imports,
        "phases": {
            "fetch_and_json": fetched - started,
            "json_normalize": normalized - fetched,
            "to_parquet": seconds - (normalized - started),
        },
    }


def _run_dlt(api_url: str, out: Path, page_size: int | None) -> dict[str, Any]:
    """dlt's rest_api source (offset paginator, stop on an empty page) -> filesystem, Parquet."""
    work = out.parent / (out.name + "-dlt")
    os.environ.setdefault("DLT_DATA_DIR", str(work / "data"))
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    t0 = time.perf_counter()
    import dlt
    import pyarrow.parquet as pq
    from dlt.sources.rest_api import rest_api_source

    import_s = time.perf_counter() - t0
    rss_imports = _rss_mb()
    size = page_size or DEFAULT_PAGE_SIZE
    started = time.perf_counter()
    source = rest_api_source(
        {
            "client": {
                "base_url": api_url + "/",
                "auth": {
                    "type": "api_key",
                    "name": "Authorization",
                    "api_key": DEMO_API_KEY,
                    "location": "header",
                },
            },
            "resources": [
                {
                    "name": "usage_records",
                    "endpoint": {
                        "path": "usage/records",
                        "params": {"usagefile.id": FILE_ID},
                        "data_selector": "$",
                        "paginator": {
                            "type": "offset",
                            "limit": size,
                            "offset_param": "offset",
                            "limit_param": "limit",
                            "total_path": None,
                            "stop_after_empty_page": True,
                        },
                    },
                }
            ],
        }
    )
    pipeline = dlt.pipeline(
        pipeline_name="bench_usage_records",
        destination=dlt.destinations.filesystem(bucket_url=out.as_uri()),
        dataset_name="usage",
        pipelines_dir=str(work / "pipelines"),
    )
    pipeline.run(source, loader_file_format="parquet")
    seconds = time.perf_counter() - started
    main_files = [p for p in out.rglob("*.parquet") if p.parent.name == "usage_records"]
    return {
        "records": sum(pq.ParquetFile(p).metadata.num_rows for p in main_files),
        "bytes": _parquet_bytes(out),  # the records table and its params child table
        "seconds": seconds,
        "import_s": import_s,
        "rss_after_imports_mb": rss_imports,
    }


def _fetch_bodies(api_url: str, size: int) -> list[bytes]:
    """Every page body of the file, fetched side by side (8 sessions) before any clock starts."""
    from concurrent.futures import ThreadPoolExecutor

    import requests

    def get(offset: int, session: requests.Session | None = None) -> tuple[bytes, str]:
        session = session or requests.Session()
        response = session.get(
            f"{api_url}/usage/records",
            params={"usagefile.id": FILE_ID, "limit": size, "offset": offset},
            headers={"Authorization": DEMO_API_KEY},
            timeout=120,
        )
        response.raise_for_status()
        return response.content, response.headers["Content-Range"]

    first, content_range = get(0)
    total = int(content_range.rsplit("/", 1)[1])
    with ThreadPoolExecutor(8) as pool:
        rest = list(pool.map(lambda o: get(o)[0], range(size, total, size)))
    return [first, *rest]


def _run_cpu_floor(api_url: str, out: Path, page_size: int | None) -> dict[str, Any]:
    """The CPU floor: bodies already in memory -> Arrow's JSON reader -> one Parquet writer."""
    t0 = time.perf_counter()
    import pyarrow as pa
    import pyarrow.json as pa_json
    import pyarrow.parquet as pq

    import_s = time.perf_counter() - t0
    rss_imports = _rss_mb()
    bodies = _fetch_bodies(api_url, page_size or DEFAULT_PAGE_SIZE)
    path = out / "usage_records.parquet"
    writer: pq.ParquetWriter | None = None
    parse_options = pa_json.ParseOptions()
    pending: list[pa.Table] = []
    rows = pending_rows = 0
    started = time.perf_counter()
    for body in bodies:
        # Records are objects that start with "id" and hold no such boundary inside.
        text = body[1:-1].replace(b'},{"id":', b'}\n{"id":')
        table = pa_json.read_json(
            pa.BufferReader(text),
            read_options=pa_json.ReadOptions(use_threads=False, block_size=len(text) + 64),
            parse_options=parse_options,
        )
        if writer is None:  # later pages are read against the first page's schema
            writer = pq.ParquetWriter(path, table.schema, compression="zstd")
            parse_options = pa_json.ParseOptions(
                explicit_schema=table.schema, unexpected_field_behavior="ignore"
            )
        pending.append(table)
        pending_rows += table.num_rows
        rows += table.num_rows
        if pending_rows >= FLOOR_ROW_GROUP_ROWS:
            writer.write_table(pa.concat_tables(pending), row_group_size=pending_rows)
            pending, pending_rows = [], 0
    if writer is not None:
        if pending:
            writer.write_table(pa.concat_tables(pending), row_group_size=pending_rows)
        writer.close()
    seconds = time.perf_counter() - started
    return {
        "records": rows,
        "bytes": path.stat().st_size if path.exists() else 0,
        "seconds": seconds,
        "import_s": import_s,
        "rss_after_imports_mb": rss_imports,
        "pages": len(bodies),
    }


def run_contender(
    name: str, api_url: str, out: Path, page_size: int | None, ours_kwargs: dict[str, Any] | None = None
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    concurrency = concurrency_of(name)
    if concurrency is not None:
        options = {"concurrency": concurrency, **(ours_kwargs or {})}
        return _run_ours(api_url, out, page_size, options)
    if name == "naive":
        return _run_naive(api_url, out, page_size)
    if name == "dlt":
        return _run_dlt(api_url, out, page_size)
    if name == "cpu_floor":
        return _run_cpu_floor(api_url, out, page_size)
    raise SystemExit(f"unknown contender {name!r}; choose from {', '.join(CONTENDERS)}")


# ----------------------------------------------------------------------------- harness (parent side)
def _child_env(sandbox_conn: str, work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_CONN_CLOUDBLUE_CONNECT_DEFAULT": sandbox_conn,
            "AIRFLOW_HOME": str(work / "airflow_home"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "CONNECT_DATA_DIR": str(work / "connect_data"),
            "RUNTIME__DLTHUB_TELEMETRY": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def official_python() -> str:
    """The interpreter of ``.venv-official`` (the official client's own lock), made on first use."""
    python = OFFICIAL_VENV / "bin" / "python"
    if not python.exists():
        uv = REPO / ".venv" / "bin" / "uv"
        _log(f"creating {OFFICIAL_VENV.name} from {OFFICIAL_LOCK.relative_to(REPO)} (the official client)")
        subprocess.run([str(uv), "venv", "-q", "--python", venv_python(), str(OFFICIAL_VENV)], check=True)
        subprocess.run(
            [str(uv), "pip", "install", "-q", "--python", str(python), "-r", str(OFFICIAL_LOCK)], check=True
        )
    return str(python)


def _argv(name: str, sandbox: Any, out: Path, page_size: int | None, ours_kwargs: dict | None) -> list[str]:
    if name == "official":
        return [
            official_python(),
            str(Path(__file__).resolve().parent / "official_client.py"),
            "--api-url", sandbox.api_url, "--api-key", DEMO_API_KEY, "--out", str(out), "--file", FILE_ID,
            "--page-size", str(page_size or DEFAULT_PAGE_SIZE),
        ]  # fmt: skip
    argv = [venv_python(), str(Path(__file__).resolve()), "--run-contender", name]
    argv += ["--api-url", sandbox.api_url, "--out", str(out)]
    if page_size is not None:
        argv += ["--page-size", str(page_size)]
    if concurrency_of(name) is not None and ours_kwargs:
        argv += ["--ours-kwargs", json.dumps(ours_kwargs)]
    return argv


def measure_once(
    name: str,
    sandbox: Any,
    page_size: int | None,
    work: Path,
    records: int,
    timeout: float,
    wrapper: list[str] | None = None,
    server_pid: int | None = None,
    ours_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One round of one contender in a fresh process; returns its figures or its error."""
    server_pid = server_pid or sandbox.pid
    out = work / f"out-{name}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work / f"out-{name}-dlt", ignore_errors=True)
    argv = [*(wrapper or []), *_argv(name, sandbox, out, page_size, ours_kwargs)]
    # The connection lets one listing run up to 32 pages at once: the operator's concurrency decides.
    conn = sandbox.conn_json(max_concurrency=32)
    server_cpu_before = cpu_seconds(server_pid)
    child = run_child(argv, env=_child_env(conn, work), timeout=timeout)
    server_cpu = cpu_seconds(server_pid) - server_cpu_before
    result: dict[str, Any] = {
        "peak_rss_mb": round(child.peak_rss_mb, 1),
        "process_s": round(child.wall_s, 2),
        "client_cpu_s": round(child.cpu_s, 2),
        "server_cpu_s": round(server_cpu, 2),
    }
    lines = [ln for ln in child.stdout.splitlines() if ln.startswith("{")]
    if child.returncode != 0 or not lines:
        tail = (child.stderr.strip().splitlines() or ["(no output)"])[-1]
        why = "timed out" if child.timed_out else f"exit code {child.returncode}"
        result["error"] = f"{why}: {tail[:300]}"
        return result
    figures = json.loads(lines[-1])
    result.update(figures)
    result["working_set_mb"] = round(child.peak_rss_mb - figures["rss_after_imports_mb"], 1)
    if figures["records"] != records:
        result["error"] = f"wrote {figures['records']} records of {records}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work / f"out-{name}-dlt", ignore_errors=True)
    return result


def summarise(runs: list[dict[str, Any]], records: int) -> dict[str, Any]:
    good = [r for r in runs if "error" not in r]

    def worst(key: str) -> float | None:
        return round(max(r[key] for r in good), 1) if good else None

    def middle(key: str) -> float | None:
        return round(median([r[key] for r in good]), 2) if good else None

    summary: dict[str, Any] = {
        "records_per_s": round(median([records / r["seconds"] for r in good]), 1) if good else None,
        "seconds_median": middle("seconds"),
        "peak_rss_mb": worst("peak_rss_mb"),
        "working_set_mb": worst("working_set_mb"),
        "bytes": good[-1]["bytes"] if good else None,
        "seconds": [round(r["seconds"], 2) for r in good],
        "rss_after_imports_mb": worst("rss_after_imports_mb"),
        "import_s": middle("import_s"),
        "server_cpu_s": middle("server_cpu_s"),
        "client_cpu_s": middle("client_cpu_s"),
        "rounds_ok": len(good),
    }
    if any("via" in r for r in good):
        summary["via"] = good[-1].get("via")
    phased = [r["phases"] for r in good if "phases" in r]
    if phased:  # seconds per phase (median over rounds): where a simple contender's time goes
        summary["phases_s"] = {k: round(median([p[k] for p in phased]), 2) for k in phased[0]}
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        summary["errors"] = errors
    return summary


def floors(
    contenders: dict[str, dict[str, Any]], records: int, page_size: int, latency_ms: float
) -> dict[str, dict[str, Any]]:
    """The CPU floor as measured, and at latency the latency floor of each ``ours`` concurrency:
    ``pages x L / c + cpu floor seconds``, as seconds and records/s."""
    cpu_s = contenders.get("cpu_floor", {}).get("seconds_median")
    if cpu_s is None:
        return {}
    result: dict[str, dict[str, Any]] = {
        "cpu_floor": {"seconds": cpu_s, "records_per_s": round(records / cpu_s)}
    }
    if latency_ms <= 0:
        return result
    pages = -(-records // page_size)
    for c in sorted({concurrency_of(n) for n in contenders if concurrency_of(n) is not None}):
        seconds = pages * latency_ms / 1000.0 / c + cpu_s
        result[f"latency_floor_c{c}"] = {
            "seconds": round(seconds, 2),
            "records_per_s": round(records / seconds),
            "formula": f"{pages} pages x {latency_ms:g} ms / {c} + {cpu_s:.2f} s",
        }
    return result


def ratios(
    contenders: dict[str, dict[str, Any]], floor: dict[str, dict[str, Any]]
) -> dict[str, float | None]:
    """Throughput of each ``ours`` variant over every other contender and over its floors."""
    result: dict[str, float | None] = {}
    for name, figures in contenders.items():
        c = concurrency_of(name)
        if c is None:
            continue
        rate = figures.get("records_per_s")
        for other, theirs in contenders.items():
            if concurrency_of(other) is None:
                result[f"{name}_vs_{other}"] = ratio(rate, theirs.get("records_per_s"))
        if f"latency_floor_c{c}" in floor:
            result[f"{name}_vs_latency_floor"] = ratio(rate, floor[f"latency_floor_c{c}"]["records_per_s"])
    return result


def _start(records: int, work: Path, latency_ms: float = 0.0, wrapper: list[str] | None = None) -> Any:
    faults = ["--faults", f"latency_ms={latency_ms:g}"] if latency_ms > 0 else []
    return start_sandbox(
        "--seed", "empty", "--usage-records", str(records), *faults, log_dir=work, wrapper=wrapper or ()
    )


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _report_round(round_number: int, name: str, records: int, result: dict[str, Any]) -> None:
    if "error" in result:
        _log(f"round {round_number} {name}: ERROR {result['error']}")
        return
    _log(
        f"round {round_number} {name}: {records / result['seconds']:,.0f} records/s, "
        f"{result['seconds']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB "
        f"(working set {result['working_set_mb']:.0f} MB), server CPU {result['server_cpu_s']:.1f} s"
    )


def compare(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    default = LATENCY_CONTENDERS if args.latency_ms > 0 else DEFAULT_CONTENDERS
    names = [n.strip() for n in (args.contenders or ",".join(default)).split(",") if n.strip()]
    unknown = [n for n in names if not known(n)]
    if unknown or not names:
        raise SystemExit(f"--contenders: unknown {unknown}; choose from {', '.join(CONTENDERS)}")
    if "official" in names:
        official_python()  # made before the clock of any round starts
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    machine = machine_info()  # the load average before the run, next to the one after it
    sandbox = _start(args.records, work, args.latency_ms)
    started = time.time()
    try:
        for round_number in range(1, args.rounds + 1):
            for name in names:
                result = measure_once(
                    name, sandbox, args.page_size, work, args.records, args.timeout,
                    ours_kwargs=args.ours_kwargs,
                )  # fmt: skip
                runs[name].append(result)
                _report_round(round_number, name, args.records, result)
    finally:
        sandbox.stop()
    contenders = {n: summarise(runs[n], args.records) for n in names}
    floor = floors(contenders, args.records, args.page_size or DEFAULT_PAGE_SIZE, args.latency_ms)
    found = ratios(contenders, floor)
    return {
        "records": args.records,
        "page_size": args.page_size or DEFAULT_PAGE_SIZE,
        "latency_ms": args.latency_ms,
        "rounds": args.rounds,
        "contenders": contenders,
        "floors": floor,
        "ratios": found,
        "targets": targets_met(contenders, found, args.latency_ms),
        "machine": {**machine, "loadavg_1m_after": machine_info().get("loadavg_1m")},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "elapsed_s": round(time.time() - started, 1),
    }


def targets_met(
    contenders: dict[str, dict[str, Any]], found: dict[str, float | None], latency_ms: float
) -> dict[str, bool | None]:
    """Each target of this kind of run (at latency or not) that the run could judge."""
    met: dict[str, bool | None] = {}
    for key, floor in (LATENCY_TARGETS if latency_ms > 0 else TARGETS).items():
        if key in found:
            met[f"{key} >= {floor:g}"] = None if found[key] is None else found[key] >= floor
    working_set = contenders.get("ours", {}).get("working_set_mb")
    if latency_ms <= 0 and working_set is not None:
        met[f"working set <= {WORKING_SET_TARGET_MB:.0f} MB"] = working_set <= WORKING_SET_TARGET_MB
    return met


def scaling(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """``ours`` alone at each size, one sandbox per size: working set and peak RSS against the size."""
    sizes = [int(s.replace("_", "")) for s in args.scaling.split(",") if s.strip()]
    rows: list[dict[str, Any]] = []
    started = time.time()
    for size in sizes:
        sandbox = _start(size, work, args.latency_ms)
        try:
            runs = []
            for round_number in range(1, args.rounds + 1):
                result = measure_once(
                    "ours", sandbox, args.page_size, work, size, args.timeout, ours_kwargs=args.ours_kwargs
                )
                runs.append(result)
                _report_round(round_number, f"ours at {size:,}", size, result)
        finally:
            sandbox.stop()
        rows.append({"records": size, **summarise(runs, size)})
    result: dict[str, Any] = {
        "page_size": args.page_size or DEFAULT_PAGE_SIZE,
        "latency_ms": args.latency_ms,
        "rounds": args.rounds,
        "scaling": rows,
        "ratios": {},
        "targets": {},
    }
    for row, first in ((row, rows[0]) for row in rows[1:]):
        for key in ("working_set_mb", "peak_rss_mb"):
            name = f"{key.removesuffix('_mb')}_{row['records']}_vs_{first['records']}"
            result["ratios"][name] = ratio(row[key], first[key])
    if len(rows) > 1:
        last = result["ratios"][f"working_set_{rows[-1]['records']}_vs_{rows[0]['records']}"]
        result["targets"]["working set within 10 % across the sizes"] = (
            None if last is None else abs(last - 1.0) <= 0.10
        )
    result["machine"] = machine_info()
    result["elapsed_s"] = round(time.time() - started, 1)
    return result


# ----------------------------------------------------------------------------- profile (py-spy)
def _top_costs(collapsed: Path, top: int = 15) -> dict[str, Any]:
    """Where the samples went, from py-spy's collapsed (``raw``) stacks, imports left out.

    ``threads``: samples per thread; ``self``: the innermost Python line of each sample (time
    in C code such as Arrow's JSON reader is charged to the Python line that called it);
    ``inclusive``: samples under each function, any line. Shares are of all kept samples across
    threads, so two busy threads add up to more than the wall time.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = imports = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        parts = stack.split(";")
        if any("<frozen importlib" in f for f in parts):
            imports += count
            continue
        thread = next((f.split(": ", 1)[-1] for f in parts if f.startswith("thread (")), "?")
        frames = [f for f in parts if f and not f.startswith(("process ", "thread ("))]
        total += count
        threads[thread] += count
        if frames:
            own[frames[-1]] += count
        for function in {f.rsplit(":", 1)[0] + ")" if ":" in f else f for f in frames}:
            inclusive[function] += count

    def share(counter: Counter[str], n: int = top) -> list[list[Any]]:
        return [[f, round(100.0 * c / max(total, 1), 1)] for f, c in counter.most_common(n)]

    return {
        "samples": total,
        "import_samples_left_out": imports,
        "threads": share(threads, 5),
        "self": share(own),
        "inclusive": share(inclusive, 2 * top),
    }


def profile(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One ``ours`` export under py-spy, the sandbox under py-spy at the same time."""
    py_spy = shutil.which("py-spy") or str(REPO / ".venv" / "bin" / "py-spy")
    if not Path(py_spy).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/uv pip install --python .venv/bin/python py-spy")
    folder = Path(args.profile).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    server_out = folder / "server.collapsed.txt"
    client_out = folder / "client.collapsed.txt"
    spy = [py_spy, "record", "--rate", "100", "--format", "raw", "--nonblocking", "--threads"]
    sandbox = _start(args.records, work, args.latency_ms, wrapper=[*spy, "-o", str(server_out), "--"])
    try:
        servers = _children(sandbox.pid)  # py-spy's child is the server itself
        result = measure_once(
            "ours",
            sandbox,
            args.page_size,
            work,
            args.records,
            args.timeout,
            wrapper=[*spy, "-o", str(client_out), "--"],
            server_pid=servers[0] if servers else None,
            ours_kwargs=args.ours_kwargs,
        )
    finally:
        # SIGTERM to py-spy's child (the server) makes py-spy write its file and exit.
        for child_pid in _children(sandbox.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child_pid, 15)
        with contextlib.suppress(Exception):
            sandbox.process.wait(30)
        sandbox.stop()
    result.pop("peak_rss_mb", None)  # py-spy's own, not the exporter's: see the comparison runs
    report = {"records": args.records, "run": result}
    for side, path in (("client", client_out), ("server", server_out)):
        report[side] = _top_costs(path) if path.exists() else {"error": f"no profile written at {path}"}
    (folder / "top_costs.json").write_text(json.dumps(report, indent=2))
    return report


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(p) for p in text.split()]
    return []


# ----------------------------------------------------------------------------- output
def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    return format(value, spec) if spec else str(value)


def _print_scaling(report: dict[str, Any]) -> None:
    print(f"ours, page size {report['page_size']}, {report['rounds']} round(s) per size")
    print(
        f"{'records':>10} {'records/s':>11} {'peak RSS MB':>12} {'after imports MB':>17} "
        f"{'working set MB':>15}"
    )
    for row in report["scaling"]:
        print(
            f"{row['records']:>10,} {_fmt(row['records_per_s'], ',.0f'):>11} "
            f"{_fmt(row['peak_rss_mb'], '.0f'):>12} {_fmt(row['rss_after_imports_mb'], '.0f'):>17} "
            f"{_fmt(row['working_set_mb'], '.1f'):>15}"
        )
        for error in row.get("errors", []):
            print(f"{'':>10} error: {error}")


def print_table(report: dict[str, Any]) -> None:
    if "scaling" in report:
        _print_scaling(report)
    else:
        print(
            f"{report['records']:,} records, page size {report['page_size']}, latency "
            f"{report['latency_ms']:g} ms, {report['rounds']} round(s), contenders alternating; "
            "medians of records/s, max of peak RSS and working set"
        )
        print(
            f"{'contender':<13} {'records/s':>10} {'peak RSS MB':>12} {'working set MB':>15} {'bytes':>13} "
            f"{'server CPU s':>13}  rounds"
        )
        for name, c in report["contenders"].items():
            print(
                f"{name:<13} {_fmt(c['records_per_s'], ',.0f'):>10} {_fmt(c['peak_rss_mb'], '.0f'):>12} "
                f"{_fmt(c['working_set_mb'], '.1f'):>15} {_fmt(c['bytes'], ','):>13} "
                f"{_fmt(c['server_cpu_s'], '.1f'):>13}  {c['rounds_ok']}/{report['rounds']}"
            )
            if c.get("phases_s"):
                print(f"{'':<13} seconds by phase: {', '.join(f'{k} {v}' for k, v in c['phases_s'].items())}")
            for error in c.get("errors", []):
                print(f"{'':<13} error: {error}")
        for name, f in report["floors"].items():
            print(f"{name:<20} {f['records_per_s']:>10,} records/s ({f['seconds']} s) {f.get('formula', '')}")
        print()
    for key, value in report["ratios"].items():
        print(f"{key:<32} {_fmt(value)}")
    for key, value in report["targets"].items():
        print(f"target {key}: {'met' if value else 'NOT met' if value is not None else '-'}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--records", type=int, default=100_000, help="records in the usage file (default 100000)")
    p.add_argument("--page-size", type=int, default=None, help="page size (default: each contender's, 1000)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per contender (default 3)")
    p.add_argument(
        "--contenders",
        default=None,
        help=f"comma-separated, from {', '.join(CONTENDERS)} (default {','.join(DEFAULT_CONTENDERS)}; "
        f"with --latency-ms {','.join(LATENCY_CONTENDERS)})",
    )
    p.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        metavar="L",
        help="the sandbox's latency fault: every call waits L ms (a call to the real Connect, ~150)",
    )
    p.add_argument(
        "--scaling", metavar="N,N,...", help="ours only, one sandbox per size, e.g. 1000000,5000000"
    )
    p.add_argument(
        "--profile", metavar="DIR", help="one ours export under py-spy, and the server; writes DIR"
    )
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds before a contender is killed")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(
        "--ours-kwargs",
        type=json.loads,
        default=None,
        metavar="JSON",
        help="extra operator arguments for ours, e.g. '{\"row_group_rows\": 25000}'",
    )
    p.add_argument("--run-contender", help=argparse.SUPPRESS)
    p.add_argument("--api-url", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.run_contender:
        figures = run_contender(
            args.run_contender, args.api_url, Path(args.out), args.page_size, args.ours_kwargs
        )
        print(json.dumps(figures), flush=True)
        return 0
    if args.records < 1 or args.rounds < 1:
        raise SystemExit("--records and --rounds must be at least 1")
    if args.page_size is not None and not 1 <= args.page_size <= 1000:
        raise SystemExit("--page-size: give an integer from 1 to 1000 (the sandbox's maximum page size)")
    work = Path(tempfile.mkdtemp(prefix="bench-usage-"))
    try:
        if args.profile:
            report = profile(args, work)
            print(json.dumps(report, indent=None if args.json else 2))
            return 0
        report = scaling(args, work) if args.scaling else compare(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
