"""The protocol-free core: every protocol's entry (``dataplane``: inference, deletes,
start-up folds), model lookup, metadata and the repository index (``catalog``),
``:compare`` (``compare``, with like-with-like ``timing``), the one input check
(``validation``), the versions loaded in this process (``registry``) and the repository
on disk (``repository``). Every protocol calls in here."""
