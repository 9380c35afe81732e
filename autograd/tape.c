#include "tape.h"

#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_glue.h"

void hy_tape_init(hy_tape *t, hy_arena *acts, hy_arena *scratch, int max_nodes, int max_slots) {
    memset(t, 0, sizeof *t);
    t->acts = acts;
    t->scratch = scratch;
    t->cap_nodes = max_nodes;
    t->nodes = (hy_node *)hy_xcalloc((size_t)max_nodes, sizeof(hy_node));
    t->cap_slots = max_slots;
    t->grads = (hy_tensor **)hy_xcalloc((size_t)max_slots, sizeof(hy_tensor *));
    t->owners = (hy_tensor **)hy_xcalloc((size_t)max_slots, sizeof(hy_tensor *));
    hy_arena_init(&t->ctx_host, "contexts", HY_CPU, HY_TAPE_CTX_BYTES);
    t->enabled = 1;
}

void hy_tape_free(hy_tape *t) {
    free(t->nodes);
    free(t->grads);
    free(t->owners);
    hy_arena_free(&t->ctx_host);
    memset(t, 0, sizeof *t);
}

static hy_tensor *owner_of(hy_tensor *x) { return x->base ? x->base : x; }

// x is all of its owner: the owner itself, or a view of all of it (a
// reshape; views are contiguous windows), so writing every element of x
// writes every element of the owner.
static int covers_owner(const hy_tensor *x) {
    return !x->base || (x->offset == 0 && hy_numel(x) == hy_numel(x->base));
}

// The slot of x's owner if it has a live one, else -1. A tensor keeps a
// stale slot number after a reset; `owners` tells whether it is still its.
static int live_slot(const hy_tape *t, const hy_tensor *owner) {
    int s = owner->slot;
    if (s >= 0 && s < t->n_slots && t->owners[s] == owner) return s;
    return -1;
}

static int new_slot(hy_tape *t, hy_tensor *owner) {
    HY_CHECK(t->n_slots < t->cap_slots, "tape: more than %d tensors need gradients", t->cap_slots);
    int s = t->n_slots++;
    t->owners[s] = owner;
    t->grads[s] = NULL;
    owner->slot = s;
    return s;
}

void hy_tape_bind_grad(hy_tape *t, hy_tensor *param, hy_tensor *grad) {
    HY_CHECK(t->n_slots == t->n_bound, "tape: bind parameter gradients before the first forward");
    HY_REQUIRE(param->base == NULL, "tape: parameter '%s' must not be a view", param->name);
    hy_expect_same_shape("bind_grad", param, grad);
    hy_expect_device("bind_grad", param, grad);
    HY_REQUIRE(param->dtype != HY_I32, "tape: integer tensor '%s' cannot have a gradient",
               param->name);
    int s = new_slot(t, param);
    t->grads[s] = grad;
    t->n_bound = t->n_slots;
    param->requires_grad = 1;
}

hy_node *hy_tape_record(hy_tape *t, const char *op, hy_backward_fn backward, hy_tensor **in,
                        int n_in, hy_tensor **out, int n_out) {
    HY_CHECK(n_in <= HY_MAX_IO && n_out <= HY_MAX_IO, "%s: too many inputs or outputs", op);
    int needs = 0;
    for (int i = 0; i < n_in; i++)
        if (in[i] && in[i]->dtype != HY_I32 && in[i]->requires_grad) needs = 1;
    if (!t || !t->enabled) needs = 0;
    for (int i = 0; i < n_out; i++) out[i]->requires_grad = needs && out[i]->dtype != HY_I32;
    if (!needs) return NULL;
    HY_REQUIRE(!t->backward_done,
               "%s: the tape already ran backward; reset it before the next forward", op);
    HY_CHECK(t->n_nodes < t->cap_nodes, "tape: more than %d ops in one step", t->cap_nodes);
    hy_node *n = &t->nodes[t->n_nodes++];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->backward = backward;
    n->n_in = n_in;
    n->n_out = n_out;
    for (int i = 0; i < n_in; i++) {
        n->in[i] = in[i];
        if (in[i] && in[i]->dtype != HY_I32 && in[i]->requires_grad) owner_of(in[i])->uses++;
    }
    for (int i = 0; i < n_out; i++) n->out[i] = out[i];
    return n;
}

void *hy_tape_ctx(hy_tape *t, hy_node *node, size_t bytes) {
    // Contexts are host structs (sizes, pointers to saved tensors), so they
    // come from the tape's host arena even when activations live on a GPU.
    node->ctx = hy_arena_calloc(&t->ctx_host, bytes);
    return node->ctx;
}

hy_tensor *hy_tape_new(hy_tape *t, hy_dtype dt, int ndim, const int64_t *shape,
                       const char *name) {
    return hy_tensor_new(t->acts, dt, ndim, shape, name);
}

