// bench_step.c: hydra-bench step: one training step of a config's model on the GPU taken
// apart: forward, backward (per tape node, by op), clip, optimizer, with CUDA events; then
// each piece of a layer timed alone at the config's shapes, times its count per step.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd/check.h"
#include "../autograd/tape.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_bench.h"
#include "../cuda/hy_cuda_blas.h"
#include "../cuda/hy_cuda_gdn.h"
#include "../cuda/hy_cuda_ops.h"
#include "../layers/ops.h"
#include "../train/batch.h"
#include "bench_common.h"
#include "bench_kernels.h"
#include "bench_model.h"
#include "bench_report.h"

// ---------------------------------------------------------------- the parts of one step
#define MAX_OPS 64
#define MAX_STEP_STEPS 100

// Backward time per op, over the measured steps.
typedef struct {
    char name[MAX_OPS][80];
    int nodes[MAX_OPS];                  // nodes of this op per step
    double ms[MAX_OPS][MAX_STEP_STEPS];  // per measured step
    int n;
} op_times;

// A node's row: its op name, and for a linear layer also its weight, less the layer
// number ("linear mixer.qkv_proj"): the projections differ in shape and in cost.
static void node_key(const hy_node *n, char *buf, size_t len) {
    const char *w = n->n_in > 1 && n->in[1] ? n->in[1]->name : "";
    if (strcmp(n->op, "linear") || !w[0]) {
        snprintf(buf, len, "%s", n->op);
        return;
    }
    if (!strncmp(w, "blocks.", 7) && strchr(w + 7, '.')) w = strchr(w + 7, '.') + 1;
    size_t k = strlen(w);
    if (k > 7 && !strcmp(w + k - 7, ".weight")) k -= 7;
    snprintf(buf, len, "linear %.*s", (int)k, w);
}

static int op_index(op_times *ot, const hy_node *n) {
    char key[80];
    node_key(n, key, sizeof key);
    for (int i = 0; i < ot->n; i++)
        if (!strcmp(ot->name[i], key)) return i;
    HY_CHECK(ot->n < MAX_OPS, "hydra-bench step: more than %d kinds of tape node", MAX_OPS);
    snprintf(ot->name[ot->n], sizeof ot->name[0], "%s", key);
    return ot->n++;
}

// Event slots of one step: the parts, then one per backward node (and one after the last).
enum { EV_FWD0, EV_FWD1, EV_CLIP0, EV_CLIP1, EV_OPT1, EV_NODE0 };

// hy_tape_backward with an event before every node: the walk of autograd/tape.c (nodes in
// reverse, a node runs when any output has a gradient), seeded with dL/dL = 1.
static void backward_timed(hy_tape *t, hy_tensor *loss, hy_cuda_events *ev) {
    hy_tensor *g = hy_grad_acc(t, loss);
    float one = 1.0f;
    hy_cuda_memcpy_h2d(g->data, &one, sizeof one);
    for (int i = t->n_nodes - 1, k = 0; i >= 0; i--, k++) {
        hy_node *n = &t->nodes[i];
        hy_cuda_events_record(ev, EV_NODE0 + k);
        int any = 0;
        for (int j = 0; j < n->n_out; j++) any |= hy_has_grad(t, n->out[j]);
        if (any) n->backward(t, n);
    }
    hy_cuda_events_record(ev, EV_NODE0 + t->n_nodes);
    t->backward_done = 1;
}

typedef struct {
    double fwd, bwd, clip, opt, wall;  // ms
} step_parts;

