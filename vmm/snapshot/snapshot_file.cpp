// The snapshot file's encoding, checks and atomic write (see snapshot_file.h).
#include "vmm/snapshot/snapshot_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>

#include <boost/crc.hpp>
#include <fmt/format.h>

#include "vmm/sys/error.h"
#include "vmm/sys/fd.h"
#include "vmm/sys/write_all.h"

namespace embervm::snapshot {

namespace {

constexpr std::array<uint8_t, 8> kMagic = {'E', 'M', 'B', 'E', 'R', 'S', 'N', 'P'};
constexpr size_t kChecksumSize = 4;

uint32_t le32(std::span<const uint8_t> b) {
    return uint32_t{b[0]} | uint32_t{b[1]} << 8 | uint32_t{b[2]} << 16 | uint32_t{b[3]} << 24;
}

}  // namespace

std::string_view to_string(SectionKind kind) {
    switch (kind) {
    case SectionKind::Config: return "config";
    case SectionKind::Vm: return "vm";
    case SectionKind::Vcpu: return "vcpu";
    case SectionKind::CpuIdentity: return "cpu identity";
    case SectionKind::LegacyDevice: return "legacy device";
    case SectionKind::VirtioDevice: return "virtio device";
    case SectionKind::PciRoot: return "PCI root";
    }
    return "unknown";
}

uint32_t crc32c(std::span<const uint8_t> bytes) {
    boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> crc;
    crc.process_bytes(bytes.data(), bytes.size());
    return crc.checksum();
}

const Section& SnapshotContents::section(SectionKind kind, std::string_view id) const {
    for (const Section& s : sections) {
        if (s.kind == kind && s.id == id) return s;
    }
    throw SnapshotError(fmt::format("snapshot: no {} section '{}'", to_string(kind), id));
}

std::vector<const Section*> SnapshotContents::sections_of(SectionKind kind) const {
    std::vector<const Section*> out;
    for (const Section& s : sections) {
        if (s.kind == kind) out.push_back(&s);
    }
    return out;
}

std::vector<uint8_t> encode_snapshot(const SnapshotContents& contents) {
    StateWriter w;
    w.put_bytes(kMagic);
    w.put<uint32_t>(kFormatVersion);
    w.put_string(contents.embervm_version);
    w.put(contents.header.type);
    w.put<uint64_t>(contents.header.mem_size);
    w.put<uint64_t>(contents.header.created_ns);
    w.put<uint32_t>(static_cast<uint32_t>(contents.sections.size()));
    for (const Section& s : contents.sections) {
        w.put(s.kind);
        w.put_string(s.id);
        w.put<uint64_t>(s.payload.size());
        w.put_bytes(s.payload);
    }
    const uint32_t crc = crc32c(w.bytes());
    w.put<uint32_t>(crc);
    return w.take();
}

SnapshotContents decode_snapshot(std::span<const uint8_t> bytes, std::string_view name, std::string_view this_version) {
    auto fail = [&](std::string_view why) -> SnapshotError {
        return SnapshotError(fmt::format("snapshot {}: {}", name, why));
    };
    if (bytes.size() < kMagic.size() || !std::equal(kMagic.begin(), kMagic.end(), bytes.begin())) {
        throw fail("not an embervm snapshot (bad magic)");
    }
    if (bytes.size() < kMagic.size() + 4 + kChecksumSize) throw fail("truncated (no format version)");
    const uint32_t format = le32(bytes.subspan(kMagic.size()));
    if (format != kFormatVersion) {
        throw fail(fmt::format("format version {} is not supported (this embervm reads version {})", format, kFormatVersion));
    }
    // The checksum before any field: a truncated file fails here too (its last 4 bytes are not
    // the CRC of the rest), so the lengths below are only trusted as far as the reader checks them.
    const auto body = bytes.first(bytes.size() - kChecksumSize);
    const uint32_t stored = le32(bytes.last(kChecksumSize));
    const uint32_t computed = crc32c(body);
    if (stored != computed) {
        throw fail(fmt::format("checksum mismatch (stored {:#010x}, computed {:#010x}): the file is corrupt or truncated",
                               stored, computed));
    }
    try {
        StateReader r(body.subspan(kMagic.size() + 4), fmt::format("snapshot {}", name));
        SnapshotContents c;
        c.embervm_version = r.get_string("embervm_version");
        if (c.embervm_version != this_version) {
            throw fail(fmt::format("written by embervm {}, this is embervm {}", c.embervm_version, this_version));
        }
        const auto type = r.get<uint32_t>("snapshot_type");
        if (type != static_cast<uint32_t>(SnapshotType::Full) && type != static_cast<uint32_t>(SnapshotType::Diff)) {
            r.fail("snapshot_type", fmt::format("{} is not Full (1) or Diff (2)", type));
        }
        c.header.type = static_cast<SnapshotType>(type);
        c.header.mem_size = r.get<uint64_t>("mem_size");
        c.header.created_ns = r.get<uint64_t>("created_ns");
        const auto count = r.get<uint32_t>("section_count");
        for (uint32_t i = 0; i < count; i++) {
            Section s;
            const auto kind = r.get<uint32_t>("section kind");
            if (kind < static_cast<uint32_t>(SectionKind::Config) || kind > static_cast<uint32_t>(SectionKind::PciRoot)) {
                r.fail("section kind", fmt::format("{} (section {}) is unknown", kind, i));
            }
            s.kind = static_cast<SectionKind>(kind);
            s.id = r.get_string("section id");
            const auto length = r.get<uint64_t>("section length");
            if (length > r.remaining()) {
                r.fail("section length", fmt::format("{} bytes for {} section '{}', {} left", length,
                                                     to_string(s.kind), s.id, r.remaining()));
            }
            const auto payload = r.get_bytes(length, "section payload");
            s.payload.assign(payload.begin(), payload.end());
            for (const Section& other : c.sections) {
                if (other.kind == s.kind && other.id == s.id) {
                    r.fail("section id", fmt::format("{} section '{}' appears twice", to_string(s.kind), s.id));
                }
            }
            c.sections.push_back(std::move(s));
        }
        r.expect_end();
        return c;
    } catch (const SnapshotError&) {
        throw;
    } catch (const StateError& e) {
        throw SnapshotError(e.what());
    }
}

void write_snapshot_file(const std::string& path, const SnapshotContents& contents) {
    const std::vector<uint8_t> bytes = encode_snapshot(contents);
    const std::string tmp = fmt::format("{}.tmp-{}", path, ::getpid());
    FileDescriptor fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd) throw sys_error(fmt::format("snapshot {}: cannot create {}", path, tmp));
    if (!write_all(fd.get(), bytes, WhenFull::Wait) || ::fsync(fd.get()) != 0) {
        const int err = errno;
        ::unlink(tmp.c_str());
        throw sys_error(fmt::format("snapshot {}: cannot write {}", path, tmp), err);
    }
    fd.reset();
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        const int err = errno;
        ::unlink(tmp.c_str());
        throw sys_error(fmt::format("snapshot {}: cannot rename {} to it", path, tmp), err);
    }
}

SnapshotContents read_snapshot_file(const std::string& path) {
    FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw sys_error(fmt::format("snapshot {}: cannot open", path));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw sys_error(fmt::format("snapshot {}: cannot stat", path));
    if (!S_ISREG(st.st_mode)) throw SnapshotError(fmt::format("snapshot {}: not a regular file", path));
    if (static_cast<uint64_t>(st.st_size) > kMaxFileSize) {
        throw SnapshotError(fmt::format("snapshot {}: {} bytes is larger than a snapshot can be ({} MiB)", path,
                                        st.st_size, kMaxFileSize >> 20));
    }
    std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
    size_t got = 0;
    while (got < bytes.size()) {
        const ssize_t n = ::pread(fd.get(), bytes.data() + got, bytes.size() - got, static_cast<off_t>(got));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw sys_error(fmt::format("snapshot {}: cannot read", path));
        if (n == 0) break;  // shrank while read: the checks below find it truncated
        got += static_cast<size_t>(n);
    }
    bytes.resize(got);
    return decode_snapshot(bytes, path);
}

}  // namespace embervm::snapshot
