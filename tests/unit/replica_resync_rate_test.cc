// resync.rate and pause-sync in the core: a SyncSource sends no more than the rate's worth of
// blocks per Tick (one second in the daemon), and none while paused.
#include <gtest/gtest.h>

#include <cerrno>
#include <vector>

#include "replication/replica.h"

namespace repld {
namespace {

constexpr uint64_t kMiB = 1 << 20;

// Answers everything at once (local reads, the peer's acks and flushes; the peer's writes of
// resync blocks fail with `write_error` unless it is 0); returns how many resync blocks were
// read.
int RunToQuiet(Replica& r, int write_error = 0) {
  int reads = 0;
  for (int round = 0; round < 10000; ++round) {
    std::vector<Action> actions = r.TakeActions();
    if (actions.empty()) break;
    for (Action& a : actions) {
      if (auto* read = std::get_if<ResyncRead>(&a)) {
        ++reads;
        r.ResyncReadDone(read->token, 0);
      } else if (auto* send = std::get_if<SendResync>(&a)) {
        r.PeerAck(AckKind::kReceived, send->seq, 0);
        r.PeerAck(AckKind::kWritten, send->seq, write_error);
      } else if (auto* flush = std::get_if<SendFlush>(&a)) {
        r.PeerAck(AckKind::kFlushed, flush->seq, 0);
      }
    }
  }
  return reads;
}

// A Primary whose fresh peer connects: rule 30, a full sync of 64 MiB in 1 MiB blocks.
Replica Source(uint64_t rate_bytes, ResyncController controller = {}, uint32_t slices = 1) {
  ReplicaOptions o;
  o.controller = controller;
  o.rate_slices_per_tick = slices;
  o.node_name = "alpha";
  o.peer_name = "beta";
  o.data_bytes = 64 * kMiB;
  o.resync_block_bytes = 1 * kMiB;
  o.resync_window = 8;
  o.resync_rate_bytes = rate_bytes;
  Replica r(o, MdState{}, ActivityLog(std::vector<uint32_t>(16, kAlEmpty), 0),
            Bitmap(o.data_bytes));
  EXPECT_TRUE(r.Promote(/*force=*/true).ok());
  r.TakeActions();
  PeerState fresh;
  fresh.data_bytes = o.data_bytes;
  r.PeerUp(fresh);
  r.PeerOutOfSync({}, /*last=*/true);  // the fresh target's bitmap: empty
  return r;
}

TEST(ReplicaResyncRate, ASourceSendsTheRatesWorthPerTick) {
  Replica r = Source(4 * kMiB);
  EXPECT_EQ(r.Report().repl, ReplState::kSyncSource);
  EXPECT_EQ(RunToQuiet(r), 4) << "the first second's budget";
  EXPECT_EQ(RunToQuiet(r), 0) << "nothing more before the next Tick";
  for (int second = 0; second < 3; ++second) {
    r.Tick();
    EXPECT_EQ(RunToQuiet(r), 4) << "second " << second;
  }
  EXPECT_EQ(r.Report().out_of_sync_bytes, (64 - 16) * kMiB);
}

// The daemon's slices: a tenth of the rate every 100 ms, so that no window of a second sees
// more than the rate and a block (a resync starting just before a Tick used to send two
// seconds' worth in one, and status showed twice the rate).
TEST(ReplicaResyncRate, SlicesSpreadTheRateOverTheSecond) {
  Replica r = Source(10 * kMiB, {}, /*slices=*/10);
  EXPECT_EQ(RunToQuiet(r), 1) << "a slice's budget at the start, not a second's";
  std::vector<int> per_slice;
  for (int second = 0; second < 3; ++second) {
    for (int slice = 0; slice < 9; ++slice) {
      r.RateSlice();
      per_slice.push_back(RunToQuiet(r));
    }
    r.Tick();
    per_slice.push_back(RunToQuiet(r));
  }
  for (int n : per_slice) EXPECT_EQ(n, 1);
  EXPECT_EQ(r.Report().out_of_sync_bytes, (64 - 31) * kMiB);
}

TEST(ReplicaResyncRate, UnlimitedSendsEverythingAtOnce) {
  Replica r = Source(0);
  EXPECT_EQ(RunToQuiet(r), 64);
  EXPECT_EQ(r.Report().out_of_sync_bytes, 0u);
}

// A target whose disk is full fails every block: the pass ends, and the next one waits 1, 2,
// 4 ... 60 Ticks instead of starting at once (it used to, in a loop that sent gigabytes a
// second and logged a line per block on both nodes). Once the disk takes writes, a pass
// finishes the resync and the waits start again from 1.
TEST(ReplicaResyncRate, APeerThatFailsBlocksGetsTheNextPassLater) {
  Replica r = Source(0);
  EXPECT_EQ(RunToQuiet(r, ENOSPC), 64) << "one pass over the bitmap";
  ReplicaStatus s = r.Report();
  EXPECT_EQ(s.resync_failed_bytes, 64 * kMiB);
  EXPECT_EQ(s.resync_retry_seconds, 1u);
  EXPECT_EQ(s.out_of_sync_bytes, 64 * kMiB);
  std::vector<int> waited;
  for (int pass = 0; pass < 8; ++pass) {
    int ticks = 0;
    int reads = 0;
    while (reads == 0 && ticks < 100) {
      r.Tick();
      ++ticks;
      reads = RunToQuiet(r, ENOSPC);
    }
    EXPECT_EQ(reads, 64) << "pass " << pass;
    waited.push_back(ticks);
  }
  EXPECT_EQ(waited, (std::vector<int>{1, 2, 4, 8, 16, 32, 60, 60}));
  EXPECT_EQ(r.Report().repl, ReplState::kSyncSource);

  // The disk has room again: the next pass syncs everything.
  for (int t = 0; t <= 60 && RunToQuiet(r) == 0; ++t) r.Tick();
  s = r.Report();
  EXPECT_EQ(s.out_of_sync_bytes, 0u);
  EXPECT_EQ(s.repl, ReplState::kEstablished);
  EXPECT_EQ(s.resync_failed_bytes, 0u);
}

TEST(ReplicaResyncRate, APausedSourceSendsNothingUntilResumed) {
  Replica r = Source(0);
  ASSERT_TRUE(r.PauseResync(true).ok());
  // Already read blocks were issued by PeerUp; pausing stops what comes after them.
  const int before = RunToQuiet(r);
  EXPECT_LT(before, 64);
  r.Tick();
  EXPECT_EQ(RunToQuiet(r), 0);
  EXPECT_TRUE(r.Report().resync_paused);
  ASSERT_TRUE(r.PauseResync(false).ok());
  EXPECT_EQ(before + RunToQuiet(r), 64);
  EXPECT_EQ(r.Report().out_of_sync_bytes, 0u);
  EXPECT_FALSE(r.Report().resync_paused);
}

// The dynamic controller: application I/O in the last second holds the resync at c_min_rate;
// quiet seconds double it, and after c_plan_ahead of them it is c_max_rate (here: no limit).
TEST(ReplicaResyncController, WithoutACeilingAQuietLinkIsUnlimited) {
  ResyncController c;
  c.plan_ahead_ticks = 2;
  c.min_rate_bytes = 2 * kMiB;
  Replica r = Source(0, c);
  r.ClientRead(1000, 0, 4096);  // seen by the first Tick
  r.Tick();
  EXPECT_EQ(RunToQuiet(r), 8 + 2) << "the window issued at PeerUp, then c_min_rate: busy";
  r.Tick();
  EXPECT_EQ(RunToQuiet(r), 4) << "quiet: doubled";
  r.Tick();
  EXPECT_EQ(RunToQuiet(r), 64 - 14) << "c_plan_ahead quiet seconds: no limit";
}

TEST(ReplicaResyncController, BusySecondsGetTheMinimumQuietOnesRampUp) {
  ResyncController c;
  c.plan_ahead_ticks = 3;
  c.min_rate_bytes = 2 * kMiB;
  c.max_rate_bytes = 16 * kMiB;
  Replica r = Source(0, c);
  EXPECT_EQ(RunToQuiet(r), 16) << "before any Tick: c_max_rate";
  std::vector<int> per_second;
  RequestId id = 1000;
  for (int second = 0; second < 6; ++second) {
    if (second < 2) r.ClientRead(id++, 0, 4096);  // busy in seconds 0 and 1
    r.Tick();
    per_second.push_back(RunToQuiet(r));
  }
  EXPECT_EQ(per_second[0], 2) << "busy: c_min_rate";
  EXPECT_EQ(per_second[1], 2) << "busy: c_min_rate";
  EXPECT_EQ(per_second[2], 4) << "first quiet second: doubled";
  EXPECT_EQ(per_second[3], 8);
  EXPECT_EQ(per_second[4], 16) << "c_plan_ahead quiet seconds: c_max_rate";
  EXPECT_EQ(per_second[5], 16);
}

TEST(ReplicaResyncController, FillTargetBoundsTheBytesInFlight) {
  ResyncController c;
  c.plan_ahead_ticks = 1;
  c.fill_target_bytes = 3 * kMiB;
  Replica r = Source(0, c);
  int reads = 0;
  for (Action& a : r.TakeActions()) reads += std::holds_alternative<ResyncRead>(a) ? 1 : 0;
  EXPECT_EQ(reads, 3) << "three 1 MiB blocks fill 3 MiB";
}

}  // namespace
}  // namespace repld

