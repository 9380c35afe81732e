// nocuda.c: the CUDA entry points of a build without CUDA. Querying says
// "no GPU"; anything that needs one stops with a clear error (exit 2).
//
// Every function of cuda/hy_cuda*.h has a stub here, so a CPU-only build
// links code (layers/, train/, ...) that calls them on its GPU paths; those
// paths are only taken for tensors on a CUDA device, which such a build never
// has. The headers are included so the compiler checks each signature. The
// `return`s after NO_CUDA() (which does not return) only keep the stubs
// well-formed.
#include <stdio.h>

#include "../autograd/check.h"
#include "hy_cuda.h"
#include "hy_cuda_bench.h"
#include "hy_cuda_blas.h"
#include "hy_cuda_gdn.h"
#include "hy_cuda_gemv.h"
#include "hy_cuda_glue.h"
#include "hy_cuda_ops.h"
#include "hy_cuda_swa.h"

#define NO_CUDA() \
    hy_die(HY_EXIT_USAGE, "this build has no CUDA support (configure with nvcc present and -DHYDRA_CUDA=ON)")

// A stub ignores its arguments.
#pragma GCC diagnostic ignored "-Wunused-parameter"

// ---------------------------------------------------------------- hy_cuda.h: devices, memory
int hy_cuda_built(void) { return 0; }
int hy_cuda_device_count(void) { return 0; }
int hy_cuda_sm_count(void) { return 0; }
size_t hy_cuda_mem_in_use(void) { NO_CUDA(); return 0; }
const char *hy_cuda_versions(char *buf, size_t n) {
    snprintf(buf, n, "none");
    return buf;
}
const char *hy_cuda_device_info(int device, char *buf, size_t n) {
    (void)device;
    snprintf(buf, n, "none");
    return buf;
}
void hy_cuda_set_device(int device) { NO_CUDA(); }
void *hy_cuda_malloc(size_t bytes) { NO_CUDA(); return NULL; }
void hy_cuda_free(void *p) { NO_CUDA(); }
void hy_cuda_memset(void *p, int v, size_t b) { NO_CUDA(); }
void hy_cuda_memcpy_h2d(void *d, const void *s, size_t b) { NO_CUDA(); }
void hy_cuda_memcpy_d2h(void *d, const void *s, size_t b) { NO_CUDA(); }
void hy_cuda_memcpy_d2d(void *d, const void *s, size_t b) { NO_CUDA(); }
void hy_cuda_synchronize(void) { NO_CUDA(); }
void hy_cuda_capture_begin(void) { NO_CUDA(); }
void *hy_cuda_capture_end(void) { NO_CUDA(); }
void hy_cuda_graph_launch(void *g) { NO_CUDA(); }
void hy_cuda_graph_destroy(void *g) { NO_CUDA(); }
void *hy_cuda_host_alloc(size_t bytes) { NO_CUDA(); return NULL; }
void hy_cuda_host_free(void *p) { NO_CUDA(); }
void *hy_cuda_event_new(void) { NO_CUDA(); return NULL; }
void hy_cuda_event_record(void *ev) { NO_CUDA(); }
void hy_cuda_event_wait(void *ev) { NO_CUDA(); }
void hy_cuda_event_free(void *ev) { NO_CUDA(); }

// ---------------------------------------------------------------- hy_cuda_ops.h: basic ops
// (hy_cuda_f32_to_bf16 and hy_cuda_bf16_to_f32, declared here and in
// hy_cuda_blas.h, are stubbed once, with the blas group.)
void hy_cuda_embedding_fwd(int rows, int D, int V, const float *weight, const int32_t *ids,
                           void *y, void *stream) { NO_CUDA(); }
void hy_cuda_embedding_bwd(int rows, int D, int V, const float *dy, const int32_t *ids,
                           int padding_idx, float *dweight, void *stream) { NO_CUDA(); }
void hy_cuda_rmsnorm_fwd(int rows, int D, float eps, const void *x, const float *w, void *y,
                         float *rstd, void *stream) { NO_CUDA(); }
void hy_cuda_add_rmsnorm_fwd(int rows, int D, float eps, const void *a, const void *b, void *x,
                             const float *w, void *y, float *rstd, void *stream) { NO_CUDA(); }
