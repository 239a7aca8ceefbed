"""Sensors of the CloudBlue Connect provider."""
