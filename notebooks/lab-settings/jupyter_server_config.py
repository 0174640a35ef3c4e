# The server settings of `make lab` (and of the browser tests' lab): kernels are shut down when their notebook's tab
# closes (overrides.json beside this file, JupyterLab's default settings) and after 10 idle minutes without a
# connected tab; only warnings are logged; no language servers are searched for (none is installed).
from pathlib import Path

c = get_config()  # noqa: F821 (defined by the configuration loader)
c.ServerApp.log_level = "WARN"
c.LabApp.log_level = "WARN"
c.LabApp.app_settings_dir = str(Path(__file__).resolve().parent)
c.MappingKernelManager.cull_idle_timeout = 600
c.MappingKernelManager.cull_interval = 60
c.LanguageServerManager.autodetect = False