size_t hy_cuda_rmsnorm_bwd_scratch_bytes(int rows, int D) { NO_CUDA(); return 0; }
void hy_cuda_rmsnorm_bwd_x16(int rows, int D, const float *dy, const void *x, const float *w,
                             const float *rstd, float *dx, void *dx16, float *dw, void *scratch,
                             size_t scratch_bytes, void *stream) { NO_CUDA(); }
void hy_cuda_rmsnorm_bwd(int rows, int D, const float *dy, const void *x, const float *w,
                         const float *rstd, float *dx, float *dw, void *scratch,
                         size_t scratch_bytes, void *stream) { NO_CUDA(); }
void hy_cuda_swiglu_fwd(int rows, int H, const void *gv, void *y, void *stream) { NO_CUDA(); }
void hy_cuda_swiglu_bwd(int rows, int H, const float *dy, const void *gv, float *dgv,
                        int overwrite, void *stream) { NO_CUDA(); }
void hy_cuda_swiglu_bwd_bf16(int rows, int H, const float *dy, const void *gv, void *dgv,
                             void *stream) { NO_CUDA(); }
void hy_cuda_add_fwd(size_t n, const void *a, const void *b, void *y, void *stream) { NO_CUDA(); }
void hy_cuda_add_bwd(size_t n, const float *dy, float *da, float *db, void *stream) { NO_CUDA(); }
void hy_cuda_mul_fwd(size_t n, const void *a, const void *b, void *y, void *stream) { NO_CUDA(); }
void hy_cuda_mul_bwd(size_t n, const float *dy, const void *a, const void *b, float *da,
                     float *db, void *stream) { NO_CUDA(); }
void hy_cuda_silu_fwd(size_t n, const void *x, void *y, void *stream) { NO_CUDA(); }
void hy_cuda_silu_bwd(size_t n, const float *dy, const void *x, float *dx, int overwrite,
                      void *stream) { NO_CUDA(); }
void hy_cuda_mul_silu_fwd(size_t n, const void *a, const void *g, void *y, void *stream) {
    NO_CUDA();
}
void hy_cuda_mul_silu_bwd_mixed(size_t n, const float *dy, const void *a, const void *g,
                                float *da, int da_overwrite, void *da_bf16, float *dg,
                                int dg_overwrite, void *dg_bf16, void *stream) {
    NO_CUDA();
}
void hy_cuda_mul_silu_bwd(size_t n, const float *dy, const void *a, const void *g, float *da,
                          int da_overwrite, float *dg, int dg_overwrite, void *stream) {
    NO_CUDA();
}
void hy_cuda_sigmoid_fwd(size_t n, const void *x, void *y, void *stream) { NO_CUDA(); }
void hy_cuda_sigmoid_bwd(size_t n, const float *dy, const void *x, float *dx, void *stream) { NO_CUDA(); }
void hy_cuda_l2norm_heads_fwd(int vecs, int head_dim, float eps, const void *x, void *y,
                              float *norm, void *stream) { NO_CUDA(); }
void hy_cuda_l2norm_heads_bwd(int vecs, int head_dim, float eps, const float *dy,
                              const void *x, const float *norm, float *dx, void *stream) { NO_CUDA(); }
void hy_cuda_short_conv_fwd(int B, int T, int C, int K, const void *x, const float *w,
                            const float *bias, const void *cache, void *y, void *stream) { NO_CUDA(); }
size_t hy_cuda_short_conv_bwd_scratch_bytes(int B, int T, int C, int K) { NO_CUDA(); return 0; }
void hy_cuda_short_conv_bwd(int B, int T, int C, int K, const float *dy, const void *x,
                            const float *w, const void *cache, float *dx, int set_dx, float *dw,
                            float *db, void *scratch, size_t scratch_bytes, void *stream) { NO_CUDA(); }
void hy_cuda_rope_fwd(int B, int T, int H, int D, int64_t pos0, float base, const void *x,
                      void *y, void *stream) { NO_CUDA(); }
void hy_cuda_rope_fwd_dev(int B, int T, int H, int D, const long long *pos0_dev, float base,
                          const void *x, void *y, void *stream) { NO_CUDA(); }