int hy_has_grad(const hy_tape *t, const hy_tensor *x) {
    int s = live_slot(t, x->base ? x->base : x);
    return s >= 0 && t->grads[s] != NULL;
}

// A gradient held in bf16 (hy_grad_out_bf16) has one reader, which asks for
// it with hy_grad_bf16; anything else reading or adding to it is a bug.
static void expect_f32_grad(const hy_tensor *g, const hy_tensor *x) {
    HY_CHECK(g->dtype == HY_F32,
             "tape: the gradient of '%s' is held in bf16 (hy_grad_out_bf16); only "
             "hy_grad_bf16() may read it",
             x->name);
}

hy_tensor *hy_grad(hy_tape *t, const hy_tensor *x) {
    const hy_tensor *owner = x->base ? x->base : x;
    int s = live_slot(t, owner);
    if (s < 0 || !t->grads[s]) return NULL;
    expect_f32_grad(t->grads[s], x);
    if (!x->base) return t->grads[s];
    // x is a view: hand back the matching window of its owner's gradient.
    hy_tensor *g = t->grads[s];
    hy_tensor *v = hy_arena_meta(t->scratch);
    *v = *x;
    v->dtype = g->dtype;
    v->device = g->device;
    v->data = (char *)g->data + (size_t)x->offset * hy_dtype_size(g->dtype);
    v->base = NULL;
    v->slot = -1;
    v->requires_grad = 0;
    return v;
}

// x's gradient buffer, made on first use: zeroed, unless `fresh` is given
// and x is all of its owner (covers_owner), in which case *fresh = 1 tells
// the caller to write every element instead of accumulating.
static hy_tensor *grad_buffer(hy_tape *t, hy_tensor *x, int *fresh) {
    if (fresh) *fresh = 0;
    if (!x || x->dtype == HY_I32 || !x->requires_grad) return NULL;
    hy_tensor *owner = owner_of(x);
    int s = live_slot(t, owner);
    if (s < 0) s = new_slot(t, owner);
    if (!t->grads[s]) {
        // Gradients are f32 whatever the owner's storage type.
        hy_tensor *g = hy_tensor_new(t->scratch, HY_F32, owner->ndim, owner->shape, owner->name);
        if (fresh && covers_owner(x))
            *fresh = 1;
        else if (g->device == HY_CUDA)
            hy_cuda_memset(g->data, 0, hy_nbytes(g));
        else
            memset(g->data, 0, hy_nbytes(g));
        t->grads[s] = g;
    }
    return hy_grad(t, x);  // stops on a bf16 gradient
}

void hy_tape_grad_bf16_ok(hy_tape *t, hy_tensor *y) {
    (void)t;
    const char *e = getenv("HYDRA_GRAD_BF16");
    if (y && !y->base && !(e && e[0] == '0')) y->grad_bf16_ok = 1;
}

void *hy_grad_out_bf16(hy_tape *t, hy_tensor *x) {
    if (!x || !x->requires_grad) return NULL;
    hy_tensor *owner = owner_of(x);
    if (!covers_owner(x)) return NULL;  // a window of its owner, not a reshape
    if (!owner->grad_bf16_ok || owner->uses != 1 || owner->device != HY_CUDA) return NULL;
    int s = live_slot(t, owner);
    if (s >= 0 && t->grads[s]) return NULL;  // a gradient already: not the only contribution
    if (s < 0) s = new_slot(t, owner);
    hy_tensor *g = hy_tensor_new(t->scratch, HY_BF16, owner->ndim, owner->shape, owner->name);
    t->grads[s] = g;
    return g->data;
}

const void *hy_grad_bf16(hy_tape *t, const hy_tensor *x) {
    if (x->base) return NULL;
    int s = live_slot(t, x);
    if (s < 0 || !t->grads[s] || t->grads[s]->dtype != HY_BF16) return NULL;
    return t->grads[s]->data;
}

hy_tensor *hy_grad_acc(hy_tape *t, hy_tensor *x) { return grad_buffer(t, x, NULL); }

hy_tensor *hy_grad_out(hy_tape *t, hy_tensor *x, int *fresh) { return grad_buffer(t, x, fresh); }

int hy_grad_adopt(hy_tape *t, hy_tensor *x, hy_tensor *g) {
    if (!x || x->dtype == HY_I32 || !x->requires_grad || x->base) return 0;
    if (g->dtype != HY_F32 || g->device != x->device || hy_numel(g) != hy_numel(x)) return 0;
    int s = live_slot(t, x);
    if (s >= 0 && t->grads[s]) return 0;  // x has a gradient already: accumulate instead
    if (s < 0) s = new_slot(t, x);
    hy_tensor *v = hy_arena_meta(t->scratch);  // g's memory under x's shape and name
    *v = *g;
    v->ndim = x->ndim;
    memcpy(v->shape, x->shape, sizeof v->shape);
    v->base = NULL;
    v->slot = -1;
    v->requires_grad = 0;
    snprintf(v->name, sizeof v->name, "%s", x->name);
    t->grads[s] = v;
    return 1;
}

