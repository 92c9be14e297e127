// Build facts of a CUDA-enabled extension. cudart is linked statically; it loads the driver
// lazily, so this works (device_count = 0) on machines without a GPU or driver.
#include <cuda_runtime.h>

#include <string>

#include "fastspec/common.h"

#ifndef FASTSPEC_CUDA_ARCHS
#define FASTSPEC_CUDA_ARCHS ""
#endif

namespace fastspec {

CudaInfo cuda_info() {
  CudaInfo info{true, FASTSPEC_CUDA_ARCHS, 0, 0, ""};
  cudaRuntimeGetVersion(&info.runtime_version);
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err == cudaSuccess) {
    info.device_count = count;
  } else {
    info.device_error = cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky-free error state
  }
  return info;
}

}  // namespace fastspec
