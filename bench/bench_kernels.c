// bench_kernels.c: hydra-bench ceilings, gdn and swa: the machine's ceilings, and one mixer
// kernel at a time against them (bench_kernels.h).
#include "bench_kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd/check.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_gdn.h"
#include "../cuda/hy_cuda_swa.h"
#include "bench_common.h"
#include "bench_report.h"

// ---------------------------------------------------------------- ceilings
int bench_ceilings(int argc, char **argv) {
    opt o[] = {{"--reps", OPT_INT, 20, 1, NULL}, {"--json", OPT_STR, 0, 0, NULL}, OPT_END};
    parse_opts("ceilings", o, argc, argv);
    require_gpu("ceilings");
    bench_header("ceilings", 1, opt_str(o, "--json"));
    int reps = (int)opt_int(o, "--reps");
    ceilings c = measure_ceilings(reps);
    static const column cols[] = {{"what", "what", "%s"},
                                  {"ms", "ms (median)", "%.3f"},
                                  {"value", "measured", "%.1f"},
                                  {"unit", "unit", "%s"},
                                  {"baseline", "PyTorch on an H200 (published)", "%.0f"}};
    char title[128];
    snprintf(title, sizeof title, "Machine ceilings, median of %d runs after 5 untimed", reps);
    table *t = table_new("ceilings", title, cols, 5);
    int r = table_row(t);
    set_str(t, r, 0, "bf16 GEMM 8192^3, fp32 accumulate, bf16 out (cuBLAS)");
    set_num(t, r, 1, c.gemm_ms);
    set_num(t, r, 2, c.gemm_tflops);
    set_str(t, r, 3, "TFLOP/s");
    set_num(t, r, 4, 779);
    r = table_row(t);
    set_str(t, r, 0, "device-to-device copy 1 GiB (read + write)");
    set_num(t, r, 1, c.copy_ms);
    set_num(t, r, 2, c.copy_gbs);
    set_str(t, r, 3, "GB/s");
    set_num(t, r, 4, 4244);
    fig_num("gemm_tflops", "bf16 GEMM 8192^3", c.gemm_tflops, "%.1f", "TFLOP/s");
    fig_num("copy_gbs", "device copy, read + write", c.copy_gbs, "%.0f", "GB/s");
    fig_num("copy_gbs_one_way", "device copy, one way", c.copy_gbs / 2, "%.0f", "GB/s");
    return report_finish(0);
}

// ---------------------------------------------------------------- kernel tables
// One row of a kernel table: ms, FLOPs and bytes, and the ratios to the ceilings.
static const column KERNEL_COLS[] = {
    {"pass", "pass", "%s"},           {"ms", "ms (median)", "%.3f"},
    {"gflop", "GFLOP", "%.2f"},       {"tflops", "TFLOP/s", "%.1f"},
    {"pct_gemm", "% GEMM ceiling", "%.1f"}, {"mb", "MB moved (min)", "%.1f"},
    {"gbs", "GB/s", "%.0f"},          {"pct_copy", "% copy ceiling", "%.1f"},
    {"peer_ms", "fla peer ms", "%.2f"}, {"target_ms", "target ms", "%.2f"}};

static void kernel_row(table *t, const ceilings *c, const char *pass, double ms, double flops,
                       double bytes, double peer, double target) {
    int r = table_row(t);
    set_str(t, r, 0, "%s", pass);
    set_num(t, r, 1, ms);
    set_num(t, r, 2, flops / 1e9);
    set_num(t, r, 3, flops / (ms * 1e-3) / 1e12);
    set_num(t, r, 4, 100.0 * flops / (ms * 1e-3) / 1e12 / c->gemm_tflops);
    set_num(t, r, 5, bytes / 1e6);
    set_num(t, r, 6, bytes / (ms * 1e-3) / 1e9);
    set_num(t, r, 7, 100.0 * bytes / (ms * 1e-3) / 1e9 / c->copy_gbs);
    if (t->ncol < 10) return;
    set_num(t, r, 8, peer);
    set_num(t, r, 9, target);
}

