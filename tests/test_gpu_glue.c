// GPU glue kernels (cuda/hy_cuda_glue.h, cuda/glue.cu) against plain C loops
// on the host. Skipped (exit 77) without a GPU or a CUDA build, except
// gpu_glue_misuse, which checks argument errors and zero-size no-ops before
// any launch and so needs only a CUDA build.
//
// Every device buffer sits between GUARD poisoned bytes (0xFF) on each side
// that must stay 0xFF; outputs are poisoned (0xFF: NaN in bf16 and fp32, -1
// in int32) before the call, so an unwritten element fails, and parts that
// must stay untouched (other ring slots, rows past n, rows outside a copy)
// are compared as well. Copies and fp32 updates (one IEEE operation per
// element) must be bit-exact; sigmoid within 1e-6 relative of
// 1 / (1 + expf(-x)). Sizes are odd (B = 3, T = 37, C = 45, H = 3, D = 40 or
// 39, W = 17) and buffers are also offset by one element, to run both the
// 16-byte and the scalar paths.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd/rng.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_glue.h"
#include "harness.h"

static void need_gpu(void) {
    if (!hy_cuda_built()) hy_test_skip("built without CUDA");
    if (hy_cuda_device_count() == 0) hy_test_skip("no GPU");
}

// ================================================================ memory
#define GUARD 64  // poisoned bytes on each side of every device buffer (keeps 16-byte alignment)
#define MAX_BUFS 256
static void *g_host[MAX_BUFS], *g_dev[MAX_BUFS];
static int g_nhost, g_ndev;

static void *hbuf(size_t bytes) {
    HY_CHECK(g_nhost < MAX_BUFS, "test_gpu_glue: too many host buffers");
    void *p = hy_xcalloc(1, bytes ? bytes : 1);
    g_host[g_nhost++] = p;
    return p;
}

static void free_all(void) {
    for (int i = 0; i < g_nhost; i++) free(g_host[i]);
    for (int i = 0; i < g_ndev; i++) hy_cuda_free(g_dev[i]);
    g_nhost = g_ndev = 0;
}

// A guarded device buffer: [GUARD + pad poisoned bytes | body | GUARD poisoned bytes].
typedef struct {
    uint8_t *base;
    size_t pre, body;
} gbuf;

// The body's device address; the body holds `init` (NULL: poisoned, 0xFF).
// pad > 0 misaligns it.
static void *gnew(gbuf *g, size_t body, size_t pad, const void *init) {
    HY_CHECK(g_ndev < MAX_BUFS, "test_gpu_glue: too many device buffers");
    g->pre = GUARD + pad;
    g->body = body;
    size_t total = g->pre + body + GUARD;
    g->base = (uint8_t *)hy_cuda_malloc(total);
    g_dev[g_ndev++] = g->base;
    hy_cuda_memset(g->base, 0xFF, total);
    if (init && body) hy_cuda_memcpy_h2d(g->base + g->pre, init, body);
    return g->base + g->pre;
}

// A host copy of the body after the kernels; checks that every byte around it
// is still 0xFF.
static const void *gdown(const gbuf *g, const char *cfg, const char *what) {
    size_t total = g->pre + g->body + GUARD;
    uint8_t *h = (uint8_t *)hbuf(total);
    hy_cuda_synchronize();
    hy_cuda_memcpy_d2h(h, g->base, total);
    size_t bad = 0;
    for (size_t i = 0; i < total; i++)
        if ((i < g->pre || i >= g->pre + g->body) && h[i] != 0xFF) bad++;
    HY_ASSERT(bad == 0, "%s: %s: %zu guard byte(s) around the buffer were written", cfg, what,
              bad);
    return h + g->pre;
}

