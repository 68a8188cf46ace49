"""Background batch generation: rotation of topics, the worker threads, and their manager."""
