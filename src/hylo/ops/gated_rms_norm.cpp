#include "hylo/ops/gated_rms_norm.h"

#include <string>
#include <vector>

#include "hylo/core/result.h"
#include "hylo/ops/tensor_util.h"

namespace hylo {

at::Tensor gated_rms_norm(const at::Tensor& x, const at::Tensor& gate, const at::Tensor& weight, double eps,
                          bool norm_before_gate, int64_t group_size) {
  if (x.dim() < 1) throw Error("gated_rms_norm: x must have at least one dimension");
  if (!gate.sizes().equals(x.sizes()))
    throw Error("gated_rms_norm: gate must have the shape of x " + std::string(c10::str(x.sizes())) + ", got " +
                c10::str(gate.sizes()));
  if (weight.dim() != 1) throw Error("gated_rms_norm: weight must be 1-D, got " + c10::str(weight.sizes()));
  const int64_t N = x.size(-1);
  const int64_t G = group_size > 0 ? group_size : weight.size(0);
  if (G <= 0 || N % G != 0)
    throw Error("gated_rms_norm: group width " + std::to_string(G) + " must divide the last dim N=" +
                std::to_string(N));
  if (weight.size(0) != G && weight.size(0) != N)
    throw Error("gated_rms_norm: weight must be [" + std::to_string(G) + "] or [" + std::to_string(N) + "], got " +
                c10::str(weight.sizes()));

  const at::ScalarType ct = compute_type(x.scalar_type());
  std::vector<int64_t> grouped(x.sizes().begin(), x.sizes().end() - 1);
  grouped.push_back(N / G);
  grouped.push_back(G);
  at::Tensor xg = x.to(ct).reshape(grouped);                    // [..., N/G, G]
  at::Tensor zg = at::silu(gate.to(ct)).reshape(grouped);       // [..., N/G, G]
  at::Tensor w = weight.to(ct).reshape(weight.size(0) == G && N != G ? std::vector<int64_t>{G}
                                                                      : std::vector<int64_t>{N / G, G});
  at::Tensor u = norm_before_gate ? xg : xg * zg;               // [..., N/G, G]
  at::Tensor y = u * at::rsqrt(u.pow(2).mean(-1, /*keepdim=*/true) + eps) * w;
  if (norm_before_gate) y = y * zg;
  return y.reshape(x.sizes()).to(x.scalar_type());
}

}  // namespace hylo
