// rope.cu: rotary position embedding on the GPU, alone (layers/rope.c) and with the
// attention layer's q, k, v split (layers/qkv_rope.c); the contract of each entry point in
// hy_cuda_ops.h. The angles and their cos/sin are computed in double and rounded once, as the
// CPU op does, by one pair of functions (rope_angles, rope_apply) that every kernel uses.
#include <initializer_list>

#include "hy_cuda_ops.h"
#include "ops_device.cuh"

namespace {

// ---------------------------------------------------------------- rope
constexpr int kRopeMaxHalf = 256;
struct RopeFreq {
    float f[kRopeMaxHalf];  // inv_freq_i, i < D/2 (a kernel parameter, 1 KiB)
};

// The cos and sin of VEC pairs i0 .. i0 + VEC - 1 at position pos: the angle
// and its cos/sin in double, rounded once (as layers/rope.c). The double
// sincos is most of a rope kernel's work: q and k share one.
template <int VEC>
__device__ __forceinline__ void rope_angles(const RopeFreq &fr, int i0, double pos,
                                            float (&co)[VEC], float (&si)[VEC]) {
#pragma unroll
    for (int k = 0; k < VEC; k++) {
        double sd, cd;
        sincos(pos * (double)fr.f[i0 + k], &sd, &cd);
        co[k] = (float)cd;
        si[k] = (float)sd;
    }
}

// The rotation of VEC pairs (a, b) by those angles: forward o1 = a cos -
// b sin, o2 = b cos + a sin; inverse (the backward) o1 = a cos + b sin,
// o2 = b cos - a sin. With rope_angles, one pair of functions for every
// rope kernel, so that each rounds alike.
template <int VEC, bool INVERSE>
__device__ __forceinline__ void rope_apply(const float (&co)[VEC], const float (&si)[VEC],
                                           const float (&a)[VEC], const float (&b)[VEC],
                                           float (&o1)[VEC], float (&o2)[VEC]) {
#pragma unroll
    for (int k = 0; k < VEC; k++) {
        if (INVERSE) {
            o1[k] = a[k] * co[k] + b[k] * si[k];
            o2[k] = b[k] * co[k] - a[k] * si[k];
        } else {
            o1[k] = a[k] * co[k] - b[k] * si[k];
            o2[k] = b[k] * co[k] + a[k] * si[k];
        }
    }
}

template <int VEC, bool INVERSE>
__device__ __forceinline__ void rope_rotate(const RopeFreq &fr, int i0, double pos,
                                            const float (&a)[VEC], const float (&b)[VEC],
                                            float (&o1)[VEC], float (&o2)[VEC]) {
    float co[VEC], si[VEC];
    rope_angles<VEC>(fr, i0, pos, co, si);
    rope_apply<VEC, INVERSE>(co, si, a, b, o1, o2);
}

// fwd (sign +1): y = R(theta) x into y (bf16). bwd (sign -1): dx += R(-theta) dy.
template <int VEC>
__global__ void rope_fwd_kernel(int64_t units, int T, int H, int D, int64_t pos0_arg,
                                const long long *pos0_dev, RopeFreq fr, const uint16_t *x,
                                uint16_t *y) {
    // The position comes from device memory when given (a replayed CUDA graph).
    const int64_t pos0 = pos0_dev ? (int64_t)*pos0_dev : pos0_arg;
    int half = D / 2, gpv = half / VEC;
    GRID_STRIDE(u, units) {
        int64_t vec = u / gpv;
        int i0 = (int)(u - vec * gpv) * VEC;
        int64_t t = (vec / H) % T;
        const uint16_t *x1 = x + vec * D + i0;
        uint16_t *y1 = y + vec * D + i0;
        float a[VEC], b[VEC], o1[VEC], o2[VEC];
        ld_bf<VEC>(x1, a);
        ld_bf<VEC>(x1 + half, b);
        rope_rotate<VEC, false>(fr, i0, (double)(pos0 + t), a, b, o1, o2);
        st_bf<VEC>(y1, o1);
        st_bf<VEC>(y1 + half, o2);
    }
}

template <int VEC>
__global__ void rope_bwd_kernel(int64_t units, int T, int H, int D, int64_t pos0, RopeFreq fr,
                                const float *dy, float *dx) {
    int half = D / 2, gpv = half / VEC;
    GRID_STRIDE(u, units) {
        int64_t vec = u / gpv;
        int i0 = (int)(u - vec * gpv) * VEC;
        int64_t t = (vec / H) % T;
        const float *g1 = dy + vec * D + i0;
        float *d1 = dx + vec * D + i0;
        float a[VEC], b[VEC], o1[VEC], o2[VEC];
        ld_f<VEC>(g1, a);
        ld_f<VEC>(g1 + half, b);
        rope_rotate<VEC, true>(fr, i0, (double)(pos0 + t), a, b, o1, o2);
        acc_f<VEC>(d1, o1);
        acc_f<VEC>(d1 + half, o2);
    }
}

// ---------------------------------------------------------------- qkv_rope
// A unit is VEC pairs (i0 .. i0 + VEC - 1) of one (b, t, h): the pairs of q
// and k (one angle for both) and the same columns of v's two halves. qkv
// rows are 3I wide, I = H D: q at column h D, k at I + h D, v at 2I + h D.
template <int VEC>
__global__ void qkv_rope_fwd_kernel(int64_t units, int T, int H, int D, int64_t pos0,
                                    RopeFreq fr, const uint16_t *qkv, uint16_t *q, uint16_t *k,
                                    uint16_t *v) {
    const int half = D / 2, gpv = half / VEC;
    const int64_t I = (int64_t)H * D;
    GRID_STRIDE(u, units) {
        const int64_t vec = u / gpv, row = vec / H;  // vec: (b, t, h); row: (b, t)
        const int i0 = (int)(u - vec * gpv) * VEC;
        const uint16_t *src = qkv + row * 3 * I + (vec - row * H) * D + i0;
        const int64_t dst = vec * D + i0;
        float qa[VEC], qb[VEC], ka[VEC], kb[VEC], va[VEC], vb[VEC];
        ld_bf<VEC>(src, qa);
        ld_bf<VEC>(src + half, qb);
        ld_bf<VEC>(src + I, ka);
        ld_bf<VEC>(src + I + half, kb);
        ld_bf<VEC>(src + 2 * I, va);
        ld_bf<VEC>(src + 2 * I + half, vb);
        float co[VEC], si[VEC], o1[VEC], o2[VEC];
        rope_angles<VEC>(fr, i0, (double)(pos0 + row % T), co, si);
        rope_apply<VEC, false>(co, si, qa, qb, o1, o2);
        st_bf<VEC>(q + dst, o1);
        st_bf<VEC>(q + dst + half, o2);
        rope_apply<VEC, false>(co, si, ka, kb, o1, o2);
        st_bf<VEC>(k + dst, o1);
        st_bf<VEC>(k + dst + half, o2);
        st_bf<VEC>(v + dst, va);
        st_bf<VEC>(v + dst + half, vb);
    }
}

// d qkv = [R(-theta) dq | R(-theta) dk | dv]; a NULL gradient reads as zero.
// MODE 0: fp32 written; 1: fp32 added to; 2: bf16 written.
template <int VEC, int MODE>
__device__ __forceinline__ void qkv_rope_put(void *dqkv, int64_t at, const float (&f)[VEC]) {
    if constexpr (MODE == 0) st_f<VEC>((float *)dqkv + at, f);
    if constexpr (MODE == 1) acc_f<VEC>((float *)dqkv + at, f);
    if constexpr (MODE == 2) st_bf<VEC>((uint16_t *)dqkv + at, f);
}

template <int VEC>
__device__ __forceinline__ void ld_f_or_zero(const float *p, int64_t at, float (&f)[VEC]) {
    if (p) {
        ld_f<VEC>(p + at, f);
    } else {
#pragma unroll
        for (int k = 0; k < VEC; k++) f[k] = 0.0f;
    }
}

template <int VEC, int MODE>
__global__ void qkv_rope_bwd_kernel(int64_t units, int T, int H, int D, int64_t pos0,
                                    RopeFreq fr, const float *dq, const float *dk,
                                    const float *dv, void *dqkv) {
    const int half = D / 2, gpv = half / VEC;
    const int64_t I = (int64_t)H * D;
    GRID_STRIDE(u, units) {
        const int64_t vec = u / gpv, row = vec / H;
        const int i0 = (int)(u - vec * gpv) * VEC;
        const int64_t src = vec * D + i0, dst = row * 3 * I + (vec - row * H) * D + i0;
        float qa[VEC], qb[VEC], ka[VEC], kb[VEC], va[VEC], vb[VEC];
        ld_f_or_zero<VEC>(dq, src, qa);
        ld_f_or_zero<VEC>(dq, src + half, qb);
        ld_f_or_zero<VEC>(dk, src, ka);
        ld_f_or_zero<VEC>(dk, src + half, kb);
        ld_f_or_zero<VEC>(dv, src, va);
        ld_f_or_zero<VEC>(dv, src + half, vb);
        float co[VEC], si[VEC], o1[VEC], o2[VEC];
        rope_angles<VEC>(fr, i0, (double)(pos0 + row % T), co, si);
        rope_apply<VEC, true>(co, si, qa, qb, o1, o2);
        qkv_rope_put<VEC, MODE>(dqkv, dst, o1);
        qkv_rope_put<VEC, MODE>(dqkv, dst + half, o2);
        rope_apply<VEC, true>(co, si, ka, kb, o1, o2);
        qkv_rope_put<VEC, MODE>(dqkv, dst + I, o1);
        qkv_rope_put<VEC, MODE>(dqkv, dst + I + half, o2);
        qkv_rope_put<VEC, MODE>(dqkv, dst + 2 * I, va);
        qkv_rope_put<VEC, MODE>(dqkv, dst + 2 * I + half, vb);
    }
}

}  // namespace

