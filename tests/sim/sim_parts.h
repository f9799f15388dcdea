// The simulated parts the simulator builds repld's ReplicatedDevice on (replicated_device.h's
// seams): a disk (SimDiskSink over a SimDisk of versioned blocks), its metadata (a
// SimMetadataStore over SimMdMedia, which survives crashes) and the network (SimPeerPort, over
// the World's frames). Every completion and delivery is a World event, so a seed replays exactly.
//
// Block contents: a 4 KiB block that holds version v carries v in its first and last 8 bytes and
// zeroes between (version 0: all zeroes), so that data moves as real bytes through the adapter's
// buffers, digests and frames, and the disk model reads versions back.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "blockdev/backing_store.h"
#include "blockdev/buffer_pool.h"
#include "blockdev/md_device.h"
#include "daemon/peer_port.h"
#include "replication/md_format.h"

namespace repld::sim {

inline constexpr uint64_t kBlock = 4096;
// What DecodeBlocks returns for a block whose two copies of the version disagree.
inline constexpr uint64_t kTornBlock = ~uint64_t{0} - 1;
// What a read that failed leaves in the buffer.
inline constexpr uint64_t kGarbageBlock = ~uint64_t{0} - 2;

// `versions.size()` blocks into the buffers of `iov`, which must hold that many.
void EncodeBlocks(std::span<const uint64_t> versions, std::span<const iovec> iov);
std::vector<uint64_t> DecodeBlocks(std::span<const iovec> iov, uint64_t blocks);

// One 4 KiB block holds the version of the write that wrote it (0: never written).
struct SimDisk {
  std::vector<uint64_t> durable, cache;
  std::vector<uint64_t> dirty;  // blocks written since the last flush (cache may differ)
  std::vector<bool> is_dirty;
  explicit SimDisk(uint64_t blocks)
      : durable(blocks, 0), cache(blocks, 0), is_dirty(blocks, false) {}
  void Write(uint64_t offset, const std::vector<uint64_t>& versions, bool fua);
  void Flush();
  // The versions of the blocks of [offset, offset+length), as the cache holds them.
  std::vector<uint64_t> Read(uint64_t offset, uint64_t length) const {
    const auto first = cache.begin() + static_cast<std::ptrdiff_t>(offset / kBlock);
    return {first, first + static_cast<std::ptrdiff_t>(length / kBlock)};
  }
  // Power loss: each block written since the last flush keeps its new content or loses it.
  void Crash(std::mt19937_64& rng);
};

// A node's metadata, as on its device: every write is durable when it returns (MdDevice syncs),
// and activity-log slots written through the disk with FUA (internal layout) land here too.
struct SimMdMedia {
  Superblock superblock;
  std::vector<uint32_t> al_table;  // the newest transaction's
  uint64_t al_seq = 0;
  std::vector<uint8_t> bitmap;  // the on-disk pages
};

class World;

// The frames on the simulated wire: the peer protocol's messages, decoded (those with a codec
// of their own went through it, as on the wire).
struct Frame {
  enum class Type {
    kData,
    kRecvAck,
    kWriteAck,
    kFlush,
    kFlushAck,
    kState,
    kOutOfSync,
    kCsums,
    kCsumReply,
    kReadRequest,
    kReadError,
    kPromoteRequest,
    kPromoteReply
  } type = Type::kData;
  uint64_t seq = 0;
  int error = 0;
  peer::Data data;                 // kData
  std::shared_ptr<uint8_t[]> bytes;  // kData: the payload (length_bytes)
  PeerState state;                 // kState
  peer::OutOfSync out_of_sync;     // kOutOfSync
  peer::Csums csums;               // kCsums
  peer::CsumReply csum_reply;      // kCsumReply
  uint64_t offset = 0, length = 0;  // kReadRequest
  peer::PromoteReply reply;         // kPromoteReply
};

class SimDiskSink : public DiskSink {
 public:
  SimDiskSink(World& world, int node, uint64_t disk_bytes, uint64_t data_bytes);
  const BackingInfo& info() const override { return info_; }
  Status SyncNow() override;
  void Submit(DiskIo* io) override;
  // Writes being carried out, in the order they were submitted (submission number -> offset):
  // the SplitBrain phase aims a write at the oldest. Not by pointer: heap addresses differ from
  // one build to the next, and a seed must replay the same world on any build.
  const std::map<uint64_t, uint64_t>& writes_in_flight() const { return writes_in_flight_; }

 private:
  void Complete(DiskIo* io);

