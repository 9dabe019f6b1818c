"""Fitting a VAE: the training loop, streamed data, torchrun set-up and the fit-time classic transform."""
