"""Train one autoencoder: read top to bottom.

A run folder holds everything about a run and is all that export or resume need:

    config.json      the resolved model and training configuration
    checkpoint.pt    weights, optimizer, epoch, history, data split and, once finished, test metrics
    metrics.csv      per-epoch train/validation BCE, MSE, PSNR, SSIM (rewritten from the checkpoint)
    steps.csv        the training loss at every optimizer step (for learning-rate plots)
    loss_curve.png   the curves of metrics.csv
    result.json      final test metrics, written when the run finishes

A killed run started again with the same arguments resumes after its last finished epoch.
"""

from __future__ import annotations

import csv
import json
import math
import platform
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from training.config import TrainConfig, default_train_config
from training.data import ImageArray, Split, load_images, split_indices
from training.run import CHECKPOINT, DataFacts, Run, RunState  # noqa: F401 (CHECKPOINT re-exported)
from training.augment import WeightAverage, augment, epoch_generator
from training.headroom import refine_latents
from training.step import GraphedStep, StepPlan, make_optimizer_for, set_lr, step_size
from training.metrics import METRIC_NAMES, batch_sums, per_image_mse
from training.model import FIRST_MODEL, MODEL_CONFIGS, PCAAutoencoderConfig, build_autoencoder



OPTIMIZERS = {
    "adam": lambda params, lr, fused: torch.optim.Adam(params, lr=lr, fused=fused),
    "adamw": lambda params, lr, fused: torch.optim.AdamW(params, lr=lr, fused=fused),
    "sgd": lambda params, lr, fused: torch.optim.SGD(params, lr=lr, momentum=0.9, fused=fused),
    "rmsprop": lambda params, lr, fused: torch.optim.RMSprop(params, lr=lr),
}

# The progress bar shows the loss every this many steps (each read waits for the device).
BAR_EVERY = 50
# Fields that may change between a run and its resumption without invalidating it.
RESUMABLE_CHANGES = {"epochs", "device", "eval_batch_size"}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but torch sees no CUDA device")
    return device


def describe_hardware(device: torch.device) -> str:
    """What trains, in words: the GPU's name, or the CPU's model and the threads torch uses."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}, torch {torch.__version__})"
    model = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    threads = torch.get_num_threads()
    return f"{model}, {threads} thread{'' if threads == 1 else 's'} (torch {torch.__version__})"


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """bf16 autocast where the hardware computes it natively (measured ~1.5x faster on an AVX-512 BF16
    CPU for the first model, same test BCE); fp32 elsewhere. Metrics are always computed in fp32."""
    if name == "fp32":
        return torch.float32
    if name == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        # Measured on an H100 (the GPU training issue): the study's tiny models ran faster in fp32 than under
        # bf16 autocast (54,537 vs 49,225 images/s at batch 256), whose casts are more launches. TF32 stays on.
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        return torch.float32
    return torch.bfloat16 if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32


def images_on_device(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, H, W, C) on `device`, the layout `batches` gathers from.

    Kept as uint8 (a quarter of float32's memory) and channels-last, so that a batch is one gather and
    one conversion, already in the memory format the convolutions run fastest in.
    """
    return torch.from_numpy(images).to(device).permute(0, 2, 3, 1).contiguous()


def batches(images_nhwc: torch.Tensor, indices: np.ndarray, batch_size: int, device: torch.device, channels_last: bool = True):
    """Yield float (B, C, H, W) batches in [0, 1], channels-last (or contiguous), of `images_on_device` rows `indices`."""
    # One upload of the whole order: a pageable host-to-device copy per batch would make the host wait for the
    # device's queue every step (measured on an H200: the sweep's batch-32 trials stalled on it).
    order = torch.as_tensor(indices, device=images_nhwc.device)
    for start in range(0, len(indices), batch_size):
        idx = order[start : start + batch_size]
        # (B, H, W, C) -> permuted view (B, C, H, W) with channels-last strides; .float() keeps them.
        x = images_nhwc.index_select(0, idx).to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
        yield x if channels_last else x.contiguous()


