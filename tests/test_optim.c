// Optimizers and schedules on the CPU: Newton-Schulz and one hybrid
// Muon x AdamW step against the PyTorch reference's float64 golden values,
// AdamW against a float64 transcription of its formula, exact state
// save/restore through the checkpoint slots, lr schedules, gradient
// clipping, and a least-squares sanity run.
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../layers/model.h"
#include "../optim/clip.h"
#include "../optim/optim.h"
#include "../optim/schedule.h"
#include "harness.h"
#include "util_golden.h"

// A small parameter table with its own arenas.
typedef struct {
    hy_param_table t;
    hy_arena vals, grads, state, scratch;
} tab;

static int tab_add(tab *s, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2,
                   hy_opt_group g, float wd) {
    int64_t shape[3] = {d0, d1, d2};
    hy_init none = {HY_INIT_CUSTOM, 0};
    return hy_params_add(&s->t, name, ndim, shape, none, g, wd);
}

// Values and gradients drawn N(0, 1) after the parameters are declared.
static void tab_alloc(tab *s, uint64_t seed) {
    size_t b = hy_params_bytes(&s->t) + 4096;
    hy_arena_init(&s->vals, "params", HY_CPU, b);
    hy_arena_init(&s->grads, "grads", HY_CPU, b);
    hy_arena_init(&s->state, "optim", HY_CPU, 0);
    hy_arena_init(&s->scratch, "scratch", HY_CPU, 0);
    hy_params_alloc(&s->t, &s->vals, &s->grads);
    hy_rng r;
    hy_rng_seed(&r, seed);
    for (int i = 0; i < s->t.n; i++) {
        hy_fill_normal(s->t.p[i].value, &r, 0.0f, 1.0f);
        hy_fill_normal(s->t.p[i].grad, &r, 0.0f, 1.0f);
    }
}

// Arenas planned from the optimizer's own size functions.
static void tab_optim(tab *s, hy_optimizer *o, const hy_optim_config *c) {
    hy_arena_free(&s->state);
    hy_arena_free(&s->scratch);
    hy_arena_init(&s->state, "optim", HY_CPU, hy_optim_state_bytes(c, &s->t));
    hy_arena_init(&s->scratch, "scratch", HY_CPU, hy_optim_scratch_bytes(c, &s->t));
    hy_optim_init(o, c, &s->t, &s->state, &s->scratch);
}

static void tab_free(tab *s) {
    hy_params_destroy(&s->t);
    hy_arena_free(&s->vals);
    hy_arena_free(&s->grads);
    hy_arena_free(&s->state);
    hy_arena_free(&s->scratch);
}

static void fill_grads(tab *s, hy_rng *r, float scale) {
    for (int i = 0; i < s->t.n; i++) hy_fill_normal(s->t.p[i].grad, r, 0.0f, scale);
}

// ---------------------------------------------------------------- Newton-Schulz
static double ns_case(const char *file, const char *gname, const char *oname, hy_arena *scratch) {
    hy_golden G = hy_golden_read(file, gname), O = hy_golden_read(file, oname);
    HY_ASSERT(G.ndim == 2 && O.numel == G.numel, "%s / %s shapes", gname, oname);
    if (G.ndim != 2 || O.numel != G.numel) return 1.0;
    int rows = (int)G.shape[0], cols = (int)G.shape[1];
    float *g = (float *)malloc((size_t)G.numel * 4), *o = (float *)malloc((size_t)G.numel * 4);
    for (int64_t i = 0; i < G.numel; i++) g[i] = (float)G.data[i];
    hy_newton_schulz(g, o, rows, cols, 5, scratch);
    HY_ASSERT(scratch->used == 0, "newton_schulz left %zu bytes of scratch in use", scratch->used);
    double e = hy_max_rel_err(o, O.data, (long)O.numel);
    // In place (O == G) must give the same bits: muon.c relies on it.
    hy_newton_schulz(g, g, rows, cols, 5, scratch);
    HY_ASSERT(memcmp(g, o, (size_t)G.numel * 4) == 0, "%s: in-place result differs", gname);
    printf("  %s (%d x %d): rel err %.2e\n", gname, rows, cols, e);
    free(g);
    free(o);
    hy_golden_free(&G);
    hy_golden_free(&O);
    return e;
}

