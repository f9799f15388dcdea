// Runs the quorum world (quorum_world.h) over many seeds. REPLD_QSIM_SEEDS sets how many (default
// 2000), REPLD_QSIM_SEED_FIRST where they start, REPLD_QSIM_SEED replays one with its log.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "quorum_world.h"

namespace repld::qsim {
namespace {

uint64_t EnvNumber(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

std::string Tail(const std::vector<std::string>& log, size_t lines) {
  std::string tail;
  for (size_t i = log.size() > lines ? log.size() - lines : 0; i < log.size(); ++i) {
    tail += "  " + log[i] + "\n";
  }
  return tail;
}

TEST(QuorumSim, NeverTwoPrimariesNoAcknowledgedWriteLost) {
  const uint64_t only = EnvNumber("REPLD_QSIM_SEED", 0);
  const uint64_t count = only != 0 ? 1 : EnvNumber("REPLD_QSIM_SEEDS", 2000);
  const uint64_t first = EnvNumber("REPLD_QSIM_SEED_FIRST", 1);
  QuorumSimCounts total;
  for (uint64_t k = 0; k < count; ++k) {
    QuorumSimOptions o;
    o.seed = only != 0 ? only : first + k;
    QuorumWorld world(o);
    const std::string failure = world.Run();
    const QuorumSimCounts& c = world.counts();
    total.promotions += c.promotions;
    total.promotions_fenced += c.promotions_fenced;
    total.refusals += c.refusals;
    total.fences += c.fences;
    total.writes_acked += c.writes_acked;
    total.demotions_without_quorum += c.demotions_without_quorum;
    total.crashes += c.crashes;
    total.cuts += c.cuts;
    total.outdated_notices += c.outdated_notices;
    total.resyncs += c.resyncs;
    total.refused_handshakes += c.refused_handshakes;
    total.promotions_without_vote += c.promotions_without_vote;
    const size_t lines = EnvNumber("REPLD_QSIM_LOG_LINES", 60);
    ASSERT_TRUE(failure.empty()) << "seed " << o.seed << " failed: " << failure
                                 << "\nreplay: REPLD_QSIM_SEED=" << o.seed << "\nlast log lines:\n"
                                 << Tail(world.log(), lines);
    if (only != 0)
      std::printf("seed %llu passed:\n%s", (unsigned long long)o.seed,
                  Tail(world.log(), lines).c_str());
  }
  std::printf(
      "quorum: seeds %llu to %llu: %llu promotions (%llu without the data peer, which they then "
      "fenced), %llu candidacies lost, %llu peers fenced, %llu nodes told they are Outdated, %llu "
      "writes "
      "acknowledged, %llu Primaries demoted without quorum, %llu crashes, %llu link cuts, %llu "
      "resyncs, %llu split-brain handshakes refused, %llu promotions without a vote\n",
      (unsigned long long)first, (unsigned long long)(first + count - 1),
      (unsigned long long)total.promotions, (unsigned long long)total.promotions_fenced,
      (unsigned long long)total.refusals, (unsigned long long)total.fences,
      (unsigned long long)total.outdated_notices, (unsigned long long)total.writes_acked,
      (unsigned long long)total.demotions_without_quorum, (unsigned long long)total.crashes,
      (unsigned long long)total.cuts, (unsigned long long)total.resyncs,
      (unsigned long long)total.refused_handshakes,
      (unsigned long long)total.promotions_without_vote);
  if (only == 0 && count >= 100) {
    EXPECT_GT(total.promotions_fenced, 0u);
    EXPECT_GT(total.fences, 0u);
    EXPECT_GT(total.outdated_notices, 0u);
    EXPECT_GT(total.demotions_without_quorum, 0u);
    EXPECT_GT(total.refusals, 0u);
    EXPECT_GT(total.promotions_without_vote, 0u);
  }
}

// The checker bites: with clocks far outside the 5% the model allows, a voter's wait ends
// before the old Primary's lease, and some seed makes two Primaries with quorum.
TEST(QuorumSim, ClocksBeyondTheBoundMakeTwoPrimaries) {
  uint64_t found = 0;
  for (uint64_t seed = 1; seed <= 3000 && found == 0; ++seed) {
    QuorumSimOptions o;
    o.seed = seed;
    o.drift_per_mille = 450;  // clocks up to 45% apart
    QuorumWorld world(o);
    if (world.Run() == "two Primaries with quorum") found = seed;
  }
  std::printf("clocks 45%% apart: two Primaries with quorum at seed %llu\n",
              static_cast<unsigned long long>(found));
  EXPECT_GT(found, 0u);
}

// And without the fence, a Primary cut from its peer acknowledges writes that the peer, promoted
// later, lacks.
TEST(QuorumSim, WritesAcknowledgedWithoutTheFenceAreLost) {
  uint64_t found = 0;
  for (uint64_t seed = 1; seed <= 3000 && found == 0; ++seed) {
    QuorumSimOptions o;
    o.seed = seed;
    o.ack_without_fence = true;
    QuorumWorld world(o);
    const std::string failure = world.Run();
    if (failure.find("without acknowledged write") != std::string::npos ||
        failure.find("lost") != std::string::npos) {
      found = seed;
    }
  }
  std::printf("no fence: an acknowledged write lost at seed %llu\n",
              static_cast<unsigned long long>(found));
  EXPECT_GT(found, 0u);
}

}  // namespace
}  // namespace repld::qsim
