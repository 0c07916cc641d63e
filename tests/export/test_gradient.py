import numpy as np
import onnx
import pytest
import torch

from export.gradient import export_decoder_gradient
from export.onnx_export import session
from cae.refine import onnx_gradient, refine_latents
from training.model import PCAAutoencoder, PCAAutoencoderConfig, for_inference


@pytest.fixture(scope="module")
def trained_like(tmp_path_factory):
    """A small pae model with random weights everywhere (the refiner's last layer too, so it is not PCA), and its gradient graph."""
    torch.manual_seed(0)
    model = PCAAutoencoder(PCAAutoencoderConfig(components=6, width=4, levels=3, tile=16))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
        for b in model.buffers():
            b.normal_(0, 0.1)
    model = for_inference(model).eval()
    path = tmp_path_factory.mktemp("gradient") / "gradient.onnx"
    diffs = export_decoder_gradient(model.decoder, components=6, stride=16, path=path)
    return model, path, diffs


def test_the_gradient_graph_matches_autograd_at_any_batch_and_grid(trained_like):
    model, path, diffs = trained_like
    assert set(diffs) == {"one tile", "a batch of 3x2 grids"} and max(diffs.values()) < 1e-4
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["latent", "image"] and [o.name for o in graph.output] == ["gradient", "mse"]
    # The backward operators ONNX lacks were written as forward ones.
    assert "ConvTranspose" in {node.op_type for node in graph.node}


def _torch_refined(model, latent, image, steps):
    z = latent.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=0.01)
    for _ in range(steps):
        loss = torch.log(((model.decoder(z) - image) ** 2).mean((1, 2, 3))).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return z.detach()


def test_refining_without_torch_follows_torch_adam_and_lowers_every_images_error(trained_like):
    model, path, _ = trained_like
    image = torch.rand(3, 3, 32, 16)
    with torch.no_grad():
        latent = model.encode(image)
    gradient = onnx_gradient(session(path))
    refined = refine_latents(gradient, latent.numpy(), image.numpy(), steps=20)
    torch.testing.assert_close(torch.as_tensor(refined), _torch_refined(model.requires_grad_(False), latent, image, 20), atol=1e-4, rtol=1e-3)
    _, before = gradient(latent.numpy(), image.numpy())
    _, after = gradient(refined, image.numpy())
    assert np.all(after < before)
    # Each image refines as it would alone: batching tiles does not change a result.
    alone = refine_latents(gradient, latent[1:2].numpy(), image[1:2].numpy(), steps=20)
    np.testing.assert_allclose(alone, refined[1:2], atol=1e-5)


def test_zero_steps_is_plain_encoding_and_negative_steps_are_refused(trained_like):
    _, path, _ = trained_like
    gradient = onnx_gradient(session(path))
    latent = np.ones((1, 6, 1, 1), np.float32)
    same = refine_latents(gradient, latent, np.zeros((1, 3, 16, 16), np.float32), steps=0)
    assert np.array_equal(same, latent) and same is not latent
    with pytest.raises(ValueError, match="steps must be >= 0"):
        refine_latents(gradient, latent, np.zeros((1, 3, 16, 16), np.float32), steps=-1)
