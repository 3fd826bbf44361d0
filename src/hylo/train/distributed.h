// Data-parallel process groups on libtorch's c10d: who this process is (rank, world, local device), the
// TCPStore rendezvous, and the collective backend -- ProcessGroupGloo on CPU, ProcessGroupNCCL on CUDA (one
// device per rank, LOCAL_RANK). The trainer does not use this directly: train/distributed_data_parallel.h
// turns a ProcessGroup into the trainer's SyncHooks.
//
// Identity comes from torchrun's environment variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
// MASTER_PORT), set either by an external launcher or by `hylo train --nproc N` (train/distributed_launch.h).
// hylo's data parallelism is single-host: MASTER_ADDR must be a loopback address, and Gloo binds 127.0.0.1.
//
// Failure is loud, never a hang: every collective has a timeout (HYLO_DIST_TIMEOUT_S, default 300 s), a
// collective whose peer died throws hylo::Error naming this rank, the operation and the likely cause, and the
// launcher kills the surviving ranks when one dies.
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "hylo/core/result.h"

namespace hylo::train {

// This process's place in the job, as torchrun's environment variables give it.
struct DistEnv {
  int rank = 0;
  int world = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  // torchrun's TORCHELASTIC_USE_AGENT_STORE: the launcher already hosts the TCPStore, every rank is a
  // client. Otherwise rank 0 hosts it.
  bool store_hosted_by_launcher = false;
};

// Reads RANK, WORLD_SIZE, LOCAL_RANK (default RANK), MASTER_ADDR (default 127.0.0.1), MASTER_PORT and
// TORCHELASTIC_USE_AGENT_STORE. Without RANK and WORLD_SIZE: one process (rank 0 of 1). Errors name the
// variable and what was expected (integers in range, a loopback address, a port for WORLD_SIZE > 1).
Result<DistEnv> dist_env_from_environment();
// HYLO_DIST_GROUP_OF_ONE=1: make the process group (and the data-parallel hooks) even for one rank, so that a
// single device exercises the backend (NCCL on one GPU, Gloo on the CPU); needs MASTER_PORT. Results equal the
// run without a group (test TrainerDist.GroupOfOneEqualsOneProcess).
bool group_of_one_requested();

// The collective timeout: HYLO_DIST_TIMEOUT_S seconds if set (a positive number), else 300 s.
Result<std::chrono::milliseconds> dist_timeout_from_environment();

// A rank's view of the job: the store, the backend and a few blocking helpers whose errors say which rank,
// which operation, and what probably happened.
class ProcessGroup {
 public:
  // Rendezvous through the TCPStore at env.master_addr:env.master_port and create the backend for `device`
  // (kCPU: Gloo over 127.0.0.1; kCUDA: NCCL on device env.local_rank, NVLink multicast off).
  static Result<std::shared_ptr<ProcessGroup>> create(const DistEnv& env, at::Device device,
                                                      std::chrono::milliseconds timeout);

  int rank() const { return rank_; }
  int world() const { return world_; }
  at::Device device() const { return device_; }
  std::chrono::milliseconds timeout() const { return timeout_; }
  const std::string& backend_name() const { return backend_name_; }
  c10d::Backend& backend() { return *backend_; }

  // Asynchronous SUM all-reduce of one tensor in place (the caller keeps it alive until wait()).
  c10::intrusive_ptr<c10d::Work> all_reduce_sum_async(at::Tensor& tensor);
  // Asynchronous broadcast of `tensor` from rank `root` in place.
  c10::intrusive_ptr<c10d::Work> broadcast_async(at::Tensor& tensor, int root);
  // Waits for `work`; an exception or a timeout becomes hylo::Error naming this rank and `what`.
  void wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what);

  void all_reduce_sum(at::Tensor& tensor, const std::string& what);
  void broadcast(at::Tensor& tensor, int root, const std::string& what);
  void barrier(const std::string& what);

  ProcessGroup(c10::intrusive_ptr<c10d::Store> store, c10::intrusive_ptr<c10d::Backend> backend, int rank,
               int world, at::Device device, std::chrono::milliseconds timeout);

 private:
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::Backend> backend_;
  int rank_;
  int world_;
  at::Device device_;
  std::chrono::milliseconds timeout_;
  std::string backend_name_;
};

// Backend constructors, each in its own translation unit because each needs its library's headers
// (distributed_gloo.cpp: gloo's, from Debian's libgloo-dev; distributed_nccl.cpp: nccl.h and CUDA's). A build
// without them returns an error saying what to install or enable.
// Whether this build has the CPU (Gloo) process group: false where gloo's headers were missing at configure time.
bool has_gloo_backend();
Result<c10::intrusive_ptr<c10d::Backend>> make_gloo_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                                           int rank, int world,
                                                           std::chrono::milliseconds timeout);
Result<c10::intrusive_ptr<c10d::Backend>> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                                           int rank, int world, int local_rank,
                                                           std::chrono::milliseconds timeout);

}  // namespace hylo::train
