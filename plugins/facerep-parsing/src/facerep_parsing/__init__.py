"""facerep-parsing: face parsing datasets, FPN + UPerHead, dataset-level F1."""
