"""Figure helpers shared by every layer: a headless matplotlib and one way to save a figure.

Keeping these in one place means every ``--plot`` option accepts the same formats and fails
the same way: a :class:`~qkdtwin.errors.ConfigError` naming the file, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qkdtwin.errors import ConfigError

__all__ = ["PLOT_SUFFIXES", "save_figure", "subplots"]

#: File formats every ``--plot`` option writes (chosen by the suffix).
PLOT_SUFFIXES = (".png", ".svg")


def subplots(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """Return ``matplotlib.pyplot.subplots(*args, **kwargs)`` on the non-interactive backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig: Any, path: Path | str, *, dpi: float | None = None) -> Path:
    """Lay out, save and close ``fig``; the format follows the suffix (.png or .svg).

    Raises
    ------
    ConfigError
        If the suffix is not .png or .svg, or the file cannot be written.
    """
    import matplotlib.pyplot as plt

    out = Path(path)
    try:
        if out.suffix.lower() not in PLOT_SUFFIXES:
            raise ConfigError(
                f"plot file must end in .png or .svg, got {out.name!r}",
                field="plot",
                value=str(out),
                allowed=", ".join(PLOT_SUFFIXES),
            )
        fig.tight_layout()
        fig.savefig(out, dpi=dpi)
    except OSError as exc:
        raise ConfigError(
            f"cannot write plot {out}: {exc.strerror}", field="plot", value=str(out)
        ) from None
    finally:
        plt.close(fig)
    return out
