// One resource's import in progress, shared by drbd_import.cc (the file, the resource, its
// nodes) and drbd_options.cc (net, disk, syncer and startup options): the options in force, the
// TOML being written, the warnings, and the parsing of DRBD values.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "cli/drbd_conf.h"
#include "cli/drbd_import.h"
#include "cli/toml_text.h"
#include "common/status.h"

namespace repld::drbd {

// The generated file's tables, in docs/config.md's order (nodes follow).
inline constexpr const char* kHeader = "";  // the comment block above every table
inline constexpr const char* kResource = "resource";
inline constexpr const char* kNet = "net";
inline constexpr const char* kNbd = "nbd";
inline constexpr const char* kDisk = "disk";
inline constexpr const char* kResync = "resync";
inline constexpr const char* kStartup = "startup";

// A DRBD option in force for the resource: its own, else common's.
struct Option {
  const Statement* st = nullptr;
  std::string section;  // "net", "disk", "syncer", "startup", "options"; "" at resource level
  bool from_common = false;
  bool used = false;  // mapped, reported as dropped, or overridden
};

// The table a section's options map to (and where the comments about them go).
std::string TableOf(const std::string& section);

class ResourceImport {
 public:
  ResourceImport(const std::string& path, std::vector<Warning>& warnings)
      : path_(path), warnings_(warnings) {}

  cli::TomlText& toml() { return toml_; }
  const std::string& path() const { return path_; }

  // Adds an option from `section`; one of the resource's replaces common's.
  void AddOption(const Statement& st, const std::string& section, bool from_common);
  // The option in force named `keyword`, if not used yet; it is marked used.
  Option* Take(std::string_view keyword);
  std::vector<Option>& options() { return options_; }

  // A comment in `table` (kHeader: the top of the file) saying where in the drbd.conf it
  // comes from. A warning also goes to stderr.
  void Note(const std::string& table, Location where, const std::string& text);
  void Warn(const std::string& table, Location where, const std::string& text);
  // "PATH:LINE:COL: text".
  Status Error(Location where, const std::string& text) const;

  // `key = value` with the statement it came from as the comment ("ko-count 4, line 75").
  void Mapped(const std::string& table, std::string_view key, const std::string& value,
              const Statement& from, std::string_view why = {});

  // The statement's one argument; an error if it has none or several (a missing ';').
  Result<std::string> Single(const Statement& st) const;
  // A decimal integer argument.
  Result<uint64_t> Number(const Statement& st) const;
  // A size argument in DRBD's notation: digits and an optional K, M or G (powers of two);
  // plain digits count in `unit_bytes` (KiB for rates, 512-byte sectors for c-fill-target).
  Result<uint64_t> Bytes(const Statement& st, uint64_t unit_bytes) const;

  // The value clamped to [min, max], with a warning when it had to be.
  uint64_t Clamp(const Statement& st, const std::string& table, uint64_t value, uint64_t min,
                 uint64_t max, const std::string& unit);

 private:
  std::string Where(Location where) const;

  const std::string& path_;
  std::vector<Warning>& warnings_;
  cli::TomlText toml_;
  std::vector<Option> options_;
};

// TOML values in repld's notation: sizes as "10M", "512K" or bytes, durations as "10s" or
// "500ms".
std::string SizeValue(uint64_t bytes);
std::string DurationValue(uint64_t ms);

// drbd_options.cc: the options of the net, disk (8.4), syncer (8.3), startup and options
// sections. `pair`: the resource names two nodes (repld then needs net.secret).
Status MapNetOptions(ResourceImport& r, const Statement& resource, bool pair,
                     const ImportOptions& options);
Status MapDiskOptions(ResourceImport& r);
Status MapResyncOptions(ResourceImport& r);
Status MapStartupOptions(ResourceImport& r);
// Every option no mapping took: a comment in its section's table, and a warning unless it is
// harmless to drop.
void ReportUnusedOptions(ResourceImport& r);

}  // namespace repld::drbd