  World& world_;
  int node_;
  BackingInfo info_;
  uint64_t data_bytes_;
  std::map<uint64_t, uint64_t> writes_in_flight_;   // submission number -> offset
  std::unordered_map<DiskIo*, uint64_t> submitted_;  // a write's submission number
  uint64_t next_submission_ = 0;
};

class SimMetadataStore : public MetadataStore {
 public:
  SimMetadataStore(World& world, int node, SimMdMedia& media) : world_(world), node_(node), media_(media) {}
  const std::string& md_path() const override { return path_; }
  Result<MdProbe> Probe() const override;
  Result<MdContents> Read() override;
  Status WriteSuperblock(const Superblock& sb) override;
  Status WriteAlTransaction(const AlTransaction& txn) override;
  Status WriteBitmapPages(const Bitmap& bitmap, std::span<const uint64_t> pages) override;

 private:
  Status Injected(const char* what);

  World& world_;
  int node_;
  SimMdMedia& media_;
  std::string path_ = "sim-md";
};

class SimPeerPort : public PeerPort {
 public:
  SimPeerPort(World& world, int node, PeerLinkHandler& handler, BufferPool& pool)
      : world_(world), node_(node), handler_(handler), pool_(pool) {}

  // The World's side.
  bool wants_connection() const { return started_ && !stay_down_; }
  PeerState HandshakeState() { return handler_.HandshakeState(); }
  // The handshake of connection `epoch` ended here: the peer's State and ours, as sent.
  void Up(uint64_t epoch, const PeerState& peer, const PeerState& sent);
  // The connection is gone (either side closed it, or the link failed).
  void Lost(const std::string& reason);
  // A frame arrived; delivered in order (a Data frame waits for receive chunks).
  void Receive(Frame frame);

  // PeerPort
  [[nodiscard]] Status Start() override;
  void Stop() override;
  void Drop(const std::string& reason, bool reconnect) override;
  void Retune(const PeerLinkConfig&) override {}
  bool up() const override { return session_ && !closing_; }
  std::optional<std::chrono::microseconds> peer_rtt() const override { return std::nullopt; }
  const std::string& last_error() const override { return last_error_; }
  bool SendData(const peer::Data& head, std::span<const iovec> data, uint64_t cookie) override;
  void SendRecvAck(uint64_t seq) override { SendSeq(Frame::Type::kRecvAck, seq, 0); }
  void SendWriteAck(uint64_t seq, int error) override { SendSeq(Frame::Type::kWriteAck, seq, error); }
  void SendFlush(uint64_t seq) override { SendSeq(Frame::Type::kFlush, seq, 0); }
  void SendFlushAck(uint64_t seq, int error) override { SendSeq(Frame::Type::kFlushAck, seq, error); }
  void SendState(const PeerState& state) override;
  void SendOutOfSync(std::span<const OutOfSyncRun> runs, bool last) override;
  void SendCsums(const peer::Csums& message) override;
  void SendCsumReply(uint64_t seq, std::span<const OutOfSyncRun> differing, int error) override;
  void SendReadRequest(uint64_t seq, uint64_t offset_bytes, uint32_t length_bytes) override;
  void SendReadError(uint64_t seq, int error) override { SendSeq(Frame::Type::kReadError, seq, error); }
  void SendPromoteRequest(uint64_t token) override { SendSeq(Frame::Type::kPromoteRequest, token, 0); }
  void SendPromoteReply(const peer::PromoteReply& message) override;

 private:
  void SendSeq(Frame::Type type, uint64_t seq, int error);
  void Send(Frame frame);
  void Pump();  // delivers what arrived, in order
  void Dispatch(Frame& frame, std::span<uint8_t* const> chunks);

  World& world_;
  int node_;
  PeerLinkHandler& handler_;
  BufferPool& pool_;
  bool started_ = false;
  bool stay_down_ = false;  // Drop without reconnect, or Stop: until Start
  bool session_ = false;    // between OnUp and OnDown
  bool closing_ = false;    // Drop called: up() is false, OnDown comes from Lost
  uint64_t epoch_ = 0;      // the World's connection of this session
  uint64_t closed_epoch_ = ~uint64_t{0};  // a connection this side closed before its OnUp
  std::string last_error_;
  std::map<uint64_t, uint64_t> sending_;  // send id -> cookie, until OnSendDone
  uint64_t next_send_ = 1;
  std::vector<Frame> inbox_;  // arrived, not yet delivered (waiting for chunks)
  bool pump_scheduled_ = false;
};

}  // namespace repld::sim