void hy_cuda_rope_bwd(int B, int T, int H, int D, int64_t pos0, float base, const float *dy,
                      float *dx, void *stream) { NO_CUDA(); }
void hy_cuda_qkv_rope_fwd(int B, int T, int H, int D, int64_t pos0, float base, const void *qkv,
                          void *q, void *k, void *v, void *stream) { NO_CUDA(); }
void hy_cuda_qkv_rope_bwd(int B, int T, int H, int D, int64_t pos0, float base, const float *dq,
                          const float *dk, const float *dv, void *dqkv, int out_mode,
                          void *stream) { NO_CUDA(); }
void hy_cuda_slice_last_fwd(int rows, int N, int start, int len, const void *x, void *y,
                            void *stream) { NO_CUDA(); }
void hy_cuda_slice_last_bwd(int rows, int N, int start, int len, const float *dy, float *dx,
                            void *stream) { NO_CUDA(); }
void hy_cuda_mean_fwd(size_t n, const float *x, float *y, void *stream) { NO_CUDA(); }
void hy_cuda_argmax_rows(int64_t rows, int V, const void *x, int32_t *idx, void *stream) { NO_CUDA(); }
void hy_cuda_greedy_rows(int rows, int V, const void *x, int32_t *idx, long long *pos,
                         unsigned *done, int32_t *ring, int ring_len, void *stream) { NO_CUDA(); }
void hy_cuda_mean_bwd(size_t n, const float *dy, float *dx, void *stream) { NO_CUDA(); }

// ---------------------------------------------------------------- hy_cuda_blas.h: GEMMs, head, optimizers
void hy_cuda_blas_init(void) { NO_CUDA(); }
void hy_cuda_blas_shutdown(void) { NO_CUDA(); }
void hy_cuda_f32_to_bf16(const float *x, void *y, size_t n, void *stream) { NO_CUDA(); }
void hy_cuda_bf16_to_f32(const void *x, float *y, size_t n, void *stream) { NO_CUDA(); }
void hy_cuda_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const void *A,
                  int lda, const void *B, int ldb, float beta, void *C, int c_f32, int ldc,
                  void *stream) { NO_CUDA(); }
void hy_cuda_gemm_f32(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                      int lda, const float *B, int ldb, float beta, float *C, int ldc,
                      void *stream) { NO_CUDA(); }
void hy_cuda_gemm_strided_batched(int trans_a, int trans_b, int M, int N, int K, float alpha,
                                  const void *A, int lda, long long stride_a, const void *B,
                                  int ldb, long long stride_b, float beta, void *C, int c_f32,
                                  int ldc, long long stride_c, int batch, void *stream) { NO_CUDA(); }
void hy_cuda_gemm_cd_strided_batched(int trans_a, int trans_b, int M, int N, int K, float alpha,
                                     const void *A, int lda, long long stride_a, const void *B,
                                     int ldb, long long stride_b, float beta, const void *C,
                                     int ldc, long long stride_c, void *D, int ldd,
                                     long long stride_d, int batch, void *stream) { NO_CUDA(); }
void hy_cuda_gemm_f32_strided_batched(int trans_a, int trans_b, int M, int N, int K,
                                      float alpha, const float *A, int lda, long long stride_a,
                                      const float *B, int ldb, long long stride_b, float beta,
                                      float *C, int ldc, long long stride_c, int batch,
                                      void *stream) { NO_CUDA(); }
void hy_cuda_linear_fwd(int rows, int in, int out, const void *x, const void *w,
                        const float *bias, void *y, void *stream) { NO_CUDA(); }
size_t hy_cuda_linear_bwd_scratch_bytes(int rows, int in, int out) { NO_CUDA(); return 0; }
void hy_cuda_linear_bwd(int rows, int in, int out, const float *dy, const void *x,
                        const void *w, float *dx, int dx_overwrite, float *dw, float *db,
                        void *scratch, size_t scratch_bytes, void *stream) { NO_CUDA(); }
void hy_cuda_linear_bwd_bf16(int rows, int in, int out, const void *dy, const void *x,
                             const void *w, float *dx, int dx_overwrite, float *dw,
                             void *stream) { NO_CUDA(); }
