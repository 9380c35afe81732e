// ZeRO-1 ownership (train/zero.c): every parameter owned by exactly one
// rank, the Muon work and the optimizer state each balanced within the
// greedy bound, the same table on every call.
#include <stdio.h>
#include <string.h>

#include "../train/zero.h"
#include "harness.h"

static const hy_init ZEROS = {HY_INIT_ZEROS, 0.0f};

// The 115M model's shapes: per layer the Muon matrices of a GDN (or SWA)
// block and its vectors, then the embedding and final norm (AdamW).
static int build_115m(hy_param_table *t, int *muon) {
    hy_params_create(t, 256);
    int n = 0;
    char name[64];
    for (int l = 0; l < 12; l++) {
        int gdn = l % 4 != 3;
        int64_t mats[5][2] = {{2304, 768}, {768, 768}, {768, 768}, {4096, 768}, {768, 2048}};
        for (int k = 0; k < 5; k++) {
            if (k == 2 && !gdn) continue;
            snprintf(name, sizeof name, "blocks.%d.w%d", l, k);
            hy_params_add(t, name, 2, mats[k], ZEROS, HY_GROUP_MUON, 1.0f);
            muon[n++] = 1;
        }
        int64_t vecs[3] = {768, 768, gdn ? 48 : 1};
        for (int k = 0; k < 3; k++) {
            snprintf(name, sizeof name, "blocks.%d.v%d", l, k);
            hy_params_add(t, name, 1, &vecs[k], ZEROS, HY_GROUP_ADAMW, 0.0f);
            muon[n++] = 0;
        }
    }
    int64_t emb[2] = {32000, 768}, nf = 768;
    hy_params_add(t, "embed.weight", 2, emb, ZEROS, HY_GROUP_ADAMW, 1.0f);
    muon[n++] = 0;
    hy_params_add(t, "norm_f.weight", 1, &nf, ZEROS, HY_GROUP_ADAMW, 0.0f);
    muon[n++] = 0;
    return n;
}

static int64_t numel(const hy_param *p) {
    int64_t x = 1;
    for (int d = 0; d < p->ndim; d++) x *= p->shape[d];
    return x;
}

HY_TEST(zero_owners_balanced, "cpu") {
    hy_param_table t;
    int muon[256], owner[256], again[256];
    int n = build_115m(&t, muon);
    HY_ASSERT(n == t.n, "%d parameters declared, table has %d", n, t.n);
    int worlds[] = {1, 2, 3, 4, 8};
    for (int w = 0; w < 5; w++) {
        int world = worlds[w];
        memset(owner, 0xff, sizeof owner);
        hy_zero_owners(&t, muon, world, owner);
        hy_zero_owners(&t, muon, world, again);
        HY_ASSERT(memcmp(owner, again, (size_t)n * sizeof *owner) == 0,
                  "world %d: two calls give different owners", world);
        // Muon elements per rank (the Newton-Schulz work) and optimizer
        // state per rank (1 float per Muon element, 2 per AdamW element).
        int64_t work[8] = {0}, state[8] = {0}, big_muon = 0, big_adamw = 0;
        int mats[8] = {0};
        for (int i = 0; i < n; i++) {
            HY_ASSERT(owner[i] >= 0 && owner[i] < world, "world %d: '%s' owned by rank %d",
                      world, t.p[i].name, owner[i]);
            int64_t e = numel(&t.p[i]);
            if (muon[i]) {
                work[owner[i]] += e;
                state[owner[i]] += e;
                mats[owner[i]]++;
                if (e > big_muon) big_muon = e;
            } else {
                state[owner[i]] += 2 * e;
                if (e > big_adamw) big_adamw = e;
            }
        }
        int64_t wlo = work[0], whi = work[0], slo = state[0], shi = state[0];
        for (int r = 1; r < world; r++) {
            if (work[r] < wlo) wlo = work[r];
            if (work[r] > whi) whi = work[r];
            if (state[r] < slo) slo = state[r];
            if (state[r] > shi) shi = state[r];
        }
        for (int r = 0; r < world; r++)
            HY_ASSERT(mats[r] > 0, "world %d: rank %d owns no Muon matrix", world, r);
        HY_ASSERT(whi - wlo <= big_muon, "world %d: Muon elements per rank from %lld to %lld, more "
                  "apart than the largest matrix (%lld)", world, (long long)wlo, (long long)whi,
                  (long long)big_muon);
        int64_t bound = big_muon > 2 * big_adamw ? big_muon : 2 * big_adamw;
        HY_ASSERT(shi - slo <= bound, "world %d: optimizer state per rank from %lld to %lld "
                  "floats, more apart than one parameter's (%lld)", world, (long long)slo,
                  (long long)shi, (long long)bound);
        if (world == 2)
            printf("world 2: Muon elements %lld and %lld, state floats %lld and %lld\n",
                   (long long)work[0], (long long)work[1], (long long)state[0], (long long)state[1]);
    }
    // One rank owns everything.
    hy_zero_owners(&t, muon, 1, owner);
    for (int i = 0; i < n; i++) HY_ASSERT(owner[i] == 0, "world 1: '%s' on rank %d", t.p[i].name, owner[i]);
    hy_params_destroy(&t);
}
