"""Operators of the CloudBlue Connect provider (requests: :mod:`.requests`; usage: :mod:`.usage`)."""
