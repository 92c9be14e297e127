// CUDA kernel of seq_gram (see include/fastspec/seq_gram.h): one block per (i, j) sample pair
// (a grid-stride loop over pairs); each thread takes position pairs (t, s), computes the a- and
// g-dot products, and the block sums their products (warp shuffles, then shared memory).
#include "cuda_helpers.cuh"
#include "fastspec/seq_gram.h"

namespace fastspec {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void seq_gram_kernel(SeqGramArgs a) {
  __shared__ double partial[kThreads / 32];
  const T* ai_all = static_cast<const T*>(a.a_i);  // [N_i, T, D_in]
  const T* gi_all = static_cast<const T*>(a.g_i);  // [N_i, T, D_out]
  const T* aj_all = static_cast<const T*>(a.a_j);  // [N_j, S, D_in]
  const T* gj_all = static_cast<const T*>(a.g_j);  // [N_j, S, D_out]
  T* out = static_cast<T*>(a.out);                 // [N_i, N_j]
  const int64_t pairs = a.n_i * a.n_j;
  const int64_t positions = a.t_i * a.t_j;
  for (int64_t p = blockIdx.x; p < pairs; p += gridDim.x) {
    const int64_t i = p / a.n_j, j = p % a.n_j;
    const T* ai = ai_all + i * a.t_i * a.d_in;
    const T* gi = gi_all + i * a.t_i * a.d_out;
    const T* aj = aj_all + j * a.t_j * a.d_in;
    const T* gj = gj_all + j * a.t_j * a.d_out;
    double acc = 0.0;
    for (int64_t q = threadIdx.x; q < positions; q += kThreads) {
      const int64_t t = q / a.t_j, s = q % a.t_j;
      T da = T(0), dg = T(0);
      for (int64_t k = 0; k < a.d_in; ++k) da += ai[t * a.d_in + k] * aj[s * a.d_in + k];
      for (int64_t k = 0; k < a.d_out; ++k) dg += gi[t * a.d_out + k] * gj[s * a.d_out + k];
      acc += static_cast<double>(da) * static_cast<double>(dg);
    }
    acc = warp_sum(acc);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    __syncthreads();  // partial may still be read for the previous pair
    if (lane == 0) partial[warp] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
      double total = 0.0;
      for (int w = 0; w < kThreads / 32; ++w) total += partial[w];
      out[p] = static_cast<T>(total);
    }
  }
}

template <typename T>
void launch(const SeqGramArgs& a, cudaStream_t stream) {
  const int64_t pairs = a.n_i * a.n_j;
  if (pairs == 0) return;
  const int64_t blocks = pairs < (int64_t{1} << 20) ? pairs : (int64_t{1} << 20);
  seq_gram_kernel<T><<<grid_dim(blocks, "seq_gram"), kThreads, 0, stream>>>(a);
  check_launch("seq_gram kernel");
}

}  // namespace

void seq_gram_cuda(const SeqGramArgs& a, const CudaLaunch& where) {
  check_arg(a.n_i >= 0 && a.n_j >= 0, "seq_gram: negative number of samples");
  check_arg(a.t_i >= 1 && a.t_j >= 1, "seq_gram: need at least one position per sample");
  check_arg(a.d_in >= 1 && a.d_out >= 1, "seq_gram: need positive feature sizes");
  launch_on(where, a.dtype, [&](auto tag, cudaStream_t stream) { launch<decltype(tag)>(a, stream); });
}

}  // namespace fastspec
