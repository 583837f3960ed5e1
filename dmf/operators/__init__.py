"""Operators' console and API: the domain logic behind ``triggers/operators_api.py`` (no Functions imports)."""


class OperatorError(Exception):
    """An operator's request that cannot be done; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status
