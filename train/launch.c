// launch.c: ranks from the environment, the NCCL id's journey, and the
// --gpus launcher and its supervisor (see launch.h).
#include "launch.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../autograd/check.h"

extern char **environ;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// ---------------------------------------------------------------- ranks from the environment
// The integer in environment variable `name`, or `fallback` when unset; a
// value that is not a non-negative integer is a usage error naming it.
static int env_int(const char *name, int fallback) {
    const char *s = getenv(name);
    if (!s || !*s) return fallback;
    char *end;
    long v = strtol(s, &end, 10);
    HY_REQUIRE(!*end && v >= 0 && v < (1 << 24), "%s = '%s': expected a non-negative integer", name, s);
    return (int)v;
}

static const char *env_or(const char *name, const char *fallback) {
    const char *s = getenv(name);
    return s && *s ? s : fallback;
}

// Ranks from HYDRA_*, then Open MPI's, then Slurm's variables (mpirun under
// Slurm sets both; Open MPI's are then the true ones). Returns 0 when none
// are set.
static int env_ranks(hy_launch_plan *p) {
    struct {
        const char *rank, *world, *local, *source;
    } kinds[3] = {
        {"HYDRA_RANK", "HYDRA_WORLD", "HYDRA_LOCAL_RANK", "HYDRA_RANK"},
        {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "mpirun"},
        {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "srun"},
    };
    for (int k = 0; k < 3; k++) {
        if (!getenv(kinds[k].rank)) continue;
        p->rank = env_int(kinds[k].rank, 0);
        p->world = env_int(kinds[k].world, -1);
        HY_REQUIRE(p->world >= 1, "%s is set but %s is not (expected the number of ranks)",
                   kinds[k].rank, kinds[k].world);
        p->local_rank = env_int(kinds[k].local, p->world == 1 ? 0 : -1);
        HY_REQUIRE(p->local_rank >= 0, "%s is set but %s is not (expected this host's rank, the GPU "
                   "to use)", kinds[k].rank, kinds[k].local);
        HY_REQUIRE(p->rank < p->world, "%s = %d but %s = %d (expected a rank below the world size)",
                   kinds[k].rank, p->rank, kinds[k].world, p->world);
        snprintf(p->source, sizeof p->source, "%s", kinds[k].source);
        if (k == 0 && getenv("HYDRA_NCCL_ID"))
            snprintf(p->source, sizeof p->source, "hydra-train --gpus");
        // What names this job in the id file, so that a stale file of an
        // earlier job is never read.
        if (k == 1)
            snprintf(p->token, sizeof p->token, "mpirun %s world %d",
                     env_or("OMPI_MCA_ess_base_jobid", env_or("PMIX_NAMESPACE", "?")), p->world);
        else if (k == 2)
            snprintf(p->token, sizeof p->token, "slurm job %s step %s world %d",
                     env_or("SLURM_JOB_ID", "?"), env_or("SLURM_STEP_ID", env_or("SLURM_STEPID", "?")),
                     p->world);
        else
            snprintf(p->token, sizeof p->token, "hydra %s world %d", env_or("HYDRA_JOB_ID", "?"),
                     p->world);
        return 1;
    }
    return 0;
}

static const char *init_path(const char *nccl_init) {
    HY_REQUIRE(!strncmp(nccl_init, "file:", 5) && nccl_init[5],
               "--nccl-init '%s': expected file:PATH, a path on a filesystem every rank sees "
               "(NCCL_COMM_ID=host:port needs no option)", nccl_init);
    return nccl_init + 5;
}

