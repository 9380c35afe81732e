// GPU sliding-window attention (cuda/swa.cu) against the CPU reference
// hy_swa (layers/swa.c) run in fp32 on the same bf16-rounded inputs:
// forward output and log-sum-exp, the three gradients, token-by-token decode
// over the ring buffer, misuse errors, and a benchmark that asserts nothing.
// Every GPU output is poisoned (0xFF bytes: NaN in bf16 and fp32) before
// each run, so an element a kernel forgets to write fails the comparison.
// Skipped (exit 77) without a GPU or without a CUDA build.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd/rng.h"
#include "../autograd/tape.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_swa.h"
#include "../layers/swa.h"
#include "harness.h"

static void need_gpu(void) {
    if (!hy_cuda_built()) hy_test_skip("built without CUDA");
    if (hy_cuda_device_count() == 0) hy_test_skip("no GPU");
}

typedef struct {
    int B, T, H, D, W;
} gcase;

static long numel(const gcase *c) { return (long)c->B * c->T * c->H * c->D; }

// ---------------------------------------------------------------- inputs

// Host inputs: the bf16 bits the GPU gets and the same values as floats for
// the CPU. (B, T, H, D) each; g is the output gradient dO.
typedef struct {
    long n;
    uint16_t *q16, *k16, *v16, *g16;
    float *q, *k, *v, *g;
} inputs;

static void fill_bf16(hy_rng *r, long n, float std, uint16_t *h, float *f) {
    for (long i = 0; i < n; i++) {
        h[i] = hy_f32_to_bf16(std * hy_rng_normal(r));
        f[i] = hy_bf16_to_f32(h[i]);
    }
}

static void inputs_make(inputs *in, const gcase *c, uint64_t seed) {
    hy_rng r;
    hy_rng_seed(&r, seed);
    long n = in->n = numel(c);
    uint16_t **h[4] = {&in->q16, &in->k16, &in->v16, &in->g16};
    float **f[4] = {&in->q, &in->k, &in->v, &in->g};
    const float std[4] = {1.5f, 1.5f, 1.0f, 1.0f};  // scores with std ~2.25: peaked softmax
    for (int i = 0; i < 4; i++) {
        *h[i] = hy_xmalloc((size_t)n * sizeof(uint16_t));
        *f[i] = hy_xmalloc((size_t)n * sizeof(float));
        fill_bf16(&r, n, std[i], *h[i], *f[i]);
    }
}

static void inputs_free(inputs *in) {
    free(in->q16), free(in->k16), free(in->v16), free(in->g16);
    free(in->q), free(in->k), free(in->v), free(in->g);
}

// ---------------------------------------------------------------- CPU reference

// hy_swa on the CPU through a host tape: o, and when dout is given the
// gradients dq, dk, dv (hy_tape_backward_seed with dout), all (B, T, H, D).
static void cpu_swa(const gcase *c, const inputs *in, int grads, float *o, float *dq, float *dk,
                    float *dv) {
    size_t bytes = (size_t)numel(c) * sizeof(float);
    hy_arena ar, acts, scratch;
    hy_arena_init(&ar, "swa-inputs", HY_CPU, 6 * bytes + ((size_t)1 << 20));
    hy_arena_init(&acts, "swa-acts", HY_CPU, 2 * bytes + ((size_t)1 << 20));
    hy_arena_init(&scratch, "swa-scratch", HY_CPU, 2 * bytes + ((size_t)1 << 20));
    hy_tape tape;
    hy_tape_init(&tape, &acts, &scratch, 16, 64);
    tape.enabled = grads;
    const float *src[3] = {in->q, in->k, in->v};
    const char *names[3] = {"q", "k", "v"};
    hy_tensor *x[3];
    for (int i = 0; i < 3; i++) {
        x[i] = hy_new4(&ar, HY_F32, c->B, c->T, c->H, c->D, names[i]);
        memcpy(x[i]->data, src[i], bytes);
        x[i]->requires_grad = grads;
    }
    hy_tensor *gr[3] = {NULL, NULL, NULL};
    if (grads)
        for (int i = 0; i < 3; i++) {
            gr[i] = hy_zeros_like(&ar, x[i], "grad");
            hy_tape_bind_grad(&tape, x[i], gr[i]);
        }
    hy_tensor *out = hy_swa(&tape, x[0], x[1], x[2], NULL, NULL, c->W);
    memcpy(o, out->data, bytes);
    if (grads) {
        hy_tape_backward_seed(&tape, out, in->g);
        memcpy(dq, gr[0]->data, bytes);
        memcpy(dk, gr[1]->data, bytes);
        memcpy(dv, gr[2]->data, bytes);
    }
    hy_tape_free(&tape);
    hy_arena_free(&ar);
    hy_arena_free(&acts);
    hy_arena_free(&scratch);
}

