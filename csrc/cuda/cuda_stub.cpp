// Built instead of the CUDA kernels when FASTSPEC_CUDA=OFF (or AUTO without nvcc): every
// <op>_cuda entry point raises a clear error. Keep one stub per op declared in include/.
#include "fastspec/common.h"
#include "fastspec/powerlaw_scan.h"
#include "fastspec/powerlaw_scan_batch.h"
#include "fastspec/seq_gram.h"

namespace fastspec {
namespace {
[[noreturn]] void no_cuda(const char* op) {
  throw std::runtime_error(std::string(op) +
                           ": fastspec was built without CUDA kernels (FASTSPEC_CUDA=OFF or no nvcc "
                           "at build time); rebuild with FASTSPEC_CUDA=ON to use CUDA tensors");
}
}  // namespace

CudaInfo cuda_info() { return CudaInfo{false, "", 0, 0, "built without CUDA kernels"}; }

void cuda_set_device(int) { no_cuda("cuda_set_device"); }
void powerlaw_scan_cuda(const PowerlawScanArgs&, const CudaLaunch&) { no_cuda("powerlaw_scan"); }
void powerlaw_scan_batch_cuda(const PowerlawScanBatchArgs&, const CudaLaunch&) {
  no_cuda("powerlaw_scan_batch");
}
void seq_gram_cuda(const SeqGramArgs&, const CudaLaunch&) { no_cuda("seq_gram"); }

}  // namespace fastspec
