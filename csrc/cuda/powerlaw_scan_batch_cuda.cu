// CUDA kernel of powerlaw_scan_batch (see include/fastspec/powerlaw_scan_batch.h): one block per
// row. The block visits the row's candidates one after another (seeds first, then short tails
// first), all threads sharing each tail; the running best ks is the abandon bound. The best is
// block-uniform (every decision follows a block-wide max), so there are no atomics and ties
// resolve to the smallest index deterministically.
#include <cmath>

#include "cuda_helpers.cuh"
#include "fastspec/powerlaw_scan_batch.h"
#include "scan_device.cuh"

namespace fastspec {
namespace {

using scan_device::block_max;
using scan_device::dev_exp;
using scan_device::kBlock;
using scan_device::kChunk;
using scan_device::kNumSeeds;

template <typename T>
__global__ void powerlaw_scan_batch_kernel(PowerlawScanBatchArgs a) {
  __shared__ T shared[kBlock / 32];
  const int64_t r = blockIdx.x;
  const int64_t n = a.n;
  const T* logx = static_cast<const T*>(a.logx) + r * n;  // [N]
  const int64_t* run_start = a.run_start + r * n;         // [N]
  const double* tail_logsum = a.tail_logsum + r * n;      // [N]
  const T inf = static_cast<T>(INFINITY);
  const int64_t end = powerlaw_candidate_end(run_start, n);

  T best = inf;  // block-uniform
  double best_alpha = static_cast<double>(NAN);
  int64_t best_s = -1;

  auto visit = [&](int64_t s) {
    const int64_t nt = n - s;
    const double al = 1.0 + static_cast<double>(nt) /
                                (tail_logsum[s] - static_cast<double>(nt) * static_cast<double>(logx[s]));
    if (!(al > a.alpha_lo && al < a.alpha_hi)) return;
    const T e = static_cast<T>(1.0 - al);
    const T inv_nt = static_cast<T>(1.0 / static_cast<double>(nt));
    const T ls = logx[s];
    auto deviation = [&](int64_t j) {
      const T fit = T(1) - dev_exp(e * (logx[j] - ls));
      const T emp = static_cast<T>(run_start[j] - s) * inv_nt;
      return fabs(fit - emp);
    };
    T m = T(0);
    if (isfinite(best)) {  // lower bound from kBlock strided points
      m = deviation(s + (static_cast<int64_t>(threadIdx.x) * nt) / kBlock);
      if (block_max(m, shared) > best) return;
    }
    for (int64_t lo = s; lo < n; lo += kChunk) {
      const int64_t hi = min(n, lo + kChunk);
      for (int64_t j = lo + threadIdx.x; j < hi; j += kBlock) m = max(m, deviation(j));
      if (hi < n && isfinite(best) && block_max(m, shared) > best) return;
    }
    m = block_max(m, shared);
    if (m < best || (m == best && s < best_s)) {
      best = m;
      best_alpha = al;
      best_s = s;
    }
  };

  const int64_t seeds = end < kNumSeeds ? end : kNumSeeds;
  for (int64_t k = 0; k < seeds; ++k) visit(run_start[(k * end) / seeds]);
  for (int64_t s = end - 1; s >= 0; --s) {
    if (run_start[s] == s) visit(s);
  }
  if (threadIdx.x == 0) {
    a.xmin_index[r] = best_s;
    static_cast<T*>(a.alpha)[r] = static_cast<T>(best_alpha);
    static_cast<T*>(a.ks)[r] = best;
  }
}

template <typename T>
void launch(const PowerlawScanBatchArgs& a, cudaStream_t stream) {
  if (a.rows == 0) return;
  powerlaw_scan_batch_kernel<T><<<grid_dim(a.rows, "powerlaw_scan_batch rows"), kBlock, 0, stream>>>(a);
  check_launch("powerlaw_scan_batch kernel");
}

}  // namespace

void powerlaw_scan_batch_cuda(const PowerlawScanBatchArgs& a, const CudaLaunch& where) {
  check_arg(a.n >= 2, "powerlaw_scan_batch: need at least 2 data points per row");
  check_arg(a.rows >= 0, "powerlaw_scan_batch: negative number of rows");
  launch_on(where, a.dtype, [&](auto tag, cudaStream_t stream) { launch<decltype(tag)>(a, stream); });
}

}  // namespace fastspec