size_t hy_cuda_head_ce_scratch_bytes(int rows, int V, int chunk_rows) { NO_CUDA(); return 0; }
int hy_cuda_head_ce_chunk_rows(int rows, int V, size_t scratch_bytes) { NO_CUDA(); return 0; }
void hy_cuda_head_ce(int rows, int d, int V, const void *h, const void *E,
                     const int32_t *targets, int ignore_index, float *loss_dev,
                     int32_t *count_dev, float *dh, float *dE, void *scratch,
                     size_t scratch_bytes, void *stream) { NO_CUDA(); }
int hy_cuda_optim_ranges(const hy_optim_config *c, const hy_param_table *t,
                         hy_cuda_param_range *out, size_t *v_numel) { NO_CUDA(); return 0; }
hy_cuda_optim_plan *hy_cuda_optim_plan_create(const hy_cuda_param_range *r, int n) { NO_CUDA(); return NULL; }
void hy_cuda_optim_plan_destroy(hy_cuda_optim_plan *p) { NO_CUDA(); }
void hy_cuda_optim_plan_set_ns_fp32(hy_cuda_optim_plan *p, int on) { NO_CUDA(); }
void hy_cuda_optim_plan_set_half(hy_cuda_optim_plan *p, void *half) { NO_CUDA(); }
void hy_cuda_optim_plan_set_clip(hy_cuda_optim_plan *p, float max_norm, const float *norm_dev) {
    NO_CUDA();
}
size_t hy_cuda_optim_scratch_bytes(const hy_cuda_optim_plan *p) { NO_CUDA(); return 0; }
void hy_cuda_adamw_step(const hy_cuda_optim_plan *p, const hy_optim_config *c, int64_t t,
                        float lr_mult, float *values, const float *grads, float *m, float *v,
                        void *stream) { NO_CUDA(); }
void hy_cuda_muon_step(const hy_cuda_optim_plan *p, const hy_optim_config *c, float lr_mult,
                       float *values, const float *grads, float *m, void *scratch,
                       size_t scratch_bytes, void *stream) { NO_CUDA(); }
void hy_cuda_optim_step(const hy_cuda_optim_plan *p, const hy_optim_config *c, int64_t t,
                        float lr_mult, float *values, const float *grads, float *m, float *v,
                        void *scratch, size_t scratch_bytes, void *stream) { NO_CUDA(); }
void hy_cuda_grad_norm(const hy_cuda_optim_plan *p, const float *grads, float *norm_dev,
                       void *scratch, size_t scratch_bytes, void *stream) { NO_CUDA(); }
void hy_cuda_clip_grad_norm(const hy_cuda_optim_plan *p, float *grads, float max_norm,
                            float *norm_dev, void *scratch, size_t scratch_bytes, void *stream) { NO_CUDA(); }
void hy_cuda_clip_grads_by(const hy_cuda_optim_plan *p, float *grads, float max_norm,
                           const float *norm_dev, void *stream) { NO_CUDA(); }
float hy_cuda_time_ms(hy_cuda_timed_fn fn, void *arg, int warmup, int reps) { NO_CUDA(); return 0; }

// ---------------------------------------------------------------- hy_cuda_swa.h: sliding-window attention
size_t hy_cuda_swa_workspace_bytes(int B, int T, int H, int D) { NO_CUDA(); return 0; }
void hy_cuda_swa_fwd(int B, int T, int H, int D, int window, const void *q, const void *k,
                     const void *v, void *o, float *lse, void *stream) { NO_CUDA(); }
void hy_cuda_swa_fwd_rows(int B, int T, int H, int D, int window, int q_first, const void *q,
                          const void *k, const void *v, void *o, void *stream) { NO_CUDA(); }
void hy_cuda_swa_bwd(int B, int T, int H, int D, int window, const void *q, const void *k,
                     const void *v, const void *o, const float *lse, const void *d_o, float *dq,
                     float *dk, float *dv, void *workspace, void *stream) { NO_CUDA(); }
void hy_cuda_swa_step(int B, int H, int D, int W, long long pos, const void *q, const void *k,
                      const void *v, void *ring_k, void *ring_v, void *o, void *stream) { NO_CUDA(); }
