// The multi-GPU launcher on the CPU: the supervisor against fake ranks
// (forked children that exit, fail, get killed or ignore SIGTERM), ranks
// from the environment (hydra-train --gpus, srun, mpirun) and their errors,
// the NCCL id's file, and hydra-train --gpus where it cannot run. The
// training runs on two GPUs are tests/scripts/multigpu_train.sh (label
// multigpu).
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../cuda/hy_cuda.h"
#include "../train/launch.h"
#include "../train/trainer.h"
#include "harness.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// ---------------------------------------------------------------- fake ranks
typedef enum {
    EXIT_AFTER,     // sleep `ms`, then exit with `code`
    IGNORE_TERM,    // ignore SIGTERM and sleep 60 s (needs SIGKILL)
    KILL_SELF,      // sleep `ms`, then raise SIGKILL
} fake_kind;

static pid_t fake_rank(fake_kind kind, int ms, int code) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    HY_ASSERT(pid >= 0, "fork");
    if (pid != 0) return pid;
    signal(SIGTERM, kind == IGNORE_TERM ? SIG_IGN : SIG_DFL);
    if (kind == IGNORE_TERM) ms = 60000;
    usleep((useconds_t)ms * 1000);
    if (kind == KILL_SELF) raise(SIGKILL);
    _exit(code);
}

HY_TEST(train_launch_supervise_ok, "cpu") {
    char why[256];
    pid_t p[3] = {fake_rank(EXIT_AFTER, 50, 0), fake_rank(EXIT_AFTER, 150, 0),
                  fake_rank(EXIT_AFTER, 10, 0)};
    HY_ASSERT(hy_launch_supervise(p, 3, 1.0, why, sizeof why) == 0, "all exit 0: status 0");
    HY_ASSERT(why[0] == 0, "no failure to report: '%s'", why);
    // Stopped on request (130, after saving) is not a failure.
    pid_t q[2] = {fake_rank(EXIT_AFTER, 20, 130), fake_rank(EXIT_AFTER, 60, 130)};
    HY_ASSERT(hy_launch_supervise(q, 2, 1.0, why, sizeof why) == 130, "all 130: status 130");
}

HY_TEST(train_launch_supervise_failure, "cpu") {
    // Rank 1 fails while rank 0 trains on (ends on SIGTERM) and rank 2
    // ignores SIGTERM (ends on SIGKILL after the grace period).
    char why[256];
    double grace = 1.0, t0 = now_s();
    pid_t p[3] = {fake_rank(EXIT_AFTER, 60000, 0), fake_rank(EXIT_AFTER, 200, 3),
                  fake_rank(IGNORE_TERM, 0, 0)};
    int rc = hy_launch_supervise(p, 3, grace, why, sizeof why);
    double dt = now_s() - t0;
    printf("  status %d after %.2f s: %s\n", rc, dt, why);
    HY_ASSERT(rc == 1, "a failed rank: status %d, expected 1", rc);
    HY_ASSERT(strstr(why, "rank 1 ") && strstr(why, "exited with status 3"), "why: %s", why);
    HY_ASSERT(dt >= grace && dt < grace + 3.0, "the job ended %.2f s after start (grace %.1f s)", dt,
              grace);
    // Every child is reaped: none is left to wait for.
    for (int i = 0; i < 3; i++)
        HY_ASSERT(waitpid(p[i], NULL, WNOHANG) < 0, "rank %d not reaped", i);
}

HY_TEST(train_launch_supervise_killed, "cpu") {
    char why[256];
    pid_t p[2] = {fake_rank(KILL_SELF, 100, 0), fake_rank(EXIT_AFTER, 60000, 0)};
    double t0 = now_s();
    int rc = hy_launch_supervise(p, 2, 5.0, why, sizeof why);
    printf("  status %d after %.2f s: %s\n", rc, now_s() - t0, why);
    HY_ASSERT(rc == 1, "a killed rank: status %d, expected 1", rc);
    HY_ASSERT(strstr(why, "rank 0 ") && strstr(why, "killed by signal 9"), "why: %s", why);
    HY_ASSERT(now_s() - t0 < 3.0, "rank 1 ended on SIGTERM, well before the grace period");
    // A usage error (exit 2, the same bad input on every rank) stays a usage error.
    pid_t q[2] = {fake_rank(EXIT_AFTER, 60000, 0), fake_rank(EXIT_AFTER, 50, 2)};
    HY_ASSERT(hy_launch_supervise(q, 2, 5.0, why, sizeof why) == 2, "exit 2: status 2");
}

