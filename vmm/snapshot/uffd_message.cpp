// Encoding and checking the regions message of the Uffd memory backend (see uffd_message.h).
#include "vmm/snapshot/uffd_message.h"

#include <algorithm>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "vmm/sys/error.h"

namespace embervm::snapshot {

namespace {

constexpr const char* kFields[] = {"base_host_virt_addr", "size", "offset", "page_size"};

uint64_t unsigned_field(const nlohmann::json& region, size_t index, const char* name) {
    const auto it = region.find(name);
    if (it == region.end()) throw Error(fmt::format("uffd regions[{}].{}: missing", index, name));
    if (!it->is_number_unsigned()) {
        throw Error(fmt::format("uffd regions[{}].{}: not an unsigned integer", index, name));
    }
    return it->get<uint64_t>();
}

}  // namespace

std::string encode_uffd_regions(const std::vector<UffdRegion>& regions) {
    nlohmann::json array = nlohmann::json::array();
    for (const UffdRegion& r : regions) {
        array.push_back({{"base_host_virt_addr", r.base_host_virt_addr},
                         {"size", r.size},
                         {"offset", r.offset},
                         {"page_size", r.page_size}});
    }
    return array.dump();
}

std::vector<UffdRegion> parse_uffd_regions(std::string_view text, uint64_t file_size) {
    const nlohmann::json doc = nlohmann::json::parse(text, nullptr, false);
    if (doc.is_discarded()) throw Error("uffd regions: not JSON");
    if (!doc.is_array() || doc.empty()) throw Error("uffd regions: not a non-empty JSON array");
    std::vector<UffdRegion> regions;
    for (size_t i = 0; i < doc.size(); i++) {
        const nlohmann::json& o = doc[i];
        if (!o.is_object()) throw Error(fmt::format("uffd regions[{}]: not an object", i));
        for (const auto& [key, value] : o.items()) {
            if (std::find(std::begin(kFields), std::end(kFields), key) == std::end(kFields)) {
                throw Error(fmt::format("uffd regions[{}].{}: unknown field", i, key));
            }
        }
        UffdRegion r{unsigned_field(o, i, "base_host_virt_addr"), unsigned_field(o, i, "size"),
                     unsigned_field(o, i, "offset"), unsigned_field(o, i, "page_size")};
        if (r.page_size < 4096 || (r.page_size & (r.page_size - 1)) != 0) {
            throw Error(fmt::format("uffd regions[{}].page_size: {} is not a power of two of at least 4096", i,
                                    r.page_size));
        }
        for (const auto& [name, value] : {std::pair{"base_host_virt_addr", r.base_host_virt_addr},
                                          std::pair{"size", r.size}, std::pair{"offset", r.offset}}) {
            if (value % r.page_size != 0) {
                throw Error(fmt::format("uffd regions[{}].{}: {:#x} is not a multiple of the page size", i, name, value));
            }
        }
        if (r.size == 0) throw Error(fmt::format("uffd regions[{}].size: 0", i));
        if (r.base_host_virt_addr + r.size < r.base_host_virt_addr) {
            throw Error(fmt::format("uffd regions[{}]: wraps around the address space", i));
        }
        if (r.offset > file_size || r.size > file_size - r.offset) {
            throw Error(fmt::format("uffd regions[{}]: bytes [{:#x}, +{:#x}) of a memory file of {:#x} bytes", i,
                                    r.offset, r.size, file_size));
        }
        for (size_t j = 0; j < regions.size(); j++) {
            const UffdRegion& p = regions[j];
            const bool host_apart = r.base_host_virt_addr >= p.base_host_virt_addr + p.size ||
                                    p.base_host_virt_addr >= r.base_host_virt_addr + r.size;
            const bool file_apart = r.offset >= p.offset + p.size || p.offset >= r.offset + r.size;
            if (!host_apart || !file_apart) {
                throw Error(fmt::format("uffd regions[{}]: overlaps regions[{}] ({})", i, j,
                                        host_apart ? "in the memory file" : "in host addresses"));
            }
        }
        regions.push_back(r);
    }
    uint64_t total = 0;
    for (const UffdRegion& r : regions) total += r.size;
    if (total != file_size) {
        throw Error(fmt::format("uffd regions: {:#x} bytes in all, the memory file has {:#x}", total, file_size));
    }
    return regions;
}

}  // namespace embervm::snapshot