namespace repld {
namespace {

// The resync's confirmed blocks, until a barrier covers them, are what the source would send
// again after a target crash. Flushed every eighth Tick during a resync (a flush in mid-stream
// stalls the target's writes), not every Tick as after it.
TEST(ReplicaResyncRate, DuringAResyncTicksSendABarrierEveryEighthOnly) {
  Replica r = Source(2 * kMiB);
  int barriers = 0;
  for (int second = 0; second < 16; ++second) {
    r.Tick();
    for (std::vector<Action> actions = r.TakeActions(); !actions.empty();
         actions = r.TakeActions()) {
      for (Action& a : actions) {
        if (auto* read = std::get_if<ResyncRead>(&a)) r.ResyncReadDone(read->token, 0);
        if (auto* send = std::get_if<SendResync>(&a)) r.PeerAck(AckKind::kWritten, send->seq, 0);
        if (auto* flush = std::get_if<SendFlush>(&a)) {
          ++barriers;
          r.PeerAck(AckKind::kFlushed, flush->seq, 0);
        }
      }
    }
  }
  ASSERT_EQ(r.Report().repl, ReplState::kSyncSource) << "64 MiB at 2 MiB per second";
  EXPECT_EQ(barriers, 2) << "16 Ticks of resync";
}

}  // namespace
}  // namespace repld

namespace repld {
namespace {

// replctl adjust: a lower rate holds from the next slice; no limit at all sends at once.
TEST(ReplicaResyncRate, AdjustedRatesApplyWithoutARestart) {
  Replica r = Source(8 * kMiB);
  EXPECT_EQ(RunToQuiet(r), 8);
  r.SetResyncTunables(2 * kMiB, {}, false);
  r.Tick();
  EXPECT_EQ(RunToQuiet(r), 2) << "the lower rate";
  r.SetResyncTunables(0, {}, false);
  EXPECT_EQ(RunToQuiet(r), 64 - 10) << "no limit: the rest at once, without a Tick";
  EXPECT_EQ(r.Report().out_of_sync_bytes, 0u);
}

}  // namespace
}  // namespace repld
