#include "sim_parts.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/check.h"
#include "sim_world.h"

namespace repld::sim {

namespace {

// Copies between a gather list and a flat block, from byte `at` of the list.
void CopyOut(std::span<const iovec> iov, uint64_t at, uint8_t* out, uint64_t n) {
  for (const iovec& v : iov) {
    if (n == 0) return;
    if (at >= v.iov_len) {
      at -= v.iov_len;
      continue;
    }
    const uint64_t take = std::min<uint64_t>(n, v.iov_len - at);
    std::memcpy(out, static_cast<const uint8_t*>(v.iov_base) + at, take);
    out += take;
    n -= take;
    at = 0;
  }
  REPLD_CHECK(n == 0);
}

void CopyIn(std::span<const iovec> iov, uint64_t at, const uint8_t* in, uint64_t n) {
  for (const iovec& v : iov) {
    if (n == 0) return;
    if (at >= v.iov_len) {
      at -= v.iov_len;
      continue;
    }
    const uint64_t take = std::min<uint64_t>(n, v.iov_len - at);
    std::memcpy(static_cast<uint8_t*>(v.iov_base) + at, in, take);
    in += take;
    n -= take;
    at = 0;
  }
  REPLD_CHECK(n == 0);
}

// A message as the peer decodes it: encoded into a frame, the frame checked, the payload decoded.
template <class M>
M OverTheWire(const M& m) {
  const auto frame = m.Encode();
  auto view = peer::DecodeFrame(std::span<const uint8_t>(frame.data(), frame.size()));
  REPLD_CHECK(view.ok() && view->header.type == M::kType);
  auto decoded = M::Decode(view->payload);
  REPLD_CHECK(decoded.ok());
  return std::move(decoded).value();
}

}  // namespace

void EncodeBlocks(std::span<const uint64_t> versions, std::span<const iovec> iov) {
  uint8_t block[kBlock];
  size_t segment = 0;
  uint64_t segment_start = 0;  // of iov[segment], in the list
  for (size_t b = 0; b < versions.size(); ++b) {
    const uint64_t at = b * kBlock;
    while (segment < iov.size() && at >= segment_start + iov[segment].iov_len) {
      segment_start += iov[segment++].iov_len;
    }
    uint8_t* out = block;
    const bool in_place = segment < iov.size() && at + kBlock <= segment_start + iov[segment].iov_len;
    if (in_place) out = static_cast<uint8_t*>(iov[segment].iov_base) + (at - segment_start);
    std::memset(out, 0, kBlock);
    std::memcpy(out, &versions[b], 8);
    std::memcpy(out + kBlock - 8, &versions[b], 8);
    if (!in_place) CopyIn(iov, at, block, kBlock);
  }
}

std::vector<uint64_t> DecodeBlocks(std::span<const iovec> iov, uint64_t blocks) {
  std::vector<uint64_t> out(blocks);
  for (uint64_t b = 0; b < blocks; ++b) {
    uint64_t head = 0, tail = 0;
    CopyOut(iov, b * kBlock, reinterpret_cast<uint8_t*>(&head), 8);
    CopyOut(iov, (b + 1) * kBlock - 8, reinterpret_cast<uint8_t*>(&tail), 8);
    out[b] = head == tail ? head : kTornBlock;
  }
  return out;
}

void SimDisk::Write(uint64_t offset, const std::vector<uint64_t>& versions, bool fua) {
  for (size_t i = 0; i < versions.size(); ++i) {
    const uint64_t b = offset / kBlock + i;
    cache[b] = versions[i];
    if (fua) {
      durable[b] = versions[i];
    } else if (!is_dirty[b]) {
      is_dirty[b] = true;
      dirty.push_back(b);
    }
  }
}

void SimDisk::Flush() {
  for (const uint64_t b : dirty) {
    durable[b] = cache[b];
    is_dirty[b] = false;
  }
  dirty.clear();
}

void SimDisk::Crash(std::mt19937_64& rng) {
  std::sort(dirty.begin(), dirty.end());  // the same draws for the same blocks, whatever order
  for (const uint64_t b : dirty) {
    if (cache[b] != durable[b] && (rng() & 1)) cache[b] = durable[b];
  }
  Flush();
}

// --- The disk ---

SimDiskSink::SimDiskSink(World& world, int node, uint64_t disk_bytes, uint64_t data_bytes)
    : world_(world), node_(node), data_bytes_(data_bytes) {
  info_.size_bytes = disk_bytes;
  info_.io_align_bytes = 4096;
  info_.mem_align_bytes = 4096;
}

Status SimDiskSink::SyncNow() {
  if (const int e = world_.DiskFault(node_, World::IoKind::kSync); e != 0) {
    return Status::Error(e, "sim disk: fdatasync failed");
  }
  world_.NodeAt(node_).disk.Flush();
  return Status::Ok();
}

void SimDiskSink::Submit(DiskIo* io) {
  World::Clock lo = 20, hi = 400;
  if (io->request.op == BlockOp::kRead) hi = 200;
  if (io->request.op == BlockOp::kFlush) lo = 100, hi = 800;
  if (io->request.op != BlockOp::kRead && io->request.op != BlockOp::kFlush) {
    writes_in_flight_.emplace(next_submission_, io->request.offset_bytes);
    submitted_.emplace(io, next_submission_++);
  }
  world_.After(world_.Rand(lo, hi), node_, [this, io] { Complete(io); });
}

void SimDiskSink::Complete(DiskIo* io) {
  if (auto it = submitted_.find(io); it != submitted_.end()) {
    writes_in_flight_.erase(it->second);
    submitted_.erase(it);
  }
  Node& n = world_.NodeAt(node_);
  const BlockRequest& r = io->request;
  const std::span<const iovec> iov(io->iov, io->iov_count);
  int error = 0;
  switch (r.op) {
    case BlockOp::kRead:
      // A failed read fills the buffer with a version no block ever had: what leaks of it
      // through to a client or the peer shows.
      error = r.offset_bytes < data_bytes_ ? world_.DiskFault(node_, World::IoKind::kRead) : 0;
      EncodeBlocks(error == 0 ? n.disk.Read(r.offset_bytes, r.length_bytes)
                              : std::vector<uint64_t>(r.length_bytes / kBlock, kGarbageBlock),
                   iov);
      break;
    case BlockOp::kWrite:
      if (r.offset_bytes >= data_bytes_) {
        // An activity-log slot of the internal layout, written with FUA: durable now.
        world_.AlSlotWritten(node_, r.offset_bytes, iov, r.length_bytes);
        break;
      }
      error = world_.DiskFault(node_, World::IoKind::kWrite);
      if (error == 0) {
        const std::vector<uint64_t> v = DecodeBlocks(iov, r.length_bytes / kBlock);
        if (std::count(v.begin(), v.end(), kTornBlock) != 0) {
          world_.Fail("node" + std::to_string(node_) + " wrote a torn block at " +
                      std::to_string(r.offset_bytes) + ": the adapter mixed up buffers");
        }
        if (std::count(v.begin(), v.end(), kGarbageBlock) != 0) {
          world_.Fail("node" + std::to_string(node_) + " wrote at " +
                      std::to_string(r.offset_bytes) +
                      " what a failed read left in a buffer: a block that was never read");
        }
        n.disk.Write(r.offset_bytes, v, r.fua);
      }
      break;
    case BlockOp::kTrim:
    case BlockOp::kWriteZeroes: {
      // The sim's disk stores the version of the trim for its zeroes (World::ZeroVersion).
      const uint64_t version = world_.ZeroVersion(r.offset_bytes, r.length_bytes);
      error = world_.DiskFault(node_, World::IoKind::kWrite);
      if (error == 0) {
        n.disk.Write(r.offset_bytes, std::vector<uint64_t>(r.length_bytes / kBlock, version),
                     r.fua);
      }
      break;
    }
    case BlockOp::kFlush:
      error = world_.DiskFault(node_, World::IoKind::kFlush);
      if (error == 0) n.disk.Flush();  // failed: the cache keeps it, nothing is durable
      break;
  }
  io->done(io, error);
}

// --- The metadata ---

Result<MdProbe> SimMetadataStore::Probe() const {
  return MdProbe{MdPresence::kValid, "sim"};
}

Result<MdContents> SimMetadataStore::Read() {
  Bitmap bitmap(media_.superblock.layout.data_bytes);
  if (Status s = bitmap.Load(media_.bitmap); !s.ok()) return s;
  AlReplayResult al;
  al.seq = media_.al_seq;
  al.table = media_.al_table;
  return MdContents{media_.superblock, std::move(al), {}, std::move(bitmap)};
}

Status SimMetadataStore::Injected(const char* what) {
  if (const int e = world_.DiskFault(node_, World::IoKind::kMetadata); e != 0) {
    return Status::Error(e, std::string("sim metadata: writing ") + what + " failed");
  }
  return Status::Ok();
}

Status SimMetadataStore::WriteSuperblock(const Superblock& sb) {
  if (Status s = Injected("the superblock"); !s.ok()) return s;
  media_.superblock = sb;
  return Status::Ok();
}

Status SimMetadataStore::WriteAlTransaction(const AlTransaction& txn) {
  if (Status s = Injected("the activity log"); !s.ok()) return s;
  media_.al_table = txn.extents;
  media_.al_seq = txn.seq;
  return Status::Ok();
}

Status SimMetadataStore::WriteBitmapPages(const Bitmap& bitmap, std::span<const uint64_t> pages) {
  if (Status s = Injected("bitmap pages"); !s.ok()) return s;
  for (const uint64_t page : pages) {
    bitmap.StorePage(page, std::span(media_.bitmap).subspan(page * kMdBlockBytes, kMdBlockBytes));
  }
  return Status::Ok();
}

// --- The network ---

Status SimPeerPort::Start() {
  started_ = true;
  stay_down_ = false;
  world_.After(0, node_, [this] { handler_.OnConnecting(); });
  world_.PortStarted();
  return Status::Ok();
}

void SimPeerPort::Up(uint64_t epoch, const PeerState& peer, const PeerState& sent) {
  if (!wants_connection() || closed_epoch_ == epoch || session_) return;
  session_ = true;
  closing_ = false;
  epoch_ = epoch;
  handler_.OnUp(peer, peer::kFeaturesSupported, sent);
}

void SimPeerPort::Lost(const std::string& reason) {
  inbox_.clear();
  if (!session_) return;
  session_ = false;
  closing_ = false;
  last_error_ = reason;
  // As the PeerLink: the Data frames that did not leave first, then OnDown, then OnConnecting.
  const std::map<uint64_t, uint64_t> unsent = std::move(sending_);
  sending_.clear();
  for (const auto& [id, cookie] : unsent) handler_.OnSendDone(cookie, false);
  handler_.OnDown(reason);
  if (wants_connection()) handler_.OnConnecting();
}

void SimPeerPort::Stop() {
  started_ = false;
  stay_down_ = true;
  if (session_) {
    world_.PortDropped(node_, "the peer stopped", /*reconnect=*/false);
    Lost("stopped");
  }
}

void SimPeerPort::Drop(const std::string& reason, bool reconnect) {
  if (!reconnect) stay_down_ = true;
  closing_ = true;
  closed_epoch_ = world_.conn_epoch_;
  world_.PortDropped(node_, reason, reconnect);
}

void SimPeerPort::Send(Frame frame) {
  if (!up()) return;
  world_.Send(node_, std::move(frame));
}

void SimPeerPort::SendSeq(Frame::Type type, uint64_t seq, int error) {
  Frame f;
  f.type = type;
  f.seq = seq;
  f.error = error;
  Send(std::move(f));
}

bool SimPeerPort::SendData(const peer::Data& head, std::span<const iovec> data, uint64_t cookie) {
  if (!up()) return false;
  Frame f;
  f.type = Frame::Type::kData;
  f.data = head;
  if (head.HasPayloadData()) {
    f.bytes.reset(new uint8_t[head.length_bytes]);  // not zeroed: all of it is copied over
    CopyOut(data, 0, f.bytes.get(), head.length_bytes);
  }
  world_.Send(node_, std::move(f));
  // The socket takes it a little later: then the adapter may reuse the buffers.
  const uint64_t id = next_send_++;
  sending_.emplace(id, cookie);
  world_.After(world_.Rand(5, 50), node_, [this, id, epoch = epoch_] {
    auto it = sending_.find(id);
    if (it == sending_.end() || epoch != epoch_) return;
    const uint64_t c = it->second;
    sending_.erase(it);
    handler_.OnSendDone(c, true);
  });
  return true;
}

void SimPeerPort::SendState(const PeerState& state) {
  Frame f;
  f.type = Frame::Type::kState;
  f.state = state;
  Send(std::move(f));
}

void SimPeerPort::SendOutOfSync(std::span<const OutOfSyncRun> runs, bool last) {
  Frame f;
  f.type = Frame::Type::kOutOfSync;
  peer::OutOfSync m;
  m.flags = last ? peer::kOutOfSyncFlagLast : 0;
  for (const OutOfSyncRun& r : runs) m.runs.push_back({r.offset_bytes, r.length_bytes});
  f.out_of_sync = OverTheWire(m);
  Send(std::move(f));
}

void SimPeerPort::SendCsums(const peer::Csums& message) {
  Frame f;
  f.type = Frame::Type::kCsums;
  f.csums = OverTheWire(message);
  Send(std::move(f));
}

void SimPeerPort::SendCsumReply(uint64_t seq, std::span<const OutOfSyncRun> differing, int error) {
  Frame f;
  f.type = Frame::Type::kCsumReply;
  peer::CsumReply m;
  m.seq = seq;
  m.error = error;
  for (const OutOfSyncRun& r : differing) m.differing.push_back({r.offset_bytes, r.length_bytes});
  f.csum_reply = OverTheWire(m);
  Send(std::move(f));
}

void SimPeerPort::SendReadRequest(uint64_t seq, uint64_t offset_bytes, uint32_t length_bytes) {
  Frame f;
  f.type = Frame::Type::kReadRequest;
  f.seq = seq;
  f.offset = offset_bytes;
  f.length = length_bytes;
  Send(std::move(f));
}

void SimPeerPort::SendPromoteReply(const peer::PromoteReply& message) {
  Frame f;
  f.type = Frame::Type::kPromoteReply;
  f.reply = OverTheWire(message);
  Send(std::move(f));
}

void SimPeerPort::Receive(Frame frame) {
  if (!session_) return;
  inbox_.push_back(std::move(frame));
  Pump();
}

void SimPeerPort::Pump() {
  size_t done = 0;
  std::vector<uint8_t*> chunks;
  for (; done < inbox_.size() && session_; ++done) {
    Frame& f = inbox_[done];
    chunks.clear();
    if (f.type == Frame::Type::kData && f.data.HasPayloadData()) {
      chunks.resize(BufferPool::ChunksFor(f.data.length_bytes));
      if (!pool_.TryAcquire(chunks)) {
        // The reader waits for free chunks (backpressure): try again a little later.
        if (!pump_scheduled_) {
          pump_scheduled_ = true;
          world_.After(50, node_, [this] {
            pump_scheduled_ = false;
            Pump();
          });
        }
        break;
      }
      for (size_t i = 0; i < chunks.size(); ++i) {
        const uint64_t at = i * BufferPool::kChunkBytes;
        std::memcpy(chunks[i], f.bytes.get() + at,
                    std::min<uint64_t>(BufferPool::kChunkBytes, f.data.length_bytes - at));
      }
    }
    Frame frame = std::move(f);
    Dispatch(frame, chunks);
  }
  if (!session_) return;  // Lost cleared the inbox
  inbox_.erase(inbox_.begin(), inbox_.begin() + static_cast<std::ptrdiff_t>(done));
}

void SimPeerPort::Dispatch(Frame& f, std::span<uint8_t* const> chunks) {
  switch (f.type) {
    case Frame::Type::kData:
      world_.DataDelivered(f.data);
      handler_.OnData(f.data, chunks);
      break;
    case Frame::Type::kRecvAck:
      handler_.OnRecvAck(f.seq);
      break;
    case Frame::Type::kWriteAck:
      handler_.OnWriteAck(f.seq, f.error);
      break;
    case Frame::Type::kFlush:
      handler_.OnFlush(f.seq);
      break;
    case Frame::Type::kFlushAck:
      handler_.OnFlushAck(f.seq, f.error);
      break;
    case Frame::Type::kState:
      handler_.OnState(f.state);
      break;
    case Frame::Type::kOutOfSync:
      handler_.OnOutOfSync(f.out_of_sync);
      break;
    case Frame::Type::kCsums:
      handler_.OnCsums(f.csums);
      break;
    case Frame::Type::kCsumReply:
      handler_.OnCsumReply(f.csum_reply);
      break;
    case Frame::Type::kReadRequest:
      handler_.OnReadRequest(
          peer::ReadRequest{f.seq, f.offset, static_cast<uint32_t>(f.length)});
      break;
    case Frame::Type::kReadError:
      handler_.OnReadError(peer::ReadError{f.seq, f.error});
      break;
    case Frame::Type::kPromoteRequest:
      handler_.OnPromoteRequest(f.seq);
      break;
    case Frame::Type::kPromoteReply:
      handler_.OnPromoteReply(f.reply);
      break;
  }
}

}  // namespace repld::sim
