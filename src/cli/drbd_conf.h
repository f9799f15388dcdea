// A DRBD 8.x configuration file (drbd.conf) read into a tree of statements, for
// `replctl import-drbd`. The grammar is DRBD's, taken generically: a statement is a keyword,
// its arguments, then either ';' or a braced body of statements. '#' starts a comment that runs
// to the end of the line; a "double quoted" argument may hold spaces. Nothing here knows what a
// keyword means (drbd_import.cc does), so every DRBD version's options parse alike.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace repld::drbd {

struct Location {
  uint32_t line = 0;    // 1-based; 0: the file as a whole
  uint32_t column = 0;  // 1-based, counted in bytes
};

struct Word {
  std::string text;  // without the quotes of a quoted argument
  Location where;    // its first character
  Location end;      // just past its last character (where a missing ';' belongs)
};

struct Statement {
  Word keyword;
  std::vector<Word> args;
  bool has_body = false;  // `keyword args { ... }` rather than `keyword args;`
  std::vector<Statement> body;

  // "keyword arg1 arg2", for messages.
  std::string Shown() const;
};

struct ConfFile {
  std::string path;
  std::vector<Statement> statements;
};

// Bounds on what a drbd.conf can be: real ones nest three deep (resource, on, volume) and are a
// few KiB long.
inline constexpr uint32_t kConfDepthMax = 8;
inline constexpr size_t kConfBytesMax = 4 << 20;

// Parses `text`; `path` names the file in messages. A syntax error is reported as
// "PATH:LINE:COLUMN: expected X, found Y".
Result<ConfFile> ParseConf(std::string_view text, const std::string& path);

}  // namespace repld::drbd