// One step (one micro-batch) with events around each part; the node times go to `ot`
// (column `col`, or nowhere when col < 0).
static step_parts step_timed(gpu_run *r, int64_t step, hy_cuda_events *ev, op_times *ot, int col) {
    step_parts p;
    double t0 = bench_now();
    hy_params_zero_grads(&r->gpu.model.params);
    hy_cuda_events_record(ev, EV_FWD0);
    hy_tensor *loss = gpu_run_forward(r, step);
    hy_cuda_events_record(ev, EV_FWD1);
    backward_timed(&r->tape, loss, ev);
    tensor_scalar(loss);  // the trainer reads the loss here
    hy_cuda_events_record(ev, EV_CLIP0);
    hy_train_gpu_clip(&r->gpu, r->cfg.train.grad_clip);
    hy_cuda_events_record(ev, EV_CLIP1);
    hy_train_gpu_step(&r->gpu, &r->opt, hy_lr_mult(&r->sched, step));
    hy_cuda_events_record(ev, EV_OPT1);
    p.wall = (bench_now() - t0) * 1e3;
    int nn = r->tape.n_nodes;
    p.fwd = hy_cuda_events_ms(ev, EV_FWD0, EV_FWD1);
    p.bwd = hy_cuda_events_ms(ev, EV_NODE0, EV_NODE0 + nn);
    p.clip = hy_cuda_events_ms(ev, EV_CLIP0, EV_CLIP1);
    p.opt = hy_cuda_events_ms(ev, EV_CLIP1, EV_OPT1);
    for (int k = 0; col >= 0 && k < nn; k++) {
        int i = op_index(ot, &r->tape.nodes[nn - 1 - k]);
        if (col == 0) ot->nodes[i]++;
        ot->ms[i][col] += hy_cuda_events_ms(ev, EV_NODE0 + k, EV_NODE0 + k + 1);
    }
    return p;
}

// ---- one layer's pieces alone, at the config's shapes
typedef struct {
    int rows, in, out;
    void *x, *w, *y, *scratch;
    float *bias, *dy, *dx, *dw, *db;
    size_t sb;
} lin_arg;

static void lin_fwd(void *p) {
    lin_arg *a = (lin_arg *)p;
    hy_cuda_linear_fwd(a->rows, a->in, a->out, a->x, a->w, a->bias, a->y, NULL);
}

static void lin_bwd(void *p) {
    lin_arg *a = (lin_arg *)p;
    hy_cuda_linear_bwd(a->rows, a->in, a->out, a->dy, a->x, a->w, a->dx, 0, a->dw, a->db, a->scratch,
                       a->sb, NULL);
}

// hy_cuda_linear_fwd / _bwd (dx, dW and, with a bias, db) at (rows, in) -> (rows, out).
static void time_linear(int rows, int in, int out, int bias, int reps, double *fwd, double *bwd) {
    lin_arg a = {rows, in, out, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0};
    a.x = dev_bf16((size_t)rows * in, 41);
    a.w = dev_random((size_t)out * in, 1, FILL_UNIFORM, -0.05f, 0.05f, 1, 42);
    a.y = hy_cuda_malloc((size_t)rows * out * 2);
    a.bias = bias ? dev_f32((size_t)out, -0.1f, 0.1f, 43) : NULL;
    a.dy = dev_f32((size_t)rows * out, -1e-3f, 1e-3f, 44);
    a.dx = dev_zeros((size_t)rows * in);
    a.dw = dev_zeros((size_t)out * in);
    a.db = bias ? dev_zeros((size_t)out) : NULL;
    a.sb = hy_cuda_linear_bwd_scratch_bytes(rows, in, out);
    a.scratch = hy_cuda_malloc(a.sb ? a.sb : 256);
    *fwd = hy_cuda_time_ms(lin_fwd, &a, 3, reps);
    *bwd = hy_cuda_time_ms(lin_bwd, &a, 3, reps);
    void *all[] = {a.x, a.w, a.y, a.bias, a.dy, a.dx, a.dw, a.db, a.scratch};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]) hy_cuda_free(all[i]);
}

typedef struct {
    int rows, D;
    float eps;
    void *x, *y, *scratch;
    float *w, *rstd, *dy, *dx, *dw;
    size_t sb;
} norm_arg;

static void norm_fwd(void *p) {
    norm_arg *a = (norm_arg *)p;
    hy_cuda_rmsnorm_fwd(a->rows, a->D, a->eps, a->x, a->w, a->y, a->rstd, NULL);
}

static void norm_bwd(void *p) {
    norm_arg *a = (norm_arg *)p;
    hy_cuda_rmsnorm_bwd(a->rows, a->D, a->dy, a->x, a->w, a->rstd, a->dx, a->dw, a->scratch, a->sb,
                        NULL);
}

