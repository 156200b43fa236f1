"""The one exception type users see: a clear, one-line reason for refusing an input or a model file."""


class ItermaskError(ValueError):
    """Bad input or a bad model bundle. ``str(error)`` is a complete one-line message for the user."""
