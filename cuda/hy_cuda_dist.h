// hy_cuda_dist.h: NCCL collectives for data-parallel training, in plain C.
//
// One communicator per process (one process per GPU). Every collective runs
// after the work queued so far on a CUDA stream (NULL: the default stream of
// the library's kernels) and is then waited for by polling the stream and the communicator's
// asynchronous error, never by a blocking call: a rank whose peer has died,
// hangs or reports an NCCL error stops within HYDRA_NCCL_TIMEOUT seconds
// (default 300) with one message naming itself ("rank 1 of 4: ..."), aborts
// the communicator and exits with status 1. The communicator is created
// non-blocking, so a peer that never joins cannot hang the start either.
//
// cuda/dist.cu implements this with NCCL; cuda/nodist.c stands in when the
// build has no CUDA or no NCCL (hy_dist_built() is 0 and every entry point
// that would talk to other ranks is a clear usage error).
#ifndef HY_CUDA_DIST_H
#define HY_CUDA_DIST_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// NCCL_UNIQUE_ID_BYTES: the opaque id every rank passes to hy_dist_init.
#define HY_DIST_ID_BYTES 128

// 1 when this binary was built with NCCL.
int hy_dist_built(void);
// A fresh id (ncclGetUniqueId). Without NCCL_COMM_ID it also starts NCCL's
// bootstrap root in this process, which must stay alive until every rank has
// joined (hydra-train --gpus: the supervising parent; srun/mpirun: rank 0).
// With NCCL_COMM_ID=host:port NCCL derives the id from that address, so
// every rank can call this itself and rank 0 hosts the root.
void hy_dist_unique_id(unsigned char id[HY_DIST_ID_BYTES]);
// Selects `device` and joins the communicator of `world` ranks as `rank`.
void hy_dist_init(int rank, int world, const unsigned char id[HY_DIST_ID_BYTES], int device);
// This process's place: 0 and 1 before hy_dist_init (or after destroy), when
// the collectives below are identities (a world of one).
int hy_dist_rank(void);
int hy_dist_world(void);
// Seconds a collective may take before the rank gives up: HYDRA_NCCL_TIMEOUT
// (a positive number), default 300. Also used for the start-up rendezvous.
double hy_dist_timeout_s(void);

// In place, on the device: buf[i] = mean over ranks of buf[i]; waits for it.
void hy_dist_allreduce_mean_f32(float *buf, size_t n, void *stream);
// One tensor of a flat buffer and the rank that owns it (ZeRO-1: the rank
// that keeps its optimizer state and updates it).
typedef struct {
    size_t offset, numel;  // floats
    int owner;
} hy_dist_piece;
// Each piece's mean over the ranks, into its owner's buf (ncclReduce with
// ncclAvg, in groups); the other ranks' copies of it are left as they were.
// With every piece owned by some rank this moves what a reduce-scatter does.
void hy_dist_reduce_mean_to_owners(float *buf, const hy_dist_piece *p, int n, void *stream);
// The same, queued (after `stream`'s work so far) without waiting: the
// caller goes on queueing work that must not touch these pieces until
// hy_dist_wait() has returned.
void hy_dist_reduce_mean_to_owners_start(float *buf, const hy_dist_piece *p, int n, void *stream);
// Waits for every collective started so far.
void hy_dist_wait(void);
// Each piece from its owner to every rank (ncclBroadcast, in groups): the
// all-gather of ZeRO-1's updated parameters.
void hy_dist_broadcast_from_owners(float *buf, const hy_dist_piece *p, int n, void *stream);
// Host scalars (at most 64): x[i] = sum over ranks of x[i]; blocks until done.
// For the logged loss, token and accuracy counts, and flags all ranks agree on.
void hy_dist_allreduce_sum_f64(double *x, int n);
void hy_dist_allreduce_sum_f32(float *x, int n);
// Returns when every rank has called it (or stops the rank on timeout).
void hy_dist_barrier(void);
// Tears the communicator down at once (error paths); safe to call twice.
void hy_dist_abort(void);
// Orderly end: flushes outstanding work and frees the communicator.
void hy_dist_destroy(void);

#ifdef __cplusplus
}
#endif

#endif
