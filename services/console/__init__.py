"""The upload console at ``/console``: a browser page (Uppy over tus) built from ``console/`` at the top of the
repository into ``static/``, which the package ships (``make console`` rebuilds it)."""
