"""What an image request does, planned before it starts: decode, run the models (whole or in tiles),
encode; with its memory and time estimated up front for admission (service.admission).

The event loop only parses headers and moves bytes: decoding, resizing, colour conversion and encoding of
anything larger than a thumbnail run in threads (Pillow and numpy release the GIL), model runs in each
model's own thread (service.batching). So /healthz answers while a 12-megapixel photo is being worked on.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnxruntime as ort
from PIL import Image

from cae.refine import refine_latents
from service import images
from service.deps import Runtime
from service.errors import ServiceError
from service.models import Autoencoder, Model
from service.tiling import plan_tiles, run_tile

# Below this many pixels an image is decoded and encoded on the event loop: a thread hand-off costs more.
INLINE_PIXELS = 128 * 128

# Memory a request's own buffers hold at their peak, per image pixel, besides the model runs: the decoded
# RGB (3), a transposed copy while EXIF orientation is applied (3), the float32 input (12), the float32
# output (12), its uint8 copy (3) and the encoded file (at most ~4). The reduced /colorize path holds
# uint8 planes only at full size (RGB, luma, two chroma planes, merged RGB, file).
IO_BYTES_PER_PIXEL = {"reconstruct": 40, "encode": 20, "colorize": 40, "colorize_reduced": 16}
# Used for a model whose memory was not measured (CAE_WARMUP=false): more than any shipped model needs.
UNMEASURED_BYTES_PER_PIXEL = 4096


async def offload(pixels: int, fn: Callable, *args):
    """fn(*args) on the event loop for thumbnails, in a thread otherwise."""
    if pixels <= INLINE_PIXELS:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


@dataclass
class RunPlan:
    """One model on one input: its tiles, expected seconds and peak bytes."""
    tiles: list
    seconds: float
    peak_bytes: int


def run_limit(runtime: Runtime, model: Model) -> int:
    """Most input positions one session run of `model` may take: CAE_TILE_MEMORY_MB (and the whole budget)
    divided by the model's measured bytes per pixel."""
    settings = runtime.settings
    per_px = model.cost.bytes_per_pixel or UNMEASURED_BYTES_PER_PIXEL
    per_input = per_px * model.image_pixels(1, 1)
    return max(1, int(min(settings.tile_memory_mb << 20, runtime.admission.budget_bytes // 2) / per_input))


def plan_run(runtime: Runtime, model: Model, height: int, width: int) -> RunPlan:
    tiles = plan_tiles(height, width, model.geometry, run_limit(runtime, model))
    pixels = [model.image_pixels(t.src[1] - t.src[0], t.src[3] - t.src[2]) for t in tiles]
    per_px = model.cost.bytes_per_pixel or UNMEASURED_BYTES_PER_PIXEL
    return RunPlan(tiles, model.cost.seconds(sum(pixels), len(tiles)), int(per_px * max(pixels)))


async def run_model(runtime: Runtime, key: str, x: np.ndarray, deadline: float) -> np.ndarray:
    """Model `key`'s output for one (C, H, W) input: batched with others when it fits one run, else tile by
    tile, each tile a job of its own in the model's queue (other requests' runs go in between)."""
    model, batcher = runtime.model(key), runtime.batchers[key]
    plan = plan_run(runtime, model, *x.shape[1:])
    if len(plan.tiles) == 1:
        return (await batcher.infer([x], deadline))[0]
    geometry = model.geometry
    out = np.empty((1, model.output_channels, geometry.out(x.shape[1]), geometry.out(x.shape[2])), dtype=np.float32)
    batch = x[None]
    for tile in plan.tiles:
        def work(options, tile=tile):
            run_tile(lambda t: batcher.run_now(t, options), batch, tile, geometry, out)
        runtime.metrics.tiles.labels(key).inc()
        await batcher.call(work, model.image_pixels(tile.src[1] - tile.src[0], tile.src[3] - tile.src[2]), deadline)
    return out[0]


def _padded(n: int, stride: int) -> int:
    return math.ceil(n / stride) * stride


# -- the three image routes ----------------------------------------------------------------------------

@dataclass
class ImageJob:
    """One image of a request: opened (header only), its upright size, and the plan for it."""
    image: Image.Image
    hw: tuple[int, int]
    need_bytes: int = 0
    need_s: float = 0.0

    @property
    def pixels(self) -> int:
        return self.hw[0] * self.hw[1]


def model_hw(job: ImageJob, size: str, stride: int) -> tuple[int, int]:
    return (32, 32) if size == "32" else (_padded(job.hw[0], stride), _padded(job.hw[1], stride))


def plan_reconstruct(runtime: Runtime, job: ImageJob, size: str, ae: Autoencoder, encode_only: bool = False,
                     refine: int = 0) -> None:
    encoder = ae.encoder
    h, w = model_hw(job, size, encoder.stride)
    enc = plan_run(runtime, encoder, h, w)
    seconds, peak = enc.seconds, enc.peak_bytes
    if refine:
        # The float input, counted in the I/O bytes, is kept while refining; the gradient session's arena
        # is counted on top of the other runs' (measured: a 0.15 MP /reconstruct?refine peaked ~1.5x above
        # the refinement's own estimate).
        step_s, step_bytes = plan_refine(runtime, ae, h, w)
        seconds, peak = seconds + refine * step_s, peak + step_bytes
    if not encode_only:
        decoder = ae.decoder
        dec = plan_run(runtime, decoder, h // encoder.stride, w // encoder.stride)
        seconds, peak = seconds + dec.seconds, (peak + dec.peak_bytes) if refine else max(peak, dec.peak_bytes)
    io = IO_BYTES_PER_PIXEL["encode" if encode_only else "reconstruct"]
    job.need_bytes, job.need_s = io * max(job.pixels, h * w) + peak, seconds


def check_refine(runtime: Runtime, ae: Autoencoder, steps: int) -> None:
    """A `refine` the service can do for `ae`, or a clear 422."""
    limit = runtime.settings.max_refine_steps
    if steps > limit:
        raise ServiceError(422, "invalid_refine", f"refine is at most {limit} steps (CAE_MAX_REFINE_STEPS), got {steps}")
    if steps and ae.gradient is None:
        able = ", ".join(sorted(n for n, a in runtime.models.autoencoders.items() if a.gradient is not None)) or "none"
        raise ServiceError(422, "refine_unavailable", f"autoencoder {ae.name} was exported without its decoder's gradient "
                           f"graph, so it cannot refine (these can: {able})")


def plan_refine(runtime: Runtime, ae: Autoencoder, h: int, w: int) -> tuple[float, int]:
    """Seconds and peak bytes of one refinement step on an h x w model input: the whole image in one run
    (a latent's gradient needs every output pixel it reaches), so it must fit one run's memory."""
    cost = ae.gradient.cost
    per_px = cost.bytes_per_pixel or UNMEASURED_BYTES_PER_PIXEL
    limit = min(runtime.settings.tile_memory_mb << 20, runtime.admission.budget_bytes // 2)
    if per_px * h * w > limit:
        raise ServiceError(413, "request_too_large", f"refining runs on the whole image at once: {h}x{w} needs an estimated "
                           f"{per_px * h * w / 2**20:,.0f} MB per step, more than one run may use ({limit / 2**20:,.0f} MB, "
                           f"CAE_TILE_MEMORY_MB); refine images up to {limit / per_px / 1e6:.2f} megapixels, or use size=32 "
                           "or refine=0")
    adam_state = 4 * 4 * ae.decoder.input_channels * (h // ae.encoder.stride) * (w // ae.encoder.stride)  # z, gradient, m, v
    return cost.seconds(h * w), int(per_px * h * w) + adam_state


async def refine_latent(runtime: Runtime, ae: Autoencoder, z: np.ndarray, x: np.ndarray, steps: int, deadline: float) -> np.ndarray:
    """`steps` Adam steps on the latent z (C, h, w) of the model input x (3, H, W) against the decoder
    (cae.refine), run in the decoder's thread in turn with its other work; stopped at the deadline."""
    gradient, batcher = ae.gradient, runtime.batchers[ae.decoder.key]
    pixels = x.shape[1] * x.shape[2]

    def work(options):
        # Every step but the last keeps its arena for the next (giving it back each time cost ~15% a step);
        # those steps run under options of their own, so a deadline stops the refinement at the next step
        # rather than within one (a step is at most ~1 s: plan_refine bounds its size).
        between = ort.RunOptions()
        taken = 0

        def step(latent, image):
            nonlocal taken
            if options.terminate:
                raise TimeoutError("refinement stopped at its deadline")
            taken += 1
            return gradient.run(latent, image, options if taken == steps else between)

        return refine_latents(step, z[None], x[None], steps, gradient.lr)[0]

    return await batcher.call(work, pixels, deadline, expected_s=steps * gradient.cost.seconds(pixels),
                              expected_bytes=gradient.cost.bytes(pixels))


def plan_colorize(runtime: Runtime, job: ImageJob, size: str) -> tuple[int, int] | None:
    """Plan one image; returns the working size of the reduced path, or None for full resolution."""
    colorizer, settings = runtime.model("colorizer"), runtime.settings
    work = None if size == "32" else images.colorize_work_size(*job.hw, settings.colorize_chroma_scale,
                                                                 settings.colorize_max_work_pixels)
    h, w = model_hw(job, size, colorizer.stride) if work is None else (_padded(work[0], colorizer.stride),
                                                                      _padded(work[1], colorizer.stride))
    run = plan_run(runtime, colorizer, h, w)
    io = IO_BYTES_PER_PIXEL["colorize"] * h * w if work is None else (
        IO_BYTES_PER_PIXEL["colorize_reduced"] * job.pixels + IO_BYTES_PER_PIXEL["colorize"] * h * w)
    job.need_bytes, job.need_s = io + run.peak_bytes, run.seconds
    return work


def _model_input(image: Image.Image, size: str, stride: int) -> tuple[np.ndarray, tuple[int, int]]:
    return images.to_model_input(np.asarray(images.load_rgb(image), dtype=np.uint8), size, stride)


async def reconstruct_one(runtime: Runtime, job: ImageJob, size: str, fmt: str, ae: Autoencoder, deadline: float,
                          refine: int = 0) -> bytes:
    x, out_hw = await offload(job.pixels, _model_input, job.image, size, ae.encoder.stride)
    z = await run_model(runtime, ae.encoder.key, x, deadline)
    if refine:
        z = await refine_latent(runtime, ae, z, x, refine, deadline)
    del x  # the float input is the largest buffer: let it go before the decoder's output exists
    out = await run_model(runtime, ae.decoder.key, z, deadline)
    return await offload(job.pixels, images.encode_image, out, out_hw, fmt)


async def encode_one(runtime: Runtime, job: ImageJob, size: str, ae: Autoencoder, deadline: float, refine: int = 0) -> np.ndarray:
    x, _ = await offload(job.pixels, _model_input, job.image, size, ae.encoder.stride)
    z = await run_model(runtime, ae.encoder.key, x, deadline)
    if refine:
        z = await refine_latent(runtime, ae, z, x, refine, deadline)
    return z


async def colorize_one(runtime: Runtime, job: ImageJob, size: str, fmt: str, work: tuple[int, int] | None,
                       deadline: float) -> bytes:
    colorizer = runtime.model("colorizer")
    if work is None:  # at full resolution (thumbnails, size=32): exactly the model's own output
        x, out_hw = await offload(job.pixels, _model_input, job.image, size, colorizer.stride)
        out = await run_model(runtime, "colorizer", images.luma(x), deadline)
        return await offload(job.pixels, images.encode_image, out, out_hw, fmt)
    rgb = await offload(job.pixels, images.load_rgb, job.image)
    gray = await offload(job.pixels, images.reduced_luma, rgb, work, colorizer.stride)
    colour = await run_model(runtime, "colorizer", gray, deadline)
    merged = await offload(job.pixels, images.lay_chroma_under_luma, rgb, colour, work)
    del rgb
    return await offload(job.pixels, images.save_image, merged, fmt)


# Numbers per json.dumps call. The C encoder holds the GIL for a whole call (about 0.7 us per float), so a
# 1.5M-value latent serialised in one call stalls the event loop for a second even from another thread;
# in pieces this size, the loop gets the GIL back every few milliseconds.
JSON_CHUNK = 4096


def json_bytes(obj) -> bytes:
    """JSON for dicts, lists, scalars and numpy arrays (as flat lists of numbers), built piece by piece."""
    return _json_text(obj).encode()


def _json_text(obj) -> str:
    if isinstance(obj, np.ndarray):
        flat = obj.ravel()
        return "[" + ",".join(json.dumps(flat[i:i + JSON_CHUNK].tolist())[1:-1]
                              for i in range(0, len(flat), JSON_CHUNK) if len(flat)) + "]"
    if isinstance(obj, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{_json_text(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(_json_text(v) for v in obj) + "]"
    return json.dumps(obj)


async def to_json(values: int, payload: dict) -> bytes:
    """A JSON body (numpy arrays as flat lists), built in a thread when it holds many numbers."""
    if values <= 65536:
        return json_bytes(payload)
    return await asyncio.to_thread(json_bytes, payload)


def parse_json(model_cls, body: bytes):
    return model_cls.model_validate_json(body)


async def parse_body(model_cls, body: bytes):
    """A pydantic model from a JSON body, parsed in a thread when large."""
    if len(body) <= 256 * 1024:
        return parse_json(model_cls, body)
    return await asyncio.to_thread(parse_json, model_cls, body)
