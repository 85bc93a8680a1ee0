"""The immunefl ServerApp: node discovery, seeded sampling, the round loop, evaluation, results."""