void hy_tape_mark(hy_tape *t, int id) {
    if (!t || !t->enabled || !t->on_mark) return;
    HY_REQUIRE(!t->backward_done, "mark: the tape already ran backward; reset it first");
    HY_CHECK(t->n_nodes < t->cap_nodes, "tape: more than %d ops in one step", t->cap_nodes);
    hy_node *n = &t->nodes[t->n_nodes++];
    memset(n, 0, sizeof *n);
    n->op = "mark";
    n->is_mark = 1;
    n->mark_id = id;
}

void hy_tape_backward_from(hy_tape *t, int first) {
    for (int i = t->n_nodes - 1; i >= first; i--) {
        hy_node *n = &t->nodes[i];
        if (n->is_mark) {
            if (t->on_mark) t->on_mark(t->mark_ctx, n->mark_id);
            continue;
        }
        int any = 0;
        for (int j = 0; j < n->n_out; j++)
            if (hy_has_grad(t, n->out[j])) any = 1;
        if (any) n->backward(t, n);
    }
}

hy_tape_state hy_tape_save(const hy_tape *t) {
    hy_tape_state st = {t->n_nodes, t->n_slots, hy_arena_mark(t->acts), hy_arena_mark(t->scratch),
                        hy_arena_mark(&t->ctx_host)};
    return st;
}

void hy_tape_restore(hy_tape *t, hy_tape_state st) {
    HY_CHECK(st.n_nodes <= t->n_nodes && st.n_slots <= t->n_slots && st.n_slots >= t->n_bound,
             "tape: restore to a state that is not behind this one");
    for (int s = st.n_slots; s < t->n_slots; s++) t->owners[s] = NULL, t->grads[s] = NULL;
    t->n_slots = st.n_slots;
    t->n_nodes = st.n_nodes;
    hy_arena_reset_to(t->acts, st.acts);
    hy_arena_reset_to(t->scratch, st.scratch);
    hy_arena_reset_to(&t->ctx_host, st.ctx);
}

static void run_backward(hy_tape *t) {
    hy_tape_backward_from(t, 0);
    t->backward_done = 1;
}

// out's gradient = seed (host memory, numel(out) floats), or 1 when seed is NULL.
static void seed_grad(hy_tape *t, hy_tensor *out, const float *seed) {
    HY_REQUIRE(!t->backward_done,
               "backward: called twice on the same forward; run a new forward first");
    HY_REQUIRE(out->dtype == HY_F32, "backward: the loss '%s' must be f32, not %s", out->name,
               hy_dtype_name(out->dtype));
    HY_REQUIRE(out->requires_grad,
               "backward: '%s' %s does not depend on anything that needs a gradient "
               "(was the tape disabled, or no parameter bound?)",
               out->name, hy_shape_str(out));
    hy_tensor *g = hy_grad_acc(t, out);
    if (!seed && g->device == HY_CUDA)  // d loss / d loss = 1 by a kernel: a graph records it
        hy_cuda_fill_f32(1, 1.0f, hy_f32(g), NULL);
    else if (!seed)
        hy_f32(g)[0] = 1.0f;
    else if (g->device == HY_CUDA)
        hy_cuda_memcpy_h2d(g->data, seed, hy_nbytes(g));
    else
        memcpy(g->data, seed, hy_nbytes(g));
}

void hy_tape_backward(hy_tape *t, hy_tensor *loss) {
    HY_REQUIRE(hy_numel(loss) == 1,
               "backward: the loss must be a scalar, but '%s' has shape %s; reduce it first "
               "(for example with hy_mean)",
               loss->name, hy_shape_str(loss));
    seed_grad(t, loss, NULL);  // 1
    run_backward(t);
}

void hy_tape_backward_seed(hy_tape *t, hy_tensor *out, const float *seed) {
    seed_grad(t, out, seed);
    run_backward(t);
}

void hy_tape_reset(hy_tape *t) {
    for (int s = t->n_bound; s < t->n_slots; s++) {
        t->owners[s] = NULL;
        t->grads[s] = NULL;
    }
    t->n_slots = t->n_bound;
    t->n_nodes = 0;
    t->backward_done = 0;
    hy_arena_reset(t->acts);
    hy_arena_reset(t->scratch);
    hy_arena_reset(&t->ctx_host);
}
