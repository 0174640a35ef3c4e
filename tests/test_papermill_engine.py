"""The workbench's papermill engine: a widget's captured outputs land in its cell, because no stand-in for the
``Output`` widget answers on the shell channel (the stand-in's messages can leave a run waiting for ever)."""

from __future__ import annotations

import nbformat
import papermill
import pytest

from fnac_lab.papermill_engine import ENGINE_NAME

CELL = ("import ipywidgets as widgets\n"
        "from IPython.display import display\n"
        "display(widgets.interactive(lambda x: print(f'drawn at {x}'), x=widgets.IntSlider(value=7)))")


def run(tmp_path, engine_name):
    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(CELL)]
    nbformat.write(nb, tmp_path / "in.ipynb")
    out = papermill.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / f"{engine_name}.ipynb"),
                                     kernel_name="python3", progress_bar=False, engine_name=engine_name,
                                     execution_timeout=120)
    cell = out.cells[0]
    streams = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    widget_outputs = [state["state"].get("outputs") for state in
                      out.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
                      .get("state", {}).values() if state.get("model_name") == "OutputModel"]
    return streams, widget_outputs


@pytest.mark.parametrize("engine_name", [ENGINE_NAME, None])
def test_a_widgets_output_lands_in_its_cell_only_without_the_stand_in(tmp_path, engine_name):
    streams, widget_outputs = run(tmp_path, engine_name)
    if engine_name == ENGINE_NAME:
        assert streams == "drawn at 7\n" and all(not outputs for outputs in widget_outputs)
    else:  # papermill's default client captures it into the Output widget's state, answering on the shell channel
        assert "drawn at 7" not in streams and any(outputs for outputs in widget_outputs)

