"""Wire formats: the facts hardware, host driver, compiler and reports must agree on.

One home for each encoding that crosses a boundary (``docs/architecture.md``, "Wire formats").
The hardware imports it directly; the compiler (``gen/``), the driver (``sim/host``) and the
report writers import it from here, never by instantiating hardware.

Pure Python (``amaranth.lib.enum`` and integers): no numpy, nothing elaborated.
"""

from __future__ import annotations

from amaranth.lib import enum

__all__ = ["Phase"]


# -- layer phases ---------------------------------------------------------------------------------

class Phase(enum.Enum, shape=2):
    """The PE array's layer phase (the PE's ``mode`` input). ``Phase.from_name("fp")`` maps the
    lower-case names the mapper and the drivers use."""
    FP = 0      # forward: sparse activation rows x W_fwd kernel rows
    BP = 1      # backward input: sparse dY rows x flipped W_bwd kernel rows
    WG = 2      # weight gradient: sparse dY rows x dense activation rows

    @classmethod
    def from_name(cls, name: str) -> "Phase":
        try:
            return cls[name.upper()]
        except (KeyError, AttributeError):
            raise ValueError(f"phase must be one of {[p.name.lower() for p in cls]}, "
                             f"not {name!r}") from None
