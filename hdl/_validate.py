"""Argument checks shared by every layer (messages name the argument).

The one integer validator of the package: the components, the configuration, the number
formats, the golden model and the PRNG all call :func:`check_int`.
"""

from numbers import Integral

__all__ = ["check_int", "read_only"]


def check_int(name: str, value, lo: int | None = None, hi: int | None = None, *,
              numeric_api: bool = False) -> int:
    """Return ``value`` as a Python ``int`` if it is an integer in ``[lo, hi]`` (``None``:
    unbounded); else raise ``TypeError`` (not an integer; ``bool`` is refused) or ``ValueError``
    (out of range). numpy integer scalars are accepted.

    Messages: ``"n_max must be in [1, 8], not 0"`` (constructors, Amaranth's style);
    ``numeric_api=True`` gives numpy's style that the golden model's API has always used,
    ``"n must be in [1, 2], got 3"`` and ``"must be an integer, not str 'x'"``."""
    if not isinstance(value, Integral) or isinstance(value, bool):
        what = f"{type(value).__name__} {value!r}" if numeric_api else repr(value)
        raise TypeError(f"{name} must be an integer, not {what}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        if hi is None:
            rng = f">= {lo}"
        elif lo is None:
            rng = f"<= {hi}"
        else:
            rng = f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {rng}, {'got' if numeric_api else 'not'} {value}")
    return value


def read_only(attr: str, doc: str | None = None) -> property:
    """A read-only property returning ``self.<attr>``: how the components expose their
    validated constructor parameters (``data_width = read_only("_data_width")``)."""
    return property(lambda self: getattr(self, attr), doc=doc)
