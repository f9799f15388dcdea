// The kernel ublk driver's user API, as far as repld uses it: written from the documented UAPI
// values (include/uapi/linux/ublk_cmd.h of Linux 6.12), because Debian bookworm's
// linux/ublk_cmd.h (Linux 6.1) lacks the ioctl-encoded commands and the newer flags. Every
// struct here is part of the ABI: their sizes are asserted.
//
// Control commands go to /dev/ublk-control as IORING_OP_URING_CMD with a CtrlCmd in a 128-byte
// SQE; I/O commands go to /dev/ublkcN with an IoCmd in an ordinary SQE. The driver describes
// each request in an IoDesc, in an array per queue that the daemon maps from /dev/ublkcN.
#pragma once

#include <linux/ioctl.h>

#include <cstddef>
#include <cstdint>

namespace repld::ublk {

// sqe->cmd of a control command.
struct CtrlCmd {
  uint32_t dev_id = 0;
  uint16_t queue_id = 0xFFFF;  // -1: not a queue command
  uint16_t len = 0;            // bytes at addr
  uint64_t addr = 0;           // a command-specific buffer, in or out
  uint64_t data[1] = {0};      // inline argument (the daemon's pid for START_DEV)
  uint16_t dev_path_len = 0;   // unprivileged devices only
  uint16_t pad = 0;
  uint32_t reserved = 0;
};
static_assert(sizeof(CtrlCmd) == 32);

// The device as ADD_DEV creates it and GET_DEV_INFO reports it.
struct DevInfo {
  uint16_t nr_hw_queues = 0;
  uint16_t queue_depth = 0;
  uint16_t state = 0;  // kStateDead, kStateLive, ...
  uint16_t pad0 = 0;
  uint32_t max_io_buf_bytes = 0;
  uint32_t dev_id = 0;
  int32_t ublksrv_pid = 0;
  uint32_t pad1 = 0;
  uint64_t flags = 0;  // kF*
  uint64_t ublksrv_flags = 0;
  uint32_t owner_uid = 0;
  uint32_t owner_gid = 0;
  uint64_t reserved1 = 0;
  uint64_t reserved2 = 0;
};
static_assert(sizeof(DevInfo) == 64);

// One request, written by the driver at index `tag` of the queue's array.
struct IoDesc {
  uint32_t op_flags;  // op in bits 0-7, kIoF* flags above
  uint32_t nr_sectors;
  uint64_t start_sector;
  uint64_t addr;
};
static_assert(sizeof(IoDesc) == 24);

// sqe->cmd of an I/O command.
struct IoCmd {
  uint16_t q_id = 0;
  uint16_t tag = 0;
  int32_t result = 0;  // COMMIT: bytes done or -errno
  uint64_t addr = 0;   // FETCH/COMMIT: the tag's buffer in the daemon
};
static_assert(sizeof(IoCmd) == 16);

struct ParamBasic {
  uint32_t attrs;
  uint8_t logical_bs_shift;
  uint8_t physical_bs_shift;
  uint8_t io_opt_shift;
  uint8_t io_min_shift;
  uint32_t max_sectors;
  uint32_t chunk_sectors;
  uint64_t dev_sectors;
  uint64_t virt_boundary_mask;
};
static_assert(sizeof(ParamBasic) == 32);

struct ParamDiscard {
  uint32_t discard_alignment;
  uint32_t discard_granularity;
  uint32_t max_discard_sectors;
  uint32_t max_write_zeroes_sectors;
  uint16_t max_discard_segments;
  uint16_t reserved0;
};
static_assert(sizeof(ParamDiscard) == 20);

// The head of the kernel's ublk_params: the driver takes a shorter `len` than its own struct.
struct Params {
  uint32_t len;
  uint32_t types;  // kParamType*
  ParamBasic basic;
  ParamDiscard discard;
};
static_assert(offsetof(Params, discard) == 40);

// Command numbers (the legacy bare numbers; the ioctl-encoded forms below are what we send).
inline constexpr uint32_t kCmdGetDevInfo = 0x02;
inline constexpr uint32_t kCmdAddDev = 0x04;
inline constexpr uint32_t kCmdDelDev = 0x05;
inline constexpr uint32_t kCmdStartDev = 0x06;
inline constexpr uint32_t kCmdStopDev = 0x07;
inline constexpr uint32_t kCmdSetParams = 0x08;
inline constexpr uint32_t kCmdStartUserRecovery = 0x10;
inline constexpr uint32_t kCmdEndUserRecovery = 0x11;
inline constexpr uint32_t kIoFetchReq = 0x20;
inline constexpr uint32_t kIoCommitAndFetchReq = 0x21;

inline constexpr uint32_t kUCmdGetDevInfo = _IOR('u', kCmdGetDevInfo, CtrlCmd);
inline constexpr uint32_t kUCmdAddDev = _IOWR('u', kCmdAddDev, CtrlCmd);
inline constexpr uint32_t kUCmdDelDev = _IOWR('u', kCmdDelDev, CtrlCmd);
inline constexpr uint32_t kUCmdStartDev = _IOWR('u', kCmdStartDev, CtrlCmd);
inline constexpr uint32_t kUCmdStopDev = _IOWR('u', kCmdStopDev, CtrlCmd);
inline constexpr uint32_t kUCmdSetParams = _IOWR('u', kCmdSetParams, CtrlCmd);
inline constexpr uint32_t kUCmdStartUserRecovery = _IOWR('u', kCmdStartUserRecovery, CtrlCmd);
inline constexpr uint32_t kUCmdEndUserRecovery = _IOWR('u', kCmdEndUserRecovery, CtrlCmd);
// DEL_DEV without waiting for the last opener of /dev/ublkbN to close it (Linux 6.9+).
inline constexpr uint32_t kUCmdDelDevAsync = _IOR('u', 0x14, CtrlCmd);
inline constexpr uint32_t kUIoFetchReq = _IOWR('u', kIoFetchReq, IoCmd);
inline constexpr uint32_t kUIoCommitAndFetchReq = _IOWR('u', kIoCommitAndFetchReq, IoCmd);

// DevInfo::flags.
inline constexpr uint64_t kFUserRecovery = 1ULL << 3;         // survive the daemon's death
inline constexpr uint64_t kFUserRecoveryReissue = 1ULL << 4;  // and reissue its requests
inline constexpr uint64_t kFCmdIoctlEncode = 1ULL << 6;

// DevInfo::state.
inline constexpr uint16_t kStateDead = 0;
inline constexpr uint16_t kStateLive = 1;
inline constexpr uint16_t kStateQuiesced = 2;  // the daemon died; requests wait for recovery
inline constexpr uint16_t kStateFailIo = 3;

// IoDesc::op_flags.
inline constexpr uint8_t kOpRead = 0;
inline constexpr uint8_t kOpWrite = 1;
inline constexpr uint8_t kOpFlush = 2;
inline constexpr uint8_t kOpDiscard = 3;
inline constexpr uint8_t kOpWriteZeroes = 5;
inline constexpr uint32_t kIoFFua = 1U << 13;
inline constexpr uint32_t kIoFNoUnmap = 1U << 15;

// I/O command results in the CQE.
inline constexpr int kIoResOk = 0;
inline constexpr int kIoResAbort = -19;  // -ENODEV: the queue is going away, no refetch

// ParamBasic::attrs and Params::types.
inline constexpr uint32_t kAttrVolatileCache = 1U << 2;
inline constexpr uint32_t kAttrFua = 1U << 3;
inline constexpr uint32_t kParamTypeBasic = 1U << 0;
inline constexpr uint32_t kParamTypeDiscard = 1U << 1;

// The descriptor arrays in /dev/ublkcN: queue q's at q * kDescQueueStrideBytes.
inline constexpr uint32_t kQueueDepthMax = 4096;
inline constexpr size_t kDescQueueStrideBytes =
    (kQueueDepthMax * sizeof(IoDesc) + 4095) / 4096 * 4096;
inline constexpr uint32_t kIoBufBytesMax = 32u << 20;  // the driver's per-request limit

}  // namespace repld::ublk
