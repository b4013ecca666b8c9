"""facerep-recognition: face verification on LFW-style pair lists with margin-softmax heads."""

__version__ = "0.1.0"
