// virtio-blk request parsing: a descriptor chain in, I/O for the backend or a status out.
#include "virtio/block/request.h"

#include <algorithm>
#include <cstring>
#include <initializer_list>

namespace embervm::virtio::block {

namespace {

struct RequestHeader {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};
static_assert(sizeof(RequestHeader) == 16);

struct DiscardSegment {
    uint64_t sector;
    uint32_t num_sectors;
    uint32_t flags;  // bit 0: unmap (write-zeroes only)
};
static_assert(sizeof(DiscardSegment) == 16);

constexpr uint32_t kSegmentFlagUnmap = 1;

// One named validation: if `failed`, the request completes with `status`.
struct Check {
    const char* what;  // for readers of the table below; not shown to the guest
    bool failed;
    uint8_t status;
};

// The status of the first failed check, in table order (the order is part of the behaviour:
// a read-only write with a bad length is IOERR for being read-only, not for the length).
std::optional<uint8_t> first_failure(std::initializer_list<Check> checks) {
    for (const Check& c : checks) {
        if (c.failed) return c.status;
    }
    return std::nullopt;
}

// The status byte: the last byte of the last non-empty writable buffer.
std::optional<memory::GuestAddress> find_status_byte(const DescriptorChain& chain) {
    for (auto it = chain.writable().rbegin(); it != chain.writable().rend(); ++it) {
        if (it->len > 0) return memory::GuestAddress(it->addr + it->len - 1);
    }
    return std::nullopt;
}

class Parser {
public:
    Parser(const DescriptorChain& chain, const memory::GuestMemory& mem, const RequestLimits& limits,
           memory::GuestAddress status)
        : limits_(limits), reader_(chain.reader(mem)), writer_(chain.writer(mem)), reply_{chain.head_index(), status, 1} {
        (void)writer_.split_tail(1);  // the status byte; writer_ keeps the data part
    }

    ParsedRequest parse() {
        const auto header = reader_.read_obj<RequestHeader>();
        if (!header) return CompleteNow{std::nullopt, reply_, blk_status::kIoErr};
        type_ = header->type;
        switch (header->type) {
            case req::kIn:
            case req::kOut: return read_write(header->type == req::kIn, header->sector);
            case req::kFlush: return flush();
            case req::kGetId: return get_id();
            case req::kDiscard:
            case req::kWriteZeroes: return discard_or_write_zeroes(header->type == req::kDiscard);
            default: return refuse(blk_status::kUnsupp);
        }
    }

private:
    bool acked(uint64_t feature) const { return (limits_.acked_features & feature) != 0; }
    bool in_range(uint64_t sector, uint64_t sectors) const {
        return sector <= limits_.capacity_sectors && sectors <= limits_.capacity_sectors - sector;
    }
    CompleteNow refuse(uint8_t status) const { return CompleteNow{type_, Reply{reply_.head, reply_.status, 1}, status}; }

    ParsedRequest read_write(bool is_read, uint64_t sector) {
        const uint64_t len = is_read ? writer_.available() : reader_.available();
        if (const auto bad = first_failure({
                {"write to a read-only disk", !is_read && limits_.read_only, blk_status::kIoErr},
                {"data length not a whole number of sectors", len % kSectorSize != 0, blk_status::kIoErr},
                {"sector range beyond the capacity", !in_range(sector, len / kSectorSize), blk_status::kIoErr},
            })) {
            return refuse(*bad);
        }
        SubmitIo s{*type_, reply_, {}};
        s.io.op = is_read ? IoRequest::Op::Read : IoRequest::Op::Write;
        s.io.offset = sector * kSectorSize;
        s.io.length = len;
        if (is_read) {
            for (const auto& b : writer_.take_slices(len)) s.io.iov.push_back({b.data(), b.size()});
            s.reply.used_len = static_cast<uint32_t>(len) + 1;  // the chain's lengths fit in 32 bits
        } else {
            for (const auto& b : reader_.take_slices(len)) s.io.iov.push_back({const_cast<uint8_t*>(b.data()), b.size()});
        }
        if (len == 0) return CompleteNow{type_, s.reply, blk_status::kOk};
        return s;
    }

    ParsedRequest flush() {
        if (!acked(blk_feature::kFlush)) return refuse(blk_status::kUnsupp);
        SubmitIo s{*type_, reply_, {}};
        s.io.op = IoRequest::Op::Flush;
        return s;
    }

    ParsedRequest get_id() {
        uint8_t id[kIdBytes] = {};
        std::memcpy(id, limits_.id.data(), std::min(limits_.id.size(), kIdBytes));
        const size_t n = writer_.write(std::span<const uint8_t>(id, std::min<uint64_t>(kIdBytes, writer_.available())));
        return CompleteNow{type_, Reply{reply_.head, reply_.status, static_cast<uint32_t>(n) + 1}, blk_status::kOk};
    }

    ParsedRequest discard_or_write_zeroes(bool discard) {
        if (const auto bad = first_failure({
                {"feature not negotiated", !acked(discard ? blk_feature::kDiscard : blk_feature::kWriteZeroes),
                 blk_status::kUnsupp},
                {"read-only disk", limits_.read_only, blk_status::kIoErr},
            })) {
            return refuse(*bad);
        }
        // One segment (max_discard_seg = max_write_zeroes_seg = 1). Read only once the checks
        // above passed: reading touches guest memory.
        const auto seg = reader_.read_obj<DiscardSegment>();
        const uint32_t allowed_flags = discard ? 0 : kSegmentFlagUnmap;
        if (const auto bad = first_failure({
                {"no whole segment", !seg, blk_status::kIoErr},
                {"more than one segment", seg && reader_.available() != 0, blk_status::kUnsupp},
                {"unknown segment flags", seg && (seg->flags & ~allowed_flags) != 0, blk_status::kUnsupp},
                {"segment larger than max_discard_sectors", seg && seg->num_sectors > kMaxDiscardSectors,
                 blk_status::kIoErr},
                {"sector range beyond the capacity", seg && !in_range(seg->sector, seg->num_sectors), blk_status::kIoErr},
            })) {
            return refuse(*bad);
        }
        SubmitIo s{*type_, reply_, {}};
        s.io.op = discard ? IoRequest::Op::Discard : IoRequest::Op::WriteZeroes;
        s.io.offset = seg->sector * kSectorSize;
        s.io.length = uint64_t{seg->num_sectors} * kSectorSize;
        s.io.unmap = (seg->flags & kSegmentFlagUnmap) != 0;
        if (s.io.length == 0) return CompleteNow{type_, s.reply, blk_status::kOk};
        return s;
    }

    const RequestLimits& limits_;
    Reader reader_;
    Writer writer_;
    Reply reply_;
    std::optional<uint32_t> type_;
};

}  // namespace

ParsedRequest parse_request(const DescriptorChain& chain, const memory::GuestMemory& mem, const RequestLimits& limits) {
    if (chain.has_write_before_read()) {
        return GuestError{"request with a device-writable descriptor before a device-readable one"};
    }
    const auto status = find_status_byte(chain);
    if (!status) return GuestError{"request without a status byte"};
    return Parser(chain, mem, limits, *status).parse();
}

}  // namespace embervm::virtio::block
