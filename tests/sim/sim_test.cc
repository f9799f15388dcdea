// Runs the replication core through many seeded worlds (see sim_world.h). REPLD_SIM_SEEDS sets
// how many per protocol (default 1000, 3000 worlds in all; the ASan pass of CI runs 30; run more
// on demand), and
// REPLD_SIM_SEED replays one seed with the end of its log (REPLD_SIM_LOG_LINES lines, 40 unless
// set). REPLD_SIM_SEED_FIRST starts the range elsewhere than seed 1, so that a long run splits
// into ranges (processes, cores, sessions).
#include <gtest/gtest.h>

#include <malloc.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "sim_world.h"

namespace repld::sim {
namespace {

uint64_t EnvNumber(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

void RunSeeds(Protocol protocol) {
  // Frames and buffers of a megabyte come and go by the thousand: from the heap, not fresh
  // mappings each time (which the kernel zeroes page by page).
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  const uint64_t only = EnvNumber("REPLD_SIM_SEED", 0);
  const uint64_t count = only != 0 ? 1 : EnvNumber("REPLD_SIM_SEEDS", 1000);
  const uint64_t first = std::max<uint64_t>(EnvNumber("REPLD_SIM_SEED_FIRST", 1), 1);
  uint64_t reads_checked = 0, remote_reads = 0, raced = 0, won = 0;
  World::FaultCounts faults;
  for (uint64_t k = 0; k < count; ++k) {
    SimOptions o;
    o.seed = only != 0 ? only : first + k;
    o.protocol = protocol;
    World world(o);
    std::string failure;
    try {
      failure = world.Run();
    } catch (const std::exception& e) {
      failure = std::string("exception: ") + e.what();
    }
    reads_checked += world.reads_checked();
    remote_reads += world.remote_reads();
    raced += world.promotions_raced();
    won += world.promotions_won();
    const World::FaultCounts& f = world.fault_counts();
    faults.apply_errors += f.apply_errors;
    faults.flush_errors += f.flush_errors;
    faults.resync_write_errors += f.resync_write_errors;
    faults.primary_write_errors += f.primary_write_errors;
    faults.metadata_errors += f.metadata_errors;
    faults.primary_flush_errors += f.primary_flush_errors;
    faults.primary_metadata_errors += f.primary_metadata_errors;
    faults.source_read_errors += f.source_read_errors;
    faults.read_errors += f.read_errors;
    faults.detaches += f.detaches;
    faults.pass_on_failures += f.pass_on_failures;
    faults.diskless_primaries += f.diskless_primaries;
    faults.primary_attaches += f.primary_attaches;
    faults.refusals_checked += f.refusals_checked;
    faults.refusals_primary_dead += f.refusals_primary_dead;
    faults.verifies += f.verifies;
    faults.half_open += f.half_open;
    faults.trims += f.trims;
    if (!failure.empty() || only != 0) {
      std::string tail;
      const auto& log = world.log();
      const size_t lines = EnvNumber("REPLD_SIM_LOG_LINES", 40);
      for (size_t i = log.size() > lines ? log.size() - lines : 0; i < log.size(); ++i) {
        tail += "  " + log[i] + "\n";
      }
      ASSERT_TRUE(failure.empty())
          << "protocol " << ProtocolLetter(protocol) << " seed " << o.seed << " failed: " << failure
          << "\nreplay: REPLD_SIM_SEED=" << o.seed << "\nlast log lines:\n"
          << tail;
      std::printf("protocol %c seed %llu passed; last log lines:\n%s", ProtocolLetter(protocol),
                  static_cast<unsigned long long>(o.seed), tail.c_str());
    }
    if (only == 0 && (k + 1) % 1000 == 0) {
      // A long run's progress, should it be stopped before its end.
      std::printf("protocol %c: seeds %llu to %llu passed\n", ProtocolLetter(protocol),
                  static_cast<unsigned long long>(first),
                  static_cast<unsigned long long>(first + k));
      std::fflush(stdout);
    }
  }
  // Fast failback (phase 7) must have read, and from the peer too, or it proved nothing.
  if (only == 0 && count >= 20) {
    EXPECT_GT(reads_checked, 0u);
    EXPECT_GT(remote_reads, 0u);
    // Crossed promotions on a connected pair end with one Primary, unless the link was cut.
    EXPECT_GT(raced, 0u);
    EXPECT_GT(won, raced / 2);
  }
  // A fault that never fires proves nothing: over many seeds each must have happened.
  if (only == 0 && count >= 200) {
    EXPECT_GT(faults.apply_errors, 0u);
    EXPECT_GT(faults.flush_errors, 0u);
    EXPECT_GT(faults.resync_write_errors, 0u);
    EXPECT_GT(faults.primary_write_errors, 0u);
    EXPECT_GT(faults.metadata_errors, 0u);
    EXPECT_GT(faults.primary_flush_errors, 0u);
    EXPECT_GT(faults.primary_metadata_errors, 0u);
    EXPECT_GT(faults.source_read_errors, 0u);
    EXPECT_GT(faults.read_errors, 0u);
    EXPECT_GT(faults.detaches, 0u);
    EXPECT_GT(faults.pass_on_failures, 0u);
    EXPECT_GT(faults.diskless_primaries, 0u);
    EXPECT_GT(faults.primary_attaches, 0u);
    EXPECT_GT(faults.refusals_checked, 0u);
    EXPECT_GT(faults.refusals_primary_dead, 0u);
    EXPECT_GT(faults.verifies, 0u);
    EXPECT_GT(faults.half_open, 0u);
    EXPECT_GT(faults.trims, 0u);
  }
  if (only == 0) {
    std::printf("protocol %c: seeds %llu to %llu\n", ProtocolLetter(protocol),
                static_cast<unsigned long long>(first),
                static_cast<unsigned long long>(first + count - 1));
  }
  std::printf(
      "protocol %c: %llu fast-failback reads checked, %llu served by the peer; %llu crossed "
      "promotions, %llu with one Primary\n",
      ProtocolLetter(protocol), static_cast<unsigned long long>(reads_checked),
      static_cast<unsigned long long>(remote_reads), static_cast<unsigned long long>(raced),
      static_cast<unsigned long long>(won));
  auto u = [](uint64_t v) { return static_cast<unsigned long long>(v); };
  std::printf(
      "protocol %c: disk errors injected: %llu applies, %llu peer flushes, %llu resync writes, "
      "%llu Primary writes, %llu metadata writes; %llu detaches (attached again), %llu pass_on "
      "failures; %llu promotions of a failed node refused (%llu with the Primary dead)\n",
      ProtocolLetter(protocol), u(faults.apply_errors), u(faults.flush_errors),
      u(faults.resync_write_errors), u(faults.primary_write_errors), u(faults.metadata_errors),
      u(faults.detaches),
      u(faults.pass_on_failures), u(faults.refusals_checked), u(faults.refusals_primary_dead));
  std::printf("protocol %c: disk errors injected: %llu Primary flushes, %llu Primary metadata "
              "writes, %llu reads by a sync source, %llu other reads\n",
              ProtocolLetter(protocol), u(faults.primary_flush_errors),
              u(faults.primary_metadata_errors), u(faults.source_read_errors),
              u(faults.read_errors));
  std::printf("protocol %c: %llu Primaries went Diskless and served through the peer, %llu took "
              "their disk again as Primary\n",
              ProtocolLetter(protocol), u(faults.diskless_primaries), u(faults.primary_attaches));
  std::printf("protocol %c: %llu trims or zeroes acknowledged\n", ProtocolLetter(protocol),
              u(faults.trims));
  std::printf("protocol %c: %llu half-open links\n", ProtocolLetter(protocol), u(faults.half_open));
  std::printf("protocol %c: %llu online verifies after healing\n", ProtocolLetter(protocol),
              u(faults.verifies));
}

TEST(Sim, ProtocolCLosesNoAcknowledgedWrite) { RunSeeds(Protocol::kC); }
TEST(Sim, ProtocolBConverges) { RunSeeds(Protocol::kB); }
TEST(Sim, ProtocolAConverges) { RunSeeds(Protocol::kA); }

}  // namespace
}  // namespace repld::sim
