// The tape: training a small MLP, gradient accumulation for reused inputs,
// arena resets, and the errors a misuse gets.
#include <stdlib.h>
#include <string.h>

#include "../autograd/params.h"
#include "../autograd/rng.h"
#include "../layers/ops.h"
#include "harness.h"

typedef struct {
    hy_arena params, grads, acts, scratch, data;
    hy_tape tape;
} env;

static void env_init(env *e) {
    hy_arena_init(&e->params, "params", HY_CPU, 1 << 20);
    hy_arena_init(&e->grads, "grads", HY_CPU, 1 << 20);
    hy_arena_init(&e->acts, "acts", HY_CPU, 4 << 20);
    hy_arena_init(&e->scratch, "scratch", HY_CPU, 4 << 20);
    hy_arena_init(&e->data, "data", HY_CPU, 1 << 20);
    hy_tape_init(&e->tape, &e->acts, &e->scratch, 256, 1024);
}

static void env_free(env *e) {
    hy_tape_free(&e->tape);
    hy_arena_free(&e->params);
    hy_arena_free(&e->grads);
    hy_arena_free(&e->acts);
    hy_arena_free(&e->scratch);
    hy_arena_free(&e->data);
}

// A 2-layer MLP classifying which of 4 Gaussian blobs a point came from.
typedef struct {
    hy_param_table tbl;
    int w1, b1, w2, b2;
} mlp;

static void mlp_build(mlp *m, env *e, hy_rng *r) {
    hy_params_create(&m->tbl, 8);
    int64_t s1[2] = {16, 2}, s2[1] = {16}, s3[2] = {4, 16}, s4[1] = {4};
    hy_init nrm = {HY_INIT_NORMAL, 0.5f}, zero = {HY_INIT_ZEROS, 0};
    m->w1 = hy_params_add(&m->tbl, "w1", 2, s1, nrm, HY_GROUP_ADAMW, 1);
    m->b1 = hy_params_add(&m->tbl, "b1", 1, s2, zero, HY_GROUP_ADAMW, 0);
    m->w2 = hy_params_add(&m->tbl, "w2", 2, s3, nrm, HY_GROUP_ADAMW, 1);
    m->b2 = hy_params_add(&m->tbl, "b2", 1, s4, zero, HY_GROUP_ADAMW, 0);
    hy_params_alloc(&m->tbl, &e->params, &e->grads);
    hy_params_initialise(&m->tbl, r);
    hy_params_bind(&m->tbl, &e->tape);
}

static hy_tensor *mlp_loss(mlp *m, hy_tape *t, hy_tensor *x, hy_tensor *y) {
    hy_param *p = m->tbl.p;
    hy_tensor *h = hy_silu(t, hy_linear(t, x, p[m->w1].value, p[m->b1].value));  // (N, 16)
    hy_tensor *logits = hy_linear(t, h, p[m->w2].value, p[m->b2].value);          // (N, 4)
    return hy_cross_entropy(t, logits, y, -1);
}

static void make_blobs(hy_tensor *x, hy_tensor *y, hy_rng *r) {
    static const float cx[4] = {1, -1, 1, -1}, cy[4] = {1, 1, -1, -1};
    for (int64_t i = 0; i < x->shape[0]; i++) {
        int c = (int)hy_rng_below(r, 4);
        hy_f32(x)[2 * i] = cx[c] + 0.3f * hy_rng_normal(r);
        hy_f32(x)[2 * i + 1] = cy[c] + 0.3f * hy_rng_normal(r);
        hy_i32(y)[i] = c;
    }
}