// ---------------------------------------------------------------- gated delta rule

// Minimal bytes, each input read once and each output written once per pass (zero
// initial state and no final state, as in training; the workspace is not counted):
//   forward:  q, k, v read, o written (bf16); alpha, beta read (fp32)
//             = 4 BTHD 2 + 2 BTH 4
//   backward: q, k, v, d_o read (bf16); alpha, beta read (fp32); dq, dk, dv (fp32) and
//             dalpha, dbeta (fp32) written = 4 BTHD 2 + 3 BTHD 4 + 4 BTH 4
static double gdn_fwd_bytes(double BTH, int D) { return 4 * BTH * D * 2 + 2 * BTH * 4; }
static double gdn_bwd_bytes(double BTH, int D) { return 4 * BTH * D * 2 + 3 * BTH * D * 4 + 4 * BTH * 4; }

// The flash-linear-attention peer (its Triton kernel timed on an H200) and this project's target,
// for the three shapes below; NaN otherwise.
static void gdn_peer(int B, int T, int H, int D, double *fwd, double *fb, double *target) {
    static const double rows[3][7] = {{8, 2048, 16, 128, 0.75, 2.73, 2.0},
                                      {4, 4096, 16, 128, 1.13, 2.41, 1.8},
                                      {1, 32768, 16, 128, 2.02, 6.35, 4.5}};
    *fwd = *fb = *target = NAN;
    for (int i = 0; i < 3; i++)
        if (rows[i][0] == B && rows[i][1] == T && rows[i][2] == H && rows[i][3] == D)
            *fwd = rows[i][4], *fb = rows[i][5], *target = rows[i][6];
}

typedef struct {
    void *q, *k, *v, *o, *d_o, *ws;
    float *alpha, *beta, *dq, *dk, *dv, *da, *db;
} gdn_bufs;

// Inputs as the model makes them: q, k of unit norm per head, v and d_o in [-1, 1),
// alpha in [0.9, 1) (mild decay), beta in [0.1, 0.9).
static gdn_bufs gdn_alloc(int B, int T, int H, int D) {
    size_t n = (size_t)B * T * H * D, na = (size_t)B * T * H;
    gdn_bufs g;
    g.q = dev_random(n, 1, FILL_UNIT_ROWS, 0, 0, D, 21);
    g.k = dev_random(n, 1, FILL_UNIT_ROWS, 0, 0, D, 22);
    g.v = dev_bf16(n, 23);
    g.d_o = dev_bf16(n, 24);
    g.o = hy_cuda_malloc(n * 2);
    g.alpha = dev_f32(na, 0.9f, 1.0f, 25);
    g.beta = dev_f32(na, 0.1f, 0.9f, 26);
    g.dq = (float *)hy_cuda_malloc(n * 4);
    g.dk = (float *)hy_cuda_malloc(n * 4);
    g.dv = (float *)hy_cuda_malloc(n * 4);
    g.da = (float *)hy_cuda_malloc(na * 4);
    g.db = (float *)hy_cuda_malloc(na * 4);
    g.ws = hy_cuda_malloc(hy_cuda_gdn_workspace_bytes(B, T, H, D, 64));
    return g;
}

static void gdn_release(gdn_bufs *g) {
    void *all[] = {g->q, g->k, g->v, g->d_o, g->o, g->alpha, g->beta, g->dq, g->dk, g->dv,
                   g->da, g->db, g->ws};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) hy_cuda_free(all[i]);
}

