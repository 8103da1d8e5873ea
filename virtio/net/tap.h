// TAP backend for virtio-net: an existing host TAP device, opened through /dev/net/tun with
// IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, non-blocking, with a 12-byte vnet header
// (virtio_net_hdr_v1) so that checksum and segmentation offloads pass straight through.
#pragma once

#include <string>

#include "virtio/net/backend.h"
#include "vmm/sys/fd.h"

namespace embervm::virtio::net {

class Tap final : public NetBackend {
public:
    // Opens `host_dev_name`, which must exist (an orchestrator creates TAP devices and decides
    // who may use them; embervm does not create one behind its back). Throws Error with a
    // message naming the device: missing, no permission, busy, not a TAP device.
    explicit Tap(const std::string& host_dev_name);

    int fd() const override { return fd_.get(); }
    ssize_t read_frame(std::span<const iovec> iov) override;
    ssize_t write_frame(std::span<const iovec> iov) override;
    uint64_t supported_offload_features() const override { return offloads_; }
    void set_offloads(uint64_t acked_features) override;
    std::string name() const override { return name_; }

private:
    std::string name_;
    FileDescriptor fd_;
    uint64_t offloads_ = 0;
    bool ufo_ = false;  // the kernel accepts TUN_F_UFO
};

}  // namespace embervm::virtio::net