// ---------------------------------------------------------------- ranks from the environment
static void clear_env(void) {
    static const char *vars[] = {"HYDRA_RANK", "HYDRA_WORLD", "HYDRA_LOCAL_RANK", "HYDRA_NCCL_ID",
                                 "HYDRA_JOB_ID", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                                 "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_MCA_ess_base_jobid",
                                 "PMIX_NAMESPACE", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID",
                                 "SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_STEPID", "NCCL_COMM_ID"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) unsetenv(vars[i]);
}

static void slurm(const char *rank, const char *world, const char *local) {
    setenv("SLURM_PROCID", rank, 1);
    setenv("SLURM_NTASKS", world, 1);
    setenv("SLURM_LOCALID", local, 1);
    setenv("SLURM_JOB_ID", "4242", 1);
    setenv("SLURM_STEP_ID", "0", 1);
}

HY_TEST(train_launch_env, "cpu") {
    hy_launch_plan p;
    clear_env();
    hy_launch_decide(&p, 0, NULL);
    HY_ASSERT(p.mode == HY_LAUNCH_SINGLE && p.rank == 0 && p.world == 1, "plain: one process");
    hy_launch_decide(&p, 4, NULL);
    HY_ASSERT(p.mode == HY_LAUNCH_PARENT && p.gpus == 4, "--gpus 4: the launcher");
    hy_launch_decide(&p, 1, NULL);
    HY_ASSERT(p.mode == HY_LAUNCH_SINGLE, "--gpus 1: one process");

    // A rank started by --gpus.
    setenv("HYDRA_RANK", "2", 1);
    setenv("HYDRA_WORLD", "4", 1);
    setenv("HYDRA_LOCAL_RANK", "2", 1);
    setenv("HYDRA_NCCL_ID", "00", 1);
    hy_launch_decide(&p, 0, NULL);
    HY_ASSERT(p.mode == HY_LAUNCH_RANK && p.rank == 2 && p.world == 4 && p.local_rank == 2,
              "HYDRA_RANK: rank %d of %d, local %d", p.rank, p.world, p.local_rank);
    HY_ASSERT(!strcmp(p.source, "hydra-train --gpus"), "source %s", p.source);
    HY_EXPECT_ERROR(hy_launch_decide(&p, 2, NULL), HY_EXIT_USAGE, "already rank 2 of 4");
    clear_env();

    // srun: ranks from Slurm, the id through --nccl-init.
    slurm("5", "8", "1");
    hy_launch_decide(&p, 0, "file:/shared/id");
    HY_ASSERT(p.mode == HY_LAUNCH_RANK && p.rank == 5 && p.world == 8 && p.local_rank == 1,
              "srun: rank %d of %d, local %d", p.rank, p.world, p.local_rank);
    HY_ASSERT(!strcmp(p.source, "srun") && strstr(p.token, "4242"), "srun: %s / %s", p.source,
              p.token);
    HY_EXPECT_ERROR(hy_launch_decide(&p, 0, NULL), HY_EXIT_USAGE, "--nccl-init file:PATH");
    HY_EXPECT_ERROR(hy_launch_decide(&p, 4, "file:/shared/id"), HY_EXIT_USAGE, "drop --gpus");
    HY_EXPECT_ERROR(hy_launch_decide(&p, 0, "/shared/id"), HY_EXIT_USAGE, "expected file:PATH");
    setenv("NCCL_COMM_ID", "node1:29500", 1);  // NCCL's own rendezvous: no option needed
    hy_launch_decide(&p, 0, NULL);
    HY_ASSERT(p.mode == HY_LAUNCH_RANK && p.rank == 5, "srun with NCCL_COMM_ID");
    // A batch script's environment (no job step): one process, which may launch.
    clear_env();
    slurm("0", "4", "0");
    unsetenv("SLURM_STEP_ID");
    hy_launch_decide(&p, 0, NULL);
    HY_ASSERT(p.mode == HY_LAUNCH_SINGLE, "sbatch script: one process");
    hy_launch_decide(&p, 4, NULL);
    HY_ASSERT(p.mode == HY_LAUNCH_PARENT, "sbatch script with --gpus 4: the launcher");
    // One task is a world of one.
    clear_env();
    slurm("0", "1", "0");
    hy_launch_decide(&p, 0, "file:/shared/id");
    HY_ASSERT(p.mode == HY_LAUNCH_SINGLE, "srun -n 1: one process");

    // mpirun: Open MPI's variables win over Slurm's.
    clear_env();
    slurm("0", "2", "0");
    setenv("OMPI_COMM_WORLD_RANK", "3", 1);
    setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "3", 1);
    hy_launch_decide(&p, 0, "file:/shared/id");
    HY_ASSERT(p.mode == HY_LAUNCH_RANK && p.rank == 3 && p.world == 4 && !strcmp(p.source, "mpirun"),
              "mpirun: rank %d of %d (%s)", p.rank, p.world, p.source);
    unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
    HY_EXPECT_ERROR(hy_launch_decide(&p, 0, "file:/shared/id"), HY_EXIT_USAGE,
                    "OMPI_COMM_WORLD_LOCAL_RANK");
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "x", 1);
    HY_EXPECT_ERROR(hy_launch_decide(&p, 0, "file:/shared/id"), HY_EXIT_USAGE,
                    "OMPI_COMM_WORLD_LOCAL_RANK = 'x'");
    clear_env();
    HY_EXPECT_ERROR(hy_launch_decide(&p, 0, "file:/shared/id"), HY_EXIT_USAGE, "no ranks");
}

