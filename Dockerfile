FROM python:3.11-slim
WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY lakehook ./lakehook
COPY server ./server
COPY pipeline ./pipeline
COPY actions ./actions
RUN pip install --no-cache-dir .
EXPOSE 8090
USER nobody
CMD ["lakehook", "serve"]