HY_TEST(optim_newton_schulz_golden, "cpu") {
    const char *file = hy_golden_path();
    hy_arena scratch;
    hy_arena_init(&scratch, "scratch", HY_CPU, hy_newton_schulz_scratch_bytes(24, 40));
    double ew = ns_case(file, "/muon/G_wide", "/muon/O_wide", &scratch);
    double et = ns_case(file, "/muon/G_tall", "/muon/O_tall", &scratch);
    HY_ASSERT(ew <= 1e-5, "wide Newton-Schulz relative error %.3e", ew);
    HY_ASSERT(et <= 1e-5, "tall Newton-Schulz relative error %.3e", et);
    hy_arena_free(&scratch);
}

// ---------------------------------------------------------------- golden hybrid step
// String attribute `name` of the object at `obj` (util_golden.c's reader
// sees root attributes only).
static char *golden_obj_attr(const char *file, const char *obj, const char *name) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return NULL;
    char *out = NULL;
    hid_t a = H5Aopen_by_name(f, obj, name, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0) {
        char *s = NULL;
        hid_t ty = H5Aget_type(a), mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(ty));  // HDF5 will not convert UTF-8 to ASCII
        if (H5Aread(a, mt, &s) >= 0 && s) {
            out = strdup(s);
            H5free_memory(s);
        }
        H5Tclose(mt);
        H5Tclose(ty);
        H5Aclose(a);
    }
    H5Fclose(f);
    return out;
}

// 1 when `name` is one of the comma-separated entries of `list`.
static int list_has(const char *list, const char *name) {
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0) return 1;
        p = end ? end + 1 : NULL;
    }
    return 0;
}

static int list_count(const char *list) {
    int n = *list ? 1 : 0;
    for (const char *p = list; *p; p++) n += *p == ',';
    return n;
}


// Copy /<group>/<name> into `dst` for every parameter (values or gradients).
static void load_golden(const hy_param_table *t, const char *file, const char *group, int grads) {
    for (int i = 0; i < t->n; i++) {
        const hy_param *p = &t->p[i];
        hy_tensor *x = grads ? p->grad : p->value;
        char path[256];
        snprintf(path, sizeof path, "/%s/%s", group, p->name);
        hy_golden g = hy_golden_read(file, path);
        HY_ASSERT(g.numel == hy_numel(x), "%s: %lld elements in golden, %lld here", path,
                  (long long)g.numel, (long long)hy_numel(x));
        for (int64_t j = 0; j < g.numel && j < hy_numel(x); j++) hy_f32(x)[j] = (float)g.data[j];
        hy_golden_free(&g);
    }
}

// Routing and weight decay as the golden step used them: the listed
// parameters go to Muon; the other matrices get AdamW weight decay, vectors none.
static void golden_routing(hy_param_table *t, const char *muon_list) {
    int found = 0;
    for (int i = 0; i < t->n; i++) {
        hy_param *p = &t->p[i];
        int muon = list_has(muon_list, p->name);
        found += muon;
        p->group = muon ? HY_GROUP_MUON : HY_GROUP_ADAMW;
        p->weight_decay = muon ? 1.0f : (p->ndim >= 2 ? 1.0f : 0.0f);  // muon_weight_decay is 0
    }
    HY_ASSERT(found == list_count(muon_list), "%d of %d Muon parameters found in the table",
              found, list_count(muon_list));
}

