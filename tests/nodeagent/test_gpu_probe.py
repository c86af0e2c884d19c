from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from concurproxy.nodeagent.gpu import DisabledProbe, FakeGpuProbe, GpuReading, GpuStat, NvmlProbe


class FakeNVMLError(Exception):
    pass


class FakeNvml:
    """Stands in for the pynvml module: 2 GPUs, the second without utilisation support (MIG-like)."""

    NVMLError = FakeNVMLError

    def __init__(self, init_failures: int = 0) -> None:
        self.init_failures = init_failures
        self.inits = 0
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        self.inits += 1
        if self.init_failures > 0:
            self.init_failures -= 1
            raise FakeNVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return SimpleNamespace(used=(h + 1) * 10 * 2**30, total=80 * 2**30, free=0)

    def nvmlDeviceGetName(self, h: int) -> Any:
        return b"NVIDIA H100 80GB HBM3" if h == 0 else "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return f"GPU-{h}"

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        if h == 1:
            raise FakeNVMLError("Not Supported")
        return SimpleNamespace(gpu=87, memory=45)


def test_nvml_probe_reads_every_gpu() -> None:
    nv = FakeNvml()
    probe = NvmlProbe(nvml=nv)
    r = probe.read()
    assert r == GpuReading(
        available=True,
        error=None,
        gpus=(
            GpuStat(0, "NVIDIA H100 80GB HBM3", "GPU-0", 10 * 2**30, 80 * 2**30, 87, 45),
            GpuStat(1, "NVIDIA H100 80GB HBM3", "GPU-1", 20 * 2**30, 80 * 2**30, None, None),
        ),
    )
    probe.read()
    assert nv.inits == 1
    probe.close()
    probe.close()
    assert nv.shutdowns == 1


def test_nvml_init_failure_is_reported_and_retried_after_retry_s() -> None:
    nv = FakeNvml(init_failures=1)
    now = [0.0]
    probe = NvmlProbe(nvml=nv, retry_s=30.0, clock=lambda: now[0])
    r = probe.read()
    assert (r.available, r.error) == (False, "NVML unavailable: Driver Not Loaded")
    now[0] = 10.0
    assert not probe.read().available and nv.inits == 1  # not retried yet
    now[0] = 31.0
    assert probe.read().available and nv.inits == 2


def test_real_pynvml_path_on_this_machine_never_raises() -> None:
    """With no NVIDIA driver: unavailable with NVML's message. On a GPU node: real readings."""
    probe = NvmlProbe()
    try:
        r = probe.read()
    finally:
        probe.close()
    if r.available:
        assert r.gpus and all(g.memory_total_bytes > 0 for g in r.gpus)
    else:
        assert r.error is not None and r.error.startswith("NVML unavailable:")
        assert r.gpus == ()


def test_disabled_and_fake_probes() -> None:
    assert DisabledProbe().read() == GpuReading(available=False, error="NVML disabled")
    fake = FakeGpuProbe()
    fake.read()
    fake.close()
    assert (fake.reads, fake.closed) == (1, True)
