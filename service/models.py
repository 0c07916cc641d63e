"""The models the service runs: manifest in, checked and warmed-up onnxruntime sessions out."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from fractions import Fraction

import numpy as np
import onnxruntime as ort

from cae.manifest import ManifestError, read_manifest, verify_files
from service.memory import PeakSampler
from service.tiling import Geometry, measure_halo

log = logging.getLogger("cae.service")



class ModelLoadError(RuntimeError):
    """The model folder cannot be served: missing, tampered with, or the requested provider is unavailable."""


def choose_providers(requested: str) -> list[str]:
    available = ort.get_available_providers()
    if requested == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        preload_cuda_libraries()
    if requested == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise ModelLoadError(f"CAE_PROVIDERS=cuda but this onnxruntime has only {available} "
                                 "(install onnxruntime-gpu with its CUDA libraries)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]


def preload_cuda_libraries() -> None:
    """Load the CUDA runtime, cuBLAS and cuDNN from the nvidia-* pip packages (the gpu extra installs them)
    before the first CUDA session, as onnxruntime-gpu's documentation asks: they are not on the loader's
    path otherwise. Where they come from elsewhere (a CUDA base image, LD_LIBRARY_PATH), this finds
    nothing and onnxruntime loads them itself."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception as e:  # noqa: BLE001 (onnxruntime's own loader gets its chance and says what is missing)
        log.warning("onnxruntime.preload_dlls() failed (%s); onnxruntime will look for the CUDA libraries itself", e)


@dataclass
class Cost:
    """What a session run costs, per image pixel (the decoder's output pixels, the others' input pixels),
    measured at warm-up: seconds = fixed_s + seconds_per_pixel * pixels, peak bytes = bytes_per_pixel * pixels."""
    fixed_s: float = 0.0
    seconds_per_pixel: float = 0.0  # 0 until measured: cost unknown
    bytes_per_pixel: float = 0.0

    def seconds(self, pixels: int, runs: int = 1) -> float:
        return self.fixed_s * runs + self.seconds_per_pixel * pixels

    def bytes(self, pixels: int) -> int:
        return int(self.bytes_per_pixel * pixels)


# Runs expected to hold more than this much memory give their onnxruntime arena back at the end
# (shrinkage costs a few percent on small runs, which keep their arena chunks instead).
SHRINK_ABOVE_BYTES = 16 << 20
SHRINKAGE = "memory.enable_memory_arena_shrinkage"


def shrinking_options(session: ort.InferenceSession) -> ort.RunOptions:
    """Options for a run that gives its arena regions back at the end (those with nothing left in use)."""
    options = ort.RunOptions()
    options.add_run_config_entry(SHRINKAGE, "cpu:0;gpu:0" if "CUDAExecutionProvider" in session.get_providers() else "cpu:0")
    return options


def run_into_own_buffers(session: ort.InferenceSession, inputs: dict[str, np.ndarray], outputs: dict[str, tuple],
                         options: ort.RunOptions | None) -> list[np.ndarray]:
    """One run whose outputs go to numpy buffers allocated here, not to onnxruntime's arena.

    A run that shrinks its arena at the end can only give back regions with nothing in use, and its outputs
    are still in use then: on the CPU, onnxruntime hands them to numpy without a copy. The region an output
    lies in then stays resident after the request, until some later shrinking run of that session finds it
    empty: measured here, 330 MB held after a 4-megapixel /reconstruct (a 512 MB region), and again after each
    one. With the outputs outside the arena, every region is free when the run ends and the shrink returns it."""
    binding = session.io_binding()
    for name, value in inputs.items():
        binding.bind_cpu_input(name, np.ascontiguousarray(value))
    buffers = {name: np.empty(shape, dtype=np.float32) for name, shape in outputs.items()}
    for name, buffer in buffers.items():
        binding.bind_output(name, "cpu", 0, np.float32, list(buffer.shape), buffer.ctypes.data)
    session.run_with_iobinding(binding, options)
    return list(buffers.values())


@dataclass
class Gradient:
    """A decoder's gradient graph (export.gradient: latent, image -> gradient of the log-MSE, each image's
    MSE), with which cae.refine refines latents; its cost is counted in image pixels."""
    facts: dict  # the decoder entry's `gradient`
    session: ort.InferenceSession
    cost: Cost = field(default_factory=Cost)

    @property
    def lr(self) -> float:
        """Adam's step size, chosen on validation at export."""
        return float(self.facts["lr"])

    def run(self, latent: np.ndarray, image: np.ndarray, options: ort.RunOptions | None = None) -> tuple[np.ndarray, np.ndarray]:
        gradient, mse = self.session.run(None, {"latent": latent, "image": image}, options)
        return gradient, mse

    def release_arena(self, channels: int, stride: int) -> None:
        """Model.release_arena for the gradient graph: one step on a single latent unit."""
        latent, image = np.zeros((1, channels, 1, 1), np.float32), np.zeros((1, 3, stride, stride), np.float32)
        run_into_own_buffers(self.session, {"latent": latent, "image": image}, {"gradient": latent.shape, "mse": (1,)},
                             shrinking_options(self.session))

    def describe(self) -> dict:
        test = self.facts.get("test", {})
        return {"lr": self.lr, "max_steps_measured": max((int(k) for k in test.get("psnr_by_steps", {})), default=None),
                "test_psnr_by_steps": test.get("psnr_by_steps")}