// The natural-log log-sum-exp of every row's scaled scores, (B, T, H), in
// double (hy_swa keeps its own lse private to the tape).
static void lse_ref(const gcase *c, const inputs *in, float *lse) {
    double *s = hy_xmalloc((size_t)c->T * sizeof(double)), scale = 1.0 / sqrt((double)c->D);
    for (int b = 0; b < c->B; b++)
        for (int i = 0; i < c->T; i++)
            for (int h = 0; h < c->H; h++) {
                const float *qi = in->q + (((long)b * c->T + i) * c->H + h) * c->D;
                int j0 = i - c->W + 1 > 0 ? i - c->W + 1 : 0;
                double m = -INFINITY, sum = 0;
                for (int j = j0; j <= i; j++) {
                    const float *kj = in->k + (((long)b * c->T + j) * c->H + h) * c->D;
                    double d = 0;
                    for (int e = 0; e < c->D; e++) d += (double)qi[e] * kj[e];
                    s[j - j0] = d * scale;
                    m = fmax(m, s[j - j0]);
                }
                for (int j = j0; j <= i; j++) sum += exp(s[j - j0] - m);
                lse[((long)b * c->T + i) * c->H + h] = (float)(m + log(sum));
            }
    free(s);
}

// ---------------------------------------------------------------- comparison

// max |gpu - cpu| / max(max |cpu|, floor): hy_max_rel_err_f with a floor
// under the scale (0 for none), and on failure where the worst element is
// (index split as (B, T, H, D); D = 1 for lse) and how many elements are NaN
// (never written: the buffers were poisoned).
static double compare(const char *what, const gcase *c, int D, const float *gpu, const float *cpu,
                      long n, double tol, double floor) {
    double worst = -1, scale = 0;
    long at = 0, nans = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)gpu[i] - cpu[i]);
        if (d != d) nans++, d = INFINITY;
        if (d > worst) worst = d, at = i;
        if (fabs(cpu[i]) > scale) scale = fabs(cpu[i]);
    }
    double err = worst / (scale > floor ? scale : floor > 0 ? floor : 1);
    int e = (int)(at % D), h = (int)(at / D % c->H), t = (int)(at / ((long)D * c->H) % c->T);
    int b = (int)(at / ((long)D * c->H * c->T));
    printf("    %-4s rel err %.3g (max |ref| %.3g%s)%s\n", what, err, scale,
           floor > scale ? ", below the floor" : "", err <= tol ? "" : "  <-- FAIL");
    if (!(err <= tol)) {
        printf("      worst at b=%d t=%d h=%d d=%d: gpu %.6g cpu %.6g; %ld of %ld NaN "
               "(unwritten or NaN)\n",
               b, t, h, e, gpu[at], cpu[at], nans, n);
        fflush(stdout);
        hy_test_fail_at(__FILE__, __LINE__, "%s B=%d T=%d H=%d D=%d W=%d: rel err %.3g > %.1g",
                        what, c->B, c->T, c->H, c->D, c->W, err, tol);
    }
    return err;
}

static double max_abs(const float *x, long n) {
    double m = 0;
    for (long i = 0; i < n; i++)
        if (fabs(x[i]) > m) m = fabs(x[i]);
    return m;
}

static void bf16_to_f32(const uint16_t *h, float *f, long n) {
    for (long i = 0; i < n; i++) f[i] = hy_bf16_to_f32(h[i]);
}

// ---------------------------------------------------------------- device buffers

