// Process group creation (environment, TCPStore rendezvous, backend choice) and the blocking collective
// helpers with rank-naming errors. See distributed.h.
#include "hylo/train/distributed.h"

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <exception>

namespace hylo::train {
namespace {

// Parses an integer environment variable; nullopt when unset.
Result<std::optional<long>> env_int(const char* name, long lo, long hi) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::optional<long>{};
  char* end = nullptr;
  errno = 0;
  long x = std::strtol(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || x < lo || x > hi) {
    return make_error("environment variable " + std::string(name) + "='" + v + "': expected an integer in [" +
                      std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return std::optional<long>{x};
}

bool is_loopback(const std::string& addr) {
  return addr.rfind("127.", 0) == 0 || addr == "localhost" || addr == "::1";
}

}  // namespace

bool group_of_one_requested() {
  const char* v = std::getenv("HYLO_DIST_GROUP_OF_ONE");
  return v != nullptr && std::string(v) == "1";
}

Result<DistEnv> dist_env_from_environment() {
  DistEnv env;
  HYLO_TRY(auto world, env_int("WORLD_SIZE", 1, 1 << 16));
  HYLO_TRY(auto rank, env_int("RANK", 0, (1 << 16) - 1));
  if (!world && !rank && !group_of_one_requested()) return env;  // not launched as a rank: one process
  if (!world && !rank) {
    world = 1;  // a group of one asked for without a launcher
    rank = 0;
  }
  if (!world || !rank) {
    return make_error(std::string("environment: RANK and WORLD_SIZE must be set together (found only ") +
                      (world ? "WORLD_SIZE" : "RANK") + ")");
  }
  env.world = static_cast<int>(*world);
  env.rank = static_cast<int>(*rank);
  if (env.rank >= env.world) {
    return make_error("environment: RANK=" + std::to_string(env.rank) + " must be < WORLD_SIZE=" +
                      std::to_string(env.world));
  }
  HYLO_TRY(auto local, env_int("LOCAL_RANK", 0, (1 << 16) - 1));
  env.local_rank = local ? static_cast<int>(*local) : env.rank;
  if (const char* a = std::getenv("MASTER_ADDR"); a != nullptr && *a != '\0') env.master_addr = a;
  if (!is_loopback(env.master_addr)) {
    return make_error("environment variable MASTER_ADDR='" + env.master_addr +
                      "': hylo's data parallelism is single-host; expected a loopback address (127.0.0.1)");
  }
  HYLO_TRY(auto port, env_int("MASTER_PORT", 1, 65535));
  if (!port && (env.world > 1 || group_of_one_requested())) {
    return make_error("environment: MASTER_PORT is not set (expected the TCPStore's port, 1..65535)");
  }
  env.master_port = port ? static_cast<int>(*port) : 0;
  if (const char* s = std::getenv("TORCHELASTIC_USE_AGENT_STORE")) {
    env.store_hosted_by_launcher = std::string(s) == "True" || std::string(s) == "1";
  }
  return env;
}

Result<std::chrono::milliseconds> dist_timeout_from_environment() {
  const char* v = std::getenv("HYLO_DIST_TIMEOUT_S");
  if (v == nullptr || *v == '\0') return std::chrono::milliseconds(300'000);
  char* end = nullptr;
  double s = std::strtod(v, &end);
  if (end == v || *end != '\0' || !(s > 0) || s > 86400) {
    return make_error(std::string("environment variable HYLO_DIST_TIMEOUT_S='") + v +
                      "': expected seconds, a number in (0, 86400]");
  }
  return std::chrono::milliseconds(static_cast<int64_t>(s * 1000));
}

ProcessGroup::ProcessGroup(c10::intrusive_ptr<c10d::Store> store, c10::intrusive_ptr<c10d::Backend> backend,
                           int rank, int world, at::Device device, std::chrono::milliseconds timeout)
    : store_(std::move(store)), backend_(std::move(backend)), rank_(rank), world_(world), device_(device),
      timeout_(timeout), backend_name_(backend_->getBackendName()) {}

Result<std::shared_ptr<ProcessGroup>> ProcessGroup::create(const DistEnv& env, at::Device device,
                                                           std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(env.master_port);
  so.isServer = env.rank == 0 && !env.store_hosted_by_launcher;
  so.numWorkers = static_cast<std::size_t>(env.world);
  so.waitWorkers = true;  // the rendezvous itself: construction returns once every rank has connected
  so.timeout = timeout;
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
  } catch (const std::exception& e) {
    return make_error("rank " + std::to_string(env.rank) + " of " + std::to_string(env.world) +
                      ": TCPStore rendezvous at " + env.master_addr + ":" + std::to_string(env.master_port) +
                      " failed within " + std::to_string(timeout.count() / 1000) + " s: " + e.what());
  }
  Result<c10::intrusive_ptr<c10d::Backend>> backend =
      device.is_cuda() ? make_nccl_backend(store, env.rank, env.world, env.local_rank, timeout)
                       : make_gloo_backend(store, env.rank, env.world, timeout);
  if (!backend) return make_error(backend.error());
  at::Device dev = device.is_cuda() ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank))
                                    : at::Device(at::kCPU);
  return std::make_shared<ProcessGroup>(store, std::move(backend).value(), env.rank, env.world, dev, timeout);
}

