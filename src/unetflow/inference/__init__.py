"""The inference engine: a model on tiles (with test-time augmentation), block plans and tile budgets."""
