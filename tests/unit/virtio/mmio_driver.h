// The first steps of a virtio-mmio driver's initialisation, as Linux's virtio_mmio makes them
// (ACKNOWLEDGE, DRIVER, the accepted features word by word, FEATURES_OK), through the test's own
// 32-bit register write, for the unit tests that bring a device up through its transport.
#pragma once

#include <cstdint>

#include "virtio/virtio_defs.h"

namespace embervm::virtio::testing {

template <typename Write32>
void mmio_accept_features(Write32&& w32, uint64_t features) {
    w32(mmio::kStatus, status::kAcknowledge);
    w32(mmio::kStatus, status::kAcknowledge | status::kDriver);
    w32(mmio::kDriverFeaturesSel, 0);
    w32(mmio::kDriverFeatures, static_cast<uint32_t>(features));
    w32(mmio::kDriverFeaturesSel, 1);
    w32(mmio::kDriverFeatures, static_cast<uint32_t>(features >> 32));
    w32(mmio::kStatus, status::kAcknowledge | status::kDriver | status::kFeaturesOk);
}

}  // namespace embervm::virtio::testing
