// A block request as every frontend (NBD today, ublk later) hands it to the request path. It is
// frontend-neutral on purpose: replication, the activity log and roles see one request type
// whatever the frontend.
#pragma once

#include <cstdint>

namespace repld {

enum class BlockOp : uint8_t {
  kRead,
  kWrite,
  kFlush,        // make every completed write durable
  kTrim,  // discard: the range reads as zeroes afterwards (punched where the disk can)
  kWriteZeroes,  // the range reads as zeroes afterwards
};

struct BlockRequest {
  BlockOp op = BlockOp::kRead;
  uint64_t offset_bytes = 0;
  uint64_t length_bytes = 0;
  bool fua = false;       // durable before completion (writes, trims, write-zeroes)
  bool may_punch = true;  // write-zeroes may deallocate (NBD: NO_HOLE not set)
};

constexpr const char* BlockOpName(BlockOp op) {
  switch (op) {
    case BlockOp::kRead:
      return "read";
    case BlockOp::kWrite:
      return "write";
    case BlockOp::kFlush:
      return "flush";
    case BlockOp::kTrim:
      return "trim";
    case BlockOp::kWriteZeroes:
      return "write-zeroes";
  }
  return "?";
}

}  // namespace repld
