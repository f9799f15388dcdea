// replctl's side of the control socket (docs/control.md): one connection, requests sent as
// lines, response lines read one at a time; `events` keeps reading them as they come.
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"

namespace repld {

class ControlClient {
 public:
  ControlClient() = default;
  ~ControlClient();
  ControlClient(const ControlClient&) = delete;
  ControlClient& operator=(const ControlClient&) = delete;

  // A daemon that is not running gives a status whose code is ENOENT or ECONNREFUSED.
  Status Connect(const std::string& path, std::chrono::milliseconds timeout);
  Status Send(const std::string& line);
  // The next response line, checked (ParseControlResponse). `timeout` 0: no limit. A silent
  // daemon gives ETIMEDOUT; one that closed the connection, ECONNRESET.
  Result<nlohmann::json> Read(std::chrono::milliseconds timeout);

 private:
  int fd_ = -1;
  std::string path_;
  std::string buffer_;  // bytes read past the last line
  std::chrono::milliseconds send_timeout_{0};
};

}  // namespace repld
