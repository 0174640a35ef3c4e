"""The papermill engine every headless notebook run of the workbench uses: ``engine_name="fnac_lab"`` once this
module is imported, or on the command line ``python -m fnac_lab.papermill_engine IN OUT -p NAME VALUE ...``
(papermill's own command line, this engine the default). It is registered on import rather than through
papermill's entry points: those load while ``papermill.engines`` itself is being imported, which this module does,
and the import would go round in a circle.

It is papermill's own nbclient engine less one thing: nbclient's stand-in for the front end of an ipywidgets
``Output`` widget (``nbclient.output_widget.OutputWidget``). That stand-in answers every output a widget captures
(``ipywidgets.interactive`` draws its figure into one) with a ``comm_msg`` sent on the shell channel, while the
client is polling that same channel for the cell's ``execute_reply``. Now and then the poll then never wakes up:
the kernel has finished and sits idle, its reply unread, and the run waits until the cell's timeout, or for ever
without one (jupyter/nbclient#312, open; seen here on the explorer notebook, whose widget is an ``interactive``).
Without the stand-in nothing is sent on the shell channel during a cell, and the outputs a widget captures are
written to its cell's outputs, where a static report shows them anyway. Papermill offers no switch for this, so
the engine is written here.
"""

from __future__ import annotations

from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.log import logger

#: The name to pass as papermill's ``engine_name`` (``--engine`` on its command line).
ENGINE_NAME = "fnac_lab"


class HeadlessNotebookClient(PapermillNotebookClient):
    """Papermill's notebook client without the ``Output`` widget stand-in (see the module docstring)."""

    def __init__(self, nb_man, **kwargs):
        super().__init__(nb_man, **kwargs)
        self.widget_registry = {}  # comm_open of an Output widget finds no stand-in: nothing answers on shell


class HeadlessEngine(NBClientEngine):
    """:class:`HeadlessNotebookClient` in place of papermill's client, with papermill's arguments."""

    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None, stderr_file=None,
                                 start_timeout=60, execution_timeout=None, **kwargs):
        options = {k: v for k, v in kwargs.items() if k not in ("input_path", "timeout", "startup_timeout")}
        client = HeadlessNotebookClient(nb_man, timeout=execution_timeout or kwargs.get("timeout"),
                                        startup_timeout=start_timeout, kernel_name=kernel_name, log=logger,
                                        log_output=log_output, stdout_file=stdout_file, stderr_file=stderr_file,
                                        **options)
        return client.execute()


papermill_engines.register(ENGINE_NAME, HeadlessEngine)

if __name__ == "__main__":
    import sys

    from papermill.cli import papermill

    sys.exit(papermill(args=["--engine", ENGINE_NAME, *sys.argv[1:]], prog_name="python -m fnac_lab.papermill_engine"))
