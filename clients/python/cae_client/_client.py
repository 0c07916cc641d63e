"""`Client` and `AsyncClient`: the same methods, blocking or awaitable, over one shared request layer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from cae_client import _base
from cae_client._base import DEFAULT_TIMEOUT, ImageInput, ImageResult, LatentResult, RetryPolicy


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _image_params(size: str, format: str | None = None, model: str | None = None, refine: int = 0) -> dict[str, str]:
    """Query parameters; `model`: which autoencoder of the service's family (None: its default); `refine`:
    Adam steps refining each latent against the decoder (0: the encoder's latent as it is)."""
    return {"size": size, **({"format": format} if format else {}), **({"model": model} if model else {}),
            **({"refine": str(refine)} if refine else {})}


class Client:
    """Blocking client.

        with Client(base_url="http://localhost:8000") as cae:
            cae.reconstruct("cat.png").image.save("out.png")
    """

    def __init__(self, *, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None,
                 timeout: float | httpx.Timeout = DEFAULT_TIMEOUT, retries: RetryPolicy = RetryPolicy(),
                 transport: httpx.BaseTransport | None = None):
        self.retries = retries
        self._http = httpx.Client(base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, **request: Any) -> httpx.Response:
        attempt = 0
        while True:
            response, error = None, None
            try:
                response = self._http.request(**request)
            except httpx.TransportError as e:
                error = e
            if not self.retries.should_retry(attempt, response, error):
                if error is not None:
                    raise _base.transport_error(error) from error
                return response
            time.sleep(self.retries.delay(attempt, response))
            attempt += 1

    # Images in, images out.
    def reconstruct(self, image: ImageInput, *, size: str = "native", format: str | None = None,
                    model: str | None = None, refine: int = 0) -> ImageResult:
        return self.reconstruct_batch([image], size=size, format=format, model=model, refine=refine)[0]

    def reconstruct_batch(self, images: list[ImageInput], *, size: str = "native", format: str | None = None,
                          model: str | None = None, refine: int = 0) -> list[ImageResult]:
        return _base.parse_images(self._send(**_base.image_request("/reconstruct", images, _image_params(size, format, model, refine))))

    def colorize(self, image: ImageInput, *, size: str = "native", format: str | None = None) -> ImageResult:
        return self.colorize_batch([image], size=size, format=format)[0]

    def colorize_batch(self, images: list[ImageInput], *, size: str = "native", format: str | None = None) -> list[ImageResult]:
        return _base.parse_images(self._send(**_base.image_request("/colorize", images, _image_params(size, format))))

    # Latents.
    def encode(self, image: ImageInput, *, size: str = "32", model: str | None = None, refine: int = 0) -> LatentResult:
        return self.encode_batch([image], size=size, model=model, refine=refine)[0]

    def encode_batch(self, images: list[ImageInput], *, size: str = "32", model: str | None = None,
                     refine: int = 0) -> list[LatentResult]:
        return _base.parse_latents(self._send(**_base.image_request("/encode", images, _image_params(size, model=model, refine=refine))))

    def decode(self, latent, *, format: str | None = None, model: str | None = None) -> ImageResult:
        """`latent`: an `encode` result (decoded by the autoencoder that made it), an array (C, h, w), or a
        dict {shape, latent[, model]}; `model` names the autoencoder (None: the latent's own, else the default)."""
        params = {**({"format": format} if format else {}), **({"model": model} if model else {})}
        return _base.parse_images(self._send(method="POST", url="/decode", json=_base.latent_body(latent), params=params))[0]

    def decode_batch(self, latents: list, *, format: str | None = None, model: str | None = None) -> list[ImageResult]:
        return [self.decode(z, format=format, model=model) for z in latents]

    # The service.
    def models(self) -> dict:
        response = self._send(method="GET", url="/v1/models")
        _base.raise_for_error(response)
        return response.json()

    def ready(self) -> bool:
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False


class AsyncClient:
    """Awaitable client with the same methods as `Client`.

        async with AsyncClient(base_url="http://localhost:8000") as cae:
            result = await cae.colorize("gray.png")
    """

    def __init__(self, *, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None,
                 timeout: float | httpx.Timeout = DEFAULT_TIMEOUT, retries: RetryPolicy = RetryPolicy(),
                 transport: httpx.AsyncBaseTransport | None = None):
        self.retries = retries
        self._http = httpx.AsyncClient(base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, **request: Any) -> httpx.Response:
        attempt = 0
        while True:
            response, error = None, None
            try:
                response = await self._http.request(**request)
            except httpx.TransportError as e:
                error = e
            if not self.retries.should_retry(attempt, response, error):
                if error is not None:
                    raise _base.transport_error(error) from error
                return response
            await asyncio.sleep(self.retries.delay(attempt, response))
            attempt += 1

    async def reconstruct(self, image: ImageInput, *, size: str = "native", format: str | None = None,
                    model: str | None = None, refine: int = 0) -> ImageResult:
        return (await self.reconstruct_batch([image], size=size, format=format, model=model, refine=refine))[0]

    async def reconstruct_batch(self, images: list[ImageInput], *, size: str = "native", format: str | None = None,
                          model: str | None = None, refine: int = 0) -> list[ImageResult]:
        return _base.parse_images(await self._send(**_base.image_request("/reconstruct", images, _image_params(size, format, model, refine))))

    async def colorize(self, image: ImageInput, *, size: str = "native", format: str | None = None) -> ImageResult:
        return (await self.colorize_batch([image], size=size, format=format))[0]

    async def colorize_batch(self, images: list[ImageInput], *, size: str = "native", format: str | None = None) -> list[ImageResult]:
        return _base.parse_images(await self._send(**_base.image_request("/colorize", images, _image_params(size, format))))

    async def encode(self, image: ImageInput, *, size: str = "32", model: str | None = None, refine: int = 0) -> LatentResult:
        return (await self.encode_batch([image], size=size, model=model, refine=refine))[0]

    async def encode_batch(self, images: list[ImageInput], *, size: str = "32", model: str | None = None,
                     refine: int = 0) -> list[LatentResult]:
        return _base.parse_latents(await self._send(**_base.image_request("/encode", images, _image_params(size, model=model, refine=refine))))

    async def decode(self, latent, *, format: str | None = None, model: str | None = None) -> ImageResult:
        """`latent`: an `encode` result (decoded by the autoencoder that made it), an array (C, h, w), or a
        dict {shape, latent[, model]}; `model` names the autoencoder (None: the latent's own, else the default)."""
        params = {**({"format": format} if format else {}), **({"model": model} if model else {})}
        return _base.parse_images(await self._send(method="POST", url="/decode", json=_base.latent_body(latent), params=params))[0]

    async def decode_batch(self, latents: list, *, format: str | None = None, model: str | None = None) -> list[ImageResult]:
        return list(await asyncio.gather(*[self.decode(z, format=format, model=model) for z in latents]))

    async def models(self) -> dict:
        response = await self._send(method="GET", url="/v1/models")
        _base.raise_for_error(response)
        return response.json()

    async def ready(self) -> bool:
        try:
            return (await self._http.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False