static void time_rmsnorm(int rows, int D, int reps, double *fwd, double *bwd) {
    norm_arg a;
    a.rows = rows, a.D = D, a.eps = 1e-5f;
    a.x = dev_bf16((size_t)rows * D, 51);
    a.y = hy_cuda_malloc((size_t)rows * D * 2);
    a.w = dev_f32((size_t)D, 0.9f, 1.1f, 52);
    a.rstd = (float *)hy_cuda_malloc((size_t)rows * 4);
    a.dy = dev_f32((size_t)rows * D, -1e-3f, 1e-3f, 53);
    a.dx = dev_zeros((size_t)rows * D);
    a.dw = dev_zeros((size_t)D);
    a.sb = hy_cuda_rmsnorm_bwd_scratch_bytes(rows, D);
    a.scratch = hy_cuda_malloc(a.sb ? a.sb : 256);
    *fwd = hy_cuda_time_ms(norm_fwd, &a, 3, reps);
    *bwd = hy_cuda_time_ms(norm_bwd, &a, 3, reps);
    void *all[] = {a.x, a.y, a.w, a.rstd, a.dy, a.dx, a.dw, a.scratch};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) hy_cuda_free(all[i]);
}

typedef struct {
    int B, T, H, D, K;
    void *x, *q, *k, *v, *work, *scratch;
    float *w, *b, *dq, *dk, *dv, *dx, *dw, *db;
    size_t sb;
} qkv_arg;

static void qkv_fwd(void *p) {
    qkv_arg *a = (qkv_arg *)p;
    hy_cuda_gdn_qkv_fwd(a->B, a->T, a->H, a->D, a->K, 1, 1e-12f, a->x, a->w, a->b, NULL, a->q,
                        a->k, a->v, a->work, NULL);
}

static void qkv_bwd(void *p) {
    qkv_arg *a = (qkv_arg *)p;
    hy_cuda_gdn_qkv_bwd(a->B, a->T, a->H, a->D, a->K, 1, 1e-12f, a->x, a->w, a->b, NULL, a->dq,
                        a->dk, a->dv, a->dx, 1, NULL, a->dw, a->db, a->scratch, a->sb,
                        NULL);  // dx written, as the tape's fresh buffer
}

// GDN's input stage (layers/gdn_qkv.c): forward and backward as the tape runs them.
static void time_gdn_qkv(int B, int T, int H, int D, int K, int reps, double *fwd, double *bwd) {
    size_t n = (size_t)B * T * H * D, C = (size_t)3 * H * D;
    qkv_arg a;
    memset(&a, 0, sizeof a);
    a.B = B, a.T = T, a.H = H, a.D = D, a.K = K;
    a.x = dev_bf16(3 * n, 61);
    a.w = dev_f32(C * K, -0.5f, 0.5f, 62);
    a.b = dev_f32(C, -0.1f, 0.1f, 63);
    a.q = hy_cuda_malloc(n * 2), a.k = hy_cuda_malloc(n * 2), a.v = hy_cuda_malloc(n * 2);
    a.work = hy_cuda_malloc(hy_cuda_gdn_qkv_work_bytes(H, D, K));
    a.dq = dev_f32(n, -1e-3f, 1e-3f, 64), a.dk = dev_f32(n, -1e-3f, 1e-3f, 65);
    a.dv = dev_f32(n, -1e-3f, 1e-3f, 66);
    a.dx = dev_zeros(3 * n), a.dw = dev_zeros(C * K), a.db = dev_zeros(C);
    a.sb = hy_cuda_gdn_qkv_bwd_scratch_bytes(B, T, H, D, K);
    a.scratch = hy_cuda_malloc(a.sb ? a.sb : 256);
    *fwd = hy_cuda_time_ms(qkv_fwd, &a, 3, reps);
    *bwd = hy_cuda_time_ms(qkv_bwd, &a, 3, reps);
    void *all[] = {a.x, a.w, a.b, a.q, a.k, a.v, a.work, a.dq, a.dk, a.dv, a.dx, a.dw, a.db,
                   a.scratch};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) hy_cuda_free(all[i]);
}

typedef struct {
    int rows, d, V;
    void *h, *E, *scratch;
    int32_t *tgt;
    float *loss, *dh, *dE;
    size_t sb;
} head_arg;

