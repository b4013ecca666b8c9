"""facerep-pros: ProS prototype-based self-distillation and face-aware curation."""

__version__ = "0.1.0"