void hy_launch_decide(hy_launch_plan *p, int gpus, const char *nccl_init) {
    memset(p, 0, sizeof *p);
    p->world = 1;
    snprintf(p->source, sizeof p->source, "single process");
    HY_REQUIRE(gpus >= 0, "--gpus %d: expected the number of GPUs (>= 1)", gpus);
    if (nccl_init) init_path(nccl_init);
    hy_launch_plan e;
    memset(&e, 0, sizeof e);
    int ranked = env_ranks(&e);
    if (getenv("HYDRA_RANK")) {
        // A rank of a job already launched (by --gpus or by hand).
        HY_REQUIRE(!gpus, "--gpus %d: this process is already rank %d of %d (HYDRA_RANK is set); "
                   "--gpus starts ranks itself", gpus, e.rank, e.world);
    } else if (gpus && !nccl_init) {
        if (gpus == 1) return;
        p->mode = HY_LAUNCH_PARENT;
        p->gpus = gpus;
        snprintf(p->source, sizeof p->source, "hydra-train --gpus");
        return;
    } else if (nccl_init) {
        HY_REQUIRE(!gpus, "--gpus %d with --nccl-init: under srun or mpirun the ranks come from the "
                   "launcher (one task per GPU); drop --gpus", gpus);
        HY_REQUIRE(ranked, "--nccl-init %s: no ranks in the environment: run under srun or mpirun, "
                   "or set HYDRA_RANK, HYDRA_WORLD and HYDRA_LOCAL_RANK", nccl_init);
    } else if (ranked && e.world > 1) {
        // Several tasks of srun or mpirun but no way to share the id: each
        // task would train alone into the same run directory.
        // (Slurm's variables without a job step, SLURM_STEP_ID, are a batch
        // script's own environment: one process, which may use --gpus.)
        int srun_step = getenv("SLURM_STEP_ID") || getenv("SLURM_STEPID");
        if (!getenv("NCCL_COMM_ID")) {
            if (!strcmp(e.source, "mpirun") || srun_step)
                hy_die(HY_EXIT_USAGE,
                       "this process is rank %d of %d (%s) but has no way to meet the others: pass "
                       "--nccl-init file:PATH (a path every node sees) or set NCCL_COMM_ID=host:port",
                       e.rank, e.world, e.source);
            return;
        }
    } else {
        return;
    }
    if (e.world == 1) return;  // a world of one needs no NCCL
    *p = e;
    p->mode = HY_LAUNCH_RANK;
}

// ---------------------------------------------------------------- the id
void hy_launch_id_to_hex(const unsigned char id[HY_DIST_ID_BYTES],
                         char hex[2 * HY_DIST_ID_BYTES + 1]) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < HY_DIST_ID_BYTES; i++) {
        hex[2 * i] = digits[id[i] >> 4];
        hex[2 * i + 1] = digits[id[i] & 15];
    }
    hex[2 * HY_DIST_ID_BYTES] = 0;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int hy_launch_id_from_hex(const char *hex, unsigned char id[HY_DIST_ID_BYTES]) {
    if (!hex || strlen(hex) != 2 * HY_DIST_ID_BYTES) return 0;
    for (int i = 0; i < HY_DIST_ID_BYTES; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return 0;
        id[i] = (unsigned char)(hi * 16 + lo);
    }
    return 1;
}

#define ID_MAGIC "hydra-nccl-id 1"

void hy_launch_id_write(const char *path, const char *token, const unsigned char id[HY_DIST_ID_BYTES]) {
    char tmp[1200], hex[2 * HY_DIST_ID_BYTES + 1];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    hy_launch_id_to_hex(id, hex);
    FILE *f = fopen(tmp, "wb");
    if (!f)
        hy_die(HY_EXIT_USAGE, "--nccl-init: cannot write %s: %s (its directory must exist and be "
               "writable by rank 0)", tmp, strerror(errno));
    int ok = fprintf(f, "%s\n%s\n%s\n", ID_MAGIC, token, hex) > 0 && fflush(f) == 0 &&
             fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        int err = errno;
        unlink(tmp);
        hy_die(HY_EXIT_FAIL, "--nccl-init: cannot write %s: %s", path, strerror(err));
    }
}

static void chomp(char *s) {
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r')) s[--n] = 0;
}

int hy_launch_id_read(const char *path, const char *token, unsigned char id[HY_DIST_ID_BYTES]) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char magic[64] = "", tok[256] = "", hex[2 * HY_DIST_ID_BYTES + 8] = "";
    int whole = fgets(magic, sizeof magic, f) && fgets(tok, sizeof tok, f) && fgets(hex, sizeof hex, f);
    fclose(f);
    if (!whole) return 0;
    chomp(magic);
    chomp(tok);
    chomp(hex);
    return !strcmp(magic, ID_MAGIC) && !strcmp(tok, token) && hy_launch_id_from_hex(hex, id);
}

