// import-drbd: a DRBD 8.x drbd.conf turned into repld resource files (cli/drbd_import.h).
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>

#include "cli/drbd_conf.h"
#include "cli/drbd_import.h"
#include "cli/verbs.h"

namespace repld::cli {
namespace {

struct ImportArgs {
  std::string file;
  std::string resource;
  std::string output_dir;
  bool force = false;
};

Result<std::string> ReadConf(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    return Status::Error(err, path + ": cannot read the drbd.conf: " + ErrnoText(err));
  }
  // One byte more than a drbd.conf may hold, so that ParseConf sees a larger file as too large.
  std::string text(drbd::kConfBytesMax + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad()) return Status::Invalid(path + ": cannot read the drbd.conf");
  text.resize(static_cast<size_t>(in.gcount()));
  return text;
}

// 32 random bytes as 64 hex digits.
Result<std::string> RandomSecret() {
  unsigned char bytes[32];
  if (getrandom(bytes, sizeof bytes, 0) != static_cast<ssize_t>(sizeof bytes)) {
    const int err = errno;
    return Status::Error(err, "cannot get random bytes for net.secret: " + ErrnoText(err));
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char b : bytes) {
    hex += kHex[b >> 4];
    hex += kHex[b & 0xf];
  }
  return hex;
}

// Mode 0600: the file holds the peers' shared secret.
Status WriteNew(const std::string& path, const std::string& text, bool force) {
  const int fd =
      open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | (force ? O_TRUNC : O_EXCL), 0600);
  if (fd < 0) {
    const int err = errno;
    if (err == EEXIST) return Status::Invalid(path + " exists; pass --force to overwrite it");
    return Status::Error(err, "cannot create " + path + ": " + ErrnoText(err));
  }
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      close(fd);
      return Status::Error(err, "cannot write " + path + ": " + ErrnoText(err));
    }
    done += static_cast<size_t>(n);
  }
  if (close(fd) != 0) {
    const int err = errno;
    return Status::Error(err, "cannot write " + path + ": " + ErrnoText(err));
  }
  return Status::Ok();
}

int WriteAll(const ImportArgs& args, const drbd::Imported& imported) {
  // All or nothing: no file is written if one of them is in the way.
  for (const drbd::ImportedResource& res : imported.resources) {
    const std::string path = args.output_dir + "/" + res.name + ".toml";
    if (!args.force && access(path.c_str(), F_OK) == 0) {
      return Fail(path + " exists; pass --force to overwrite it");
    }
  }
  for (const drbd::ImportedResource& res : imported.resources) {
    const std::string path = args.output_dir + "/" + res.name + ".toml";
    if (Status s = WriteNew(path, res.toml, args.force); !s.ok()) return Fail(s.message());
    std::printf("%s: resource %s; copy it to /etc/repld/%s.toml on its nodes\n", path.c_str(),
                res.name.c_str(), res.name.c_str());
  }
  return 0;
}

int ImportDrbd(const ImportArgs& args) {
  struct stat st {};
  if (!args.output_dir.empty() &&
      (stat(args.output_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))) {
    return Fail(args.output_dir + ": not a directory; create it first");
  }
  auto text = ReadConf(args.file);
  if (!text.ok()) return Fail(text.status().message());
  auto conf = drbd::ParseConf(text.value(), args.file);
  if (!conf.ok()) return Fail(conf.status().message());
  auto imported = drbd::ImportConf(conf.value(), {args.resource, RandomSecret});
  if (!imported.ok()) return Fail(imported.status().message());
  for (const drbd::Warning& w : imported->warnings) {
    std::fprintf(stderr, "replctl: warning: %s:%u: %s\n", args.file.c_str(), w.where.line,
                 w.text.c_str());
  }
  if (!args.output_dir.empty()) return WriteAll(args, imported.value());
  bool first = true;
  for (const drbd::ImportedResource& res : imported->resources) {
    if (!first) std::printf("\n#%s\n\n", std::string(99, '=').c_str());
    first = false;
    std::fputs(res.toml.c_str(), stdout);
  }
  return 0;
}

}  // namespace

std::vector<Verb> AddImportVerbs(CLI::App& app) {
  auto args = std::make_shared<ImportArgs>();
  CLI::App* import = app.add_subcommand(
      "import-drbd", "turn a DRBD 8.x drbd.conf into repld resource files (warnings on stderr)");
  import->add_option("file", args->file, "the drbd.conf")->required();
  import->add_option("-r,--resource", args->resource, "import only this resource");
  import->add_option("-o,--output-dir", args->output_dir,
                     "write DIR/RESOURCE.toml for each resource (default: print them)");
  import->add_flag("-f,--force", args->force, "overwrite files in --output-dir");
  return {{import, [args] { return ImportDrbd(*args); }}};
}

}  // namespace repld::cli
