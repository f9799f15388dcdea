// The states of a replicated resource, named as DRBD names them (see docs/replication.md).
#pragma once

#include <cstdint>

namespace repld {

enum class Role : uint8_t { kSecondary = 0, kPrimary = 1 };

// What this node's data is worth.
enum class DiskState : uint8_t {
  kDiskless = 0,      // no local data
  kInconsistent = 1,  // partly written (fresh, or a resync target): never read from it
  kOutdated = 2,      // consistent, but the peer is known to have newer data
  kUpToDate = 3,      // the latest data
  // The disk failed an I/O and is being detached ([disk] on_io_error = "detach"): never read
  // from it, never promoted with it. Diskless once the detach finished.
  kFailed = 4,
};

// What a node does when its backing disk fails a write or a flush ([disk] on_io_error).
enum class OnIoError : uint8_t {
  kDetach = 0,  // the disk is Failed, then detached: Diskless until 'replctl attach'
  kPassOn = 1,  // the error goes to the Primary (and its client); a Secondary becomes
                // Inconsistent and reconnects, so that a resync repairs it
};

// What a Primary without quorum does with the requests it would complete ([resource]
// on_no_quorum; docs/quorum.md).
enum class OnNoQuorum : uint8_t {
  kSuspendIo = 0,  // holds their completions until quorum returns (or it is demoted)
  kIoError = 1,    // completes them with EIO
};

enum class ConnState : uint8_t {
  kStandAlone = 0,  // not trying: no peer configured, or refused (split brain, wrong secret...)
  kConnecting = 1,  // trying to reach the peer
  kConnected = 2,   // handshake done, replicating
};

// What the connection is doing with the data.
enum class ReplState : uint8_t {
  kOff = 0,          // not connected
  kEstablished = 1,  // in sync, writes replicated
  kSyncSource = 2,   // this node sends the blocks the peer lacks
  kSyncTarget = 3,   // this node receives them
  kWFBitMapS = 4,    // SyncSource-to-be, waiting for the target's bitmap
  kVerifyS = 5,      // running an online verify against the peer
};

// When a write is complete for the client.
enum class Protocol : uint8_t {
  kA = 0,  // local disk done and handed to the network
  kB = 1,  // local disk done and the peer received it
  kC = 2,  // local disk done and the peer's disk write done
};

constexpr const char* RoleName(Role r) { return r == Role::kPrimary ? "Primary" : "Secondary"; }

constexpr const char* DiskStateName(DiskState d) {
  switch (d) {
    case DiskState::kDiskless:
      return "Diskless";
    case DiskState::kInconsistent:
      return "Inconsistent";
    case DiskState::kOutdated:
      return "Outdated";
    case DiskState::kUpToDate:
      return "UpToDate";
    case DiskState::kFailed:
      return "Failed";
  }
  return "?";
}

constexpr const char* ConnStateName(ConnState c) {
  switch (c) {
    case ConnState::kStandAlone:
      return "StandAlone";
    case ConnState::kConnecting:
      return "Connecting";
    case ConnState::kConnected:
      return "Connected";
  }
  return "?";
}

constexpr const char* ReplStateName(ReplState r) {
  switch (r) {
    case ReplState::kOff:
      return "Off";
    case ReplState::kEstablished:
      return "Established";
    case ReplState::kSyncSource:
      return "SyncSource";
    case ReplState::kSyncTarget:
      return "SyncTarget";
    case ReplState::kWFBitMapS:
      return "WFBitMapS";
    case ReplState::kVerifyS:
      return "VerifyS";
  }
  return "?";
}

// The config's spelling: "detach", "pass_on".
constexpr const char* OnIoErrorName(OnIoError o) {
  return o == OnIoError::kPassOn ? "pass_on" : "detach";
}

constexpr char ProtocolLetter(Protocol p) {
  return p == Protocol::kA ? 'A' : p == Protocol::kB ? 'B' : 'C';
}

}  // namespace repld
