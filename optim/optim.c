// optim.c: configuration, state layout, AdamW, and routing of each
// parameter to AdamW or Muon (muon.c).
#include <math.h>
#include <string.h>

#include "../autograd/check.h"
#include "optim_internal.h"

hy_optim_config hy_optim_defaults(void) {
    hy_optim_config c;
    memset(&c, 0, sizeof c);
    c.kind = HY_OPTIM_ADAMW;
    c.lr = 3e-4f;
    c.muon_lr = 0.02f;
    c.beta1 = 0.9f;
    c.beta2 = 0.95f;
    c.eps = 1e-8f;
    c.weight_decay = 0.1f;
    c.muon_momentum = 0.95f;
    c.muon_nesterov = 1;
    c.ns_steps = 5;
    c.muon_weight_decay = 0.0f;
    return c;
}

// `!(x >= lo)` also rejects NaN.
static void require_range(const char *where, const char *key, double x, double lo, double hi,
                          int hi_open) {
    int ok = x >= lo && (hi_open ? x < hi : x <= hi);
    HY_REQUIRE(ok, "%s: optim.%s = %g must be in [%g, %g%s", where ? where : "optim", key, x, lo,
               hi, hi_open ? ")" : "]");
}

void hy_optim_validate(const hy_optim_config *c, const char *where) {
    HY_REQUIRE(c->kind == HY_OPTIM_ADAMW || c->kind == HY_OPTIM_MUON_HYBRID,
               "%s: unknown optimizer kind %d", where ? where : "optim", (int)c->kind);
    require_range(where, "lr", c->lr, 0, INFINITY, 0);
    require_range(where, "muon_lr", c->muon_lr, 0, INFINITY, 0);
    require_range(where, "beta1", c->beta1, 0, 1, 1);
    require_range(where, "beta2", c->beta2, 0, 1, 1);
    require_range(where, "eps", c->eps, 0, INFINITY, 0);
    require_range(where, "weight_decay", c->weight_decay, 0, INFINITY, 0);
    require_range(where, "muon_momentum", c->muon_momentum, 0, 1, 1);
    require_range(where, "ns_steps", c->ns_steps, 0, 100, 0);
    require_range(where, "muon_weight_decay", c->muon_weight_decay, 0, INFINITY, 0);
}

// ---------------------------------------------------------------- state layout
static size_t param_numel(const hy_param *p) {
    size_t n = 1;
    for (int d = 0; d < p->ndim; d++) n *= (size_t)p->shape[d];
    return n;
}

static int muon_group(const hy_optim_config *c, const hy_param *p) {
    return c->kind == HY_OPTIM_MUON_HYBRID && p->group == HY_GROUP_MUON;
}

// Floats of exp_avg_sq that parameter p owns in the packed `v` block; each
// run starts on a 64-byte boundary as in the parameter table.
static size_t v_run(const hy_optim_config *c, const hy_param *p) {
    return muon_group(c, p) ? 0 : (param_numel(p) + 15) / 16 * 16;
}

static size_t v_total(const hy_optim_config *c, const hy_param_table *t) {
    size_t n = 0;
    for (int i = 0; i < t->n; i++) n += v_run(c, &t->p[i]);
    return n;
}

// What hy_arena_alloc() takes for `floats` floats.
static size_t arena_take(size_t floats) {
    size_t b = floats * sizeof(float);
    return ((b ? b : 1) + HY_ALIGN - 1) / HY_ALIGN * HY_ALIGN;
}

size_t hy_optim_state_bytes(const hy_optim_config *c, const hy_param_table *t) {
    return arena_take(t->numel) + arena_take(v_total(c, t));
}

size_t hy_optim_scratch_bytes(const hy_optim_config *c, const hy_param_table *t) {
    size_t most = 0;
    for (int i = 0; i < t->n; i++) {
        if (!muon_group(c, &t->p[i])) continue;
        size_t b = hy_muon_scratch_bytes(&t->p[i]);
        if (b > most) most = b;
    }
    return most;
}

int hy_optim_uses_muon(const hy_optimizer *o, int i) {
    return muon_group(&o->cfg, &o->table->p[i]);
}