HY_TEST(optim_golden_hybrid_step, "cpu") {
    const char *file = hy_golden_path();
    hy_model_config mc = hy_golden_config();
    hy_model m;
    hy_model_build(&m, HY_ARCH_HYDRA, &mc);
    tab s;
    memset(&s, 0, sizeof s);
    s.t = m.params;  // the table now belongs to `s` (tab_free destroys it)
    tab_alloc(&s, 1);
    load_golden(&s.t, file, "params", 0);
    load_golden(&s.t, file, "grads", 1);
    char *muon_list = golden_obj_attr(file, "/optim_step", "muon_params");
    HY_ASSERT(muon_list != NULL, "attribute /optim_step muon_params missing");
    if (!muon_list) return;
    golden_routing(&s.t, muon_list);

    hy_optim_config c = hy_optim_defaults();
    c.kind = HY_OPTIM_MUON_HYBRID;
    c.muon_lr = 0.02f, c.lr = 1e-3f, c.beta1 = 0.9f, c.beta2 = 0.95f, c.eps = 1e-8f;
    c.weight_decay = 0.1f, c.muon_weight_decay = 0.0f;
    hy_optimizer o;
    tab_optim(&s, &o, &c);
    hy_optim_step(&o, 1.0f);
    HY_ASSERT(o.step == 1, "step count %lld", (long long)o.step);

    double worst = 0, worst_upd[2] = {0, 0};
    const char *worst_name = "";
    for (int i = 0; i < s.t.n; i++) {
        hy_param *p = &s.t.p[i];
        int muon = hy_optim_uses_muon(&o, i);
        char path[256];
        snprintf(path, sizeof path, "/optim_step/params_after/%s", p->name);
        hy_golden g = hy_golden_read(file, path);
        snprintf(path, sizeof path, "/params/%s", p->name);
        hy_golden g0 = hy_golden_read(file, path);
        long n = (long)hy_numel(p->value);
        if (g.numel != n || g0.numel != n) continue;  // reported by hy_golden_read / load_golden
        double e = hy_max_rel_err(hy_f32(p->value), g.data, n);
        if (e > worst) worst = e, worst_name = p->name;
        HY_ASSERT(e <= 1e-5, "%s (%s) after one step: relative error %.3e", p->name,
                  muon ? "muon" : "adamw", e);
        // The update alone (after - before), a far stricter view, printed only:
        // an AdamW step moves a norm weight near 1 by ~1e-3, so storing the
        // parameter in fp32 (ulp 6e-8 at 1) already costs ~1e-4 of the update.
        double dd = 0, ds = 0;
        for (long j = 0; j < n; j++) {
            double want = g.data[j] - g0.data[j], got = (double)hy_f32(p->value)[j] - g0.data[j];
            dd = fmax(dd, fabs(got - want));
            ds = fmax(ds, fabs(want));
        }
        worst_upd[muon] = fmax(worst_upd[muon], dd / (ds > 0 ? ds : 1));
        hy_golden_free(&g);
        hy_golden_free(&g0);
    }
    printf("  %d parameters (%d Muon); worst rel err %.2e (%s)\n", s.t.n, list_count(muon_list),
           worst, worst_name);
    printf("  update (after - before) alone: worst rel err AdamW %.2e, Muon %.2e\n",
           worst_upd[0], worst_upd[1]);
    free(muon_list);
    tab_free(&s);
}

// ---------------------------------------------------------------- AdamW formula
typedef struct {
    double *p, *m, *v;
} ref_state;

// torch.optim.AdamW in float64, one parameter.
static void adamw_ref(ref_state *r, const float *g, long n, double lr, double wd, int64_t t,
                      const hy_optim_config *c) {
    double b1 = c->beta1, b2 = c->beta2;
    double bc1 = 1 - pow(b1, (double)t), bc2 = 1 - pow(b2, (double)t);
    for (long j = 0; j < n; j++) {
        r->p[j] *= 1 - lr * wd;
        r->m[j] = b1 * r->m[j] + (1 - b1) * g[j];
        r->v[j] = b2 * r->v[j] + (1 - b2) * (double)g[j] * g[j];
        r->p[j] -= lr * (r->m[j] / bc1) / (sqrt(r->v[j] / bc2) + c->eps);
    }
}

