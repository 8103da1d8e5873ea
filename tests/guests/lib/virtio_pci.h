// libguest: the virtio-pci transport behind virtio.h (modern devices only, virtio 1.2 4.1): the
// vendor-specific capabilities (common configuration, notifications, ISR, device configuration)
// found by walking the capability list, and MSI-X (see virtio.h for how interrupts are counted).
#pragma once

#include <stdint.h>

#include "virtio.h"

#define VIRTIO_PCI_VENDOR_ID 0x1af4
#define VIRTIO_PCI_DEVICE_ID_BASE 0x1040  // + the virtio device ID
#define VIRTIO_PCI_DEVICE_ID_LAST 0x107f
#define VIRTIO_MSI_NO_VECTOR 0xffff

// virtio_pci_cap.cfg_type (4.1.4).
#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG 3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4
#define VIRTIO_PCI_CAP_PCI_CFG 5

// virtio_pci_common_cfg (4.1.4.3).
#define VIRTIO_PCI_DEVICE_FEATURE_SELECT 0x00
#define VIRTIO_PCI_DEVICE_FEATURE 0x04
#define VIRTIO_PCI_DRIVER_FEATURE_SELECT 0x08
#define VIRTIO_PCI_DRIVER_FEATURE 0x0c
#define VIRTIO_PCI_CONFIG_MSIX_VECTOR 0x10
#define VIRTIO_PCI_NUM_QUEUES 0x12
#define VIRTIO_PCI_DEVICE_STATUS 0x14
#define VIRTIO_PCI_CONFIG_GENERATION 0x15
#define VIRTIO_PCI_QUEUE_SELECT 0x16
#define VIRTIO_PCI_QUEUE_SIZE 0x18
#define VIRTIO_PCI_QUEUE_MSIX_VECTOR 0x1a
#define VIRTIO_PCI_QUEUE_ENABLE 0x1c
#define VIRTIO_PCI_QUEUE_NOTIFY_OFF 0x1e
#define VIRTIO_PCI_QUEUE_DESC 0x20
#define VIRTIO_PCI_QUEUE_DRIVER 0x28
#define VIRTIO_PCI_QUEUE_DEVICE 0x30

// Both transports: a 64-bit feature word through a select register (0: bits 0-31, 1: 32-63)
// and a 32-bit value register, at these guest-physical addresses (virtio.c).
uint64_t virtio_read_features_at(uint64_t select, uint64_t value);
void virtio_write_features_at(uint64_t select, uint64_t value, uint64_t features);

// virtio_probe() for a virtio-pci entry.
const char* virtio_pci_probe(struct virtio_dev* d, const struct virtio_mmio_entry* e);
// queue_msix_vector of queue `qi` as the device reads it back.
uint16_t virtio_pci_queue_vector(const struct virtio_dev* d, unsigned qi);
// config_msix_vector as the device reads it back.
uint16_t virtio_pci_config_vector(const struct virtio_dev* d);
