"""End-to-end sparse dictionary learning (Braun et al., 2024) on TransformerLens 4 models."""