static void head_run(void *p) {
    head_arg *a = (head_arg *)p;
    hy_cuda_head_ce(a->rows, a->d, a->V, a->h, a->E, a->tgt, HY_IGNORE_INDEX, a->loss, NULL, a->dh,
                    a->dE, a->scratch, a->sb, NULL);
}

// The fused tied head + cross-entropy with both gradients (one call is forward and
// backward), chunked as layers/head_loss.c chunks it.
static double time_head(int rows, int d, int V, int reps) {
    head_arg a;
    a.rows = rows, a.d = d, a.V = V;
    a.h = dev_bf16((size_t)rows * d, 61);
    a.E = dev_random((size_t)V * d, 1, FILL_UNIFORM, -0.05f, 0.05f, 1, 62);
    int32_t *t = (int32_t *)hy_xmalloc((size_t)rows * sizeof(int32_t));
    for (int i = 0; i < rows; i++) t[i] = (int32_t)(((int64_t)i * 7919) % V);
    a.tgt = (int32_t *)hy_cuda_malloc((size_t)rows * sizeof(int32_t));
    hy_cuda_memcpy_h2d(a.tgt, t, (size_t)rows * sizeof(int32_t));
    free(t);
    a.loss = (float *)hy_cuda_malloc(4);
    a.dh = dev_zeros((size_t)rows * d);
    a.dE = dev_zeros((size_t)V * d);
    int chunk = hy_head_loss_chunk_rows(rows, V);
    a.sb = hy_cuda_head_ce_scratch_bytes(rows, V, chunk);
    a.scratch = hy_cuda_malloc(a.sb);
    double ms = hy_cuda_time_ms(head_run, &a, 3, reps);
    void *all[] = {a.h, a.E, a.tgt, a.loss, a.dh, a.dE, a.scratch};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) hy_cuda_free(all[i]);
    return ms;
}

// A linear layer's shape and how many run per step; projections of the same shape share
// a row ("gate_proj + o_proj" when I = d).
typedef struct {
    char label[64];
    int in, out, bias, count;
} proj;

static int add_proj(proj *p, int n, const char *name, int in, int out, int bias) {
    for (int i = 0; i < n; i++)
        if (p[i].in == in && p[i].out == out && p[i].bias == bias) {
            if (!strstr(p[i].label, name))
                snprintf(p[i].label + strlen(p[i].label), sizeof p[i].label - strlen(p[i].label),
                         " + %s", name);
            p[i].count++;
            return n;
        }
    snprintf(p[n].label, sizeof p[n].label, "%s", name);
    p[n].in = in, p[n].out = out, p[n].bias = bias, p[n].count = 1;
    return n + 1;
}

// Every linear layer of one forward (the tied head is timed with the loss).
static int model_projs(const hy_model *m, proj *p) {
    const hy_model_config *c = &m->cfg;
    int d = c->d_model, I = c->n_heads * c->head_dim, H = c->n_heads, F = c->mlp_hidden, n = 0;
    for (int i = 0; i < c->n_layers; i++) {
        const hy_layer_params *L = &m->layer[i];
        n = add_proj(p, n, "qkv_proj", d, 3 * I, 0);
        if (L->ab_w >= 0) n = add_proj(p, n, "ab_proj", d, 2 * H, 1);
        if (L->gate >= 0) n = add_proj(p, n, "gate_proj", d, I, 0);
        n = add_proj(p, n, "o_proj", I, d, 0);
        n = add_proj(p, n, "w_fused", d, 2 * F, 0);
        n = add_proj(p, n, "w_down", F, d, 0);
    }
    return n;
}

static const column PIECE_COLS[] = {
    {"piece", "piece", "%s"},         {"shape", "shape", "%s"},
    {"count", "per step", "%.0f"},    {"fwd_ms", "fwd ms", "%.3f"},
    {"bwd_ms", "bwd ms", "%.3f"},     {"tflops", "TFLOP/s (fwd+bwd)", "%.1f"},
    {"step_ms", "ms per step", "%.2f"}, {"share_pct", "% of step", "%.1f"}};

