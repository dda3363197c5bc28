"""A real CUDA computation through the driver API alone (ctypes, no torch/cupy): cuInit, the device's
name, a context, a tiny PTX kernel JIT-compiled by the driver, memory allocated, copied in, computed on,
copied back. It needs only what a container's GPU view exposes: the device nodes and libcuda (plus the
driver's PTX JIT library). `python gpu_cuda.py` runs it as a plain process (the benchmark's floor).
"""

from __future__ import annotations

import ctypes
import glob
import os
import time

N = 1 << 16
# out[i] = in[i] * 2 + 1, for i < n
PTX = rb"""
.version 7.0
.target sm_50
.address_size 64
.visible .entry twice_plus_one(.param .u64 buf, .param .u32 n)
{
    .reg .pred %p<2>;
    .reg .b32 %r<8>;
    .reg .b64 %rd<5>;
    ld.param.u64 %rd1, [buf];
    ld.param.u32 %r1, [n];
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mov.u32 %r4, %tid.x;
    mad.lo.s32 %r5, %r2, %r3, %r4;
    setp.ge.u32 %p1, %r5, %r1;
    @%p1 bra DONE;
    cvta.to.global.u64 %rd2, %rd1;
    mul.wide.u32 %rd3, %r5, 4;
    add.s64 %rd4, %rd2, %rd3;
    ld.global.u32 %r6, [%rd4];
    mad.lo.s32 %r7, %r6, 2, 1;
    st.global.u32 [%rd4], %r7;
DONE:
    ret;
}
"""


class CudaError(RuntimeError):
    pass


def _libcuda() -> ctypes.CDLL:
    candidates = ["libcuda.so.1", "libcuda.so"]
    dirs = (os.environ.get("LD_LIBRARY_PATH") or "").split(":")
    for d in [*dirs, "/usr/local/nvidia/lib64", "/usr/lib64", "/usr/lib/x86_64-linux-gnu"]:
        candidates += sorted(glob.glob(os.path.join(d, "libcuda.so*"))) if d else []
    errors = []
    for c in candidates:
        try:
            return ctypes.CDLL(c)
        except OSError as exc:
            errors.append(str(exc))
    raise CudaError("libcuda not found: " + "; ".join(errors[:3]))


def _check(cuda: ctypes.CDLL, rc: int, what: str) -> None:
    if rc != 0:
        msg = ctypes.c_char_p()
        cuda.cuGetErrorString(rc, ctypes.byref(msg))
        raise CudaError(f"{what} failed: {rc} {msg.value.decode() if msg.value else ''}")


def cuda_work() -> dict:
    """Run the kernel on device 0 of what this process sees; what happened, with timings (s)."""
    t0 = time.perf_counter()
    cuda = _libcuda()
    _check(cuda, cuda.cuInit(0), "cuInit")
    count = ctypes.c_int()
    _check(cuda, cuda.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
    dev = ctypes.c_int()
    _check(cuda, cuda.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
    name = ctypes.create_string_buffer(256)
    _check(cuda, cuda.cuDeviceGetName(name, 256, dev), "cuDeviceGetName")
    ctx = ctypes.c_void_p()
    _check(cuda, cuda.cuCtxCreate_v2(ctypes.byref(ctx), 0, dev), "cuCtxCreate")
    t_init = time.perf_counter()
    module = ctypes.c_void_p()
    _check(cuda, cuda.cuModuleLoadData(ctypes.byref(module), ctypes.c_char_p(PTX + b"\0")), "cuModuleLoadData")
    fn = ctypes.c_void_p()
    _check(cuda, cuda.cuModuleGetFunction(ctypes.byref(fn), module, b"twice_plus_one"), "cuModuleGetFunction")
    host = (ctypes.c_uint32 * N)(*range(N))
    dptr = ctypes.c_uint64()
    _check(cuda, cuda.cuMemAlloc_v2(ctypes.byref(dptr), ctypes.c_size_t(4 * N)), "cuMemAlloc")
    _check(cuda, cuda.cuMemcpyHtoD_v2(dptr, host, ctypes.c_size_t(4 * N)), "cuMemcpyHtoD")
    n = ctypes.c_uint32(N)
    params = (ctypes.c_void_p * 2)(ctypes.addressof(dptr), ctypes.addressof(n))
    threads = 256
    _check(cuda, cuda.cuLaunchKernel(fn, (N + threads - 1) // threads, 1, 1, threads, 1, 1, 0, None, params, None),
           "cuLaunchKernel")
    _check(cuda, cuda.cuCtxSynchronize(), "cuCtxSynchronize")
    out = (ctypes.c_uint32 * N)()
    _check(cuda, cuda.cuMemcpyDtoH_v2(out, dptr, ctypes.c_size_t(4 * N)), "cuMemcpyDtoH")
    ok = all(out[i] == 2 * i + 1 for i in range(N))
    cuda.cuMemFree_v2(dptr)
    cuda.cuCtxDestroy_v2(ctx)
    return {"device": name.value.decode(), "devices_visible": count.value, "correct": ok, "n": N,
            "sample": [out[0], out[1], out[N - 1]], "init_s": t_init - t0, "total_s": time.perf_counter() - t0}


def try_cuda() -> dict:
    try:
        return cuda_work()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


if __name__ == "__main__":
    import json

    print(json.dumps(try_cuda()))
