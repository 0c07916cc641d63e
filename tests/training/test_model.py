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


def _study_order_encode(model: ConvAutoencoder, x: torch.Tensor) -> torch.Tensor:
    """The study's layer order, conv -> activation -> pool, with the model's own convolutions."""
    convs = [m for m in model.encoder if isinstance(m, torch.nn.Conv2d)]
    act = torch.relu if model.config.activation == "relu" else torch.sigmoid
    s = model.config.compression
    pool = (lambda t: torch.nn.functional.max_pool2d(t, s)) if s > 1 else (lambda t: t)
    x = pool(act(convs[0](x)))
    if not model.config.fewer_layers:
        x = act(convs[1](x))
    return act(convs[-1](pool(x)))


@pytest.mark.parametrize("config", SWEEP[::5] + [AutoencoderConfig(activation="sigmoid"), AutoencoderConfig(fewer_layers=True, activation="sigmoid")],
                         ids=lambda c: c.name)
def test_pooling_before_the_activation_is_the_studys_model(config):
    # The model pools before the activation (cheaper); the outputs and gradients must be the study's.
    torch.manual_seed(0)
    model = ConvAutoencoder(config)
    x = torch.rand(4, 3, 32, 32)
    ours, reference = model.encode(x), _study_order_encode(model, x)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)
    grads = [torch.autograd.grad(z.square().sum(), list(model.encoder.parameters())) for z in (ours, reference)]
    for g_ours, g_reference in zip(*grads):
        torch.testing.assert_close(g_ours, g_reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("config", SWEEP[::5] + [AutoencoderConfig(kernel_size=5, compression=4)], ids=lambda c: c.name)
def test_the_sub_pixel_decoder_is_upsampling_then_convolution(config):
    # decode_logits runs each upsample + conv as one sub-pixel convolution; the decoder's layers one by
    # one (the study's model) must give the same outputs and gradients, at two sizes. In float64, so
    # that only a real difference (not float32 summation order) could fail it.
    torch.manual_seed(0)
    model = ConvAutoencoder(config).double()
    for height, width in ((32, 32), (48, 64)):
        z = model.encode(torch.rand(2, 3, height, width, dtype=torch.float64)).detach()
        ours, reference = model.decode_logits(z), model.decoder(z)
        torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-10)
        grads = [torch.autograd.grad(y.square().sum(), list(model.decoder.parameters())) for y in (ours, reference)]
        for g_ours, g_reference in zip(*grads):
            torch.testing.assert_close(g_ours, g_reference, rtol=1e-10, atol=1e-10)


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


def test_the_residual_decoder_runs_sub_pixel_too():
    torch.manual_seed(0)
    model = ResidualAutoencoder(ResidualAutoencoderConfig(width=8, downsamplings=2, latent_channels=4)).double()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)  # the residual blocks start at zero: make them count
    z = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(model.decode_logits(z), model.decoder(z), rtol=1e-10, atol=1e-10)


def test_residual_latent_is_linear_and_blocks_start_as_identity():
    torch.manual_seed(0)
    model = build_autoencoder(ResidualAutoencoderConfig(width=8))
    z = model.encode(torch.rand(8, 3, 32, 32))
    assert (z < 0).any(), "no ReLU on the latent: negative values carry information too"
    block = next(m for m in model.modules() if m.__class__.__name__ == "ResidualBlock")
    h = torch.randn(1, 8, 4, 4)
    assert torch.equal(block(h), h)


@pytest.mark.parametrize("name", ["rae_w16_d3_z8", "rae_wx_d3_z8_b1", "rae_w16_d3_z8_b1_rgb", "rae_w0_d3_z8_b1",
                                  "rae_16_d3_z8_b1", "rae_w+16_d3_z8_b1"])
def test_bad_residual_names_are_rejected(name):
    with pytest.raises(ValueError):
        any_config_from_name(name)


def test_residual_stride_is_enforced():
    with pytest.raises(ValueError, match="multiple of the model's stride 8"):
        ResidualAutoencoderConfig().latent_shape(36, 32)


# The autoencoder that starts as PCA.
from training.model import PCAAutoencoder, PCAAutoencoderConfig, multiply_adds_per_pixel, pca_config_from_name  # noqa: E402


def _pca_reconstruction(train: torch.Tensor, test: torch.Tensor, k: int) -> torch.Tensor:
    """PCA at k components of each 32x32 image, centred per channel, by SVD (the model fits by eigh)."""
    mean = train.double().mean((0, 2, 3)).view(1, -1, 1, 1)
    _, _, axes = torch.linalg.svd((train.double() - mean).flatten(1), full_matrices=False)
    coords = (test.double() - mean).flatten(1) @ axes[:k].T
    return (coords @ axes[:k]).view_as(test) + mean


@pytest.mark.parametrize("config", [PCAAutoencoderConfig(), PCAAutoencoderConfig(components=5, width=4, levels=2, tile=8),
                                    PCAAutoencoderConfig(encoder_width=4), PCAAutoencoderConfig(components=5, width=4, levels=2, tile=16, encoder_width=2)],
                         ids=lambda c: c.name)
def test_pca_autoencoder_shapes_and_names(config):
    assert pca_config_from_name(config.name) == any_config_from_name(config.name) == config
    model = build_autoencoder(config).eval()
    assert isinstance(model, PCAAutoencoder)
    h, w = 2 * config.tile, 3 * config.tile
    model.fit_pca(torch.randint(0, 256, (200, 3, h, w), dtype=torch.uint8).numpy())
    z = model.encode(torch.rand(2, 3, h, w))
    assert z.shape == (2, *config.latent_shape(h, w)) == (2, config.components, 2, 3)
    y = model.decode(torch.randn_like(z) * 100)
    assert y.shape == (2, 3, h, w) and y.min() == 0 and y.max() == 1  # clamped to the image range when served


