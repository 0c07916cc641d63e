"""What the sync and async clients share: building requests, reading responses, the retry policy.

No I/O here: `Client` and `AsyncClient` only differ in how they send a request and sleep between tries.
"""

from __future__ import annotations

import base64
import io
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import httpx
import numpy as np
from PIL import Image

from cae_client.errors import APIError, TransportError, error_for

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
RETRY_STATUSES = {429, 503}
MAX_RETRY_AFTER_S = 30.0


@dataclass(frozen=True)
class ImageResult:
    image: Image.Image
    model: str
    version: str


@dataclass(frozen=True)
class LatentResult:
    latent: np.ndarray  # float32 (C, h, w)
    model: str
    version: str
    refine: int = 0  # Adam steps it was refined by against the decoder (0: the encoder's own)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.latent.shape)

    def to_json(self) -> dict:
        """The body /decode takes (and /encode returned)."""
        return {"shape": list(self.latent.shape), "latent": self.latent.ravel().tolist()}


def image_bytes(image: ImageInput) -> tuple[bytes, str]:
    """Any accepted input -> (bytes, content type). Files and bytes are sent as they are, arrays as PNG."""
    if isinstance(image, (str, os.PathLike)):
        data = Path(image).read_bytes()
        return data, _sniff(data)
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        return data, _sniff(data)
    if isinstance(image, np.ndarray):
        image = _array_to_pil(image)
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, "PNG")
        return buf.getvalue(), "image/png"
    raise TypeError(f"expected a path, bytes, a PIL image or a numpy array, got {type(image).__name__}")


def _array_to_pil(arr: np.ndarray) -> Image.Image:
    """HWC uint8 (or HW) as is; CHW float in [0, 1] (what the models use) converted."""
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3, 4):
        arr = arr.transpose(1, 2, 0)
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise TypeError(f"arrays must be uint8 (HWC, 0-255) or float (CHW or HWC, 0-1), got {arr.dtype}")
        arr = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise TypeError(f"expected an image array (HW, HWC or CHW), got shape {arr.shape}")
    return Image.fromarray(arr)


def _sniff(data: bytes) -> str:
    for magic, kind in ((b"\x89PNG", "image/png"), (b"\xff\xd8", "image/jpeg"), (b"GIF8", "image/gif"), (b"BM", "image/bmp")):
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def image_request(path: str, images: list[ImageInput], params: dict) -> dict[str, Any]:
    """kwargs for httpx's request(): one image as the raw body, several as multipart parts (kept in order)."""
    encoded = [image_bytes(i) for i in images]
    if len(encoded) == 1:
        data, content_type = encoded[0]
        return {"method": "POST", "url": path, "content": data, "headers": {"Content-Type": content_type}, "params": params}
    files = [("image", (f"{i}", data, content_type)) for i, (data, content_type) in enumerate(encoded)]
    return {"method": "POST", "url": path, "files": files, "params": params}


def raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        err = response.json()["error"]
        code, message = err.get("code", "error"), err.get("message", response.text)
    except Exception:
        code, message = "error", response.text[:500] or response.reason_phrase
    raise error_for(response.status_code, code, message)


def parse_images(response: httpx.Response) -> list[ImageResult]:
    raise_for_error(response)
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        return [ImageResult(_open(base64.b64decode(b)), body["model"], str(body["version"])) for b in body["images"]]
    return [ImageResult(_open(response.content), response.headers.get("x-model", ""), response.headers.get("x-model-version", ""))]


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def parse_latents(response: httpx.Response) -> list[LatentResult]:
    raise_for_error(response)
    body = response.json()
    return [LatentResult(np.asarray(r["latent"], np.float32).reshape(r["shape"]), body["model"], str(body["version"]),
                         int(body.get("refine") or 0)) for r in body["results"]]


def latent_body(latent: LatentResult | np.ndarray | dict) -> dict:
    """The /decode body; an `encode` result names its autoencoder, so the same one decodes it."""
    if isinstance(latent, LatentResult):
        return {**latent.to_json(), **({"model": latent.model} if latent.model else {})}
    if isinstance(latent, np.ndarray):
        if latent.ndim != 3:
            raise ValueError(f"a latent is (C, h, w), got shape {latent.shape}")
        return {"shape": list(latent.shape), "latent": latent.astype(np.float32).ravel().tolist()}
    return dict(latent)


@dataclass(frozen=True)
class RetryPolicy:
    """Retry connection errors and 429/503 (honouring Retry-After); never 4xx validation errors."""

    max_retries: int = 3
    backoff_s: float = 0.25  # doubled after each try, with jitter

    def delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            retry_after = response.headers.get("retry-after")
            if retry_after is not None:
                try:
                    return min(max(float(retry_after), 0.0), MAX_RETRY_AFTER_S)
                except ValueError:
                    pass
        return self.backoff_s * (2**attempt) * (0.5 + random.random() / 2)

    def should_retry(self, attempt: int, response: httpx.Response | None, error: Exception | None) -> bool:
        if attempt >= self.max_retries:
            return False
        if error is not None:
            return isinstance(error, (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError))
        return response is not None and response.status_code in RETRY_STATUSES


def transport_error(error: Exception) -> Exception:
    if isinstance(error, httpx.TimeoutException):
        from cae_client.errors import Timeout

        return Timeout(0, "client_timeout", f"no answer within the client's timeout: {error}")
    return TransportError(f"cannot reach the service: {error}")


__all__ = ["APIError", "ImageInput", "ImageResult", "LatentResult", "RetryPolicy", "DEFAULT_TIMEOUT"]
