"""Rules of model.smk: the model as safetensors."""

from __future__ import annotations

from .. import models
from .common import Job, log, stage


@stage
def prepare_model(job: Job) -> None:
    """A hub id or folder copied as safetensors, or a packaged GGUF dequantised once."""
    models.prepare_model(job.output[0], path=job.params.path, gguf_package=job.params.gguf_package)
    log.info("model saved to %s", job.output[0])
