// A wake-up for coroutines on one Asio loop: Wait() suspends until the next Notify(). Callers
// re-check their condition after waking (spurious wake-ups are allowed), and check it before
// waiting; on a single-threaded loop that check and the start of the wait cannot be interleaved
// with a Notify.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

namespace repld {

class AsyncSignal {
 public:
  explicit AsyncSignal(const asio::any_io_executor& ex)
      : timer_(ex, asio::steady_timer::time_point::max()) {}

  asio::awaitable<void> Wait() {
    asio::error_code ignored;
    co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  }
  void Notify() { timer_.cancel(); }

 private:
  asio::steady_timer timer_;
};

}  // namespace repld
