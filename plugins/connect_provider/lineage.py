"""OpenLineage for the provider's operators: what a task read from Connect and what it wrote.

Airflow's OpenLineage provider (``apache-airflow-providers-openlineage``, this provider's optional
extra ``lineage``) asks each operator for ``get_openlineage_facets_on_complete(task_instance)``
after a task succeeds and sends the datasets it returns to the data platform (Marquez, DataHub,
a file, ...). :class:`ConnectLineageMixin` gives the operators that method; the work is here, so
the operators stay what they are. Without the OpenLineage provider nothing here is imported and
nothing is sent.

Datasets follow OpenLineage's naming (namespace = where, name = what in it):

* a Connect object: namespace ``cloudblue-connect://<API host>`` (e.g.
  ``cloudblue-connect://api.connect.cloudblue.com``, the port kept when not the default), name
  its collection path and id: ``usage/files/UF-...``, ``assets/AS-...``;
* the Parquet file an export wrote: namespace ``file`` (a local path) or ``<scheme>://<bucket>``
  (``s3://billing-lake``), name its path; with the ``schema`` facet (every column and its Arrow
  type, read from the file's footer) and the ``outputStatistics`` facet (row count, bytes).

* ``ConnectUsageRecordsToParquetOperator``: input the usage file, output the Parquet file, both
  taken from the export's manifest entry (what was published, not what was asked), so a mapped
  task instance reports its own file.
* The request operators: output the asset the request acts on (:func:`acted_on_asset`).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

NAMESPACE_SCHEME = "cloudblue-connect"
_DEFAULT_PORTS = {"https": 443, "http": 80}


def connect_namespace(base_url: str) -> str:
    """``cloudblue-connect://<host[:port]>`` of a Connect API base URL."""
    parts = urlsplit(base_url)
    host = parts.hostname or "api.connect.cloudblue.com"
    port = parts.port
    keep_port = port is not None and port != _DEFAULT_PORTS.get(parts.scheme)
    return f"{NAMESPACE_SCHEME}://{host}:{port}" if keep_port else f"{NAMESPACE_SCHEME}://{host}"


def storage_dataset_id(path: Any) -> tuple[str, str]:
    """(namespace, name) of a file by OpenLineage's naming: ``file`` + path, or ``scheme://bucket`` + key."""
    text = str(path)
    parts = urlsplit(text)
    if parts.scheme in ("", "file", "local"):
        return "file", parts.path if parts.scheme else text
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}", parts.path.lstrip("/")


def parquet_fields(path: Any) -> list[tuple[str, str]]:
    """(column, Arrow type) of a Parquet file, read from its footer only."""
    import pyarrow.parquet as pq
    from airflow.sdk import ObjectStoragePath

    target = path if isinstance(path, ObjectStoragePath) else ObjectStoragePath(str(path))
    with target.open("rb") as handle:
        schema = pq.read_schema(handle)
    return [(f.name, str(f.type)) for f in schema]


def usage_export_lineage(operator: Any) -> Any:
    """The OperatorLineage of one usage export: the usage file in, the Parquet file out."""
    from airflow.providers.common.compat.openlineage.facet import (
        Dataset,
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
        SchemaDatasetFacet,
        SchemaDatasetFacetFields,
    )
    from airflow.providers.openlineage.extractors import OperatorLineage

    from connect_provider.usage.manifest import read_entry
    from connect_provider.usage.writer import DatasetLayout

    file_id = operator._file_id()
    namespace = connect_namespace(operator.hook.settings.base_url)
    source = Dataset(namespace=namespace, name=f"usage/files/{file_id}")
    entry = read_entry(DatasetLayout(operator.destination or None), file_id)
    if entry is None:  # nothing published (cannot happen after a success; say so rather than guess)
        log.warning("No manifest entry for %s: OpenLineage gets the input only", file_id)
        return OperatorLineage(inputs=[source])
    out_namespace, out_name = storage_dataset_id(entry.path)
    fields = [SchemaDatasetFacetFields(name=n, type=t) for n, t in parquet_fields(entry.path)]
    target = OutputDataset(
        namespace=out_namespace,
        name=out_name,
        facets={"schema": SchemaDatasetFacet(fields=fields)},
        outputFacets={
            "outputStatistics": OutputStatisticsOutputDatasetFacet(rowCount=entry.rows, size=entry.bytes)
        },
    )
    return OperatorLineage(inputs=[source], outputs=[target])


def acted_on_asset(operator: Any) -> tuple[str, str] | None:
    """(collection, id) of the asset a request operator acts on, from its rendered arguments.

    An asset request names its asset (``asset_id``, else ``asset_external_id``); a vendor decision
    names a request, whose asset is read from Connect (one call). Not from XCom: OpenLineage asks
    in a process of its own, where the task's XCom cannot be pulled.
    """
    for attribute, collection in (("asset_id", "assets"), ("asset_external_id", "assets/external_id")):
        value = getattr(operator, attribute, None)
        if isinstance(value, str) and value.strip():
            return collection, value.strip()
    request_id = getattr(operator, "request_id", None)
    if isinstance(request_id, str) and request_id.strip():
        asset = (operator.hook.get_request(request_id.strip()).get("asset") or {}).get("id")
        if asset:
            return "assets", str(asset)
    return None


def request_lineage(operator: Any) -> Any:
    """The OperatorLineage of a request operator: the asset it acted on, as its output."""
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.openlineage.extractors import OperatorLineage

    found = acted_on_asset(operator)
    if found is None:
        return OperatorLineage()
    collection, asset = found
    namespace = connect_namespace(operator.hook.settings.base_url)
    return OperatorLineage(outputs=[Dataset(namespace=namespace, name=f"{collection}/{asset}")])


def operator_lineage(operator: Any, task_instance: Any) -> Any:
    """What :class:`ConnectLineageMixin` returns; ``None`` when OpenLineage is not installed."""
    try:
        import airflow.providers.openlineage  # noqa: F401
    except ImportError:
        return None
    if hasattr(operator, "destination") and hasattr(operator, "usage_file_id"):
        return usage_export_lineage(operator)
    return request_lineage(operator)


class ConnectLineageMixin:
    """Gives an operator ``get_openlineage_facets_on_complete``; the work is :func:`operator_lineage`."""

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Datasets for OpenLineage once the task succeeded (see :mod:`connect_provider.lineage`)."""
        return operator_lineage(self, task_instance)
