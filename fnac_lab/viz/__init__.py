"""Figures for the notebooks: seaborn heatmaps of adjacency matrices, localisation maps over frames with their
boxes (matplotlib, :mod:`.static`), interactive plotly figures (:mod:`.interactive`: curves, scores, embeddings,
precision-recall, ablations) and the paired studies' (:mod:`.studies`: gains over the NCE twin, epoch by epoch);
what the notebooks' widgets draw (:mod:`.explorers`); sizes, colours and class styles in :mod:`.styles`, the
notebook set-up in :mod:`.render`.

Static figures return a matplotlib ``Figure``; interactive ones a plotly ``go.Figure``. Every figure fits a
JupyterLab output area of about 950 px. Nothing here computes a result: the numbers come from
:mod:`fnac_lab.analysis` and the training outputs.
"""

from .explorers import AdjacencyExplorer, MapBrowser, sample_grid
from .interactive import (SET_COLOURS, ablation_figure, class_scatter, confidence_histograms, embedding_scatter,
                          fn_auroc_curves, loss_curves, plotly_adjacency, pr_curves, scores_bars, validation_curves)
from .render import OncePlotlyRenderer, setup_notebook, show_photo
from .static import (adjacency_heatmaps, fn_ratio_figure, localisation_grid, map_colorbar, photos_and_spectrograms,
                     same_class_retrieval_figure, show_map)
from .studies import (auroc_epoch_figure, detection_epoch_figure, paired_gain_figure, remedy_gain_figure,
                      validation_gap_figure, variant_colours)
from .styles import (MAP_CMAP, MATRIX_TITLES, MAX_FIGURE_INCHES, SHAPE_SYMBOLS, ClassStyle, class_styles,
                     model_colours)

__all__ = ["AdjacencyExplorer", "MapBrowser", "sample_grid", "ablation_figure", "auroc_epoch_figure", "paired_gain_figure", "remedy_gain_figure",
           "detection_epoch_figure", "validation_gap_figure", "variant_colours", "class_scatter", "embedding_scatter", "fn_auroc_curves", "loss_curves",
           "plotly_adjacency", "pr_curves", "scores_bars", "validation_curves", "OncePlotlyRenderer",
           "setup_notebook", "show_photo", "adjacency_heatmaps", "fn_ratio_figure", "localisation_grid", "map_colorbar", "photos_and_spectrograms",
           "same_class_retrieval_figure", "show_map", "MAP_CMAP", "MATRIX_TITLES", "MAX_FIGURE_INCHES", "model_colours", "SHAPE_SYMBOLS",
           "ClassStyle", "class_styles", "SET_COLOURS", "confidence_histograms"]
