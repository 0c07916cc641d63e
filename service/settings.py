"""Every setting of the service, from environment variables prefixed CAE_ (e.g. CAE_MAX_BATCH_SIZE=64)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.memory import default_memory_budget_mb

# The shipped models: models/ beside this package in a checkout; the container sets CAE_MODEL_DIR.
SHIPPED_MODELS = Path(__file__).resolve().parent.parent / "models"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAE_", frozen=True)

    model_dir: Path = Field(SHIPPED_MODELS, description="folder with manifest.json and the ONNX files")
    models: str = Field("", description="which of the folder's models to serve, by the names `cae export --keep` takes: "
                        "autoencoder names and `colorizer`, separated by commas (e.g. pae_k256_w16_l3,colorizer); "
                        "empty: all. The default autoencoder is the folder's if it is served, else the first named")
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
    inference_timeout_s: float = Field(30.0, gt=0, description="a request's deadline, from its admission: work that cannot "
                                       "finish in time is refused (503) before it starts, work still running at the deadline "
                                       "is stopped and answered 504")
    memory_budget_mb: int = Field(default_factory=default_memory_budget_mb, ge=1,
                                  description="memory all admitted requests may use together, estimated before each runs "
                                  "(413 if one request can never fit, 503 + Retry-After while others hold it); "
                                  "default: half of the machine's (or cgroup's) memory")
    tile_memory_mb: int = Field(512, ge=1, description="most memory one session run may use: larger images run in "
                                "overlapping tiles (same output), one tile per run, other requests' runs in between")
    colorize_chroma_scale: float = Field(5.0, ge=1, description="/colorize on images larger than 64x64 predicts colour "
                                         "at 1/scale of each side (colour is low-frequency) and lays it under the "
                                         "full-resolution luma; 1: full resolution")
    colorize_max_work_pixels: int = Field(128 * 256, ge=1024, description="the largest resolution (pixels) /colorize "
                                          "predicts colour at; larger images are scaled down further for that step")
    max_refine_steps: int = Field(100, ge=0, description="most Adam steps `refine` may ask of /encode and /reconstruct "
                                  "(each costs about a decoder's forward and backward pass on the whole image)")
    max_json_values: int = Field(1 << 22, ge=1, description="most numbers in one JSON response (latents, V2 tensors): "
                                 "413 before running beyond")
    body_timeout_s: float = Field(60.0, gt=0, description="a request body must arrive within this many seconds of its "
                                  "headers (408 beyond), so slow senders cannot hold the service")
    header_timeout_s: float = Field(10.0, gt=0, description="request headers must arrive within this many seconds of "
                                    "the connection opening or the last response (python -m service and cae serve)")
    api_key: SecretStr | None = Field(None, description="if set, inference endpoints need Authorization: Bearer <key>")
    insecure: bool = Field(False, description="serve requests arriving on a non-loopback address without an API key "
                           "(e.g. behind an authenticating proxy); otherwise they are refused with 403")
    warmup: bool = Field(True, description="run each model once before reporting ready")
    grpc_port: int = Field(0, ge=0, le=65535, description="serve the Open Inference Protocol over gRPC on this port "
                           "too (inference.GRPCInferenceService; the container uses 8001); 0: off")
    grpc_host: str | None = Field(None, description="address gRPC binds; default: the HTTP address under `cae serve`, "
                                  "loopback otherwise")

    @property
    def served_models(self) -> list[str] | None:
        """CAE_MODELS as a list of names, None for all."""
        return self.models.replace(",", " ").split() or None

    def exposed_without_key(self, host: str) -> bool:
        """Serving on `host` would answer the network with no key and without CAE_INSECURE (refused)."""
        return not is_loopback(host) and self.api_key is None and not self.insecure

    @field_validator("api_key")
    @classmethod
    def _key_not_empty(cls, key: SecretStr | None) -> SecretStr | None:
        # CAE_API_KEY= (set but empty) is a mistake, not "no key": an empty bearer token must never authenticate.
        if key is not None and not key.get_secret_value().strip():
            raise ValueError("CAE_API_KEY is set but empty: set a key, or unset the variable to serve without one")
        return key


# On a GPU a batch of 256 costs about what one image costs (the GPU serving issue's onnxruntime table: encoder
# 2,894 images/s at batch 1, 247,286 at batch 256 on an H100), so there batches are larger and worth a short
# wait. Used where the CUDA provider is active, for the settings not given explicitly.
GPU_BATCHING = {"max_batch_size": 256, "max_batch_wait_ms": 2.0, "batch_min_run_ms": 0.0}


def batching_for(settings: Settings, providers: list[str]) -> Settings:
    """`settings` with the GPU's batching defaults where the CUDA provider runs the models, except those set
    explicitly (CAE_MAX_BATCH_SIZE and the others keep their value)."""
    if "CUDAExecutionProvider" not in providers:
        return settings
    return settings.model_copy(update={k: v for k, v in GPU_BATCHING.items() if k not in settings.model_fields_set})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
