# The Airflow image of this project: the official Airflow image with this provider package (and the
# Connect sandbox, which ships in the same distribution) installed at build time, pinned by the
# project's lock file. docker-compose.yaml builds it; the Helm chart runs it (see docs/deployment.md).
#
#   docker build -t airflow-provider-cloudblue-connect:local .
#
# The lock file (requirements/lock.txt) is used as constraints, so the image runs exactly the
# versions the test suite ran with; AIRFLOW_VERSION must be the apache-airflow version it pins.
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}
ARG AIRFLOW_VERSION

# The data folder (usage Parquet, manifests), the empty plugins folder and the build folder:
# owned by the airflow user (group 0, as the image requires), so that named volumes mounted there
# start writable and pip can build the package in place.
USER root
RUN mkdir -p /opt/airflow/data /opt/airflow/no-plugins /opt/airflow/src \
    && chown -R airflow:0 /opt/airflow/data /opt/airflow/no-plugins /opt/airflow/src \
    && chmod -R g+rwX /opt/airflow/data /opt/airflow/no-plugins
USER airflow

# The package build needs only these (see .dockerignore).
WORKDIR /opt/airflow/src
COPY --chown=airflow:0 pyproject.toml README.md ./
COPY --chown=airflow:0 requirements/lock.txt requirements/lock.txt
COPY --chown=airflow:0 plugins/connect_provider plugins/connect_provider
COPY --chown=airflow:0 include/connect_sandbox include/connect_sandbox

# A regular (not editable) install of the project with what the DAGs and the sandbox service need:
# the PostgreSQL outbox, DuckDB for the load DAG, the sandbox's server stack; apache-airflow is
# named so that pip keeps the image's Airflow instead of resolving another one.
RUN pip install --no-cache-dir \
        "apache-airflow==${AIRFLOW_VERSION}" \
        ".[postgres,duckdb,sandbox]" \
        --constraint requirements/lock.txt \
    && python -c "import connect_provider, connect_sandbox; print('provider', connect_provider.__version__)"

# DAGs (with their glue, dags/connect_project) and the project's SQL (the demo rows) baked in, so the
# image runs as it is (Kubernetes); docker-compose.yaml mounts ./dags and ./include over them for
# development. The outbox DDL ships inside the provider package.
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 include/sql /opt/airflow/include/sql
ENV CONNECT_SQL_DIR=/opt/airflow/include/sql \
    CONNECT_DATA_DIR=/opt/airflow/data \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/airflow/no-plugins
WORKDIR /opt/airflow
