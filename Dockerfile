# The shipper image for docker-compose.yml: `docker build -t kafka-log-shipper:latest .`
# (the tests never build it; CI has no Docker engine).
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 shipper \
 && mkdir -p /var/lib/shipper /var/log/app \
 && chown shipper /var/lib/shipper
WORKDIR /opt/shipper
COPY pyproject.toml README.md ./
COPY shipper ./shipper
COPY actors ./actors
RUN pip install --no-cache-dir .
USER shipper
WORKDIR /var/lib/shipper
ENV RAY_AUTH_MODE=token
EXPOSE 8080 9464
STOPSIGNAL SIGTERM
ENTRYPOINT ["shipper"]
CMD ["run", "--config", "/etc/shipper/config.yaml"]