typedef struct {
    void *q, *k, *v, *o, *g;  // bf16 (B, T, H, D)
    float *lse;               // (B, T, H)
    float *dq, *dk, *dv;      // (B, T, H, D)
    void *ws;
} dbufs;

static void dbufs_open(dbufs *d, const gcase *c, const inputs *in) {
    size_t n = (size_t)numel(c), rows = (size_t)c->B * c->T * c->H;
    d->q = hy_cuda_malloc(n * 2), d->k = hy_cuda_malloc(n * 2), d->v = hy_cuda_malloc(n * 2);
    d->o = hy_cuda_malloc(n * 2), d->g = hy_cuda_malloc(n * 2);
    d->lse = hy_cuda_malloc(rows * sizeof(float));
    d->dq = hy_cuda_malloc(n * 4), d->dk = hy_cuda_malloc(n * 4), d->dv = hy_cuda_malloc(n * 4);
    d->ws = hy_cuda_malloc(hy_cuda_swa_workspace_bytes(c->B, c->T, c->H, c->D));
    hy_cuda_memcpy_h2d(d->q, in->q16, n * 2);
    hy_cuda_memcpy_h2d(d->k, in->k16, n * 2);
    hy_cuda_memcpy_h2d(d->v, in->v16, n * 2);
    hy_cuda_memcpy_h2d(d->g, in->g16, n * 2);
}

static void dbufs_close(dbufs *d) {
    void *p[10] = {d->q, d->k, d->v, d->o, d->g, d->lse, d->dq, d->dk, d->dv, d->ws};
    for (int i = 0; i < 10; i++) hy_cuda_free(p[i]);
}

// (T, W): the required cases, then a window that is no multiple of the
// 16-row warp tiles and a window of 1 (each query sees only its own key).
static const int g_tw[][2] = {{1, 4},     {70, 16},   {200, 64}, {333, 512},
                              {100, 1000}, {257, 100}, {130, 1}};
#define N_TW ((int)(sizeof g_tw / sizeof g_tw[0]))

// ---------------------------------------------------------------- forward