// Bit-exact comparison of `n` elements of `elem` bytes; names the first difference.
static void expect_bits(const char *cfg, const char *what, const void *got, const void *want,
                        size_t n, size_t elem) {
    const uint8_t *a = (const uint8_t *)got, *b = (const uint8_t *)want;
    size_t first = n;
    for (size_t i = 0; i < n && first == n; i++)
        if (memcmp(a + i * elem, b + i * elem, elem) != 0) first = i;
    printf("  %-44s %-6s %s\n", cfg, what, first == n ? "bitwise equal" : "DIFFERENT  <- FAIL");
    if (first < n) {
        uint32_t ga = 0, wa = 0;
        memcpy(&ga, a + first * elem, elem);
        memcpy(&wa, b + first * elem, elem);
        hy_test_fail_at(__FILE__, __LINE__, "%s: %s element %zu of %zu: gpu 0x%0*x, want 0x%0*x%s",
                        cfg, what, first, n, (int)(2 * elem), ga, (int)(2 * elem), wa,
                        (elem == 2 && ga == 0xFFFF) || (elem == 4 && ga == 0xFFFFFFFFu)
                            ? " (poison: not written)"
                            : "");
    }
}

// ================================================================ host data
static float *randn(hy_rng *r, size_t n, float std) {
    float *v = (float *)hbuf(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = std * hy_rng_normal(r);
    return v;
}

// Random bf16 bits (never 0xFFFF, the poison).
static uint16_t *randbf(hy_rng *r, size_t n) {
    uint16_t *v = (uint16_t *)hbuf(n * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) v[i] = hy_f32_to_bf16(2.0f * hy_rng_normal(r));
    return v;
}

static void *dup_bytes(const void *p, size_t bytes) {
    void *q = hbuf(bytes);
    memcpy(q, p, bytes);
    return q;
}

// ================================================================ acc, axpy, scale
typedef enum { UP_ACC, UP_AXPY, UP_SCALE } update_kind;

static void run_update(update_kind kind, uint64_t seed) {
    need_gpu();
    hy_rng r;
    hy_rng_seed(&r, seed);
    static const char *names[] = {"acc_f32", "axpy_dev", "scale_f32"};
    const size_t sizes[] = {0, 1, 3, 45, 3 * 37 * 45, 4099};
    const float coefs[] = {-0.37f, 1.7f, 0.0f};
    for (int pad = 0; pad <= 1; pad++)
        for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
            size_t n = sizes[si];
            float a = coefs[si % 3];
            char cfg[96];
            snprintf(cfg, sizeof cfg, "%s n=%zu%s a=%g", names[kind], n,
                     pad ? " misaligned" : "", (double)a);
            float *x = randn(&r, n, 1.0f), *y0 = randn(&r, n, 1.0f);
            float *want = (float *)hbuf(n * sizeof(float));
            for (size_t i = 0; i < n; i++) {
                if (kind == UP_ACC) {
                    want[i] = y0[i] + x[i];
                } else if (kind == UP_AXPY) {
                    volatile float p = a * x[i];  // rounded: never fused into an FMA
                    want[i] = y0[i] + p;
                } else {
                    want[i] = y0[i] * a;
                }
            }
            gbuf gx, gy, ga;
            float *dx = (float *)gnew(&gx, n * 4, 4 * (size_t)pad, x);
            float *dy = (float *)gnew(&gy, n * 4, 4 * (size_t)pad, y0);
            float *da = (float *)gnew(&ga, 4, 0, &a);
            if (kind == UP_ACC)
                hy_cuda_acc_f32(n, dx, dy, NULL);
            else if (kind == UP_AXPY)
                hy_cuda_axpy_dev(n, da, dx, dy, NULL);
            else
                hy_cuda_scale_f32(n, a, dy, NULL);
            expect_bits(cfg, "y", gdown(&gy, cfg, "y"), want, n, 4);
            expect_bits(cfg, "x", gdown(&gx, cfg, "x"), x, n, 4);  // read only
        }
    free_all();
}

HY_TEST(gpu_glue_acc_f32, "gpu") { run_update(UP_ACC, 201); }
HY_TEST(gpu_glue_axpy_dev, "gpu") { run_update(UP_AXPY, 202); }
HY_TEST(gpu_glue_scale_f32, "gpu") { run_update(UP_SCALE, 203); }

