// ProcessGroupNCCL for CUDA ranks, one device per rank (LOCAL_RANK). The only translation unit that includes
// ProcessGroupNCCL.hpp, which needs nccl.h and CUDA's headers: cmake/Distributed.cmake compiles it with
// USE_C10D_NCCL only in a CUDA build (HYLO_CUDA=ON) that finds nccl.h.
#include "hylo/train/distributed.h"

#include <cstdlib>

#if defined(HYLO_HAVE_C10D_NCCL)
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace hylo::train {

Result<c10::intrusive_ptr<c10d::Backend>> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                                           int rank, int world, int local_rank,
                                                           std::chrono::milliseconds timeout) {
#if defined(HYLO_HAVE_C10D_NCCL)
  // Set before the first communicator exists; an explicit setting from the user wins (overwrite = 0).
  // NVLink SHARP / multicast stays off, as the GPU machines this project uses require.
  setenv("NCCL_NVLS_ENABLE", "0", 0);
  // A collective that exceeds the timeout (a dead or hung peer) makes the watchdog abort the communicator
  // and end this process with an error, instead of leaving the rank blocked in a kernel forever.
  setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1", 0);
  try {
    if (local_rank >= c10::cuda::device_count()) {
      return make_error("rank " + std::to_string(rank) + ": LOCAL_RANK=" + std::to_string(local_rank) +
                        " but this machine has " + std::to_string(c10::cuda::device_count()) +
                        " CUDA devices (one device per rank)");
    }
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(local_rank));
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = timeout;
    return c10::intrusive_ptr<c10d::Backend>(
        c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, options));
  } catch (const std::exception& e) {
    std::string what = e.what();
    if (auto nl = what.find('\n'); nl != std::string::npos) what.resize(nl);
    return make_error("rank " + std::to_string(rank) + " of " + std::to_string(world) +
                      ": creating the NCCL process group failed: " + what);
  }
#else
  (void)store, (void)rank, (void)world, (void)local_rank, (void)timeout;
  return make_error("this hylo was built without NCCL (a CUDA build, HYLO_CUDA=ON, that finds nccl.h enables "
                    "it); CUDA ranks need it. Train on CPU ranks (Gloo) or rebuild with the cuda-release preset");
#endif
}

}  // namespace hylo::train
