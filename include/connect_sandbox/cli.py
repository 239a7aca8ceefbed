"""``connect-sandbox``: run the local CloudBlue Connect stand-in.

connect-sandbox --seed demo --port 8765 --usage-records 1000000 --faults 429=0.1,seed=7
"""

from __future__ import annotations

import argparse
import sys
import time

import uvicorn

from .app import DEMO_API_KEY, create_app
from .faults import Faults, default_protocol_class, parse_spec
from .store import Store


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="connect-sandbox",
        description="A local CloudBlue Connect API for tests and demos (public API under /public/v1, "
        f"admin API under /_sandbox). API key: '{DEMO_API_KEY}'.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765)")
    p.add_argument(
        "--seed", choices=("demo", "empty"), default="demo", help="initial data set (default demo)"
    )
    p.add_argument(
        "--usage-records",
        type=int,
        default=0,
        metavar="N",
        help="add usage file UF-2026-10-9000000001 with N generated records",
    )
    p.add_argument(
        "--faults", default="", metavar="SPEC", help="e.g. 429=0.1,500=0.05,drop=0.02,latency_ms=20,seed=7"
    )
    p.add_argument(
        "--auto-approve-delay",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="vendor decides pending API-created requests after this delay; negative disables",
    )
    p.add_argument(
        "--max-limit", type=int, default=1000, metavar="N", help="maximum page size (default 1000)"
    )
    p.add_argument("--log-level", default="warning", help="uvicorn log level (default warning)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.usage_records < 0:
        sys.exit("connect-sandbox: --usage-records must be >= 0")
    if args.max_limit < 1:
        sys.exit("connect-sandbox: --max-limit must be >= 1")
    try:
        faults = Faults(parse_spec(args.faults))
    except ValueError as exc:
        sys.exit(f"connect-sandbox: --faults: {exc}")
    started = time.perf_counter()
    store = Store(args.seed, args.auto_approve_delay)
    if args.usage_records:
        store.usage_records_arg = args.usage_records
        store.reset()
    app = create_app(store, faults, max_limit=args.max_limit)
    print(
        f"connect-sandbox: seed={args.seed} usage_records={args.usage_records} "
        f"loaded in {time.perf_counter() - started:.2f}s; http://{args.host}:{args.port}/public/v1 "
        f"(Authorization: {DEMO_API_KEY})",
        flush=True,
    )
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        http=default_protocol_class(),
        log_level=args.log_level,
        access_log=False,
        lifespan="off",
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
