"""Importers of models trained elsewhere (Cellpose checkpoints, ...)."""
