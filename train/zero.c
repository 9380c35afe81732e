// zero.c: balanced ownership of parameters across ranks (see zero.h).
#include "zero.h"

#include <stdlib.h>

#include "../autograd/check.h"

static int64_t numel_of(const hy_param *p) {
    int64_t n = 1;
    for (int d = 0; d < p->ndim; d++) n *= p->shape[d];
    return n;
}

// Places the parameters of one kind (Muon or not), largest first, each on
// the rank with the least load; a parameter adds weight * numel to it.
static void place_kind(const hy_param_table *t, const int *muon, int kind, int64_t weight,
                       int world, int *owner, int64_t *load, int *order) {
    // Numel descending, table order on ties (insertion: stable, and the
    // same order on every rank).
    int n = 0;
    for (int i = 0; i < t->n; i++) {
        if ((muon[i] != 0) != kind) continue;
        int k = n++;
        while (k > 0 && numel_of(&t->p[order[k - 1]]) < numel_of(&t->p[i])) {
            order[k] = order[k - 1];
            k--;
        }
        order[k] = i;
    }
    for (int k = 0; k < n; k++) {
        int best = 0;
        for (int r = 1; r < world; r++)
            if (load[r] < load[best]) best = r;
        owner[order[k]] = best;
        load[best] += weight * numel_of(&t->p[order[k]]);
    }
}

void hy_zero_owners(const hy_param_table *t, const int *muon, int world, int *owner) {
    HY_REQUIRE(world >= 1, "zero: %d ranks", world);
    int64_t *load = (int64_t *)hy_xmalloc((size_t)world * sizeof *load);
    int *order = (int *)hy_xmalloc((size_t)(t->n ? t->n : 1) * sizeof *order);
    for (int r = 0; r < world; r++) load[r] = 0;
    place_kind(t, muon, 1, 1, world, owner, load, order);  // Newton-Schulz work ~ elements
    place_kind(t, muon, 0, 2, world, owner, load, order);  // + AdamW's m and v: state floats

    free(load);
    free(order);
}
