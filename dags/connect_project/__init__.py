"""This project's own glue beside its DAGs: what only these DAGs use, kept out of the provider wheel.

* :mod:`.settings`: the changes DAG's parse-time settings, from ``CONNECT_CHANGES_*`` variables;
* :mod:`.usage_pipeline`: the usage DAGs' Airflow Variables, the ``connect_usage_records`` Asset,
  which files to export and the Asset event;
* :mod:`.usage_load`: loading the exported Parquet into DuckDB or PostgreSQL (the data team's
  table, downstream of the provider's export);
* :mod:`.demo`: the demo rows of the outbox (``include/sql/demo_changes.sql``).

Why here, beside the DAGs, and not in ``include/`` or the provider: Airflow puts the DAG folder on
``sys.path`` wherever it parses or runs these DAGs (the DAG processor and the task runner both use
a bundle DAG bag that adds it), so the DAG files import this package with no install step, and it
ships, versions and deploys with them (the compose mount, the image's ``dags/``, git-sync).
``dags/.airflowignore`` keeps the DAG processor from parsing it as DAG files. The provider never
imports it.
"""
