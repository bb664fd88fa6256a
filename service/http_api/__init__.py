"""HTTP in and out: the FastAPI app (``app``), its routes (``routes``; ``routing`` declares a
route for the latest version and one version at once), the fast path for predictions
(``fastpath``), connection and size guards (``connections``, ``middleware``), bodies decoded
in a process of their own (``bodies``) and the OpenAPI document, generated from the protocol
schemas (``openapi``)."""