HY_TEST(optim_adamw_matches_formula, "cpu") {
    tab s;
    memset(&s, 0, sizeof s);
    hy_params_create(&s.t, 4);
    tab_add(&s, "bias", 1, 5, 0, 0, HY_GROUP_ADAMW, 0.0f);
    tab_add(&s, "matrix", 2, 4, 3, 0, HY_GROUP_MUON, 1.0f);  // kind ADAMW ignores the group
    tab_add(&s, "conv", 3, 2, 1, 3, HY_GROUP_ADAMW, 1.0f);
    tab_alloc(&s, 7);
    hy_optim_config c = hy_optim_defaults();
    c.lr = 1e-2f;
    c.weight_decay = 0.1f;
    hy_optimizer o;
    tab_optim(&s, &o, &c);

    ref_state ref[3];
    for (int i = 0; i < 3; i++) {
        long n = (long)hy_numel(s.t.p[i].value);
        ref[i].p = (double *)calloc(n, 8), ref[i].m = (double *)calloc(n, 8);
        ref[i].v = (double *)calloc(n, 8);
        for (long j = 0; j < n; j++) ref[i].p[j] = hy_f32(s.t.p[i].value)[j];
    }
    const float mults[5] = {1.0f, 0.5f, 0.25f, 1.0f, 0.8f};
    hy_rng r;
    hy_rng_seed(&r, 8);
    double worst = 0;
    for (int step = 0; step < 5; step++) {
        fill_grads(&s, &r, step == 3 ? 1e-6f : 1.0f);  // one step where eps matters
        hy_optim_step(&o, mults[step]);
        for (int i = 0; i < 3; i++) {
            hy_param *p = &s.t.p[i];
            long n = (long)hy_numel(p->value);
            adamw_ref(&ref[i], hy_f32(p->grad), n, (double)c.lr * mults[step],
                      c.weight_decay * p->weight_decay, step + 1, &c);
            const char *names[HY_OPTIM_MAX_SLOTS];
            float *data[HY_OPTIM_MAX_SLOTS];
            HY_ASSERT(hy_optim_slots(&o, i, names, data) == 2, "AdamW has two slots");
            HY_ASSERT(!strcmp(names[0], "exp_avg") && !strcmp(names[1], "exp_avg_sq"),
                      "AdamW slot names");
            double e[3] = {hy_max_rel_err(hy_f32(p->value), ref[i].p, n),
                           hy_max_rel_err(data[0], ref[i].m, n),
                           hy_max_rel_err(data[1], ref[i].v, n)};
            for (int k = 0; k < 3; k++) {
                HY_ASSERT(e[k] <= 1e-5, "step %d, %s, %s: relative error %.3e", step, p->name,
                          k == 0 ? "value" : names[k - 1], e[k]);
                if (e[k] > worst) worst = e[k];
            }
        }
    }
    printf("  5 steps, 3 parameters: worst rel err (values, exp_avg, exp_avg_sq) %.2e\n", worst);
    for (int i = 0; i < 3; i++) free(ref[i].p), free(ref[i].m), free(ref[i].v);
    tab_free(&s);
}

// ---------------------------------------------------------------- save / restore
// Three steps, then the state (values, slots, step count) is copied out;
// two more steps from the copy in a fresh optimizer must give the same bits.
HY_TEST(optim_state_restore_exact, "cpu") {
    tab s;
    memset(&s, 0, sizeof s);
    hy_params_create(&s.t, 4);
    tab_add(&s, "w", 2, 6, 10, 0, HY_GROUP_MUON, 1.0f);
    tab_add(&s, "b", 1, 6, 0, 0, HY_GROUP_ADAMW, 0.0f);
    tab_add(&s, "conv", 3, 9, 1, 3, HY_GROUP_MUON, 1.0f);
    tab_add(&s, "emb", 2, 7, 4, 0, HY_GROUP_ADAMW, 1.0f);
    tab_alloc(&s, 3);
    hy_optim_config c = hy_optim_defaults();
    c.kind = HY_OPTIM_MUON_HYBRID;
    c.muon_weight_decay = 0.01f;
    hy_optimizer o;
    tab_optim(&s, &o, &c);
    hy_rng r;
    hy_rng_seed(&r, 4);
    for (int k = 0; k < 3; k++) fill_grads(&s, &r, 1.0f), hy_optim_step(&o, 1.0f);

    size_t bytes = s.t.numel * sizeof(float);
    float *vals = (float *)malloc(bytes), *slots[4][HY_OPTIM_MAX_SLOTS];
    memcpy(vals, s.t.values, bytes);
    int nslots[4];
    for (int i = 0; i < 4; i++) {
        const char *names[HY_OPTIM_MAX_SLOTS];
        float *data[HY_OPTIM_MAX_SLOTS];
        nslots[i] = hy_optim_slots(&o, i, names, data);
        HY_ASSERT(nslots[i] == (hy_optim_uses_muon(&o, i) ? 1 : 2), "%s: %d slots", s.t.p[i].name,
                  nslots[i]);
        if (nslots[i] == 1)
            HY_ASSERT(!strcmp(names[0], "momentum_buffer"), "Muon slot name %s", names[0]);
        for (int k = 0; k < nslots[i]; k++) {
            slots[i][k] = (float *)malloc(hy_numel(s.t.p[i].value) * 4);
            memcpy(slots[i][k], data[k], hy_numel(s.t.p[i].value) * 4);
        }
    }
    int64_t step = o.step;
    hy_rng_seed(&r, 5);
    for (int k = 0; k < 2; k++) fill_grads(&s, &r, 1.0f), hy_optim_step(&o, 0.7f);
    float *after = (float *)malloc(bytes);
    memcpy(after, s.t.values, bytes);

    hy_optimizer o2;
    tab_optim(&s, &o2, &c);  // fresh, zeroed state in a new arena
    memcpy(s.t.values, vals, bytes);
    for (int i = 0; i < 4; i++) {
        const char *names[HY_OPTIM_MAX_SLOTS];
        float *data[HY_OPTIM_MAX_SLOTS];
        hy_optim_slots(&o2, i, names, data);
        for (int k = 0; k < nslots[i]; k++) {
            memcpy(data[k], slots[i][k], hy_numel(s.t.p[i].value) * 4);
            free(slots[i][k]);
        }
    }
    o2.step = step;
    hy_rng_seed(&r, 5);
    for (int k = 0; k < 2; k++) fill_grads(&s, &r, 1.0f), hy_optim_step(&o2, 0.7f);
    HY_ASSERT(memcmp(after, s.t.values, bytes) == 0, "resumed optimizer differs");
    free(vals);
    free(after);
    tab_free(&s);
}

