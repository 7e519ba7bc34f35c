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
PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def subplots(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """Return ``matplotlib.pyplot.subplots(*args, **kwargs)`` on the non-interactive backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(
    fig: Any,
    path: Path | str,
    *,
    dpi: float | None = None,
    close: bool = True,
    layout: bool = True,
) -> Path:
    """Lay out, save and close ``fig``; the format follows the suffix (.png, .svg or .pdf).

    ``close=False`` keeps the figure open (to save it again in another format);
    ``layout=False`` keeps a layout the caller already made.

    Raises
    ------
    ConfigError
        If the suffix is not .png, .svg or .pdf, or the file cannot be written.
    """
    import matplotlib.pyplot as plt

    out = Path(path)
    try:
        if out.suffix.lower() not in PLOT_SUFFIXES:
            raise ConfigError(
                f"plot file must end in {', '.join(PLOT_SUFFIXES)}, got {out.name!r}",
                field="plot",
                value=str(out),
                allowed=", ".join(PLOT_SUFFIXES),
            )
        if layout:
            fig.tight_layout()
        fig.savefig(out, dpi=dpi)
    except OSError as exc:
        raise ConfigError(
            f"cannot write plot {out}: {exc.strerror}", field="plot", value=str(out)
        ) from None
    finally:
        if close:
            plt.close(fig)
    return out