c10::intrusive_ptr<c10d::Work> ProcessGroup::all_reduce_sum_async(at::Tensor& tensor) {
  std::vector<at::Tensor> ts{tensor};
  c10d::AllreduceOptions o;
  o.reduceOp = c10d::ReduceOp::SUM;
  o.timeout = timeout_;
  return backend_->allreduce(ts, o);
}

c10::intrusive_ptr<c10d::Work> ProcessGroup::broadcast_async(at::Tensor& tensor, int root) {
  std::vector<at::Tensor> ts{tensor};
  c10d::BroadcastOptions o;
  o.rootRank = root;
  o.rootTensor = 0;
  o.timeout = timeout_;
  return backend_->broadcast(ts, o);
}

void ProcessGroup::wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) {
  std::string cause;
  try {
    // NCCL: wait() without a timeout only makes the current CUDA stream wait (the host runs on, as DDP's does);
    // with one it would block the host until the collective ends. Its timeout is the watchdog's, set from the
    // same value at creation. Gloo: the host waits, bounded by the timeout.
    if (device_.is_cuda() ? work->wait() : work->wait(timeout_)) return;
    cause = "it did not complete within the timeout of " + std::to_string(timeout_.count() / 1000) +
            " s (HYLO_DIST_TIMEOUT_S)";
  } catch (const std::exception& e) {
    cause = e.what();
    // c10 errors carry a C++ backtrace after the first line; the first line is the message.
    if (auto nl = cause.find('\n'); nl != std::string::npos) cause.resize(nl);
    // Gloo words a timeout as "Timed out ...", "... timed out" or "Application timeout caused pair closure",
    // depending on where the wait was.
    std::string lower = cause;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower.find("timed out") != std::string::npos || lower.find("timeout") != std::string::npos) {
      cause += " (timed out: the timeout is " + std::to_string(timeout_.count() / 1000) + " s, HYLO_DIST_TIMEOUT_S)";
    }
  }
  throw Error("rank " + std::to_string(rank_) + " of " + std::to_string(world_) + ": " + backend_name_ + " " +
              what + " failed: " + cause +
              ". Another rank has probably exited or hung; the launcher's message says which.");
}

void ProcessGroup::all_reduce_sum(at::Tensor& tensor, const std::string& what) {
  wait(all_reduce_sum_async(tensor), what);
}

void ProcessGroup::broadcast(at::Tensor& tensor, int root, const std::string& what) {
  wait(broadcast_async(tensor, root), what);
}

void ProcessGroup::barrier(const std::string& what) {
  c10d::BarrierOptions o;
  o.timeout = timeout_;
  if (device_.is_cuda()) o.device_ids = {static_cast<int64_t>(device_.index())};
  wait(backend_->barrier(o), what);
}

}  // namespace hylo::train
