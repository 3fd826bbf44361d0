// compare-runs' library: metrics read back (cut lines skipped, peak memory kept), differences against the first
// run only at the steps both logged, and the chart and table written.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "hylo/core/file_util.h"
#include "hylo/train/run_compare.h"

namespace hylo::train {
namespace {

namespace fs = std::filesystem;

const char* kOne =
    "{\"step\":0,\"tokens\":0,\"heldout_loss\":2.0}\n"
    "{\"step\":10,\"loss\":1.5,\"tokens_per_s\":1000,\"peak_gpu_bytes\":3221225472}\n"
    "{\"step\":20,\"loss\":1.0,\"tokens_per_s\":1100,\"peak_gpu_bytes\":3221225472}\n"
    "{\"step\":20,\"tokens\":5,\"heldout_loss\":1.2}\n";
const char* kTwo =
    "{\"step\":0,\"tokens\":0,\"heldout_loss\":2.0}\n"
    "{\"step\":10,\"loss\":1.53,\"tokens_per_s\":1900,\"peak_gpu_bytes\":2147483648}\n"
    "{\"step\":15,\"loss\":9.0,\"tokens_per_s\":1950}\n"  // logged by this run only: not compared
    "{\"step\":20,\"loss\":0.99,\"tokens_per_s\":2000}\n"
    "{\"step\":20,\"tokens\":5,\"heldout_loss\":1.25}\n"
    "{\"step\":30,\"lo";  // cut by a kill

TEST(RunCompare, DiffsOnlyAtCommonStepsAndKeepsThePeak) {
  const RunCurves a = parse_run_curves("1 GPU", kOne), b = parse_run_curves("2 GPUs", kTwo);
  ASSERT_EQ(b.step.size(), 3u);
  EXPECT_EQ(b.eval_step.size(), 2u);
  const auto rows = compare_runs({a, b});
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_TRUE(std::isnan(rows[0].max_loss_diff));
  EXPECT_EQ(rows[0].last_step, 20);
  EXPECT_DOUBLE_EQ(rows[0].peak_gpu_bytes, 3221225472.0);
  EXPECT_DOUBLE_EQ(rows[1].tokens_per_s, 2000);
  EXPECT_EQ(rows[1].common_steps, 2);
  EXPECT_NEAR(rows[1].max_loss_diff, 0.03, 1e-12);          // step 10: 1.53 - 1.5; step 15 is not compared
  EXPECT_NEAR(rows[1].max_loss_rel_diff, 0.02, 1e-12);      // 0.03 / 1.5 > 0.01 / 1.0
  EXPECT_NEAR(rows[1].max_heldout_diff, 0.05, 1e-12);
  const std::string md = comparison_markdown(rows);
  EXPECT_NE(md.find("| 2 GPUs | 20 | 0.9900 | 1.2500 | 2000 | 2.00 | 0.0300 (2.00%) | 0.0500 | 2 |"), std::string::npos)
      << md;
}

TEST(RunCompare, ReadsStageDirectoriesWritesTheChartAndRejectsForeignFiles) {
  const fs::path d = fs::temp_directory_path() / ("hylo-run-compare-" + std::to_string(::getpid()));
  fs::create_directories(d / "one");
  write_file_atomic(d / "one" / "metrics.jsonl", std::string(kOne)).value_or_throw();
  write_file_atomic(d / "two.jsonl", std::string(kTwo)).value_or_throw();
  write_file_atomic(d / "other.jsonl", std::string("{\"name\":\"not metrics\"}\n")).value_or_throw();
  const RunCurves a = read_run_curves("a", d / "one").value_or_throw();
  const RunCurves b = read_run_curves("b", d / "two.jsonl").value_or_throw();
  ASSERT_TRUE(write_comparison_svg({a, b}, d / "c.svg", "t").ok());
  const std::string svg = read_text_file(d / "c.svg").value_or_throw();
  EXPECT_NE(svg.find("b held-out"), std::string::npos);
  const auto bad = read_run_curves("x", d / "other.jsonl");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().find("other.jsonl"), std::string::npos);
  EXPECT_FALSE(read_run_curves("x", d / "missing.jsonl").ok());
  fs::remove_all(d);
}

}  // namespace
}  // namespace hylo::train