void hy_cuda_swa_step_dev(int B, int H, int D, int W, const long long *pos_dev, const void *q,
                          const void *k, const void *v, void *ring_k, void *ring_v, void *o,
                          void *stream) { NO_CUDA(); }
void hy_cuda_swa_decode(int B, int H, int D, int W, long long pos, const long long *pos_dev,
                        float rope_base, const void *qkv, void *ring_k, void *ring_v, void *o,
                        void *stream) { NO_CUDA(); }
size_t hy_cuda_dense_step_work_bytes(int B, int H, int D, int cap) { NO_CUDA(); return 0; }
void hy_cuda_dense_step(int B, int H, int D, int cap, long long pos, const long long *pos_dev,
                        const void *q, const void *k, const void *v, void *cache_k,
                        void *cache_v, void *o, void *work, void *stream) { NO_CUDA(); }
double hy_cuda_swa_time_ms(int what, int reps, int B, int T, int H, int D, int window,
                           const void *q, const void *k, const void *v, void *o, float *lse,
                           const void *d_o, float *dq, float *dk, float *dv,
                           void *workspace) { NO_CUDA(); return 0; }

// ---------------------------------------------------------------- hy_cuda_gdn.h: gated delta rule
size_t hy_cuda_gdn_workspace_bytes(int B, int T, int H, int D, int chunk) { NO_CUDA(); return 0; }
void hy_cuda_gdn_fwd(int B, int T, int H, int D, int chunk, const void *q, const void *k,
                     const void *v, const float *alpha, const float *beta, const float *S0,
                     void *o, float *S_out, void *workspace, void *stream) { NO_CUDA(); }
void hy_cuda_gdn_bwd(int B, int T, int H, int D, int chunk, const void *q, const void *k,
                     const void *v, const float *alpha, const float *beta, const float *S0,
                     const void *d_o, const float *dS_out, float *dq, float *dk, float *dv,
                     float *dalpha, float *dbeta, float *dS0, void *workspace, void *stream) { NO_CUDA(); }
size_t hy_cuda_gdn_saved_bytes(int B, int T, int H, int D, int chunk) { NO_CUDA(); return 0; }
void hy_cuda_gdn_bwd_saved(int B, int T, int H, int D, int chunk, const void *q, const void *k,
                           const void *v, const float *alpha, const float *beta, const float *S0,
                           const void *d_o, const float *dS_out, float *dq, float *dk, float *dv,
                           float *dalpha, float *dbeta, float *dS0, const void *saved,
                           void *workspace, void *stream) { NO_CUDA(); }
void hy_cuda_gdn_step(int B, int H, int D, const void *q, const void *k, const void *v,
                      const float *alpha, const float *beta, float *S, void *o, void *stream) { NO_CUDA(); }
void hy_cuda_gdn_decode(int B, int H, int D, int K, int norm_qk, const void *qkv,
                        const float *conv_w, const float *conv_b, void *conv_cache, const void *ab,
                        float *S, void *o, void *stream) { NO_CUDA(); }
size_t hy_cuda_gdn_qkv_work_bytes(int H, int D, int K) { NO_CUDA(); return 0; }
void hy_cuda_gdn_qkv_fwd(int B, int T, int H, int D, int K, int norm_qk, float eps,
                         const void *qkv, const float *w, const float *bias, const void *cache,
                         void *q, void *k, void *v, void *work, void *stream) { NO_CUDA(); }
size_t hy_cuda_gdn_qkv_bwd_scratch_bytes(int B, int T, int H, int D, int K) {
    NO_CUDA();
    return 0;
}
int hy_cuda_gdn_qkv_bwd_one_pass(int H, int D, int K, const void *qkv, const float *dq,
                                 const float *dk, const float *dv) {
    NO_CUDA();
    return 0;
}
void hy_cuda_gdn_qkv_bwd(int B, int T, int H, int D, int K, int norm_qk, float eps,
                         const void *qkv, const float *w, const float *bias, const void *cache,
                         const float *dq, const float *dk, const float *dv, float *dx, int set_dx,
                         void *dx_bf16, float *dw, float *db, void *scratch,
                         size_t scratch_bytes, void *stream) {
    NO_CUDA();
}
void hy_cuda_gdn_qkv_du(int B, int T, int H, int D, int K, int norm_qk, float eps,
                        const void *qkv, const float *w, const float *bias, const void *cache,
                        const float *dq, const float *dk, const float *dv, float *du, void *work,
                        void *stream) { NO_CUDA(); }
