# daytwo image: one image for agent, worker and sink. Validated and hardened in issue 7.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY pipeline pipeline
COPY agents agents
COPY schemas schemas
RUN pip install --no-cache-dir -c constraints.txt . && useradd --uid 10001 --no-create-home daytwo
USER 10001
ENTRYPOINT ["daytwo"]
