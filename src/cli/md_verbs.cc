// create-md, dump-md: the resource's on-disk metadata (see docs/metadata.md).
#include <sys/random.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "blockdev/md_device.h"
#include "cli/progress_line.h"
#include "cli/status_format.h"
#include "cli/verbs.h"
#include "common/units.h"

namespace repld::cli {
namespace {

struct MdArgs {
  ResourceOptions resource;
  bool force = false;
  bool json = false;
};

std::string Hex64(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016" PRIX64, v);
  return buf;
}

std::string SizeText(uint64_t bytes) {
  return std::to_string(bytes) + " bytes (" + FormatSizeBytes(bytes) + ")";
}

std::string TimeText(uint64_t unix_seconds) {
  const time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm {};
  char buf[32];
  if (gmtime_r(&t, &tm) == nullptr || strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
    return std::to_string(unix_seconds);
  }
  return buf;
}

// The local disk's state as the flags record it (DRBD's words).
const char* DiskStateOf(uint32_t flags) {
  if ((flags & kMdConsistent) == 0) return "Inconsistent";
  return (flags & kMdWasUpToDate) != 0 ? "UpToDate" : "Consistent";
}

Result<MdUuid> RandomUuid() {
  MdUuid uuid{};
  if (getrandom(uuid.data(), uuid.size(), 0) != static_cast<ssize_t>(uuid.size())) {
    return Status::Error(errno, "cannot get random bytes for the device UUID: " + ErrnoText(errno));
  }
  uuid[6] = static_cast<uint8_t>((uuid[6] & 0x0F) | 0x40);  // RFC 4122 version 4
  uuid[8] = static_cast<uint8_t>((uuid[8] & 0x3F) | 0x80);
  return uuid;
}

// DRBD's refusal, with the ways out.
std::string FileSystemRefusal(const Target& t, const MdDevice& dev, const FileSystemInfo& fs,
                              const MdLayout& l) {
  const std::string& disk = t.node.disk;
  std::string msg = "'" + disk + "' holds an " + fs.type + " file system of " +
                    SizeText(fs.size_bytes) + "; internal metadata (" +
                    FormatSizeBytes(l.md_bytes) + ") goes at the end of the disk, from byte " +
                    std::to_string(l.md_offset) + ", and would overwrite the last " +
                    FormatSizeBytes(fs.size_bytes - l.data_bytes) +
                    " of the file system. Ways out:\n"
                    "  - external metadata: set meta_disk = \"/path/of/a/file-or-device\" under "
                    "[disk] or [node." +
                    t.node.name + "] in " + t.config.path + " (it needs at least " +
                    SizeText(MdBytesFor(dev.data_disk_bytes(), t.config.meta.al_extents)) +
                    ")\n"
                    "  - shrink the file system to at most " +
                    SizeText(l.data_bytes);
  if (fs.type == "xfs") {
    msg += " (xfs cannot shrink: copy the data to a smaller one)";
  } else {
    msg += " (resize2fs " + disk + " " + std::to_string(l.data_bytes / kKiB) + "K)";
  }
  msg += "\n  - --force: write the metadata anyway and damage the end of the file system";
  return msg;
}

int CreateMd(const MdArgs& args) {
  auto target = ResolveResource(args.resource);
  if (!target.ok()) return Fail(target.status().message());
  const Target& t = target.value();
  const MdLocation where{t.node.disk, EffectiveMetaDisk(t.config, t.node)};
  const std::string context = "create-md " + t.config.name + " (node " + t.node.name + "): ";
  if (t.node.name.size() > kMdNameBytesMax || t.config.name.size() > kMdNameBytesMax) {
    return Fail(context + "resource and node names may have at most 64 bytes");
  }
  auto opened = MdDevice::Open(where, MdOpenOptions{.writable = true, .lock = true});
  if (!opened.ok()) return Fail(context + opened.status().message());
  MdDevice& dev = *opened.value();
  auto layout = dev.Layout(t.config.meta.al_extents);
  if (!layout.ok()) {
    return Fail(context +
                (where.internal() ? "'" + where.data_disk + "': "
                                  : "metadata disk '" + where.meta_disk + "': ") +
                layout.status().message());
  }
  const MdLayout& l = layout.value();

  auto probe = dev.Probe();
  if (!probe.ok()) return Fail(context + probe.status().message());
  if (probe->presence != MdPresence::kNone && !args.force) {
    return Fail(context + "'" + dev.md_path() +
                (probe->presence == MdPresence::kValid
                     ? "' already has metadata (" + probe->detail + ")"
                     : "' holds damaged repld metadata (" + probe->detail + "); `replctl dump-md " +
                           t.config.name + "` shows it") +
                "; --force forgets the bitmap and generation identifiers");
  }
  if (where.internal()) {
    auto fs = dev.DetectDataFileSystem();
    if (!fs.ok()) return Fail(context + fs.status().message());
    if (fs.value() && fs.value()->size_bytes > l.data_bytes) {
      if (!args.force) return Fail(context + FileSystemRefusal(t, dev, *fs.value(), l));
      std::printf("warning: overwriting the end of the %s file system on '%s' (--force)\n",
                  fs.value()->type.c_str(), where.data_disk.c_str());
    }
  }

  auto uuid = RandomUuid();
  if (!uuid.ok()) return Fail(context + uuid.status().message());
  Superblock sb;
  sb.device_uuid = uuid.value();
  sb.al_extents = t.config.meta.al_extents;
  sb.backing_bytes = dev.data_disk_bytes();
  sb.layout = l;
  sb.created_unix_seconds = static_cast<uint64_t>(std::time(nullptr));
  sb.node_name = t.node.name;
  sb.resource_name = t.config.name;
  // A large disk's bitmap takes a while (32 MiB per TiB): progress on a terminal.
  ProgressLine progress;
  Status created = dev.Create(sb, [&progress](uint64_t done, uint64_t total) {
    progress.Draw("create-md: zeroing the activity log and bitmap " + FormatProgress(done, total),
                  done == total);
  });
  progress.Finish();
  if (!created.ok()) return Fail(context + created.message());
  std::printf("created %s metadata for resource %s on node %s\n",
              l.internal ? "internal" : "external", t.config.name.c_str(), t.node.name.c_str());
  std::printf("  metadata    %s, %s from byte %" PRIu64 "\n", dev.md_path().c_str(),
              FormatSizeBytes(l.md_bytes).c_str(), l.md_offset);
  std::printf("  data        %s of %s\n", SizeText(l.data_bytes).c_str(), where.data_disk.c_str());
  std::printf("  device UUID %s; disk state Inconsistent until the first full sync\n",
              FormatMdUuid(sb.device_uuid).c_str());
  return 0;
}

nlohmann::ordered_json DumpJson(const Target& t, const MdDevice& dev, const MdContents& md) {
  const Superblock& sb = md.superblock;
  const MdLayout& l = sb.layout;
  nlohmann::ordered_json hot = nlohmann::ordered_json::array();
  for (uint32_t e : md.al.hot_extents) hot.push_back(e);
  return {
      {"resource", t.config.name},
      {"node", t.node.name},
      {"data_disk", dev.location().data_disk},
      {"meta_disk", dev.location().meta_disk},
      {"superblock",
       {{"format_version", kMdFormatVersion},
        {"device_uuid", FormatMdUuid(sb.device_uuid)},
        {"flags", sb.flags},
        {"flag_names", MdFlagNames(sb.flags)},
        {"disk_state", DiskStateOf(sb.flags)},
        {"current_uuid", Hex64(sb.current_uuid)},
        {"bitmap_uuid", Hex64(sb.bitmap_uuid)},
        {"history_uuids", {Hex64(sb.history_uuid[0]), Hex64(sb.history_uuid[1])}},
        {"al_extents", sb.al_extents},
        {"backing_bytes", sb.backing_bytes},
        {"created_unix_seconds", sb.created_unix_seconds},
        {"node_name", sb.node_name},
        {"resource_name", sb.resource_name}}},
      {"layout",
       {{"internal", l.internal},
        {"md_offset", l.md_offset},
        {"md_bytes", l.md_bytes},
        {"superblock_offset", l.superblock_offset},
        {"al_offset", l.al_offset},
        {"al_slot_bytes", l.al_slot_bytes},
        {"al_slots", l.al_slots},
        {"bitmap_offset", l.bitmap_offset},
        {"bitmap_bytes", l.bitmap_bytes},
        {"data_bytes", l.data_bytes}}},
      {"bitmap",
       {{"bits", md.bitmap.bit_count()},
        {"set_bits", md.bitmap.CountSet()},
        {"out_of_sync_bytes", md.bitmap.OutOfSyncBytes()}}},
      {"activity_log",
       {{"seq", md.al.seq},
        {"slot", md.al.slot},
        {"hot_extents", hot},
        {"damaged_slots", md.al_warnings}}},
  };
}

void DumpHuman(const Target& t, const MdDevice& dev, const MdContents& md) {
  const Superblock& sb = md.superblock;
  const MdLayout& l = sb.layout;
  std::printf("resource %s, node %s: %s metadata on %s\n", t.config.name.c_str(),
              t.node.name.c_str(), l.internal ? "internal" : "external", dev.md_path().c_str());
  std::printf("superblock (format version %u, checksum ok)\n", kMdFormatVersion);
  std::printf("  device UUID      %s\n", FormatMdUuid(sb.device_uuid).c_str());
  std::printf("  created          %s for resource '%s', node '%s'\n",
              TimeText(sb.created_unix_seconds).c_str(), sb.resource_name.c_str(),
              sb.node_name.c_str());
  std::printf("  flags            0x%08x %s (disk %s)\n", sb.flags, MdFlagNames(sb.flags).c_str(),
              DiskStateOf(sb.flags));
  std::printf("  current UUID     %s%s\n", Hex64(sb.current_uuid).c_str(),
              sb.current_uuid == 0 ? " (just created)" : "");
  std::printf("  bitmap UUID      %s\n", Hex64(sb.bitmap_uuid).c_str());
  std::printf("  history UUIDs    %s %s\n", Hex64(sb.history_uuid[0]).c_str(),
              Hex64(sb.history_uuid[1]).c_str());
  std::printf("  al_extents       %u\n", sb.al_extents);
  std::printf("layout (byte offsets on %s)\n", dev.md_path().c_str());
  std::printf("  backing disk     %s\n", SizeText(sb.backing_bytes).c_str());
  std::printf("  data             %s (exported)\n", SizeText(l.data_bytes).c_str());
  std::printf("  metadata         %s at byte %" PRIu64 "\n", SizeText(l.md_bytes).c_str(),
              l.md_offset);
  std::printf("  superblock       4096 bytes at byte %" PRIu64 "\n", l.superblock_offset);
  std::printf("  activity log     %" PRIu64 " slots x %" PRIu64 " bytes at byte %" PRIu64 "\n",
              l.al_slots, l.al_slot_bytes, l.al_offset);
  std::printf("  bitmap           %" PRIu64 " bytes at byte %" PRIu64 "\n", l.bitmap_bytes,
              l.bitmap_offset);
  std::printf("bitmap: %" PRIu64 " of %" PRIu64 " bits set, %s out of sync\n", md.bitmap.CountSet(),
              md.bitmap.bit_count(), SizeText(md.bitmap.OutOfSyncBytes()).c_str());
  std::printf("activity log: transaction seq %" PRIu64, md.al.seq);
  if (md.al.slot >= 0) std::printf(" (slot %" PRId64 ")", md.al.slot);
  std::printf(", %zu hot extent(s)", md.al.hot_extents.size());
  constexpr size_t kShownMax = 32;
  for (size_t i = 0; i < md.al.hot_extents.size() && i < kShownMax; ++i) {
    std::printf("%s%u", i == 0 ? ": " : " ", md.al.hot_extents[i]);
  }
  std::printf("%s\n", md.al.hot_extents.size() > kShownMax ? " ..." : "");
  for (const std::string& w : md.al_warnings) std::printf("  skipped: %s\n", w.c_str());
}

int DumpMd(const MdArgs& args) {
  auto target = ResolveResource(args.resource);
  if (!target.ok()) return Fail(target.status().message());
  const Target& t = target.value();
  const MdLocation where{t.node.disk, EffectiveMetaDisk(t.config, t.node)};
  const std::string context = "dump-md " + t.config.name + " (node " + t.node.name + "): ";
  auto opened = MdDevice::Open(where, MdOpenOptions{});
  if (!opened.ok()) return Fail(context + opened.status().message());
  MdDevice& dev = *opened.value();
  auto md = dev.Read();
  if (!md.ok()) {
    const bool none = md.status().message().find("no repld metadata") != std::string::npos;
    return Fail(context + md.status().message() +
                (none ? "; create it with `replctl create-md " + t.config.name + "`" : ""));
  }
  if (args.json) {
    std::printf("%s\n", DumpJson(t, dev, md.value()).dump(2).c_str());
  } else {
    DumpHuman(t, dev, md.value());
  }
  return 0;
}

}  // namespace

std::vector<Verb> AddMetadataVerbs(CLI::App& app) {
  auto create_args = std::make_shared<MdArgs>();
  CLI::App* create = app.add_subcommand(
      "create-md", "write fresh metadata (superblock, activity log, bitmap) for this node's disk");
  AddResourceOptions(*create, create_args->resource);
  create->add_flag("--force", create_args->force,
                   "overwrite existing metadata or the end of a file system");

  auto dump_args = std::make_shared<MdArgs>();
  CLI::App* dump = app.add_subcommand("dump-md", "print this node's metadata");
  AddResourceOptions(*dump, dump_args->resource);
  dump->add_flag("--json", dump_args->json, "print JSON");
  return {{create, [create_args] { return CreateMd(*create_args); }},
          {dump, [dump_args] { return DumpMd(*dump_args); }}};
}

}  // namespace repld::cli
