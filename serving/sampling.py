"""Payload sampling to the drift monitor, off the request path.

`offer()` is what a request pays: a random draw and, for a sampled request, a `put_nowait`
of references to arrays it already has. A background task turns them into a
`loopline.samples.SampleBatch` and POSTs it to `{monitor_url}/v1/samples`, the monitor's
ingest API, with the Model's bearer token (the monitor refuses rows from anyone else).
A full queue drops the sample and counts it; a slow, failing or absent monitor is logged and
counted, and never delays or fails an inference.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass

import httpx
import numpy as np

from loopline import auth
from loopline.samples import SAMPLES_PATH, SampleBatch
from loopline.serving.metrics import ServingMetrics

log = logging.getLogger(__name__)


@dataclass
class PendingSample:
    model_version: str
    x: np.ndarray
    machine_ids: list[str] | None
    scores: np.ndarray | None
    decisions: np.ndarray | None
    fallback: np.ndarray


def to_sample_batch(model: str, feature_names: list[str], item: PendingSample) -> SampleBatch:
    """The wire form: NaN becomes None, numpy becomes plain lists."""
    rows = [[None if v != v else v for v in row] for row in item.x.astype(float).tolist()]
    return SampleBatch(
        model=model,
        model_version=item.model_version,
        feature_names=feature_names,
        rows=rows,
        machine_ids=item.machine_ids,
        scores=None if item.scores is None else item.scores.astype(float).tolist(),
        decisions=None if item.decisions is None else item.decisions.astype(bool).tolist(),
        fallback=item.fallback.astype(bool).tolist(),
    )


class PayloadSampler:
    """A bounded queue and one sender task per loaded model."""

    def __init__(
        self,
        *,
        model: str,
        feature_names: list[str],
        monitor_url: str,
        rate: float,
        queue_size: int,
        timeout_s: float,
        metrics: ServingMetrics,
        token: str | None = None,
        seed: int | None = None,
    ) -> None:
        self.model = model
        self.feature_names = feature_names
        self.url = monitor_url.rstrip("/") + SAMPLES_PATH if monitor_url else ""
        self.rate = rate
        self._queue: asyncio.Queue[PendingSample] = asyncio.Queue(maxsize=queue_size)
        self._timeout = timeout_s
        self._metrics = metrics
        self._random = random.Random(seed)
        self._headers = {"content-type": "application/json", **auth.bearer_headers(token)}
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.url) and self.rate > 0

    def start(self) -> None:
        """Start the sender on the running event loop (MLServer's, at model load)."""
        if self.enabled and self._task is None:
            self._client = httpx.AsyncClient(timeout=self._timeout)
            self._task = asyncio.get_running_loop().create_task(self._run())

    def offer(self, item: PendingSample) -> bool:
        """Queue `item` with probability `rate`; never blocks. True if queued."""
        if not self.enabled or self._task is None:
            return False
        if self.rate < 1.0 and self._random.random() >= self.rate:
            return False
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._metrics.samples.labels(self.model, "dropped").inc()
            return False
        return True

    async def _run(self) -> None:
        assert self._client is not None
        while True:
            item = await self._queue.get()
            try:
                batch = to_sample_batch(self.model, self.feature_names, item)
                response = await self._client.post(
                    self.url,
                    content=batch.model_dump_json(by_alias=True),
                    headers=self._headers,
                )
                if response.status_code >= 300:
                    raise RuntimeError(f"monitor answered {response.status_code}")
                self._metrics.samples.labels(self.model, "sent").inc()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the monitor's failure must stay out of inference
                self._metrics.samples.labels(self.model, "failed").inc()
                log.warning("sending samples to %s failed: %s", self.url, exc)
            finally:
                self._queue.task_done()

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait (bounded) until everything queued was sent or failed."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
