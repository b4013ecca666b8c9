"""facerep-landmarks: landmark datasets, heads, the alignment task and NME metrics."""
