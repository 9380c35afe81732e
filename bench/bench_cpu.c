// bench_cpu.c: hydra-bench cpu: one training step (forward with loss, backward) of a small
// model on the CPU reference path.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "../autograd/check.h"
#include "../autograd/rng.h"
#include "../autograd/tape.h"
#include "../layers/model.h"
#include "bench_common.h"
#include "bench_report.h"

static int cpu_int_arg(const char *flag, const char *v) {
    char *end;
    long x = strtol(v, &end, 10);
    HY_REQUIRE(*v && !*end && x > 0, "hydra-bench: %s expects a positive integer, got '%s'", flag, v);
    return (int)x;
}

int bench_cpu(int argc, char **argv) {
    hy_model_config c = hy_config_default();
    c.d_model = 256, c.n_layers = 8, c.n_heads = 4, c.vocab_size = 256;
    int B = 8, T = 512, steps = 5;
    const char *json = NULL;
    hy_arch arch = HY_ARCH_HYDRA;
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        HY_REQUIRE(i + 1 < argc, "hydra-bench cpu: %s needs a value", f);
        const char *v = argv[++i];
        if (!strcmp(f, "--d-model")) c.d_model = cpu_int_arg(f, v);
        else if (!strcmp(f, "--layers")) c.n_layers = cpu_int_arg(f, v);
        else if (!strcmp(f, "--heads")) c.n_heads = cpu_int_arg(f, v);
        else if (!strcmp(f, "--batch")) B = cpu_int_arg(f, v);
        else if (!strcmp(f, "--seq")) T = cpu_int_arg(f, v);
        else if (!strcmp(f, "--vocab")) c.vocab_size = cpu_int_arg(f, v);
        else if (!strcmp(f, "--steps")) steps = cpu_int_arg(f, v);
        else if (!strcmp(f, "--json")) json = v;
        else if (!strcmp(f, "--threads")) {
#ifdef _OPENMP
            omp_set_num_threads(cpu_int_arg(f, v));
#endif
        } else if (!strcmp(f, "--arch")) {
            HY_REQUIRE(!strcmp(v, "hydra") || !strcmp(v, "dense"),
                       "hydra-bench cpu: --arch expects hydra or dense, got '%s'", v);
            arch = strcmp(v, "dense") ? HY_ARCH_HYDRA : HY_ARCH_DENSE;
        } else {
            bench_usage(stderr, "cpu");
            hy_die(HY_EXIT_USAGE, "hydra-bench cpu: unknown option '%s'", f);
        }
    }
    hy_config_finalize(&c, "hydra-bench");
    bench_header("cpu", 0, json);
    hy_model m;
    hy_model_build(&m, arch, &c);
    // Activations: a generous bound per layer and token (the ops' outputs
    // and saved contexts), planned once, reported at the end.
    size_t per_tok = (size_t)(40 * c.d_model + 4 * c.mlp_hidden) * sizeof(float) * c.n_layers +
                     (size_t)3 * c.vocab_size * sizeof(float);
    size_t acts_bytes = per_tok * B * T + ((size_t)64 << 20);
    hy_arena params, grads, acts, scratch, data;
    hy_arena_init(&params, "params", HY_CPU, hy_params_bytes(&m.params));
    hy_arena_init(&grads, "grads", HY_CPU, hy_params_bytes(&m.params));
    hy_arena_init(&acts, "acts", HY_CPU, acts_bytes);
    hy_arena_init(&scratch, "scratch", HY_CPU, acts_bytes);
    hy_arena_init(&data, "data", HY_CPU, (size_t)B * T * 8 + 4096);
    hy_params_alloc(&m.params, &params, &grads);
    hy_model_init_weights(&m, 1);
    hy_tape tape;
    hy_tape_init(&tape, &acts, &scratch, 1 << 14, 1 << 15);
    hy_params_bind(&m.params, &tape);
    hy_tensor *ids = hy_new2(&data, HY_I32, B, T, "ids"), *tgt = hy_new2(&data, HY_I32, B, T, "tgt");
    hy_rng r;
    hy_rng_seed(&r, 7);
    for (int i = 0; i < B * T; i++) {
        hy_i32(ids)[i] = (int32_t)hy_rng_below(&r, c.vocab_size);
        hy_i32(tgt)[i] = (int32_t)hy_rng_below(&r, c.vocab_size);
    }
    char sched[1024];
    printf("%s: d_model %d, %d layers (%s), %d heads x %d, vocab %d, %lld parameters\n",
           arch == HY_ARCH_DENSE ? "dense" : "HydraLM", c.d_model, c.n_layers,
           arch == HY_ARCH_DENSE ? "attention" : hy_config_schedule(&c, sched, sizeof sched),
           c.n_heads, c.head_dim, c.vocab_size, (long long)hy_model_param_count(&m));
    double *ms = (double *)calloc((size_t)steps, sizeof(double));
    float loss_v = 0;
    for (int s = -1; s < steps; s++) {
        hy_tape_reset(&tape);
        hy_params_zero_grads(&m.params);
        double t0 = bench_now();
        hy_tensor *loss;
        hy_model_forward(&m, &tape, ids, tgt, -100, &loss);
        hy_tape_backward(&tape, loss);
        double dt = (bench_now() - t0) * 1e3;
        loss_v = hy_f32(loss)[0];
        if (s >= 0) ms[s] = dt;
    }
    qsort(ms, (size_t)steps, sizeof(double), bench_cmp_double);
    double med = ms[steps / 2];
    printf("memory plan:\n");
    hy_arena *all[4] = {&params, &grads, &acts, &scratch};
    for (int i = 0; i < 4; i++) hy_arena_report(all[i], stdout);
    static char ms_head[64];
    snprintf(ms_head, sizeof ms_head, "fwd+bwd ms (median of %d)", steps);
    const column cols[] = {{"arch", "arch", "%s"}, {"B", "B", "%.0f"}, {"T", "T", "%.0f"},
                           {"ms", ms_head, "%.1f"}, {"tokens_per_s", "tokens/s", "%.0f"},
                           {"loss", "loss", "%.4f"}};
    table *t = table_new("cpu", "", cols, 6);
    int row = table_row(t);
    set_str(t, row, 0, "%s", arch == HY_ARCH_DENSE ? "dense" : "hydra");
    set_num(t, row, 1, B);
    set_num(t, row, 2, T);
    set_num(t, row, 3, med);
    set_num(t, row, 4, B * T / (med * 1e-3));
    set_num(t, row, 5, loss_v);
    free(ms);
    hy_tape_free(&tape);
    hy_model_destroy(&m);
    return report_finish(0);
}