HY_TEST(gpu_swa_fwd_vs_cpu, "gpu") {
    need_gpu();
    double worst_o = 0, worst_l = 0;
    for (int di = 0; di < 2; di++)
        for (int ci = 0; ci < N_TW; ci++) {
            gcase c = {2, g_tw[ci][0], 3, di ? 128 : 64, g_tw[ci][1]};
            long n = numel(&c), rows = (long)c.B * c.T * c.H;
            printf("  B=%d T=%d H=%d D=%d W=%d%s\n", c.B, c.T, c.H, c.D, c.W,
                   c.W >= c.T ? " (full causal)" : "");
            inputs in;
            inputs_make(&in, &c, 1000 + 10 * di + ci);
            float *o_ref = hy_xmalloc(n * sizeof(float)), *l_ref = hy_xmalloc(rows * sizeof(float));
            cpu_swa(&c, &in, 0, o_ref, NULL, NULL, NULL);
            lse_ref(&c, &in, l_ref);

            dbufs d;
            dbufs_open(&d, &c, &in);
            hy_cuda_memset(d.o, 0xFF, n * 2);
            hy_cuda_memset(d.lse, 0xFF, rows * sizeof(float));
            hy_cuda_swa_fwd(c.B, c.T, c.H, c.D, c.W, d.q, d.k, d.v, d.o, d.lse, NULL);
            hy_cuda_synchronize();
            uint16_t *o16 = hy_xmalloc(n * 2);
            float *o = hy_xmalloc(n * sizeof(float)), *l = hy_xmalloc(rows * sizeof(float));
            hy_cuda_memcpy_d2h(o16, d.o, n * 2);
            hy_cuda_memcpy_d2h(l, d.lse, rows * sizeof(float));
            bf16_to_f32(o16, o, n);
            double eo = compare("o", &c, c.D, o, o_ref, n, 1e-2, 0);
            double el = compare("lse", &c, 1, l, l_ref, rows, 1e-3, 0);
            if (eo > worst_o || eo != eo) worst_o = eo;
            if (el > worst_l || el != el) worst_l = el;

            // Inference (lse NULL) writes the same output.
            hy_cuda_memset(d.o, 0xFF, n * 2);
            hy_cuda_swa_fwd(c.B, c.T, c.H, c.D, c.W, d.q, d.k, d.v, d.o, NULL, NULL);
            hy_cuda_synchronize();
            uint16_t *o16b = hy_xmalloc(n * 2);
            hy_cuda_memcpy_d2h(o16b, d.o, n * 2);
            HY_ASSERT(memcmp(o16, o16b, n * 2) == 0,
                      "D=%d T=%d W=%d: output differs when lse is not saved", c.D, c.T, c.W);
            // Only rows [q0, T) (chunked prefill): the same bits there, and
            // the query blocks wholly before q0 are not touched.
            int q0 = c.T / 2 + 3 < c.T ? c.T / 2 + 3 : c.T - 1, untouched = q0 / 64 * 64;
            hy_cuda_memset(d.o, 0xFF, n * 2);
            hy_cuda_swa_fwd_rows(c.B, c.T, c.H, c.D, c.W, q0, d.q, d.k, d.v, d.o, NULL);
            hy_cuda_synchronize();
            hy_cuda_memcpy_d2h(o16b, d.o, n * 2);
            size_t rs = (size_t)c.H * c.D;
            for (int b = 0; b < c.B; b++) {
                const uint16_t *x = o16 + (size_t)b * c.T * rs, *y = o16b + (size_t)b * c.T * rs;
                HY_ASSERT(memcmp(x + q0 * rs, y + q0 * rs, (size_t)(c.T - q0) * rs * 2) == 0,
                          "D=%d T=%d W=%d: rows from %d differ when computed alone", c.D, c.T, c.W, q0);
                for (size_t i = 0; i < (size_t)untouched * rs; i++)
                    HY_ASSERT(y[i] == 0xFFFF, "D=%d T=%d: row %zu before block %d was written", c.D,
                              c.T, i / rs, untouched / 64);
            }
            free(o16b);
            free(o16), free(o), free(l), free(o_ref), free(l_ref);
            dbufs_close(&d);
            inputs_free(&in);
        }
    printf("  worst: o %.3g (tol 1e-2), lse %.3g (tol 1e-3)\n", worst_o, worst_l);
}

// ---------------------------------------------------------------- backward

HY_TEST(gpu_swa_bwd_vs_cpu, "gpu") {
    need_gpu();
    double worst = 0;
    for (int di = 0; di < 2; di++)
        for (int ci = 0; ci < N_TW; ci++) {
            gcase c = {2, g_tw[ci][0], 3, di ? 128 : 64, g_tw[ci][1]};
            long n = numel(&c);
            printf("  B=%d T=%d H=%d D=%d W=%d%s\n", c.B, c.T, c.H, c.D, c.W,
                   c.W >= c.T ? " (full causal)" : "");
            inputs in;
            inputs_make(&in, &c, 2000 + 10 * di + ci);
            float *ref = hy_xmalloc(4 * n * sizeof(float));  // o, dq, dk, dv
            cpu_swa(&c, &in, 1, ref, ref + n, ref + 2 * n, ref + 3 * n);

            dbufs d;
            dbufs_open(&d, &c, &in);
            hy_cuda_swa_fwd(c.B, c.T, c.H, c.D, c.W, d.q, d.k, d.v, d.o, d.lse, NULL);
            float *outs[3] = {d.dq, d.dk, d.dv};
            for (int i = 0; i < 3; i++) hy_cuda_memset(outs[i], 0xFF, n * sizeof(float));
            hy_cuda_memset(d.ws, 0xFF, hy_cuda_swa_workspace_bytes(c.B, c.T, c.H, c.D));
            hy_cuda_swa_bwd(c.B, c.T, c.H, c.D, c.W, d.q, d.k, d.v, d.o, d.lse, d.g, d.dq, d.dk,
                            d.dv, d.ws, NULL);
            hy_cuda_synchronize();
            float *got = hy_xmalloc(3 * n * sizeof(float));
            for (int i = 0; i < 3; i++)
                hy_cuda_memcpy_d2h(got + i * n, outs[i], n * sizeof(float));
            const char *names[3] = {"dq", "dk", "dv"};
            // With one visible key (T = 1) the softmax is constant: dq = dk = 0 exactly
            // and both sides are rounding noise. So each gradient's scale is at least
            // 1e-3 of the largest of the three (no effect on the other cases).
            double big = max_abs(ref + n, 3 * n);
            for (int i = 0; i < 3; i++) {
                double e = compare(names[i], &c, c.D, got + i * n, ref + (i + 1) * n, n, 2e-2,
                                   1e-3 * big);
                if (e > worst || e != e) worst = e;
            }

            // Deterministic (no atomics): a second run gives the same bits.
            float *again = hy_xmalloc(n * sizeof(float));
            hy_cuda_memset(d.dq, 0xFF, n * sizeof(float));
            hy_cuda_swa_bwd(c.B, c.T, c.H, c.D, c.W, d.q, d.k, d.v, d.o, d.lse, d.g, d.dq, d.dk,
                            d.dv, d.ws, NULL);
            hy_cuda_synchronize();
            hy_cuda_memcpy_d2h(again, d.dq, n * sizeof(float));
            HY_ASSERT(memcmp(again, got, n * sizeof(float)) == 0,
                      "D=%d T=%d W=%d: dq differs between two identical runs", c.D, c.T, c.W);
            free(again);
            free(got), free(ref);
            dbufs_close(&d);
            inputs_free(&in);
        }
    printf("  worst gradient rel err %.3g (tol 2e-2)\n", worst);
}

