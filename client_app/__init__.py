"""The immunefl ClientApp: benign local training (and, with later issues, defenses/attacks)."""
