"""When a warm engine turns out dead or stale, the work runs once more on a fresh one: decided
here only, for the plug-in's run and its dialog's preview alike.

A warm engine is shared and outlives the run that started it, so by the next run it may have
died, hung, or be one an older install left running; a per-run engine was started for this
very run. After a failure in DEAD_ENGINE_CODES a client is no use any more and is closed; when
it was a warm engine's, the work runs once more on a client from ``make_client(True)``
(``attach --fresh`` replaces the running engine), so a user never meets a stale engine, and
only once, so a fault a fresh engine has too reaches the user. Any other failure (the job's
own: out of memory, cancelled, bad settings) keeps the client and reaches the caller.
"""

from __future__ import annotations

from typing import Any, Callable

from .client import EngineClient
from .errors import EngineFailed
from .wire import Code

#: Failures after which a client is no use and a fresh engine may do better: its engine died
#: or never answered. Not ``protocol_version``: a warm engine of another version is replaced
#: before anyone sees its hello (attach compares builds, ``connect_direct`` the protocol), so
#: that mismatch is the installation's, and a fresh engine would speak the same protocol.
DEAD_ENGINE_CODES = frozenset({Code.ENGINE_CRASHED, Code.ENGINE_NOT_STARTED})


class FreshRetry:
    """The started client that work runs on, replaced when its engine dies.

    ``make_client(fresh)`` returns an unstarted client
    (``EngineClient.from_config(cfg, fresh=fresh)``); ``client``: a started one to use first
    (the dialog preview's, handed to the full run). Not thread-safe: one thread runs work;
    others may read ``client`` (to cancel its job)."""

    def __init__(self, make_client: Callable[[bool], EngineClient],
                 client: EngineClient | None = None) -> None:
        self._make_client = make_client
        #: The started client, or None until ``run`` starts one (and after its engine died).
        self.client = client

    def run(self, work: Callable[[EngineClient], Any], *,
            on_start: Callable[[bool], None] | None = None) -> Any:
        """``work(client)`` on the started client, starting one when there is none; returns
        what ``work`` returns. ``on_start(fresh)`` is called before a client is made. Raises
        EngineFailed, and whatever else ``work`` raises (the client is kept then)."""
        fresh = False
        while True:
            client = self.client
            try:
                if client is None:
                    if on_start is not None:
                        on_start(fresh)
                    client = self._make_client(fresh)
                    try:
                        client.start()
                    except BaseException:
                        client.close()
                        raise
                    self.client = client
                return work(client)
            except EngineFailed as e:
                if e.code not in DEAD_ENGINE_CODES:
                    raise
                self.close()
                if fresh or client is None or not client.warm:
                    raise
            fresh = True

    def take(self) -> EngineClient | None:
        """The started client, now the caller's to close; None when there is none."""
        client, self.client = self.client, None
        return client

    def close(self) -> None:
        client = self.take()
        if client is None:
            return
        try:
            client.close()
        except Exception:  # noqa: BLE001 — thrown away: how its end went changes nothing
            pass