// One piece: fwd and bwd ms of one call (bwd NaN when fused into fwd), `count` per step.
static double piece_row(table *t, const char *piece, const char *shape, int count, double fwd,
                        double bwd, double flops, double step_ms) {
    double one = fwd + (isfinite(bwd) ? bwd : 0), per_step = one * count;
    int r = table_row(t);
    set_str(t, r, 0, "%s", piece);
    set_str(t, r, 1, "%s", shape);
    set_num(t, r, 2, count);
    set_num(t, r, 3, fwd);
    set_num(t, r, 4, bwd);
    set_num(t, r, 5, flops > 0 ? flops / (one * 1e-3) / 1e12 : NAN);
    set_num(t, r, 6, per_step);
    set_num(t, r, 7, 100.0 * per_step / step_ms);
    return per_step;
}

// Each piece of the step alone at the config's shapes, times its count per step; what
// they leave out (elementwise ops, SwiGLU, the gates, the embedding, host
// gaps) is the last row's difference to the measured step.
static void step_pieces(const hy_model *m, int B, int T, int reps, int iters, double step_ms,
                        double optim_ms) {
    const hy_model_config *c = &m->cfg;
    int rows = B * T, H = c->n_heads, D = c->head_dim, d = c->d_model, V = c->vocab_size;
    int n_gdn = 0, n_attn = 0;
    for (int i = 0; i < c->n_layers; i++) {
        if (m->layer[i].kind == HY_LAYER_GDN)
            n_gdn++;
        else
            n_attn++;
    }
    char title[256], shape[96];
    snprintf(title, sizeof title, "Pieces alone at the config's shapes (rows = B x T = %d): "
             "median of %d (GDN, SWA: %d), times their count per step", rows, reps, iters);
    table *t = table_new("pieces", title, PIECE_COLS, 8);
    double sum = 0, f, b;

    proj p[16];
    int np = model_projs(m, p);
    for (int i = 0; i < np; i++) {
        time_linear(rows, p[i].in, p[i].out, p[i].bias, reps, &f, &b);
        snprintf(shape, sizeof shape, "%d -> %d%s", p[i].in, p[i].out, p[i].bias ? " + bias" : "");
        sum += piece_row(t, p[i].label, shape, p[i].count, f, b, 6.0 * rows * p[i].in * (double)p[i].out,
                         step_ms);
    }
    if (n_gdn) {
        gdn_time(B, T, H, D, 3, iters, &f, &b, NULL);
        snprintf(shape, sizeof shape, "(%d, %d, %d, %d)", B, T, H, D);
        sum += piece_row(t, "GDN core", shape, n_gdn, f, b - f,
                         3.0 * B * T * (double)H * hy_gdn_flops_per_token(64, D), step_ms);
    }
    if (n_attn) {
        int W = m->arch == HY_ARCH_DENSE ? T : c->swa_window;
        swa_time(B, T, H, D, W, 3, iters, &f, &b);
        snprintf(shape, sizeof shape, "(%d, %d, %d, %d), W %d", B, T, H, D, W);
        sum += piece_row(t, "attention core", shape, n_attn, f, b - f,
                         3.0 * 4.0 * D * hy_window_pairs(T, W) * B * H, step_ms);
    }
    if (n_gdn) {
        time_gdn_qkv(B, T, H, D, c->dn_short_conv_kernel, reps, &f, &b);
        snprintf(shape, sizeof shape, "(%d, %d, 3 x %d), K %d", B, T, H * D,
                 c->dn_short_conv_kernel);
        sum += piece_row(t, "GDN input: conv, SiLU, q/k norms", shape, n_gdn, f, b, 0, step_ms);
    }
    time_rmsnorm(rows, d, reps, &f, &b);
    snprintf(shape, sizeof shape, "(%d, %d)", rows, d);
    sum += piece_row(t, "RMSNorm", shape, 2 * c->n_layers + 1, f, b, 0, step_ms);
    f = time_head(rows, d, V, reps);
    snprintf(shape, sizeof shape, "(%d, %d) x V %d", rows, d, V);
    sum += piece_row(t, "head + cross-entropy (fused fwd+bwd)", shape, 1, f, NAN,
                     6.0 * rows * (double)d * V, step_ms);
    sum += piece_row(t, "clip + optimizer (from the step)", "all parameters", 1, optim_ms, NAN, 0,
                     step_ms);

    int r = table_row(t);
    set_str(t, r, 0, "sum of the pieces");
    set_num(t, r, 6, sum);
    set_num(t, r, 7, 100.0 * sum / step_ms);
    r = table_row(t);
    set_str(t, r, 0, "rest: elementwise, SwiGLU, gate slices, embedding, zeroing, gaps");
    set_num(t, r, 6, step_ms - sum);
    set_num(t, r, 7, 100.0 * (step_ms - sum) / step_ms);
}

