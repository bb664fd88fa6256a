"""HTTP in and out: the FastAPI app (``app``), its routes (``routes``), the fast path for
predictions (``fastpath``), connection and size guards (``connections``, ``middleware``), bodies
decoded in a process of their own (``bodies``) and the OpenAPI document (``openapi``)."""
