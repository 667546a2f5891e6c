# CPU image for the command line. The CUDA image (onnxruntime-gpu, CUDA torch, non-root, read-only
# root filesystem, healthcheck) comes with the deployment issue; this one is not built in CI.
FROM python:3.11-slim

# opencv-python needs libGL and glib at import time
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 app
WORKDIR /app
COPY pyproject.toml README.md ./
COPY models ./models
COPY service ./service
RUN pip install --no-cache-dir .

USER app
ENTRYPOINT ["preannotate"]
CMD ["--help"]