void hy_launch_fetch_id(const hy_launch_plan *p, const char *nccl_init,
                        unsigned char id[HY_DIST_ID_BYTES]) {
    const char *hex = getenv("HYDRA_NCCL_ID");
    if (hex) {
        HY_REQUIRE(hy_launch_id_from_hex(hex, id), "HYDRA_NCCL_ID: expected %d hex digits (set by "
                   "hydra-train --gpus)", 2 * HY_DIST_ID_BYTES);
        return;
    }
    if (nccl_init) {
        const char *path = init_path(nccl_init);
        if (p->rank == 0) {
            hy_dist_unique_id(id);  // NCCL's bootstrap root now listens in this process
            hy_launch_id_write(path, p->token, id);
            return;
        }
        double t0 = now_s(), timeout = hy_dist_timeout_s();
        while (!hy_launch_id_read(path, p->token, id)) {
            if (now_s() - t0 > timeout)
                hy_die(HY_EXIT_FAIL,
                       "rank %d of %d: no NCCL id from rank 0 in %s after %.0f s (HYDRA_NCCL_TIMEOUT): "
                       "rank 0 writes it when it starts; the path must be on a filesystem every "
                       "node sees", p->rank, p->world, path, timeout);
            usleep(100000);
        }
        return;
    }
    HY_REQUIRE(getenv("NCCL_COMM_ID"), "rank %d of %d (%s): no NCCL id: pass --nccl-init file:PATH "
               "or set NCCL_COMM_ID=host:port", p->rank, p->world, p->source);
    hy_dist_unique_id(id);  // derived from NCCL_COMM_ID: the same on every rank
}

void hy_launch_joined(const hy_launch_plan *p, const char *nccl_init) {
    if (p->mode == HY_LAUNCH_RANK && p->rank == 0 && nccl_init && !getenv("HYDRA_NCCL_ID"))
        unlink(nccl_init + 5);
}

// ---------------------------------------------------------------- the supervisor
static volatile sig_atomic_t g_signals;  // SIGINT/SIGTERM received while supervising

static void on_signal(int sig) {
    (void)sig;
    g_signals++;
}

