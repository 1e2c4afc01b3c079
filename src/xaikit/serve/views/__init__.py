"""The views of ``xaikit serve``: one module each, with ``TITLE`` and ``mount(app, state)`` (see ``..app``)."""
