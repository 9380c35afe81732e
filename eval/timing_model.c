// timing_model.c: the timing claims' model (see timing_model.h).
#include "timing_model.h"

#include <stdio.h>

#include "eval_model.h"

hy_model_config hy_timing_config(hy_device dev) {
    return hy_eval_small_config(256, dev == HY_CUDA ? 128 : 64, 2, 2, 64);
}

const char *hy_timing_config_text(const hy_model_config *c) {
    static char buf[1300];
    char sched[1100];
    snprintf(buf, sizeof buf, "vocab %d, d_model %d, %d layers (HydraLM: %s; dense: all full "
             "attention), %d heads x %d, SWA window %d, DeltaNet chunk %d, MLP hidden %d",
             c->vocab_size, c->d_model, c->n_layers, hy_config_schedule(c, sched, sizeof sched),
             c->n_heads, c->head_dim, c->swa_window, c->dn_chunk_size, c->mlp_hidden);
    return buf;
}