@dataclass
class Model:
    role: str  # encoder | decoder | colorizer
    facts: dict  # the manifest entry
    session: ort.InferenceSession
    key: str = ""  # the manifest key: the name V2 and gRPC clients use (<autoencoder>.encoder, colorizer)
    input_name: str = field(init=False)
    output_name: str = field(init=False)
    cost: Cost = field(default_factory=Cost)
    halo: int | None = None  # tile context in input units, measured at warm-up; None: never tiled
    gradient: Gradient | None = None  # a decoder's gradient graph, if exported with one

    def __post_init__(self):
        self.key = self.key or self.role
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    @property
    def name(self) -> str:
        return self.facts["name"]

    @property
    def autoencoder(self) -> str | None:
        return self.facts.get("autoencoder")

    @property
    def version(self) -> str:
        return str(self.facts.get("version", 1))

    @property
    def stride(self) -> int:
        return int(self.facts["stride"])

    @property
    def input_channels(self) -> int:
        return int(self.facts["inputs"][0]["shape"][1])

    @property
    def output_channels(self) -> int:
        return int(self.facts["outputs"][0]["shape"][1])

    @property
    def geometry(self) -> Geometry:
        if self.role == "decoder":
            return Geometry(Fraction(self.stride), 1, self.halo)
        if self.role == "encoder":
            return Geometry(Fraction(1, self.stride), self.stride, self.halo)
        return Geometry(Fraction(1), self.stride, self.halo)

    def image_pixels(self, height: int, width: int) -> int:
        """Image pixels of an input of this spatial size (what costs are counted in)."""
        return height * width * (self.stride**2 if self.role == "decoder" else 1)

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run_options(self, expected_bytes: int = 0) -> ort.RunOptions:
        """Options for one run: `terminate = True` from another thread stops it between two operators."""
        return shrinking_options(self.session) if expected_bytes > SHRINK_ABOVE_BYTES else ort.RunOptions()

    def output_shape(self, input_shape: tuple) -> tuple | None:
        """The output's shape for an input of this shape (None where the model's contract cannot say)."""
        n, _, h, w = input_shape
        ratio = self.geometry.ratio
        if (h * ratio).denominator != 1 or (w * ratio).denominator != 1:
            return None
        return (n, self.output_channels, int(h * ratio), int(w * ratio))

    def run(self, batch: np.ndarray, options: ort.RunOptions | None = None) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch}, options)[0]

    def release_arena(self) -> None:
        """Give back the arena regions this session still holds (see run_into_own_buffers): one smallest
        run that shrinks, its output outside the arena. For when the service is idle: under load, a region
        kept is one the next large run need not fault in again (returning them after every run cost large
        requests ~25%)."""
        unit = self.geometry.align
        small = np.zeros((1, self.input_channels, unit, unit), dtype=np.float32)
        run_into_own_buffers(self.session, {self.input_name: small}, {self.output_name: self.output_shape(small.shape)},
                             shrinking_options(self.session))
        if self.gradient is not None:
            self.gradient.release_arena(self.input_channels, self.stride)

    def describe(self) -> dict:
        keep = ("name", "autoencoder", "version", "file", "sha256", "stride", "inputs", "outputs", "test", "parameters",
                "latent_channels", "latent_size_32x32", "decoding")
        return {"key": self.key, "role": self.role, **{k: self.facts[k] for k in keep if k in self.facts}, "version": self.version,
                "providers": self.providers}


@dataclass(frozen=True)
class Autoencoder:
    """One member of the served family: its encoder and decoder."""
    name: str
    encoder: Model
    decoder: Model

    @property
    def version(self) -> str:
        return self.encoder.version

    @property
    def latent_size(self) -> int | None:
        """Latent values for a 32x32 image."""
        return self.encoder.facts.get("latent_size_32x32")

    @property
    def gradient(self) -> Gradient | None:
        """The decoder's gradient graph: what `refine` needs."""
        return self.decoder.gradient

    def describe(self, default: bool) -> dict:
        test = self.encoder.facts.get("test", {})
        return {"name": self.name, "default": default, "version": self.version, "latent_size_32x32": self.latent_size,
                "stride": self.encoder.stride, "latent_channels": self.encoder.output_channels,
                "test_psnr": test.get("psnr"), "pca_psnr": test.get("pca_psnr"),
                "refine": self.gradient.describe() if self.gradient else None,
                "models": [self.encoder.key, self.decoder.key]}