HY_TEST(train_launch_id_file, "cpu") {
    unsigned char id[HY_DIST_ID_BYTES], back[HY_DIST_ID_BYTES];
    for (int i = 0; i < HY_DIST_ID_BYTES; i++) id[i] = (unsigned char)(i * 37 + 11);
    char hex[2 * HY_DIST_ID_BYTES + 1];
    hy_launch_id_to_hex(id, hex);
    HY_ASSERT(strlen(hex) == 2 * HY_DIST_ID_BYTES, "hex length");
    HY_ASSERT(hy_launch_id_from_hex(hex, back) && !memcmp(id, back, sizeof id), "hex round trip");
    HY_ASSERT(!hy_launch_id_from_hex("abc", back), "short hex refused");
    hex[7] = 'z';
    HY_ASSERT(!hy_launch_id_from_hex(hex, back), "bad digit refused");

    char dir[] = "/tmp/hydra-launch-test-XXXXXX", path[128];
    HY_ASSERT(mkdtemp(dir) != NULL, "mkdtemp");
    snprintf(path, sizeof path, "%s/nccl-id", dir);
    HY_ASSERT(!hy_launch_id_read(path, "job 1", back), "no file yet");
    hy_launch_id_write(path, "job 1", id);
    memset(back, 0, sizeof back);
    HY_ASSERT(hy_launch_id_read(path, "job 1", back) && !memcmp(id, back, sizeof id), "read back");
    HY_ASSERT(!hy_launch_id_read(path, "job 2", back), "a stale file of another job is ignored");
    // A torn file (no whole id line) is not read.
    FILE *f = fopen(path, "w");
    fputs("hydra-nccl-id 1\njob 1\n0123", f);
    fclose(f);
    HY_ASSERT(!hy_launch_id_read(path, "job 1", back), "torn file ignored");
    // Only the file itself is left: the temporary was renamed over it.
    char cmd[200];
    snprintf(cmd, sizeof cmd, "test $(ls -A '%s' | wc -l) = 1 && rm -rf '%s'", dir, dir);
    HY_ASSERT(system(cmd) == 0, "no temporary left behind");
}

// ---------------------------------------------------------------- hydra-train --gpus
static int run_train(char **argv) {
    int argc = 0;
    while (argv[argc]) argc++;
    fflush(stdout);
    return hy_train_main(argc, argv);
}

HY_TEST(train_gpus_usage_errors, "cpu") {
    clear_env();
    char cfg[] = HY_SOURCE_DIR "/configs/mqar.ini";
    char *cpu[] = {"hydra-train", cfg, "--gpus", "2", "--set", "train.device=cpu", NULL};
    HY_EXPECT_ERROR(run_train(cpu), HY_EXIT_USAGE, "train.device = cpu");
    char *zero[] = {"hydra-train", cfg, "--gpus", "0", NULL};
    HY_EXPECT_ERROR(run_train(zero), HY_EXIT_USAGE, "--gpus '0'");
    char *both[] = {"hydra-train", cfg, "--gpus", "2", "--nccl-init", "file:/tmp/x", NULL};
    slurm("0", "2", "0");
    HY_EXPECT_ERROR(run_train(both), HY_EXIT_USAGE, "drop --gpus");
    clear_env();
    // Without two GPUs (or without CUDA or NCCL in this build) --gpus 2 is
    // one clear error naming what is missing.
    int gpus = hy_cuda_device_count();
    if (gpus >= 2) {
        printf("  (this machine has %d GPUs: the no-GPU error is not exercised)\n", gpus);
        return;
    }
    char *two[] = {"hydra-train", cfg, "--gpus", "2", NULL};
    HY_EXPECT_ERROR(run_train(two), HY_EXIT_USAGE, "--gpus 2");
}
