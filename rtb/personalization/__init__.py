"""Model-level protection against personalization (PersGuard, reconstructed)."""
