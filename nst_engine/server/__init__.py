"""The server: the engine process the plug-in talks to, over one of two transports.

``session`` (one client's conversation: messages in, replies out, its jobs), ``jobs`` (the one
queue every session's jobs go through), ``engine`` (loading torch and the model once, the
hello), ``progress`` (progress messages, throttled), ``streams`` (the process's standard streams
and log); the transports: ``stdio`` (``serve``: one client on stdin/stdout) and ``listen``
(``serve --listen``: the warm engine on a private Unix socket); ``attach`` (the relay the
plug-in starts to reach the warm engine, starting one when none runs).

Importing this package imports nothing; torch loads in ``engine.load_engine``.
"""