// ---------------------------------------------------------------- decode

// Time-major copies (T, B, H, D) of q, k, v, one after the other: token t's
// rows are one contiguous (B, H, D) block, as a decoding step takes them.
static uint16_t *time_major_qkv(const gcase *c, const inputs *in) {
    long n = numel(c), hd = (long)c->H * c->D, bhd = c->B * hd;
    uint16_t *tm = hy_xmalloc(3 * n * sizeof(uint16_t));
    const uint16_t *src[3] = {in->q16, in->k16, in->v16};
    for (int x = 0; x < 3; x++)
        for (int b = 0; b < c->B; b++)
            for (int t = 0; t < c->T; t++)
                memcpy(tm + x * n + (long)t * bhd + b * hd, src[x] + ((long)b * c->T + t) * hd,
                       hd * sizeof(uint16_t));
    return tm;
}

// Time-major bf16 step outputs (T, B, H, D) back to (B, T, H, D) floats.
static float *batch_major_f32(const gcase *c, const uint16_t *o16) {
    long hd = (long)c->H * c->D, bhd = c->B * hd;
    float *o = hy_xmalloc(numel(c) * sizeof(float));
    for (int b = 0; b < c->B; b++)
        for (int t = 0; t < c->T; t++)
            for (long e = 0; e < hd; e++)
                o[((long)b * c->T + t) * hd + e] = hy_bf16_to_f32(o16[(long)t * bhd + b * hd + e]);
    return o;
}

