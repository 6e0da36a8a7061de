# syntax=docker/dockerfile:1
# Croupier node image. Production runs with DATABASE_URL and REDIS_URL set; the embedded
# PostgreSQL is for laptops and is not used when DATABASE_URL is given.

FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/croupier
COPY pyproject.toml README.md ./
COPY protocol ./protocol
COPY server ./server
RUN /opt/croupier/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/croupier/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/croupier --create-home croupier
COPY --from=build /opt/croupier /opt/croupier
ENV PATH=/opt/croupier/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CROUPIER_DATA_DIR=/var/lib/croupier
USER croupier
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["croupier"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