void hy_cuda_gdn_gates_fwd(int rows, int H, const void *ab, float *alpha, float *beta,
                           void *stream) { NO_CUDA(); }
void hy_cuda_gdn_gates_bwd(int rows, int H, const void *ab, const float *dalpha,
                           const float *dbeta, float *dab, int overwrite, void *stream) {
    NO_CUDA();
}
void hy_cuda_gdn_set_test_options(int bv, int wy_reference) { NO_CUDA(); }
void hy_cuda_gdn_time(int B, int T, int H, int D, const void *q, const void *k, const void *v,
                      const float *alpha, const float *beta, const float *S0, void *o,
                      float *S_out, const void *d_o, const float *dS_out, float *dq, float *dk,
                      float *dv, float *dalpha, float *dbeta, float *dS0, void *workspace,
                      int warmup, int iters, double *fwd_ms, double *fwd_bwd_ms,
                      double *fwd_bwd_recompute_ms) { NO_CUDA(); }

// ---------------------------------------------------------------- hy_cuda_gemv.h: decoding projections
void hy_cuda_gemv(int B, int K, const hy_gemv_in *in, const hy_gemv_out *out, int n_out,
                  void *stream) { NO_CUDA(); }
int hy_cuda_gemv_resident(int B, int K, const hy_gemv_in *in, const hy_gemv_out *out,
                          int n_out) { NO_CUDA(); return 0; }

// ---------------------------------------------------------------- hy_cuda_glue.h: step and decode glue
void hy_cuda_acc_f32(size_t n, const float *x, float *y, void *stream) { NO_CUDA(); }
void hy_cuda_axpy_dev(size_t n, const float *a_dev, const float *x, float *y, void *stream) { NO_CUDA(); }
void hy_cuda_scale_f32(size_t n, float s, float *y, void *stream) { NO_CUDA(); }
void hy_cuda_fill_f32(size_t n, float v, float *y, void *stream) { NO_CUDA(); }
void hy_cuda_sigmoid_f32out_fwd(size_t n, const void *x, float *y, void *stream) { NO_CUDA(); }
void hy_cuda_conv_cache_update(int B, int T, int C, int K, const void *x, void *cache,
                               void *stream) { NO_CUDA(); }
void hy_cuda_ring_write(int B, int T, int H, int D, int W, int64_t pos0, const void *kv,
                        void *ring, void *stream) { NO_CUDA(); }
void hy_cuda_ring_read(int B, int H, int D, int W, int64_t pos, int n, const void *ring,
                       void *out, int L, void *stream) { NO_CUDA(); }
void hy_cuda_copy_rows_bf16(int B, int n, int E, const void *src, int src_T, int src_row0,
                            void *dst, int dst_T, int dst_row0, void *stream) { NO_CUDA(); }
void hy_cuda_copy_rows_f32(int B, int n, int E, const float *src, int src_T, int src_row0,
                           float *dst, int dst_T, int dst_row0, void *stream) { NO_CUDA(); }
void hy_cuda_acc_rows_f32(int B, int n, int E, const float *src, int src_T, int src_row0,
                          float *dst, int dst_T, int dst_row0, void *stream) { NO_CUDA(); }
void hy_cuda_argmax_rows_f32(int rows, int V, const float *x, int32_t *idx, void *stream) { NO_CUDA(); }

// ---------------------------------------------------------------- hy_cuda_bench.h: events, memory
hy_cuda_events *hy_cuda_events_create(int n) { NO_CUDA(); return NULL; }
void hy_cuda_events_destroy(hy_cuda_events *e) { NO_CUDA(); }
void hy_cuda_events_record(hy_cuda_events *e, int i) { NO_CUDA(); }
float hy_cuda_events_ms(hy_cuda_events *e, int i, int j) { NO_CUDA(); return 0; }
void hy_cuda_mem_info(size_t *free_bytes, size_t *total_bytes) { NO_CUDA(); }
