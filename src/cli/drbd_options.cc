// The options of a resource's net, disk, syncer (8.3), startup and options (8.4) sections, as
// repld keys. DRBD 8.4 moved the syncer's options to disk (rate as resync-rate) and net
// (csums-alg, verify-alg); an option is looked up by its name wherever it was.
#include <string>

#include "cli/drbd_import_state.h"
#include "common/units.h"
#include "replication/sync_decision.h"

namespace repld::drbd {
namespace {

using cli::TomlText;

Status MapSecret(ResourceImport& r, const Statement& resource, bool pair,
                 const ImportOptions& options) {
  if (Option* o = r.Take("shared-secret")) {
    auto v = r.Single(*o->st);
    if (!v.ok()) return v.status();
    if (v->empty() || v->size() > 256) {
      return r.Error(o->st->args[0].where,
                     "shared-secret: repld's net.secret takes 1 to 256 "
                     "characters");
    }
    // The comment does not repeat the secret.
    r.toml().Key(kNet, "secret", TomlText::Quote(v.value()),
                 "shared-secret, line " + std::to_string(o->st->keyword.where.line));
  } else if (pair) {
    if (!options.random_secret) return Status::Invalid("no source of random secrets");
    auto secret = options.random_secret();
    if (!secret.ok()) return secret.status();
    r.Warn(kNet, resource.keyword.where,
           "resource " + resource.args[0].text +
               " has no shared-secret, and repld needs net.secret for a pair: generated a random "
               "one. Use this same file, with this secret, on both nodes");
    r.toml().Key(kNet, "secret", TomlText::Quote(secret.value()));
  }
  if (Option* o = r.Take("cram-hmac-alg")) {
    r.Note(kNet, o->st->keyword.where,
           o->st->Shown() +
               ": dropped; repld always authenticates the peers with HMAC-SHA256 "
               "over net.secret");
  }
  return Status::Ok();
}

// net.KEY from a DRBD count of `unit_ms`, within repld's range.
Status MapDuration(ResourceImport& r, std::string_view drbd, const char* key, uint64_t unit_ms,
                   const char* why, uint64_t min_ms, uint64_t max_ms) {
  Option* o = r.Take(drbd);
  if (o == nullptr) return Status::Ok();
  auto n = r.Number(*o->st);
  if (!n.ok()) return n.status();
  const uint64_t ms = r.Clamp(*o->st, kNet, n.value() * unit_ms, min_ms, max_ms, "ms");
  r.Mapped(kNet, key, DurationValue(ms), *o->st, why);
  return Status::Ok();
}

Status MapCount(ResourceImport& r, std::string_view drbd, const char* key, uint64_t min,
                uint64_t max) {
  Option* o = r.Take(drbd);
  if (o == nullptr) return Status::Ok();
  auto n = r.Number(*o->st);
  if (!n.ok()) return n.status();
  r.Mapped(kNet, key, std::to_string(r.Clamp(*o->st, kNet, n.value(), min, max, "")), *o->st);
  return Status::Ok();
}

template <typename E>
Status MapPolicy(ResourceImport& r, const char* drbd, const char* key,
                 bool (*parse)(const std::string&, E*), const char* allowed) {
  Option* o = r.Take(drbd);
  if (o == nullptr) return Status::Ok();
  auto v = r.Single(*o->st);
  if (!v.ok()) return v.status();
  E parsed{};
  if (parse(v.value(), &parsed)) {
    r.Mapped(kNet, key, TomlText::Quote(v.value()), *o->st);
  } else {
    r.Warn(kNet, o->st->keyword.where,
           o->st->Shown() + ": repld has no such split-brain policy (allowed: " + allowed +
               "); net." + key + " stays \"disconnect\": an operator resolves the split brain");
  }
  return Status::Ok();
}

// Why an option is dropped; `warning`: the user may miss what it did (else a note suffices).
struct Dropped {
  const char* keyword;
  bool warning;
  const char* why;
};

constexpr const char* kFlushes = "repld has no such switch: flushes always reach both disks";
constexpr const char* kCongestion =
    "repld has no pull-ahead mode: writes wait once net.max_buffers are in flight";

constexpr Dropped kDropped[] = {
    {"timeout", true,
     "repld has no request timeout of its own: it drops the peer after net.ko_count pings "
     "unanswered within net.ping_timeout"},
    {"allow-two-primaries", true,
     "repld has no dual-Primary mode: a node is not promoted while its peer is Primary"},
    {"data-integrity-alg", false, "repld checks every frame's payload with CRC32C anyway"},
    {"sndbuf-size", false, "repld sizes its sockets itself"},
    {"rcvbuf-size", false, "repld sizes its sockets itself"},
    {"on-congestion", true, kCongestion},
    {"congestion-fill", true, kCongestion},
    {"congestion-extents", true, kCongestion},
    {"fencing", true, "repld runs no fence-peer handler: fence with the cluster manager"},
    {"size", true, "repld uses the whole backing disk (less its internal metadata)"},
    {"no-disk-flushes", true, kFlushes},
    {"no-disk-barrier", true, kFlushes},
    {"no-disk-drain", true, kFlushes},
    {"no-md-flushes", true, kFlushes},
    {"disk-flushes", true, kFlushes},
    {"disk-barrier", true, kFlushes},
    {"disk-drain", true, kFlushes},
    {"md-flushes", true, kFlushes},
    {"after", true, "repld resyncs each resource on its own, in no set order"},
    {"resync-after", true, "repld resyncs each resource on its own, in no set order"},
    {"c-delay-target", true, "repld's controller has no delay target (see c_plan_ahead)"},
    {"become-primary-on", true,
     "repld starts every node Secondary: promote with `replctl primary` (or the cluster "
     "manager)"},
    {"use-rle", false, "repld's bitmap exchange is its own"},
    {"cpu-mask", false, "repld does not pin its threads"},
};

}  // namespace

Status MapNetOptions(ResourceImport& r, const Statement& resource, bool pair,
                     const ImportOptions& options) {
  // docs/config.md's order: secret, ping_interval, ping_timeout, ko_count, connect_timeout,
  // reconnect_max, max_buffers, after_sb_*.
  Status s = MapSecret(r, resource, pair, options);
  if (s.ok()) s = MapDuration(r, "ping-int", "ping_interval", 1000, "seconds", 100, 3'600'000);
  if (s.ok()) {
    s = MapDuration(r, "ping-timeout", "ping_timeout", 100, "tenths of a second", 10, 60'000);
  }
  if (s.ok()) s = MapCount(r, "ko-count", "ko_count", 0, 1000);
  if (s.ok()) {
    s = MapDuration(r, "connect-int", "reconnect_max", 1000, "seconds; repld backs off up to it",
                    100, 600'000);
  }
  if (s.ok()) s = MapCount(r, "max-buffers", "max_buffers", 32, 131072);
  if (s.ok()) {
    s = MapPolicy(r, "after-sb-0pri", "after_sb_0pri", ParseAfterSb0Pri,
                  "disconnect, discard-younger-primary, discard-least-changes, "
                  "discard-zero-changes");
  }
  if (s.ok()) {
    s = MapPolicy(r, "after-sb-1pri", "after_sb_1pri", ParseAfterSb1Pri,
                  "disconnect, consensus, discard-secondary");
  }
  if (s.ok()) s = MapPolicy(r, "after-sb-2pri", "after_sb_2pri", ParseAfterSb2Pri, "disconnect");
  return s;
}

Status MapDiskOptions(ResourceImport& r) {
  if (Option* o = r.Take("al-extents")) {
    auto n = r.Number(*o->st);
    if (!n.ok()) return n.status();
    const uint64_t extents = r.Clamp(*o->st, kDisk, n.value(), 7, 65534, "");
    // A pair needs room for two of the largest requests in the log (replicated_device.cc):
    // 2 x (request_bytes_max / 4 MiB + 1) extents, 18 with the default 32 MiB.
    const uint64_t fit_bytes = (extents / 2 - 1) * 4 * kMiB;
    if (fit_bytes < 32 * kMiB) {
      uint64_t request_bytes = 1 * kMiB;
      while (request_bytes * 2 <= fit_bytes) request_bytes *= 2;
      r.Warn(kNbd, o->st->keyword.where,
             o->st->Shown() +
                 ": below the 18 extents repld needs with the default "
                 "nbd.request_bytes_max (32 MiB); requests limited to " +
                 FormatSizeBytes(request_bytes) + " instead, so that the log holds two of them");
      r.toml().Key(kNbd, "request_bytes_max", SizeValue(request_bytes));
    }
    r.Mapped(kDisk, "al_extents", std::to_string(extents), *o->st,
             "4 MiB extents as DRBD's; repld needs >= 18");
  }
  // [disk] on_io_error (docs/replication.md, "When the disk fails"): DRBD's detach and pass_on
  // as they are. call-local-io-error runs a handler repld does not have (it usually halts the
  // node): the disk is detached instead, with a warning.
  if (Option* o = r.Take("on-io-error")) {
    auto v = r.Single(*o->st);
    if (!v.ok()) return v.status();
    if (v.value() == "detach" || v.value() == "pass_on") {
      r.Mapped(kDisk, "on_io_error", TomlText::Quote(v.value()), *o->st);
    } else if (v.value() == "call-local-io-error") {
      r.Warn(kDisk, o->st->keyword.where,
             o->st->Shown() +
                 ": repld runs no local-io-error handler (DRBD's usually halts the node); the "
                 "failing disk is detached instead (on_io_error = \"detach\"): put what the "
                 "handler did in your monitoring of 'replctl events'");
      r.toml().Key(kDisk, "on_io_error", TomlText::Quote("detach"));
    } else {
      return r.Error(o->st->args[0].where,
                     "on-io-error " + v.value() +
                         ": not a DRBD policy; allowed: detach, pass_on, call-local-io-error");
    }
  }
  return Status::Ok();
}

Status MapResyncOptions(ResourceImport& r) {
  Option* rate = r.Take("rate");  // 8.3's syncer
  if (rate == nullptr) rate = r.Take("resync-rate");
  Option* plan = r.Take("c-plan-ahead");
  uint64_t plan_ms = 0;
  if (plan != nullptr) {
    auto n = r.Number(*plan->st);
    if (!n.ok()) return n.status();
    plan_ms = r.Clamp(*plan->st, kResync, n.value() * 100, 0, 300'000, "ms");
  }
  if (rate != nullptr) {
    auto bytes = r.Bytes(*rate->st, kKiB);
    if (!bytes.ok()) return bytes.status();
    const uint64_t v = r.Clamp(*rate->st, kResync, bytes.value(), 0, 100 * kGiB, " bytes/s");
    if (plan_ms > 0) {
      r.Warn(kResync, rate->st->keyword.where,
             rate->st->Shown() +
                 ": dropped; with c-plan-ahead > 0 DRBD's controller only "
                 "starts at this rate, and repld takes either a fixed rate or "
                 "its controller (c_plan_ahead, c_min_rate, c_max_rate)");
    } else {
      r.Mapped(kResync, "rate", SizeValue(v), *rate->st,
               "bytes per second; K, M, G are KiB, MiB, GiB");
      if (rate->st->keyword.text == "resync-rate" && plan == nullptr) {
        r.Note(kResync, rate->st->keyword.where,
               "DRBD 8.4 runs its dynamic controller by default (c-plan-ahead 20) and only "
               "starts at resync-rate; repld keeps to this fixed rate unless c_plan_ahead is set");
      }
    }
  }
  if (plan != nullptr) {
    r.Mapped(kResync, "c_plan_ahead", DurationValue(plan_ms), *plan->st, "tenths of a second");
    if (plan_ms > 0) {
      r.Warn(kResync, plan->st->keyword.where,
             plan->st->Shown() +
                 ": repld's controller is simpler than DRBD's: application I/O "
                 "drops the resync to c_min_rate, and each quiet second doubles "
                 "it, up to c_max_rate after c_plan_ahead (rounded up to whole "
                 "seconds)");
    }
  }
  uint64_t min_bytes = 0;
  Option* min = r.Take("c-min-rate");
  Option* max = r.Take("c-max-rate");
  if (min != nullptr) {
    auto bytes = r.Bytes(*min->st, kKiB);
    if (!bytes.ok()) return bytes.status();
    min_bytes = r.Clamp(*min->st, kResync, bytes.value(), 0, 100 * kGiB, " bytes/s");
  }
  uint64_t max_bytes = 0;
  if (max != nullptr) {
    auto bytes = r.Bytes(*max->st, kKiB);
    if (!bytes.ok()) return bytes.status();
    max_bytes = r.Clamp(*max->st, kResync, bytes.value(), 0, 100 * kGiB, " bytes/s");
  }
  if (min != nullptr) {
    if (max_bytes > 0 && min_bytes > max_bytes) {
      r.Warn(kResync, min->st->keyword.where,
             min->st->Shown() + ": above c-max-rate, which repld refuses; using c-max-rate");
      min_bytes = max_bytes;
    }
    r.Mapped(kResync, "c_min_rate", SizeValue(min_bytes), *min->st, "KiB/s unless a unit");
  }
  if (max != nullptr) {
    r.Mapped(kResync, "c_max_rate", SizeValue(max_bytes), *max->st, "KiB/s unless a unit");
  }
  if (Option* o = r.Take("c-fill-target")) {
    auto bytes = r.Bytes(*o->st, kSectorBytes);
    if (!bytes.ok()) return bytes.status();
    const uint64_t v = r.Clamp(*o->st, kResync, bytes.value(), 0, 256 * kMiB, " bytes");
    r.Mapped(kResync, "c_fill_target", SizeValue(v), *o->st, "sectors unless a unit");
  }
  if (Option* o = r.Take("csums-alg")) {
    r.Mapped(kResync, "checksums", "true", *o->st, "repld's digest is SHA-256");
  }
  if (Option* o = r.Take("verify-alg")) {
    r.Note(kResync, o->st->keyword.where,
           o->st->Shown() +
               ": dropped; `replctl verify` needs no setting (repld's digest is "
               "SHA-256)");
  }
  return Status::Ok();
}

Status MapStartupOptions(ResourceImport& r) {
  for (auto [drbd, key] : {std::pair{"wfc-timeout", "wfc_timeout"},
                           std::pair{"degr-wfc-timeout", "degr_wfc_timeout"}}) {
    Option* o = r.Take(drbd);
    if (o == nullptr) continue;
    auto n = r.Number(*o->st);
    if (!n.ok()) return n.status();
    const uint64_t seconds = r.Clamp(*o->st, kStartup, n.value(), 0, 366 * 24 * 3600, "s");
    r.Mapped(kStartup, key, DurationValue(seconds * 1000), *o->st,
             seconds == 0 ? "seconds; 0: wait for the peer forever" : "seconds");
  }
  return Status::Ok();
}

void ReportUnusedOptions(ResourceImport& r) {
  for (Option& o : r.options()) {
    if (o.used) continue;
    o.used = true;
    const Dropped* reason = nullptr;
    for (const Dropped& d : kDropped) {
      if (o.st->keyword.text == d.keyword) reason = &d;
    }
    const std::string table = TableOf(o.section);
    const std::string what = o.st->Shown() + (o.section.empty() ? "" : " (" + o.section + ")") +
                             ": dropped; " + (reason ? reason->why : "no repld equivalent");
    if (reason != nullptr && !reason->warning) {
      r.Note(table, o.st->keyword.where, what);
    } else {
      r.Warn(table, o.st->keyword.where, what);
    }
  }
}

}  // namespace repld::drbd
