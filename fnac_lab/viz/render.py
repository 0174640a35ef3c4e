"""How notebooks show figures: the seaborn theme at 100 dpi, and plotly figures as a JupyterLab mime bundle plus
HTML for ``nbconvert --to html``, with plotly.js carried once per notebook run rather than once per figure.

The library comes inline (saved notebooks and their HTML exports work offline): plotly.js's cartesian bundle
(npm ``plotly.js-cartesian-dist-min``, the plotly.js version of the installed plotly, MIT licence beside it;
1.5 MB instead of the full library's 4.8 MB) when it draws every trace of the notebook's first figure, else the
full library, and the full library later if a figure needs a trace the bundle lacks.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import plotly.io as pio
import seaborn as sns
from IPython.display import display_html
from plotly.io.base_renderers import NotebookRenderer
from plotly.offline import get_plotlyjs

#: plotly.js's cartesian bundle and the trace types it draws.
CARTESIAN_BUNDLE = Path(__file__).with_name("plotlyjs") / "plotly-cartesian.min.js"
CARTESIAN_TRACES = frozenset({"bar", "box", "contour", "heatmap", "histogram", "histogram2d", "histogram2dcontour",
                              "image", "pie", "scatter", "scatterternary", "violin"})
#: What plotly's own notebook renderer sets up before the library (MathJax in local mode).
WINDOW_CONFIG = ("window.PlotlyConfig = {MathJaxConfig: 'local'};\n"
                 "if (window.MathJax && window.MathJax.Hub && window.MathJax.Hub.Config) "
                 "{window.MathJax.Hub.Config({SVG: {font: \"STIX-Web\"}});}")


def library_script(full: bool) -> str:
    """A ``<script>`` defining ``window.Plotly``: the full library or the cartesian bundle."""
    source = get_plotlyjs() if full else CARTESIAN_BUNDLE.read_text(encoding="utf-8")
    return f"<script>{WINDOW_CONFIG}</script>\n<script>{source}</script>"


class OncePlotlyRenderer(NotebookRenderer):
    """plotly's ``notebook`` renderer (a figure's ``text/html`` without the library), except that the library is
    displayed once, ahead of the first figure after :func:`setup_notebook`, as the smallest bundle that draws
    it; a later figure with a trace type outside the bundle brings the full library first."""

    def __init__(self):
        super().__init__()
        #: "carried": None, "cartesian" or "full", the library this run's outputs carry. A dict, since plotly
        #: renders each figure with a shallow copy of the renderer.
        self.state: dict[str, str | None] = {"carried": None}

    def activate(self):  # plotly calls this before the first figure after the renderer became the default
        self.state["carried"] = None

    def to_mimebundle(self, fig_dict):
        traces = {trace.get("type", "scatter") for trace in fig_dict.get("data", [])}
        need = "cartesian" if traces <= CARTESIAN_TRACES else "full"
        if self.state["carried"] is None or (need == "full" and self.state["carried"] == "cartesian"):
            display_html(library_script(need == "full"), raw=True)
            self.state["carried"] = need
        return super().to_mimebundle(fig_dict)


def setup_notebook(*, plotly_html: bool = True) -> None:
    """Seaborn theme for static figures at 100 dpi (so that :data:`~fnac_lab.viz.styles.MAX_FIGURE_INCHES` fits
    the output area); plotly figures rendered both as a JupyterLab mime bundle and, with ``plotly_html``, as HTML
    through :class:`OncePlotlyRenderer`, so that they show in the lab and, offline, in ``nbconvert --to html``."""
    sns.set_theme(context="notebook", style="white")
    plt.rcParams["figure.dpi"] = 100
    if plotly_html:
        pio.renderers["fnac_notebook"] = OncePlotlyRenderer()
        pio.renderers.default = "plotly_mimetype+fnac_notebook"
