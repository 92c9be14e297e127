// Device helpers shared by the power-law scan kernels (powerlaw_scan_cuda.cu,
// powerlaw_scan_batch_cuda.cu): kBlock-thread blocks, exp for both dtypes, a block-wide max.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace fastspec {
namespace scan_device {

constexpr int kBlock = 256;
constexpr int64_t kChunk = kBlock * 32;  // points between two abandon checks
constexpr int kNumSeeds = 64;            // candidates visited first, to seed the bound

__device__ inline float dev_exp(float v) { return expf(v); }
__device__ inline double dev_exp(double v) { return exp(v); }

// max of v over the kBlock threads, returned to every thread; `shared` holds kBlock / 32 values
template <typename T>
__device__ T block_max(T v, T* shared) {
  for (int off = 16; off > 0; off >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, off));
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // shared may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = T(0);
  for (int w = 0; w < kBlock / 32; ++w) v = max(v, shared[w]);
  return v;
}

}  // namespace scan_device
}  // namespace fastspec
