"""Every setting of the service, from environment variables prefixed CAE_ (e.g. CAE_MAX_BATCH_SIZE=64)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# The shipped models: models/ beside this package in a checkout; the container sets CAE_MODEL_DIR.
SHIPPED_MODELS = Path(__file__).resolve().parent.parent / "models"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAE_", frozen=True)

    model_dir: Path = Field(SHIPPED_MODELS, description="folder with manifest.json and the ONNX files")
    providers: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when onnxruntime has it, else CPU; cuda: fail at startup unless CUDA loads")
    intra_op_threads: int = Field(0, ge=0, description="onnxruntime threads per session run (0: all cores but one, "
                                  "which is left to the event loop: HTTP, image decoding and encoding overlap inference)")
    batching: bool = Field(True, description="group concurrent requests for a model into one session run")
    max_batch_size: int = Field(32, ge=1, description="most images in one grouped session run")
    max_batch_wait_ms: float = Field(0.0, ge=0, description="extra wait for others to join a batch (0: take what is queued)")
    batch_min_run_ms: float = Field(0.25, ge=0, description="requests whose session run is expected shorter skip the "
                                    "batching queue (it costs more than grouping saves on such runs); 0: queue all")
    inline_ms: float = Field(2.0, ge=0, description="session runs expected to be shorter run on the event loop "
                             "(a thread hand-off costs more than a small run); longer ones in a thread")
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1, description="request body limit (413 beyond), chunked bodies too")
    max_pixels: int = Field(4096 * 4096, ge=1, description="largest image (width x height) decoded; checked from the header")
    max_images_per_request: int = Field(64, ge=1, description="most images in one batch request")
    max_concurrency: int = Field(256, ge=1, description="requests admitted at once (in progress or queued); 503 beyond")
    inference_timeout_s: float = Field(30.0, gt=0, description="a request waiting longer for inference gets 504")
    api_key: SecretStr | None = Field(None, description="if set, inference endpoints need Authorization: Bearer <key>")
    warmup: bool = Field(True, description="run each model once before reporting ready")
