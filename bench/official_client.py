"""The ``official`` contender: a usage file to Parquet the way a Connect user writes it with
CloudBlue's own client (``connect-openapi-client``), timed in its own process.

    .venv-official/bin/python bench/official_client.py --api-url URL --out DIR --file UF-...

Why a separate script and interpreter: the official client cannot be installed beside Airflow
3.3 (every version from 29 to 35.0 needs ``connect-markdown-renderer>=3``, which pins
``rich<13``, while ``apache-airflow-core`` 3.3 needs ``rich>=13.6``: no resolution exists), so it
lives in its own virtualenv, ``.venv-official``, from ``requirements/bench-official.txt``, which
``bench/usage_to_parquet.py`` creates on first use. This file imports only that client, pyarrow
and the standard library.

What it does is what the client's documentation shows: ``ConnectClient(api_key, endpoint=...)``,
iterate ``client.ns("usage").records.filter(...)`` at ``limit(1000)`` (the iterator steps the
offset page by page, one call at a time, cloudblue/connect-python-openapi-client @ 7cd0e02 :
connect/client/models/iterators.py), keep the records, ``pyarrow.Table.from_pylist`` and one
Parquet file. Prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--file", required=True, help="the usage file id")
    parser.add_argument("--page-size", type=int, default=1000)
    args = parser.parse_args()

    t0 = time.perf_counter()
    import pyarrow as pa
    import pyarrow.parquet as pq
    from connect.client import ConnectClient

    import_s = time.perf_counter() - t0
    rss_imports = _rss_mb()
    started = time.perf_counter()
    client = ConnectClient(args.api_key, endpoint=args.api_url, use_specs=False)
    records = list(client.ns("usage").records.filter(usagefile__id=args.file).limit(args.page_size))
    fetched = time.perf_counter()
    table = pa.Table.from_pylist(records)
    converted = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "usage_records.parquet"
    pq.write_table(table, path, compression="zstd")
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "records": table.num_rows,
                "bytes": path.stat().st_size,
                "seconds": seconds,
                "import_s": import_s,
                "rss_after_imports_mb": rss_imports,
                "phases": {
                    "fetch_and_json": fetched - started,
                    "from_pylist": converted - fetched,
                    "write": seconds - (converted - started),
                },
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