HY_TEST(tape_mlp_sgd_lowers_loss, "cpu") {
    env e;
    env_init(&e);
    hy_rng r;
    hy_rng_seed(&r, 42);
    mlp m;
    mlp_build(&m, &e, &r);
    hy_tensor *x = hy_new2(&e.data, HY_F32, 64, 2, "x"), *y = hy_new1(&e.data, HY_I32, 64, "y");
    float first = 0, last = 0;
    for (int step = 0; step < 200; step++) {
        make_blobs(x, y, &r);
        hy_tape_reset(&e.tape);
        hy_params_zero_grads(&m.tbl);
        hy_tensor *loss = mlp_loss(&m, &e.tape, x, y);
        hy_tape_backward(&e.tape, loss);
        for (size_t i = 0; i < m.tbl.numel; i++) m.tbl.values[i] -= 0.5f * m.tbl.grads[i];
        float l = hy_f32(loss)[0];
        if (step == 0) first = l;
        last = l;
    }
    printf("  loss %.4f -> %.4f\n", first, last);
    HY_ASSERT(first > 1.2f, "initial loss %.4f should be near log 4", first);
    HY_ASSERT(last < 0.2f * first, "loss fell only from %.4f to %.4f", first, last);
    hy_params_destroy(&m.tbl);
    env_free(&e);
}

HY_TEST(tape_reused_input_sums_gradients, "cpu") {
    env e;
    env_init(&e);
    hy_rng r;
    hy_rng_seed(&r, 7);
    hy_tensor *a = hy_new2(&e.params, HY_F32, 3, 5, "a");
    hy_tensor *ga = hy_zeros_like(&e.grads, a, "grad a");
    hy_fill_normal(a, &r, 0, 1);
    hy_tape_bind_grad(&e.tape, a, ga);
    // loss = mean(a * a + a): d/da = (2a + 1) / n, reaching `a` along three uses.
    hy_tensor *loss = hy_mean(&e.tape, hy_add(&e.tape, hy_mul(&e.tape, a, a), a));
    hy_tape_backward(&e.tape, loss);
    for (int i = 0; i < 15; i++)
        HY_ASSERT_CLOSE(hy_f32(ga)[i], (2 * hy_f32(a)[i] + 1) / 15.0, 1e-6, "d/da");
    // A second forward+backward without zeroing accumulates on top.
    hy_tape_reset(&e.tape);
    loss = hy_mean(&e.tape, hy_add(&e.tape, hy_mul(&e.tape, a, a), a));
    hy_tape_backward(&e.tape, loss);
    for (int i = 0; i < 15; i++)
        HY_ASSERT_CLOSE(hy_f32(ga)[i], 2 * (2 * hy_f32(a)[i] + 1) / 15.0, 1e-6, "accumulated");
    env_free(&e);
}

// Marks: backward calls the hook at each mark once every op recorded after
// it has run (so the gradients of the parameters used only after it are
// final), in reverse order; without a hook nothing is recorded.
typedef struct {
    int ids[4], n;
    float ga[4], gw[4];
    const hy_tensor *ga_t, *gw_t;
} mark_log;

static void log_mark(void *ctx, int id) {
    mark_log *l = (mark_log *)ctx;
    l->ids[l->n] = id;
    l->ga[l->n] = hy_f32(l->ga_t)[0];
    l->gw[l->n] = hy_f32(l->gw_t)[0];
    l->n++;
}

