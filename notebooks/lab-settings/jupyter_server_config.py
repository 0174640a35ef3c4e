# The server settings of `make lab` (and of the browser tests' lab): kernels are shut down when their notebook's tab
# closes (overrides.json beside this file, JupyterLab's default settings) and after 10 idle minutes without a
# connected tab, and no news or update checks ask the user; only warnings are logged; no language servers are
# searched for (none is installed).
from pathlib import Path

c = get_config()  # noqa: F821 (defined by the configuration loader)
c.ServerApp.log_level = "WARN"
c.LabApp.log_level = "WARN"
c.LabApp.app_settings_dir = str(Path(__file__).resolve().parent)
c.MappingKernelManager.cull_idle_timeout = 600
c.MappingKernelManager.cull_interval = 60
c.LanguageServerManager.autodetect = False
# The kernels' websockets wait 30 s for a pong, as long as tornado lets them (jupyter_server asks for 90 s, and
# tornado warns at every connection that the timeout cannot exceed the 30-s ping interval).
c.ServerApp.tornado_settings = {"ws_ping_timeout": 30000}
