#include "cli/toml_text.h"

#include <algorithm>
#include <cctype>
#include <cstdio>

#include "common/check.h"

namespace repld::cli {
namespace {

// Trailing comments start in this column (as in docs/config.md), unless the key is longer.
constexpr size_t kCommentColumn = 30;
constexpr size_t kWidthMax = 100;

}  // namespace

std::vector<std::string> WrapComment(std::string_view text, size_t width) {
  std::vector<std::string> lines;
  std::string line = "#";
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && text[i] == ' ') ++i;
    size_t end = i;
    while (end < text.size() && text[end] != ' ') ++end;
    if (end == i) break;
    const std::string_view word = text.substr(i, end - i);
    if (line.size() > 1 && line.size() + 1 + word.size() > width) {
      lines.push_back(line);
      line = "#";
    }
    line += " ";
    line += word;
    i = end;
  }
  if (line.size() > 1 || lines.empty()) lines.push_back(line);
  return lines;
}

void TomlText::Header(std::string_view text) {
  for (std::string& l : WrapComment(text, kWidthMax)) header_.push_back(std::move(l));
}

void TomlText::Declare(const std::string& table, bool keep_empty) {
  tables_.push_back(Table{table, keep_empty, {}});
}

TomlText::Table& TomlText::Find(const std::string& table) {
  for (Table& t : tables_) {
    if (t.name == table) return t;
  }
  REPLD_CHECK(false && "table not declared");
  __builtin_unreachable();
}

void TomlText::Key(const std::string& table, std::string_view key, const std::string& value,
                   std::string_view comment) {
  Table& t = Find(table);
  std::string line = std::string(key) + " = " + value;
  if (comment.empty()) {
    t.lines.push_back(line);
    return;
  }
  const size_t column = std::max(line.size() + 1, kCommentColumn - 1);
  if (column + 2 + comment.size() > kWidthMax) {
    // Too long to trail the key: a block above it.
    for (std::string& l : WrapComment(comment, kWidthMax)) t.lines.push_back(std::move(l));
    t.lines.push_back(line);
    return;
  }
  line.resize(column, ' ');
  line += "# ";
  line += comment;
  t.lines.push_back(line);
}

void TomlText::Comment(const std::string& table, std::string_view text) {
  Table& t = Find(table);
  for (std::string& l : WrapComment(text, kWidthMax)) t.lines.push_back(std::move(l));
}

std::string TomlText::Render() const {
  std::string out;
  for (const std::string& l : header_) out += l + "\n";
  for (const Table& t : tables_) {
    if (t.lines.empty() && !t.keep_empty) continue;
    if (!out.empty()) out += "\n";
    out += "[" + t.name + "]\n";
    for (const std::string& l : t.lines) out += l + "\n";
  }
  return out;
}

std::string TomlText::Quote(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned char>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string TomlText::KeyName(std::string_view name) {
  bool bare = !name.empty();
  for (char c : name) {
    bare = bare && (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-');
  }
  return bare ? std::string(name) : Quote(name);
}

}  // namespace repld::cli
