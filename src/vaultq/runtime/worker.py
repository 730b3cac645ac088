"""The worker: every event source mapping of an app, polled until a stop is asked for."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from vaultq.runtime.executor import HandlerProcess
from vaultq.runtime.jobs import JobTracker
from vaultq.runtime.leases import LeaseKeeper
from vaultq.runtime.poller import MappingPoller

if TYPE_CHECKING:
    from collections.abc import Callable

    from vaultq.app import App
    from vaultq.jobs.protocol import JobStore
    from vaultq.observe.protocol import MetricsStore
    from vaultq.queues.protocol import QueueBackend
    from vaultq.runtime.executor import InvocationError

log = logging.getLogger(__name__)
#: The least a handler process (with its ``init``) is given to start.
_START_SECONDS = 60.0


class Worker:
    """Runs an app's handlers. ``app_path`` (``module:attribute``) is how the handler
    processes find the app."""

    def __init__(
        self,
        app: App,
        *,
        app_path: str,
        queues: QueueBackend,
        handlers: list[str] | None = None,
        job_store_factory: Callable[[], JobStore] | None = None,
        metrics_factory: Callable[[], MetricsStore] | None = None,
    ) -> None:
        self.app = app
        self._queues = queues
        self._app_path = app_path
        self._names = handlers or list(app.handlers)
        #: Opens the job table; handed to handler processes too, so it must pickle by
        #: reference (a module-level function, or a functools.partial of one).
        self._job_store_factory = job_store_factory
        self._metrics_factory = metrics_factory
        self.stop_event = threading.Event()

    def run(self) -> None:
        """Poll until ``stop_event`` is set, then drain: in-flight batches finish (or time
        out); received but unstarted messages are made visible again."""
        leases = LeaseKeeper(self._queues)
        leases.start()
        job_store = self._job_store_factory() if self._job_store_factory else None
        tracker = JobTracker(job_store)
        metrics = self._metrics_factory() if self._metrics_factory else None
        processes: list[HandlerProcess] = []
        provisioned: list[HandlerProcess] = []
        pollers = []
        for name in self._names:
            spec = self.app.handlers[name]
            slots = [
                HandlerProcess(
                    self._app_path,
                    handler=name,
                    job_store_factory=self._job_store_factory,
                    start_timeout_seconds=max(_START_SECONDS, spec.timeout_seconds),
                )
                for _ in range(spec.mapping.max_concurrency)
            ]
            processes += slots
            # The poller takes idle processes from the end of the list: warm those.
            provisioned += slots[len(slots) - spec.provisioned_concurrency :]
            pollers.append(
                MappingPoller(
                    spec=spec,
                    queues=self._queues,
                    leases=leases,
                    processes=slots,
                    jobs=tracker,
                    metrics=metrics,
                )
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
        try:
            _provision(provisioned, self.stop_event)
            for thread in threads:
                thread.start()
            log.info("worker polling %d mapping(s)", len(threads))
            for thread in threads:
                thread.join()
        finally:
            leases.stop()
            for process in processes:
                process.close()
            for store in (job_store, metrics):
                if store is not None:
                    store.close()
        log.info("worker stopped")

    def stop(self) -> None:
        self.stop_event.set()


def _provision(processes: list[HandlerProcess], stop: threading.Event) -> None:
    """Start and initialise provisioned handler processes, all at once, before polling: a
    backlog that is already waiting finds them warm. A stop asked meanwhile kills the ones
    still starting rather than waiting out their init."""
    failures: list[InvocationError] = []

    def start(process: HandlerProcess) -> None:
        error = process.start()
        if error is not None:
            failures.append(error)

    threads = [threading.Thread(target=start, args=(p,), daemon=True) for p in processes]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.05)
            if stop.is_set():
                for process in processes:
                    process.abort_start()
    if stop.is_set():
        return
    for error in failures:
        # The slot stays cold and starts again on its first event.
        log.warning("a provisioned handler process did not start: %s", error.error)
