"""facerep-lafs: landmark-based self-distillation (LAFS) and the landmark ViT it trains."""

__version__ = "0.1.0"
