// The local launcher behind `hylo train --nproc N`: runs N copies of this executable as ranks 0..N-1 of one
// data-parallel job on this host, as torchrun would, and turns the death of any rank into the end of the job
// with a message naming the rank and how it ended -- never a job that hangs on a dead peer.
//
// The launcher hosts the job's TCPStore itself, on a port the kernel picks on 127.0.0.1 (so two jobs never
// race for a port), and gives each child torchrun's variables: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
// MASTER_ADDR=127.0.0.1, MASTER_PORT and TORCHELASTIC_USE_AGENT_STORE=True (all ranks are store clients).
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "hylo/core/result.h"

namespace hylo::train {

struct LaunchOptions {
  int nproc = 1;
  // After the first rank fails, the others get this long to notice (their collectives fail and they print
  // their own error) before they are sent SIGTERM, and as long again before SIGKILL.
  std::chrono::milliseconds grace{5000};
  // Extra environment variables for every child ("NAME=value"), e.g. a test's instructions.
  std::vector<std::string> extra_env;
};

struct RankExit {
  int rank = 0;
  int pid = 0;
  int exit_status = 0;  // valid when !signaled
  int signal = 0;       // valid when signaled
  bool signaled = false;
  bool killed_by_launcher = false;  // ended by the launcher after another rank failed
};

struct LaunchReport {
  std::vector<RankExit> ranks;  // by rank
  int first_failed_rank = -1;   // -1: every rank exited with status 0 (or stopped in order, below)
  // The SIGINT/SIGTERM the launcher forwarded to the ranks (0: none). A rank that then exits with 128 + that
  // signal stopped in order (`hylo train` checkpoints first), which is not a failure.
  int stopped_by_signal = 0;
  std::string message;          // empty on success; otherwise says which rank died first and how
  // The exit code for the launching process: 0, the first failed rank's status, or 128 + its signal; 128 + the
  // forwarded signal after an orderly stop.
  int exit_code() const;
};

// Runs `argv` (argv[0] is only the name the children see; the program is /proc/self/exe, this executable)
// `options.nproc` times with the rank variables set, and waits for all of them. Errors are only for what
// prevented the launch (socket, store, fork); a rank's failure is reported in LaunchReport.
Result<LaunchReport> launch_local_ranks(const std::vector<std::string>& argv, const LaunchOptions& options);

// This process's own command line, from /proc/self/cmdline (what a launching command re-runs).
Result<std::vector<std::string>> own_command_line();

// Removes "--nproc N" / "--nproc=N" from a command line (the children must not launch again). Returns the
// count found, or 0 when the option is absent.
Result<int> take_nproc_option(std::vector<std::string>& argv);

}  // namespace hylo::train
