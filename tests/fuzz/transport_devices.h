// The devices the transport fuzz targets (mmio_transport, pci_transport) put behind their
// transport: virtio-blk on an in-memory backend, virtio-net on a backend that takes every frame,
// or virtio-balloon; the input picks one and its options.
#pragma once

#include <cerrno>
#include <cstdint>
#include <memory>
#include <string>

#include "tests/fuzz/virtio_fuzz.h"
#include "tests/unit/virtio/fake_block_backend.h"
#include "virtio/balloon/balloon_device.h"
#include "virtio/block/block_device.h"
#include "virtio/net/net_device.h"
#include "vmm/sys/eventfd.h"

namespace embervm::fuzz {

// Takes every frame (checking that it lies in guest memory); never has one to deliver.
class SinkNetBackend final : public virtio::net::NetBackend {
public:
    int fd() const override { return event_.fd(); }
    ssize_t read_frame(std::span<const iovec>) override { return -EAGAIN; }
    ssize_t write_frame(std::span<const iovec> iov) override {
        size_t n = 0;
        for (const iovec& v : iov) {
            check(device_memory().host_inside(v.iov_base, v.iov_len), "transmitted frame outside guest memory");
            n += v.iov_len;
        }
        return static_cast<ssize_t>(n);
    }
    uint64_t supported_offload_features() const override {
        return virtio::net::net_feature::kCsum | virtio::net::net_feature::kGuestCsum;
    }
    void set_offloads(uint64_t) override {}
    std::string name() const override { return "sink0"; }

private:
    vmm::EventFd event_;
};

// A device chosen by the input. `*fake_block` is set to a block device's backend (the target
// may make it full or failing), else left alone.
inline std::shared_ptr<virtio::VirtioDevice> make_transport_device(FuzzInput& in,
                                                                   virtio::testing::FakeBlockBackend** fake_block) {
    namespace v = embervm::virtio;
    switch (in.below(3)) {
        case 0: {
            const uint8_t opts = in.u8();
            auto fake = std::make_unique<v::testing::FakeBlockBackend>((1 + in.u8() % 64) * v::block::kSectorSize,
                                                                       (opts & 1) != 0);
            *fake_block = fake.get();
            return std::make_shared<v::block::BlockDevice>(
                std::move(fake), v::block::BlockDeviceOptions{"blk0", (opts & 1) != 0, (opts & 2) != 0});
        }
        case 1: {
            v::net::NetDeviceOptions o;
            o.id = "eth0";
            if (in.flag()) o.mtu = in.u16();
            return std::make_shared<v::net::NetDevice>(std::make_unique<SinkNetBackend>(), o);
        }
        default: {
            const uint8_t opts = in.u8();
            v::balloon::BalloonOptions o;
            o.amount_mib = in.u8();
            o.deflate_on_oom = (opts & 1) != 0;
            o.stats_polling_interval_s = (opts & 2) != 0 ? 1 : 0;
            o.free_page_reporting = (opts & 4) != 0;
            return std::make_shared<v::balloon::BalloonDevice>(o);
        }
    }
}

// Makes a block device's backend full or failing (never one that holds requests: a reset waits
// for those, and nothing in a transport target would complete them). Returns false when there
// is no block device, or the input chose not to.
inline bool vary_block_backend(FuzzInput& in, virtio::testing::FakeBlockBackend* fake_block) {
    if (fake_block == nullptr || !in.flag()) return false;
    fake_block->depth = 1 + in.below(4);
    fake_block->fail_with = in.flag() ? -EIO : 0;
    return true;
}

}  // namespace embervm::fuzz
