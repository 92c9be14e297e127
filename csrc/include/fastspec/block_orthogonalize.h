// block_orthogonalize: one classical Gram-Schmidt pass of a block against a basis.
//
// With the basis stored as rows, V [n, P] (row i = basis vector i, contiguous), and a block
// W [P, B] (row-major):
//   C     = V W                        [n, B]  (float64 accumulation whatever the dtype)
//   W_out = W - V^T C                  [P, B]
//   sq_norms[0, j] = ||W[:, j]||^2,  sq_norms[1, j] = ||W_out[:, j]||^2   (float64)
// Each pass reads V twice (once for C, once for the update: the update needs the whole C), W
// twice and writes W_out once; both column norms come out of those same reads (the first is
// the reference of the "twice is enough" test in fastspec.linalg, the second the norms of the
// result). float32 data is accumulated and updated in float64 and rounded once.
#pragma once

#include "fastspec/common.h"

namespace fastspec {

struct BlockOrthogonalizeArgs {
  const void* V;     // [n, P] basis rows, row stride P, dtype
  const void* W;     // [P, B] row-major, dtype
  void* W_out;       // [P, B] out, dtype (may not alias W)
  double* C;         // [n, B] out, float64
  double* sq_norms;  // [2, B] out, float64
  int64_t n;         // basis vectors (may be 0)
  int64_t P;         // vector length
  int64_t B;         // block columns (>= 1)
  DType dtype;
};

void block_orthogonalize_cpu(const BlockOrthogonalizeArgs& args);
void block_orthogonalize_cuda(const BlockOrthogonalizeArgs& args, const CudaLaunch& launch);

}  // namespace fastspec
