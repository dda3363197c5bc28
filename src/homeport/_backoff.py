"""Exponential backoff: the one formula behind retry delays and crash-loop restarts.

A leaf module (it imports nothing of ours and does no I/O), so the SDK's `Retries`, the control plane's
retry timer and the scheduler's restart backoff all compute delays the same way.
"""

from __future__ import annotations


def exponential_delay(attempt: int, initial: float, coefficient: float, cap: float) -> float:
    """Seconds to wait before attempt number `attempt` (the first is 1): `initial * coefficient ** (attempt - 1)`,
    at most `cap`."""
    if attempt < 1:
        raise ValueError(f"attempt starts at 1, got {attempt}")
    try:
        delay = initial * coefficient ** (attempt - 1)
    except OverflowError:  # absurd attempt numbers: the cap, not a crash
        return cap
    return min(delay, cap)


def retry_delay(policy: dict, attempt: int) -> float:
    """The wait before retry number `attempt` of a `Retries` policy in its wire form (`Retries.to_dict()`)."""
    return exponential_delay(attempt, policy["initial_delay"], policy["backoff_coefficient"], policy["max_delay"])
