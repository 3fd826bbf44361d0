// ProcessGroupGloo for CPU ranks. The only translation unit that includes ProcessGroupGloo.hpp: that header
// needs gloo's own headers, which the torch wheel does not ship (its libtorch_cpu.so has Gloo compiled in).
// cmake/Distributed.cmake finds them (Debian's libgloo-dev) and defines USE_C10D_GLOO for this file only.
// What this file uses of gloo -- a shared_ptr to a transport device and the ProcessGroupGloo class, whose
// members hold gloo objects only through smart pointers -- does not depend on gloo's version.
#include "hylo/train/distributed.h"

#if defined(HYLO_HAVE_C10D_GLOO)
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif

namespace hylo::train {

Result<c10::intrusive_ptr<c10d::Backend>> make_gloo_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                                           int rank, int world,
                                                           std::chrono::milliseconds timeout) {
#if defined(HYLO_HAVE_C10D_GLOO)
  try {
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    // Loopback only: every rank of a hylo job is on this host, and nothing else is ever contacted.
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    // Two worker threads: one bucket can reduce while the next is queued (overlap with backward).
    options->threads = 2;
    return c10::intrusive_ptr<c10d::Backend>(c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, options));
  } catch (const std::exception& e) {
    std::string what = e.what();
    if (auto nl = what.find('\n'); nl != std::string::npos) what.resize(nl);
    return make_error("rank " + std::to_string(rank) + " of " + std::to_string(world) +
                      ": creating the Gloo process group failed: " + what);
  }
#else
  (void)store, (void)rank, (void)world, (void)timeout;
  return make_error("this hylo was built without gloo's headers, so it has no CPU process group; install "
                    "Debian's libgloo-dev (scripts/setup.sh does) and re-run the CMake configure step");
#endif
}

bool has_gloo_backend() {
#ifdef HYLO_HAVE_C10D_GLOO
  return true;
#else
  return false;
#endif
}

}  // namespace hylo::train
