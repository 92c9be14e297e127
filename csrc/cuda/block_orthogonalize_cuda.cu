// CUDA kernels of block_orthogonalize (see include/fastspec/block_orthogonalize.h). Never run on
// a GPU so far (built with -Werror only); the CPU kernel and the torch twin are the tested paths.
//
// Phase 1, grid (P chunks, n rows): each block reduces its chunk of V[i, :] . W[:, j] for groups
// of kGroup columns and adds the float64 sums into C with atomicAdd (row 0's blocks also add the
// input norms). Phase 2, one thread per entry of P: W_out[p, :] = W[p, :] - sum_i V[i, p] C[i, :],
// coalesced over p, with the output norms reduced per block and added atomically.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "fastspec/block_orthogonalize.h"

namespace fastspec {
namespace {

constexpr int kBlock = 256;
constexpr int kGroup = 8;                // columns of W per register group
constexpr int64_t kChunk = kBlock * 16;  // entries of P per phase-1 block

// sum of v over the kBlock threads, valid in thread 0; `shared` holds kBlock / 32 values
__device__ double block_sum(double v, double* shared) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // shared may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  double s = 0.0;
  if (threadIdx.x == 0)
    for (int w = 0; w < kBlock / 32; ++w) s += shared[w];
  return s;
}

template <typename T>
__global__ void coef_kernel(BlockOrthogonalizeArgs a) {
  __shared__ double shared[kBlock / 32];
  const T* V = static_cast<const T*>(a.V);
  const T* W = static_cast<const T*>(a.W);
  const int64_t i = blockIdx.y, B = a.B;
  const int64_t p0 = static_cast<int64_t>(blockIdx.x) * kChunk;
  const int64_t p1 = min(a.P, p0 + kChunk);
  const bool with_row = i < a.n;  // the extra row n (n == 0 only) computes the norms alone
  for (int64_t j0 = 0; j0 < B; j0 += kGroup) {
    double acc[kGroup] = {}, sq[kGroup] = {};
    for (int64_t p = p0 + threadIdx.x; p < p1; p += kBlock) {
      const double v = with_row ? static_cast<double>(V[i * a.P + p]) : 0.0;
#pragma unroll
      for (int jj = 0; jj < kGroup; ++jj) {
        if (j0 + jj < B) {
          const double w = static_cast<double>(W[p * B + j0 + jj]);
          acc[jj] += v * w;
          sq[jj] += w * w;
        }
      }
    }
#pragma unroll
    for (int jj = 0; jj < kGroup; ++jj) {
      if (j0 + jj >= B) break;
      const double s = block_sum(acc[jj], shared);
      if (threadIdx.x == 0 && with_row) atomicAdd(a.C + i * B + j0 + jj, s);
      if (i == 0) {
        const double t = block_sum(sq[jj], shared);
        if (threadIdx.x == 0) atomicAdd(a.sq_norms + j0 + jj, t);
      }
    }
  }
}

template <typename T>
__global__ void update_kernel(BlockOrthogonalizeArgs a) {
  __shared__ double shared[kBlock / 32];
  const T* V = static_cast<const T*>(a.V);
  const T* W = static_cast<const T*>(a.W);
  T* out = static_cast<T*>(a.W_out);
  const int64_t B = a.B;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x;
  const bool live = p < a.P;
  for (int64_t j0 = 0; j0 < B; j0 += kGroup) {
    double acc[kGroup] = {};
#pragma unroll
    for (int jj = 0; jj < kGroup; ++jj)
      if (live && j0 + jj < B) acc[jj] = static_cast<double>(W[p * B + j0 + jj]);
    if (live) {
      for (int64_t i = 0; i < a.n; ++i) {
        const double v = static_cast<double>(V[i * a.P + p]);
        const double* c = a.C + i * B + j0;
#pragma unroll
        for (int jj = 0; jj < kGroup; ++jj)
          if (j0 + jj < B) acc[jj] -= c[jj] * v;
      }
    }
#pragma unroll
    for (int jj = 0; jj < kGroup; ++jj) {
      if (j0 + jj >= B) break;
      double r = 0.0;
      if (live) {
        const T o = static_cast<T>(acc[jj]);
        out[p * B + j0 + jj] = o;
        r = static_cast<double>(o) * static_cast<double>(o);
      }
      const double s = block_sum(r, shared);
      if (threadIdx.x == 0) atomicAdd(a.sq_norms + B + j0 + jj, s);
    }
  }
}

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

template <typename T>
void launch(const BlockOrthogonalizeArgs& a, cudaStream_t stream) {
  const int64_t chunks = (a.P + kChunk - 1) / kChunk;
  const int64_t blocks = (a.P + kBlock - 1) / kBlock;
  const int64_t rows = std::max<int64_t>(a.n, 1);
  check_arg(chunks <= 0x7fffffffLL && blocks <= 0x7fffffffLL && rows <= 65535,
            "block_orthogonalize: problem too large for one CUDA launch (n <= 65535)");
  if (a.n > 0) check(cudaMemsetAsync(a.C, 0, sizeof(double) * a.n * a.B, stream), "cudaMemsetAsync");
  check(cudaMemsetAsync(a.sq_norms, 0, sizeof(double) * 2 * a.B, stream), "cudaMemsetAsync");
  coef_kernel<T>
      <<<dim3(static_cast<unsigned int>(chunks), static_cast<unsigned int>(rows)), kBlock, 0, stream>>>(a);
  check(cudaGetLastError(), "block_orthogonalize coefficient kernel");
  update_kernel<T><<<static_cast<unsigned int>(blocks), kBlock, 0, stream>>>(a);
  check(cudaGetLastError(), "block_orthogonalize update kernel");
}

}  // namespace

void block_orthogonalize_cuda(const BlockOrthogonalizeArgs& a, const CudaLaunch& where) {
  check_arg(a.n >= 0 && a.P >= 1 && a.B >= 1, "block_orthogonalize: need n >= 0, P >= 1, B >= 1");
  cuda_set_device(where.device);
  auto s = static_cast<cudaStream_t>(where.stream);
  dispatch_float(a.dtype, [&](auto tag) { launch<decltype(tag)>(a, s); });
}

}  // namespace fastspec