static void describe(char *buf, size_t n, int rank, pid_t pid, int st) {
    if (WIFEXITED(st))
        snprintf(buf, n, "rank %d (pid %d) exited with status %d", rank, (int)pid, WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, n, "rank %d (pid %d) was killed by signal %d (%s)", rank, (int)pid,
                 WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        snprintf(buf, n, "rank %d (pid %d) ended with wait status 0x%x", rank, (int)pid, st);
}

static void signal_all(const pid_t *pids, const int *done, int n, int sig) {
    for (int i = 0; i < n; i++)
        if (!done[i]) kill(pids[i], sig);
}

int hy_launch_supervise(const pid_t *pids, int n, double grace_s, char *why, size_t why_n) {
    int *done = (int *)hy_xcalloc((size_t)n, sizeof(int));
    int left = n, failed = -1, fail_status = 0, any_stopped = 0, killed = 0, forwarded = 0;
    double kill_at = 0;
    why[0] = 0;
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    g_signals = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    while (left > 0) {
        for (int i = 0; i < n; i++) {
            if (done[i]) continue;
            int st = 0;
            pid_t r = waitpid(pids[i], &st, WNOHANG);
            if (r == 0 || (r < 0 && errno == EINTR)) continue;
            done[i] = 1;
            left--;
            if (r < 0) st = 0x7f00;  // not our child (ECHILD): reported as a failure below
            int ok = WIFEXITED(st) && (WEXITSTATUS(st) == 0 || WEXITSTATUS(st) == 130);
            if (ok) {
                any_stopped |= WEXITSTATUS(st) == 130;
                continue;
            }
            if (failed >= 0) continue;  // the first failure is the one to report
            failed = i;
            fail_status = st;
            describe(why, why_n, i, pids[i], st);
            if (left > 0) {
                fprintf(stderr, "hydra: %s: stopping the other %d rank%s (SIGTERM, then SIGKILL "
                        "after %.0f s)\n", why, left, left == 1 ? "" : "s", grace_s);
                fflush(stderr);
                signal_all(pids, done, n, SIGTERM);
            }
            kill_at = now_s() + grace_s;
        }
        if (left == 0) break;
        if (g_signals > forwarded) {
            // Passed on once as SIGTERM (save and stop); a second time: kill.
            signal_all(pids, done, n, g_signals >= 2 ? SIGKILL : SIGTERM);
            forwarded = g_signals;
        }
        if (failed >= 0 && !killed && now_s() >= kill_at) {
            for (int i = 0; i < n; i++)
                if (!done[i])
                    fprintf(stderr, "hydra: rank %d (pid %d) still running %.0f s after SIGTERM: "
                            "SIGKILL\n", i, (int)pids[i], grace_s);
            signal_all(pids, done, n, SIGKILL);
            killed = 1;
        }
        usleep(10000);
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    free(done);
    if (failed >= 0) return WIFEXITED(fail_status) && WEXITSTATUS(fail_status) == HY_EXIT_USAGE ? 2 : 1;
    return any_stopped ? 130 : 0;
}

// ---------------------------------------------------------------- the --gpus launcher
// A copy of `environ` without any HYDRA_RANK / HYDRA_WORLD / HYDRA_LOCAL_RANK /
// HYDRA_NCCL_ID and with room for four more entries (NULL-terminated).
static char **child_environ(int *count) {
    int n = 0;
    while (environ[n]) n++;
    char **env = (char **)hy_xcalloc((size_t)n + 5, sizeof(char *));
    int k = 0;
    static const char *drop[] = {"HYDRA_RANK=", "HYDRA_WORLD=", "HYDRA_LOCAL_RANK=", "HYDRA_NCCL_ID="};
    for (int i = 0; i < n; i++) {
        int keep = 1;
        for (int d = 0; d < 4; d++) keep &= strncmp(environ[i], drop[d], strlen(drop[d])) != 0;
        if (keep) env[k++] = environ[i];
    }
    *count = k;
    return env;
}

static double grace_seconds(void) {
    const char *s = getenv("HYDRA_KILL_GRACE");
    if (!s || !*s) return 10.0;
    char *end;
    double g = strtod(s, &end);
    HY_REQUIRE(!*end && g >= 0, "HYDRA_KILL_GRACE = '%s': expected seconds (>= 0)", s);
    return g;
}

int hy_launch_local(int gpus, int argc, char **argv) {
    HY_REQUIRE(gpus >= 2, "hy_launch_local: %d GPUs (expected >= 2)", gpus);
    double grace = grace_seconds();
    unsigned char id[HY_DIST_ID_BYTES];
    hy_dist_unique_id(id);  // the bootstrap root lives in this process, which outlives the ranks
    char hex[2 * HY_DIST_ID_BYTES + 1];
    hy_launch_id_to_hex(id, hex);

    // The ranks' argv: ours without "--gpus N".
    char **args = (char **)hy_xcalloc((size_t)argc + 1, sizeof(char *));
    int nargs = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--gpus") && i + 1 < argc) {
            i++;
            continue;
        }
        args[nargs++] = argv[i];
    }
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    HY_CHECK(len > 0, "--gpus: cannot find this executable (/proc/self/exe): %s", strerror(errno));
    self[len] = 0;

    // Everything the children need is prepared before fork: between fork and
    // exec only async-signal-safe calls (this process has NCCL's threads).
    int base;
    char **env = child_environ(&base);
    char (*vars)[4][64] = hy_xcalloc((size_t)gpus, sizeof *vars);
    char *idvar = (char *)hy_xmalloc(strlen(hex) + 32);
    snprintf(idvar, strlen(hex) + 32, "HYDRA_NCCL_ID=%s", hex);
    pid_t *pids = (pid_t *)hy_xcalloc((size_t)gpus, sizeof(pid_t));
    pid_t parent = getpid();
    printf("launching %d ranks on GPUs 0-%d of this host (data parallel, one process per GPU; "
           "rank 0 logs)\n", gpus, gpus - 1);
    fflush(stdout);
    fflush(stderr);
    for (int r = 0; r < gpus; r++) {
        snprintf(vars[r][0], 64, "HYDRA_RANK=%d", r);
        snprintf(vars[r][1], 64, "HYDRA_WORLD=%d", gpus);
        snprintf(vars[r][2], 64, "HYDRA_LOCAL_RANK=%d", r);
        pid_t pid = fork();
        if (pid < 0) {
            int err = errno;
            for (int k = 0; k < r; k++) kill(pids[k], SIGKILL);
            for (int k = 0; k < r; k++) waitpid(pids[k], NULL, 0);
            hy_die(HY_EXIT_FAIL, "--gpus: fork failed for rank %d: %s", r, strerror(err));
        }
        if (pid == 0) {
            // A rank dies with its supervisor (SIGTERM: it saves and stops).
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != parent) _exit(1);
            env[base] = vars[r][0];
            env[base + 1] = vars[r][1];
            env[base + 2] = vars[r][2];
            env[base + 3] = idvar;
            env[base + 4] = NULL;
            execve(self, args, env);
            static const char msg[] = "hydra: error: --gpus: cannot exec this executable\n";
            ssize_t w = write(2, msg, sizeof msg - 1);
            (void)w;
            _exit(127);
        }
        pids[r] = pid;
    }
    char why[512];
    int rc = hy_launch_supervise(pids, gpus, grace, why, sizeof why);
    if (rc == 1 || rc == 2)
        fprintf(stderr, "hydra: error: the %d-GPU job failed: %s\n", gpus, why);
    else if (rc == 130)
        printf("all %d ranks stopped after saving\n", gpus);
    free(pids);
    free(idvar);
    free(vars);
    free(env);
    free(args);
    return rc;
}
