# Meterline proxy image. Stateless: all shared state lives in Redis (REDIS_URL).
#   docker build -t meterline:local .
#   docker run -p 127.0.0.1:8080:8080 -e REDIS_URL=redis://redis:6379/0 meterline:local
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

# Dependencies first, so code edits don't re-download the wheels.
COPY pyproject.toml README.md* ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
      > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

COPY proxy ./proxy
RUN pip install --no-deps . && rm -rf /app/build /app/*.egg-info /tmp/requirements.txt

COPY rules /etc/meterline
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin meterline
USER meterline

ENV MET_HOST=0.0.0.0 \
    MET_PORT=8080 \
    MET_CONFIG_DIR=/etc/meterline
EXPOSE 8080

HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]

CMD ["meterline", "serve", "--host", "0.0.0.0"]
