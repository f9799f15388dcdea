// Conversions between bytes, sectors and blocks live here, and only here.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace repld {

inline constexpr uint64_t kKiB = 1024;
inline constexpr uint64_t kMiB = 1024 * kKiB;
inline constexpr uint64_t kGiB = 1024 * kMiB;
inline constexpr uint64_t kTiB = 1024 * kGiB;
inline constexpr uint64_t kSectorBytes = 512;

constexpr bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }
constexpr uint64_t AlignDown(uint64_t v, uint64_t align) { return v - v % align; }
constexpr uint64_t AlignUp(uint64_t v, uint64_t align) { return AlignDown(v + align - 1, align); }
constexpr bool IsAligned(uint64_t v, uint64_t align) { return v % align == 0; }
constexpr uint64_t DivCeil(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

// Parses "4096", "10M", "4KiB", "2 GiB". K/M/G/T and KiB/MiB/GiB/TiB both mean powers of two,
// as in DRBD's configuration. Returns nullopt on anything else or on overflow.
std::optional<uint64_t> ParseSizeBytes(std::string_view text);

// Parses a duration: "500ms", "10s", "2m", "1h"; a bare number means seconds. Milliseconds out.
std::optional<uint64_t> ParseDurationMs(std::string_view text);

// "1.5 GiB", "512 B": for humans.
std::string FormatSizeBytes(uint64_t bytes);

}  // namespace repld