// ================================================================ entry points
// ---------------------------------------------------------------- rope
// inv_freq exactly as layers/rope.c computes it (fp32, the host's powf).
static RopeFreq rope_freq(const char *op, int D, float base) {
    HY_REQUIRE(D > 0 && D % 2 == 0 && D / 2 <= kRopeMaxHalf,
               "%s: head dim D = %d must be even and at most %d", op, D, 2 * kRopeMaxHalf);
    HY_REQUIRE(base > 0 && std::isfinite(base), "%s: base must be a positive number, not %g", op,
               (double)base);
    RopeFreq fr;
    for (int i = 0; i < kRopeMaxHalf; i++)
        fr.f[i] = i < D / 2 ? 1.0f / powf(base, (float)(2 * i) / (float)D) : 0.0f;
    return fr;
}

static void rope_fwd_launch(const char *op, int B, int T, int H, int D, int64_t pos0,
                            const long long *pos0_dev, float base, const void *x, void *y,
                            void *stream) {
    HY_REQUIRE(B >= 0 && T >= 0 && H >= 0 && pos0 >= 0,
               "%s: bad arguments B %d, T %d, H %d, pos0 %lld", op, B, T, H, (long long)pos0);
    RopeFreq fr = rope_freq(op, D, base);
    int64_t vecs = (int64_t)B * T * H, half = D / 2;
    if (vecs == 0) return;
    cudaStream_t s = as_stream(stream);
    const uint16_t *xi = (const uint16_t *)x;
    uint16_t *yo = (uint16_t *)y;
    if (half % 8 == 0 && aligned16(x) && aligned16(y))
        rope_fwd_kernel<8><<<blocks_for(vecs * half / 8), kThreads, 0, s>>>(
            vecs * half / 8, T, H, D, pos0, pos0_dev, fr, xi, yo);
    else
        rope_fwd_kernel<1><<<blocks_for(vecs * half), kThreads, 0, s>>>(
            vecs * half, T, H, D, pos0, pos0_dev, fr, xi, yo);
    LAUNCH_CHECK();
}

