// hydra-info: what this build can do: version, CUDA and NCCL support, the
// GPUs it sees, and the CPU threads it will use.
#include <stdio.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "../autograd/build_info.h"
#include "../cuda/hy_cuda.h"

static void usage(void) {
    printf("usage: hydra-info\n"
           "Prints the build configuration and the devices this machine offers.\n");
}

int main(int argc, char **argv) {
    if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage();
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "hydra: error: hydra-info takes no arguments (got '%s')\n", argv[1]);
        return 2;
    }
    printf("HydraLM-C\n");
    printf("  commit       : %s\n", hy_build_commit());
    printf("  CUDA backend : %s\n", hy_cuda_built() ? "built" : "not built");
#ifdef HYDRA_HAVE_NCCL
    printf("  NCCL         : yes\n");
#else
    printf("  NCCL         : no\n");
#endif
#ifdef _OPENMP
    printf("  CPU threads  : %d (OpenMP)\n", omp_get_max_threads());
#else
    printf("  CPU threads  : 1 (no OpenMP)\n");
#endif
    int n = hy_cuda_device_count();
    printf("  GPUs         : %d\n", n);
    char buf[256];
    for (int d = 0; d < n; d++) printf("    %d: %s\n", d, hy_cuda_device_info(d, buf, sizeof buf));
    printf("  default device for training: %s\n", n > 0 ? "cuda" : "cpu");
    return 0;
}
