"""facerep-expression: expression datasets, the classification task and its metrics."""
