"""Constructor-argument checks shared by the components (messages name the argument)."""

__all__ = ["check_int"]


def check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    """Return ``value`` if it is an ``int`` in ``[lo, hi]``; else raise ``TypeError``/``ValueError``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be in {rng}, not {value}")
    return value
