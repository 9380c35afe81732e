// pdl.cuh: programmatic dependent launch for the decoding kernels.
//
// A decoding token is a chain of small dependent kernels; each waits for the
// one before it to finish, then pays its own ramp-up (block launch, first
// loads from memory). With programmatic dependent launch (sm_90) a kernel is
// launched while its predecessor still runs: it reads what does not depend
// on the predecessor (its weights, its own layer's state) and then waits in
// pdl_wait() until the predecessor has finished and its writes are visible.
// pdl_trigger() lets the successor launch; the kernels here call it once
// past their wait, so at most one kernel runs ahead. Captured into the
// decoding graph, the dependency becomes a programmatic edge.
//
// HYDRA_PDL=0 in the environment launches them plainly (for A/B timing).
// Without PDL support the two device calls are no-ops and the launch is a
// plain one (griddepcontrol.wait returns at once in a kernel launched
// without the attribute).
#ifndef HY_CUDA_PDL_CUH
#define HY_CUDA_PDL_CUH

#include <stdlib.h>

#include "check.cuh"

namespace {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

inline bool pdl_enabled() {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("HYDRA_PDL");
        on = !(e && e[0] == '0');
    }
    return on != 0;
}

// The largest shared-memory carveout (228 KB of an SM's 256 KB of L1 and
// shared memory) for a kernel, set once (a short list, searched). The
// driver otherwise picks a split per kernel from its shared memory, and an
// SM changes its split only when idle, so a kernel wanting another split
// than the one still running cannot start beside it. A chain of the 115M
// model's 48 decoding GEMVs took 164 us with the driver's splits and 140 us
// with this one on an H200. HYDRA_CARVEOUT=0 leaves the driver's choice.
inline void prefer_shared(const void *kernel) {
    static const void *done[64];
    static int n = 0;
    for (int i = 0; i < n; i++)
        if (done[i] == kernel) return;
    const char *e = getenv("HYDRA_CARVEOUT");
    if (e && e[0] == '0') return;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                    cudaSharedmemCarveoutMaxShared));
    if (n < 64) done[n++] = kernel;
}

// kernel<<<grid, block, smem, stream>>>(args...), allowed to start early;
// shared: with the largest carveout (prefer_shared), else the driver's.
// launch_pdl: shared.
template <typename... Params, typename... Args>
void launch_pdl_as(bool shared, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                   cudaStream_t s, Args... args) {
    if (shared) prefer_shared((const void *)kernel);
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl_enabled() ? 1 : 0;
    CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...));
}

template <typename... Params, typename... Args>
void launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                Args... args) {
    launch_pdl_as(true, kernel, grid, block, smem, s, args...);
}

}  // namespace

#endif