extern "C" void hy_cuda_rope_fwd(int B, int T, int H, int D, int64_t pos0, float base,
                                 const void *x, void *y, void *stream) {
    rope_fwd_launch("cuda rope_fwd", B, T, H, D, pos0, NULL, base, x, y, stream);
}

extern "C" void hy_cuda_rope_fwd_dev(int B, int T, int H, int D, const long long *pos0_dev,
                                     float base, const void *x, void *y, void *stream) {
    HY_REQUIRE(pos0_dev, "cuda rope_fwd_dev: pos0_dev is NULL");
    rope_fwd_launch("cuda rope_fwd_dev", B, T, H, D, 0, pos0_dev, base, x, y, stream);
}

extern "C" void hy_cuda_rope_bwd(int B, int T, int H, int D, int64_t pos0, float base,
                                 const float *dy, float *dx, void *stream) {
    HY_REQUIRE(B >= 0 && T >= 0 && H >= 0 && pos0 >= 0,
               "cuda rope_bwd: bad arguments B %d, T %d, H %d, pos0 %lld", B, T, H,
               (long long)pos0);
    RopeFreq fr = rope_freq("cuda rope_bwd", D, base);
    int64_t vecs = (int64_t)B * T * H, half = D / 2;
    if (vecs == 0 || !dx) return;
    cudaStream_t s = as_stream(stream);
    if (half % 8 == 0 && aligned16(dy) && aligned16(dx))
        rope_bwd_kernel<8><<<blocks_for(vecs * half / 8), kThreads, 0, s>>>(
            vecs * half / 8, T, H, D, pos0, fr, dy, dx);
    else
        rope_bwd_kernel<1><<<blocks_for(vecs * half), kThreads, 0, s>>>(vecs * half, T, H, D,
                                                                         pos0, fr, dy, dx);
    LAUNCH_CHECK();
}

