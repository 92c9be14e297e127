// Host and device helpers shared by every CUDA launcher (<op>_cuda.cu): error checks, grid sizes,
// the entry-point preamble, and a warp reduction. Internal to csrc/cuda.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "fastspec/common.h"

namespace fastspec {

// Throws std::runtime_error "<what>: <CUDA's message>" when a CUDA call failed.
inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

// Right after a kernel launch: a bad launch configuration surfaces here (errors while the kernel
// runs surface at the caller's next synchronisation, as with torch's own kernels).
inline void check_launch(const char* what) { check_cuda(cudaGetLastError(), what); }

// `blocks` as a grid x-dimension; std::invalid_argument (ValueError) naming `what` when it does
// not fit one launch.
inline unsigned int grid_dim(int64_t blocks, const char* what) {
  check_arg(blocks >= 0 && blocks <= 0x7fffffffLL, std::string(what) + ": too large for one CUDA launch");
  return static_cast<unsigned int>(blocks);
}

// The preamble of every <op>_cuda entry point: select the device (the extension's static cudart
// keeps its own current device), then call f(tag, stream) with tag a float or a double for dtype.
template <typename F>
void launch_on(const CudaLaunch& where, DType dtype, F&& f) {
  check_cuda(cudaSetDevice(where.device), ("cudaSetDevice(" + std::to_string(where.device) + ")").c_str());
  const auto stream = static_cast<cudaStream_t>(where.stream);
  dispatch_float(dtype, [&](auto tag) { f(tag, stream); });
}

// Sum of v over the 32 lanes of a warp, returned to every lane.
__device__ inline double warp_sum(double v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

}  // namespace fastspec
