// powerlaw_scan_batch: the pruned Clauset xmin scan of many rows at once (bootstrap replicates).
//
// Row r of x [R, N] is ascending data. Its candidate cutoffs are the first indices s of every
// distinct value but the two largest (powerlaw_scan's default candidates), each with
//   alpha = 1 + n_t / (sum_{j>=s} log x_j - n_t log x_s),  n_t = N - s    (Clauset eq. 3.1)
//   ks    = max_{j>=s} | F*(x_j) - Fhat(x_j) |                             (powerlaw_scan.h)
// and a candidate is valid when alpha lies in the open interval (alpha_lo, alpha_hi). Per row the
// kernel returns the valid candidate of minimal ks (the smallest s on ties), its alpha and its ks,
// or xmin_index = -1, alpha = NaN, ks = +inf when no candidate is valid. It finds it exactly
// without computing every ks (seed bound, strided lower bound, chunked early abandon), and each
// row's answer is bitwise the minimum that powerlaw_scan(prune=true) returns for that row.
#pragma once

#include "fastspec/common.h"

#ifndef FASTSPEC_HOST_DEVICE
#if defined(__CUDACC__)
#define FASTSPEC_HOST_DEVICE __host__ __device__
#else
#define FASTSPEC_HOST_DEVICE
#endif
#endif

namespace fastspec {

struct PowerlawScanBatchArgs {
  const void* logx;           // [R, N] log of the ascending rows, dtype, contiguous
  const int64_t* run_start;   // [R, N] first index j' of row r with x[r, j'] == x[r, j]
  const double* tail_logsum;  // [R, N] sum_{i >= j} logx[r, i], float64
  int64_t* xmin_index;        // [R] out: first index of the chosen cutoff, -1 if none valid
  void* alpha;                // [R] out, dtype (NaN if none valid)
  void* ks;                   // [R] out, dtype (+inf if none valid)
  int64_t rows;               // R
  int64_t n;                  // N
  double alpha_lo;            // valid alpha interval, open at both ends
  double alpha_hi;
  DType dtype;
};

void powerlaw_scan_batch_cpu(const PowerlawScanBatchArgs& args);
void powerlaw_scan_batch_cuda(const PowerlawScanBatchArgs& args, const CudaLaunch& launch);

// End (exclusive) of the candidate indices of one row: the first index of its second-largest
// distinct value, 0 when the row has fewer than three distinct values. Candidates are the run
// starts s < candidate_end (run_start[s] == s).
FASTSPEC_HOST_DEVICE inline int64_t powerlaw_candidate_end(const int64_t* run_start,
                                                           int64_t n) {  // [N] one row
  const int64_t last = run_start[n - 1];
  return last > 0 ? run_start[last - 1] : 0;
}

}  // namespace fastspec