// ================================================================ sigmoid, fp32 out
// fill_f32: every element of odd and misaligned lengths, the guards untouched.
HY_TEST(gpu_glue_fill_f32, "gpu") {
    need_gpu();
    const size_t sizes[] = {0, 1, 3, 45, 4099};
    for (int pad = 0; pad <= 1; pad++)
        for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
            size_t n = sizes[si];
            float v = si % 2 ? -2.75f : 1.0f;
            char cfg[96];
            snprintf(cfg, sizeof cfg, "fill_f32 n=%zu%s v=%g", n, pad ? " misaligned" : "",
                     (double)v);
            float *want = (float *)hbuf(n * sizeof(float));
            for (size_t i = 0; i < n; i++) want[i] = v;
            gbuf gy;
            float *dy = (float *)gnew(&gy, n * 4, 4 * (size_t)pad, NULL);
            hy_cuda_fill_f32(n, v, dy, NULL);
            expect_bits(cfg, "y", gdown(&gy, cfg, "y"), want, n, 4);
        }
    free_all();
}

// ================================================================ graphs' memsets
// A recorded graph's small memsets run as kernel nodes (cuda/graph.cu). The calls below (sets
// of 5, 4, 1, 65536 and 3 bytes, converted, and 65537, kept; odd offsets; a kernel that adds
// into bytes just set, a set of one of its bytes after it, a set over an earlier one) give the
// same bytes run directly, as a graph, and as a graph with HYDRA_GRAPH_MEMSETS=1 (memset nodes
// kept), and the bytes the host computes.
enum { MS_BYTES = 140000 };

static void memset_calls(uint8_t *d, const float *x) {
    hy_cuda_memset(d + 3, 0xAB, 5);
    hy_cuda_memset(d + 16, 0, 4);
    hy_cuda_acc_f32(1, x, (float *)(d + 16), NULL);  // 0 + x[0]: after the set
    hy_cuda_memset(d + 17, 0x3C, 1);                  // after the add
    hy_cuda_memset(d + 1001, 0x7F, 65536);
    hy_cuda_memset(d + 70001, 0x22, 65537);
    hy_cuda_memset(d + 1101, 0x01, 3);  // over the 0x7F run
}

static void memset_want(uint8_t *h, float x) {
    memset(h, 0x11, MS_BYTES);
    memset(h + 3, 0xAB, 5);
    memcpy(h + 16, &x, 4);
    h[17] = 0x3C;
    memset(h + 1001, 0x7F, 65536);
    memset(h + 70001, 0x22, 65537);
    memset(h + 1101, 0x01, 3);
}

HY_TEST(gpu_graph_memsets_as_kernels, "gpu") {
    need_gpu();
    const float x = 1.25f;
    uint8_t *want = (uint8_t *)hbuf(MS_BYTES);
    memset_want(want, x);
    static const char *modes[] = {"direct", "graph", "graph, memset nodes kept"};
    for (int mode = 0; mode < 3; mode++) {
        gbuf gd, gx;
        uint8_t *d = (uint8_t *)gnew(&gd, MS_BYTES, 0, NULL);  // the float at d + 16 aligned
        float *dx = (float *)gnew(&gx, 4, 0, &x);
        hy_cuda_memset(d, 0x11, MS_BYTES);
        if (mode == 0) {
            memset_calls(d, dx);
        } else {
            if (mode == 2) setenv("HYDRA_GRAPH_MEMSETS", "1", 1);
            hy_cuda_capture_begin();
            memset_calls(d, dx);
            void *g = hy_cuda_capture_end();
            unsetenv("HYDRA_GRAPH_MEMSETS");
            hy_cuda_graph_launch(g);
            hy_cuda_synchronize();
            hy_cuda_graph_destroy(g);
        }
        expect_bits(modes[mode], "bytes", gdown(&gd, modes[mode], "bytes"), want, MS_BYTES, 1);
    }
    free_all();
}