// ---------------------------------------------------------------- schedules
static void expect_mult(const hy_schedule *s, int64_t step, double want) {
    char what[64];
    snprintf(what, sizeof what, "%s step %lld", hy_sched_name(s->kind), (long long)step);
    HY_ASSERT_CLOSE(hy_lr_mult(s, step), want, 1e-6, what);
}

HY_TEST(optim_schedule, "cpu") {
    hy_schedule k = {HY_SCHED_CONSTANT, 10, 0, 0, 0.0f};
    hy_schedule_validate(&k, "test");
    expect_mult(&k, 0, 0.1);
    expect_mult(&k, 4, 0.5);
    expect_mult(&k, 9, 1.0);
    expect_mult(&k, 1000, 1.0);

    hy_schedule cs = {HY_SCHED_COSINE, 10, 110, 0, 0.1f};
    hy_schedule_validate(&cs, "test");
    expect_mult(&cs, 0, 0.1);
    expect_mult(&cs, 9, 1.0);
    expect_mult(&cs, 10, 1.0);
    expect_mult(&cs, 35, 0.1 + 0.9 * 0.5 * (1 + cos(M_PI / 4)));
    expect_mult(&cs, 60, 0.55);
    expect_mult(&cs, 110, 0.1);
    expect_mult(&cs, 500, 0.1);
    hy_schedule c0 = {HY_SCHED_COSINE, 0, 100, 0, 0.0f};
    expect_mult(&c0, 0, 1.0);
    expect_mult(&c0, 50, 0.5);
    expect_mult(&c0, 99, 0.5 * (1 + cos(M_PI * 0.99)));

    hy_schedule w = {HY_SCHED_WSD, 10, 110, 20, 0.0f};
    hy_schedule_validate(&w, "test");
    expect_mult(&w, 4, 0.5);
    expect_mult(&w, 10, 1.0);
    expect_mult(&w, 89, 1.0);
    expect_mult(&w, 90, 1.0);
    expect_mult(&w, 100, 0.5);
    expect_mult(&w, 105, 0.25);
    expect_mult(&w, 109, 0.05);
    expect_mult(&w, 110, 0.0);
    expect_mult(&w, 111, 0.0);
    w.min_ratio = 0.2f;
    expect_mult(&w, 100, 0.6);

    HY_ASSERT(hy_sched_parse("wsd") == HY_SCHED_WSD && hy_sched_parse("linear") == -1, "parse");
    hy_schedule bad = {HY_SCHED_WSD, 10, 110, 101, 0.0f};
    HY_EXPECT_ERROR(hy_schedule_validate(&bad, "x.ini"), HY_EXIT_USAGE, "decay = 101");
    bad = (hy_schedule){HY_SCHED_COSINE, 100, 100, 0, 0.0f};
    HY_EXPECT_ERROR(hy_schedule_validate(&bad, "x.ini"), HY_EXIT_USAGE, "must exceed warmup");
    bad = (hy_schedule){HY_SCHED_COSINE, 0, 100, 0, 1.5f};
    HY_EXPECT_ERROR(hy_schedule_validate(&bad, "x.ini"), HY_EXIT_USAGE, "min_ratio");
}

