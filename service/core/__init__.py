"""The protocol-free core: inference, compare, uploads and deletes (``dataplane``), the
versions loaded in this process (``registry``), the repository on disk (``repository``) and
like-with-like timing for compare (``timing``). Every protocol calls in here."""
