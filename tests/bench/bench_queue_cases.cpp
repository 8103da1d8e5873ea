// bench-queue: the queue cases and the helpers every case uses (bench_queue.cpp).
#include <time.h>

#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "batch_driver.h"
#include "bench_queue.h"
#include "virtio/queue.h"

namespace embervm::bench {

double thread_cpu_seconds() {
    timespec ts{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// One round of the memcpy ceiling: the same buffers of `chains_per_round` chains copied into or
// out of `scratch` by plain memcpy.
Work copy_round(const std::vector<std::vector<HostBuffer>>& chains, uint32_t chains_per_round,
                std::span<uint8_t> scratch) {
    Work w;
    for (uint32_t c = 0; c < chains_per_round; c++) {
        for (const HostBuffer& b : chains[c]) {
            if (b.device_writes) {
                std::memcpy(b.host, scratch.data(), b.len);
            } else {
                std::memcpy(scratch.data(), b.host, b.len);
            }
            escape(b.host);
            escape(scratch.data());
            w.bytes += b.len;
            ++w.descriptors;
        }
        ++w.chains;
    }
    ++w.passes;
    return w;
}

std::vector<HostBuffer> host_buffers(const GuestMemory& mem, std::span<const Buffer> bufs) {
    std::vector<HostBuffer> out;
    for (const Buffer& b : bufs) {
        out.push_back({mem.get_slice(GuestAddress(b.addr), b.len).value().data(), b.len, b.device_writes});
    }
    return out;
}


// The chain shape: one device-readable buffer, then n - 1 device-writable ones.
std::vector<Buffer> chain_buffers(uint16_t head, uint16_t n, uint32_t desc_bytes) {
    std::vector<Buffer> bufs;
    for (uint16_t i = 0; i < n; i++) {
        bufs.push_back({kBuffers + uint64_t{desc_bytes} * (head + i), desc_bytes, i > 0});
    }
    return bufs;
}

std::string shape(uint16_t n) { return n == 1 ? "R" : fmt::format("R+{}W", n - 1); }

GuestMemory make_memory(uint64_t buffer_bytes) {
    const uint64_t size = (kBuffers + buffer_bytes + kPage - 1) / kPage * kPage;
    return GuestMemory({{GuestAddress(0), size}});
}

// One device pass as virtio/queue.h describes it: every available chain is parsed, read and
// written in full and completed; then kicks are asked for again and the interrupt decided.
Work queue_pass(const GuestMemory& mem, Queue& queue, std::span<uint8_t> scratch) {
    Work w;
    queue.disable_notification(mem);
    do {
        while (auto chain = queue.pop_available(mem)) {
            Reader in = chain->reader(mem);
            Writer out = chain->writer(mem);
            const size_t read = in.read(scratch.first(in.available()));
            escape(scratch.data());
            const size_t written = out.write(scratch.first(out.available()));
            queue.add_used(mem, chain->head_index(), static_cast<uint32_t>(out.bytes_written()));
            ++w.chains;
            w.descriptors += chain->descriptors().size();
            w.bytes += read + written;
        }
    } while (queue.enable_notification(mem));
    if (queue.needs_notification(mem)) ++w.interrupts;
    ++w.passes;
    return w;
}

Result queue_case(const Settings& s, uint16_t n, bool event_idx) {
    const uint16_t chains = kRingSize / n;
    GuestMemory mem = make_memory(uint64_t{s.desc_bytes} * kRingSize);
    Queue queue(kRingSize);
    BatchDriver driver(mem, queue, event_idx);
    std::vector<std::vector<HostBuffer>> host_chains;
    for (uint16_t c = 0; c < chains; c++) {
        const auto head = static_cast<uint16_t>(c * n);
        const auto bufs = chain_buffers(head, n, s.desc_bytes);
        driver.add_chain(head, bufs, uint32_t{s.desc_bytes} * (n - 1));
        host_chains.push_back(host_buffers(mem, bufs));
    }
    std::vector<uint8_t> scratch(size_t{s.desc_bytes} * n, 0x5a);
    const uint32_t batch = std::min<uint32_t>(s.batch, chains);

    Result r;
    r.name = fmt::format("queue-{}{}", n, event_idx ? "-event-idx" : "");
    r.label = fmt::format("queue {} ({}){}", n, shape(n), event_idx ? " EVENT_IDX" : "");
    r.kind = "queue";
    r.descriptors_per_chain = n;
    r.event_idx = event_idx;
    r.batch = batch;
    const auto device_round = [&] {
        const uint32_t published = driver.publish(batch, [](uint16_t) {});
        const Work w = queue_pass(mem, queue, scratch);
        const uint32_t used = driver.reap([](uint16_t) {});
        if (used != published || w.chains != published) {
            throw BenchError(fmt::format("{}: {} chains published, {} processed, {} used", r.name, published, w.chains,
                                         used));
        }
        if (w.interrupts != 1) {
            throw BenchError(fmt::format("{}: the pass decided on {} interrupts, expected 1", r.name, w.interrupts));
        }
        return w;
    };
    r.timing = run_paired(s, device_round, [&] { return copy_round(host_chains, batch, scratch); });
    return r;
}

}  // namespace embervm::bench
