"""Training: data, the autoencoder family, the training loop, the sweep and the study's figures."""