HY_TEST(gpu_glue_sigmoid_f32out, "gpu") {
    need_gpu();
    hy_rng r;
    hy_rng_seed(&r, 204);
    const size_t sizes[] = {0, 1, 7, 3 * 37 * 3, 4099};
    for (int pad = 0; pad <= 1; pad++)
        for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
            size_t n = sizes[si];
            uint16_t *x = (uint16_t *)hbuf(n * 2);
            for (size_t i = 0; i < n; i++) x[i] = hy_f32_to_bf16(4.0f * hy_rng_normal(&r));
            const float specials[] = {0.0f, -0.0f, 20.0f, -20.0f, 100.0f, -100.0f, 1e-3f, 15.5f};
            for (size_t i = 0; i < 8 && i < n; i++) x[i * (n / 8)] = hy_f32_to_bf16(specials[i]);
            char cfg[96];
            snprintf(cfg, sizeof cfg, "sigmoid_f32out n=%zu%s", n, pad ? " misaligned" : "");
            gbuf gx, gy;
            void *dx = gnew(&gx, n * 2, 2 * (size_t)pad, x);
            float *dy = (float *)gnew(&gy, n * 4, 4 * (size_t)pad, NULL);
            hy_cuda_sigmoid_f32out_fwd(n, dx, dy, NULL);
            const float *got = (const float *)gdown(&gy, cfg, "y");
            double worst = 0;
            size_t bad = 0;
            for (size_t i = 0; i < n; i++) {
                float xi = hy_bf16_to_f32(x[i]), want = 1.0f / (1.0f + expf(-xi));
                double d = fabs((double)got[i] - (double)want), tol = 1e-6 * fabs((double)want);
                if (!(d <= tol)) {
                    if (bad++ == 0)
                        hy_test_fail_at(__FILE__, __LINE__, "%s: y[%zu] = %.9g, want %.9g (x %g)",
                                        cfg, i, (double)got[i], (double)want, (double)xi);
                }
                if (want != 0 && d / fabs((double)want) > worst) worst = d / fabs((double)want);
            }
            printf("  %-44s %-6s max rel err %.2e%s\n", cfg, "y", worst, bad ? "  <- FAIL" : "");
            expect_bits(cfg, "x", gdown(&gx, cfg, "x"), x, n, 2);
        }
    free_all();
}

// ================================================================ conv cache
// The CPU loop of layers/model_forward.c, on bf16 bits.
static void conv_cache_ref(uint16_t *cache, const uint16_t *x, int B, int T, int C, int K) {
    int k1 = K - 1;
    uint16_t *tmp = (uint16_t *)hbuf((size_t)B * C * k1 * 2);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            for (int j = 0; j < k1; j++) {
                int idx = T + j;  // position in the concatenation [cache | x] of length k1 + T
                tmp[((size_t)b * C + c) * k1 + j] =
                    idx < k1 ? cache[((size_t)b * C + c) * k1 + idx]
                             : x[((size_t)b * T + idx - k1) * C + c];
            }
    memcpy(cache, tmp, (size_t)B * C * k1 * 2);
}

HY_TEST(gpu_glue_conv_cache_update, "gpu") {
    need_gpu();
    hy_rng r;
    hy_rng_seed(&r, 205);
    const int B = 3, C = 45, Ks[] = {2, 4, 5}, Ts[] = {0, 1, 2, 3, 4, 37};
    for (int ki = 0; ki < 3; ki++)
        for (int ti = 0; ti < 6; ti++) {
            int K = Ks[ki], T = Ts[ti];
            size_t nc = (size_t)B * C * (K - 1), nx = (size_t)B * T * C;
            uint16_t *x = randbf(&r, nx), *cache = randbf(&r, nc);
            uint16_t *want = (uint16_t *)dup_bytes(cache, nc * 2);
            conv_cache_ref(want, x, B, T, C, K);
            char cfg[96];
            snprintf(cfg, sizeof cfg, "conv_cache_update B=%d T=%d C=%d K=%d", B, T, C, K);
            gbuf gx, gc;
            void *dx = gnew(&gx, nx * 2, 0, x);
            void *dc = gnew(&gc, nc * 2, 0, cache);
            hy_cuda_conv_cache_update(B, T, C, K, dx, dc, NULL);
            expect_bits(cfg, "cache", gdown(&gc, cfg, "cache"), want, nc, 2);
            expect_bits(cfg, "x", gdown(&gx, cfg, "x"), x, nx, 2);
        }
    free_all();
}