HY_TEST(tape_marks_follow_their_block, "cpu") {
    env e;
    env_init(&e);
    hy_tensor *a = hy_new2(&e.params, HY_F32, 1, 4, "a"), *w = hy_new2(&e.params, HY_F32, 1, 4, "w");
    hy_tensor *ga = hy_zeros_like(&e.grads, a, "grad a"), *gw = hy_zeros_like(&e.grads, w, "grad w");
    for (int i = 0; i < 4; i++) hy_f32(a)[i] = 1.0f + i, hy_f32(w)[i] = 0.5f;
    hy_tape_bind_grad(&e.tape, a, ga);
    hy_tape_bind_grad(&e.tape, w, gw);
    // No hook: marks are not recorded.
    int before = e.tape.n_nodes;
    hy_tape_mark(&e.tape, 0);
    HY_ASSERT(e.tape.n_nodes == before, "a mark without a hook was recorded");
    mark_log l = {{0}, 0, {0}, {0}, ga, gw};
    e.tape.on_mark = log_mark;
    e.tape.mark_ctx = &l;
    // Block 0 uses a; block 1 uses w: loss = mean((a * a) * w).
    hy_tape_mark(&e.tape, 0);
    hy_tensor *h = hy_mul(&e.tape, a, a);
    hy_tape_mark(&e.tape, 1);
    hy_tensor *loss = hy_mean(&e.tape, hy_mul(&e.tape, h, w));
    hy_tape_backward(&e.tape, loss);
    HY_ASSERT(l.n == 2 && l.ids[0] == 1 && l.ids[1] == 0, "marks called %d times (%d, %d), "
              "expected 1 then 0", l.n, l.ids[0], l.ids[1]);
    // At mark 1: d/dw = a^2 / 4 final, nothing yet for a; at mark 0: d/da = 2 a w / 4.
    HY_ASSERT_CLOSE(l.gw[0], 1.0f / 4, 1e-7, "w's gradient at mark 1");
    HY_ASSERT(l.ga[0] == 0.0f, "a's gradient at mark 1 is %g, expected 0 (not reached yet)", l.ga[0]);
    HY_ASSERT_CLOSE(l.ga[1], 2 * 1.0f * 0.5f / 4, 1e-7, "a's gradient at mark 0");
    env_free(&e);
}

// hy_grad_out: a new gradient of a whole tensor is left for the caller to
// overwrite (fresh); of a view, or an existing one, it is zeroed or kept
// (accumulate). hy_grad_adopt: a tensor without a gradient takes the given
// buffer itself; one that has a gradient, or a view, does not.
static void adopt_backward(hy_tape *t, hy_node *n) {
    hy_tensor *dy = hy_grad(t, n->out[0]);
    int *got = (int *)n->ctx;
    got[0] = hy_grad_adopt(t, n->in[0], dy);  // new: adopted
    got[1] = hy_grad_adopt(t, n->in[0], dy);  // has one now: refused
    int fresh = -1;
    hy_tensor *gb = hy_grad_out(t, n->in[1], &fresh);
    got[2] = fresh;
    got[3] = hy_grad(t, n->in[0])->data == dy->data;
    float *d = hy_f32(gb);
    for (int64_t i = 0; i < hy_numel(gb); i++) d[i] = 2.0f;  // overwrite: every element
    hy_grad_out(t, n->in[1], &fresh);
    got[4] = fresh;  // second call: 0, accumulate
}