// The optimizer's parts alone, on the run's parameters and gradients (after
// the measured steps: the updates they apply do not matter then).
typedef struct {
    gpu_run *r;
    int part;  // 0 AdamW, 1 Muon, 2 the bf16 copies as a pass of their own
} opt_arg;

static void opt_part(void *p) {
    opt_arg *a = (opt_arg *)p;
    hy_train_gpu *g = &a->r->gpu;
    hy_param_table *t = &g->model.params;
    const hy_optim_config *c = &a->r->opt.cfg;
    if (a->part == 0)
        hy_cuda_adamw_step(g->plan, c, a->r->opt.step + 1, 1.0f, t->values, t->grads, g->m, g->v,
                           NULL);
    else if (a->part == 1)
        hy_cuda_muon_step(g->plan, c, 1.0f, t->values, t->grads, g->m, g->scratch,
                          g->scratch_bytes, NULL);
    else
        hy_params_refresh_half(t);
}

static void optim_table(gpu_run *r, int reps, double opt_ms) {
    static const column cols[] = {{"part", "part", "%s"}, {"ms", "ms (median)", "%.3f"},
                                  {"share_pct", "% of the step's optimizer", "%.1f"}};
    char title[160];
    snprintf(title, sizeof title, "The optimizer in parts, each alone: median of %d", reps);
    table *t = table_new("optimizer", title, cols, 3);
    // On one GPU AdamW and Muon write the bf16 copies with the values; the pass of its own
    // is what several GPUs run after the owners' broadcast (not in this step).
    static const char *names[3] = {"AdamW (embedding, norms, gates, conv, biases)",
                                   "Muon (momentum, Newton-Schulz, update; one CUDA graph)",
                                   "bf16 copies as a pass of their own (several GPUs only)"};
    for (int k = 0; k < 3; k++) {
        opt_arg a = {r, k};
        double ms = hy_cuda_time_ms(opt_part, &a, 2, reps);
        int row = table_row(t);
        set_str(t, row, 0, "%s", names[k]);
        set_num(t, row, 1, ms);
        set_num(t, row, 2, 100.0 * ms / opt_ms);
    }
}

static void parts_table(const step_parts *p, int steps) {
    static const column cols[] = {{"part", "part", "%s"}, {"ms", "ms (median)", "%.2f"},
                                  {"share_pct", "% of step", "%.1f"}};
    char title[160];
    snprintf(title, sizeof title, "One training step in parts (CUDA events), median of %d steps",
             steps);
    table *t = table_new("parts", title, cols, 3);
    const char *names[6] = {"forward (tape: embedding ... head + loss)", "backward (every tape node)",
                            "gradient norm (clipped in the update)",
                            "optimizer (AdamW + Muon, with the bf16 copies)",
                            "host and sync gaps (wall - parts)", "step (wall clock)"};
    double ms[6] = {p->fwd, p->bwd, p->clip, p->opt, p->wall - p->fwd - p->bwd - p->clip - p->opt,
                    p->wall};
    for (int k = 0; k < 6; k++) {
        int r = table_row(t);
        set_str(t, r, 0, "%s", names[k]);
        set_num(t, r, 1, ms[k]);
        set_num(t, r, 2, 100.0 * ms[k] / p->wall);
    }
}

