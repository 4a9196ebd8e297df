"""The ``merlion`` command line: one module per command group (``data``, ``represent``, ``agent``,
``bench``, ``jobs``), their shared helpers (``common``) and the parser (``main``)."""
