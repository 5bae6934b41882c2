"""Command-line tools (flask --app chatapp ...)."""


def init_app(app) -> None:
    """Register the commands."""
