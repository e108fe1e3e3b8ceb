"""The HTTP API: the FastAPI application, its dependencies, error mapping and routers."""

from pharos.api.app import create_app

__all__ = ["create_app"]
