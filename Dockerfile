# syntax=docker/dockerfile:1
# The Flywheel model service: `flywheel serve` (uvicorn, serving.app:create_app) on port 8080, as a non-root user.
# Build: docker build -t flywheel:latest .      Run: see `flywheel service deploy` with a docker stack.
# The stack comes at run time (FLYWHEEL_STACK: a shipped stack's name or a mounted YAML file); secrets come
# from the environment the container is given, never from the image.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: the locked runtime dependencies in /app/.venv (no dev tools, no compilers in the final image)
FROM ${PYTHON_IMAGE} AS builder
RUN pip install --no-cache-dir "uv==0.13.9"
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# dependencies first: this layer is rebuilt only when the lock file changes
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
# then the project itself, installed (not editable) so the final image needs no source tree
COPY flywheel/ flywheel/
COPY flows/ flows/
COPY serving/ serving/
COPY stacks/ stacks/
COPY steps/ steps/
RUN uv sync --frozen --no-dev --no-editable

# ---- runtime
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 flywheel \
 && useradd --system --uid 10001 --gid flywheel --home-dir /home/flywheel --create-home flywheel
COPY --from=builder --chown=10001:10001 /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1 \
    FLYWHEEL_HOME=/home/flywheel/.flywheel \
    MPLCONFIGDIR=/tmp/matplotlib \
    MLFLOW_DISABLE_TELEMETRY=true \
    WHYLOGS_NO_ANALYTICS=True
USER 10001:10001
WORKDIR /home/flywheel
EXPOSE 8080
# healthy once the model is loaded: /ready answers 503 before (urlopen raises, exit 1)
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ready', timeout=4)"]
# workers, timeouts and connection limits: the stack's model_deployer (its `server` block); `flywheel service
# deploy` runs its own uvicorn command with the same values instead. The image serves no model by default:
# run it with -e FLYWHEEL_MODEL=NAME (the docker and kubernetes deployers set it, one container per model)
CMD ["flywheel", "serve", "--host", "0.0.0.0", "--port", "8080"]