// ================================================================ ring buffer
HY_TEST(gpu_glue_ring_write, "gpu") {
    need_gpu();
    hy_rng r;
    hy_rng_seed(&r, 206);
    const int B = 3, H = 3, W = 17;
    // (D, pos0, T, pad): inside the ring, ending at its end, wrapping, one
    // token, T == W, T > W (only the last W rows are written), none.
    const int cases[][4] = {{40, 0, 5, 0},   {40, 3, 14, 0},  {40, 10, 12, 0}, {39, 10, 12, 0},
                            {40, 16, 1, 0},  {40, 30, 17, 0}, {39, 5, 40, 0},  {40, 5, 40, 1},
                            {40, 100, 37, 0}, {40, 7, 0, 0}};
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        int D = cases[ci][0], T = cases[ci][2], pad = cases[ci][3];
        int64_t pos0 = cases[ci][1];
        size_t E = (size_t)H * D, nr = (size_t)B * W * E, nk = (size_t)B * T * E;
        uint16_t *kv = randbf(&r, nk), *ring = randbf(&r, nr);
        uint16_t *want = (uint16_t *)dup_bytes(ring, nr * 2);
        int m = T < W ? T : W;
        for (int b = 0; b < B; b++)
            for (int t = T - m; t < T; t++) {
                int64_t slot = (pos0 + t) % W;
                memcpy(want + ((size_t)b * W + slot) * E, kv + ((size_t)b * T + t) * E, E * 2);
            }
        char cfg[96];
        snprintf(cfg, sizeof cfg, "ring_write D=%d W=%d pos0=%lld T=%d%s", D, W, (long long)pos0,
                 T, pad ? " misaligned" : "");
        gbuf gk, gr;
        void *dk = gnew(&gk, nk * 2, 2 * (size_t)pad, kv);
        void *dr = gnew(&gr, nr * 2, 0, ring);
        hy_cuda_ring_write(B, T, H, D, W, pos0, dk, dr, NULL);
        expect_bits(cfg, "ring", gdown(&gr, cfg, "ring"), want, nr, 2);
    }
    free_all();
}

HY_TEST(gpu_glue_ring_read, "gpu") {
    need_gpu();
    hy_rng r;
    hy_rng_seed(&r, 207);
    const int B = 3, H = 3, W = 17, Ds[] = {40, 39};
    const int64_t poss[] = {0, 1, 5, 16, 17, 18, 40, 1000};
    for (int di = 0; di < 2; di++)
        for (size_t pi = 0; pi < sizeof poss / sizeof *poss; pi++)
            for (int ni = 0; ni < 4; ni++) {
                int D = Ds[di];
                int64_t pos = poss[pi];
                int most = pos < W ? (int)pos : W;
                int ns[4] = {0, most < 1 ? most : 1, most / 2, most};
                int n = ns[ni], L = n + 3, pad = di == 0 && ni == 2;
                size_t E = (size_t)H * D, nr = (size_t)B * W * E, no = (size_t)B * L * E;
                uint16_t *ring = randbf(&r, nr);
                uint16_t *want = (uint16_t *)hbuf(no * 2);
                memset(want, 0xFF, no * 2);  // rows n .. L-1 stay poisoned
                for (int b = 0; b < B; b++)
                    for (int i = 0; i < n; i++) {
                        int64_t slot = (pos - n + i) % W;
                        memcpy(want + ((size_t)b * L + i) * E, ring + ((size_t)b * W + slot) * E,
                               E * 2);
                    }
                char cfg[96];
                snprintf(cfg, sizeof cfg, "ring_read D=%d W=%d pos=%lld n=%d L=%d%s", D, W,
                         (long long)pos, n, L, pad ? " misaligned" : "");
                gbuf gr, go;
                void *dr = gnew(&gr, nr * 2, 0, ring);
                void *dout = gnew(&go, no * 2, 2 * (size_t)pad, NULL);
                hy_cuda_ring_read(B, H, D, W, pos, n, dr, dout, L, NULL);
                expect_bits(cfg, "out", gdown(&go, cfg, "out"), want, no, 2);
                expect_bits(cfg, "ring", gdown(&gr, cfg, "ring"), ring, nr, 2);
            }
    free_all();
}