// Median forward and forward + backward ms (hy_cuda_gdn_time: CUDA events, warm-up excluded);
// fb: the backward reads the forward's saved results, as training does; fbr (NULL: not timed):
// the backward recomputes them.
void gdn_time(int B, int T, int H, int D, int warmup, int iters, double *fwd, double *fb,
              double *fbr) {
    gdn_bufs g = gdn_alloc(B, T, H, D);
    hy_cuda_gdn_time(B, T, H, D, g.q, g.k, g.v, g.alpha, g.beta, NULL, g.o, NULL, g.d_o, NULL,
                     g.dq, g.dk, g.dv, g.da, g.db, NULL, g.ws, warmup, iters, fwd, fb, fbr);
    gdn_release(&g);
}

static void require_head_dim(const char *cmd, int D) {
    HY_REQUIRE(D == 64 || D == 128, "hydra-bench %s: --D must be 64 or 128 (the tensor-core "
                                    "kernels' head sizes), got %d", cmd, D);
}

int bench_gdn(int argc, char **argv) {
    opt o[] = {{"--B", OPT_INT, 8, 1, NULL},      {"--T", OPT_INT, 2048, 1, NULL},
               {"--H", OPT_INT, 16, 1, NULL},     {"--D", OPT_INT, 128, 1, NULL},
               {"--bwd", OPT_FLAG, 0, 0, NULL},   {"--iters", OPT_INT, 50, 1, NULL},
               {"--warmup", OPT_INT, 5, 0, NULL}, {"--wy", OPT_STR, 0, 0, "default"},
               {"--bv", OPT_INT, 0, 0, NULL},     {"--json", OPT_STR, 0, 0, NULL},
               OPT_END};
    parse_opts("gdn", o, argc, argv);
    require_wy("gdn", o);
    int B = (int)opt_int(o, "--B"), T = (int)opt_int(o, "--T"), H = (int)opt_int(o, "--H");
    int D = (int)opt_int(o, "--D"), bwd = (int)opt_int(o, "--bwd");
    int iters = (int)opt_int(o, "--iters"), warmup = (int)opt_int(o, "--warmup");
    require_head_dim("gdn", D);
    int bv = (int)opt_int(o, "--bv");
    HY_REQUIRE(bv == 0 || bv == 16 || bv == 32 || bv == 64,
               "hydra-bench gdn: --bv expects 0 (automatic), 16, 32 or 64, got %d", bv);
    HY_REQUIRE((long)B * H <= 65535, "hydra-bench gdn: B * H must be <= 65535, got %ld", (long)B * H);
    require_gpu("gdn");
    bench_header("gdn", 1, opt_str(o, "--json"));
    apply_wy(opt_str(o, "--wy"));
    if (bv) {  // rows of the state per block in the sequential passes (a test hook)
        const char *wy = opt_str(o, "--wy");
        hy_cuda_gdn_set_test_options(bv, !strcmp(wy, "ref") ? 1 : !strcmp(wy, "fast") ? 0 : -1);
        fig_num("bv", "rows of the state per block (forced)", bv, "%.0f", "");
    }
    ceilings c = ceilings_figures(20);
    double fwd, fb, fbr;
    gdn_time(B, T, H, D, warmup, iters, &fwd, &fb, bwd ? &fbr : NULL);

    double BTH = (double)B * T * H, f_flops = BTH * hy_gdn_flops_per_token(64, D);
    double fbytes = gdn_fwd_bytes(BTH, D), bbytes = gdn_bwd_bytes(BTH, D);
    double pf, pfb, target;
    gdn_peer(B, T, H, D, &pf, &pfb, &target);
    fig_str("shape", "shape (B, T, H, D), chunk 64", "(%d, %d, %d, %d)", B, T, H, D);
    fig_num("iters", "timed runs (median)", iters, "%.0f", "");
    fig_num("fwd_ms", "forward", fwd, "%.3f", "ms");
    if (bwd) {
        fig_num("fwd_bwd_ms", "forward + backward (backward reads the forward's saved results)",
                fb, "%.3f", "ms");
        fig_num("fwd_bwd_recompute_ms", "forward + backward (backward recomputes them)", fbr,
                "%.3f", "ms");
        fig_num("saved_mib", "forward results kept for the backward",
                hy_cuda_gdn_saved_bytes(B, T, H, D, 64) / 1048576.0, "%.0f", "MiB");
    }
    char title[200];
    snprintf(title, sizeof title, "Gated delta rule (B, T, H, D) = (%d, %d, %d, %d), chunk 64: "
             "median of %d after %d untimed; FLOPs: bwd = 2 x fwd", B, T, H, D, iters, warmup);
    table *t = table_new("gdn", title, KERNEL_COLS, 10);
    kernel_row(t, &c, "forward", fwd, f_flops, fbytes, pf, NAN);
    if (bwd) {
        kernel_row(t, &c, "forward + backward", fb, 3 * f_flops, fbytes + bbytes, pfb, target);
        kernel_row(t, &c, "backward (difference)", fb - fwd, 2 * f_flops, bbytes, pfb - pf, NAN);
        kernel_row(t, &c, "forward + backward, recomputing", fbr, 3 * f_flops, fbytes + bbytes,
                   pfb, target);
    }
    return report_finish(1);
}

