"""``avsegformer serve``: a local web page to segment a video and watch the result with sound.

Needs the ``web`` extra (``pip install avsegformer[web]``: Starlette and uvicorn).

* :mod:`~avsegformer.serve.models`: the models the page offers (one list, one function).
* :mod:`~avsegformer.serve.jobs`: jobs, their queue and worker, one model in memory.
* :mod:`~avsegformer.serve.app`: the Starlette application (the page and its JSON API).
"""
