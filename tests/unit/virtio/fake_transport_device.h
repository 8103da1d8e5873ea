// A fake VirtioDevice for the transport tests (virtio-mmio, virtio-pci): two queues (16 and
// 8 entries), an 8-byte config space, and a handler that answers each request with "ok".
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "memory/guest_memory.h"
#include "virtio/device.h"
#include "virtio/queue.h"
#include "virtio/virtio_defs.h"
#include "vmm/sys/state_stream.h"

namespace embervm::virtio::testing {

using memory::GuestMemory;

constexpr uint64_t kDeviceBit5 = feature_bit(5);

class FakeDevice : public VirtioDevice {
public:
    uint32_t device_type() const override { return device_id::kBlock; }
    uint64_t available_features() const override {
        return kDeviceBit5 | feature::kRingEventIdx | feature::kRingIndirectDesc;
    }
    std::vector<uint16_t> queue_max_sizes() const override { return {16, 8}; }
    void read_config(uint64_t offset, std::span<uint8_t> data) const override {
        for (size_t i = 0; i < data.size(); ++i) {
            data[i] = offset + i < config.size() ? config[offset + i] : 0;
        }
    }
    void write_config(uint64_t offset, std::span<const uint8_t> data) override {
        for (size_t i = 0; i < data.size(); ++i) {
            if (offset + i < config.size()) {
                config[offset + i] = data[i];
            }
        }
    }
    DeviceProgress progress() const override { return {}; }
    nlohmann::json metrics_json() const override { return {}; }
    void log_counters() const override {}
    void activate(const Activation& a) override {
        ++activations;
        if (throw_on_activate) {
            throw std::runtime_error("backend failed to start");
        }
        mem = &a.mem;
        queues = a.queues;
        acked_features = a.acked_features;
        interrupt = &a.interrupt;
    }
    void queue_notify(uint16_t index) override {
        notifications.push_back(index);
        if (throw_on_notify) {
            throw QueueError("bad chain");
        }
        if (!process) {
            return;
        }
        // A device handler: answer each request with "ok" in its writable buffer.
        Queue& q = queues[index];
        q.disable_notification(*mem);
        do {
            while (auto chain = q.pop_available(*mem)) {
                auto w = chain->writer(*mem);
                const std::array<uint8_t, 2> ok{'o', 'k'};
                w.write(ok);
                q.add_used(*mem, chain->head_index(), static_cast<uint32_t>(w.bytes_written()));
            }
        } while (q.enable_notification(*mem));
        if (q.needs_notification(*mem)) {
            interrupt->signal_used_queue(index);
        }
    }
    void reset() override {
        ++resets;
        irqfds = {-1, -1};
        queues = {};
        interrupt = nullptr;
        mem = nullptr;
    }
    std::string name() const override { return "virtio-fake test"; }
    // Its state for snapshots: the config bytes.
    std::vector<uint8_t> save_state() const override { return {config.begin(), config.end()}; }
    void restore_state(std::span<const uint8_t> bytes) override {
        if (bytes.size() != config.size()) throw StateError("virtio-fake test: saved config of the wrong size");
        std::copy(bytes.begin(), bytes.end(), config.begin());
    }
    void set_queue_irqfd(uint16_t index, int fd) override {
        irqfd_offers.emplace_back(index, fd);
        irqfds.at(index) = fd;
    }

    std::array<uint8_t, 8> config{1, 2, 3, 4, 5, 6, 7, 8};
    int activations = 0;
    int resets = 0;
    std::vector<uint16_t> notifications;
    uint64_t acked_features = 0;
    std::span<Queue> queues;
    DeviceInterrupt* interrupt = nullptr;
    const GuestMemory* mem = nullptr;
    bool throw_on_activate = false;
    bool throw_on_notify = false;
    bool process = false;
    // set_queue_irqfd's calls, and what each queue was offered last (-1: nothing).
    std::vector<std::pair<uint16_t, int>> irqfd_offers;
    std::array<int, 2> irqfds{-1, -1};
};

}  // namespace embervm::virtio::testing