@torch.no_grad()
def evaluate(task, model: torch.nn.Module, images: torch.Tensor, indices: np.ndarray, batch_size: int, device: torch.device) -> dict:
    """The task's metrics, each a mean over the images `indices`, in fp32."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    for x in batches(images, indices, batch_size, device):
        for k, v in task.batch_sums(model, x).items():
            sums[k] = sums.get(k, 0.0) + v
    model.train(was_training)
    return task.finish({k: v / max(1, len(indices)) for k, v in sums.items()})


def reconstruction_loss(output: torch.Tensor, target: torch.Tensor, kind: str, logits: bool = True) -> torch.Tensor:
    """`output` is logits (a sigmoid makes the image), or the image itself where `logits` is False (BCE needs logits)."""
    output = output.float()
    if kind == "bce":
        if not logits:
            raise ValueError("BCE needs a model that outputs logits")
        return F.binary_cross_entropy_with_logits(output, target)
    image = torch.sigmoid(output) if logits else output
    if kind == "psnr":
        # The score is the mean over images of each one's PSNR, -10 log10(MSE_i): minimising the mean of
        # log MSE_i optimises it directly, where plain MSE lets the hardest images dominate. The floor keeps
        # a perfectly reconstructed (flat) image from driving the loss to -inf.
        return per_image_mse(image, target).clamp_min(1e-8).log().mean()
    return F.mse_loss(image, target)


def autocast(device: torch.device, dtype: torch.dtype):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


class ReconstructionTask:
    """What `train` needs to know about a kind of model: here an autoencoder that reconstructs its input.

    The other kind is training.colorize.ColorizationTask; both give a name, build the model, compute the
    loss of a batch and each metric's per-image sums.
    """

    kind = "reconstruction"
    metric_names = METRIC_NAMES

    def __init__(self, model_config, loss: str, refine_steps: int = 0, refine_lr: float = TrainConfig.refine_lr):
        self.config, self.loss_kind, self.name = model_config, loss, model_config.name
        self.refine_steps, self.refine_lr = refine_steps, refine_lr

    def select(self, images: np.ndarray, split: Split) -> Split:
        return split

    def build(self, images: np.ndarray, train_indices: np.ndarray, weights: dict | None = None) -> torch.nn.Module:
        model = build_autoencoder(self.config)
        if weights is not None:
            getattr(model, "load_weights", model.load_state_dict)(weights)
        elif hasattr(model, "fit_pca"):
            model.fit_pca(images[train_indices])
        return model

    def loss(self, model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        with autocast(x.device, dtype):
            z = model.encode(x)
        loss = self._decoded_loss(model, z, x, dtype)
        if self.refine_steps:
            # Semi-amortised: the decoder also learns from the latents the service's refinement would find
            # (fp32 Adam from the encoder's, no gradient through the steps), so that refining wins more.
            refined = refine_latents(model, x, z, self.refine_steps, self.refine_lr)
            loss = loss + self._decoded_loss(model, refined, x, dtype)
        return loss

    def _decoded_loss(self, model: torch.nn.Module, z: torch.Tensor, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        with autocast(x.device, dtype):
            output = model.decode_logits(z) if model.output_is_logits else model.decode(z)
        return reconstruction_loss(output, x, self.loss_kind, logits=model.output_is_logits)

    def batch_sums(self, model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
        return batch_sums(model.decode_logits(model.encode(x)), x)

    def finish(self, means: dict[str, float]) -> dict[str, float]:
        return means

    def summary(self, model: torch.nn.Module) -> dict:
        return {"latent_size": self.config.latent_size(), "parameters": model.num_parameters()}


def task_kind(model_config) -> str:
    """reconstruction (an autoencoder) | colorization: the one place a model's kind is read off its config."""
    return "reconstruction" if isinstance(model_config, MODEL_CONFIGS) else "colorization"


def make_task(model_config, config: TrainConfig):
    if task_kind(model_config) == "reconstruction":
        if config.min_colourfulness:
            raise ValueError("min_colourfulness is for colorizers; an autoencoder has no colourfulness to keep")
        if config.loss == "bce" and isinstance(model_config, PCAAutoencoderConfig):
            raise ValueError(f"{model_config.name} outputs pixels, not logits: train it with loss psnr or mse, not bce")
        return ReconstructionTask(model_config, config.loss, config.refine_steps, config.refine_lr)
    if config.refine_steps:
        raise ValueError("refine_steps is for autoencoders: a colorizer has no latent to refine")
    from training.colorize import ColorizationTask

    return ColorizationTask(model_config, config.loss, config.min_colourfulness)


