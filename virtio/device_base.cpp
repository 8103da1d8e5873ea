// The activation life cycle, the "needs reset" state and the event-loop subscriptions that
// every virtio device shares (virtio/device_base.h).
#include "virtio/device_base.h"

#include <fcntl.h>
#include <unistd.h>

#include <exception>

#include <fmt/format.h>

#include "vmm/sys/error.h"
#include "vmm/sys/event_loop.h"
#include "vmm/sys/fd.h"
#include "vmm/sys/fd_watch.h"
#include "vmm/sys/periodic_timer.h"

namespace embervm::virtio {

// Shared with the handlers on the loop: they take the lock and find the device (nullptr once
// it is destroyed).
struct DeviceBase::Link {
    std::mutex mutex;
    DeviceBase* device = nullptr;
};

// What is watched for one activation (generation). Made and dropped on the loop thread.
struct DeviceBase::Subscriptions {
    uint64_t generation = 0;
    std::vector<FileDescriptor> queue_fds;  // duplicates of the queue eventfds
    std::vector<std::unique_ptr<vmm::FdWatch>> queue_watches;
    std::vector<std::function<bool()>> source_handlers;
    std::vector<std::unique_ptr<vmm::FdWatch>> source_watches;
    std::unique_ptr<vmm::PeriodicTimer> timer;
};

DeviceBase::DeviceBase() : link_(std::make_shared<Link>()) { link_->device = this; }

DeviceBase::~DeviceBase() {
    std::lock_guard lock(link_->mutex);
    link_->device = nullptr;
    subscriptions_.reset();
}

std::mutex& DeviceBase::mutex() const { return link_->mutex; }

void DeviceBase::activate(const Activation& a) {
    std::lock_guard lock(mutex());
    mem_ = &a.mem;
    queues_ = a.queues;
    acked_features_ = a.acked_features;
    interrupt_ = &a.interrupt;
    queue_events_.assign(a.queue_events.begin(), a.queue_events.end());
    queue_irqfds_.assign(a.queues.size(), -1);
    loop_ = a.loop != nullptr ? std::make_unique<vmm::EventLoop>(*a.loop) : nullptr;
    active_ = true;
    ++generation_;
    try {
        on_activate_locked(a);
    } catch (...) {
        on_reset_locked();
        active_ = false;
        mem_ = nullptr;
        queues_ = {};
        interrupt_ = nullptr;
        loop_.reset();
        throw;
    }
    post_sync_locked();
}

void DeviceBase::reset() {
    std::lock_guard lock(mutex());
    on_reset_locked();
    const bool was_subscribed = active_ && loop_ != nullptr;
    active_ = false;
    ++generation_;
    if (was_subscribed) post_sync_locked();
    mem_ = nullptr;
    queues_ = {};
    acked_features_ = 0;
    interrupt_ = nullptr;
    queue_events_.clear();
    queue_irqfds_.clear();
    loop_.reset();
}

void DeviceBase::set_queue_irqfd(uint16_t queue_index, int irqfd) {
    std::lock_guard lock(mutex());
    if (!active_ || queue_index >= queue_irqfds_.size() || queue_irqfds_[queue_index] == irqfd) return;
    queue_irqfds_[queue_index] = irqfd;
    on_queue_irqfd_locked(queue_index);
}

void DeviceBase::pause() {
    std::lock_guard lock(mutex());
    if (paused_) return;
    if (active_ && !broken()) {
        try {
            on_pause_locked();
        } catch (const std::exception& e) {
            fail_locked(fmt::format("pause: {}", e.what()));
        }
    }
    paused_ = true;
    if (active_ && loop_ != nullptr) {
        ++generation_;
        post_sync_locked();  // drops the subscriptions
    }
}

void DeviceBase::resume() {
    std::lock_guard lock(mutex());
    if (!paused_) return;
    paused_ = false;
    if (!active_) return;
    if (!broken()) {
        try {
            on_resume_locked();
        } catch (const std::exception& e) {
            fail_locked(fmt::format("resume: {}", e.what()));
        }
    }
    if (loop_ != nullptr) {
        ++generation_;
        post_sync_locked();
    }
    // A kick taken from a queue's eventfd while paused was dropped: look at every queue.
    for (size_t q = 0; q < queues_.size(); q++) on_queue_event_locked(static_cast<uint16_t>(q));
}

std::vector<uint8_t> DeviceBase::save_state() const {
    std::lock_guard lock(mutex());
    StateWriter w;
    save_state_locked(w);
    return w.take();
}

void DeviceBase::restore_state(std::span<const uint8_t> bytes) {
    std::lock_guard lock(mutex());
    if (active_) throw StateError(fmt::format("{}: saved state restored into an activated device", name()));
    StateReader r(bytes, name());
    restore_state_locked(r);
    r.expect_end();
}

void DeviceBase::save_state_locked(StateWriter& /*w*/) const {
    throw Error(fmt::format("snapshot: {} cannot be saved", name()));
}

void DeviceBase::restore_state_locked(StateReader& /*r*/) {
    throw StateError(fmt::format("snapshot: {} cannot be restored", name()));
}

void DeviceBase::queue_notify(uint16_t queue_index) {
    std::lock_guard lock(mutex());
    on_queue_event_locked(queue_index);
}

void DeviceBase::on_queue_event_locked(uint16_t queue_index) {
    if (!active_ || paused_ || broken() || queue_index >= queues_.size() || !queues_[queue_index].ready()) return;
    try {
        on_queue_locked(queue_index);
    } catch (const std::exception& e) {
        fail_locked(fmt::format("queue {}: {}", queue_index, e.what()));
    }
}

DeviceProgress DeviceBase::queues_progress_locked() const {
    DeviceProgress p;
    if (!active_) return p;
    for (size_t i = 0; i < queues_.size(); i++) {
        if (auto s = queues_[i].progress(*mem_)) {
            s->index = static_cast<uint16_t>(i);
            p.queues.push_back(*s);
        }
    }
    return p;
}

void DeviceBase::fail_locked(std::string_view reason) {
    if (interrupt_ == nullptr) return;
    const bool first = !interrupt_->needs_reset();
    if (first) device_errors_.fetch_add(1, std::memory_order_relaxed);
    interrupt_->device_error(reason);
    if (first) on_broken_locked();
}

void DeviceBase::resubscribe_locked() {
    if (!active_ || loop_ == nullptr) return;
    ++generation_;
    post_sync_locked();
}

void DeviceBase::resume_source_locked(size_t index) {
    if (subscriptions_ && subscriptions_->generation == generation_ && index < subscriptions_->source_watches.size()) {
        subscriptions_->source_watches[index]->resume();  // posts to the loop
    }
}

void DeviceBase::post_sync_locked() {
    if (loop_ == nullptr) return;
    loop_->post([link = link_] { sync(link); });
}

void DeviceBase::sync(const std::shared_ptr<Link>& link) {
    std::lock_guard lock(link->mutex);
    if (link->device != nullptr) link->device->sync_locked(link);
}

void DeviceBase::sync_locked(const std::shared_ptr<Link>& link) {
    if (subscriptions_ && subscriptions_->generation == generation_) return;
    subscriptions_.reset();
    if (!active_ || paused_ || loop_ == nullptr) return;
    auto subs = std::make_unique<Subscriptions>();
    subs->generation = generation_;
    const std::weak_ptr<Link> weak = link;
    try {
        const size_t watched_queues = backend_reads_queue_events_locked() ? 0 : queue_events_.size();
        for (size_t q = 0; q < watched_queues && q < queues_.size(); q++) {
            if (queue_events_[q] < 0 || !queues_[q].ready()) continue;
            FileDescriptor fd(::fcntl(queue_events_[q], F_DUPFD_CLOEXEC, 3));
            if (!fd) throw sys_error(fmt::format("dup of the eventfd of queue {}", q));
            const int raw = fd.get();
            subs->queue_fds.push_back(std::move(fd));
            subs->queue_watches.push_back(loop_->watch(raw, [weak, raw, q = static_cast<uint16_t>(q)] {
                uint64_t count = 0;
                if (::read(raw, &count, sizeof(count)) != sizeof(count)) return;  // taken already
                const auto l = weak.lock();
                if (!l) return;
                std::lock_guard lock(l->mutex);
                if (l->device != nullptr) l->device->on_queue_event_locked(q);
            }));
        }
        std::vector<EventSource> sources = event_sources_locked();
        subs->source_handlers.reserve(sources.size());
        subs->source_watches.reserve(sources.size());  // `slot` below stays put
        for (EventSource& source : sources) {
            const size_t index = subs->source_handlers.size();
            subs->source_handlers.push_back(std::move(source.on_readable));
            const uint64_t generation = generation_;
            // The watch is in `subs` once its handler can run (the handler runs on this thread,
            // after sync_locked returned).
            auto* const slot = &subs->source_watches.emplace_back();
            *slot = loop_->watch(source.fd, [weak, index, generation, slot] {
                const auto l = weak.lock();
                if (!l) return;
                std::lock_guard lock(l->mutex);
                if (l->device != nullptr) {
                    l->device->on_source_event_locked(index, generation, slot->get());
                }
            });
        }
        if (const auto interval = timer_interval_locked()) {
            const uint64_t generation = generation_;
            subs->timer = loop_->timer([weak, generation](std::chrono::nanoseconds) {
                const auto l = weak.lock();
                if (!l) return;
                std::lock_guard lock(l->mutex);
                DeviceBase* d = l->device;
                if (d == nullptr || !d->active_ || d->paused_ || d->broken() || d->generation_ != generation) return;
                try {
                    d->on_timer_locked();
                } catch (const std::exception& e) {
                    d->fail_locked(e.what());
                }
            });
            subs->timer->start(*interval);
        }
    } catch (const std::exception& e) {
        fail_locked(fmt::format("cannot subscribe to the event loop: {}", e.what()));
    }
    subscriptions_ = std::move(subs);
}

void DeviceBase::on_source_event_locked(size_t index, uint64_t generation, vmm::FdWatch* watch) {
    bool keep_watching = false;
    if (active_ && !paused_ && !broken() && generation == generation_ && subscriptions_ &&
        subscriptions_->generation == generation) {
        try {
            keep_watching = subscriptions_->source_handlers.at(index)();
        } catch (const std::exception& e) {
            fail_locked(e.what());
        }
    }
    // Level-triggered: a source nobody reads now would fire again at once. A stale watch is
    // replaced by the sync already posted; a broken device is resubscribed after its reset.
    if (!keep_watching && watch != nullptr) watch->pause();
}

}  // namespace embervm::virtio
