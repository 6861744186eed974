"""Sub-commands of the ``aggregator`` program, one module each (imported on use)."""
