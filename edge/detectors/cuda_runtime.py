"""TensorRT and CUDA, imported only when called: the TensorRT module with a clear error when it is missing,
and the few CUDA calls an engine needs (buffers, copies on one stream, the GPU's name) from cuda-python or pycuda.

GPU-ONLY CODE PATH. It needs TensorRT >= 10 and cuda-python (or pycuda), imported lazily so
that this module loads on any machine; the development machine has no GPU and runs none of it.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np


class TensorRTUnavailable(ImportError):
    """TensorRT or a CUDA binding is not installed here: use the onnxruntime backend."""


def import_tensorrt() -> Any:
    """The `tensorrt` module, or a clear error saying what to install instead of a bare ImportError."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailable(
            "The tensorrt backend needs NVIDIA TensorRT >= 10 and an NVIDIA GPU. TensorRT is not "
            "installed here (JetPack ships it on a Jetson; on x86 install the `tensorrt` wheel "
            "matching your CUDA). Use backend='onnxruntime' with the .onnx file instead."
        ) from exc
    if int(trt.__version__.split(".")[0]) < 10:
        raise TensorRTUnavailable(f"TensorRT {trt.__version__} found; this backend uses the TensorRT 10 tensor API")
    return trt


class CudaRuntime(Protocol):
    """The few CUDA calls an engine needs: buffers, copies on one stream, the GPU's name."""

    stream_handle: int

    def gpu_name(self) -> str: ...
    def device_empty(self, nbytes: int) -> int: ...
    def host_empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray: ...
    def to_device(self, dst: int, src: np.ndarray) -> None: ...
    def to_host(self, dst: np.ndarray, src: int) -> None: ...
    def synchronize(self) -> None: ...
    def current(self) -> contextlib.AbstractContextManager[None]: ...
    def close(self) -> None: ...


class _CudaPython:
    """NVIDIA's cuda-python runtime bindings (`cuda.bindings.runtime`; `cuda.cudart` before 12.6).

    The runtime API uses the device's primary context from any thread, which is also the
    context TensorRT uses, so nothing needs pushing.
    """

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as rt
        except ImportError:
            from cuda import cudart as rt  # cuda-python < 12.6
        self._rt = rt
        self._device: list[int] = []
        self._pinned: list[int] = []
        self._stream = self._check(rt.cudaStreamCreate())
        self.stream_handle = int(self._stream)

    def _check(self, result: tuple) -> Any:
        err, *values = result
        if err != self._rt.cudaError_t.cudaSuccess:
            message = self._rt.cudaGetErrorString(err)[1]
            raise RuntimeError(f"CUDA error {err}: {message.decode(errors='replace')}")
        return values[0] if len(values) == 1 else None

    def gpu_name(self) -> str:
        props = self._check(self._rt.cudaGetDeviceProperties(0))
        name = props.name
        return (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).split("\0")[0].strip()

    def device_empty(self, nbytes: int) -> int:
        ptr = self._check(self._rt.cudaMalloc(max(nbytes, 1)))
        self._device.append(ptr)
        return int(ptr)

    def host_empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        # Page-locked host memory: the only kind a copy can overlap with the GPU's work.
        nbytes = max(int(np.prod(shape)) * np.dtype(dtype).itemsize, 1)
        ptr = self._check(self._rt.cudaMallocHost(nbytes))
        self._pinned.append(ptr)
        raw = (ctypes.c_byte * nbytes).from_address(int(ptr))
        return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def to_device(self, dst: int, src: np.ndarray) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self._rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, self._stream))

    def to_host(self, dst: np.ndarray, src: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self._rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, self._stream))

    def synchronize(self) -> None:
        self._check(self._rt.cudaStreamSynchronize(self._stream))

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        yield

    def close(self) -> None:
        self.synchronize()
        for ptr in self._device:
            self._rt.cudaFree(ptr)
        for ptr in self._pinned:
            self._rt.cudaFreeHost(ptr)
        self._device, self._pinned = [], []
        self._rt.cudaStreamDestroy(self._stream)


class _PyCuda:
    """pycuda, for older JetPacks without cuda-python. Works in the device's primary
    context (the one TensorRT uses), made current around each use so any thread may call."""

    def __init__(self) -> None:
        import pycuda.driver as cuda

        cuda.init()
        self._cuda = cuda
        self._ctx = cuda.Device(0).retain_primary_context()
        self._allocs: list[Any] = []
        with self.current():
            self._stream = cuda.Stream()
        self.stream_handle = int(self._stream.handle)

    def gpu_name(self) -> str:
        return str(self._cuda.Device(0).name())

    def device_empty(self, nbytes: int) -> int:
        with self.current():
            alloc = self._cuda.mem_alloc(max(nbytes, 1))
        self._allocs.append(alloc)
        return int(alloc)

    def host_empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        with self.current():
            return self._cuda.pagelocked_empty(shape, dtype)

    def to_device(self, dst: int, src: np.ndarray) -> None:
        self._cuda.memcpy_htod_async(dst, src, self._stream)

    def to_host(self, dst: np.ndarray, src: int) -> None:
        self._cuda.memcpy_dtoh_async(dst, src, self._stream)

    def synchronize(self) -> None:
        self._stream.synchronize()

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        self._ctx.push()
        try:
            yield
        finally:
            self._ctx.pop()

    def close(self) -> None:
        with self.current():
            self._stream.synchronize()
            for alloc in self._allocs:
                alloc.free()
        self._allocs = []


def load_cuda_runtime() -> CudaRuntime:
    """cuda-python when importable, else pycuda; a clear error when neither is."""
    try:
        return _CudaPython()
    except ImportError:
        pass
    try:
        return _PyCuda()
    except ImportError as exc:
        raise TensorRTUnavailable(
            "The tensorrt backend needs a CUDA binding for its buffers: install `cuda-python` "
            "(or `pycuda` on older JetPacks)."
        ) from exc


def gpu_name() -> str:
    """Name of GPU 0 as CUDA reports it (part of the engine cache key)."""
    cuda = load_cuda_runtime()
    try:
        return cuda.gpu_name()
    finally:
        cuda.close()
