"""/reconstruct, /colorize, /encode and /decode: images (raw body or multipart) in, images or JSON out."""

from __future__ import annotations

import asyncio
import base64
from typing import Literal

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile

from service import images, pipeline
from service.deps import Runtime, get_runtime
from service.errors import ServiceError

# The API key is checked by the middleware, before the body is read (service.middleware).
router = APIRouter(tags=["images"])

Size = Literal["native", "32"]
Format = Literal["png", "jpeg", "webp"]
MODEL_HELP = "which autoencoder (GET /v1/models lists them); default: the service's default autoencoder"
REFINE_HELP = ("Adam steps refining each latent against the decoder before it is returned or decoded (0: the encoder's "
               "latent as it is); better reconstructions for the autoencoders exported with a gradient graph (GET /v1/models "
               "says which, and what each step count gained on the test split), at about a decoder's forward and backward "
               "pass per step on the whole image")
SIZE_HELP = "native: run at the image's own size (padded to the model's stride, cropped back); 32: resize to 32x32"

IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/webp": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "image": {"type": "array", "items": {"type": "string", "format": "binary"},
                          "description": "one or more images; results come back in the same order"}}}},
        },
    }
}
IMAGE_RESPONSES = {
    200: {"content": {"image/png": {}, "application/json": {}},
          "description": "one image: the image itself; several (multipart): JSON with base64 images in order"},
    400: {"description": "corrupt or truncated image"}, 401: {"description": "missing or wrong API key"},
    408: {"description": "the body did not arrive in time"},
    413: {"description": "body or image too large, or more memory or time than the service can ever give it"},
    415: {"description": "not a supported image"},
    503: {"description": "overloaded (memory, queue or concurrency); retry after Retry-After seconds"},
    504: {"description": "inference did not finish by the deadline (and was stopped)"},
}
RAW_TYPES = ("image/", "application/octet-stream")


async def read_image_bytes(request: Request, runtime: Runtime) -> list[bytes]:
    """The request's images, in order: the raw body, or every file part of a multipart form."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    limit = runtime.settings.max_images_per_request
    if content_type == "multipart/form-data":
        try:
            form = await request.form(max_files=limit, max_fields=limit)
        except Exception as e:  # malformed multipart, too many parts
            raise ServiceError(400, "invalid_multipart", f"the multipart body cannot be parsed: {getattr(e, 'detail', e)}") from None
        parts = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not parts:
            raise ServiceError(400, "no_image", "the multipart form has no file part (send e.g. -F image=@cat.png)")
        return [await part.read() for part in parts]
    if content_type and not content_type.startswith(RAW_TYPES):
        raise ServiceError(415, "unsupported_media_type", f"Content-Type {content_type} is not an image: send the image as the "
                           "raw body (Content-Type: image/png, image/jpeg, ...) or as multipart form field 'image'")
    return [await request.body()]


def _image_response(outputs: list[bytes], fmt: str, model) -> Response:
    """`model`: the autoencoder or colorizer that made the images (named in the headers and the JSON)."""
    headers = {"X-Model": model.name, "X-Model-Version": model.version}
    media_type = images.OUTPUT_FORMATS[fmt][1]
    if len(outputs) == 1:
        return Response(outputs[0], media_type=media_type, headers=headers)
    return JSONResponse({"model": model.name, "version": model.version, "content_type": media_type,
                         "images": [base64.b64encode(o).decode() for o in outputs]}, headers=headers)


async def _open_all(request: Request, runtime: Runtime) -> list[pipeline.ImageJob]:
    """Every image's header parsed and checked (nothing decoded yet)."""
    jobs = []
    for blob in await read_image_bytes(request, runtime):
        image = images.open_image(blob, runtime.settings.max_pixels)
        jobs.append(pipeline.ImageJob(image, images.image_size(image)))
    return jobs


def _totals(jobs: list[pipeline.ImageJob]) -> tuple[int, float]:
    return sum(j.need_bytes for j in jobs), sum(j.need_s for j in jobs)


@router.post("/reconstruct", summary="Encode and decode an image", openapi_extra=IMAGE_BODY, responses=IMAGE_RESPONSES,
             response_class=Response)
async def reconstruct(request: Request, size: Size = Query("native", description=SIZE_HELP), format: Format = "png",
                      model: str | None = Query(None, description=MODEL_HELP), refine: int = Query(0, ge=0, description=REFINE_HELP),
                      runtime: Runtime = Depends(get_runtime)):
    ae = runtime.autoencoder(model)
    pipeline.check_refine(runtime, ae, refine)
    jobs = await _open_all(request, runtime)
    for job in jobs:
        pipeline.plan_reconstruct(runtime, job, size, ae, refine=refine)
    async with runtime.admit(*_totals(jobs), (ae.encoder.key, ae.decoder.key)) as deadline:
        outputs = await asyncio.gather(*[pipeline.reconstruct_one(runtime, job, size, format, ae, deadline, refine) for job in jobs])
    return _image_response(outputs, format, ae)


@router.post("/colorize", summary="Colorize an image (colour input is converted to luma first)", openapi_extra=IMAGE_BODY,
             responses=IMAGE_RESPONSES, response_class=Response)
async def colorize(request: Request, size: Size = Query("native", description=SIZE_HELP), format: Format = "png",
                   runtime: Runtime = Depends(get_runtime)):
    colorizer = runtime.model("colorizer")
    jobs = await _open_all(request, runtime)
    work = [pipeline.plan_colorize(runtime, job, size) for job in jobs]
    async with runtime.admit(*_totals(jobs), ("colorizer",)) as deadline:
        outputs = await asyncio.gather(*[pipeline.colorize_one(runtime, job, size, format, w, deadline)
                                         for job, w in zip(jobs, work)])
    return _image_response(outputs, format, colorizer)


