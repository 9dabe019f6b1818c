"""The torch-free augmentation core: settings, keys and noise, labels, image codecs, the latent moves, the backend
interface and the one augmentation sequence.
"""
