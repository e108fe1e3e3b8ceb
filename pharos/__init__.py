"""Composition root: settings, CLI, the FastAPI app and service lifecycle."""