HY_TEST(gpu_swa_step_vs_cpu, "gpu") {
    need_gpu();
    for (int di = 0; di < 2; di++) {
        gcase c = {2, 100, 3, di ? 128 : 64, 32};
        long n = numel(&c), hd = (long)c.H * c.D, bhd = c.B * hd;
        printf("  B=%d T=%d H=%d D=%d W=%d, token by token\n", c.B, c.T, c.H, c.D, c.W);
        inputs in;
        inputs_make(&in, &c, 3000 + di);
        float *o_ref = hy_xmalloc(n * sizeof(float));
        cpu_swa(&c, &in, 0, o_ref, NULL, NULL, NULL);

        uint16_t *tm = time_major_qkv(&c, &in);
        uint16_t *dqkv = hy_cuda_malloc(3 * n * 2), *dout = hy_cuda_malloc(n * 2);
        size_t ring = (size_t)c.B * c.W * hd * 2;
        void *rk = hy_cuda_malloc(ring), *rv = hy_cuda_malloc(ring);
        hy_cuda_memcpy_h2d(dqkv, tm, 3 * n * 2);
        // Poisoned ring: a read of a slot not yet written makes a NaN.
        hy_cuda_memset(rk, 0xFF, ring), hy_cuda_memset(rv, 0xFF, ring);
        hy_cuda_memset(dout, 0xFF, n * 2);
        for (int t = 0; t < c.T; t++)
            hy_cuda_swa_step(c.B, c.H, c.D, c.W, t, dqkv + t * bhd, dqkv + n + t * bhd,
                             dqkv + 2 * n + t * bhd, rk, rv, dout + t * bhd, NULL);
        hy_cuda_synchronize();
        uint16_t *o16 = hy_xmalloc(n * 2);
        hy_cuda_memcpy_d2h(o16, dout, n * 2);
        float *o = batch_major_f32(&c, o16);
        compare("step", &c, c.D, o, o_ref, n, 1e-2, 0);

        // The ring holds the last W tokens' k, v exactly (slot = pos % W).
        uint16_t *rh = hy_xmalloc(ring);
        hy_cuda_memcpy_d2h(rh, rk, ring);
        long bad = 0;
        for (int b = 0; b < c.B; b++)
            for (int t = c.T - c.W; t < c.T; t++)
                if (memcmp(rh + ((long)b * c.W + t % c.W) * hd, in.k16 + ((long)b * c.T + t) * hd,
                           hd * 2) != 0)
                    bad++;
        HY_ASSERT(bad == 0, "D=%d: %ld ring rows of k differ from the last W tokens' keys", c.D,
                  bad);

        // And the GPU forward on the whole sequence agrees with the steps.
        dbufs d;
        dbufs_open(&d, &c, &in);
        hy_cuda_swa_fwd(c.B, c.T, c.H, c.D, c.W, d.q, d.k, d.v, d.o, NULL, NULL);
        hy_cuda_synchronize();
        uint16_t *f16 = hy_xmalloc(n * 2);
        float *f = hy_xmalloc(n * sizeof(float));
        hy_cuda_memcpy_d2h(f16, d.o, n * 2);
        bf16_to_f32(f16, f, n);
        compare("fwd", &c, c.D, o, f, n, 1e-2, 0);
        dbufs_close(&d);
        free(f16), free(f), free(rh), free(o), free(o16), free(tm), free(o_ref);
        hy_cuda_free(dqkv), hy_cuda_free(dout), hy_cuda_free(rk), hy_cuda_free(rv);
        inputs_free(&in);
    }
}