// ---------------------------------------------------------------- sliding-window attention

// FLOPs over the in-window scores only: forward Q K^T and P V, 2 D each per score
// (4 D); backward twice that (dV, dP, dQ, dK; the kernels' recomputation of Q K^T is
// not counted): fwd+bwd = 3 x forward, the GDN's convention. (FlashAttention's papers
// count backward as 2.5 x forward, recomputation included: their TFLOP/s read 7/6 of
// ours for the same time.)
//
// Minimal bytes:
//   forward:  q, k, v read and o written (bf16); lse written (fp32) = 4 BTHD 2 + BTH 4
//   backward: q, k, v, o, d_o read (bf16), lse read (fp32); dq, dk, dv written (fp32)
//             = 5 BTHD 2 + BTH 4 + 3 BTHD 4
static double swa_fwd_bytes(double BTH, int D) { return 4 * BTH * D * 2 + BTH * 4; }
static double swa_bwd_bytes(double BTH, int D) { return 5 * BTH * D * 2 + BTH * 4 + 3 * BTH * D * 4; }

typedef struct {
    void *q, *k, *v, *o, *d_o, *ws;
    float *lse, *dq, *dk, *dv;
} swa_bufs;

static swa_bufs swa_alloc(int B, int T, int H, int D) {
    size_t n = (size_t)B * T * H * D, rows = (size_t)B * T * H;
    swa_bufs s;
    s.q = dev_random(n, 1, FILL_UNIFORM, -1.5f, 1.5f, 1, 31);
    s.k = dev_random(n, 1, FILL_UNIFORM, -1.5f, 1.5f, 1, 32);
    s.v = dev_random(n, 1, FILL_UNIFORM, -1.5f, 1.5f, 1, 33);
    s.d_o = dev_random(n, 1, FILL_UNIFORM, -1.5f, 1.5f, 1, 34);
    s.o = hy_cuda_malloc(n * 2);
    s.lse = (float *)hy_cuda_malloc(rows * 4);
    s.dq = (float *)hy_cuda_malloc(n * 4);
    s.dk = (float *)hy_cuda_malloc(n * 4);
    s.dv = (float *)hy_cuda_malloc(n * 4);
    s.ws = hy_cuda_malloc(hy_cuda_swa_workspace_bytes(B, T, H, D));
    return s;
}

static void swa_release(swa_bufs *s) {
    void *all[] = {s->q, s->k, s->v, s->d_o, s->o, s->lse, s->dq, s->dk, s->dv, s->ws};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) hy_cuda_free(all[i]);
}

