// CPU kernel of powerlaw_scan_batch (see include/fastspec/powerlaw_scan_batch.h). OpenMP over rows:
// a whole row (one bootstrap replicate) is the parallel unit, scanned sequentially with the same
// pruning as powerlaw_scan (powerlaw_scan_detail.h), so there is no nested parallelism.
#include <algorithm>
#include <cmath>
#include <limits>

#include "fastspec/powerlaw_scan_batch.h"
#include "fastspec/powerlaw_scan_detail.h"

namespace fastspec {
namespace {

struct Best {
  double ks = std::numeric_limits<double>::infinity();
  double alpha = std::numeric_limits<double>::quiet_NaN();
  int64_t index = -1;
};

template <typename T>
Best scan_row(const PowerlawScanBatchArgs& a, int64_t r) {
  const int64_t n = a.n;
  const T* logx = static_cast<const T*>(a.logx) + r * n;  // [N]
  const int64_t* run_start = a.run_start + r * n;         // [N]
  const double* tail_logsum = a.tail_logsum + r * n;      // [N]
  const detail::KsScan<T> scan{logx, run_start, n};
  const int64_t end = powerlaw_candidate_end(run_start, n);
  Best best;
  int64_t witness = -1;  // last point that proved a cutoff abandoned

  auto visit = [&](int64_t s) {
    const double al = detail::tail_alpha(tail_logsum[s], n - s, static_cast<double>(logx[s]));
    if (!detail::alpha_valid(al, a.alpha_lo, a.alpha_hi)) return;
    const double d = static_cast<double>(scan.ks(s, al, best.ks, &witness));  // abandoned only if > best
    if (d < best.ks || (d == best.ks && s < best.index)) best = Best{d, al, s};
  };

  // seed the bound with evenly spaced candidates (revisited below, cheaply)
  const int64_t seeds = std::min(end, detail::kNumSeeds);
  for (int64_t k = 0; k < seeds; ++k) visit(run_start[(k * end) / seeds]);
  for (int64_t s = end - 1; s >= 0; --s) {  // short tails first: cheap, tighten the bound
    if (run_start[s] == s) visit(s);
  }
  return best;
}

template <typename T>
void run(const PowerlawScanBatchArgs& a) {
  T* alpha = static_cast<T*>(a.alpha);
  T* ks = static_cast<T*>(a.ks);
#pragma omp parallel for schedule(dynamic, 1) if (a.rows > 1)
  for (int64_t r = 0; r < a.rows; ++r) {
    const Best b = scan_row<T>(a, r);
    a.xmin_index[r] = b.index;
    alpha[r] = static_cast<T>(b.alpha);
    ks[r] = static_cast<T>(b.ks);
  }
}

}  // namespace

void powerlaw_scan_batch_cpu(const PowerlawScanBatchArgs& a) {
  check_arg(a.n >= 2, "powerlaw_scan_batch: need at least 2 data points per row");
  check_arg(a.rows >= 0, "powerlaw_scan_batch: negative number of rows");
  dispatch_float(a.dtype, [&](auto tag) { run<decltype(tag)>(a); });
}

}  // namespace fastspec
