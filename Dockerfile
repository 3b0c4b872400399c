# One image for the web (gunicorn) and the workers (RQ). Build: docker build -t campaigns .
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip build
COPY pyproject.toml README.md ./
COPY webapp ./webapp
COPY jobs ./jobs
COPY templates ./templates
COPY static ./static
COPY migrations ./migrations
RUN python -m build --wheel --outdir /dist

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 APP_ENV=production INSTANCE_PATH=/var/lib/campaigns
COPY --from=build /dist/*.whl /tmp/
RUN pip install --no-cache-dir /tmp/*.whl && rm /tmp/*.whl \
 && useradd --create-home --uid 10001 campaigns \
 && mkdir -p /var/lib/campaigns && chown campaigns /var/lib/campaigns
USER campaigns
WORKDIR /home/campaigns
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
# `campaigns serve` applies migrations, then runs gunicorn; the worker service runs `campaigns worker`.
CMD ["campaigns", "serve"]