class ModelSet(dict):
    """The models of a folder by manifest key, and the autoencoder family they make up. `encoder` and
    `decoder` are aliases for the default autoencoder's parts (`resolve`)."""

    def __init__(self, models: dict[str, Model], default_autoencoder: str | None):
        super().__init__(models)
        parts: dict[str, dict[str, Model]] = {}
        for m in models.values():
            if m.autoencoder is not None:
                parts.setdefault(m.autoencoder, {})[m.role] = m
        self.autoencoders = {name: Autoencoder(name, p["encoder"], p["decoder"]) for name, p in parts.items()}
        self.default_autoencoder = default_autoencoder

    def resolve(self, name: str) -> str | None:
        """The key a model name or alias stands for, None if unknown."""
        if name in self:
            return name
        if name in ("encoder", "decoder") and self.default_autoencoder is not None:
            return getattr(self.autoencoders[self.default_autoencoder], name).key
        return None

    def names(self) -> list[str]:
        """Every name a client may use: the keys and the aliases."""
        aliases = ["encoder", "decoder"] if self.default_autoencoder is not None else []
        return aliases + sorted(self)


def load_models(model_dir: Path, providers: str = "auto", intra_op_threads: int = 0, only: list[str] | None = None) -> ModelSet:
    """The folder's models (`only` those named, by CAE_MODELS's names), checked against the manifest and loaded.
    The default autoencoder is the folder's if it is loaded, else the first autoencoder `only` names."""
    model_dir = Path(model_dir)
    try:
        manifest = read_manifest(model_dir)
        try:
            keys = manifest.keys_for(only) if only else list(manifest.models)
        except ManifestError as e:
            raise ManifestError(f"CAE_MODELS: {e}") from None
        verify_files(model_dir, manifest, keys)
    except ManifestError as e:
        raise ModelLoadError(f"{e} (CAE_MODEL_DIR={model_dir})") from None
    default = manifest.default_autoencoder
    if only and default not in only:
        default = next((name for name in only if name in manifest.autoencoders), None)
    chosen = choose_providers(providers)
    options = ort.SessionOptions()
    # On 2 cores with the shipped model at 16 concurrent requests, onnxruntime on one core (the other
    # left to the event loop's HTTP and PNG work) gave more requests/s and a lower p99 than on both.
    options.intra_op_num_threads = intra_op_threads or max(1, (os.cpu_count() or 1) - 1)
    models = {}
    for key in keys:
        entry = manifest.models[key]
        facts, path = entry.facts, model_dir / entry.file
        session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
        if providers == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
            raise ModelLoadError(f"{path}: the CUDA provider failed to load (see onnxruntime's log); not falling back to CPU")
        models[key] = Model(entry.role, facts, session, key)
        if entry.gradient:
            gradient = ort.InferenceSession(str(model_dir / entry.gradient["file"]), sess_options=options, providers=chosen)
            models[key].gradient = Gradient(entry.gradient, gradient)
        log.info("loaded %s (%s v%s) from %s with providers %s", key, facts["name"], facts.get("version", 1), path, session.get_providers())
    if only:
        log.info("serving %s of %s (CAE_MODELS); default autoencoder: %s", ", ".join(dict.fromkeys(only)), ", ".join(manifest.names), default)
    return ModelSet(models, default)