@pytest.mark.parametrize("encoder_width", [0, 4], ids=["projection", "with an encoder CNN"])
def test_an_untrained_pca_autoencoder_is_pca(encoder_width):
    torch.manual_seed(0)
    # Images with 6 strong directions and a little noise, so the top axes are well separated.
    basis, train_codes = torch.randn(6, 3 * 8 * 8), torch.randn(300, 6) * torch.linspace(3, 1, 6)
    make = lambda codes: (0.5 + 0.04 * (codes @ basis + 0.1 * torch.randn(len(codes), 3 * 8 * 8))).clamp(0, 1).view(-1, 3, 8, 8)  # noqa: E731
    train, test = make(train_codes), make(torch.randn(20, 6))
    model = PCAAutoencoder(PCAAutoencoderConfig(components=4, width=4, levels=2, tile=8, encoder_width=encoder_width)).eval()
    model.fit_pca((train * 255).round().to(torch.uint8).numpy())
    quantised = (train * 255).round() / 255  # what fit_pca saw
    torch.testing.assert_close(model(test).double(), _pca_reconstruction(quantised, test, 4).clamp(0, 1), atol=2e-5, rtol=0)


def test_the_refiner_starts_at_zero_and_the_projections_stay_float32_under_autocast():
    model = PCAAutoencoder(PCAAutoencoderConfig(components=4, width=4, levels=2, tile=8))
    model.fit_pca(torch.randint(0, 256, (50, 3, 16, 16), dtype=torch.uint8).numpy())
    x = torch.rand(3, 3, 16, 16)
    torch.testing.assert_close(model.decoder(model.encode(x)), model.decoder.project_back(model.encode(x)), atol=0, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.encode(x).dtype == model.decoder.project_back(model.encode(x)).dtype == torch.float32
    model.train()
    assert model.decode(torch.randn(1, 4, 2, 2) * 100).abs().max() > 1, "no clamp in training: it would stop the gradient"


def test_for_inference_folds_the_learned_change_into_the_axes():
    from training.model import for_inference

    model = PCAAutoencoder(PCAAutoencoderConfig(components=4, width=4, levels=2, tile=8)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    folded = for_inference(model)
    assert "encoder.change" not in folded.state_dict() and "decoder.project_back.change" not in folded.state_dict()
    assert model.encoder.change is not None, "the trained model itself is left as it is"
    x = torch.rand(2, 3, 16, 24)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(folded.encoder.axes, model.encoder.axes + model.encoder.STEP * model.encoder.change)


def test_for_inference_folds_the_projection_inside_an_encoder_cnn():
    from training.model import for_inference

    model = PCAAutoencoder(PCAAutoencoderConfig(components=4, width=4, levels=2, tile=8, encoder_width=2)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    folded = for_inference(model)
    assert not [key for key in folded.state_dict() if key.endswith("change")]
    x = torch.rand(2, 3, 16, 24)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)


def test_a_pca_autoencoder_grows_an_encoder_cnn_from_trained_weights_without_one():
    base = PCAAutoencoder(PCAAutoencoderConfig(components=4, width=4, levels=2, tile=8)).eval()
    with torch.no_grad():
        for p in base.parameters():
            p.normal_(0, 0.1)
    grown_config = PCAAutoencoderConfig(components=4, width=4, levels=2, tile=8, encoder_width=2)
    assert grown_config.grows_from == base.config.name == "pae_k4_w4_l2_t8"
    grown = PCAAutoencoder(grown_config).eval()
    grown.load_weights(base.state_dict())
    x = torch.rand(2, 3, 16, 8)
    with torch.no_grad():
        # The CNN's correction starts at zero, so the grown model is the trained one, output for output.
        torch.testing.assert_close(grown(x), base(x))
        torch.testing.assert_close(grown.encoder.projection.change, base.encoder.change)
    # Its own weights (after training, keys under encoder.projection) load as they are; others are refused.
    PCAAutoencoder(grown_config).load_weights(grown.state_dict())
    with pytest.raises(RuntimeError, match="size mismatch"):
        PCAAutoencoder(PCAAutoencoderConfig(components=4, width=8, levels=2, tile=8, encoder_width=2)).load_weights(base.state_dict())


def test_a_pca_autoencoder_costs_less_than_the_default_limit():
    # Projections (2 x 3,072 x 128 per 1,024 pixels) and the refiner: within export.choose's default limit.
    from export.choose import MAX_DEFAULT_MULTIPLY_ADDS

    assert 768 < multiply_adds_per_pixel("pae_k128_w16_l3") < MAX_DEFAULT_MULTIPLY_ADDS


@pytest.mark.parametrize("name", ["pae_k128_w16", "pae_k0_w16_l3", "pae_k128_w16_l3_t30", "pae_k128_w16_l7", "pae_k4000_w16_l3",
                                  "pae_128_w16_l3", "pae_k128_w16_3", "pae_k128_w16_l3_e8_t16", "pae_k128_w16_l3_e8_e8",
                                  "pae_k128_w16_l3_x8", "pae_k128_w16_l3_e", "pae_k128_w16_l3_t12_e8", "pae_k128_w16_l3_t32_e8_e8"])
def test_bad_pca_names_are_rejected(name):
    with pytest.raises(ValueError):
        any_config_from_name(name)