// The dense model's step (split-K over a KV cache of 777 rows: 4 splits of
// 256, the last partial) token by token equals full causal attention over
// the sequence; the cache holds every token's k, v; the position read from
// device memory (a recorded graph) gives the same bits.
HY_TEST(gpu_dense_step_vs_cpu, "gpu") {
    need_gpu();
    for (int di = 0; di < 2; di++) {
        gcase c = {2, 600, 3, di ? 128 : 64, 600};  // W = T: full causal
        const int cap = 777;
        long n = numel(&c), hd = (long)c.H * c.D, bhd = c.B * hd;
        printf("  B=%d T=%d H=%d D=%d, cache of %d rows, token by token\n", c.B, c.T, c.H, c.D, cap);
        inputs in;
        inputs_make(&in, &c, 3100 + di);
        float *o_ref = hy_xmalloc(n * sizeof(float));
        cpu_swa(&c, &in, 0, o_ref, NULL, NULL, NULL);
        uint16_t *tm = time_major_qkv(&c, &in);
        uint16_t *dqkv = hy_cuda_malloc(3 * n * 2), *dout = hy_cuda_malloc(n * 2);
        size_t cache = (size_t)c.B * cap * hd * 2;
        void *ck = hy_cuda_malloc(cache), *cv = hy_cuda_malloc(cache);
        size_t wb = hy_cuda_dense_step_work_bytes(c.B, c.H, c.D, cap);
        void *work = hy_cuda_malloc(wb);
        long long *pos_dev = hy_cuda_malloc(sizeof(long long));
        hy_cuda_memcpy_h2d(dqkv, tm, 3 * n * 2);
        // A poisoned cache: reading a row not yet written makes a NaN.
        hy_cuda_memset(ck, 0xFF, cache), hy_cuda_memset(cv, 0xFF, cache);
        hy_cuda_memset(dout, 0xFF, n * 2), hy_cuda_memset(work, 0xFF, wb);
        uint16_t *o_dev_pos = hy_xmalloc(bhd * 2), *o_host_pos = hy_xmalloc(bhd * 2);
        int same = 1;
        for (int t = 0; t < c.T; t++) {
            const uint16_t *q = dqkv + t * bhd, *k = dqkv + n + t * bhd, *v = dqkv + 2 * n + t * bhd;
            if (t % 97 == 0 || t == 255 || t == 256) {  // the same step with the position on the device
                long long pos = t;
                hy_cuda_memcpy_h2d(pos_dev, &pos, sizeof pos);
                hy_cuda_dense_step(c.B, c.H, c.D, cap, 0, pos_dev, q, k, v, ck, cv, dout + t * bhd,
                                   work, NULL);
                hy_cuda_synchronize();
                hy_cuda_memcpy_d2h(o_dev_pos, dout + t * bhd, bhd * 2);
            }
            hy_cuda_dense_step(c.B, c.H, c.D, cap, t, NULL, q, k, v, ck, cv, dout + t * bhd, work,
                               NULL);
            if (t % 97 == 0 || t == 255 || t == 256) {
                hy_cuda_synchronize();
                hy_cuda_memcpy_d2h(o_host_pos, dout + t * bhd, bhd * 2);
                same &= memcmp(o_dev_pos, o_host_pos, bhd * 2) == 0;
            }
        }
        hy_cuda_synchronize();
        HY_ASSERT(same, "D=%d: the position from device memory gives other bits", c.D);
        uint16_t *o16 = hy_xmalloc(n * 2);
        hy_cuda_memcpy_d2h(o16, dout, n * 2);
        float *o = batch_major_f32(&c, o16);
        compare("dense step", &c, c.D, o, o_ref, n, 1e-2, 0);
        uint16_t *kh = hy_xmalloc(cache), *vh = hy_xmalloc(cache);
        hy_cuda_memcpy_d2h(kh, ck, cache);
        hy_cuda_memcpy_d2h(vh, cv, cache);
        long bad = 0;
        for (int b = 0; b < c.B; b++)
            for (int t = 0; t < c.T; t++)
                bad += memcmp(kh + ((long)b * cap + t) * hd, in.k16 + ((long)b * c.T + t) * hd, hd * 2) != 0 ||
                       memcmp(vh + ((long)b * cap + t) * hd, in.v16 + ((long)b * c.T + t) * hd, hd * 2) != 0;
        HY_ASSERT(bad == 0, "D=%d: %ld cache rows differ from the tokens' k, v", c.D, bad);
        free(kh), free(vh), free(o), free(o16), free(o_dev_pos), free(o_host_pos), free(tm), free(o_ref);
        hy_cuda_free(dqkv), hy_cuda_free(dout), hy_cuda_free(ck), hy_cuda_free(cv);
        hy_cuda_free(work), hy_cuda_free(pos_dev);
        inputs_free(&in);
    }
}

// ---------------------------------------------------------------- misuse

HY_TEST(gpu_swa_misuse, "gpu") {
    need_gpu();
    void *p = hy_cuda_malloc(4096);
    float *l = (float *)p;
    HY_EXPECT_ERROR(hy_cuda_swa_fwd(1, 8, 1, 96, 4, p, p, p, p, l, NULL), HY_EXIT_USAGE,
                    "head_dim");
    HY_EXPECT_ERROR(hy_cuda_swa_fwd(1, 8, 1, 64, 0, p, p, p, p, l, NULL), HY_EXIT_USAGE,
                    "window");
    HY_EXPECT_ERROR(hy_cuda_swa_fwd(1, 8, 1, 64, 4, (char *)p + 2, p, p, p, l, NULL),
                    HY_EXIT_USAGE, "aligned");
    HY_EXPECT_ERROR(hy_cuda_swa_bwd(1, 8, 1, 64, 4, p, p, p, p, l, p, l, l, l, NULL, NULL),
                    HY_EXIT_USAGE, "workspace");
    HY_EXPECT_ERROR(hy_cuda_swa_step(1, 1, 300, 4, 0, p, p, p, p, p, p, NULL), HY_EXIT_USAGE,
                    "head_dim");
    HY_EXPECT_ERROR(hy_cuda_swa_fwd_rows(1, 8, 1, 64, 4, 8, p, p, p, p, NULL), HY_EXIT_USAGE,
                    "first query row 8");
    HY_EXPECT_ERROR(hy_cuda_dense_step(1, 1, 64, 16, 16, NULL, p, p, p, p, p, p, p, NULL),
                    HY_EXIT_USAGE, "outside the cache");
    hy_cuda_free(p);
}

