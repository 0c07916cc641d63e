"""A decoder's gradient as an ONNX graph, so a server without torch can refine a latent against it.

For a trained decoder the encoder's latent is not the best one: optimising each image's latent for
the decoder wins 0.6-0.9 dB over the pae family's projection (training.headroom). The graph here takes
a latent and the image it should reconstruct and returns the gradient that optimisation needs:

    latent (N, k, h, w), image (N, 3, h*stride, w*stride) in [0, 1]
      -> gradient (N, k, h, w) of sum over images of log(mean squared error), mse (N,)

The log makes each image's step independent of its error's scale (and of the other images in the
batch): the same loss as training's `psnr`. torch.onnx cannot export autograd itself, so the backward
pass is traced into plain operators first (make_fx), with the two backward operators ONNX lacks
written as the forward ones they are the adjoints of: a convolution's input gradient is the transposed
convolution with the same weights (and the other way round), nearest upsampling's is sum-pooling.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from torch._decomp import get_decompositions
from torch.fx.experimental.proxy_tensor import make_fx

from export.onnx_export import DEFAULT_OPSET, ParityError, drop_unordered_metadata, session
from training.metrics import per_image_mse

aten = torch.ops.aten
INPUTS, OUTPUTS = ("latent", "image"), ("gradient", "mse")


def _convolution_input_gradient(grad_out, input, weight, bias_sizes, stride, padding, dilation, transposed,
                                output_padding, groups, output_mask):
    if output_mask[1] or output_mask[2]:
        raise NotImplementedError("only the input's gradient: the decoder's weights are constants here")
    if transposed:
        return F.conv2d(grad_out, weight, None, stride, padding, dilation, groups), None, None
    # The transposed convolution's output padding that gives back the input's size (a strided convolution drops a remainder).
    extra = [input.shape[i + 2] - ((grad_out.shape[i + 2] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (weight.shape[i + 2] - 1) + 1)
             for i in range(2)]
    return F.conv_transpose2d(grad_out, weight, None, stride, padding, extra, groups, dilation), None, None


def _upsample_nearest_gradient(grad, output_size, input_size, scales_h=None, scales_w=None):
    sh, sw = output_size[0] // input_size[2], output_size[1] // input_size[3]
    return F.avg_pool2d(grad, (sh, sw)) * (sh * sw)


_DECOMPOSITIONS = {aten.convolution_backward.default: _convolution_input_gradient,
                   aten.upsample_nearest2d_backward.default: _upsample_nearest_gradient,
                   **get_decompositions([aten.threshold_backward])}


def log_mse_gradient(decoder: torch.nn.Module, state: dict, latent: torch.Tensor, image: torch.Tensor):
    """The gradient and each image's MSE, with autograd: what the exported graph computes."""
    def loss(z):
        mse = per_image_mse(torch.func.functional_call(decoder, state, (z,)), image)
        return mse.clamp_min(1e-10).log().sum(), mse
    return torch.func.grad(loss, has_aux=True)(latent)


def decoder_weights(decoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers by name: the state `log_mse_gradient` calls the decoder with."""
    return {k: v.detach() for k, v in [*decoder.named_parameters(), *decoder.named_buffers()]}


class DecoderGradient(torch.nn.Module):
    """The decoder's backward pass traced into forward operators, its weights held as buffers."""

    def __init__(self, decoder: torch.nn.Module, example_latent: torch.Tensor, example_image: torch.Tensor):
        super().__init__()
        decoder = decoder.eval()
        state = decoder_weights(decoder)
        self.names = list(state)
        for i, value in enumerate(state.values()):
            self.register_buffer(f"weight{i}", value.clone())
        # Weights as inputs while tracing: symbolic shapes (any N, h, w) need every tensor the trace meets to be one.
        self.traced = make_fx(lambda s, z, x: log_mse_gradient(decoder, s, z, x), decomposition_table=_DECOMPOSITIONS,
                              tracing_mode="symbolic")(state, example_latent, example_image)

    def forward(self, latent: torch.Tensor, image: torch.Tensor):
        return self.traced({n: getattr(self, f"weight{i}") for i, n in enumerate(self.names)}, latent, image)


def export_decoder_gradient(decoder: torch.nn.Module, components: int, stride: int, path: Path,
                            opset: int = DEFAULT_OPSET, tolerance: float = 1e-4) -> dict[str, float]:
    """Write the decoder's gradient graph to `path` (dynamic N, h, w), checked against autograd at two
    shapes; returns the largest relative difference of the gradient per case (raises ParityError past `tolerance`)."""
    latent, image = torch.randn(2, components, 2, 2), torch.rand(2, 3, 2 * stride, 2 * stride)  # 2x2: a grid of 1 would be specialised
    module = DecoderGradient(decoder, latent, image)
    n, h, w = torch.export.Dim("N"), torch.export.Dim("h"), torch.export.Dim("w")
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (latent, image), str(path), input_names=list(INPUTS), output_names=list(OUTPUTS),
                          opset_version=opset, dynamo=True, verbose=False, optimize=True, external_data=False,
                          dynamic_shapes=({0: n, 2: h, 3: w}, {0: n, 2: stride * h, 3: stride * w}))
    model = onnx.load(str(path))
    drop_unordered_metadata(model)
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    return gradient_parity(decoder, path, components, stride, tolerance)


def gradient_parity(decoder: torch.nn.Module, path: Path, components: int, stride: int, tolerance: float) -> dict[str, float]:
    sess = session(path)
    state = decoder_weights(decoder)
    generator = torch.Generator().manual_seed(0)
    diffs = {}
    for case, (n, h, w) in {"one tile": (1, 1, 1), "a batch of 3x2 grids": (3, 3, 2)}.items():
        latent = torch.randn(n, components, h, w, generator=generator)
        image = torch.rand(n, 3, h * stride, w * stride, generator=generator)
        with torch.no_grad():
            expected, _ = log_mse_gradient(decoder.eval(), state, latent, image)
        got = sess.run(None, {"latent": latent.numpy(), "image": image.numpy()})[0]
        diffs[case] = float(abs(torch.as_tensor(got) - expected).max() / expected.abs().max().clamp_min(1e-12))
    bad = {k: v for k, v in diffs.items() if not v <= tolerance}
    if bad:
        raise ParityError(f"{path.name} differs from autograd beyond {tolerance:g}: " + ", ".join(f"{k} {v:.3g}" for k, v in bad.items()))
    return diffs
