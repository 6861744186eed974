"""ffsecure: one-shot generative federated learning (FederatedFactory), hardened for deployment."""

__version__ = "0.1.0"
FORMAT_VERSION = 1
