"""The HTTP layer: thin Flask blueprints over the engine, the store and the batch worker."""
