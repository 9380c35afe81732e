// nodist.c: hy_cuda_dist.h for builds without CUDA or without NCCL.
//
// One process is the whole world: hy_dist_rank() is 0, hy_dist_world() 1.
// Anything that would talk to another rank is a clear usage error naming
// what is missing, never a silent single-process fallback.
#include <math.h>
#include <stdlib.h>

#include "../autograd/check.h"
#include "hy_cuda_dist.h"

static void no_nccl(const char *what) {
    hy_die(HY_EXIT_USAGE,
           "%s: this build has no NCCL, so it cannot train on several GPUs (multi-GPU needs the "
           "CUDA backend and NCCL: install libnccl-dev or put NCCL in CMAKE_PREFIX_PATH, then "
           "re-run cmake with -DHYDRA_CUDA=ON -DHYDRA_NCCL=ON; `hydra-info` shows what a build has)",
           what);
}

int hy_dist_built(void) { return 0; }
int hy_dist_rank(void) { return 0; }
int hy_dist_world(void) { return 1; }

double hy_dist_timeout_s(void) {
    const char *s = getenv("HYDRA_NCCL_TIMEOUT");
    if (!s || !*s) return 300.0;
    char *end;
    double t = strtod(s, &end);
    if (*end || !(t > 0) || !isfinite(t))
        hy_die(HY_EXIT_USAGE, "HYDRA_NCCL_TIMEOUT = '%s': expected a positive number of seconds", s);
    return t;
}

void hy_dist_unique_id(unsigned char id[HY_DIST_ID_BYTES]) {
    (void)id;
    no_nccl("making an NCCL id");
}

void hy_dist_init(int rank, int world, const unsigned char id[HY_DIST_ID_BYTES], int device) {
    (void)id;
    (void)device;
    if (world == 1 && rank == 0) return;  // a world of one needs no NCCL
    no_nccl("joining a multi-GPU job");
}

void hy_dist_allreduce_mean_f32(float *buf, size_t n, void *stream) {
    (void)buf;
    (void)n;
    (void)stream;
}

// A world of one owns every piece: the mean is the piece itself.
void hy_dist_reduce_mean_to_owners(float *buf, const hy_dist_piece *p, int n, void *stream) {
    (void)buf;
    (void)p;
    (void)n;
    (void)stream;
}

void hy_dist_reduce_mean_to_owners_start(float *buf, const hy_dist_piece *p, int n,
                                         void *stream) {
    (void)buf;
    (void)p;
    (void)n;
    (void)stream;
}

void hy_dist_wait(void) {}

void hy_dist_broadcast_from_owners(float *buf, const hy_dist_piece *p, int n, void *stream) {
    (void)buf;
    (void)p;
    (void)n;
    (void)stream;
}

void hy_dist_allreduce_sum_f64(double *x, int n) {
    (void)x;
    (void)n;
}

void hy_dist_allreduce_sum_f32(float *x, int n) {
    (void)x;
    (void)n;
}

void hy_dist_barrier(void) {}
void hy_dist_abort(void) {}
void hy_dist_destroy(void) {}