// ---------------------------------------------------------------- benchmark

// Scores inside the window, summed over one (b, h): sum_i min(i + 1, W).
static double window_pairs(int T, int W) {
    double s = 0;
    for (int i = 0; i < T; i++) s += i + 1 < W ? i + 1 : W;
    return s;
}

HY_TEST(gpu_swa_bench, "gpu") {
    need_gpu();
    char info[256];
    printf("  %s\n", hy_cuda_device_info(0, info, sizeof info));
    // The required sizes, then head_dim 128 at the same model width (H * D = 768).
    const gcase cases[3] = {{8, 2048, 12, 64, 512}, {8, 8192, 12, 64, 512}, {8, 2048, 6, 128, 512}};
    for (int si = 0; si < 3; si++) {
        gcase c = cases[si];
        long n = numel(&c);
        // Uniform inputs (cheap to make at this size); bf16 bits only.
        hy_rng r;
        hy_rng_seed(&r, 4000 + si);
        uint16_t *h = hy_xmalloc(n * sizeof(uint16_t));
        dbufs d;
        size_t rows = (size_t)c.B * c.T * c.H;
        d.q = hy_cuda_malloc(n * 2), d.k = hy_cuda_malloc(n * 2), d.v = hy_cuda_malloc(n * 2);
        d.o = hy_cuda_malloc(n * 2), d.g = hy_cuda_malloc(n * 2);
        d.lse = hy_cuda_malloc(rows * sizeof(float));
        d.dq = hy_cuda_malloc(n * 4), d.dk = hy_cuda_malloc(n * 4), d.dv = hy_cuda_malloc(n * 4);
        d.ws = hy_cuda_malloc(hy_cuda_swa_workspace_bytes(c.B, c.T, c.H, c.D));
        void *dst[4] = {d.q, d.k, d.v, d.g};
        for (int x = 0; x < 4; x++) {
            for (long i = 0; i < n; i++) h[i] = hy_f32_to_bf16(3.0f * hy_rng_uniform(&r) - 1.5f);
            hy_cuda_memcpy_h2d(dst[x], h, n * 2);
        }
        double fwd = hy_cuda_swa_time_ms(0, 20, c.B, c.T, c.H, c.D, c.W, d.q, d.k, d.v, d.o,
                                         d.lse, d.g, d.dq, d.dk, d.dv, d.ws);
        double all = hy_cuda_swa_time_ms(1, 20, c.B, c.T, c.H, c.D, c.W, d.q, d.k, d.v, d.o,
                                         d.lse, d.g, d.dq, d.dk, d.dv, d.ws);
        // In-window FLOPs: forward 2 products (Q K^T, P V) of 2 D flops per score;
        // backward counted as 2.5x forward (5 products), the usual convention,
        // although the dq kernel here recomputes Q K^T and dO V^T (7 products).
        double f_flops = 4.0 * c.D * window_pairs(c.T, c.W) * c.B * c.H;
        printf("  B=%d T=%d H=%d D=%d W=%d: fwd %.3f ms (%.1f TFLOP/s), fwd+bwd %.3f ms "
               "(%.1f TFLOP/s), bwd alone ~%.3f ms\n",
               c.B, c.T, c.H, c.D, c.W, fwd, f_flops / (fwd * 1e-3) / 1e12, all,
               3.5 * f_flops / (all * 1e-3) / 1e12, all - fwd);
        free(h);
        dbufs_close(&d);
    }
}