HY_TEST(tape_grad_out_and_adopt, "cpu") {
    env e;
    env_init(&e);
    hy_tensor *p = hy_new2(&e.params, HY_F32, 2, 3, "p");
    hy_tensor *gp = hy_zeros_like(&e.grads, p, "grad p");
    hy_tape_bind_grad(&e.tape, p, gp);
    hy_tensor *a = hy_mul(&e.tape, p, p), *b = hy_mul(&e.tape, p, p);  // two activations
    hy_tensor *y = hy_tape_new(&e.tape, HY_F32, 2, a->shape, "y");
    hy_tensor *ins[2] = {a, b};
    hy_node *n = hy_tape_record(&e.tape, "adopt", adopt_backward, ins, 2, &y, 1);
    HY_ASSERT(n, "the node was not recorded");
    int *got = (int *)hy_tape_ctx(&e.tape, n, 5 * sizeof(int));
    float seed[6] = {1, 1, 1, 1, 1, 1};
    hy_tape_backward_seed(&e.tape, y, seed);
    HY_ASSERT(got[0] == 1 && got[1] == 0, "adopt: first %d (want 1), second %d (want 0)", got[0], got[1]);
    HY_ASSERT(got[3] == 1, "the adopted gradient is not the given buffer");
    HY_ASSERT(got[2] == 1 && got[4] == 0, "grad_out: fresh %d then %d (want 1 then 0)", got[2], got[4]);
    // A window of a tensor is never fresh nor adopted: its owner's gradient
    // covers more than the window. A reshape of all of it is fresh.
    hy_tape_reset(&e.tape);
    hy_tensor *w = hy_mul(&e.tape, p, p);
    hy_tensor *row = hy_view_rows(&e.acts, w, 0, 1);
    int fresh = -1;
    hy_tensor *g = hy_grad_out(&e.tape, row, &fresh);
    HY_ASSERT(g && fresh == 0, "a view's new gradient: fresh %d (want 0, zeroed)", fresh);
    for (int i = 0; i < 6; i++) HY_ASSERT(hy_f32(hy_grad(&e.tape, w))[i] == 0.0f, "not zeroed");
    hy_tensor *w2 = hy_mul(&e.tape, p, p);
    int64_t flat[1] = {6};
    hy_tensor *all = hy_view(&e.acts, w2, 1, flat);
    fresh = -1;
    g = hy_grad_out(&e.tape, all, &fresh);
    HY_ASSERT(g && fresh == 1, "a reshape's new gradient: fresh %d (want 1)", fresh);
    HY_ASSERT(g->data == hy_grad(&e.tape, w2)->data && hy_numel(g) == 6,
              "a reshape's gradient is not all of its owner's");
    hy_grad_out(&e.tape, all, &fresh);
    HY_ASSERT(fresh == 0, "a reshape's second hy_grad_out: fresh %d (want 0)", fresh);
    env_free(&e);
}

// The rules of hy_grad_out_bf16 (autograd/tape.h), without a GPU: the
// tensors are host tensors marked as CUDA (nothing here touches their data;
// the bf16 gradient buffers come from the host scratch arena).
HY_TEST(tape_bf16_gradient_rules, "cpu") {
    env e;
    env_init(&e);
    hy_tape *t = &e.tape;
    hy_tensor *p = hy_new2(&e.params, HY_F32, 2, 3, "p");
    hy_tensor *gp = hy_zeros_like(&e.grads, p, "grad p");
    hy_tape_bind_grad(t, p, gp);
    hy_tensor *a = hy_mul(t, p, p);                          // read twice below
    hy_tensor *b = hy_add(t, a, a), *c = hy_silu(t, b);  // b read once (by c's node)
    HY_ASSERT(a->uses == 2 && b->uses == 1 && c->uses == 0, "uses: a %d (want 2), b %d (want 1), c %d (want 0)",
              a->uses, b->uses, c->uses);
    // A CPU linear never offers bf16 (its backward reads f32).
    hy_tensor *w = hy_new2(&e.params, HY_F32, 4, 3, "w");
    hy_tensor *gw = hy_zeros_like(&e.grads, w, "grad w");
    hy_tape_bind_grad(t, w, gw);
    HY_ASSERT(!hy_linear(t, a, w, NULL)->grad_bf16_ok, "a CPU linear's output was flagged");
    // Not on the GPU: no bf16 gradient, even when flagged.
    hy_tape_grad_bf16_ok(t, b);
    HY_ASSERT(b->grad_bf16_ok, "hy_tape_grad_bf16_ok did not flag b");
    HY_ASSERT(!hy_grad_out_bf16(t, b), "a CPU tensor got a bf16 gradient");
    HY_ASSERT(!hy_has_grad(t, b), "a refused bf16 gradient left a gradient behind");
    // On the GPU (marked): one reader, flagged, no gradient yet: granted once.
    a->device = b->device = HY_CUDA;
    void *g = hy_grad_out_bf16(t, b);
    HY_ASSERT(g, "b (one reader, flagged, no gradient) got no bf16 gradient");
    HY_ASSERT(hy_grad_bf16(t, b) == g && hy_has_grad(t, b), "b's bf16 gradient is not found");
    HY_ASSERT(!hy_grad_out_bf16(t, b), "a second bf16 gradient for b (not the only contribution)");
    HY_EXPECT_ERROR(hy_grad(t, b), HY_EXIT_FAIL, "held in bf16");
    HY_EXPECT_ERROR(hy_grad_acc(t, b), HY_EXIT_FAIL, "held in bf16");
    // Two readers: refused. A window of a flagged owner: refused; all of it
    // reshaped: granted (the owner's gradient).
    hy_tape_grad_bf16_ok(t, a);
    HY_ASSERT(!hy_grad_out_bf16(t, a), "a (two readers) got a bf16 gradient");
    hy_tape_reset(t);
    hy_tensor *d = hy_mul(t, p, p);
    int64_t flat[1] = {6};
    hy_tensor *row = hy_view_rows(&e.acts, d, 0, 1), *all = hy_view(&e.acts, d, 1, flat);
    hy_silu(t, all);  // d's one reader, through the reshape
    d->device = row->device = all->device = HY_CUDA;
    hy_tape_grad_bf16_ok(t, d);
    HY_ASSERT(!hy_grad_out_bf16(t, row), "a window of d got a bf16 gradient");
    HY_ASSERT(hy_grad_out_bf16(t, all) && hy_grad_bf16(t, d), "all of d reshaped got no bf16 gradient");
    // HYDRA_GRAD_BF16=0: nothing is flagged.
    setenv("HYDRA_GRAD_BF16", "0", 1);
    hy_tensor *f = hy_mul(t, p, p);
    hy_tape_grad_bf16_ok(t, f);
    unsetenv("HYDRA_GRAD_BF16");
    HY_ASSERT(!f->grad_bf16_ok, "HYDRA_GRAD_BF16=0 flagged a tensor");
    env_free(&e);
}

