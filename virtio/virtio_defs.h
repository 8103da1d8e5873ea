// virtio 1.x constants shared by the queue, the transports and the devices: device status
// bits, feature masks, device IDs, split-ring flags, interrupt bits and the virtio-mmio
// (version 2) register file.
//
// Our own definitions rather than <linux/virtio_*.h>: those headers define macros that would
// collide with C++ names and use flexible array members that are not valid C++. Names follow
// the spec with a `k` prefix so that including a Linux header alongside cannot break them.
#pragma once

#include <cstdint>

namespace embervm::virtio {

// Device status field (spec 2.1).
namespace status {
inline constexpr uint32_t kAcknowledge = 1;
inline constexpr uint32_t kDriver = 2;
inline constexpr uint32_t kDriverOk = 4;
inline constexpr uint32_t kFeaturesOk = 8;
inline constexpr uint32_t kDeviceNeedsReset = 0x40;
inline constexpr uint32_t kFailed = 0x80;
}  // namespace status

// The feature mask for feature bit number `n` (devices define their own bits with it,
// e.g. `feature_bit(5)` for VIRTIO_BLK_F_RO).
constexpr uint64_t feature_bit(unsigned n) { return uint64_t{1} << n; }

// Reserved (device-independent) feature bits (spec 6), as masks, not bit numbers.
namespace feature {
inline constexpr uint64_t kNotifyOnEmpty = feature_bit(24);
inline constexpr uint64_t kAnyLayout = feature_bit(27);
inline constexpr uint64_t kRingIndirectDesc = feature_bit(28);  // VIRTIO_RING_F_INDIRECT_DESC
inline constexpr uint64_t kRingEventIdx = feature_bit(29);       // VIRTIO_RING_F_EVENT_IDX
inline constexpr uint64_t kVersion1 = feature_bit(32);           // VIRTIO_F_VERSION_1
inline constexpr uint64_t kAccessPlatform = feature_bit(33);     // VIRTIO_F_ACCESS_PLATFORM
inline constexpr uint64_t kRingPacked = feature_bit(34);
inline constexpr uint64_t kInOrder = feature_bit(35);
inline constexpr uint64_t kOrderPlatform = feature_bit(36);
inline constexpr uint64_t kSrIov = feature_bit(37);
inline constexpr uint64_t kNotificationData = feature_bit(38);
inline constexpr uint64_t kNotifConfigData = feature_bit(39);
inline constexpr uint64_t kRingReset = feature_bit(40);
}  // namespace feature

// Device IDs (spec 5).
namespace device_id {
inline constexpr uint32_t kNet = 1;
inline constexpr uint32_t kBlock = 2;
inline constexpr uint32_t kConsole = 3;
inline constexpr uint32_t kEntropy = 4;
inline constexpr uint32_t kBalloon = 5;
inline constexpr uint32_t kScsi = 8;
inline constexpr uint32_t kVsock = 19;
}  // namespace device_id

// Split virtqueue descriptor flags (spec 2.7.5).
namespace desc_flags {
inline constexpr uint16_t kNext = 1;
inline constexpr uint16_t kWrite = 2;
inline constexpr uint16_t kIndirect = 4;
}  // namespace desc_flags

// Ring flags: avail.flags is written by the driver, used.flags by the device (spec 2.7.7).
inline constexpr uint16_t kAvailFlagNoInterrupt = 1;  // VRING_AVAIL_F_NO_INTERRUPT
inline constexpr uint16_t kUsedFlagNoNotify = 1;      // VRING_USED_F_NO_NOTIFY

// Largest queue size of a split virtqueue (spec 2.7: "Queue Size ... maximum 32768").
inline constexpr uint16_t kMaxQueueSize = 32768;

// Interrupt status bits (virtio-mmio InterruptStatus, virtio-pci ISR).
namespace interrupt {
inline constexpr uint32_t kUsedBuffer = 1;
inline constexpr uint32_t kConfigChange = 2;
}  // namespace interrupt

// virtio-mmio register file, version 2 (spec 4.2.2). Offsets from the device's base.
namespace mmio {
inline constexpr uint32_t kMagic = 0x74726976;  // "virt" little-endian
inline constexpr uint32_t kVersion = 2;
// Vendor ID reported by our devices: the bytes "EMBR" in guest memory order (as QEMU's
// 0x554d4551 reads "QEMU").
inline constexpr uint32_t kVendorId = 0x52424d45;

inline constexpr uint64_t kMagicValue = 0x000;
inline constexpr uint64_t kVersionReg = 0x004;
inline constexpr uint64_t kDeviceId = 0x008;
inline constexpr uint64_t kVendorIdReg = 0x00c;
inline constexpr uint64_t kDeviceFeatures = 0x010;
inline constexpr uint64_t kDeviceFeaturesSel = 0x014;
inline constexpr uint64_t kDriverFeatures = 0x020;
inline constexpr uint64_t kDriverFeaturesSel = 0x024;
inline constexpr uint64_t kQueueSel = 0x030;
inline constexpr uint64_t kQueueNumMax = 0x034;
inline constexpr uint64_t kQueueNum = 0x038;
inline constexpr uint64_t kQueueReady = 0x044;
inline constexpr uint64_t kQueueNotify = 0x050;  // the VMM's per-queue KVM_IOEVENTFD address
inline constexpr uint64_t kInterruptStatus = 0x060;
inline constexpr uint64_t kInterruptAck = 0x064;
inline constexpr uint64_t kStatus = 0x070;
inline constexpr uint64_t kQueueDescLow = 0x080;
inline constexpr uint64_t kQueueDescHigh = 0x084;
inline constexpr uint64_t kQueueDriverLow = 0x090;  // available ring
inline constexpr uint64_t kQueueDriverHigh = 0x094;
inline constexpr uint64_t kQueueDeviceLow = 0x0a0;  // used ring
inline constexpr uint64_t kQueueDeviceHigh = 0x0a4;
inline constexpr uint64_t kShmSel = 0x0ac;
inline constexpr uint64_t kShmLenLow = 0x0b0;
inline constexpr uint64_t kShmLenHigh = 0x0b4;
inline constexpr uint64_t kShmBaseLow = 0x0b8;
inline constexpr uint64_t kShmBaseHigh = 0x0bc;
inline constexpr uint64_t kQueueReset = 0x0c0;
inline constexpr uint64_t kConfigGeneration = 0x0fc;
inline constexpr uint64_t kConfig = 0x100;  // device-specific configuration space
inline constexpr uint64_t kWindowSize = 0x1000;  // the 4 KiB window each device gets
}  // namespace mmio

}  // namespace embervm::virtio
