// fork/exec of the ranks, the launcher-hosted TCPStore, and the wait loop that ends the job when a rank
// fails. See distributed_launch.h.
#include "hylo/train/distributed_launch.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <thread>

extern char** environ;

namespace hylo::train {
namespace {

std::atomic<int> g_forward_signal{0};
void remember_signal(int sig) { g_forward_signal.store(sig); }

// A listening TCP socket on 127.0.0.1 with a kernel-chosen port; the TCPStore server takes it over.
Result<std::pair<int, int>> listen_on_loopback() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_error(std::string("launcher: socket(): ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 128) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::string err = std::strerror(errno);
    ::close(fd);
    return make_error("launcher: cannot listen on 127.0.0.1: " + err);
  }
  return std::make_pair(fd, static_cast<int>(ntohs(addr.sin_port)));
}

std::string describe(const RankExit& r) {
  if (r.signaled) return "was killed by signal " + std::to_string(r.signal) + " (" + strsignal(r.signal) + ")";
  return "exited with status " + std::to_string(r.exit_status);
}

}  // namespace

int LaunchReport::exit_code() const {
  if (first_failed_rank < 0) return stopped_by_signal != 0 ? 128 + stopped_by_signal : 0;
  const RankExit& r = ranks[static_cast<size_t>(first_failed_rank)];
  return r.signaled ? 128 + r.signal : r.exit_status;
}

Result<std::vector<std::string>> own_command_line() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  if (!in) return make_error("launcher: cannot read /proc/self/cmdline (needed to start the ranks)");
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> argv;
  size_t start = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    if (all[i] == '\0') {
      argv.push_back(all.substr(start, i - start));
      start = i + 1;
    }
  }
  if (argv.empty()) return make_error("launcher: /proc/self/cmdline is empty");
  return argv;
}

Result<int> take_nproc_option(std::vector<std::string>& argv) {
  for (size_t i = 0; i < argv.size(); ++i) {
    std::string value;
    size_t erase = 0;
    if (argv[i] == "--nproc") {
      if (i + 1 >= argv.size()) return make_error("--nproc: expected a number of processes after it");
      value = argv[i + 1];
      erase = 2;
    } else if (argv[i].rfind("--nproc=", 0) == 0) {
      value = argv[i].substr(8);
      erase = 1;
    } else {
      continue;
    }
    char* end = nullptr;
    long n = std::strtol(value.c_str(), &end, 10);
    if (value.empty() || *end != '\0' || n < 1 || n > 4096) {
      return make_error("--nproc '" + value + "': expected a number of processes in [1, 4096]");
    }
    argv.erase(argv.begin() + static_cast<std::ptrdiff_t>(i), argv.begin() + static_cast<std::ptrdiff_t>(i + erase));
    return static_cast<int>(n);
  }
  return 0;
}

