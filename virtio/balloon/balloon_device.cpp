// virtio-balloon: inflate, deflate, statistics and free page reporting queues.
#include "virtio/balloon/balloon_device.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "virtio/saved_state.h"
#include "vmm/sys/log.h"

namespace embervm::virtio::balloon {

namespace log = embervm::log;

namespace {

// struct virtio_balloon_config (5.5.4).
constexpr size_t kCfgNumPages = 0;
constexpr size_t kCfgActual = 4;
constexpr size_t kConfigSize = 16;  // + free_page_hint_cmd_id, poison_val (unused: zeros)

constexpr uint64_t kPagesPerMib = (1024 * 1024) / kBalloonPageSize;
// One PFN array per chain is at most this long (Linux sends 256 PFNs = 1 KiB per chain).
constexpr uint32_t kMaxPfnBytes = 64 * 1024;

constexpr size_t kStatEntrySize = 10;  // struct virtio_balloon_stat: le16 tag, le64 val (packed)

uint32_t pages_for(uint64_t mib) { return static_cast<uint32_t>(std::min<uint64_t>(mib * kPagesPerMib, UINT32_MAX)); }

}  // namespace

BalloonDevice::BalloonDevice(BalloonOptions options)
    : options_(options), num_pages_(pages_for(options.amount_mib)), stats_interval_s_(options.stats_polling_interval_s) {}

uint64_t BalloonDevice::available_features() const {
    uint64_t f = feature::kRingEventIdx | feature::kRingIndirectDesc;
    if (options_.stats_polling_interval_s > 0) f |= balloon_feature::kStatsVq;
    if (options_.deflate_on_oom) f |= balloon_feature::kDeflateOnOom;
    if (options_.free_page_reporting) f |= balloon_feature::kPageReporting;
    return f;
}

std::vector<uint16_t> BalloonDevice::queue_max_sizes() const {
    size_t n = 2;
    if (options_.stats_polling_interval_s > 0) n++;
    if (options_.free_page_reporting) n++;
    return std::vector<uint16_t>(n, kBalloonQueueSize);
}

void BalloonDevice::read_config(uint64_t offset, std::span<uint8_t> data) const {
    std::lock_guard lock(mutex());
    uint8_t cfg[kConfigSize] = {};
    std::memcpy(cfg + kCfgNumPages, &num_pages_, 4);
    std::memcpy(cfg + kCfgActual, &actual_, 4);
    read_config_space(cfg, offset, data);
}

void BalloonDevice::write_config(uint64_t offset, std::span<const uint8_t> data) {
    std::lock_guard lock(mutex());
    // Only `actual` (bytes 4..7) is driver-writable.
    if (offset < kCfgActual || offset + data.size() > kCfgActual + 4) {
        log::debug("{}: ignored config write of {} bytes at offset {:#x}", name(), data.size(), offset);
        return;
    }
    uint8_t bytes[4];
    std::memcpy(bytes, &actual_, 4);
    std::memcpy(bytes + (offset - kCfgActual), data.data(), data.size());
    uint32_t actual = 0;
    std::memcpy(&actual, bytes, 4);
    if (actual == actual_) return;
    actual_ = actual;
    if (actual_ == num_pages_) {
        log::info("{}: the guest's balloon holds {} pages ({} MiB), the target", name(), actual_,
                  actual_ / kPagesPerMib);
    } else {
        log::debug("{}: the guest's balloon holds {} pages (target {})", name(), actual_, num_pages_);
    }
}

void BalloonDevice::on_activate_locked(const Activation& a) {
    std::vector<Role> roles{Role::Inflate, Role::Deflate};
    if (a.acked_features & balloon_feature::kStatsVq) roles.push_back(Role::Stats);
    if (a.acked_features & balloon_feature::kPageReporting) roles.push_back(Role::Reporting);
    if (a.queues.size() < roles.size()) {
        throw QueueError(fmt::format("{} queues for the accepted features, {} offered", roles.size(), a.queues.size()));
    }
    for (size_t i = 0; i < roles.size(); i++) {
        if (!a.queues[i].ready()) throw QueueError(fmt::format("queue {} was not set up", i));
        if (roles[i] == Role::Stats) stats_queue_ = static_cast<uint16_t>(i);
    }
    roles_ = std::move(roles);
    stats_chain_.reset();
    log::info("{}: activated (target {} MiB{}{}{})", name(), num_pages_ / kPagesPerMib,
              (a.acked_features & balloon_feature::kStatsVq) ? ", statistics" : "",
              (a.acked_features & balloon_feature::kDeflateOnOom) ? ", deflate on OOM" : "",
              (a.acked_features & balloon_feature::kPageReporting) ? ", free page reporting" : "");
    // Linux queues its first statistics buffer and kicks before DRIVER_OK, when the transport
    // does not pass notifications on: look at every queue now.
    for (size_t i = 0; i < roles_.size() && !broken(); i++) {
        process_locked(static_cast<uint16_t>(i), roles_[i]);
    }
}

void BalloonDevice::on_reset_locked() {
    roles_.clear();
    stats_chain_.reset();
    actual_ = 0;  // a fresh driver starts with an empty balloon
}

void BalloonDevice::on_queue_locked(uint16_t index) {
    if (index < roles_.size()) process_locked(index, roles_[index]);
}

std::optional<std::chrono::nanoseconds> BalloonDevice::timer_interval_locked() const {
    const bool stats = std::find(roles_.begin(), roles_.end(), Role::Stats) != roles_.end();
    if (!stats || stats_interval_s_ == 0) return std::nullopt;
    return std::chrono::seconds(stats_interval_s_);
}

// Every statistics interval: hands the statistics buffer back to the driver, which refills it
// with fresh numbers.
void BalloonDevice::on_timer_locked() {
    if (stats_ && !stats_logged_) {
        stats_logged_ = true;
        log::info("{}: statistics from the guest: free {} MiB, available {} MiB, total {} MiB", name(),
                  stats_->free_memory.value_or(0) >> 20, stats_->available_memory.value_or(0) >> 20,
                  stats_->total_memory.value_or(0) >> 20);
    }
    request_stats_locked();
}

void BalloonDevice::save_state_locked(StateWriter& w) const {
    w.put<uint32_t>(state_version::kBalloon);
    w.put<uint32_t>(num_pages_);
    w.put<uint32_t>(actual_);
    w.put<uint32_t>(stats_interval_s_);
}

void BalloonDevice::restore_state_locked(StateReader& r) {
    r.get_version(state_version::kBalloon);
    const auto target = r.get<uint32_t>("target pages");
    const auto actual = r.get<uint32_t>("actual pages");
    const auto interval = r.get<uint32_t>("statistics interval");
    num_pages_ = target;
    actual_ = actual;
    stats_interval_s_ = interval;
}

void BalloonDevice::set_stats_interval(uint32_t seconds) {
    std::lock_guard lock(mutex());
    stats_interval_s_ = seconds;
    resubscribe_locked();
}

void BalloonDevice::process_locked(uint16_t index, Role role) {
    Queue& q = queues()[index];
    bool used = false;
    do {
        q.disable_notification(mem());
        while (auto chain = q.pop_available(mem())) {
            switch (role) {
                case Role::Inflate:
                case Role::Deflate:
                    handle_pfns_locked(*chain, role == Role::Inflate);
                    break;
                case Role::Stats:
                    handle_stats_locked(*chain);
                    if (!broken()) {
                        // Held until request_stats(); a second buffer replaces the first.
                        if (stats_chain_) {
                            q.add_used(mem(), stats_chain_->head_index(), 0);
                            used = true;
                        }
                        stats_chain_ = std::move(chain);
                        continue;
                    }
                    break;
                case Role::Reporting:
                    handle_report_locked(*chain);
                    break;
            }
            if (broken()) return;
            q.add_used(mem(), chain->head_index(), 0);
            used = true;
        }
    } while (q.enable_notification(mem()));
    if (used && q.needs_notification(mem())) interrupt().signal_used_queue(index);
}

void BalloonDevice::handle_pfns_locked(const DescriptorChain& chain, bool inflate) {
    if (!chain.writable().empty()) {
        fail_locked(fmt::format("{} buffer with a device-writable descriptor", inflate ? "inflate" : "deflate"));
        return;
    }
    const uint32_t len = chain.readable_len();
    if (len % 4 != 0 || len > kMaxPfnBytes) {
        fail_locked(fmt::format("{} buffer of {} bytes is not an array of 32-bit PFNs (at most {} bytes)",
                                inflate ? "inflate" : "deflate", len, kMaxPfnBytes));
        return;
    }
    std::vector<uint32_t> pfns(len / 4);
    Reader r = chain.reader(mem());
    r.read(std::span<uint8_t>(reinterpret_cast<uint8_t*>(pfns.data()), len));
    if (!inflate) {
        counters_.deflated_pages += pfns.size();
        return;
    }
    counters_.inflated_pages += pfns.size();
    // Discard runs of contiguous valid pages with one madvise each.
    std::sort(pfns.begin(), pfns.end());
    pfns.erase(std::unique(pfns.begin(), pfns.end()), pfns.end());
    size_t i = 0;
    while (i < pfns.size()) {
        size_t j = i + 1;
        while (j < pfns.size() && pfns[j] == pfns[j - 1] + 1) j++;
        const memory::GuestAddress start(uint64_t{pfns[i]} * kBalloonPageSize);
        const uint64_t bytes = (j - i) * kBalloonPageSize;
        if (mem().discard(start, bytes)) {
            counters_.discarded_bytes += bytes;
        } else {
            // Partly outside guest memory: page by page, skipping the invalid ones.
            for (size_t k = i; k < j; k++) {
                if (mem().discard(memory::GuestAddress(uint64_t{pfns[k]} * kBalloonPageSize), kBalloonPageSize)) {
                    counters_.discarded_bytes += kBalloonPageSize;
                } else if (counters_.invalid_pfns++ < 10) {
                    log::warn("{}: inflate: PFN {:#x} is not guest memory; skipped", name(), pfns[k]);
                }
            }
        }
        i = j;
    }
}

void BalloonDevice::handle_stats_locked(const DescriptorChain& chain) {
    if (!chain.writable().empty()) {
        fail_locked("statistics buffer with a device-writable descriptor");
        return;
    }
    const uint32_t len = chain.readable_len();
    if (len > 64 * kStatEntrySize) {
        fail_locked(fmt::format("statistics buffer of {} bytes is too long", len));
        return;
    }
    std::vector<uint8_t> buf(len);
    chain.reader(mem()).read(buf);
    BalloonStats s;
    for (size_t off = 0; off + kStatEntrySize <= len; off += kStatEntrySize) {
        uint16_t tag = 0;
        uint64_t val = 0;
        std::memcpy(&tag, buf.data() + off, 2);
        std::memcpy(&val, buf.data() + off + 2, 8);
        switch (tag) {
            case 0: s.swap_in = val; break;
            case 1: s.swap_out = val; break;
            case 2: s.major_faults = val; break;
            case 3: s.minor_faults = val; break;
            case 4: s.free_memory = val; break;
            case 5: s.total_memory = val; break;
            case 6: s.available_memory = val; break;
            case 7: s.disk_caches = val; break;
            case 8: s.hugetlb_allocations = val; break;
            case 9: s.hugetlb_failures = val; break;
            default: break;  // newer tags: ignored
        }
    }
    if (len == 0) return;  // the priming buffer of some drivers is empty
    s.updated = std::chrono::steady_clock::now();
    stats_ = s;
    counters_.stats_updates++;
    log::debug("{}: statistics: free {} / total {} bytes", name(), s.free_memory.value_or(0),
               s.total_memory.value_or(0));
}

void BalloonDevice::handle_report_locked(const DescriptorChain& chain) {
    if (!chain.readable().empty()) {
        fail_locked("free page report with a device-readable descriptor");
        return;
    }
    for (const Descriptor& d : chain.writable()) {
        counters_.reported_ranges++;
        if (mem().discard(memory::GuestAddress(d.addr), d.len)) {
            counters_.discarded_bytes += d.len;
        } else if (counters_.invalid_pfns++ < 10) {
            log::warn("{}: reported range {:#x}+{:#x} is not page-aligned guest memory; skipped", name(), d.addr,
                      d.len);
        }
    }
}

void BalloonDevice::set_target_mib(uint64_t mib) {
    std::lock_guard lock(mutex());
    num_pages_ = pages_for(mib);
    log::info("{}: target {} MiB ({} pages)", name(), mib, num_pages_);
    if (active()) interrupt().signal_config_change();
}

uint64_t BalloonDevice::target_mib() const {
    std::lock_guard lock(mutex());
    return num_pages_ / kPagesPerMib;
}

uint32_t BalloonDevice::actual_pages() const {
    std::lock_guard lock(mutex());
    return actual_;
}

std::optional<BalloonStats> BalloonDevice::stats() const {
    std::lock_guard lock(mutex());
    return stats_;
}

bool BalloonDevice::request_stats() {
    std::lock_guard lock(mutex());
    return request_stats_locked();
}

bool BalloonDevice::request_stats_locked() {
    if (!stats_chain_ || !active() || paused() || broken()) return false;
    try {
        Queue& q = queues()[stats_queue_];
        q.add_used(mem(), stats_chain_->head_index(), 0);
        stats_chain_.reset();
        if (q.needs_notification(mem())) interrupt().signal_used_queue(stats_queue_);
    } catch (const std::exception& e) {
        fail_locked(e.what());
        return false;
    }
    return true;
}

DeviceProgress BalloonDevice::progress() const {
    std::lock_guard lock(mutex());
    return queues_progress_locked();  // the balloon completes every buffer in the call that takes it
}

BalloonCounters BalloonDevice::counters() const {
    std::lock_guard lock(mutex());
    BalloonCounters c = counters_;
    c.device_errors = device_errors();
    return c;
}

nlohmann::json BalloonDevice::metrics_json() const { return counters_json(counters()); }

nlohmann::json counters_json(const BalloonCounters& c) {
    return {{"inflated_pages", c.inflated_pages},   {"deflated_pages", c.deflated_pages},
            {"discarded_bytes", c.discarded_bytes}, {"invalid_pfns", c.invalid_pfns},
            {"reported_ranges", c.reported_ranges}, {"stats_updates", c.stats_updates}};
}

void BalloonDevice::log_counters() const {
    const BalloonCounters c = counters();
    log::info("{}: inflated {} pages, deflated {}, {} MiB given back to the host, {} invalid PFNs, {} reports, "
              "{} statistics updates",
              name(), c.inflated_pages, c.deflated_pages, c.discarded_bytes >> 20, c.invalid_pfns, c.reported_ranges,
              c.stats_updates);
}

}  // namespace embervm::virtio::balloon