// ---------------------------------------------------------------- clipping
static double direct_norm(const tab *s) {
    double ss = 0;
    for (int i = 0; i < s->t.n; i++)
        for (int64_t j = 0; j < hy_numel(s->t.p[i].grad); j++)
            ss += (double)hy_f32(s->t.p[i].grad)[j] * hy_f32(s->t.p[i].grad)[j];
    return sqrt(ss);
}

HY_TEST(optim_clip, "cpu") {
    tab s;
    memset(&s, 0, sizeof s);
    hy_params_create(&s.t, 3);
    tab_add(&s, "a", 2, 7, 5, 0, HY_GROUP_ADAMW, 1.0f);
    tab_add(&s, "b", 1, 3, 0, 0, HY_GROUP_ADAMW, 0.0f);
    tab_add(&s, "c", 3, 2, 1, 5, HY_GROUP_ADAMW, 1.0f);
    tab_alloc(&s, 11);
    // Padding between parameters in the flat buffer must never count.
    s.t.grads[s.t.p[0].offset + 35] = 1e3f;
    double want = direct_norm(&s);
    HY_ASSERT_CLOSE(hy_grad_norm(&s.t), want, 1e-6, "grad norm");
    HY_ASSERT(hy_grads_finite(&s.t), "finite gradients reported non-finite");

    size_t bytes = s.t.numel * sizeof(float);
    float *before = (float *)malloc(bytes);
    memcpy(before, s.t.grads, bytes);
    HY_ASSERT_CLOSE(hy_clip_grad_norm(&s.t, (float)(2 * want)), want, 1e-6, "norm, no clipping");
    HY_ASSERT(memcmp(before, s.t.grads, bytes) == 0, "gradients changed below max_norm");
    hy_clip_grad_norm(&s.t, 0.0f);
    HY_ASSERT(memcmp(before, s.t.grads, bytes) == 0, "max_norm 0 must not clip");

    float ret = hy_clip_grad_norm(&s.t, (float)(want / 4));
    HY_ASSERT_CLOSE(ret, want, 1e-6, "clip returns the norm before clipping");
    HY_ASSERT_CLOSE(direct_norm(&s), want / 4, 1e-6, "norm after clipping");
    for (int i = 0; i < s.t.n; i++)
        for (int64_t j = 0; j < hy_numel(s.t.p[i].grad); j++) {
            size_t k = s.t.p[i].offset + j;
            HY_ASSERT(fabs(s.t.grads[k] - before[k] / 4) <= 1e-6 * fabs(before[k]),
                      "%s[%lld] not scaled by max_norm / norm", s.t.p[i].name, (long long)j);
        }

    memcpy(s.t.grads, before, bytes);
    s.t.grads[s.t.p[2].offset + 3] = NAN;
    HY_ASSERT(!hy_grads_finite(&s.t), "NaN not detected");
    HY_ASSERT(isnan(hy_clip_grad_norm(&s.t, 1.0f)), "NaN norm expected");
    HY_ASSERT(s.t.grads[s.t.p[0].offset] == before[s.t.p[0].offset], "a NaN norm must not scale");
    s.t.grads[s.t.p[2].offset + 3] = -INFINITY;
    HY_ASSERT(!hy_grads_finite(&s.t), "-inf not detected");
    HY_ASSERT(isinf(hy_grad_norm(&s.t)), "infinite norm expected");
    free(before);
    tab_free(&s);
}

// ---------------------------------------------------------------- sanity
// Least squares Y = X W*^T + b*: W (8, 16) on Muon, b (8) on AdamW.
typedef struct {
    int N, I, O;
    float *X, *Y;  // (N, I), (N, O)
} lsq;

