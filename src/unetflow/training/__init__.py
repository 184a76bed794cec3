"""The training engine: settings, data, tile sampling, the trainer and weight averaging."""
