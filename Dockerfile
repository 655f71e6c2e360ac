# daytwo: one image for every process (agent, worker, sink, topics, broker).
#
#   docker build -t daytwo:0.1.0 .
#
# The base is pinned by exact tag (CPython patch release and Debian release); pin it by
# digest too in a registry you control (`docker buildx imagetools inspect` prints it).
# Runtime dependencies come from constraints.txt, which pins every one of them
# (tests/test_dockerfile.py checks the closure), and no dev extras are installed.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/daytwo
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY pipeline pipeline
COPY agents agents
COPY schemas schemas
RUN /opt/daytwo/bin/pip install -c constraints.txt .

FROM ${PYTHON_IMAGE}
# git: the PR sink commits and pushes with the git CLI.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 daytwo \
    && useradd --uid 10001 --gid 10001 --home-dir /home/daytwo --create-home --shell /usr/sbin/nologin daytwo \
    && git config --system --add safe.directory /gitops
COPY --from=build /opt/daytwo /opt/daytwo
ENV PATH=/opt/daytwo/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/daytwo
USER 10001:10001
WORKDIR /home/daytwo
EXPOSE 9464
# Healthy when the process serves /metrics on the port its settings name (DAYTWO_* and
# DAYTWO_CONFIG); a process with metrics off (metrics_port 0, e.g. `daytwo topics`) is
# healthy by definition.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request\nfrom pipeline.settings import Settings\nport = Settings().metrics_port\nif port:\n    urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=4).read(1)\nsys.exit(0)"]
ENTRYPOINT ["daytwo"]
CMD ["--help"]
