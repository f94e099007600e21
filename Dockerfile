# The mailqueue image: one image, the command picks the role (worker, dashboard, run).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY mailqueue ./mailqueue
COPY dashboard ./dashboard
COPY templates ./templates
COPY static ./static
# Editable: the dashboard reads templates/ and static/ beside its package.
RUN pip install --no-cache-dir --editable .
ENTRYPOINT ["mailqueue"]
