"""Sub-commands of the ``avsegformer`` command line (one module each; see ``cli.py``)."""
