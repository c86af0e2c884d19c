"""GPU readings behind a narrow interface: NVML (through ``pynvml`` from nvidia-ml-py) or a fake.

``GpuProbe.read()`` never raises: without a driver, or when NVML fails, it returns
``GpuReading(available=False, error=...)`` so the node agent keeps serving engine signals.
Initialisation is retried at most every ``retry_s`` seconds (a driver can come up after the
agent). Per-device queries that a GPU does not support (utilisation on a MIG slice, …) leave
that field ``None`` instead of failing the whole reading.

Blocking: NVML calls are synchronous (tens of µs each); the agent calls ``read()`` in a worker
thread. One probe is used by one thread at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class GpuStat:
    index: int
    name: str
    uuid: str | None
    memory_used_bytes: int
    memory_total_bytes: int
    utilization_pct: int | None = None  # SM busy over the last sample period, 0..100
    memory_utilization_pct: int | None = None  # memory controller busy, 0..100


@dataclass(frozen=True, slots=True)
class GpuReading:
    available: bool
    error: str | None = None
    gpus: tuple[GpuStat, ...] = ()


class GpuProbe(Protocol):
    def read(self) -> GpuReading: ...

    def close(self) -> None: ...


class DisabledProbe:
    """Used with ``--no-nvml``."""

    def read(self) -> GpuReading:
        return GpuReading(available=False, error="NVML disabled")

    def close(self) -> None:
        pass


@dataclass
class FakeGpuProbe:
    """Test double: returns ``reading``; counts reads and closes."""

    reading: GpuReading = field(default_factory=lambda: GpuReading(available=False, error="fake: no GPU"))
    reads: int = 0
    closed: bool = False

    def read(self) -> GpuReading:
        self.reads += 1
        return self.reading

    def close(self) -> None:
        self.closed = True


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class NvmlProbe:
    """Real probe. ``nvml`` is the ``pynvml`` module (injectable for tests)."""

    def __init__(self, nvml: Any = None, retry_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        if nvml is None:
            import pynvml  # nvidia-ml-py; importing it does not touch the driver

            nvml = pynvml
        self._nvml: Any = nvml
        self._retry_s = retry_s
        self._clock = clock
        self._initialised = False
        self._init_error: str | None = None
        self._last_try: float | None = None

    def _ensure_init(self) -> str | None:
        if self._initialised:
            return None
        now = self._clock()
        if self._last_try is not None and now - self._last_try < self._retry_s:
            return self._init_error
        self._last_try = now
        try:
            self._nvml.nvmlInit()
        except self._nvml.NVMLError as exc:
            self._init_error = f"NVML unavailable: {exc}"
            return self._init_error
        self._initialised, self._init_error = True, None
        return None

    def read(self) -> GpuReading:
        error = self._ensure_init()
        if error is not None:
            return GpuReading(available=False, error=error)
        nv = self._nvml
        try:
            count = nv.nvmlDeviceGetCount()
        except nv.NVMLError as exc:
            return GpuReading(available=False, error=f"NVML device count failed: {exc}")
        gpus: list[GpuStat] = []
        errors: list[str] = []
        for i in range(count):
            try:
                h = nv.nvmlDeviceGetHandleByIndex(i)
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                name = _text(nv.nvmlDeviceGetName(h))
            except nv.NVMLError as exc:
                errors.append(f"gpu {i}: {exc}")
                continue
            raw_uuid = self._optional(nv.nvmlDeviceGetUUID, h)
            uuid = None if raw_uuid is None else _text(raw_uuid)
            util = self._optional(nv.nvmlDeviceGetUtilizationRates, h)
            gpus.append(
                GpuStat(
                    index=i,
                    name=name,
                    uuid=uuid,
                    memory_used_bytes=int(mem.used),
                    memory_total_bytes=int(mem.total),
                    utilization_pct=None if util is None else int(util.gpu),
                    memory_utilization_pct=None if util is None else int(util.memory),
                )
            )
        return GpuReading(available=True, error="; ".join(errors) or None, gpus=tuple(gpus))

    def _optional(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except self._nvml.NVMLError:
            return None

    def close(self) -> None:
        if self._initialised:
            self._initialised = False
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass  # shutting down anyway; nothing left to release