static void ops_table(op_times *ot, int steps, double bwd_ms, double step_ms) {
    static const column cols[] = {{"op", "op", "%s"},           {"nodes", "nodes", "%.0f"},
                                  {"ms", "ms (median)", "%.3f"}, {"bwd_pct", "% of backward", "%.1f"},
                                  {"step_pct", "% of step", "%.1f"}};
    table *t = table_new("backward_by_op", "Backward by op (an event before every tape node)",
                         cols, 5);
    for (int i = 0; i < ot->n; i++) {
        double ms = bench_median(ot->ms[i], steps);
        int r = table_row(t);
        set_str(t, r, 0, "%s", ot->name[i]);
        set_num(t, r, 1, ot->nodes[i]);
        set_num(t, r, 2, ms);
        set_num(t, r, 3, 100.0 * ms / bwd_ms);
        set_num(t, r, 4, 100.0 * ms / step_ms);
    }
}

int bench_step(int argc, char **argv) {
    opt o[] = {{"--config", OPT_STR, 0, 0, NULL}, {"--B", OPT_INT, 0, 1, NULL},
               {"--T", OPT_INT, 0, 1, NULL},      {"--steps", OPT_INT, 10, 1, NULL},
               {"--warmup", OPT_INT, 3, 0, NULL}, {"--reps", OPT_INT, 20, 1, NULL},
               {"--set", OPT_SET, 0, 0, NULL},    {"--wy", OPT_STR, 0, 0, "default"},
               {"--json", OPT_STR, 0, 0, NULL},   OPT_END};
    parse_opts("step", o, argc, argv);
    require_wy("step", o);
    require_config("step", o);
    int steps = (int)opt_int(o, "--steps"), warmup = (int)opt_int(o, "--warmup");
    int reps = (int)opt_int(o, "--reps");
    HY_REQUIRE(steps <= MAX_STEP_STEPS, "hydra-bench step: --steps must be <= %d, got %d",
               MAX_STEP_STEPS, steps);
    HY_REQUIRE(reps <= 1000, "hydra-bench step: --reps must be <= 1000, got %d", reps);
    require_gpu("step");
    gpu_run *r = (gpu_run *)hy_xcalloc(1, sizeof *r);
    load_config(&r->cfg, "step", o);
    bench_header("step", 1, opt_str(o, "--json"));
    apply_wy(opt_str(o, "--wy"));
    ceilings_figures(20);
    gpu_run_build(r);
    print_model(r, opt_str(o, "--config"));
    if (r->cfg.train.grad_accum > 1)
        printf("note: the parts are of one micro-batch per step (train.grad_accum = %d is not "
               "applied here)\n", r->cfg.train.grad_accum);

    hy_cuda_events *ev = hy_cuda_events_create(EV_NODE0 + r->tape.cap_nodes + 1);
    op_times *ot = (op_times *)hy_xcalloc(1, sizeof *ot);
    double part[5][MAX_STEP_STEPS];
    for (int s = -warmup; s < steps; s++) {
        step_parts p = step_timed(r, s + warmup, ev, ot, s);
        if (s < 0) continue;
        double v[5] = {p.fwd, p.bwd, p.clip, p.opt, p.wall};
        for (int k = 0; k < 5; k++) part[k][s] = v[k];
    }
    step_parts med = {bench_median(part[0], steps), bench_median(part[1], steps),
                      bench_median(part[2], steps), bench_median(part[3], steps),
                      bench_median(part[4], steps)};
    hy_cuda_events_destroy(ev);
    hy_model shapes;  // the model's layout, for the pieces, after the run's memory is gone
    hy_model_build(&shapes, r->cfg.arch, &r->cfg.model);
    int B = r->B, T = r->T;
    run_figures(r, opt_str(o, "--config"));
    fig_num("steps", "measured steps", steps, "%.0f", "");
    fig_num("step_ms", "step, wall clock (median)", med.wall, "%.2f", "ms");
    fig_num("tokens_per_s", "tokens/s at that step time", (double)B * T / (med.wall * 1e-3), "%.0f", "");
    parts_table(&med, steps);
    optim_table(r, reps, med.opt);
    gpu_run_free(r);
    free(r);

    ops_table(ot, steps, med.bwd, med.wall);
    free(ot);
    step_pieces(&shapes, B, T, reps, 20, med.wall, med.clip + med.opt);
    hy_model_destroy(&shapes);
    return report_finish(1);
}
