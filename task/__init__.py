"""The task every app shares: data, partitions, models, training, the run-config schema and its
checks, seeding, message keys and model-state vectors.

Both Flower apps (`client_app`, `server_app`) and the rules and attacks they use (`strategies`,
`attacks`) import from here, following Flower's "task module" convention; this package imports
none of them, nor the host tools (`immunefl`). See docs/architecture.md.
"""
