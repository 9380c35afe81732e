#include "util_golden.h"

#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

const char *hy_golden_path(void) {
    static char path[1024];
    const char *env = getenv("HYDRA_GOLDEN");
    snprintf(path, sizeof path, "%s", env ? env : HY_SHARED_DIR "/golden/hydralm_tiny.h5");
    if (access(path, R_OK) != 0) hy_test_skip("golden file not found (set HYDRA_GOLDEN)");
    return path;
}

hy_golden hy_golden_read(const char *file, const char *path) {
    hy_golden g;
    memset(&g, 0, sizeof g);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    HY_ASSERT(f >= 0, "cannot open %s", file);
    if (f < 0) return g;
    hid_t d = H5Dopen2(f, path, H5P_DEFAULT);
    HY_ASSERT(d >= 0, "golden dataset %s missing", path);
    if (d >= 0) {
        hid_t sp = H5Dget_space(d);
        hsize_t dims[8];
        g.ndim = H5Sget_simple_extent_ndims(sp);
        H5Sget_simple_extent_dims(sp, dims, NULL);
        g.numel = 1;
        for (int i = 0; i < g.ndim; i++) g.shape[i] = (int64_t)dims[i], g.numel *= dims[i];
        g.data = (double *)malloc((size_t)g.numel * sizeof(double));
        H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, g.data);
        H5Sclose(sp);
        H5Dclose(d);
    }
    H5Fclose(f);
    return g;
}

char *hy_golden_attr(const char *file, const char *name) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return NULL;
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    char *out = NULL;
    if (a >= 0) {
        hid_t ty = H5Aget_type(a);
        if (H5Tis_variable_str(ty) > 0) {
            char *s = NULL;
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, H5T_VARIABLE);
            if (H5Aread(a, mt, &s) >= 0 && s) {
                out = strdup(s);
                H5free_memory(s);
            }
            H5Tclose(mt);
        }
        H5Tclose(ty);
        H5Aclose(a);
    }
    H5Fclose(f);
    return out;
}

void hy_golden_free(hy_golden *g) {
    free(g->data);
    memset(g, 0, sizeof *g);
}

hy_model_config hy_golden_config(void) {
    hy_model_config c = hy_config_default();
    c.vocab_size = 64;
    c.d_model = 32;
    c.n_layers = 4;
    c.n_heads = 2;
    c.head_dim = 16;
    c.swa_window = 8;
    c.dn_chunk_size = 8;
    c.swa_every = 2;
    hy_config_finalize(&c, "golden");
    return c;
}
