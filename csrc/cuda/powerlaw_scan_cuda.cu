// CUDA kernel of powerlaw_scan (see include/fastspec/powerlaw_scan.h): one block per candidate.
#include <cmath>

#include "cuda_helpers.cuh"
#include "fastspec/powerlaw_scan.h"
#include "scan_device.cuh"

namespace fastspec {
namespace {

using scan_device::block_max;
using scan_device::dev_exp;
using scan_device::kBlock;
using scan_device::kChunk;
using scan_device::kNumSeeds;

__device__ inline float load_bound(const unsigned int* best_bits) {
  return __uint_as_float(*reinterpret_cast<const volatile unsigned int*>(best_bits));
}

template <typename T>
__global__ void powerlaw_scan_kernel(PowerlawScanArgs a, bool seed_pass) {
  __shared__ T shared[kBlock / 32];
  const int64_t C = a.num_candidates;
  const int64_t c = seed_pass ? (static_cast<int64_t>(blockIdx.x) * C) / gridDim.x
                              : C - 1 - static_cast<int64_t>(blockIdx.x);
  const T* logx = static_cast<const T*>(a.logx);                 // [N]
  T* ks = static_cast<T*>(a.ks);                                 // [C]
  unsigned int* best_bits = static_cast<unsigned int*>(a.best);  // [1] float32 bits
  const int64_t s = a.candidates[c];
  const int64_t nt = a.n - s;
  const double al = 1.0 + static_cast<double>(nt) /
                              (a.tail_logsum[c] - static_cast<double>(nt) * static_cast<double>(logx[s]));
  if (threadIdx.x == 0) static_cast<T*>(a.alpha)[c] = static_cast<T>(al);
  const T inf = static_cast<T>(INFINITY);
  if (a.prune && !(al > a.alpha_lo && al < a.alpha_hi)) {
    if (threadIdx.x == 0) ks[c] = inf;
    return;
  }
  const T e = static_cast<T>(1.0 - al);
  const T inv_nt = static_cast<T>(1.0 / static_cast<double>(nt));
  const T ls = logx[s];
  auto deviation = [&](int64_t j) {
    const T fit = T(1) - dev_exp(e * (logx[j] - ls));
    const T emp = static_cast<T>(a.run_start[j] - s) * inv_nt;
    return fabs(fit - emp);
  };

  T m = T(0);
  if (a.prune) {  // lower bound from kBlock strided points
    const float bound = load_bound(best_bits);
    if (isfinite(bound)) {
      m = deviation(s + (static_cast<int64_t>(threadIdx.x) * nt) / kBlock);
      if (block_max(m, shared) > static_cast<T>(bound)) {
        if (threadIdx.x == 0) ks[c] = inf;
        return;
      }
    }
  }
  for (int64_t lo = s; lo < a.n; lo += kChunk) {
    const int64_t hi = min(a.n, lo + kChunk);
    for (int64_t j = lo + threadIdx.x; j < hi; j += kBlock) m = max(m, deviation(j));
    if (a.prune && hi < a.n) {
      if (block_max(m, shared) > static_cast<T>(load_bound(best_bits))) {
        if (threadIdx.x == 0) ks[c] = inf;
        return;
      }
    }
  }
  m = block_max(m, shared);
  if (threadIdx.x == 0) {
    if (a.prune && m > static_cast<T>(load_bound(best_bits))) {
      ks[c] = inf;
    } else {
      ks[c] = m;
      // round up so that the stored bound never undercuts the true minimum
      if (a.prune) atomicMin(best_bits, __float_as_uint(__double2float_ru(static_cast<double>(m))));
    }
  }
}

template <typename T>
void launch(const PowerlawScanArgs& a, cudaStream_t stream) {
  const int64_t C = a.num_candidates;
  if (C == 0) return;
  const unsigned int blocks = grid_dim(C, "powerlaw_scan candidates");
  if (a.prune) {
    const int seeds = static_cast<int>(C < kNumSeeds ? C : kNumSeeds);
    powerlaw_scan_kernel<T><<<seeds, kBlock, 0, stream>>>(a, true);
    check_launch("powerlaw_scan seed kernel");
  }
  powerlaw_scan_kernel<T><<<blocks, kBlock, 0, stream>>>(a, false);
  check_launch("powerlaw_scan kernel");
}

}  // namespace

void powerlaw_scan_cuda(const PowerlawScanArgs& a, const CudaLaunch& where) {
  check_arg(a.n >= 2, "powerlaw_scan: need at least 2 data points");
  check_arg(!a.prune || a.best != nullptr, "powerlaw_scan: prune needs the float32 workspace 'best'");
  launch_on(where, a.dtype, [&](auto tag, cudaStream_t stream) { launch<decltype(tag)>(a, stream); });
}

}  // namespace fastspec
