"""The worker: every event source mapping of an app, polled until a stop is asked for."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from vaultq.runtime.executor import HandlerProcess
from vaultq.runtime.leases import LeaseKeeper
from vaultq.runtime.poller import MappingPoller

if TYPE_CHECKING:
    from vaultq.app import App
    from vaultq.queues.protocol import QueueBackend

log = logging.getLogger(__name__)


class Worker:
    """Runs an app's handlers. ``app_path`` (``module:attribute``) is how the handler
    processes find the app."""

    def __init__(
        self, app: App, *, app_path: str, queues: QueueBackend, handlers: list[str] | None = None
    ) -> None:
        self.app = app
        self._queues = queues
        self._app_path = app_path
        self._names = handlers or list(app.handlers)
        self.stop_event = threading.Event()

    def run(self) -> None:
        """Poll until ``stop_event`` is set, then drain: in-flight batches finish (or time
        out); received but unstarted messages are made visible again."""
        leases = LeaseKeeper(self._queues)
        leases.start()
        processes: list[HandlerProcess] = []
        pollers = []
        for name in self._names:
            spec = self.app.handlers[name]
            slots = [HandlerProcess(self._app_path) for _ in range(spec.mapping.max_concurrency)]
            processes += slots
            pollers.append(
                MappingPoller(spec=spec, queues=self._queues, leases=leases, processes=slots)
            )
        threads = [
            threading.Thread(
                target=poller.run,
                args=(self.stop_event,),
                daemon=True,
                name=f"vaultq-{poller.spec.name}",
            )
            for poller in pollers
        ]
        for thread in threads:
            thread.start()
        log.info("worker polling %d mapping(s)", len(threads))
        try:
            for thread in threads:
                thread.join()
        finally:
            leases.stop()
            for process in processes:
                process.close()
        log.info("worker stopped")

    def stop(self) -> None:
        self.stop_event.set()
