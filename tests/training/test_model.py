import pytest
import torch

from training.model import FIRST_MODEL, AutoencoderConfig, ConvAutoencoder, config_from_name, sweep_configs

SWEEP = sweep_configs()


def test_sweep_has_the_studys_36_configurations():
    assert len(SWEEP) == 36
    assert len({c.name for c in SWEEP}) == 36
    assert FIRST_MODEL in SWEEP


def test_first_model_is_the_assignments():
    model = ConvAutoencoder(FIRST_MODEL)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (3, 8, (3, 3)), (8, 12, (3, 3)), (12, 16, (3, 3)), (16, 12, (3, 3)), (12, 3, (3, 3))]
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 2
    assert FIRST_MODEL.name == "cae_l5_ch2_k3_s2"
    assert FIRST_MODEL.latent_size() == 8 * 8 * 16 == 1024


@pytest.mark.parametrize("config", SWEEP, ids=lambda c: c.name)
def test_every_sweep_model(config):
    torch.manual_seed(0)
    model = ConvAutoencoder(config)
    x = torch.rand(2, 3, 32, 32)
    z = model.encode(x)
    # The latent size formula: (32 / compression^2)^2 * 8 * channel_factor, whatever the layer count.
    side = 32 // config.compression**2
    assert z.shape == (2, 8 * config.channel_factor, side, side)
    assert z[0].numel() == config.latent_size() == side * side * 8 * config.channel_factor
    y = model.decode(z)
    assert y.shape == x.shape
    assert torch.isfinite(y).all() and (y >= 0).all() and (y <= 1).all()
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert convs == (3 if config.fewer_layers else 5)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model.decode_logits(z), x)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert config_from_name(config.name) == config


def test_fully_convolutional_at_other_sizes():
    model = ConvAutoencoder(FIRST_MODEL)
    assert model(torch.rand(1, 3, 48, 64)).shape == (1, 3, 48, 64)
    assert FIRST_MODEL.latent_shape(48, 64) == (16, 12, 16)
    with pytest.raises(ValueError, match="stride 4"):
        FIRST_MODEL.latent_shape(30, 32)


def test_activation_and_channel_options():
    config = AutoencoderConfig(activation="sigmoid", in_channels=1, out_channels=2)
    assert config.name == "cae_l5_ch2_k3_s2_sigmoid_io12"
    assert config_from_name(config.name) == config
    model = ConvAutoencoder(config)
    assert any(isinstance(m, torch.nn.Sigmoid) for m in model.encoder)
    assert model(torch.rand(3, 1, 32, 32)).shape == (3, 2, 32, 32)


@pytest.mark.parametrize("kwargs, message", [
    (dict(channel_factor=3), "channel_factor"),
    (dict(kernel_size=4), "odd"),
    (dict(compression=0), "compression"),
    (dict(activation="tanh"), "activation"),
])
def test_invalid_configs_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AutoencoderConfig(**kwargs)


@pytest.mark.parametrize("name", ["cae_l4_ch2_k3_s2", "vae_l5_ch2_k3_s2", "cae_l5_chx_k3_s2", "cae_l5_ch2_k3_s2_bogus", "cae"])
def test_bad_names_are_rejected(name):
    with pytest.raises(ValueError, match="not a model name"):
        config_from_name(name)


# The residual autoencoder the project ships.
from training.model import (ResidualAutoencoder, ResidualAutoencoderConfig, any_config_from_name,  # noqa: E402
                            autoencoder_config_from_dict, build_autoencoder, residual_config_from_name)


@pytest.mark.parametrize("config", [ResidualAutoencoderConfig(), ResidualAutoencoderConfig(width=8, downsamplings=2, latent_channels=4, blocks=0),
                                    ResidualAutoencoderConfig(width=8, blocks=2, in_channels=1, out_channels=2)], ids=lambda c: c.name)
def test_residual_autoencoder_shapes_and_names(config):
    assert residual_config_from_name(config.name) == any_config_from_name(config.name) == config
    assert autoencoder_config_from_dict(config.to_dict()) == config
    model = build_autoencoder(config)
    assert isinstance(model, ResidualAutoencoder)
    x = torch.rand(2, config.in_channels, 32, 48)
    z = model.encode(x)
    assert z.shape == (2, *config.latent_shape(32, 48))
    assert z[0].numel() == config.latent_size(32, 48)
    y = model.decode(z)
    assert y.shape == (2, config.out_channels, 32, 48) and (y >= 0).all() and (y <= 1).all()


def test_residual_latent_is_linear_and_blocks_start_as_identity():
    torch.manual_seed(0)
    model = build_autoencoder(ResidualAutoencoderConfig(width=8))
    z = model.encode(torch.rand(8, 3, 32, 32))
    assert (z < 0).any(), "no ReLU on the latent: negative values carry information too"
    block = next(m for m in model.modules() if m.__class__.__name__ == "ResidualBlock")
    h = torch.randn(1, 8, 4, 4)
    assert torch.equal(block(h), h)


@pytest.mark.parametrize("name", ["rae_w16_d3_z8", "rae_wx_d3_z8_b1", "rae_w16_d3_z8_b1_rgb", "rae_w0_d3_z8_b1"])
def test_bad_residual_names_are_rejected(name):
    with pytest.raises(ValueError):
        any_config_from_name(name)


def test_residual_stride_is_enforced():
    with pytest.raises(ValueError, match="multiple of the model's stride 8"):
        ResidualAutoencoderConfig().latent_shape(36, 32)