void hy_optim_init(hy_optimizer *o, const hy_optim_config *c, hy_param_table *t, hy_arena *state,
                   hy_arena *scratch) {
    hy_optim_validate(c, NULL);
    HY_CHECK(t->values != NULL, "optim: allocate the parameter table before the optimizer");
    HY_REQUIRE(t->device == HY_CPU && state->device == HY_CPU,
               "optim: the CPU optimizer was given a %s table or state arena",
               hy_device_name(t->device == HY_CPU ? state->device : t->device));
    for (int i = 0; i < t->n; i++)
        HY_REQUIRE(!muon_group(c, &t->p[i]) || t->p[i].ndim >= 2,
                   "optim: parameter '%s' has %d dimension(s) but is in the Muon group; "
                   "Muon takes matrices only, route vectors to AdamW",
                   t->p[i].name, t->p[i].ndim);
    size_t need = hy_optim_scratch_bytes(c, t);
    HY_CHECK(need == 0 || (scratch && scratch->device == HY_CPU && scratch->cap >= need),
             "optim: Muon needs a host scratch arena of at least %.3f MiB (have %.3f MiB)",
             need / 1048576.0, scratch ? scratch->cap / 1048576.0 : 0.0);
    memset(o, 0, sizeof *o);
    o->cfg = *c;
    o->table = t;
    o->scratch = scratch;
    o->v_numel = v_total(c, t);
    o->m = (float *)hy_arena_calloc(state, t->numel * sizeof(float));
    o->v = (float *)hy_arena_calloc(state, o->v_numel * sizeof(float));
}

// ---------------------------------------------------------------- AdamW
typedef struct {
    float lr, b1, b2, eps, wd;
    float step_size;  // lr / (1 - b1^t)
    float bc2_sqrt;   // sqrt(1 - b2^t)
} adamw_coefs;

static adamw_coefs adamw_at(const hy_optim_config *c, int64_t t, float lr_mult) {
    adamw_coefs k;
    double lr = (double)c->lr * lr_mult;
    k.lr = (float)lr;
    k.b1 = c->beta1, k.b2 = c->beta2, k.eps = c->eps, k.wd = c->weight_decay;
    k.step_size = (float)(lr / (1.0 - pow(c->beta1, (double)t)));
    k.bc2_sqrt = (float)sqrt(1.0 - pow(c->beta2, (double)t));
    return k;
}

// torch.optim.AdamW, in its order: decay, moments, bias-corrected step
// p -= step_size * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
static void adamw_update(const adamw_coefs *k, float wd_mult, float *p, const float *g, float *m,
                         float *v, size_t n) {
    float decay = 1.0f - k->lr * (k->wd * wd_mult);
    float a1 = 1.0f - k->b1, a2 = 1.0f - k->b2;
#pragma omp parallel for if (n >= ((size_t)1 << 16))
    for (size_t j = 0; j < n; j++) {
        float gj = g[j];
        p[j] *= decay;
        m[j] = k->b1 * m[j] + a1 * gj;
        v[j] = k->b2 * v[j] + a2 * gj * gj;
        float denom = sqrtf(v[j]) / k->bc2_sqrt + k->eps;
        p[j] -= k->step_size * (m[j] / denom);
    }
}

// ---------------------------------------------------------------- step
void hy_optim_step(hy_optimizer *o, float lr_mult) {
    hy_param_table *t = o->table;
    int64_t step = o->step + 1;
    adamw_coefs k = adamw_at(&o->cfg, step, lr_mult);
    float muon_lr = o->cfg.muon_lr * lr_mult;
    size_t voff = 0;
    for (int i = 0; i < t->n; i++) {
        const hy_param *p = &t->p[i];
        float *val = t->values + p->offset, *m = o->m + p->offset;
        const float *g = t->grads + p->offset;
        if (muon_group(&o->cfg, p)) {
            hy_muon_update(&o->cfg, p, val, g, m, muon_lr, o->scratch);
        } else {
            HY_CHECK(voff + param_numel(p) <= o->v_numel,
                     "optim: the table's groups changed after hy_optim_init");
            adamw_update(&k, p->weight_decay, val, g, m, o->v + voff, param_numel(p));
            voff += v_run(&o->cfg, p);
        }
    }
    HY_CHECK(voff == o->v_numel, "optim: the table's groups changed after hy_optim_init");
    o->step = step;
}

// ---------------------------------------------------------------- checkpoint slots
int hy_optim_slots(const hy_optimizer *o, int param, const char **names, float **data) {
    const hy_param_table *t = o->table;
    HY_REQUIRE(param >= 0 && param < t->n, "optim: no parameter %d (table has %d)", param, t->n);
    const hy_param *p = &t->p[param];
    names[0] = muon_group(&o->cfg, p) ? "momentum_buffer" : "exp_avg";
    data[0] = o->m + p->offset;
    if (muon_group(&o->cfg, p)) return 1;
    size_t voff = 0;
    for (int i = 0; i < param; i++) voff += v_run(&o->cfg, &t->p[i]);
    names[1] = "exp_avg_sq";
    data[1] = o->v + voff;
    return 2;
}
