# The controller image (ECS Fargate). Build: docker build -t emailplatform-controller .
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml ./
COPY config ./config
COPY core ./core
COPY controller ./controller
COPY handlers ./handlers
COPY local ./local
COPY runbooks ./runbooks
COPY infra ./infra
RUN pip install --no-cache-dir . && useradd --uid 10001 controller
USER controller
EXPOSE 9102
# SIGTERM (ECS stop) → finish or abandon the current item, release the lease, exit
STOPSIGNAL SIGTERM
CMD ["python", "-m", "controller"]
