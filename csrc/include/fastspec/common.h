// fastspec native kernels: shared vocabulary. Torch-free by design (see architecture.md):
// kernels see plain pointers, sizes and a dtype code; the Python wrappers own all tensor logic.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace fastspec {

// The kernels' dtypes. Exported as fastspec._C.DType (named by dtype_name, as torch names them)
// and checked against torch's dtypes by fastspec/ops/_dispatch.py when it is imported.
enum class DType : int { kFloat32 = 0, kFloat64 = 1 };
inline constexpr DType kDTypes[] = {DType::kFloat32, DType::kFloat64};

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat64:
      return "float64";
  }
  return "unknown";
}

inline int dtype_itemsize(DType d) {
  switch (d) {
    case DType::kFloat32:
      return 4;
    case DType::kFloat64:
      return 8;
  }
  return 0;
}

// Calls f(float{}) or f(double{}) for the dtype code: the one switch of every kernel entry point,
// e.g. dispatch_float(a.dtype, [&](auto tag) { run<decltype(tag)>(a); }).
template <typename F>
void dispatch_float(DType d, F&& f) {
  switch (d) {
    case DType::kFloat32:
      f(float{});
      break;
    case DType::kFloat64:
      f(double{});
      break;
  }
}

// Raised for any bad argument that reaches native code; the binding maps it to ValueError.
inline void check_arg(bool ok, const std::string& msg) {
  if (!ok) throw std::invalid_argument(msg);
}

// Where a CUDA kernel runs: the device index and its cudaStream_t (0 = legacy default stream).
// The extension links its own static cudart, whose current device is independent of torch's,
// so every launcher sets the device first (cuda/cuda_helpers.cuh: launch_on).
struct CudaLaunch {
  int device;
  void* stream;
};

// What the library was built with (fastspec.build_info()).
struct CudaInfo {
  bool compiled;             // CUDA kernels built into this extension
  std::string archs;         // comma-separated SM list, empty without CUDA
  int runtime_version;       // cudart version linked (e.g. 13000), 0 without CUDA
  int device_count;          // devices visible to the CUDA runtime, 0 without a driver/GPU
  std::string device_error;  // why device_count is 0, if the runtime said so
};
CudaInfo cuda_info();

}  // namespace fastspec
