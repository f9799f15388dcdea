// Writes a TOML file meant to be read by people as well as by repld: tables in a fixed order,
// each key with a short trailing comment, longer comments as blocks wrapped at 100 columns.
// Used by import-drbd; it only formats, it does not validate.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace repld::cli {

class TomlText {
 public:
  // Comment lines at the top of the file, before any table.
  void Header(std::string_view text);

  // Declares a table; tables render in the order declared. An empty table renders only if
  // `keep_empty` (a file needs [resource] and its nodes whatever they hold).
  void Declare(const std::string& table, bool keep_empty = false);

  // `key = value` in `table` (declared before); `value` is TOML already (see Quote).
  void Key(const std::string& table, std::string_view key, const std::string& value,
           std::string_view comment = {});
  // A comment block in `table`, below what was added to it so far.
  void Comment(const std::string& table, std::string_view text);

  std::string Render() const;

  // A TOML basic string: "text" with quotes, backslashes and control bytes escaped.
  static std::string Quote(std::string_view text);
  // A table name part: bare if it can be (A-Z a-z 0-9 _ -), else quoted.
  static std::string KeyName(std::string_view name);

 private:
  struct Table {
    std::string name;
    bool keep_empty = false;
    std::vector<std::string> lines;
  };
  Table& Find(const std::string& table);

  std::vector<std::string> header_;
  std::vector<Table> tables_;
};

// `text` as "# " comment lines of at most `width` columns (a longer word stays whole).
std::vector<std::string> WrapComment(std::string_view text, size_t width = 100);

}  // namespace repld::cli
