"""immunefl: the tools a user runs on the host (the `immunefl` command).

Experiment files and their validation, the local simulation launcher (SuperLink, Ray head,
process supervision, run submission), sweeps, the deployment commands, reports and plots. They
drive the Flower apps (`server_app`, `client_app`) and may import every package below them;
nothing below imports them. See docs/architecture.md.
"""

__version__ = "0.1.0"
