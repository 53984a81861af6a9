# nodegraph, CPU image (slim): the HTTP + websocket server and editor on port 8188.
#   docker build -t nodegraph .
#   docker run -p 8188:8188 -e NODEGRAPH_AUTH_TOKEN=change-me -v "$HOME/ComfyUI/models:/data/models:ro" nodegraph
# Stages: the editor's pinned canvas library (npm ci), the wheel (python -m build), the runtime.

FROM node:20-slim AS editor
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund

FROM python:3.11-slim AS wheel
WORKDIR /src
RUN pip install --no-cache-dir build==1.2.2
COPY . .
COPY --from=editor /src/web/node_modules web/node_modules
RUN python -m build --outdir /dist .

FROM python:3.11-slim
# The CPU build of torch (PyPI's default Linux torch is a CUDA build of several GB).
ARG TORCH_VERSION=2.5.1
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
COPY --from=wheel /dist/*.whl /tmp/
RUN pip install --no-cache-dir /tmp/nodegraph-*.whl && rm /tmp/nodegraph-*.whl \
    && useradd --create-home --uid 1000 nodegraph \
    && mkdir -p /data/models /data/input /data/output /data/user /data/temp \
    && chown -R nodegraph:nodegraph /data
ENV NODEGRAPH_HOME=/data PYTHONUNBUFFERED=1
# models may be mounted read-only: nodegraph never writes into a models folder
VOLUME ["/data/models", "/data/input", "/data/output", "/data/user"]
USER 1000:1000
WORKDIR /data
EXPOSE 8188
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:8188/system_stats', headers={'Authorization': 'Bearer ' + os.environ.get('NODEGRAPH_AUTH_TOKEN', '')}), timeout=5)"]
# The auth token comes from NODEGRAPH_AUTH_TOKEN (the server refuses a non-loopback bind without one).
CMD ["nodegraph", "serve", "--listen", "0.0.0.0", "--port", "8188"]
