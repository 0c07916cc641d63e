"""/reconstruct, /colorize, /encode and /decode: images (raw body or multipart) in, images or JSON out."""

from __future__ import annotations

import base64
from typing import Literal

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from service import images
from service.deps import Runtime, get_runtime, require_api_key
from service.errors import ServiceError

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["images"])

Size = Literal["native", "32"]
Format = Literal["png", "jpeg", "webp"]
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
    413: {"description": "body or image too large"}, 415: {"description": "not a supported image"},
    503: {"description": "overloaded; retry after Retry-After seconds"}, 504: {"description": "inference timed out"},
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
            if type(e).__name__ == "BodyTooLarge":
                raise
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
    headers = {"X-Model": model.name, "X-Model-Version": model.version}
    media_type = images.OUTPUT_FORMATS[fmt][1]
    if len(outputs) == 1:
        return Response(outputs[0], media_type=media_type, headers=headers)
    return JSONResponse({"model": model.name, "version": model.version, "content_type": media_type,
                         "images": [base64.b64encode(o).decode() for o in outputs]}, headers=headers)


async def _decode_all(request: Request, runtime: Runtime, size: str, stride: int):
    blobs = await read_image_bytes(request, runtime)
    prepared = [images.to_model_input(images.decode_image(b, runtime.settings.max_pixels), size, stride) for b in blobs]
    return [p[0] for p in prepared], [p[1] for p in prepared]


@router.post("/reconstruct", summary="Encode and decode an image", openapi_extra=IMAGE_BODY, responses=IMAGE_RESPONSES,
             response_class=Response)
async def reconstruct(request: Request, size: Size = Query("native", description=SIZE_HELP), format: Format = "png",
                      runtime: Runtime = Depends(get_runtime)):
    encoder, decoder = runtime.model("encoder"), runtime.model("decoder")
    arrays, sizes = await _decode_all(request, runtime, size, encoder.stride)
    latents = await runtime.infer("encoder", arrays)
    outs = await runtime.infer("decoder", latents)
    return _image_response([images.encode_image(o, hw, format) for o, hw in zip(outs, sizes)], format, decoder)


@router.post("/colorize", summary="Colorize an image (colour input is converted to luma first)", openapi_extra=IMAGE_BODY,
             responses=IMAGE_RESPONSES, response_class=Response)
async def colorize(request: Request, size: Size = Query("native", description=SIZE_HELP), format: Format = "png",
                   runtime: Runtime = Depends(get_runtime)):
    colorizer = runtime.model("colorizer")
    arrays, sizes = await _decode_all(request, runtime, size, colorizer.stride)
    outs = await runtime.infer("colorizer", [images.luma(a) for a in arrays])
    return _image_response([images.encode_image(o, hw, format) for o, hw in zip(outs, sizes)], format, colorizer)


class Latent(BaseModel):
    shape: list[int] = Field(..., min_length=3, max_length=3, description="[C, h, w]")
    latent: list[float] = Field(..., description="C*h*w values in C-order (channel, row, column)")


class EncodeResponse(BaseModel):
    model: str
    version: str
    results: list[Latent] = Field(..., description="one per image, in order")


@router.post("/encode", summary="An image's latent vector", openapi_extra=IMAGE_BODY, response_model=EncodeResponse,
             responses={k: v for k, v in IMAGE_RESPONSES.items() if k != 200})
async def encode(request: Request, size: Size = Query("32", description=SIZE_HELP + " (default 32: a fixed-length vector)"),
                 runtime: Runtime = Depends(get_runtime)):
    encoder = runtime.model("encoder")
    arrays, _ = await _decode_all(request, runtime, size, encoder.stride)
    latents = await runtime.infer("encoder", arrays)
    return {"model": encoder.name, "version": encoder.version,
            "results": [{"shape": list(z.shape), "latent": z.ravel().tolist()} for z in latents]}


class DecodeRequest(BaseModel):
    shape: list[int] = Field(..., min_length=3, max_length=3, description="[C, h, w], as /encode returned it")
    latent: list[float] = Field(..., min_length=1, description="C*h*w values in C-order")


@router.post("/decode", summary="A latent vector back to an image", responses=IMAGE_RESPONSES, response_class=Response)
async def decode(body: DecodeRequest, format: Format = "png", runtime: Runtime = Depends(get_runtime)):
    decoder = runtime.model("decoder")
    c, h, w = body.shape
    channels = int(decoder.facts["inputs"][0]["shape"][1])
    if c != channels or h < 1 or w < 1:
        raise ServiceError(422, "invalid_latent", f"shape must be [{channels}, h, w] with h, w >= 1; got {body.shape}")
    if h * w * decoder.stride**2 > runtime.settings.max_pixels:
        raise ServiceError(422, "invalid_latent", f"shape {body.shape} decodes to more than {runtime.settings.max_pixels:,} pixels")
    if len(body.latent) != c * h * w:
        raise ServiceError(422, "invalid_latent", f"shape {body.shape} needs {c * h * w} values, got {len(body.latent)}")
    z = np.asarray(body.latent, dtype=np.float64).reshape(c, h, w)
    if not (np.abs(z) <= np.finfo(np.float32).max).all():  # NaN, infinity, or beyond float32's range
        raise ServiceError(422, "invalid_latent", "latent values must be finite float32 numbers (no NaN or infinity)")
    z = z.astype(np.float32)
    out = (await runtime.infer("decoder", [z]))[0]
    return _image_response([images.encode_image(out, out.shape[1:], format)], format, decoder)

