"""How notebooks show figures: the seaborn theme at 100 dpi, and plotly figures as a JupyterLab mime bundle plus
HTML for ``nbconvert --to html``, with plotly.js carried once per notebook run rather than once per figure.

The library comes inline, so saved notebooks and their HTML exports work offline, and small: plotly.js's
cartesian bundle (npm ``plotly.js-cartesian-dist-min``, the plotly.js version of the installed plotly, MIT
licence beside it; 1.5 MB instead of the full library's 4.8 MB) when it draws every trace of the notebook's
first figure, else the full library, and the full library later if a figure needs a trace the bundle lacks.
The library is stored gzip-compressed and base64-encoded (0.66 MB for the cartesian bundle); the browser unpacks
it with ``DecompressionStream`` (Chrome 80, Firefox 113, Safari 16.4 and later), and every figure's script waits
for it (``window.fnacPlotlyReady``).
"""

from __future__ import annotations

import base64
import functools
import gzip
import io
import re
from pathlib import Path

import matplotlib.pyplot as plt
import plotly.io as pio
import seaborn as sns
from IPython.display import Image, display, display_html
from plotly.io.base_renderers import NotebookRenderer
from plotly.offline import get_plotlyjs

#: plotly.js's cartesian bundle and the trace types it draws.
CARTESIAN_BUNDLE = Path(__file__).with_name("plotlyjs") / "plotly-cartesian.min.js"
CARTESIAN_TRACES = frozenset({"bar", "box", "contour", "heatmap", "histogram", "histogram2d", "histogram2dcontour",
                              "image", "pie", "scatter", "scatterternary", "violin"})
#: Unpacks the library and runs it (defining ``window.Plotly``), after any library displayed earlier.
LOADER = """<script type="text/javascript">
window.PlotlyConfig = {MathJaxConfig: 'local'};
/* plotly.js (%(name)s), gzip-compressed and base64-encoded; figures wait for window.fnacPlotlyReady */
window.fnacPlotlyReady = (window.fnacPlotlyReady || Promise.resolve()).then(function () {
  var bytes = Uint8Array.from(atob("%(packed)s"), function (c) { return c.charCodeAt(0); });
  return new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"))).text();
}).then(function (source) {
  var script = document.createElement("script");
  script.text = source;
  document.head.appendChild(script);
  return window.Plotly;
});
</script>"""
_FIGURE_SCRIPT = re.compile(r'(<script(?: type="text/javascript")?>)(.*?)(</script>)', re.S)


@functools.lru_cache(maxsize=2)
def library_script(full: bool) -> str:
    """The HTML that defines ``window.Plotly`` (the full library or the cartesian bundle) and resolves
    ``window.fnacPlotlyReady`` once it has."""
    source = get_plotlyjs() if full else CARTESIAN_BUNDLE.read_text(encoding="utf-8")
    packed = base64.b64encode(gzip.compress(source.encode("utf-8"), compresslevel=9, mtime=0)).decode("ascii")
    return LOADER % {"name": "full library" if full else "cartesian bundle", "packed": packed}


def waiting_for_the_library(html: str) -> str:
    """A figure's HTML whose ``Plotly.newPlot`` script runs once the library is there."""
    def wrap(m: re.Match) -> str:
        if "Plotly.newPlot" not in m[2]:
            return m[0]
        return f"{m[1]}(window.fnacPlotlyReady || Promise.resolve()).then(function () {{{m[2]}}});{m[3]}"
    return _FIGURE_SCRIPT.sub(wrap, html)


class OncePlotlyRenderer(NotebookRenderer):
    """plotly's ``notebook`` renderer (a figure's ``text/html`` without the library), except that the library is
    displayed once, ahead of the first figure after :func:`setup_notebook`, as the smallest bundle that draws
    it, and compressed (:func:`library_script`); a later figure with a trace type outside the bundle brings the
    full library first."""

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
        bundle = super().to_mimebundle(fig_dict)
        return {**bundle, "text/html": waiting_for_the_library(bundle["text/html"])}


def setup_notebook(*, plotly_html: bool = True) -> None:
    """Seaborn theme for static figures at 100 dpi (so that :data:`~fnac_lab.viz.styles.MAX_FIGURE_INCHES` fits
    the output area); plotly figures rendered both as a JupyterLab mime bundle and, with ``plotly_html``, as HTML
    through :class:`OncePlotlyRenderer`, so that they show in the lab and, offline, in ``nbconvert --to html``."""
    sns.set_theme(context="notebook", style="white")
    plt.rcParams["figure.dpi"] = 100
    if plotly_html:
        pio.renderers["fnac_notebook"] = OncePlotlyRenderer()
        pio.renderers.default = "plotly_mimetype+fnac_notebook"


def show_photo(fig: plt.Figure, *, quality: int = 85) -> None:
    """Display a figure made mostly of frames and maps as a JPEG and close it: such figures compress about
    three times better than as PNG (matplotlib's inline default), which keeps saved notebooks and their HTML
    reports small; line art and heatmaps stay PNG (``plt.show()``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="jpeg", dpi=fig.dpi, bbox_inches="tight", facecolor="white",
                pil_kwargs={"quality": quality})
    plt.close(fig)
    display(Image(data=buf.getvalue(), format="jpeg"))