class Latent(BaseModel):
    shape: list[int] = Field(..., min_length=3, max_length=3, description="[C, h, w]")
    latent: list[float] = Field(..., description="C*h*w values in C-order (channel, row, column)")


class EncodeResponse(BaseModel):
    model: str
    version: str
    refine: int | None = Field(None, description="the Adam steps each latent was refined by, if asked")
    results: list[Latent] = Field(..., description="one per image, in order")


@router.post("/encode", summary="An image's latent vector", openapi_extra=IMAGE_BODY, response_model=EncodeResponse,
             responses={k: v for k, v in IMAGE_RESPONSES.items() if k != 200})
async def encode(request: Request, size: Size = Query("32", description=SIZE_HELP + " (default 32: a fixed-length vector)"),
                 model: str | None = Query(None, description=MODEL_HELP), refine: int = Query(0, ge=0, description=REFINE_HELP),
                 runtime: Runtime = Depends(get_runtime)):
    ae = runtime.autoencoder(model)
    pipeline.check_refine(runtime, ae, refine)
    encoder = ae.encoder
    jobs = await _open_all(request, runtime)
    values = 0
    for job in jobs:
        pipeline.plan_reconstruct(runtime, job, size, ae, encode_only=True, refine=refine)
        h, w = pipeline.model_hw(job, size, encoder.stride)
        values += encoder.output_channels * (h // encoder.stride) * (w // encoder.stride)
    _check_json_values(runtime, values)
    # Refining runs in the decoder's thread: its queue counts in the backlog too.
    async with runtime.admit(*_totals(jobs), (encoder.key, ae.decoder.key) if refine else (encoder.key,)) as deadline:
        latents = await asyncio.gather(*[pipeline.encode_one(runtime, job, size, ae, deadline, refine) for job in jobs])
    body = await pipeline.to_json(values, {"model": ae.name, "version": ae.version, **({"refine": refine} if refine else {}),
                                           "results": [{"shape": list(z.shape), "latent": z} for z in latents]})
    return Response(body, media_type="application/json")


def _check_json_values(runtime: Runtime, values: int) -> None:
    if values > runtime.settings.max_json_values:
        raise ServiceError(413, "response_too_large", f"the response would hold {values:,} numbers as JSON, more than the "
                           f"limit of {runtime.settings.max_json_values:,} (CAE_MAX_JSON_VALUES); send a smaller image or size=32")


class DecodeRequest(BaseModel):
    shape: list[int] = Field(..., min_length=3, max_length=3, description="[C, h, w], as /encode returned it")
    latent: list[float] = Field(..., min_length=1, description="C*h*w values in C-order")
    model: str | None = Field(None, description="the autoencoder that made the latent (/encode's `model`); "
                                               "the same as the query's `model` if both are given")


DECODE_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": DecodeRequest.model_json_schema()}}}}


@router.post("/decode", summary="A latent vector back to an image", openapi_extra=DECODE_BODY, responses=IMAGE_RESPONSES,
             response_class=Response)
async def decode(request: Request, format: Format = "png", model: str | None = Query(None, description=MODEL_HELP),
                 runtime: Runtime = Depends(get_runtime)):
    runtime.autoencoder(model)  # an unknown name is a 404 before the body is read
    body = await parse_json_body(request, DecodeRequest)
    if model is not None and body.model is not None and body.model != model:
        raise ServiceError(422, "invalid_latent", f"the body's model {body.model!r} is not the query's {model!r}")
    ae = runtime.autoencoder(model or body.model)
    decoder = ae.decoder
    c, h, w = body.shape
    channels = decoder.input_channels
    if c != channels or h < 1 or w < 1:
        raise ServiceError(422, "invalid_latent", f"shape must be [{channels}, h, w] with h, w >= 1 for autoencoder {ae.name}; "
                           f"got {body.shape}")
    if h * w * decoder.stride**2 > runtime.settings.max_pixels:
        raise ServiceError(422, "invalid_latent", f"shape {body.shape} decodes to more than {runtime.settings.max_pixels:,} pixels")
    if len(body.latent) != c * h * w:
        raise ServiceError(422, "invalid_latent", f"shape {body.shape} needs {c * h * w} values, got {len(body.latent)}")
    z = np.asarray(body.latent, dtype=np.float64).reshape(c, h, w)
    del body
    if not (np.abs(z) <= np.finfo(np.float32).max).all():  # NaN, infinity, or beyond float32's range
        raise ServiceError(422, "invalid_latent", "latent values must be finite float32 numbers (no NaN or infinity)")
    z = z.astype(np.float32)
    pixels = decoder.image_pixels(h, w)
    plan = pipeline.plan_run(runtime, decoder, h, w)
    async with runtime.admit(pipeline.IO_BYTES_PER_PIXEL["reconstruct"] * pixels + plan.peak_bytes, plan.seconds,
                             (decoder.key,)) as deadline:
        out = await pipeline.run_model(runtime, decoder.key, z, deadline)
        png = await pipeline.offload(pixels, images.encode_image, out, out.shape[1:], format)
    return _image_response([png], format, ae)


async def parse_json_body(request: Request, model_cls):
    """The body as `model_cls`, parsed off the event loop when large; 422 with the reasons otherwise."""
    try:
        return await pipeline.parse_body(model_cls, await request.body())
    except ValidationError as e:
        details = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in e.errors())
        raise ServiceError(422, "invalid_request", details or "invalid JSON body") from None
