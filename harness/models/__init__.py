"""Backbones as loaded models: the Backbone contract, hub loading, the embedding cache."""