// Decoding in chunks: write each chunk at the running position, then read
// the most recent positions back and compare with the history itself.
HY_TEST(gpu_glue_ring_roundtrip, "gpu") {
    need_gpu();
    hy_rng r;
    hy_rng_seed(&r, 208);
    const int B = 3, H = 3, D = 40, W = 17, chunks[] = {5, 1, 13, 1, 40, 3, 17, 2, 1, 30};
    const int nchunks = (int)(sizeof chunks / sizeof *chunks);
    int total = 0;
    for (int c = 0; c < nchunks; c++) total += chunks[c];
    size_t E = (size_t)H * D;
    uint16_t *hist = randbf(&r, (size_t)B * total * E);  // (B, total, E): position p of b
    gbuf gr, gk, go;
    void *dr = gnew(&gr, (size_t)B * W * E * 2, 0, NULL);
    void *dk = gnew(&gk, (size_t)B * 40 * E * 2, 0, NULL);
    void *dout = gnew(&go, (size_t)B * W * E * 2, 0, NULL);
    uint16_t *chunk = (uint16_t *)hbuf((size_t)B * 40 * E * 2);
    uint16_t *want = (uint16_t *)hbuf((size_t)B * W * E * 2);
    int64_t pos = 0;
    for (int c = 0; c < nchunks; c++) {
        int T = chunks[c];
        for (int b = 0; b < B; b++)
            memcpy(chunk + (size_t)b * T * E, hist + ((size_t)b * total + pos) * E, T * E * 2);
        hy_cuda_memcpy_h2d(dk, chunk, (size_t)B * T * E * 2);
        hy_cuda_ring_write(B, T, H, D, W, pos, dk, dr, NULL);
        pos += T;
        int n = pos < W ? (int)pos : W;
        hy_cuda_memset(dout, 0xFF, (size_t)B * W * E * 2);
        hy_cuda_ring_read(B, H, D, W, pos, n, dr, dout, W, NULL);
        memset(want, 0xFF, (size_t)B * W * E * 2);
        for (int b = 0; b < B; b++)
            memcpy(want + (size_t)b * W * E, hist + ((size_t)b * total + pos - n) * E, n * E * 2);
        char cfg[96];
        snprintf(cfg, sizeof cfg, "ring write+read T=%d -> pos=%lld n=%d", T, (long long)pos, n);
        expect_bits(cfg, "out", gdown(&go, cfg, "out"), want, (size_t)B * W * E, 2);
    }
    free_all();
}

// ================================================================ row copies
typedef enum { ROWS_BF16, ROWS_F32, ROWS_ACC_F32 } rows_kind;

static void run_rows(rows_kind kind, uint64_t seed) {
    need_gpu();
    hy_rng r;
    hy_rng_seed(&r, seed);
    static const char *names[] = {"copy_rows_bf16", "copy_rows_f32", "acc_rows_f32"};
    const int B = 3, src_T = 37, dst_T = 29, Es[] = {45, 48};
    // (src_row0, dst_row0, n): all of dst, an inner block, the last rows, none.
    const int cases[][3] = {{0, 0, 29}, {5, 11, 15}, {36, 28, 1}, {8, 0, 29}, {8, 3, 0}};
    const size_t es = kind == ROWS_BF16 ? 2 : 4;
    for (int ei = 0; ei < 2; ei++)
        for (int pad = 0; pad <= 1; pad++)
            for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
                int E = Es[ei], s0 = cases[ci][0], d0 = cases[ci][1], n = cases[ci][2];
                size_t ns = (size_t)B * src_T * E, nd = (size_t)B * dst_T * E;
                void *src, *dst0, *want;
                if (kind == ROWS_BF16) {
                    src = randbf(&r, ns);
                    dst0 = NULL;  // poisoned
                } else {
                    src = randn(&r, ns, 1.0f);
                    dst0 = kind == ROWS_ACC_F32 ? randn(&r, nd, 1.0f) : NULL;
                }
                want = hbuf(nd * es);
                if (dst0)
                    memcpy(want, dst0, nd * es);
                else
                    memset(want, 0xFF, nd * es);
                for (int b = 0; b < B; b++)
                    for (int i = 0; i < n; i++) {
                        size_t so = ((size_t)b * src_T + s0 + i) * E;
                        size_t dof = ((size_t)b * dst_T + d0 + i) * E;
                        if (kind == ROWS_ACC_F32) {
                            for (int e = 0; e < E; e++)
                                ((float *)want)[dof + e] += ((const float *)src)[so + e];
                        } else {
                            memcpy((char *)want + dof * es, (const char *)src + so * es, E * es);
                        }
                    }
                char cfg[96];
                snprintf(cfg, sizeof cfg, "%s E=%d src[%d,+%d) -> dst[%d,+%d)%s", names[kind], E,
                         s0, n, d0, n, pad ? " misaligned" : "");
                gbuf gs, gd;
                void *ds = gnew(&gs, ns * es, es * (size_t)pad, src);
                void *dd = gnew(&gd, nd * es, es * (size_t)pad, dst0);
                if (kind == ROWS_BF16)
                    hy_cuda_copy_rows_bf16(B, n, E, ds, src_T, s0, dd, dst_T, d0, NULL);
                else if (kind == ROWS_F32)
                    hy_cuda_copy_rows_f32(B, n, E, (const float *)ds, src_T, s0, (float *)dd,
                                          dst_T, d0, NULL);
                else
                    hy_cuda_acc_rows_f32(B, n, E, (const float *)ds, src_T, s0, (float *)dd,
                                         dst_T, d0, NULL);
                expect_bits(cfg, "dst", gdown(&gd, cfg, "dst"), want, nd, es);
                expect_bits(cfg, "src", gdown(&gs, cfg, "src"), src, ns, es);
            }
    free_all();
}

