"""Usage records to Parquet: the schema, the atomic partitioned writer, the manifest, the exporter.

Nothing here needs an Airflow task context: the operators, the DAGs and the benchmark all call
:func:`connect_provider.usage.exporter.export_usage_file`. What happens downstream of the dataset
(loading it into a database) is not the provider's: this project does it beside its DAGs
(``dags/connect_project/usage_load.py``).
"""
