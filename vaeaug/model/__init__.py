"""The VAE: its configuration (torch-free), the torch module, devices, and the safe ``.vae`` file format."""
