// bench_decode_kernels.c: where a decoding token's time goes. Each kernel of one
// GPU token (layers/block_decode_gpu.c) is timed alone at the model's sizes with its
// weights (a graph of back-to-back launches, each started early behind the one before,
// between two events), multiplied by its launches per token and summed; the recorded
// step graph is replayed back to back for the device's time per token. A kernel chained
// with itself reads the same weights each time, from L2 after the first (50 MB on an
// H200), where the step reads 230 MB a token from memory: the sum against the replay
// shows what the chain's transitions and the weights' trip from memory cost; the replay
// against the host's step (the decode table) shows the host's share.
#include <stdio.h>
#include <stdlib.h>

#include "../autograd/check.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_bench.h"
#include "../cuda/hy_cuda_gdn.h"
#include "../cuda/hy_cuda_gemv.h"
#include "../cuda/hy_cuda_ops.h"
#include "../cuda/hy_cuda_swa.h"
#include "bench_decode_kernels.h"
#include "bench_report.h"

enum { REPS = 200 };

static hy_tensor *P(const hy_model *m, int idx) { return m->params.p[idx].value; }

typedef struct {
    hy_cuda_events *ev;
    table *t;
    double sum_us;
} breakdown;

// Time `what` (one launch): REPS of them recorded in a graph, as the step's graph holds
// its kernels (each launched early behind the one before, pdl.cuh), so that the time is
// the device's and not the host's launch rate; the graph replayed once untimed, then
// timed. A row with its launches per token and bytes.
#define TIME_ROW(bd, name, per_token, bytes, what)                                   \
    do {                                                                             \
        what;                                                                        \
        hy_cuda_capture_begin();                                                     \
        for (int r_ = 0; r_ < REPS; r_++) what;                                      \
        void *g_ = hy_cuda_capture_end();                                            \
        hy_cuda_graph_launch(g_);                                                    \
        hy_cuda_events_record((bd)->ev, 0);                                          \
        hy_cuda_graph_launch(g_);                                                    \
        hy_cuda_events_record((bd)->ev, 1);                                          \
        double us_ = 1e3 * hy_cuda_events_ms((bd)->ev, 0, 1) / REPS;                 \
        hy_cuda_graph_destroy(g_);                                                   \
        add_row(bd, name, per_token, us_, bytes);                                    \
    } while (0)

static void add_row(breakdown *bd, const char *name, int per_token, double us, double bytes) {
    int r = table_row(bd->t);
    set_str(bd->t, r, 0, "%s", name);
    set_num(bd->t, r, 1, per_token);
    set_num(bd->t, r, 2, us);
    set_num(bd->t, r, 3, us * per_token);
    if (bytes > 0) set_num(bd->t, r, 4, bytes / (us * 1e3));
    bd->sum_us += us * per_token;
}

static hy_gemv_out proj(const hy_model *m, int w, int bias, void *res, void *y) {
    hy_gemv_out o = {P(m, w)->half, bias >= 0 ? hy_f32(P(m, bias)) : NULL, res, y,
                     (int)P(m, w)->shape[0], 0};
    return o;
}

static double wbytes(const hy_model *m, int w) { return 2.0 * hy_numel(P(m, w)); }

