"""Triggers of the CloudBlue Connect provider (run in the triggerer, async-safe look-ups only)."""
