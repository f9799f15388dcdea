#include "blockdev/nbd_handshake.h"

#include <spdlog/spdlog.h>

#include <array>
#include <asio/read.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <vector>

#include "blockdev/nbd_proto.h"

namespace repld {
namespace {

using asio::redirect_error;
using asio::use_awaitable;
using Socket = asio::generic::stream_protocol::socket;

bool ExportMatches(const std::string& requested, const NbdExport& exp) {
  return requested.empty() || requested == exp.name;
}

// How ReplyInfo went.
enum class InfoReply {
  kFailed,   // the reply could not be sent
  kRefused,  // an error reply went out (unknown export, admission refused)
  kAccepted  // the export's information and the ACK went out
};

// Replies to NBD_OPT_INFO / NBD_OPT_GO. Admission is asked once, here: what the client was told
// is what happens, even if the answer would change while the reply is being written.
asio::awaitable<InfoReply> ReplyInfo(Socket& s, uint32_t option, const nbd::InfoRequest& req,
                                     const NbdExport& exp, NbdSession& session) {
  asio::error_code ec;
  auto send = [&](uint32_t type, std::span<const uint8_t> payload) -> asio::awaitable<bool> {
    const auto reply = nbd::EncodeOptionReply(option, type, payload);
    co_await asio::async_write(s, asio::buffer(reply), redirect_error(use_awaitable, ec));
    co_return !ec;
  };
  auto refuse = [&](uint32_t type, std::span<const uint8_t> payload) -> asio::awaitable<InfoReply> {
    co_return co_await send(type, payload) ? InfoReply::kRefused : InfoReply::kFailed;
  };
  if (!ExportMatches(req.export_name, exp)) {
    co_return co_await refuse(nbd::kRepErrUnknown, {});
  }
  if (exp.admission) {
    if (const std::optional<std::string> refusal = exp.admission()) {
      spdlog::warn("nbd: refused a client: {}", *refusal);
      const auto* text = reinterpret_cast<const uint8_t*>(refusal->data());
      co_return co_await refuse(nbd::kRepErrPolicy, std::span(text, refusal->size()));
    }
  }
  if (!co_await send(nbd::kRepInfo, nbd::EncodeInfoExport(exp.size_bytes, exp.transmission_flags)))
    co_return InfoReply::kFailed;
  for (uint16_t type : req.info_types) {
    if (type == nbd::kInfoName) {
      if (!co_await send(nbd::kRepInfo, nbd::EncodeInfoName(exp.name)))
        co_return InfoReply::kFailed;
    } else if (type == nbd::kInfoBlockSize) {
      session.block_size_requested = true;
    }
  }
  // Sent whether or not it was asked for: clients that did not ask may ignore it, and the
  // constraints hold either way (misaligned requests get EINVAL).
  if (!co_await send(nbd::kRepInfo,
                     nbd::EncodeInfoBlockSize(exp.block_min_bytes, exp.block_preferred_bytes,
                                              exp.block_max_bytes)))
    co_return InfoReply::kFailed;
  co_return co_await send(nbd::kRepAck, {}) ? InfoReply::kAccepted : InfoReply::kFailed;
}

}  // namespace

asio::awaitable<std::optional<NbdSession>> NegotiateNbd(Socket& s, const NbdExport& exp,
                                                        const NbdLimits& limits, std::string& why) {
  asio::error_code ec;
  std::array<uint8_t, nbd::kServerGreetingBytes> greeting{};
  nbd::PutU64(greeting.data(), nbd::kMagicNbd);
  nbd::PutU64(greeting.data() + 8, nbd::kMagicIHaveOpt);
  nbd::PutU16(greeting.data() + 16, nbd::kFlagFixedNewstyle | nbd::kFlagNoZeroes);
  co_await asio::async_write(s, asio::buffer(greeting), redirect_error(use_awaitable, ec));
  if (ec) {
    why = "sending the greeting: " + ec.message();
    co_return std::nullopt;
  }
  std::array<uint8_t, 4> client_flags_bytes{};
  co_await asio::async_read(s, asio::buffer(client_flags_bytes), redirect_error(use_awaitable, ec));
  if (ec) {
    why = "reading the client flags: " + ec.message();
    co_return std::nullopt;
  }
  const uint32_t client_flags = nbd::GetU32(client_flags_bytes.data());
  if ((client_flags & ~(nbd::kClientFlagFixedNewstyle | nbd::kClientFlagNoZeroes)) != 0) {
    why = "client sent unknown handshake flags " + std::to_string(client_flags);
    co_return std::nullopt;
  }
  const bool fixed = (client_flags & nbd::kClientFlagFixedNewstyle) != 0;
  const bool no_zeroes = (client_flags & nbd::kClientFlagNoZeroes) != 0;

  NbdSession session;
  std::vector<uint8_t> payload;
  for (uint32_t count = 0; count < limits.options_max; ++count) {
    std::array<uint8_t, nbd::kOptionHeaderBytes> header_bytes{};
    co_await asio::async_read(s, asio::buffer(header_bytes), redirect_error(use_awaitable, ec));
    if (ec) {
      why = "reading an option: " + ec.message();
      co_return std::nullopt;
    }
    const nbd::OptionHeader header = nbd::DecodeOptionHeader(header_bytes);
    if (header.magic != nbd::kMagicIHaveOpt) {
      why = "bad option magic";
      co_return std::nullopt;
    }
    if (header.length_bytes > nbd::kOptionDataBytesMax) {
      why = "option " + std::string(nbd::OptionName(header.option)) + " carries " +
            std::to_string(header.length_bytes) + " bytes, more than the " +
            std::to_string(nbd::kOptionDataBytesMax) + " allowed";
      co_return std::nullopt;
    }
    payload.resize(header.length_bytes);
    co_await asio::async_read(s, asio::buffer(payload), redirect_error(use_awaitable, ec));
    if (ec) {
      why = "reading option data: " + ec.message();
      co_return std::nullopt;
    }
    auto reply = [&](uint32_t type, std::span<const uint8_t> data = {}) -> asio::awaitable<bool> {
      const auto bytes = nbd::EncodeOptionReply(header.option, type, data);
      co_await asio::async_write(s, asio::buffer(bytes), redirect_error(use_awaitable, ec));
      co_return !ec;
    };
    bool sent = true;
    switch (header.option) {
      case nbd::kOptExportName: {
        const std::string name(payload.begin(), payload.end());
        if (!ExportMatches(name, exp)) {
          why = "client asked for unknown export '" + name + "'";
          co_return std::nullopt;  // the protocol has no error reply here: close
        }
        if (exp.admission) {
          if (std::optional<std::string> refusal = exp.admission()) {
            why = "refused: " + *refusal;
            co_return std::nullopt;
          }
        }
        std::array<uint8_t, nbd::kExportNameReplyBytes + 124> out{};
        nbd::PutU64(out.data(), exp.size_bytes);
        nbd::PutU16(out.data() + 8, exp.transmission_flags);
        const size_t n = nbd::kExportNameReplyBytes + (no_zeroes ? 0 : 124);
        co_await asio::async_write(s, asio::buffer(out.data(), n),
                                   redirect_error(use_awaitable, ec));
        if (ec) break;
        co_return session;
      }
      case nbd::kOptAbort:
        co_await reply(nbd::kRepAck);
        why = "client aborted the handshake";
        co_return std::nullopt;
      case nbd::kOptList:
        if (!payload.empty()) {
          sent = co_await reply(nbd::kRepErrInvalid);
        } else {
          sent = co_await reply(nbd::kRepServer, nbd::EncodeServerListEntry(exp.name)) &&
                 co_await reply(nbd::kRepAck);
        }
        break;
      case nbd::kOptStructuredReply:
        if (!payload.empty()) {
          sent = co_await reply(nbd::kRepErrInvalid);
        } else {
          session.structured_replies = true;
          sent = co_await reply(nbd::kRepAck);
        }
        break;
      case nbd::kOptInfo:
      case nbd::kOptGo: {
        const auto request = nbd::DecodeInfoRequest(payload);
        if (!request) {
          sent = co_await reply(nbd::kRepErrInvalid);
          break;
        }
        const InfoReply info = co_await ReplyInfo(s, header.option, *request, exp, session);
        sent = info != InfoReply::kFailed;
        if (info == InfoReply::kAccepted && header.option == nbd::kOptGo) co_return session;
        break;
      }
      default:
        if (!fixed) {
          why = "unsupported option " + std::to_string(header.option) +
                " from a client that is not fixed-newstyle";
          co_return std::nullopt;
        }
        sent = co_await reply(nbd::kRepErrUnsup);
        break;
    }
    if (!sent || ec) {
      why = "sending an option reply: " + ec.message();
      co_return std::nullopt;
    }
  }
  why = "more than " + std::to_string(limits.options_max) + " options in one handshake";
  co_return std::nullopt;
}

}  // namespace repld