def train_step(task, model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """One optimizer step on the RGB batch x; the model runs under autocast to `dtype` unless fp32."""
    loss = task.loss(model, x, dtype)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def make_optimizer(name: str, model: torch.nn.Module, lr: float, plan: StepPlan | None = None) -> torch.optim.Optimizer:
    # Fused kernels (one per step, not one per parameter tensor) where torch has them; capturable under a graph.
    plan = plan or StepPlan.for_device(next(model.parameters()).device, name, graphs=False)
    return make_optimizer_for(plan, name, model.parameters(), lr, OPTIMIZERS)


def portable_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state dict as any device can load it: learning rates as numbers, not capturable."""
    state = optimizer.state_dict()
    for group in state["param_groups"]:
        if isinstance(group.get("lr"), torch.Tensor):
            group["lr"] = float(group["lr"])
        if "capturable" in group:
            group["capturable"] = False
    return state


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _write_outputs(out: Path, state: RunState, task, plot: bool) -> None:
    if state.history:
        def write_csv(p):
            with open(p, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(state.history[0]))
                w.writeheader()
                w.writerows(state.history)
        _atomic_write(out / "metrics.csv", write_csv)
        if plot:
            plot_loss_curve(state.history, out / "loss_curve.png", title=task.name, metrics=task.metric_names)

    def write_steps(p):
        with open(p, "w", newline="") as f:
            f.write("step,loss\n")
            f.writelines(f"{i},{v:.6f}\n" for i, v in enumerate(state.steps))
    _atomic_write(out / "steps.csv", write_steps)


def plot_loss_curve(history: list[dict], path: Path, title: str = "", metrics=METRIC_NAMES) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.5 * len(metrics), 3.2))
    for ax, metric in zip(axes, metrics):
        ax.plot(epochs, [h[f"train_{metric}"] for h in history], "o-", label="train")
        ax.plot(epochs, [h[f"val_{metric}"] for h in history], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(metric.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    _atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=90))
    plt.close(fig)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """A run's checkpoint as the plain dict on disk; training.run.Run is the typed reading of it."""
    return torch.load(path, map_location=map_location, weights_only=False)


def model_from_checkpoint(ckpt: dict) -> torch.nn.Module:
    return Run.from_dict(ckpt).model()


def train(
    model_config=FIRST_MODEL,
    config: TrainConfig | None = None,
    out: str | os.PathLike = "runs/first",
    data: ImageArray | None = None,
    progress: bool = True,
) -> dict:
    """Train (or resume) one run in `out`; returns its result (test metrics and facts about the run).

    `model_config` is an AutoencoderConfig (reconstruction) or a ColorizerConfig (colorization); without
    `config`, the task's defaults (training.config.TRAIN_DEFAULTS, the same as the `cae` commands').
    `data` lets a caller that trains many models (the sweep) decode the images once.
    """
    out = Path(out)
    config = config or default_train_config(task_kind(model_config))
    device = resolve_device(config.device)
    dtype = resolve_precision(config.precision, device)
    data = data if data is not None else load_images(config.data)
    out.mkdir(parents=True, exist_ok=True)  # after the data loaded: a bad --data leaves no empty run folder
    task = make_task(model_config, config)
    split = task.select(data.images, split_indices(len(data), seed=config.split_seed, fraction=config.fraction))
    # A fixed sample of training images, as many as the validation split, for the train-side metrics.
    train_probe = split.train[: len(split.val)]

    torch.manual_seed(config.seed)
    # A refining step runs an optimizer of its own inside: not one a CUDA graph captures.
    plan = StepPlan.for_device(device, config.optimizer, graphs=not config.refine_steps)
    ckpt_path = out / CHECKPOINT
    state = RunState()
    init = run = None
    if ckpt_path.exists():
        run = Run.load(ckpt_path, map_location=device)
        _check_resumable(run, task, config)
        start_weights = run.train_weights if run.train_weights is not None else run.weights
    elif config.init:  # only a new run starts from --init: a resumed one has its own weights
        init = _init_run(config.init, task)
        state.init = init_facts(init)
        start_weights = init.weights
    else:
        start_weights = None
    # Built from the weights it starts with: no initialisation from the data (a PCA fit) that they would replace.
    model = plan.prepare(task.build(data.images, split.train, start_weights).to(device))
    optimizer = make_optimizer(config.optimizer, model, config.lr, plan)
    ema_start = {}  # where a resumed run's moving average stands
    if run is not None:
        if config.ema:
            ema_start = {"weights": run.weights, "updates": run.state.epoch * math.ceil(len(split.train) / config.batch_size)}
        lrs = [group["lr"] for group in optimizer.param_groups]
        optimizer.load_state_dict(run.optimizer)
        for group, lr in zip(optimizer.param_groups, lrs):
            if isinstance(lr, torch.Tensor):  # keep the device tensor a captured step reads
                lr.fill_(float(group["lr"]))
                group["lr"], group["capturable"] = lr, True
        state = run.state
        if state.epoch > config.epochs:
            raise ValueError(f"{ckpt_path} has already trained {state.epoch} epochs, more than the {config.epochs} asked for")
        if state.epoch == config.epochs and state.test is not None:
            return _result(task, config, state, split, data, model)
        if state.epoch < config.epochs:
            state.test = None  # more epochs asked for than were run: test again at the end
    ema = WeightAverage(model, config.ema, **ema_start) if config.ema else None
    # What is evaluated, saved as the run's weights and exported: the moving average when there is one.
    shipped = ema.module if ema is not None else model
    hardware = describe_hardware(device)
    if not state.hardware or state.hardware[-1] != hardware:
        state.hardware.append(hardware)
    _atomic_write(out / "config.json", lambda p: p.write_text(json.dumps({"task": task.kind, "model": asdict(model_config), "train": asdict(config), "name": task.name}, indent=2)))

    # The decoded uint8 images stay on the device: no host-to-device copy or collation per batch.
    images = images_on_device(data.images, device)
    steps_per_epoch = math.ceil(len(split.train) / config.batch_size)
    step = lambda x: train_step(task, model, optimizer, x, dtype)  # noqa: E731
    if plan.cuda_graph:
        step = GraphedStep(step, model, optimizer)
    model.train()
    for epoch in range(state.epoch + 1, config.epochs + 1):
        started = time.perf_counter()
        # The order depends on (seed, epoch) only, so a resumed run sees the batches it would have seen.
        order = np.random.default_rng([config.seed, epoch]).permutation(split.train)
        generator = epoch_generator(device, config.seed, epoch)
        bar = tqdm(batches(images, order, config.batch_size, device, plan.channels_last), total=steps_per_epoch, disable=not progress,
                   desc=f"{task.name} epoch {epoch}/{config.epochs}", leave=False, dynamic_ncols=True)
        # The step losses stay on the device until the epoch ends: reading one back each step (.item()) would
        # make the host wait for the device every step, and on a GPU that wait is most of a small model's step.
        losses = torch.empty(steps_per_epoch, device=device)
        for i, x in enumerate(bar):
            if config.schedule == "cosine":
                # A function of the position in the run only, so a resumed run continues the same curve.
                set_lr(optimizer, step_size(config.lr, (epoch - 1) * steps_per_epoch + i, config.epochs * steps_per_epoch, "cosine"))
            loss = step(augment(x, config.augment, generator))
            if ema is not None:
                ema.update(model)
            losses[i] = loss
            if progress and i % BAR_EVERY == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
        logged = [i for i in range(steps_per_epoch) if i % config.log_every == 0 or i == steps_per_epoch - 1]
        state.steps.extend(losses[logged].tolist())
        state.train_seconds += time.perf_counter() - started
        train_metrics = evaluate(task, shipped, images, train_probe, config.eval_batch_size, device)
        val_metrics = evaluate(task, shipped, images, split.val, config.eval_batch_size, device)
        state.history.append({"epoch": epoch, "seconds": round(state.train_seconds, 2),
                              **{f"train_{k}": v for k, v in train_metrics.items()},
                              **{f"val_{k}": v for k, v in val_metrics.items()}})
        state.epoch = epoch
        if epoch == config.epochs:
            state.test = evaluate(task, shipped, images, split.test, config.eval_batch_size, device)
        _save(ckpt_path, model, optimizer, task, config, state, split, data, ema)
        # Drawing the curve costs ~0.5 s, as much as a sweep trial's epoch: only at the end or for slow epochs.
        slow = state.history[-1]["seconds"] - (state.history[-2]["seconds"] if len(state.history) > 1 else 0) > 30
        _write_outputs(out, state, task, plot=epoch == config.epochs or slow)
        if progress:
            tqdm.write(f"{task.name} epoch {epoch}: validation " + " ".join(f"{k} {v:.4g}" for k, v in val_metrics.items()))
    if state.test is None:  # a run stopped early, now asked for exactly the epochs it has
        state.test = evaluate(task, shipped, images, split.test, config.eval_batch_size, device)
        _save(ckpt_path, model, optimizer, task, config, state, split, data, ema)
        _write_outputs(out, state, task, plot=True)
    result = _result(task, config, state, split, data, model)
    _atomic_write(out / "result.json", lambda p: p.write_text(json.dumps(result, indent=2)))
    return result


def _check_resumable(run: Run, task, config: TrainConfig) -> None:
    if run.kind != task.kind or run.model_config != task.config:
        raise ValueError(f"{run.path} holds a different model ({run.name}); use another output folder")
    saved = asdict(run.train_config)
    changed = sorted(k for k, v in asdict(config).items() if k not in RESUMABLE_CHANGES and saved[k] != v)
    if changed:
        detail = ", ".join(f"{k}: {saved[k]!r} -> {getattr(config, k)!r}" for k in changed)
        raise ValueError(f"{run.path} was trained with other settings ({detail}); use another output folder")


def _init_run(folder: str, task) -> Run:
    """The finished run a fine-tuning run starts from; it must hold the same network, or the one this
    network grows from (a pae model with an encoder CNN from the same without)."""
    run = Run.load(folder)
    if run.kind != task.kind or run.name not in (task.name, getattr(task.config, "grows_from", task.name)):
        raise ValueError(f"--init {folder} holds {run.kind} model {run.name}, not {task.name}: a run starts only from the same network"
                         " (or, for a pae model with an encoder CNN, the same without one)")
    if not run.finished:
        raise ValueError(f"--init {folder} has not finished training ({run.state.epoch} epochs so far)")
    return run


def init_facts(run: Run) -> dict:
    """What a fine-tuned run records of the run it started from: enough to say how it was made."""
    return {"run": str(run.folder), "name": run.name, "model": asdict(run.model_config), "train": asdict(run.train_config),
            "epochs": run.state.epoch, "train_seconds": round(run.state.train_seconds, 2), "hardware": run.state.hardware,
            "test": run.state.test, "init": run.state.init,
            **({"recovered": run.state.recovered["from"]} if run.state.recovered else {})}


def _data_facts(data: ImageArray, split: Split) -> DataFacts:
    return DataFacts(source=data.source, checksum=data.checksum, split_seed=split.seed, fraction=split.fraction,
                     sizes={"train": len(split.train), "val": len(split.val), "test": len(split.test)})


def _save(path, model, optimizer, task, config, state, split, data, ema=None) -> None:
    run = Run(path=path, kind=task.kind, name=task.name, model_config=task.config, train_config=config, state=state,
              data=_data_facts(data, split), optimizer=portable_optimizer_state(optimizer),
              weights=(ema.module if ema is not None else model).state_dict(),
              train_weights=model.state_dict() if ema is not None else None)
    _atomic_write(path, lambda p: torch.save(run.to_dict(), p))


def _result(task, config, state: RunState, split, data, model) -> dict:
    return {
        "name": task.name,
        "task": task.kind,
        "model": asdict(task.config),
        "train": asdict(config),
        **task.summary(model),
        "epochs": state.epoch,
        "train_seconds": round(state.train_seconds, 2),
        "hardware": state.hardware,
        "images_per_second": round(state.epoch * len(split.train) / max(state.train_seconds, 1e-9), 1),
        "test": state.test,
        "val": {k.removeprefix("val_"): v for k, v in state.history[-1].items() if k.startswith("val_")},
        "data": asdict(_data_facts(data, split)),
        **({"init": state.init} if state.init else {}),
    }


def with_overrides(config: TrainConfig, **kwargs) -> TrainConfig:
    return replace(config, **{k: v for k, v in kwargs.items() if v is not None})
