"""How a training step runs on each kind of device: the forms that measured fastest there.

On the CPU (measured, README "Training speed"): bf16 autocast where the CPU has it, channels-last, the
decoder's upsampling + convolution as one sub-pixel convolution, fused Adam, an eager step.

On CUDA the study's models are tiny and every kernel is launch-bound (the GPU training issue: the CPU-tuned
step ran at 0.48x a plain fp32 loop on an H100), so: fp32 (TF32 tensor cores allowed; bf16 autocast adds
casts), contiguous NCHW, the decoder's layers as they are, and the whole step (forward, backward, fused
optimizer) captured once per batch shape in a CUDA graph and replayed: one launch per step instead of
hundreds. Results match the eager step (the same arithmetic, replayed).

`StepPlan.for_device` picks these; `make_step` returns the callable `train` runs each batch through.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

log = logging.getLogger("cae.training")

GRAPHABLE_OPTIMIZERS = ("adam", "adamw", "sgd")  # their fused/capturable forms keep all state on the device


@dataclass(frozen=True)
class StepPlan:
    device: str  # cpu | cuda
    channels_last: bool
    subpixel_decoder: bool  # ConvAutoencoder: upsample+conv as one sub-pixel convolution (the same function)
    cuda_graph: bool

    @classmethod
    def for_device(cls, device: torch.device, optimizer: str = "adam", graphs: bool = True) -> StepPlan:
        if device.type == "cuda":
            return cls("cuda", channels_last=False, subpixel_decoder=False,
                       cuda_graph=graphs and optimizer in GRAPHABLE_OPTIMIZERS)
        return cls(device.type, channels_last=True, subpixel_decoder=True, cuda_graph=False)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        if hasattr(model, "subpixel_decoder"):
            model.subpixel_decoder = self.subpixel_decoder
        return model.to(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)


SCHEDULES = ("constant", "cosine", "linear")


def step_size(lr: float, step: int, steps: int, schedule: str = "constant") -> float:
    """Adam's step size at `step` (from 0) of `steps`: constant (what cae.refine does, and `cae train --schedule
    constant`), or decayed towards 0 by the end, along a half cosine or a line."""
    if schedule == "cosine":
        return lr * 0.5 * (1 + math.cos(math.pi * step / steps))
    if schedule == "linear":
        return lr * (1 - step / steps)
    if schedule != "constant":
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    return lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate; in place where it is a tensor (a captured step reads that tensor)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


class TrainingState:
    """Every tensor a step changes (weights, buffers such as BatchNorm statistics, optimizer state), copied
    and put back in place: a graph's warm-up steps must not count as training."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
        self.model, self.optimizer = model, optimizer
        self.saved = {id(t): t.detach().clone() for t in self._tensors()}

    def _tensors(self):
        yield from self.model.parameters()
        yield from self.model.buffers()
        for state in self.optimizer.state.values():
            yield from (v for v in state.values() if isinstance(v, torch.Tensor))

    @torch.no_grad()
    def restore(self) -> None:
        for t in self._tensors():
            if id(t) in self.saved:
                t.copy_(self.saved[id(t)])
            else:
                # Optimizer state created by the warm-up: Adam's moments and step start at zero, and SGD's
                # momentum buffer at zero gives the same first step as the grad.clone() it starts from.
                t.zero_()
        for p in self.model.parameters():
            p.grad = None


class GraphedStep:
    """forward + backward + optimizer step, captured in a CUDA graph per batch shape and replayed.

    Capturing needs a few real steps first (kernel selection, lazy state); they run on copies' behalf:
    the weights, buffers and optimizer state are put back before capture, so the run trains exactly as
    the eager step would. If capture fails, the step falls back to eager and says so once.
    """

    def __init__(self, step, model: torch.nn.Module, optimizer: torch.optim.Optimizer, warmup_steps: int = 3):
        self.step, self.model, self.optimizer, self.warmup_steps = step, model, optimizer, warmup_steps
        self.graphs: dict[tuple, tuple] = {}
        self.failed = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.failed:
            return self.step(x)
        key = tuple(x.shape)
        if key not in self.graphs:
            try:
                self.graphs[key] = self._capture(x)
            except RuntimeError as e:
                log.warning("CUDA graph capture failed (%s); training continues with eager steps", e)
                self.failed = True
                return self.step(x)
        graph, static_x, static_loss = self.graphs[key]
        static_x.copy_(x)
        graph.replay()
        return static_loss.clone()

    def _capture(self, x: torch.Tensor):
        static_x = x.clone()
        state = TrainingState(self.model, self.optimizer)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup_steps):
                self.step(static_x)
        torch.cuda.current_stream().wait_stream(side)
        state.restore()  # in place: the graph records these very tensors
        graph = torch.cuda.CUDAGraph()
        pool = next(iter(self.graphs.values()))[0].pool() if self.graphs else None
        with torch.cuda.graph(graph, pool=pool):
            static_loss = self.step(static_x)
        return graph, static_x, static_loss


def make_optimizer_for(plan: StepPlan, name: str, params, lr: float, optimizers: dict) -> torch.optim.Optimizer:
    """The optimizer as the plan needs it: capturable, with its learning rate a device tensor, under a graph."""
    fused = True if name in GRAPHABLE_OPTIMIZERS else None
    if not plan.cuda_graph:
        return optimizers[name](params, lr, fused)
    params = list(params)
    optimizer = optimizers[name](params, torch.tensor(lr, device=params[0].device), fused)
    for group in optimizer.param_groups:
        group["capturable"] = True
    return optimizer
