// Built instead of the CUDA kernels when FASTSPEC_CUDA=OFF (or AUTO without nvcc). The ops'
// <op>_cuda bindings raise "built without CUDA kernels" themselves (bindings/module.cpp).
#include "fastspec/common.h"

namespace fastspec {

CudaInfo cuda_info() { return CudaInfo{false, "", 0, 0, "built without CUDA kernels"}; }

}  // namespace fastspec