HY_TEST(gpu_glue_copy_rows_bf16, "gpu") { run_rows(ROWS_BF16, 209); }
HY_TEST(gpu_glue_copy_rows_f32, "gpu") { run_rows(ROWS_F32, 210); }
HY_TEST(gpu_glue_acc_rows_f32, "gpu") { run_rows(ROWS_ACC_F32, 211); }

// ================================================================ argmax
// hy_eval_argmax (eval/eval_model.c): the first largest; NaN never wins a
// comparison, so a NaN in column 0 keeps 0.
static int argmax_ref(const float *row, int V) {
    int best = 0;
    for (int v = 1; v < V; v++)
        if (row[v] > row[best]) best = v;
    return best;
}

HY_TEST(gpu_glue_argmax_rows_f32, "gpu") {
    need_gpu();
    hy_rng r;
    hy_rng_seed(&r, 212);
    const int rows = 3 * 37, Vs[] = {1, 2, 45, 256, 1001};
    for (int vi = 0; vi < 5; vi++) {
        int V = Vs[vi];
        size_t n = (size_t)rows * V;
        float *x = randn(&r, n, 1.0f);
        for (int row = 0; row < rows; row++) {
            float *p = x + (size_t)row * V;
            int a = (int)hy_rng_below(&r, (uint64_t)V), b = (int)hy_rng_below(&r, (uint64_t)V);
            switch (row % 8) {
            case 1:  // a tie for the maximum: the first one wins
                p[a] = p[b] = 9.0f;
                break;
            case 2:  // every element -inf
                for (int v = 0; v < V; v++) p[v] = -INFINITY;
                break;
            case 3:  // NaN in column 0
                p[0] = NAN;
                p[b] = 9.0f;
                break;
            case 4:  // NaNs elsewhere are skipped
                for (int v = 1; v < V; v += 3) p[v] = NAN;
                break;
            case 5:  // every element NaN
                for (int v = 0; v < V; v++) p[v] = NAN;
                break;
            case 6:  // all zero, signs mixed
                for (int v = 0; v < V; v++) p[v] = (v + row) % 3 ? -0.0f : 0.0f;
                break;
            case 7:  // +inf twice
                p[a] = p[b] = INFINITY;
                break;
            default:
                break;
            }
        }
        int32_t *want = (int32_t *)hbuf((size_t)rows * 4);
        for (int row = 0; row < rows; row++) want[row] = argmax_ref(x + (size_t)row * V, V);
        char cfg[96];
        snprintf(cfg, sizeof cfg, "argmax_rows_f32 rows=%d V=%d", rows, V);
        gbuf gx, gi;
        float *dx = (float *)gnew(&gx, n * 4, 0, x);
        int32_t *di = (int32_t *)gnew(&gi, (size_t)rows * 4, 0, NULL);
        hy_cuda_argmax_rows_f32(rows, V, dx, di, NULL);
        expect_bits(cfg, "idx", gdown(&gi, cfg, "idx"), want, (size_t)rows, 4);
    }
    free_all();
}