// Median forward and forward + backward ms (hy_cuda_swa_time_ms, which adds 2 untimed runs
// of its own after our `warmup`).
void swa_time(int B, int T, int H, int D, int W, int warmup, int iters, double *fwd,
              double *fb) {
    swa_bufs s = swa_alloc(B, T, H, D);
    for (int i = 0; i < warmup; i++) {
        hy_cuda_swa_fwd(B, T, H, D, W, s.q, s.k, s.v, s.o, s.lse, NULL);
        hy_cuda_swa_bwd(B, T, H, D, W, s.q, s.k, s.v, s.o, s.lse, s.d_o, s.dq, s.dk, s.dv, s.ws, NULL);
    }
    *fwd = hy_cuda_swa_time_ms(0, iters, B, T, H, D, W, s.q, s.k, s.v, s.o, s.lse, s.d_o, s.dq,
                               s.dk, s.dv, s.ws);
    *fb = hy_cuda_swa_time_ms(1, iters, B, T, H, D, W, s.q, s.k, s.v, s.o, s.lse, s.d_o, s.dq,
                              s.dk, s.dv, s.ws);
    swa_release(&s);
}

int bench_swa(int argc, char **argv) {
    opt o[] = {{"--B", OPT_INT, 8, 1, NULL},     {"--T", OPT_INT, 2048, 1, NULL},
               {"--H", OPT_INT, 12, 1, NULL},    {"--D", OPT_INT, 64, 1, NULL},
               {"--W", OPT_INT, 512, 1, NULL},   {"--bwd", OPT_FLAG, 0, 0, NULL},
               {"--iters", OPT_INT, 50, 1, NULL}, {"--warmup", OPT_INT, 5, 0, NULL},
               {"--json", OPT_STR, 0, 0, NULL},  OPT_END};
    parse_opts("swa", o, argc, argv);
    int B = (int)opt_int(o, "--B"), T = (int)opt_int(o, "--T"), H = (int)opt_int(o, "--H");
    int D = (int)opt_int(o, "--D"), W = (int)opt_int(o, "--W"), bwd = (int)opt_int(o, "--bwd");
    int iters = (int)opt_int(o, "--iters"), warmup = (int)opt_int(o, "--warmup");
    require_head_dim("swa", D);
    HY_REQUIRE(iters <= 1000, "hydra-bench swa: --iters must be <= 1000, got %d", iters);
    require_gpu("swa");
    bench_header("swa", 1, opt_str(o, "--json"));
    ceilings c = ceilings_figures(20);
    double fwd, fb;
    swa_time(B, T, H, D, W, warmup, iters, &fwd, &fb);

    double BTH = (double)B * T * H, pairs = hy_window_pairs(T, W) * B * H, f_flops = 4.0 * D * pairs;
    double fbytes = swa_fwd_bytes(BTH, D), bbytes = swa_bwd_bytes(BTH, D);
    fig_str("shape", "shape (B, T, H, D), window", "(%d, %d, %d, %d), W %d", B, T, H, D, W);
    fig_num("iters", "timed runs (median)", iters, "%.0f", "");
    fig_num("scores_in_window", "scores in the window", pairs, "%.4g", "");
    fig_num("fwd_ms", "forward", fwd, "%.3f", "ms");
    if (bwd) fig_num("fwd_bwd_ms", "forward + backward", fb, "%.3f", "ms");
    char title[200];
    snprintf(title, sizeof title, "Sliding-window attention (B, T, H, D) = (%d, %d, %d, %d), "
             "W %d: median of %d; FLOPs over in-window scores, bwd = 2 x fwd", B, T, H, D, W, iters);
    table *t = table_new("swa", title, KERNEL_COLS, 8);
    kernel_row(t, &c, "forward", fwd, f_flops, fbytes, NAN, NAN);
    if (bwd) {
        kernel_row(t, &c, "forward + backward", fb, 3 * f_flops, fbytes + bbytes, NAN, NAN);
        kernel_row(t, &c, "backward (difference)", fb - fwd, 2 * f_flops, bbytes, NAN, NAN);
    }
    return report_finish(1);
}
