// The NBD server of one resource: listeners (unix socket, optional TCP), the set of live
// connections bounded by connections_max, and the drain on shutdown.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/basic_socket_acceptor.hpp>
#include <asio/generic/stream_protocol.hpp>
#include <asio/io_context.hpp>
#include <chrono>
#include <list>
#include <memory>
#include <string>

#include "blockdev/async_signal.h"
#include "blockdev/backing_store.h"
#include "blockdev/block_sink.h"
#include "blockdev/buffer_pool.h"
#include "blockdev/nbd_connection.h"
#include "blockdev/nbd_export.h"
#include "common/status.h"

namespace repld {

class NbdServer {
 public:
  NbdServer(asio::io_context& io, NbdExport exp, NbdLimits limits, BlockSink& store,
            BufferPool& pool);
  ~NbdServer();

  // A stale socket file left by a dead daemon is replaced; a live one is an error.
  Status ListenUnix(const std::string& path);
  Status ListenTcp(const std::string& host, uint16_t port);
  void Start();

  // Stops accepting, lets connections finish their requests in flight, aborts those still
  // busy after `drain_timeout`. Returns when no connection is left.
  asio::awaitable<void> Shutdown(std::chrono::milliseconds drain_timeout);

  void AbortConnections();

  size_t connection_count() const { return connections_.size(); }
  const NbdExport& exported() const { return export_; }

 private:
  using Acceptor = asio::basic_socket_acceptor<asio::generic::stream_protocol>;
  asio::awaitable<void> AcceptLoop(Acceptor& acceptor, std::string kind);
  void Serve(asio::generic::stream_protocol::socket socket, std::string name);

  asio::io_context& io_;
  NbdExport export_;
  NbdLimits limits_;
  BlockSink& store_;
  BufferPool& pool_;
  std::list<Acceptor> acceptors_;
  std::list<std::shared_ptr<NbdConnection>> connections_;
  std::string unix_path_;
  AsyncSignal connection_closed_;
  uint64_t next_connection_id_ = 1;
  bool stopping_ = false;
};

}  // namespace repld
