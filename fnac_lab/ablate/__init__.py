"""Ablation sweeps: run a parameterised notebook through papermill once per point of a grid, collect the results,
lay them beside the paper's tables, and pair FNAC points with their NCE twins (:mod:`.effects`)."""

from ..paper import PAPER_TABLES, PaperTable
from .compare import paper_comparison, sweep_statement
from .effects import effects_markdown, paired_effects
from .grid import (Grid, GridPoint, bundled_grid, bundled_path, check_parameters, load_grid, make_grid,
                   notebook_parameters, parameter_names, point_name, value_label)
from .runner import DONE, ERROR, METRICS, GridRun, PointOutcome, collect_results, flatten_metrics, run_grid

__all__ = ["PAPER_TABLES", "PaperTable", "paper_comparison", "sweep_statement", "effects_markdown", "paired_effects",
           "Grid", "GridPoint", "bundled_grid", "bundled_path", "check_parameters", "load_grid", "make_grid",
           "notebook_parameters", "parameter_names",
           "point_name", "value_label", "DONE", "ERROR", "METRICS", "GridRun", "PointOutcome", "collect_results",
           "flatten_metrics", "run_grid"]
