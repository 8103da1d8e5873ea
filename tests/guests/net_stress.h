// Test guest "net", net.mode=stress: an echo stream under back-pressure (net_stress.c).
#pragma once

#include <stdint.h>

#include "virtio.h"

// What net.c found out before handing the device over (features negotiated, not DRIVER_OK yet,
// no queue set up).
struct net_stress_link {
    struct virtio_dev* dev;
    uint8_t mac[6];
    uint32_t my_ip, host_ip;
    uint16_t udp_port;
    uint16_t max_frame;  // Ethernet frame without the vnet header: MTU + 14
};

// The features net.mode=stress asks for (the net.no_* knobs of `cmdline` leave some out).
uint64_t net_stress_features(const char* cmdline);
// The largest MTU the stress buffers hold.
#define NET_STRESS_MAX_MTU 9000
// Runs the stress; returns GUEST_PASS or GUEST_FAIL (after printing why).
int net_stress(const char* cmdline, const struct net_stress_link* link);