void bench_decode_breakdown(const hy_model *m, void *graph) {
    const hy_model_config *c = &m->cfg;
    int d = c->d_model, H = c->n_heads, D = c->head_dim, I = H * D, hid = c->mlp_hidden;
    int V = c->vocab_size, W = c->swa_window, n_gdn = 0, n_swa = 0, gdn = -1, swa = -1;
    for (int i = 0; i < c->n_layers; i++) {
        if (m->layer[i].kind == HY_LAYER_GDN) n_gdn++, gdn = gdn < 0 ? i : gdn;
        else n_swa++, swa = swa < 0 ? i : swa;
    }
    static const column cols[] = {{"kernel", "kernel", "%s"}, {"per_token", "launches/token", "%.0f"},
                                  {"us", "us/launch", "%.2f"}, {"us_per_token", "us/token", "%.1f"},
                                  {"gbs", "weights GB/s", "%.0f"}};
    breakdown bd = {hy_cuda_events_create(2),
                    table_new("decode_kernels", "A decoding token's kernels, each chained with "
                              "itself (batch 1, the model's weights, from L2)", cols, 5), 0.0};
    size_t big = (size_t)(V > 4 * hid ? V : 4 * hid) + 8 * (size_t)I;
    char *buf = (char *)hy_cuda_malloc(big * 2 * 4);  // activations, bf16 (room for 4 of the widest)
    void *x = buf, *a = buf + big * 2, *b = buf + big * 4, *y = buf + big * 6;
    hy_cuda_memset(buf, 0, big * 2 * 4);
    float eps = (float)c->rms_eps;
    if (gdn >= 0) {
        const hy_layer_params *L = &m->layer[gdn];
        int K = c->dn_short_conv_kernel, g = L->gate >= 0;
        hy_gemv_in in = {HY_GEMV_RMSNORM, x, NULL, hy_f32(P(m, L->norm1)), eps};
        hy_gemv_out outs[3] = {proj(m, L->qkv, -1, NULL, a), proj(m, L->ab_w, L->ab_b, NULL, b)};
        if (g) outs[2] = proj(m, L->gate, -1, NULL, y);
        double wb = wbytes(m, L->qkv) + wbytes(m, L->ab_w) + (g ? wbytes(m, L->gate) : 0);
        TIME_ROW(&bd, "GDN: rmsnorm + qkv, ab, gate projections", n_gdn, wb,
                 hy_cuda_gemv(1, d, &in, outs, g ? 3 : 2, NULL));
        float *S = (float *)hy_cuda_malloc((size_t)H * D * D * 4);
        void *conv = hy_cuda_malloc((size_t)3 * I * (K > 1 ? K - 1 : 1) * 2);
        hy_cuda_memset(S, 0, (size_t)H * D * D * 4);
        hy_cuda_memset(conv, 0, (size_t)3 * I * (K > 1 ? K - 1 : 1) * 2);
        TIME_ROW(&bd, "GDN: conv, norms, gates, delta-rule step", n_gdn, 0,
                 hy_cuda_gdn_decode(1, H, D, K, c->dn_norm_qk, a, hy_f32(P(m, L->conv_w)),
                                    hy_f32(P(m, L->conv_b)), conv, b, S, x, NULL));
        hy_gemv_in oin = {g ? HY_GEMV_GATE : HY_GEMV_PLAIN, a, y, NULL, 0.0f};
        hy_gemv_out oo = proj(m, L->o, -1, b, x);
        TIME_ROW(&bd, "GDN: gate + o projection + residual", n_gdn, wbytes(m, L->o),
                 hy_cuda_gemv(1, I, &oin, &oo, 1, NULL));
        hy_cuda_free(S), hy_cuda_free(conv);
    }
    if (swa >= 0) {
        const hy_layer_params *L = &m->layer[swa];
        hy_gemv_in in = {HY_GEMV_RMSNORM, x, NULL, hy_f32(P(m, L->norm1)), eps};
        hy_gemv_out qo = proj(m, L->qkv, -1, NULL, a);
        TIME_ROW(&bd, "SWA: rmsnorm + qkv projection", n_swa, wbytes(m, L->qkv),
                 hy_cuda_gemv(1, d, &in, &qo, 1, NULL));
        void *ring = hy_cuda_malloc((size_t)2 * W * I * 2);
        hy_cuda_memset(ring, 0, (size_t)2 * W * I * 2);
        char *rk = (char *)ring;
        TIME_ROW(&bd, "SWA: RoPE, ring, attention (full window)", n_swa, 0,
                 hy_cuda_swa_decode(1, H, D, W, (long long)W + 7, NULL, (float)c->swa_rope_base,
                                    a, rk, rk + (size_t)W * I * 2, b, NULL));
        hy_gemv_in oin = {HY_GEMV_PLAIN, b, NULL, NULL, 0.0f};
        hy_gemv_out oo = proj(m, L->o, -1, y, x);
        TIME_ROW(&bd, "SWA: o projection + residual", n_swa, wbytes(m, L->o),
                 hy_cuda_gemv(1, I, &oin, &oo, 1, NULL));
        hy_cuda_free(ring);
    }
    const hy_layer_params *L = &m->layer[0];
    hy_gemv_in fin = {HY_GEMV_RMSNORM, x, NULL, hy_f32(P(m, L->norm2)), eps};
    hy_gemv_out fo = proj(m, L->w_fused, -1, NULL, a);
    fo.swiglu = 1;
    TIME_ROW(&bd, "MLP: rmsnorm + w_fused + SwiGLU", c->n_layers, wbytes(m, L->w_fused),
             hy_cuda_gemv(1, d, &fin, &fo, 1, NULL));
    hy_gemv_in din = {HY_GEMV_PLAIN, a, NULL, NULL, 0.0f};
    hy_gemv_out dout = proj(m, L->w_down, -1, x, y);
    TIME_ROW(&bd, "MLP: w_down + residual", c->n_layers, wbytes(m, L->w_down),
             hy_cuda_gemv(1, hid, &din, &dout, 1, NULL));
    int32_t *ids = (int32_t *)hy_cuda_malloc(sizeof(int32_t));
    hy_cuda_memset(ids, 0, sizeof(int32_t));
    TIME_ROW(&bd, "embedding", 1, 0,
             hy_cuda_embedding_fwd(1, d, V, hy_f32(P(m, m->embed)), ids, x, NULL));
    hy_gemv_in hin = {HY_GEMV_RMSNORM, x, NULL, hy_f32(P(m, m->norm_f)), eps};
    hy_gemv_out ho = proj(m, m->embed, -1, NULL, a);
    TIME_ROW(&bd, "final rmsnorm + tied head", 1, wbytes(m, m->embed),
             hy_cuda_gemv(1, d, &hin, &ho, 1, NULL));
    int r = table_row(bd.t);
    set_str(bd.t, r, 0, "sum of the kernels");
    set_num(bd.t, r, 3, bd.sum_us);
    if (graph) {  // the recorded step, replayed back to back (the state advances meanwhile)
        hy_cuda_graph_launch(graph);
        hy_cuda_events_record(bd.ev, 0);
        for (int i = 0; i < REPS; i++) hy_cuda_graph_launch(graph);
        hy_cuda_events_record(bd.ev, 1);
        r = table_row(bd.t);
        set_str(bd.t, r, 0, "the step's graph, replayed (device time)");
        set_num(bd.t, r, 1, 1);
        set_num(bd.t, r, 3, 1e3 * hy_cuda_events_ms(bd.ev, 0, 1) / REPS);
    }
    hy_cuda_synchronize();
    hy_cuda_free(buf), hy_cuda_free(ids);
    hy_cuda_events_destroy(bd.ev);
}
