"""facerep-action-units: AU datasets (DISFA, BP4D), detection and intensity tasks, F1 and ICC."""