HY_TEST(tape_view_gradients_reach_owner, "cpu") {
    env e;
    env_init(&e);
    hy_tensor *a = hy_new2(&e.params, HY_F32, 4, 3, "a");
    hy_tensor *ga = hy_zeros_like(&e.grads, a, "grad a");
    for (int i = 0; i < 12; i++) hy_f32(a)[i] = (float)i;
    hy_tape_bind_grad(&e.tape, a, ga);
    hy_tensor *rows = hy_view_rows(&e.acts, a, 1, 2);  // rows 1 and 2
    hy_tape_backward(&e.tape, hy_mean(&e.tape, rows));
    for (int i = 0; i < 12; i++) {
        float want = (i >= 3 && i < 9) ? 1.0f / 6 : 0.0f;
        HY_ASSERT_CLOSE(hy_f32(ga)[i], want, 1e-7, "row-view gradient");
    }
    env_free(&e);
}

HY_TEST(tape_reset_no_leak, "cpu") {
    // Many steps through reset: arenas return to empty, no host allocation
    // grows (valgrind runs this test as tape_reset_valgrind).
    env e;
    env_init(&e);
    hy_rng r;
    hy_rng_seed(&r, 3);
    mlp m;
    mlp_build(&m, &e, &r);
    hy_tensor *x = hy_new2(&e.data, HY_F32, 16, 2, "x"), *y = hy_new1(&e.data, HY_I32, 16, "y");
    size_t peak_after_first = 0;
    for (int step = 0; step < 50; step++) {
        make_blobs(x, y, &r);
        hy_tape_reset(&e.tape);
        HY_ASSERT(e.acts.used == 0 && e.scratch.used == 0 && e.acts.meta_used == 0,
                  "arenas not empty after reset");
        hy_tape_backward(&e.tape, mlp_loss(&m, &e.tape, x, y));
        if (step == 0) peak_after_first = e.acts.peak + e.scratch.peak;
    }
    HY_ASSERT(e.acts.peak + e.scratch.peak == peak_after_first,
              "arena peak grew over steps: %zu -> %zu", peak_after_first,
              e.acts.peak + e.scratch.peak);
    hy_params_destroy(&m.tbl);
    env_free(&e);
}

