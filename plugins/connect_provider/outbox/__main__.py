"""Print the outbox table's DDL for a DBA or a migration tool: ``python -m connect_provider.outbox DIALECT``.

The DDL ships inside the package; this prints the very file :meth:`Outbox.create_schema` runs, so
``python -m connect_provider.outbox postgres | psql "$DATABASE_URL"`` creates the same table.
"""

from __future__ import annotations

import argparse

from connect_provider.outbox.table import DIALECTS, ddl


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m connect_provider.outbox", description=__doc__)
    parser.add_argument("dialect", choices=DIALECTS, help="the database the table is for")
    print(ddl(parser.parse_args(argv).dialect), end="")


if __name__ == "__main__":
    main()