// ---------------------------------------------------------------- qkv_rope
// VEC 4 when every row segment is 16-byte aligned (half % 4, base pointers),
// else 1. (VEC 8 would put a thread's two fp32 loads 32 bytes apart.)
static bool qkv_rope_vec4(int D, std::initializer_list<const void *> ptrs) {
    bool ok = (D / 2) % 4 == 0;
    for (const void *p : ptrs) ok = ok && aligned16(p);
    return ok;
}

extern "C" void hy_cuda_qkv_rope_fwd(int B, int T, int H, int D, int64_t pos0, float base,
                                     const void *qkv, void *q, void *k, void *v, void *stream) {
    HY_REQUIRE(B >= 0 && T >= 0 && H >= 0 && pos0 >= 0,
               "cuda qkv_rope_fwd: bad arguments B %d, T %d, H %d, pos0 %lld", B, T, H,
               (long long)pos0);
    RopeFreq fr = rope_freq("cuda qkv_rope_fwd", D, base);
    const int64_t pairs = (int64_t)B * T * H * (D / 2);
    if (pairs == 0) return;
    HY_REQUIRE(qkv && q && k && v, "cuda qkv_rope_fwd: a NULL pointer");
    cudaStream_t s = as_stream(stream);
    const uint16_t *x = (const uint16_t *)qkv;
    uint16_t *qo = (uint16_t *)q, *ko = (uint16_t *)k, *vo = (uint16_t *)v;
    if (qkv_rope_vec4(D, {qkv, q, k, v}))
        qkv_rope_fwd_kernel<4><<<stream_blocks(pairs / 4), kThreads, 0, s>>>(pairs / 4, T, H, D,
                                                                             pos0, fr, x, qo, ko, vo);
    else
        qkv_rope_fwd_kernel<1><<<stream_blocks(pairs), kThreads, 0, s>>>(pairs, T, H, D, pos0, fr,
                                                                         x, qo, ko, vo);
    LAUNCH_CHECK();
}

template <int VEC>
static void qkv_rope_bwd_launch(int64_t units, int T, int H, int D, int64_t pos0,
                                const RopeFreq &fr, const float *dq, const float *dk,
                                const float *dv, void *dqkv, int mode, cudaStream_t s) {
    const unsigned g = stream_blocks(units);
    if (mode == 0)
        qkv_rope_bwd_kernel<VEC, 0><<<g, kThreads, 0, s>>>(units, T, H, D, pos0, fr, dq, dk, dv, dqkv);
    else if (mode == 1)
        qkv_rope_bwd_kernel<VEC, 1><<<g, kThreads, 0, s>>>(units, T, H, D, pos0, fr, dq, dk, dv, dqkv);
    else
        qkv_rope_bwd_kernel<VEC, 2><<<g, kThreads, 0, s>>>(units, T, H, D, pos0, fr, dq, dk, dv, dqkv);
    LAUNCH_CHECK();
}

extern "C" void hy_cuda_qkv_rope_bwd(int B, int T, int H, int D, int64_t pos0, float base,
                                     const float *dq, const float *dk, const float *dv,
                                     void *dqkv, int out_mode, void *stream) {
    HY_REQUIRE(B >= 0 && T >= 0 && H >= 0 && pos0 >= 0 && out_mode >= 0 && out_mode <= 2,
               "cuda qkv_rope_bwd: bad arguments B %d, T %d, H %d, pos0 %lld, out_mode %d", B, T,
               H, (long long)pos0, out_mode);
    RopeFreq fr = rope_freq("cuda qkv_rope_bwd", D, base);
    const int64_t pairs = (int64_t)B * T * H * (D / 2);
    if (pairs == 0 || !dqkv) return;
    cudaStream_t s = as_stream(stream);
    // bf16 output: 8-byte stores of 4 values, aligned when the fp32 ones would be.
    if (qkv_rope_vec4(D, {dq, dk, dv, dqkv}))
        qkv_rope_bwd_launch<4>(pairs / 4, T, H, D, pos0, fr, dq, dk, dv, dqkv, out_mode, s);
    else
        qkv_rope_bwd_launch<1>(pairs, T, H, D, pos0, fr, dq, dk, dv, dqkv, out_mode, s);
}

