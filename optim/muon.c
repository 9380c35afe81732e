// muon.c: Newton-Schulz orthogonalisation and the Muon update (CPU, fp32,
// CBLAS), as the PyTorch reference's optim/muon.py.
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "../autograd/check.h"
#include "optim_internal.h"

// The quintic a x + b x^3 + c x^5 pushes every singular value in (0, 1]
// towards ~1 in a few steps (Keller Jordan's coefficients).
static const float NS_A = 3.4445f, NS_B = -4.7750f, NS_C = 2.0315f;
static const double NS_EPS = 1e-7;  // added to ||G||_F, as the reference

static size_t aligned_bytes(size_t floats) {
    return (floats * sizeof(float) + HY_ALIGN - 1) / HY_ALIGN * HY_ALIGN;
}

size_t hy_newton_schulz_scratch_bytes(int rows, int cols) {
    size_t n = (size_t)(rows < cols ? rows : cols), m = (size_t)(rows < cols ? cols : rows);
    return 2 * aligned_bytes(n * m) + 2 * aligned_bytes(n * n);  // X, Y, A, B
}

// X (n, m) = G / (||G||_F + eps), in the wide orientation: G itself when
// rows <= cols, else G^T. The norm is accumulated in double.
static void normalise_wide(const float *G, float *X, int rows, int cols) {
    size_t N = (size_t)rows * cols;
    double ss = 0;
    for (size_t i = 0; i < N; i++) ss += (double)G[i] * G[i];
    float d = (float)(sqrt(ss) + NS_EPS);
    if (rows <= cols) {
        for (size_t i = 0; i < N; i++) X[i] = G[i] / d;
        return;
    }
    for (int r = 0; r < rows; r++)  // X (cols, rows) = G^T
        for (int c = 0; c < cols; c++) X[(size_t)c * rows + r] = G[(size_t)r * cols + c] / d;
}

// One iteration on X (n, m), n <= m: A = X X^T; B = b A + c A A;
// Y = a X + B X. A, B are (n, n); returns Y.
static void ns_iteration(const float *X, float *Y, float *A, float *B, int n, int m) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, m, 1.0f, X, m, X, m, 0.0f, A, n);
    memcpy(B, A, (size_t)n * n * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, NS_C, A, n, A, n, NS_B, B, n);
    memcpy(Y, X, (size_t)n * m * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, m, n, 1.0f, B, n, X, m, NS_A, Y, m);
}

void hy_newton_schulz(const float *G, float *O, int rows, int cols, int steps, hy_arena *scratch) {
    HY_REQUIRE(rows > 0 && cols > 0 && steps >= 0,
               "newton_schulz: bad arguments (%d x %d, %d steps)", rows, cols, steps);
    HY_CHECK(scratch->device == HY_CPU,
             "newton_schulz: the CPU reference needs a host scratch arena");
    int tall = rows > cols, n = tall ? cols : rows, m = tall ? rows : cols;
    hy_arena_mark_t mark = hy_arena_mark(scratch);
    float *X = (float *)hy_arena_alloc(scratch, (size_t)n * m * sizeof(float));  // (n, m)
    float *Y = (float *)hy_arena_alloc(scratch, (size_t)n * m * sizeof(float));  // (n, m)
    float *A = (float *)hy_arena_alloc(scratch, (size_t)n * n * sizeof(float));  // (n, n)
    float *B = (float *)hy_arena_alloc(scratch, (size_t)n * n * sizeof(float));  // (n, n)
    normalise_wide(G, X, rows, cols);  // G is fully read here, so O may alias it
    for (int s = 0; s < steps; s++) {
        ns_iteration(X, Y, A, B, n, m);
        float *t = X;
        X = Y, Y = t;
    }
    if (!tall) {
        memcpy(O, X, (size_t)n * m * sizeof(float));
    } else {
        for (int r = 0; r < rows; r++)  // O (rows, cols) = X^T
            for (int c = 0; c < cols; c++) O[(size_t)r * cols + c] = X[(size_t)c * rows + r];
    }
    hy_arena_reset_to(scratch, mark);
}

// Muon's view of a parameter: (shape[0], numel / shape[0]); a conv weight
// (C, 1, K) becomes (C, K).
void hy_muon_dims(const hy_param *p, int *rows, int *cols) {
    int64_t numel = 1;
    for (int d = 0; d < p->ndim; d++) numel *= p->shape[d];
    *rows = (int)p->shape[0];
    *cols = (int)(numel / p->shape[0]);
}

size_t hy_muon_scratch_bytes(const hy_param *p) {
    int rows, cols;
    hy_muon_dims(p, &rows, &cols);
    return aligned_bytes((size_t)rows * cols) + hy_newton_schulz_scratch_bytes(rows, cols);
}

// buf = mu buf + g; U = g + mu buf (Nesterov) or buf; U = NS(U);
// p *= 1 - step_lr wd; p -= step_lr U, with step_lr = lr sqrt(max(1, rows/cols)).
void hy_muon_update(const hy_optim_config *c, const hy_param *prm, float *p, const float *g,
                    float *buf, float lr, hy_arena *scratch) {
    int rows, cols;
    hy_muon_dims(prm, &rows, &cols);
    size_t N = (size_t)rows * cols;
    float mu = c->muon_momentum;
    hy_arena_mark_t mark = hy_arena_mark(scratch);
    float *U = (float *)hy_arena_alloc(scratch, N * sizeof(float));  // (rows, cols)
    for (size_t j = 0; j < N; j++) {
        buf[j] = mu * buf[j] + g[j];
        U[j] = c->muon_nesterov ? g[j] + mu * buf[j] : buf[j];
    }
    hy_newton_schulz(U, U, rows, cols, c->ns_steps, scratch);
    double aspect = (double)rows / (double)cols;
    float step_lr = (float)(lr * sqrt(aspect > 1.0 ? aspect : 1.0));
    float wd = c->muon_weight_decay * prm->weight_decay;
    if (wd != 0.0f) {
        float decay = 1.0f - step_lr * wd;
        for (size_t j = 0; j < N; j++) p[j] *= decay;
    }
    for (size_t j = 0; j < N; j++) p[j] -= step_lr * U[j];
    hy_arena_reset_to(scratch, mark);
}
