"""`Retries`: the retry policy of a function, with Modal's validation and messages."""

from __future__ import annotations

from typing import Any

from ._backoff import exponential_delay
from .exception import InvalidError

__all__ = ["Retries"]


def _number(name: str, value: Any) -> float:
    # bool is an int subclass; `initial_delay=True` is always a mistake.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidError(f"`{name}` must be a number, not {type(value).__name__}")
    return value


class Retries:
    """A retry policy: how many times a failed input is retried, and how long to wait in between.

    The wait before retry number `n` (starting at 1) is `initial_delay * backoff_coefficient ** (n - 1)`
    seconds, capped at `max_delay`.

    ```python
    import homeport as modal

    app = modal.App()

    @app.function(retries=modal.Retries(max_retries=3, backoff_coefficient=2.0, initial_delay=1.0))
    def flaky():
        ...
    ```
    """

    __slots__ = ("backoff_coefficient", "initial_delay", "max_delay", "max_retries")

    def __init__(
        self,
        *,
        max_retries: int,
        backoff_coefficient: float = 2.0,
        initial_delay: float = 1.0,
        max_delay: float = 60.0,
    ) -> None:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int):
            raise InvalidError(f"`max_retries` must be an int, not {type(max_retries).__name__}")
        backoff_coefficient = _number("backoff_coefficient", backoff_coefficient)
        initial_delay = _number("initial_delay", initial_delay)
        max_delay = _number("max_delay", max_delay)

        if max_retries < 0:
            raise InvalidError(
                f"Invalid retries number: {max_retries}. Function retries must be non-negative."
            )
        if max_delay < 1:
            raise InvalidError(f"Invalid max_delay: {max_delay}. max_delay must be at least 1 second.")
        if max_delay > 60:
            raise InvalidError(f"Invalid max_delay argument: {max_delay}. Must be between 1-60 seconds.")
        if initial_delay < 0:
            raise InvalidError(f"Invalid initial_delay argument: {initial_delay}. Delay must be positive.")
        if initial_delay > 60:
            raise InvalidError(
                f"Invalid initial_delay argument: {initial_delay}. Must be between 0-60 seconds."
            )
        if not 1.0 <= backoff_coefficient <= 10.0:
            raise InvalidError(
                f"Invalid backoff_coefficient: {backoff_coefficient}. "
                "Coefficient must be between 1.0 (fixed-interval backoff) and 10.0"
            )

        self.max_retries = max_retries
        self.backoff_coefficient = float(backoff_coefficient)
        self.initial_delay = float(initial_delay)
        self.max_delay = float(max_delay)

    def delay_for_attempt(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (the first retry is attempt 1)."""
        return exponential_delay(attempt, self.initial_delay, self.backoff_coefficient, self.max_delay)

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_retries": self.max_retries,
            "backoff_coefficient": self.backoff_coefficient,
            "initial_delay": self.initial_delay,
            "max_delay": self.max_delay,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Retries:
        return cls(
            max_retries=data["max_retries"],
            backoff_coefficient=data.get("backoff_coefficient", 2.0),
            initial_delay=data.get("initial_delay", 1.0),
            max_delay=data.get("max_delay", 60.0),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Retries):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple(self.to_dict().values()))

    def __repr__(self) -> str:
        return (
            f"Retries(max_retries={self.max_retries}, backoff_coefficient={self.backoff_coefficient}, "
            f"initial_delay={self.initial_delay}, max_delay={self.max_delay})"
        )
