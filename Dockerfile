# Cantata on a CUDA machine: one image for every role (README "Scaling out").
#   docker build -t cantata .
#   docker run --gpus all -p 8080:8080 -v cantata-models:/models -v cantata-data:/data cantata serve --host 0.0.0.0
# compose.yaml runs the scaled-out topology (PostgreSQL, S3, API nodes, one worker per GPU).
# Not built by CI (no Docker engine on our machines): it runs the same commands as the tests
# (tests/clusterkit.py: `cantata serve --no-worker`, `cantata worker`).
FROM nvidia/cuda:12.8.1-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    CANTATA_CHECKPOINTS=/models CANTATA_DATA_DIR=/data
# Python 3.11 (pyproject: >=3.11,<3.12); libsndfile, FFmpeg and soxr come inside their wheels.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/cantata
ENV PATH=/opt/cantata/bin:$PATH

WORKDIR /src
# The pinned dependencies first (a layer that survives code changes), torch before the rest so
# that pip keeps the pinned build, as run.sh does.
COPY pyproject.toml README.md ./
RUN pip install --upgrade pip \
 && pip install "torch==2.13.0" \
 && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt
COPY cantata ./cantata
RUN pip install --no-deps . && rm -rf /src/build

# Non-root: the server needs no privileges; checkpoints and data live on volumes it owns.
RUN useradd --system --uid 10001 --create-home --home-dir /home/cantata cantata \
 && mkdir -p /models /data && chown cantata:cantata /models /data
USER cantata
WORKDIR /home/cantata
VOLUME ["/models", "/data"]
EXPOSE 8080

ENTRYPOINT ["cantata"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
