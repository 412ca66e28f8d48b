"""File names built from user strings (configuration and network names, block names) stay
inside their output folder: the one check every writer uses."""

from __future__ import annotations

from pathlib import Path

__all__ = ["inside"]


def inside(folder: str | Path, *parts: str) -> Path:
    """``folder / parts...``, resolved, or ``ValueError`` when the result would leave
    ``folder`` (an absolute part, ``..``, a symbolic link pointing out)."""
    base = Path(folder).resolve()
    path = base.joinpath(*parts).resolve()
    if path != base and base not in path.parents:
        raise ValueError(f"{'/'.join(parts)!r} would leave the folder {str(base)!r}")
    return path