HY_TEST(tape_misuse_errors, "cpu") {
    env e;
    env_init(&e);
    hy_tensor *a = hy_new2(&e.params, HY_F32, 2, 3, "a");
    hy_tensor *ga = hy_zeros_like(&e.grads, a, "grad a");
    hy_fill_const(a, 1.0f);
    hy_tape_bind_grad(&e.tape, a, ga);

    // Backward from a non-scalar.
    hy_tensor *y = hy_mul(&e.tape, a, a);
    HY_EXPECT_ERROR(hy_tape_backward(&e.tape, y), HY_EXIT_USAGE, "must be a scalar");
    // Backward twice on one forward.
    hy_tape_reset(&e.tape);
    hy_tensor *loss = hy_mean(&e.tape, a);
    hy_tape_backward(&e.tape, loss);
    HY_EXPECT_ERROR(hy_tape_backward(&e.tape, loss), HY_EXIT_USAGE, "called twice");
    // Backward from something that needs no gradient.
    hy_tape_reset(&e.tape);
    hy_tensor *c = hy_new2(&e.data, HY_F32, 2, 3, "c");
    hy_fill_const(c, 2.0f);
    HY_EXPECT_ERROR(hy_tape_backward(&e.tape, hy_mean(&e.tape, c)), HY_EXIT_USAGE,
                    "does not depend");
    // Shape mismatch names the op and both shapes.
    hy_tensor *w = hy_new2(&e.data, HY_F32, 4, 5, "w");
    HY_EXPECT_ERROR(hy_linear(&e.tape, a, w, NULL), HY_EXIT_USAGE, "linear: input 'a' (2, 3)");
    HY_EXPECT_ERROR(hy_add(&e.tape, a, w), HY_EXIT_USAGE, "(2, 3)");
    // Wrong dtype.
    hy_tensor *ids = hy_new2(&e.data, HY_I32, 2, 3, "ids");
    HY_EXPECT_ERROR(hy_rmsnorm(&e.tape, ids, a, 1e-5f), HY_EXIT_USAGE, "must be f32");
    // Wrong device: a tensor that claims to live on a GPU.
    hy_tensor *g = hy_new2(&e.data, HY_F32, 2, 3, "gpu_x");
    g->device = HY_CUDA;
    HY_EXPECT_ERROR(hy_add(&e.tape, a, g), HY_EXIT_USAGE, "different devices");
    env_free(&e);
}

HY_TEST(arena_overflow_is_named, "cpu") {
    hy_arena a;
    hy_arena_init(&a, "tiny", HY_CPU, 1024);
    hy_arena_alloc(&a, 1000);
    HY_EXPECT_ERROR(hy_arena_alloc(&a, 1000), HY_EXIT_FAIL, "arena 'tiny'");
    hy_arena_free(&a);
}

HY_TEST(bf16_round_trip, "cpu") {
    // Round to nearest even; exact for values with 8 significant bits.
    HY_ASSERT(hy_bf16_to_f32(hy_f32_to_bf16(1.5f)) == 1.5f, "1.5 exact");
    HY_ASSERT(hy_bf16_to_f32(hy_f32_to_bf16(-3.0f)) == -3.0f, "-3 exact");
    float x = 1.0f + 1.0f / 256;  // halfway between two bf16 values: rounds to even (1.0)
    HY_ASSERT(hy_bf16_to_f32(hy_f32_to_bf16(x)) == 1.0f, "tie to even");
    float z = 3.14159f;
    HY_ASSERT(fabsf(hy_bf16_to_f32(hy_f32_to_bf16(z)) - z) < 0.0079f, "relative error <= 2^-8");
}
