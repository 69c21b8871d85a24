"""The server: the engine process the plug-in talks to, over one of two transports.

``session`` (one client's conversation: messages in, replies out; runs each of its jobs:
``transfer.pipeline.stylize``, and an animation's clip state), ``clip`` (that clip state: the
frames' order, frame 1's styles and settings, freeing the kept frames), ``jobs`` (the one queue
every session's jobs go through: when each runs, one at a time), ``startup`` (importing torch
and loading the model once per process, the hello), ``progress`` (progress messages,
throttled), ``streams`` (the process's standard streams and log); the transports: ``stdio``
(``serve``: one client on stdin/stdout) and ``listen`` (``serve --listen``: the warm engine on a
private Unix socket); ``attach`` (the relay the plug-in starts to reach the warm engine,
starting one when none runs).

Importing this package imports nothing; torch loads in ``startup.load_model``.
"""
