"""Settings, read once from ``PREANNOTATE_*`` environment variables (and a ``.env`` file)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.base import DetectorOptions
from models.registry import DEFAULT_MODEL_SPEC
from service.pipeline.options import MediaLimits, SamplingMode, SamplingOptions


class Settings(BaseSettings):
    """Every knob and limit; command-line flags override these per run."""

    model_config = SettingsConfigDict(env_prefix="PREANNOTATE_", env_file=".env", extra="ignore")

    # Model and inference
    model: str = Field(DEFAULT_MODEL_SPEC, description="default model spec (builtin:NAME, onnx:PATH, hf:DIR_OR_ID)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int | None = Field(None, ge=1, description="frames per forward pass; unset = CPU 1, CUDA 16")
    input_size_px: int | None = Field(None, ge=32, le=8192, description="longest side fed to the model")
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    cpu_threads: int | None = Field(None, ge=1, description="runtime threads on CPU; unset = all cores")
    fp16: bool = Field(True, description="half precision on CUDA where the model allows it")

    # Sampling
    fps: float = Field(1.0, ge=0.0, le=1000.0, description="frames per second sampled; 0 = every frame")
    sampling: SamplingMode = SamplingMode.EXACT
    prefetch_frames: int = Field(16, ge=1, le=1024, description="decoded frames queued ahead of the model")

    # Limits (each refuses bad input with a clear error before any decoding)
    max_file_bytes: int = Field(20 * 1024**3, ge=1)
    max_image_pixels: int = Field(100_000_000, ge=1)
    max_frames_per_slot: int = Field(100_000, ge=1)
    max_video_duration_s: float = Field(6 * 3600.0, gt=0)

    @model_validator(mode="after")
    def _check_model(self) -> Settings:
        if not self.model.strip():
            raise ValueError("model must not be empty")
        return self

    def media_limits(self) -> MediaLimits:
        return MediaLimits(
            max_file_bytes=self.max_file_bytes,
            max_pixels=self.max_image_pixels,
            max_frames=self.max_frames_per_slot,
            max_duration_s=self.max_video_duration_s,
        )

    def sampling_options(self) -> SamplingOptions:
        return SamplingOptions(fps=self.fps, mode=self.sampling)

    def detector_options(self) -> DetectorOptions:
        return DetectorOptions(
            device=self.device,
            batch_size=self.batch_size,
            input_size_px=self.input_size_px,
            num_threads=self.cpu_threads,
            fp16=self.fp16,
        )


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