static double lsq_loss_grad(const lsq *q, tab *s) {
    const float *W = hy_f32(s->t.p[0].value), *b = hy_f32(s->t.p[1].value);
    float *dW = hy_f32(s->t.p[0].grad), *db = hy_f32(s->t.p[1].grad);
    memset(dW, 0, (size_t)q->O * q->I * 4);
    memset(db, 0, (size_t)q->O * 4);
    double loss = 0;
    for (int n = 0; n < q->N; n++)
        for (int o = 0; o < q->O; o++) {
            double y = b[o];
            for (int i = 0; i < q->I; i++) y += (double)W[o * q->I + i] * q->X[n * q->I + i];
            double r = y - q->Y[n * q->O + o];
            loss += 0.5 * r * r / q->N;
            db[o] += (float)(r / q->N);
            for (int i = 0; i < q->I; i++)
                dW[o * q->I + i] += (float)(r * q->X[n * q->I + i] / q->N);
        }
    return loss;
}

HY_TEST(optim_muon_lowers_loss, "cpu") {
    tab s;
    memset(&s, 0, sizeof s);
    hy_params_create(&s.t, 2);
    tab_add(&s, "w", 2, 8, 16, 0, HY_GROUP_MUON, 1.0f);
    tab_add(&s, "b", 1, 8, 0, 0, HY_GROUP_ADAMW, 0.0f);
    tab_alloc(&s, 21);
    lsq q = {64, 16, 8, NULL, NULL};
    q.X = (float *)malloc((size_t)q.N * q.I * 4), q.Y = (float *)malloc((size_t)q.N * q.O * 4);
    hy_rng r;
    hy_rng_seed(&r, 22);
    float Ws[8 * 16], bs[8];
    for (int i = 0; i < 8 * 16; i++) Ws[i] = 0.5f * hy_rng_normal(&r);
    for (int i = 0; i < 8; i++) bs[i] = hy_rng_normal(&r);
    for (int i = 0; i < q.N * q.I; i++) q.X[i] = hy_rng_normal(&r);
    for (int n = 0; n < q.N; n++)
        for (int o = 0; o < q.O; o++) {
            float y = bs[o];
            for (int i = 0; i < q.I; i++) y += Ws[o * q.I + i] * q.X[n * q.I + i];
            q.Y[n * q.O + o] = y;
        }
    hy_fill_const(s.t.p[0].value, 0.0f);
    hy_fill_const(s.t.p[1].value, 0.0f);
    hy_optim_config c = hy_optim_defaults();
    c.kind = HY_OPTIM_MUON_HYBRID;
    c.muon_lr = 0.05f, c.lr = 0.05f, c.weight_decay = 0.0f;
    hy_optimizer o;
    tab_optim(&s, &o, &c);
    double first = lsq_loss_grad(&q, &s), loss = first;
    for (int k = 0; k < 40; k++) {
        hy_optim_step(&o, 1.0f);
        loss = lsq_loss_grad(&q, &s);
    }
    printf("  least squares: loss %.4f -> %.4f after 40 hybrid steps\n", first, loss);
    HY_ASSERT(isfinite(loss) && loss < 0.1 * first, "loss %.4f -> %.4f", first, loss);
    free(q.X);
    free(q.Y);
    tab_free(&s);
}

// ---------------------------------------------------------------- misuse
HY_TEST(optim_errors, "cpu") {
    tab s;
    memset(&s, 0, sizeof s);
    hy_params_create(&s.t, 2);
    tab_add(&s, "w", 2, 4, 4, 0, HY_GROUP_MUON, 1.0f);
    tab_add(&s, "norm.weight", 1, 4, 0, 0, HY_GROUP_MUON, 0.0f);
    tab_alloc(&s, 1);
    hy_optim_config c = hy_optim_defaults();
    c.kind = HY_OPTIM_MUON_HYBRID;
    hy_optimizer o;
    HY_EXPECT_ERROR(tab_optim(&s, &o, &c), HY_EXIT_USAGE, "'norm.weight' has 1 dimension(s)");
    c.kind = HY_OPTIM_ADAMW;  // every parameter on AdamW: fine
    tab_optim(&s, &o, &c);
    hy_optim_step(&o, 1.0f);
    c.beta2 = 1.0f;
    HY_EXPECT_ERROR(hy_optim_validate(&c, "x.ini"), HY_EXIT_USAGE, "optim.beta2 = 1");
    c = hy_optim_defaults();
    c.lr = NAN;
    HY_EXPECT_ERROR(hy_optim_validate(&c, "x.ini"), HY_EXIT_USAGE, "optim.lr");
    tab_free(&s);
}
