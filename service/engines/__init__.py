"""Serving engines other than the plain uvicorn server: Ray Serve (``ray``)."""
