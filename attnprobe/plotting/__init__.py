"""Figures of attnprobe's results: one plotting stack for the Python API (``result.plot()``) and
the command line's report. Needs matplotlib (``pip install 'attnprobe[plot]'``); every figure is a
``matplotlib.figure.Figure`` (no pyplot state): save it with ``figure.savefig(path)``.

- :mod:`.panels`: the panels every reversal figure is built from;
- :mod:`.probes`: one figure per probe result (``result.plot()``);
- :mod:`.alignment`: an alignment over its score matrix (``alignment.plot()``);
- :mod:`.figure`: figure creation and PNG rendering.
"""

from .alignment import plot_alignment
from .figure import new_figure, png_bytes
from .probes import probe_figure

__all__ = ["new_figure", "plot_alignment", "png_bytes", "probe_figure"]