def _median_seconds(run, runs: int) -> float:
    """The median wall time of `runs` calls of run()."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def _fitted_cost(small_s: float, small_px: int, big_s: float, big_px: int, held_bytes: float) -> Cost:
    """A fixed cost plus a cost per pixel through the two measured runs; peak bytes per pixel of the big one."""
    per_px = max(0.0, (big_s - small_s) / max(1, big_px - small_px)) or big_s / big_px
    return Cost(fixed_s=max(0.0, small_s - per_px * small_px), seconds_per_pixel=per_px, bytes_per_pixel=held_bytes / big_px)


# Input sides (in input units; the gradient's in image pixels) the warm-up measures at: large enough that
# the cost per pixel is not the fixed cost of a run, and near the size photos run at. A stride-32 decoder's
# 32 units are a 1-megapixel image, about 9 s of a 2-core start-up each, kept on purpose: measured on the
# pae decoders, a 256-pixel probe planned 1.20 s per megapixel where 1- and 4-megapixel runs take 1.43-1.93 s.
# Nor is a decoder probed at under PROBE_MIN_IMAGE_SIDE image pixels a side: probed at 32 units (64-128
# pixels), the rae decoders planned 0.4-0.65x the memory their 0.26- and 1-megapixel runs took; at 256
# pixels, 0.77-1.25x (benchmarks/warmup_plan.py), for about 5 s more of the shipped folder's warm-up.
PROBE_SIDE = {"encoder": 256, "decoder": 32, "colorizer": 96, "gradient": 192}
PROBE_MIN_IMAGE_SIDE = 256


def measure_run(model: Model, x: np.ndarray, options: ort.RunOptions, runs: int) -> tuple[float, int]:
    """Seconds (median of `runs`, after one run to warm up) and peak bytes of running `model` on `x`."""
    model.run(x, options)
    with PeakSampler() as peak:
        out = model.run(x, options)
    # Resident memory misses what a run reuses of pages already resident (small models can measure ~0):
    # a run holds at least its input and its output.
    held = max(peak.peak_delta, x.nbytes + out.nbytes)
    return _median_seconds(lambda: model.run(x, options), runs), held


def warm_up(models: dict[str, Model], runs: int = 5) -> None:
    """Run each model at the training size, so the first request does not pay for allocation, and measure
    what the service plans with: seconds per run and per pixel, peak memory per pixel, and the halo a tile
    needs (the receptive field)."""
    for model in models.values():
        unit = model.stride if model.role == "decoder" else 1  # input units per image pixel along a side
        small = np.zeros((1, model.input_channels, 32 // unit or 1, 32 // unit or 1), dtype=np.float32)
        # Measured as large requests run: giving the arena back after each run (its cost is in the figures).
        shrinking = model.run_options(SHRINK_ABOVE_BYTES + 1)
        model.run(small)
        small_s = _median_seconds(lambda: model.run(small, shrinking), runs)
        side = PROBE_SIDE.get(model.role, 64)
        if model.role == "decoder":
            side = max(side, PROBE_MIN_IMAGE_SIDE // unit)
        side = max(model.geometry.align, side // model.geometry.align * model.geometry.align)
        big = np.random.default_rng(0).random((1, model.input_channels, side, side), dtype=np.float32)
        big_s, held = measure_run(model, big, shrinking, max(1, runs // 2))
        model.cost = _fitted_cost(small_s, model.image_pixels(*small.shape[2:]), big_s, model.image_pixels(side, side), held)
        # A model that declares image-wide context (the export's `global_context`) is never tiled: one pixel's
        # pull on far outputs can be below what measuring the field detects, yet tiles would still differ.
        model.halo = None if model.facts.get("global_context") else measure_halo(
            lambda x: model.run(x, shrinking), model.input_channels, model.geometry.ratio, model.geometry.align,
            side=max(side // 2, 16), max_side=side * 2)
        log.info("%s: %.3f ms per run + %.3f s per megapixel, %.0f bytes per pixel at peak, tile halo %s",
                 model.key, model.cost.fixed_s * 1e3, model.cost.seconds_per_pixel * 1e6, model.cost.bytes_per_pixel, model.halo)
        if model.gradient is not None:
            warm_up_gradient(model, runs)


def warm_up_gradient(decoder: Model, runs: int) -> None:
    """Measure a decoder's gradient graph as warm_up measures models: seconds per step and per pixel, peak
    bytes per pixel (image pixels), at one latent unit and at PROBE_SIDE["gradient"] pixels a side."""
    gradient, stride, channels = decoder.gradient, decoder.stride, decoder.input_channels
    rng = np.random.default_rng(0)

    def step_inputs(units: int):
        return (rng.standard_normal((1, channels, units, units), dtype=np.float32),
                rng.random((1, 3, units * stride, units * stride), dtype=np.float32))

    # Measured as refinement runs its steps: the arena kept between them (service.pipeline.refine_latent).
    shrinking = decoder.run_options(SHRINK_ABOVE_BYTES + 1)
    small, big = step_inputs(1), step_inputs(max(1, PROBE_SIDE["gradient"] // stride))
    gradient.run(*small)
    small_s = _median_seconds(lambda: gradient.run(*small), runs)
    gradient.run(*big, shrinking)
    with PeakSampler() as peak:  # steps in a row, as refinement takes them: the arena may grow past one step's need
        for _ in range(3):
            gradient.run(*big, None)
    held = max(peak.peak_delta, 2 * big[0].nbytes + big[1].nbytes)  # at least its inputs and the gradient
    big_s = _median_seconds(lambda: gradient.run(*big), max(1, runs // 2))
    gradient.run(*small, shrinking)  # and the arena given back, as after the last step
    gradient.cost = _fitted_cost(small_s, small[1].shape[2] * small[1].shape[3], big_s, big[1].shape[2] * big[1].shape[3], held)
    log.info("%s gradient: %.3f ms per step + %.3f s per megapixel per step, %.0f bytes per pixel at peak",
             decoder.key, gradient.cost.fixed_s * 1e3, gradient.cost.seconds_per_pixel * 1e6, gradient.cost.bytes_per_pixel)
