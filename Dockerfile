# IMS fusion gateway: the gateway service (SIP on 5060 UDP/TCP, operations API on 8080).
# Build: docker build -t ims-gateway .    Run: docker run --network host ims-gateway
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so a code change does not re-install them.
COPY pyproject.toml README.md ./
COPY gateway/__init__.py gateway/__init__.py
COPY edge_agent/__init__.py edge_agent/__init__.py
RUN pip install --no-cache-dir .

COPY gateway gateway
COPY edge_agent edge_agent
COPY config config
COPY dialplans dialplans
RUN pip install --no-cache-dir --no-deps . \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin gateway \
    && mkdir -p /app/var && chown gateway:gateway /app/var

USER 10001
EXPOSE 5060/udp 5060/tcp 8080/tcp
STOPSIGNAL SIGTERM
CMD ["gateway", "run", "--config", "/app/config/container.yaml"]
