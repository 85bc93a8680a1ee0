"""A minimal Flower app that uses immunefl's strategies (docs/flower-apps.md)."""
