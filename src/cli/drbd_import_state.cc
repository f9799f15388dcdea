#include "cli/drbd_import_state.h"

#include <cctype>
#include <cstdint>

#include "common/units.h"

namespace repld::drbd {

std::string TableOf(const std::string& section) {
  if (section == "net" || section == "disk" || section == "startup") return section;
  if (section == "syncer") return kResync;
  return kResource;
}

void ResourceImport::AddOption(const Statement& st, const std::string& section, bool from_common) {
  for (Option& o : options_) {
    if (o.used || o.st->keyword.text != st.keyword.text) continue;
    // The resource's own value overrides common's, as in DRBD. Twice at one level is an error
    // for drbdadm; here the later one counts, and says so.
    if (o.from_common == from_common) {
      Warn(TableOf(section), st.keyword.where,
           "'" + st.keyword.text + "' is given twice (also at line " +
               std::to_string(o.st->keyword.where.line) + "); the later one counts");
    }
    o.used = true;
  }
  options_.push_back(Option{&st, section, from_common, false});
}

Option* ResourceImport::Take(std::string_view keyword) {
  for (auto it = options_.rbegin(); it != options_.rend(); ++it) {
    if (!it->used && it->st->keyword.text == keyword) {
      it->used = true;
      return &*it;
    }
  }
  return nullptr;
}

std::string ResourceImport::Where(Location where) const {
  return where.line == 0 ? path_ : path_ + ":" + std::to_string(where.line);
}

void ResourceImport::Note(const std::string& table, Location where, const std::string& text) {
  const std::string comment = Where(where) + ": " + text;
  if (table == kHeader) {
    toml_.Header(comment);
  } else {
    toml_.Comment(table, comment);
  }
}

void ResourceImport::Warn(const std::string& table, Location where, const std::string& text) {
  const std::string comment = "warning: " + Where(where) + ": " + text;
  if (table == kHeader) {
    toml_.Header(comment);
  } else {
    toml_.Comment(table, comment);
  }
  warnings_.push_back(Warning{where, text});
}

Status ResourceImport::Error(Location where, const std::string& text) const {
  return Status::Invalid(path_ + ":" + std::to_string(where.line) + ":" +
                         std::to_string(where.column) + ": " + text);
}

void ResourceImport::Mapped(const std::string& table, std::string_view key,
                            const std::string& value, const Statement& from, std::string_view why) {
  std::string comment = from.Shown();
  if (!why.empty()) comment += " (" + std::string(why) + ")";
  comment += ", line " + std::to_string(from.keyword.where.line);
  toml_.Key(table, key, value, comment);
}

Result<std::string> ResourceImport::Single(const Statement& st) const {
  if (st.args.empty()) {
    return Error(st.keyword.end, "'" + st.keyword.text + "' needs a value");
  }
  if (st.args.size() > 1) {
    return Error(st.args[0].end, "expected ';' after '" + st.keyword.text + " " + st.args[0].text +
                                     "', found '" + st.args[1].text + "'");
  }
  return st.args[0].text;
}

Result<uint64_t> ResourceImport::Number(const Statement& st) const {
  auto text = Single(st);
  if (!text.ok()) return text.status();
  uint64_t value = 0;
  bool ok = !text->empty() && text->size() <= 12;
  for (char c : text.value()) {
    ok = ok && std::isdigit(static_cast<unsigned char>(c));
    if (ok) value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  if (!ok) {
    return Error(st.args[0].where, st.keyword.text + ": '" + text.value() +
                                       "' is not a number; expected decimal digits");
  }
  return value;
}

Result<uint64_t> ResourceImport::Bytes(const Statement& st, uint64_t unit_bytes) const {
  auto text = Single(st);
  if (!text.ok()) return text.status();
  std::string digits = text.value();
  uint64_t multiplier = unit_bytes;
  const char last = digits.empty() ? '\0' : static_cast<char>(std::toupper(digits.back()));
  if (last == 'K' || last == 'M' || last == 'G') {
    multiplier = last == 'K' ? kKiB : (last == 'M' ? kMiB : kGiB);
    digits.pop_back();
  }
  bool ok = !digits.empty() && digits.size() <= 12;
  uint64_t value = 0;
  for (char c : digits) {
    ok = ok && std::isdigit(static_cast<unsigned char>(c));
    if (ok) value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  if (!ok || value > UINT64_MAX / multiplier) {
    return Error(st.args[0].where, st.keyword.text + ": '" + text.value() +
                                       "' is not a size; expected digits and an optional unit "
                                       "K, M or G (as in 10M)");
  }
  return value * multiplier;
}

uint64_t ResourceImport::Clamp(const Statement& st, const std::string& table, uint64_t value,
                               uint64_t min, uint64_t max, const std::string& unit) {
  if (value >= min && value <= max) return value;
  const uint64_t clamped = value < min ? min : max;
  Warn(table, st.keyword.where,
       st.Shown() + ": " + std::to_string(value) + unit + " is out of repld's range " +
           std::to_string(min) + unit + ".." + std::to_string(max) + unit + "; using " +
           std::to_string(clamped) + unit);
  return clamped;
}

std::string SizeValue(uint64_t bytes) {
  if (bytes == 0) return "\"0\"";
  for (auto [unit, letter] : {std::pair{kGiB, 'G'}, {kMiB, 'M'}, {kKiB, 'K'}}) {
    if (bytes % unit == 0) return "\"" + std::to_string(bytes / unit) + letter + "\"";
  }
  return std::to_string(bytes);
}

std::string DurationValue(uint64_t ms) {
  if (ms % 1000 == 0) return "\"" + std::to_string(ms / 1000) + "s\"";
  return "\"" + std::to_string(ms) + "ms\"";
}

}  // namespace repld::drbd
