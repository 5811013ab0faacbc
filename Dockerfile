# The controller image (ECS Fargate, ARM64: infra/components/controller.py IMAGE_PLATFORM).
# Build: docker build --platform linux/arm64 -t emailplatform-controller .
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml requirements-lambda.txt ./
# Only what the controller runs (import-linter keeps it so): the controller, the core it drives,
# the runbook steps automatic failover reuses, and the admin CLI for `ecs execute-command`
# (`emailplatform-admin`); no Lambda handlers, embedded stack or Pulumi program.
COPY config ./config
COPY core ./core
COPY controller ./controller
COPY runbooks ./runbooks
COPY ops/__init__.py ops/cli.py ops/client.py ./ops/
# The pinned runtime dependencies (the same lock as the Lambda artifact), then our packages alone:
# an image built twice from one commit holds the same versions (tests/deploy/test_image_lock.py).
RUN pip install --no-cache-dir --no-deps -r requirements-lambda.txt \
    && pip install --no-cache-dir --no-deps . && useradd --uid 10001 controller
USER controller
EXPOSE 9102
# SIGTERM (ECS stop) → finish or abandon the current item, release the lease, exit
STOPSIGNAL SIGTERM
CMD ["python", "-m", "controller"]
