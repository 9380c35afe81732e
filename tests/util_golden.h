// util_golden.h: read the PyTorch reference's float64 outputs
// (../shared/golden/hydralm_tiny.h5) for comparison tests.
#ifndef HY_TEST_GOLDEN_H
#define HY_TEST_GOLDEN_H

#include <stdint.h>

#include "../layers/config.h"

typedef struct {
    int ndim;
    int64_t shape[8];
    int64_t numel;
    double *data;  // malloc'd, row-major
} hy_golden;

// Path of the golden file; calls hy_test_skip() (exit 77) when it is absent.
const char *hy_golden_path(void);
// Read dataset `path` (e.g. "/gdn_kernel/q") as float64; fails the test and
// returns a zero-sized array if the dataset is missing.
hy_golden hy_golden_read(const char *file, const char *path);
// Read a string attribute of the root group into a malloc'd string.
char *hy_golden_attr(const char *file, const char *name);
void hy_golden_free(hy_golden *g);
// The golden file's model: vocab 64, d_model 32, 4 layers (gdn, swa, gdn, swa),
// 2 heads of 16, SWA window 8, GDN chunk 8.
hy_model_config hy_golden_config(void);

#endif
