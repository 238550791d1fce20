"""Background thread that drains the spool into the ingest API and sends heartbeats.

It never blocks the frame loop: network trouble backs off and retries, permanent refusals are set aside.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from edge.client import IngestClient, TransientError, UploadRejected, refuses_device
from edge.protocol import Heartbeat
from edge.spool import Spool, SpoolEntry

log = logging.getLogger(__name__)


class Uploader:
    """Sends spooled captures with `IngestClient.upload_capture` on a daemon thread.

    An entry leaves the spool only when the server has it (201 new, or 200 duplicate:
    uploads are idempotent on the image sha256, so retrying after a lost answer is safe)
    or refused it for good (then it moves to `rejected/` with the reason). A refused
    token (401, revoked) or a URL with no API behind it (404) is not the capture's fault:
    entries stay and are retried slowly, or, with `hold_when_refused`, not at all until the
    next start (the agent's choice: its token and URL cannot change while it runs).

    Counters (read them any time): `uploaded` (delivered, duplicates included),
    `duplicates`, `rejected`, `refused` (attempts refused for the device's token or URL),
    `retries` (transient failures), `heartbeats_sent`, `heartbeat_failures`, `last_error`;
    `refusal` is the server's latest refusal of the device, None once something is accepted.

    `clock` and `wait` are the thread's sense of time: `wait(event, timeout)` returns when
    the event is set (a put, stop()) or the timeout passes, like `threading.Event.wait`.
    Tests pass virtual ones so that backoff and heartbeat times are exact, not raced.
    """

    def __init__(
        self,
        spool: Spool,
        client_factory: Callable[[], IngestClient],
        *,
        heartbeat: Callable[[], Heartbeat] | None = None,
        heartbeat_interval_s: float = 30.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 60.0,
        batch_size: int = 16,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[threading.Event, float | None], object] = threading.Event.wait,
    ) -> None:
        self._spool = spool
        self._client_factory = client_factory
        self._client: IngestClient | None = None
        self._heartbeat = heartbeat
        self._heartbeat_interval_s = heartbeat_interval_s
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._batch_size = batch_size
        self._clock = clock
        self._wait = wait

        self.uploaded = 0
        self.duplicates = 0
        self.rejected = 0
        self.refused = 0
        self.refusal: UploadRejected | None = None
        self.hold_when_refused = False
        self._held = False  # refused with hold_when_refused: nothing goes out until start()
        self.retries = 0
        self.heartbeats_sent = 0
        self.heartbeat_failures = 0
        self.last_error: str | None = None

        self._failures = 0  # consecutive transient failures: the backoff exponent
        self._retry_at = 0.0  # clock time before which no upload is tried
        self._next_heartbeat = 0.0
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        # Set by a put, by stop(): whatever the thread is waiting for, it looks again.
        self._wake = threading.Event()
        # Notified whenever an entry leaves the spool, for flush().
        self._progress = threading.Condition()
        spool.add_put_listener(self._wake.set)

    # --- control (called from the agent's thread) ------------------------------------

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._held = False
        self._thread = threading.Thread(target=self._run, name="edge-uploader", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Ask the thread to finish its current request and exit; True if it did in time."""
        self._stopping.set()
        self._wake.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def flush(self, timeout: float) -> bool:
        """Wait until the spool is empty; False if it is not after `timeout` seconds, or at once when the
        uploader holds after a refusal (waiting could not empty it)."""
        with self._progress:
            self._progress.wait_for(lambda: self._spool.depth() == 0 or self._held, timeout)
        return self._spool.depth() == 0

    def stats(self) -> dict[str, int | str | None]:
        return {
            "uploaded": self.uploaded,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "refused": self.refused,
            "refusal": str(self.refusal) if self.refusal else None,
            "retries": self.retries,
            "heartbeats_sent": self.heartbeats_sent,
            "heartbeat_failures": self.heartbeat_failures,
            "last_error": self.last_error,
            "spool_depth": self._spool.depth(),
        }

    # --- the thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                # Clear before looking at the spool, so a put that lands after the look
                # still cuts the wait short.
                self._wake.clear()
                try:
                    self._step()
                except Exception as exc:
                    # A disk error in the spool, say: the thread must outlive it.
                    log.exception("uploader step failed")
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    self._retry_at = self._clock() + self._backoff_max_s
                self._wait(self._wake, self._wait_s())
        finally:
            self._drop_client()

    def _step(self) -> None:
        if self._held:
            return
        now = self._clock()
        if self._heartbeat is not None and now >= self._next_heartbeat:
            self._send_heartbeat()
            self._next_heartbeat = now + self._heartbeat_interval_s
        if now >= self._retry_at:
            self._upload_batch()

    def _wait_s(self) -> float | None:
        """How long to sleep: until the next heartbeat or retry, or until woken (None)."""
        if self._held:
            return None
        deadlines = []
        if self._heartbeat is not None:
            deadlines.append(self._next_heartbeat)
        if self._spool.depth() > 0:
            deadlines.append(self._retry_at)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - self._clock())

    def _upload_batch(self) -> None:
        for entry in self._spool.next_batch(self._batch_size):
            if self._stopping.is_set() or not self._upload(entry):
                return  # after a transient failure, wait before trying anything else

    def _upload(self, entry: SpoolEntry) -> bool:
        """Try one entry; False when the server could not be reached (back off)."""
        try:
            accepted = self._get_client().upload_capture(entry.meta_json, entry.image, entry.media_type)
        except UploadRejected as exc:
            if refuses_device(exc):
                # The device's token (or the URL) was refused, not this capture: rejecting would
                # empty the whole spool into rejected/. Keep everything, retry slowly with a fresh
                # client (the factory may pick up a rotated token), or hold.
                self.refused += 1
                self._drop_client()
                self._back_off(entry, exc, self._backoff_max_s)
                self._refused_by_server(exc)
                return False
            self._spool.reject(
                entry.id,
                {"status": exc.status, "reason": exc.reason, "detail": exc.detail, "attempts": entry.attempts + 1},
            )
            self.rejected += 1
            self.last_error = str(exc)
            self._failures = 0  # the server is answering
            log.warning("capture %s rejected for good: %s", entry.id, exc)
            self._notify_progress()
            return True
        except TransientError as exc:
            self._back_off(entry, exc, exc.retry_after)
            return False
        except Exception as exc:
            # A malformed answer, a bad client config, a bug: keep the entry, back off,
            # start over with a fresh client, and never let the thread die.
            log.exception("unexpected error uploading %s", entry.id)
            self._drop_client()
            self._back_off(entry, exc, None)
            return False
        self._spool.ack(entry.id)
        self.uploaded += 1
        self.refusal = None
        if accepted.duplicate:
            self.duplicates += 1
        self._failures = 0
        self._notify_progress()
        return True

    def _back_off(self, entry: SpoolEntry, exc: Exception, retry_after: float | None) -> None:
        """Full-jitter exponential backoff; the server's Retry-After is a floor."""
        self._spool.record_attempt(entry.id)
        self._failures += 1
        self.retries += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        ceiling = min(self._backoff_max_s, self._backoff_base_s * 2 ** min(self._failures - 1, 32))
        delay = random.uniform(0.0, ceiling)
        if retry_after is not None:
            # Capped, so a bogus HTTP-date from a server with a broken clock cannot
            # silence the device for days.
            delay = max(delay, min(retry_after, self._backoff_max_s))
        self._retry_at = self._clock() + delay
        log.info("upload of %s failed (%s); retrying in %.2fs", entry.id, self.last_error, delay)

    def _send_heartbeat(self) -> None:
        assert self._heartbeat is not None
        try:
            self._get_client().heartbeat(self._heartbeat())
            self.heartbeats_sent += 1
        except Exception as exc:
            # Not retried early: a late heartbeat is stale, and the next one is due soon.
            self.heartbeat_failures += 1
            self.last_error = f"heartbeat: {type(exc).__name__}: {exc}"
            log.info("heartbeat failed: %s", self.last_error)
            if isinstance(exc, UploadRejected) and refuses_device(exc):
                # Else a device with an empty spool would send its old token forever.
                self._drop_client()
                self._refused_by_server(exc)

    def _refused_by_server(self, exc: UploadRejected) -> None:
        """Remember the refusal; with `hold_when_refused`, send nothing more and release flush()."""
        self.refusal = exc
        if self.hold_when_refused and not self._held:
            self._held = True
            # info, not warning: the agent says it to the person once, in its own words
            log.info("the server refuses this device (%s): holding the spool until the next start", exc)
            self._notify_progress()

    def _get_client(self) -> IngestClient:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _drop_client(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                log.exception("closing the ingest client failed")
            self._client = None

    def _notify_progress(self) -> None:
        with self._progress:
            self._progress.notify_all()