// ================================================================ misuse, no-ops
// Argument errors (exit 2) and zero-size calls return before any launch, so
// this needs a CUDA build but no GPU. Zero-size calls get NULL pointers: a
// call that touched them would fail.
HY_TEST(gpu_glue_misuse, "gpu") {
    if (!hy_cuda_built()) hy_test_skip("built without CUDA");
    hy_cuda_acc_f32(0, NULL, NULL, NULL);
    hy_cuda_axpy_dev(0, NULL, NULL, NULL, NULL);
    hy_cuda_scale_f32(0, 2.0f, NULL, NULL);
    hy_cuda_sigmoid_f32out_fwd(0, NULL, NULL, NULL);
    hy_cuda_conv_cache_update(3, 0, 45, 4, NULL, NULL, NULL);
    hy_cuda_conv_cache_update(0, 37, 45, 4, NULL, NULL, NULL);
    hy_cuda_ring_write(3, 0, 3, 40, 17, 5, NULL, NULL, NULL);
    hy_cuda_ring_read(3, 3, 40, 17, 0, 0, NULL, NULL, 0, NULL);
    hy_cuda_ring_read(3, 3, 40, 17, 40, 0, NULL, NULL, 0, NULL);
    hy_cuda_copy_rows_bf16(3, 0, 45, NULL, 37, 37, NULL, 29, 29, NULL);
    hy_cuda_copy_rows_f32(3, 0, 45, NULL, 37, 0, NULL, 29, 0, NULL);
    hy_cuda_acc_rows_f32(0, 5, 45, NULL, 37, 0, NULL, 29, 0, NULL);
    hy_cuda_argmax_rows_f32(0, 45, NULL, NULL, NULL);
    printf("  zero-size calls with NULL pointers: no-ops\n");

    float f[4];
    HY_EXPECT_ERROR(hy_cuda_acc_f32((size_t)-3, f, f, NULL), HY_EXIT_USAGE, "acc_f32");
    HY_EXPECT_ERROR(hy_cuda_scale_f32((size_t)-1, 1.0f, f, NULL), HY_EXIT_USAGE, "count");
    HY_EXPECT_ERROR(hy_cuda_axpy_dev(4, NULL, f, f, NULL), HY_EXIT_USAGE, "axpy_dev");
    HY_EXPECT_ERROR(hy_cuda_conv_cache_update(3, 37, 45, 1, f, f, NULL), HY_EXIT_USAGE, "K");
    HY_EXPECT_ERROR(hy_cuda_conv_cache_update(-1, 37, 45, 4, f, f, NULL), HY_EXIT_USAGE,
                    "conv_cache_update");
    HY_EXPECT_ERROR(hy_cuda_ring_write(3, 5, 3, 40, 0, 0, f, f, NULL), HY_EXIT_USAGE,
                    "ring_write");
    HY_EXPECT_ERROR(hy_cuda_ring_write(3, 5, 3, 40, 17, -1, f, f, NULL), HY_EXIT_USAGE,
                    "pos0");
    HY_EXPECT_ERROR(hy_cuda_ring_read(3, 3, 40, 17, 5, 6, f, f, 6, NULL), HY_EXIT_USAGE,
                    "ring_read");  // n > pos
    HY_EXPECT_ERROR(hy_cuda_ring_read(3, 3, 40, 17, 40, 18, f, f, 18, NULL), HY_EXIT_USAGE,
                    "W = 17");  // n > W
    HY_EXPECT_ERROR(hy_cuda_ring_read(3, 3, 40, 17, 40, -1, f, f, 0, NULL), HY_EXIT_USAGE,
                    "ring_read");
    HY_EXPECT_ERROR(hy_cuda_ring_read(3, 3, 40, 17, 40, 5, f, f, 4, NULL), HY_EXIT_USAGE,
                    "L = 4");
    HY_EXPECT_ERROR(hy_cuda_copy_rows_bf16(3, 5, 45, f, 37, 33, f, 29, 0, NULL), HY_EXIT_USAGE,
                    "source rows");
    HY_EXPECT_ERROR(hy_cuda_copy_rows_f32(3, 5, 45, f, 37, 0, f, 29, 25, NULL), HY_EXIT_USAGE,
                    "destination rows");
    HY_EXPECT_ERROR(hy_cuda_acc_rows_f32(3, -1, 45, f, 37, 0, f, 29, 0, NULL), HY_EXIT_USAGE,
                    "acc_rows_f32");
    HY_EXPECT_ERROR(hy_cuda_argmax_rows_f32(3, 0, f, NULL, NULL), HY_EXIT_USAGE, "argmax");
}
