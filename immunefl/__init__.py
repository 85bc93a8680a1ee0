"""immunefl: the shared task package (data, partitions, models, training, config, results).

Both the ClientApp (`client_app`) and the ServerApp (`server_app`) import from here, following
Flower's "task module" convention.
"""

__version__ = "0.1.0"
