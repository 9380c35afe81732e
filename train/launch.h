// launch.h: how a hydra-train process takes its place in a multi-GPU job.
//
// One process per GPU, three ways to start them:
//   * `hydra-train CONFIG --gpus N` on one host: the process makes the NCCL
//     id, forks and execs N copies of itself with HYDRA_RANK, HYDRA_WORLD,
//     HYDRA_LOCAL_RANK and HYDRA_NCCL_ID (the id, hex) in their environment,
//     and supervises them (hy_launch_supervise);
//   * Slurm (`srun hydra-train CONFIG --nccl-init file:PATH`): ranks from
//     SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID;
//   * Open MPI (`mpirun ... --nccl-init file:PATH`): ranks from
//     OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK.
// (HYDRA_RANK, HYDRA_WORLD and HYDRA_LOCAL_RANK set by any other launcher
// work the same way.) Under srun or mpirun the id travels through a file on
// a filesystem every node sees: rank 0 makes it and writes it atomically
// (temporary file, then rename), the others poll for it; rank 0 removes it
// once every rank has joined. Alternatively NCCL_COMM_ID=host:port lets NCCL
// itself rendezvous at that address (rank 0 listens there): then no
// --nccl-init is needed. Each rank uses GPU `local_rank`, or the only GPU
// it sees (srun --gpus-per-task=1).
#ifndef HY_TRAIN_LAUNCH_H
#define HY_TRAIN_LAUNCH_H

#include <stddef.h>
#include <sys/types.h>

#include "../cuda/hy_cuda_dist.h"

typedef enum {
    HY_LAUNCH_SINGLE = 0,  // one process, no NCCL
    HY_LAUNCH_PARENT,      // --gpus N: start N ranks here and supervise them
    HY_LAUNCH_RANK,        // one rank of a job of world > 1
} hy_launch_mode;

typedef struct {
    hy_launch_mode mode;
    int rank, world, local_rank;  // 0, 1, 0 unless mode is HY_LAUNCH_RANK
    int gpus;                     // HY_LAUNCH_PARENT: ranks to start
    char source[48];              // who gave the ranks: "hydra-train --gpus", "srun", "mpirun", ...
    char token[192];              // names this job in the id file ("" when unknown)
} hy_launch_plan;

// Decides from the environment, `gpus` (the --gpus value, 0 when absent) and
// `nccl_init` (the --nccl-init value or NULL) how this process runs.
// Contradictions (--gpus inside srun with --nccl-init, --nccl-init without
// ranks in the environment, a bad --nccl-init, srun/mpirun with several
// tasks but no way to share the id) are usage errors (exit 2).
void hy_launch_decide(hy_launch_plan *p, int gpus, const char *nccl_init);

// The NCCL id of this rank's job (mode HY_LAUNCH_RANK): HYDRA_NCCL_ID when
// set; else the file of `nccl_init` (rank 0 makes the id and writes the file,
// the others wait for it, up to hy_dist_timeout_s()); else, with
// NCCL_COMM_ID set, NCCL's id for that address.
void hy_launch_fetch_id(const hy_launch_plan *p, const char *nccl_init,
                        unsigned char id[HY_DIST_ID_BYTES]);
// Once every rank has joined the communicator: rank 0 removes the id file.
void hy_launch_joined(const hy_launch_plan *p, const char *nccl_init);

// hydra-train --gpus N: makes the id, starts N copies of this executable
// (/proc/self/exe) with argv minus "--gpus N" and the rank variables, and
// supervises them. Returns the job's exit status (see hy_launch_supervise).
int hy_launch_local(int gpus, int argc, char **argv);

// Waits for the processes pids[0..n) (rank i is pids[i]). When one exits
// with a status other than 0 or 130 (130: stopped on request after saving)
// or is killed by a signal, it says so on stderr at once, sends SIGTERM to
// the others and SIGKILL to those still alive grace_s seconds later, and
// reaps them all. SIGINT or SIGTERM received meanwhile is passed on to the
// ranks as SIGTERM (a second one: SIGKILL). Returns 0 when every rank exited
// 0; 130 when all exited 0 or 130; otherwise 2 when the first failure was a
// usage error (exit status 2: every rank meets the same bad input) and 1 for
// any other failure, with "rank R (pid P) exited with status S" or "... was
// killed by signal N (NAME)" in why (why_n bytes).
int hy_launch_supervise(const pid_t *pids, int n, double grace_s, char *why, size_t why_n);

// The id as 2 * HY_DIST_ID_BYTES lower-case hex digits (+ NUL), and back
// (returns 0 on a malformed string).
void hy_launch_id_to_hex(const unsigned char id[HY_DIST_ID_BYTES], char hex[2 * HY_DIST_ID_BYTES + 1]);
int hy_launch_id_from_hex(const char *hex, unsigned char id[HY_DIST_ID_BYTES]);
// The id file: "hydra-nccl-id 1\n<token>\n<hex>\n", written atomically.
// Reading returns 1 when the file exists, is whole and carries `token`
// (a stale file of another job is ignored), else 0.
void hy_launch_id_write(const char *path, const char *token, const unsigned char id[HY_DIST_ID_BYTES]);
int hy_launch_id_read(const char *path, const char *token, unsigned char id[HY_DIST_ID_BYTES]);

#endif
