// virtio-blk device: config space, dispatching parsed requests to the backend, completions.
#include "virtio/block/block_device.h"

#include <poll.h>
#include <sys/uio.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <variant>

#include <fmt/format.h>

#include "vmm/sys/error.h"
#include "virtio/saved_state.h"
#include "vmm/sys/log.h"

namespace embervm::virtio::block {

namespace log = embervm::log;

namespace {

// struct virtio_blk_config offsets.
constexpr size_t kCfgCapacity = 0;
constexpr size_t kCfgSegMax = 12;
constexpr size_t kCfgBlkSize = 20;
constexpr size_t kCfgNumQueues = 34;
constexpr size_t kCfgMaxDiscardSectors = 36;
constexpr size_t kCfgMaxDiscardSeg = 40;
constexpr size_t kCfgDiscardAlignment = 44;
constexpr size_t kCfgMaxWriteZeroesSectors = 48;
constexpr size_t kCfgMaxWriteZeroesSeg = 52;
constexpr size_t kCfgWriteZeroesMayUnmap = 56;
constexpr size_t kConfigSize = 60;

template <typename T>
void put(std::vector<uint8_t>& cfg, size_t offset, T value) {
    std::memcpy(cfg.data() + offset, &value, sizeof(T));
}

}  // namespace

BlockDevice::BlockDevice(std::unique_ptr<BlockBackend> backend, BlockDeviceOptions options)
    : backend_(std::move(backend)),
      options_(std::move(options)),
      capacity_(backend_->size_bytes() / kSectorSize),
      limiter_(options_.rate_limiter, options_.clock) {
    options_.read_only = options_.read_only || backend_->read_only();
    config_.assign(kConfigSize, 0);
    put<uint64_t>(config_, kCfgCapacity, capacity_);
    put<uint32_t>(config_, kCfgSegMax, kQueueSize - 2);  // header and status take two descriptors
    put<uint32_t>(config_, kCfgBlkSize, kSectorSize);
    put<uint16_t>(config_, kCfgNumQueues, 1);
    put<uint32_t>(config_, kCfgMaxDiscardSectors, kMaxDiscardSectors);
    put<uint32_t>(config_, kCfgMaxDiscardSeg, 1);
    put<uint32_t>(config_, kCfgDiscardAlignment, 1);
    put<uint32_t>(config_, kCfgMaxWriteZeroesSectors, kMaxDiscardSectors);
    put<uint32_t>(config_, kCfgMaxWriteZeroesSeg, 1);
    put<uint8_t>(config_, kCfgWriteZeroesMayUnmap, 1);
}

BlockDevice::~BlockDevice() {
    std::lock_guard lock(mutex());
    drain_backend_locked();
}

uint64_t BlockDevice::available_features() const {
    uint64_t f = feature::kRingEventIdx | feature::kRingIndirectDesc | blk_feature::kSegMax | blk_feature::kBlkSize;
    if (options_.read_only) {
        f |= blk_feature::kRo;
    } else {
        f |= blk_feature::kDiscard | blk_feature::kWriteZeroes;
    }
    if (options_.flush) {
        f |= blk_feature::kFlush;
    }
    return f;
}

void BlockDevice::read_config(uint64_t offset, std::span<uint8_t> data) const {
    std::lock_guard lock(config_mutex_);
    read_config_space(config_, offset, data);
}

void BlockDevice::write_config(uint64_t offset, std::span<const uint8_t> data) {
    // The writeback field is only writable with VIRTIO_BLK_F_CONFIG_WCE, which is not offered.
    log::debug("{}: ignored config write of {} bytes at offset {:#x}", name(), data.size(), offset);
}

void BlockDevice::on_activate_locked(const Activation& a) {
    if (a.queues.empty() || !a.queues[0].ready()) {
        throw QueueError("the request queue was not set up");
    }
    backend_full_ = false;
    log::info("{}: activated ({} sectors{}{})", name(), capacity_, options_.read_only ? ", read-only" : "",
              (a.acked_features & blk_feature::kFlush) != 0 ? ", flush" : "");
}

void BlockDevice::save_state_locked(StateWriter& w) const {
    w.put<uint32_t>(state_version::kBlock);
    w.put<uint64_t>(capacity_);
}

void BlockDevice::restore_state_locked(StateReader& r) {
    r.get_version(state_version::kBlock);
    const auto capacity = r.get<uint64_t>("capacity");
    if (capacity != capacity_) {
        r.fail("capacity", fmt::format("the drive had {} sectors, its image now has {}", capacity, capacity_));
    }
}

void BlockDevice::on_queue_locked(uint16_t queue_index) {
    if (queue_index == 0) process_queue_locked();
}

void BlockDevice::on_reset_locked() {
    // Requests in flight still write into guest memory: wait for them before forgetting the
    // queue, so none completes into a queue the driver is setting up anew.
    drain_backend_locked();
    pending_.clear();
    backend_full_ = false;
    used_added_ = false;  // else the first pass after re-activation raises a stale interrupt
    limiter_.reset_timer();  // the tokens stay: a reset buys no bandwidth
    note_limiter_locked();
}

std::vector<DeviceBase::EventSource> BlockDevice::event_sources_locked() {
    return {EventSource{backend_->completion_fd(),
                        [this] {
                            process_completions_locked();
                            return true;
                        }},
            EventSource{limiter_.timer_fd(), [this] {
                            on_limiter_timer_locked();
                            return true;
                        }}};
}

void BlockDevice::on_limiter_timer_locked() {
    if (limiter_.on_timer()) process_queue_locked();
}

void BlockDevice::note_limiter_locked() {
    counters_.rate_limiter_throttled_events.store(limiter_.throttled_events(), std::memory_order_relaxed);
    counters_.rate_limiter_throttled.store(limiter_.blocked(), std::memory_order_relaxed);
}

void BlockDevice::update_rate_limiter(const RateLimiterConfig& config) {
    std::lock_guard lock(mutex());
    limiter_.update(config);
    options_.rate_limiter = config;
    log::info("{}: rate limiter {}", name(), limiter_.limited() ? "updated" : "off");
    if (active() && !broken()) process_queue_locked();
    note_limiter_locked();  // also when not activated
}

RateLimiterConfig BlockDevice::rate_limiter() const {
    std::lock_guard lock(mutex());
    return limiter_.config();
}

void BlockDevice::drain_backend_locked() {
    while (backend_->in_flight() > 0) {
        pollfd pfd{backend_->completion_fd(), POLLIN, 0};
        if (::poll(&pfd, 1, 1000) == 0) {
            log::warn("{}: waiting for {} requests in flight", name(), backend_->in_flight());
        }
        for (const IoCompletion& c : backend_->reap_completions()) {
            pending_.erase(c.user_data);
        }
    }
    backend_->reap_completions();
}

void BlockDevice::finish_in_flight_locked() {
    while (backend_->in_flight() > 0) {
        pollfd pfd{backend_->completion_fd(), POLLIN, 0};
        if (::poll(&pfd, 1, 1000) == 0) {
            log::warn("{}: waiting for {} requests in flight", name(), backend_->in_flight());
        }
        reap_locked();
    }
}

bool BlockDevice::replace_backend(std::unique_ptr<BlockBackend> backend) {
    std::lock_guard lock(mutex());
    check_read_only(*backend);
    return swap_backend_locked(std::move(backend));
}

bool BlockDevice::reopen_backend(const std::function<std::unique_ptr<BlockBackend>()>& open) {
    std::lock_guard lock(mutex());
    backend_->unlock_image();
    std::unique_ptr<BlockBackend> next;
    try {
        next = open();
        check_read_only(*next);
    } catch (...) {
        next.reset();  // lets go of its lock first
        if (!backend_->lock_image()) {
            log::warn("{}: the image lock could not be taken back: another user locked the image", name());
        }
        throw;
    }
    return swap_backend_locked(std::move(next));
}

void BlockDevice::check_read_only(const BlockBackend& backend) const {
    if (backend.read_only() != options_.read_only) {
        throw Error(fmt::format("{}: the new image is {} but the drive is {} (VIRTIO_BLK_F_RO cannot change at run time)",
                                name(), backend.read_only() ? "read-only" : "writable",
                                options_.read_only ? "read-only" : "read-write"));
    }
}

bool BlockDevice::swap_backend_locked(std::unique_ptr<BlockBackend> backend) {
    // The old backend's requests write into guest memory and own used-ring slots: finish them
    // (their completions reach the guest) before the backend goes. Requests it refused (full)
    // are still in the available ring and go to the new one below.
    finish_in_flight_locked();
    std::unique_ptr<BlockBackend> old = std::exchange(backend_, std::move(backend));
    const uint64_t old_capacity = capacity_;
    {
        std::lock_guard config_lock(config_mutex_);
        capacity_ = backend_->size_bytes() / kSectorSize;
        put<uint64_t>(config_, kCfgCapacity, capacity_);
    }
    old.reset();  // closes the old image and releases its lock
    log::info("{}: backend replaced ({} -> {} sectors, io_engine {})", name(), old_capacity, capacity_,
              to_string(backend_->engine()));
    if (!active()) {
        return false;
    }
    resubscribe_locked();  // the completion fd is the new backend's
    interrupt().signal_config_change();
    backend_full_ = false;
    if (!broken()) {
        process_queue_locked();
    }
    return true;
}

DeviceProgress BlockDevice::progress() const {
    std::lock_guard lock(mutex());
    DeviceProgress p;
    if (!active()) return p;
    if (auto q = queue().progress(mem())) p.queues.push_back(*q);
    p.in_flight = pending_.size();
    for (const auto& [tag, pending] : pending_) {
        if (!p.oldest_submitted || pending.submitted < *p.oldest_submitted) p.oldest_submitted = pending.submitted;
    }
    return p;
}

BlockCounters BlockDevice::counters() const {
    const auto get = [](const std::atomic<uint64_t>& v) { return v.load(std::memory_order_relaxed); };
    BlockCounters c;
    c.read_requests = get(counters_.read_requests);
    c.write_requests = get(counters_.write_requests);
    c.flush_requests = get(counters_.flush_requests);
    c.discard_requests = get(counters_.discard_requests);
    c.write_zeroes_requests = get(counters_.write_zeroes_requests);
    c.get_id_requests = get(counters_.get_id_requests);
    c.read_bytes = get(counters_.read_bytes);
    c.write_bytes = get(counters_.write_bytes);
    c.io_errors = get(counters_.io_errors);
    c.unsupported_requests = get(counters_.unsupported_requests);
    c.device_errors = device_errors();
    c.rate_limiter_throttled_events = get(counters_.rate_limiter_throttled_events);
    c.rate_limiter_throttled = counters_.rate_limiter_throttled.load(std::memory_order_relaxed);
    return c;
}

nlohmann::json BlockDevice::metrics_json() const { return counters_json(counters()); }

nlohmann::json counters_json(const BlockCounters& c) {
    return {{"read_requests", c.read_requests},
            {"write_requests", c.write_requests},
            {"flush_requests", c.flush_requests},
            {"discard_requests", c.discard_requests},
            {"write_zeroes_requests", c.write_zeroes_requests},
            {"get_id_requests", c.get_id_requests},
            {"read_bytes", c.read_bytes},
            {"write_bytes", c.write_bytes},
            {"io_errors", c.io_errors},
            {"unsupported_requests", c.unsupported_requests},
            {"rate_limiter_throttled_events", c.rate_limiter_throttled_events},
            {"rate_limiter_throttled", c.rate_limiter_throttled ? 1 : 0}};
}

void BlockDevice::log_counters() const {
    const BlockCounters c = counters();
    log::info("{}: {} reads ({} bytes), {} writes ({} bytes), {} flushes, {} discards, {} write-zeroes, {} "
              "GET_IDs, {} I/O errors, {} unsupported requests, {} device errors",
              name(), c.read_requests, c.read_bytes, c.write_requests, c.write_bytes, c.flush_requests,
              c.discard_requests, c.write_zeroes_requests, c.get_id_requests, c.io_errors, c.unsupported_requests,
              c.device_errors);
}

void BlockDevice::process_completions_locked() {
    reap_locked();
    if (backend_full_ && active() && !broken()) {
        backend_full_ = false;
        process_queue_locked();
    }
}

size_t BlockDevice::reap_locked() {
    const auto completions = backend_->reap_completions();
    if (!active()) {
        return completions.size();  // reset: nothing to complete into
    }
    for (const IoCompletion& c : completions) {
        const auto it = pending_.find(c.user_data);
        if (it == pending_.end()) {
            continue;
        }
        const Pending p = it->second;
        pending_.erase(it);
        if (c.result < 0) {
            log_backend_failure(p, c.result);
        } else if (p.op == IoRequest::Op::Read) {
            counters_.read_bytes.fetch_add(p.length, std::memory_order_relaxed);
        } else if (p.op == IoRequest::Op::Write) {
            counters_.write_bytes.fetch_add(p.length, std::memory_order_relaxed);
        }
        if (!broken()) {
            complete(p.head, p.used_len, p.status, c.result < 0 ? blk_status::kIoErr : blk_status::kOk);
        }
    }
    if (used_added_ && !broken()) {
        used_added_ = false;
        try {
            if (queue().needs_notification(mem())) {
                interrupt().signal_used_queue(0);
            }
        } catch (const std::exception& e) {
            fail_locked(e.what());
        }
    }
    return completions.size();
}

void BlockDevice::log_backend_failure(const Pending& p, int64_t result) {
    uint64_t not_logged = 0;
    if (!failure_log_.admit(&not_logged)) return;
    const char* op = "read";
    switch (p.op) {
        case IoRequest::Op::Read: op = "read"; break;
        case IoRequest::Op::Write: op = "write"; break;
        case IoRequest::Op::Flush: op = "flush"; break;
        case IoRequest::Op::Discard: op = "discard"; break;
        case IoRequest::Op::WriteZeroes: op = "write-zeroes"; break;
    }
    const std::string earlier =
        not_logged ? fmt::format(" ({} more failed requests since the last report)", not_logged) : "";
    log::warn("{}: {} of {} bytes failed on the image: {}; the guest gets IOERR{}", name(), op, p.length,
              std::strerror(static_cast<int>(-result)), earlier);
}

void BlockDevice::complete(uint16_t head, uint32_t used_len, memory::GuestAddress status, uint8_t value) {
    if (value == blk_status::kIoErr) counters_.io_errors.fetch_add(1, std::memory_order_relaxed);
    if (value == blk_status::kUnsupp) counters_.unsupported_requests.fetch_add(1, std::memory_order_relaxed);
    try {
        mem().write_obj(status, value);
        queue().add_used(mem(), head, used_len);
        used_added_ = true;
    } catch (const std::exception& e) {
        fail_locked(e.what());
    }
}

namespace {

// The bytes a request costs the rate limiter: its data buffers (without the header and the
// status byte; 0 for a chain too short to be a request, which parsing refuses).
uint64_t request_cost_bytes(const DescriptorChain& chain) {
    const uint64_t total = uint64_t{chain.readable_len()} + chain.writable_len();
    return total > 17 ? total - 17 : 0;
}

}  // namespace

void BlockDevice::process_queue_locked() {
    pump_queue_locked();
    note_limiter_locked();
}

void BlockDevice::pump_queue_locked() {
    for (;;) {
        backend_full_ = false;  // about this pass only
        bool throttled = false;
        try {
            for (;;) {
                queue().disable_notification(mem());
                while (auto chain = queue().pop_available(mem())) {
                    // Held back by the rate limiter: the request stays in the ring and the
                    // limiter's timer brings the device back (kicks stay off meanwhile).
                    const uint64_t cost = request_cost_bytes(*chain);
                    if (!limiter_.consume(cost)) {
                        queue().undo_pop();
                        throttled = true;
                        break;
                    }
                    if (!handle_chain(*chain)) {
                        limiter_.give_back(cost);
                        queue().undo_pop();
                        backend_full_ = true;
                        break;
                    }
                    if (broken()) {
                        backend_->flush_submissions();
                        return;
                    }
                }
                backend_->flush_submissions();
                if (backend_full_ || throttled || !queue().enable_notification(mem())) {
                    break;
                }
            }
        } catch (const std::exception& e) {
            backend_->flush_submissions();
            fail_locked(e.what());
            return;
        }
        // Requests the sync backend finished inside submit() (and io_uring requests that
        // completed inline in io_uring_submit) are reaped here at once. That consumes the
        // completion eventfd, so its handler will not run for them: if the backend
        // was full and this freed room, go round again.
        const size_t reaped = reap_locked();
        if (!backend_full_ || reaped == 0 || broken() || !active()) {
            return;
        }
    }
}

std::atomic<uint64_t>* BlockDevice::type_counter(uint32_t type) {
    switch (type) {
        case req::kIn: return &counters_.read_requests;
        case req::kOut: return &counters_.write_requests;
        case req::kFlush: return &counters_.flush_requests;
        case req::kGetId: return &counters_.get_id_requests;
        case req::kDiscard: return &counters_.discard_requests;
        case req::kWriteZeroes: return &counters_.write_zeroes_requests;
        default: return nullptr;  // counted as unsupported when completed
    }
}

bool BlockDevice::handle_chain(const DescriptorChain& chain) {
    const RequestLimits limits{capacity_, acked_features(), options_.read_only, options_.id};
    ParsedRequest parsed = parse_request(chain, mem(), limits);
    if (const auto* error = std::get_if<GuestError>(&parsed)) {
        fail_locked(error->what);
        return true;
    }
    if (const auto* now = std::get_if<CompleteNow>(&parsed)) {
        if (now->type) {
            if (auto* counter = type_counter(*now->type)) counter->fetch_add(1, std::memory_order_relaxed);
        }
        complete(now->reply.head, now->reply.used_len, now->reply.status, now->status);
        return true;
    }
    SubmitIo& submit = std::get<SubmitIo>(parsed);
    const IoRequest::Op op = submit.io.op;
    const uint64_t length = submit.io.length;
    submit.io.user_data = next_tag_;
    if (!backend_->submit(std::move(submit.io))) {
        return false;  // the chain comes again: not counted yet
    }
    if (auto* counter = type_counter(submit.type)) counter->fetch_add(1, std::memory_order_relaxed);
    pending_.emplace(next_tag_++, Pending{submit.reply.head, submit.reply.used_len, submit.reply.status, op, length,
                                          std::chrono::steady_clock::now()});
    return true;
}

}  // namespace embervm::virtio::block
