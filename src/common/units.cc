#include "common/units.h"

#include <cctype>
#include <cstdio>

namespace repld {

std::optional<uint64_t> ParseSizeBytes(std::string_view text) {
  size_t i = 0;
  uint64_t value = 0;
  bool any_digit = false;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    const uint64_t digit = static_cast<uint64_t>(text[i] - '0');
    if (value > (UINT64_MAX - digit) / 10) return std::nullopt;
    value = value * 10 + digit;
    any_digit = true;
    ++i;
  }
  if (!any_digit) return std::nullopt;
  while (i < text.size() && text[i] == ' ') ++i;
  std::string_view suffix = text.substr(i);
  uint64_t multiplier = 1;
  if (suffix.empty() || suffix == "B") {
    multiplier = 1;
  } else {
    const char unit = static_cast<char>(std::toupper(static_cast<unsigned char>(suffix[0])));
    std::string_view rest = suffix.substr(1);
    if (!(rest.empty() || rest == "iB" || rest == "B")) return std::nullopt;
    switch (unit) {
      case 'K':
        multiplier = kKiB;
        break;
      case 'M':
        multiplier = kMiB;
        break;
      case 'G':
        multiplier = kGiB;
        break;
      case 'T':
        multiplier = kTiB;
        break;
      default:
        return std::nullopt;
    }
  }
  if (value > UINT64_MAX / multiplier) return std::nullopt;
  return value * multiplier;
}

std::optional<uint64_t> ParseDurationMs(std::string_view text) {
  size_t i = 0;
  uint64_t value = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    if (value > UINT64_MAX / 10 - 10) return std::nullopt;
    value = value * 10 + static_cast<uint64_t>(text[i] - '0');
    ++i;
  }
  if (i == 0) return std::nullopt;
  while (i < text.size() && text[i] == ' ') ++i;
  const std::string_view unit = text.substr(i);
  uint64_t ms_per_unit = 0;
  if (unit == "ms") {
    ms_per_unit = 1;
  } else if (unit.empty() || unit == "s") {
    ms_per_unit = 1000;
  } else if (unit == "m" || unit == "min") {
    ms_per_unit = 60'000;
  } else if (unit == "h") {
    ms_per_unit = 3'600'000;
  } else {
    return std::nullopt;
  }
  if (value > UINT64_MAX / ms_per_unit) return std::nullopt;
  return value * ms_per_unit;
}

std::string FormatSizeBytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int unit = 0;
  while (v >= 1024.0 && unit < 5) {
    v /= 1024.0;
    ++unit;
  }
  char buf[32];
  if (unit == 0) {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[unit]);
  }
  return buf;
}

}  // namespace repld