Result<LaunchReport> launch_local_ranks(const std::vector<std::string>& argv, const LaunchOptions& options) {
  if (argv.empty()) return make_error("launcher: empty command line");
  const int n = options.nproc;
  HYLO_TRY(auto listening, listen_on_loopback());
  auto [listen_fd, port] = listening;

  // The store lives as long as the job: ranks use it for the backend's rendezvous (and Gloo's connections).
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(port);
  so.isServer = true;
  so.waitWorkers = false;
  so.masterListenFd = listen_fd;
  c10::intrusive_ptr<c10d::TCPStore> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", so);
  } catch (const std::exception& e) {
    ::close(listen_fd);
    std::string what = e.what();
    if (auto nl = what.find('\n'); nl != std::string::npos) what.resize(nl);
    return make_error("launcher: cannot start the TCPStore on 127.0.0.1:" + std::to_string(port) + ": " + what);
  }

  // Everything the children need is built before fork(): between fork and exec only async-signal-safe calls.
  std::vector<std::vector<std::string>> envs(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) {
    auto& e = envs[static_cast<size_t>(r)];
    for (char** p = environ; *p != nullptr; ++p) {
      std::string kv = *p;
      std::string key = kv.substr(0, kv.find('='));
      static const char* kOurs[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                                    "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE"};
      bool ours = false;
      for (const char* k : kOurs) ours = ours || key == k;
      if (!ours) e.push_back(kv);
    }
    e.push_back("RANK=" + std::to_string(r));
    e.push_back("WORLD_SIZE=" + std::to_string(n));
    e.push_back("LOCAL_RANK=" + std::to_string(r));
    e.push_back("LOCAL_WORLD_SIZE=" + std::to_string(n));
    e.push_back("MASTER_ADDR=127.0.0.1");
    e.push_back("MASTER_PORT=" + std::to_string(port));
    e.push_back("TORCHELASTIC_USE_AGENT_STORE=True");
    for (const auto& kv : options.extra_env) e.push_back(kv);
  }
  auto to_c = [](std::vector<std::string>& v) {
    std::vector<char*> out;
    for (auto& s : v) out.push_back(s.data());
    out.push_back(nullptr);
    return out;
  };
  std::vector<std::string> args = argv;
  std::vector<char*> c_argv = to_c(args);
  std::vector<std::vector<char*>> c_envs;
  for (auto& e : envs) c_envs.push_back(to_c(e));

  // Forward SIGINT/SIGTERM to the ranks rather than dying and leaving them behind.
  struct sigaction sa{}, old_int{}, old_term{};
  sa.sa_handler = remember_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  g_forward_signal.store(0);

  // SIGCHLD stays blocked here and is waited for (sigtimedwait below), so the launcher wakes the moment a rank
  // ends: which rank failed first is then told apart even when its peer fails a few milliseconds later.
  sigset_t chld, old_mask;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &chld, &old_mask);

  LaunchReport report;
  report.ranks.resize(static_cast<size_t>(n));
  std::vector<bool> running(static_cast<size_t>(n), false);
  const pid_t parent = ::getpid();
  std::string spawn_error;
  for (int r = 0; r < n; ++r) {
    pid_t pid = ::fork();
    if (pid == 0) {
      // A rank must not outlive the launcher (a killed launcher would otherwise leave ranks blocked).
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      // Its own process group: a terminal's Ctrl-C reaches only the launcher, which forwards it once. (Reaching
      // the ranks directly too, the forwarded copy would be a second signal, which ends a rank at once.)
      ::setpgid(0, 0);
      pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);  // the rank gets the signal mask the launcher started with
      ::execve("/proc/self/exe", c_argv.data(), c_envs[static_cast<size_t>(r)].data());
      ::_exit(127);
    }
    if (pid < 0) {
      spawn_error = std::string("launcher: fork() for rank ") + std::to_string(r) + ": " + std::strerror(errno);
      break;
    }
    report.ranks[static_cast<size_t>(r)].rank = r;
    report.ranks[static_cast<size_t>(r)].pid = pid;
    running[static_cast<size_t>(r)] = true;
  }

  auto signal_running = [&](int sig) {
    for (int r = 0; r < n; ++r) {
      if (running[static_cast<size_t>(r)]) ::kill(report.ranks[static_cast<size_t>(r)].pid, sig);
    }
  };
  using Clock = std::chrono::steady_clock;
  Clock::time_point failed_at{};
  int stage = 0;  // 0: all well; 1: a rank failed, grace; 2: SIGTERM sent; 3: SIGKILL sent
  if (!spawn_error.empty()) {
    signal_running(SIGKILL);
    stage = 3;
  }
  int live = 0;
  for (bool b : running) live += b;
  while (live > 0) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      for (int r = 0; r < n; ++r) {
        RankExit& x = report.ranks[static_cast<size_t>(r)];
        if (!running[static_cast<size_t>(r)] || x.pid != pid) continue;
        running[static_cast<size_t>(r)] = false;
        --live;
        x.signaled = WIFSIGNALED(status);
        x.signal = x.signaled ? WTERMSIG(status) : 0;
        x.exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 0;
        x.killed_by_launcher = stage >= 2;
        // After a forwarded SIGINT/SIGTERM, 128 + that signal is the rank's orderly stop (checkpoint written):
        // no grace period and no SIGTERM/SIGKILL for the others, which are stopping at the same step.
        const bool orderly = report.stopped_by_signal != 0 && !x.signaled &&
                             (x.exit_status == 128 + SIGINT || x.exit_status == 128 + SIGTERM);
        bool failed = !orderly && (x.signaled || x.exit_status != 0);
        if (failed && report.first_failed_rank < 0) {
          report.first_failed_rank = r;
          failed_at = Clock::now();
          stage = std::max(stage, 1);
        }
      }
      continue;
    }
    if (int sig = g_forward_signal.exchange(0); sig != 0) {
      signal_running(sig);
      if (report.stopped_by_signal == 0) report.stopped_by_signal = sig;
    }
    if (stage >= 1 && stage < 3) {
      auto since = Clock::now() - failed_at;
      if (stage == 1 && since >= options.grace) {
        signal_running(SIGTERM);
        stage = 2;
      } else if (stage == 2 && since >= 2 * options.grace) {
        signal_running(SIGKILL);
        stage = 3;
      }
    }
    const timespec poll{0, 20'000'000};  // 20 ms at most: the grace timers and forwarded signals are checked
    sigtimedwait(&chld, nullptr, &poll);
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  if (!spawn_error.empty()) return make_error(spawn_error);

  if (report.first_failed_rank >= 0) {
    const RankExit& first = report.ranks[static_cast<size_t>(report.first_failed_rank)];
    report.message = "rank " + std::to_string(first.rank) + " of " + std::to_string(n) + " (pid " +
                     std::to_string(first.pid) + ") " + describe(first) + "; the job was stopped.";
    for (const RankExit& r : report.ranks) {
      if (r.rank == first.rank) continue;
      report.message += " Rank " + std::to_string(r.rank) + " " + describe(r) +
                        (r.killed_by_launcher ? " (stopped by the launcher)." : ".");
    }
  }
  return report;
}

}  // namespace hylo::train
