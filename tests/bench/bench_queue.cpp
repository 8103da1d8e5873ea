// Host benchmark of the virtqueue hot path (issue 14); runs without KVM, through
// scripts/bench-queue. Two kinds of case, each set beside memcpy of the same bytes:
//
//   queue  the device side of a split ring in guest memory (virtio/queue.h): pop_available,
//          the chain's readable bytes read with a Reader and its writable bytes written with a
//          Writer, add_used, enable_notification and needs_notification; chains of 1, 3 and 17
//          descriptors, with and without VIRTIO_F_EVENT_IDX.
//   blk    4 KiB reads through virtio-blk (BlockDevice::queue_notify, request parsing, the
//          backend interface, completion into the used ring) with an in-memory disk as backend.
//
// The driver side writes the rings straight into guest memory as a guest would, makes a whole
// batch of chains available at once and takes them back from the used ring after the device's
// pass, checking every used element (and for blk the status byte and the data), so what is
// timed is the device's work plus a few stores and loads per chain. The memcpy figure copies
// exactly the buffers of the same chains (same sizes, same guest addresses) with no ring around
// them: the ceiling a zero-overhead queue would reach. Each case is timed in slices that
// alternate with slices of its memcpy, and reports its fastest slice (the least disturbed by
// other work on a shared machine) and its share of memcpy's speed in the same moments.
//
// This file: the command line, the table and the JSON; bench_queue.h: layout, timing, settings;
// batch_driver.h: the driver side of the ring; bench_queue_cases.cpp, bench_blk_case.cpp: the cases.

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bench_queue.h"
#include "vmm/sys/log.h"

#ifndef EMBERVM_BENCH_BUILDTYPE
#define EMBERVM_BENCH_BUILDTYPE "unknown"
#endif

using namespace embervm::bench;

namespace {

nlohmann::ordered_json to_json(const Sample& sample) {
    return {
        {"seconds", sample.seconds},
        {"chains", sample.work.chains},
        {"descriptors", sample.work.descriptors},
        {"bytes", sample.work.bytes},
        {"chains_per_s", sample.rate(&Work::chains)},
        {"descriptors_per_s", sample.rate(&Work::descriptors)},
        {"bytes_per_s", sample.rate(&Work::bytes)},
    };
}

double ns_per_chain(const Sample& sample) { return sample.seconds * 1e9 / static_cast<double>(sample.work.chains); }

// The rates of the best slice, the headline figures; the rest for a closer look.
nlohmann::ordered_json to_json(const Result& r) {
    const Timed& device = r.timing.device;
    const Timed& ceiling = r.timing.ceiling;
    const Sample& best = device.best;
    const Work& all = device.all.work;
    return {
        {"name", r.name},
        {"kind", r.kind},
        {"descriptors_per_chain", r.descriptors_per_chain},
        {"event_idx", r.event_idx},
        {"batch", r.batch},
        {"chains_per_s", best.rate(&Work::chains)},
        {"descriptors_per_s", best.rate(&Work::descriptors)},
        {"bytes_per_s", best.rate(&Work::bytes)},
        {"ns_per_chain", ns_per_chain(best)},
        {"memcpy_bytes_per_s", ceiling.best.rate(&Work::bytes)},
        {"fraction_of_memcpy", r.timing.fraction_of_memcpy},
        {"interrupts_per_pass", static_cast<double>(all.interrupts) / static_cast<double>(all.passes)},
        {"cpu_fraction", device.cpu_seconds / device.all.seconds},
        {"best", to_json(best)},
        {"all", to_json(device.all)},
        {"memcpy_best", to_json(ceiling.best)},
        {"memcpy_all", to_json(ceiling.all)},
        {"memcpy_cpu_fraction", ceiling.cpu_seconds / ceiling.all.seconds},
    };
}

std::string si(double v, std::string_view unit) {
    if (v >= 1e9) return fmt::format("{:.2f} G{}", v / 1e9, unit);
    if (v >= 1e6) return fmt::format("{:.2f} M{}", v / 1e6, unit);
    if (v >= 1e3) return fmt::format("{:.1f} k{}", v / 1e3, unit);
    return fmt::format("{:.0f} {}", v, unit);
}

void print_table(const Settings& s, const std::vector<Result>& results) {
    fmt::print("bench-queue: buildtype {}{}; per case {} s in {} slices, alternating with as many of memcpy, "
               "after {} s warm-up\n",
               EMBERVM_BENCH_BUILDTYPE,
#ifdef NDEBUG
               " (NDEBUG)",
#else
               "",
#endif
               s.seconds, kSlices, s.warmup);
    fmt::print("queue: ring of {}, {}-byte buffers, R = device-readable, W = device-writable; "
               "blk: 4 KiB reads, header + data + status\n\n",
               kRingSize, s.desc_bytes);
    fmt::print("{:<26} {:>5} {:>11} {:>11} {:>12} {:>9} {:>12} {:>9} {:>11} {:>5}\n", "case", "batch", "chains/s",
               "descs/s", "bytes/s", "ns/chain", "memcpy B/s", "of memcpy", "mean ch/s", "cpu");
    for (const Result& r : results) {
        const Timed& device = r.timing.device;
        const Sample& best = device.best;
        fmt::print("{:<26} {:>5} {:>11} {:>11} {:>12} {:>9.1f} {:>12} {:>8.1f}% {:>11} {:>4.0f}%\n", r.label, r.batch,
                   si(best.rate(&Work::chains), ""), si(best.rate(&Work::descriptors), ""),
                   si(best.rate(&Work::bytes), "B/s"), ns_per_chain(best),
                   si(r.timing.ceiling.best.rate(&Work::bytes), "B/s"), 100.0 * r.timing.fraction_of_memcpy,
                   si(device.all.rate(&Work::chains), ""), 100.0 * device.cpu_seconds / device.all.seconds);
    }
    fmt::print("\nRates are those of the fastest slice (memcpy likewise). of memcpy: bytes/s as a share of\n"
               "memcpy's, median over the slices, each beside a memcpy slice (less sensitive to the host's speed).\n"
               "mean ch/s: chains/s over all slices; cpu: the share of that time the thread ran.\n"
               "For blk, chains are requests and bytes the 4 KiB of data per request.\n");
}

// ---------------------------------------------------------------------------------------------

constexpr std::string_view kUsage = R"(usage: bench-queue [--json] [--seconds S] [--warmup S] [--desc-bytes N] [--batch N]
  --json          one JSON document on stdout instead of the table
  --seconds S     timed seconds per case, and as many for its memcpy ceiling (default 0.5)
  --warmup S      untimed seconds before each, the device and memcpy (default 0.1)
  --desc-bytes N  buffer bytes per descriptor in the queue cases (default 64)
  --batch N       most chains the driver makes available at once (default 256: all that fit)
)";

template <typename T>
bool parse_number(std::string_view text, T& out) {
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc() && end == text.data() + text.size();
}

std::optional<Settings> parse_args(int argc, char** argv) {
    Settings s;
    for (int i = 1; i < argc; i++) {
        const std::string_view arg = argv[i];
        const auto value = [&]() -> std::string_view { return i + 1 < argc ? argv[++i] : ""; };
        bool ok = true;
        if (arg == "--json") {
            s.json = true;
        } else if (arg == "--seconds") {
            ok = parse_number(value(), s.seconds) && s.seconds > 0;
        } else if (arg == "--warmup") {
            ok = parse_number(value(), s.warmup) && s.warmup >= 0;
        } else if (arg == "--desc-bytes") {
            ok = parse_number(value(), s.desc_bytes) && s.desc_bytes > 0 && s.desc_bytes <= (1u << 20);
        } else if (arg == "--batch") {
            ok = parse_number(value(), s.batch) && s.batch > 0;
        } else if (arg == "--help" || arg == "-h") {
            fmt::print("{}", kUsage);
            std::exit(0);
        } else {
            ok = false;
        }
        if (!ok) {
            fmt::print(stderr, "bench-queue: bad argument {}\n{}", arg, kUsage);
            return std::nullopt;
        }
    }
    return s;
}

}  // namespace

int main(int argc, char** argv) {
    const auto settings = parse_args(argc, argv);
    if (!settings) return 2;
    const Settings& s = *settings;
    embervm::log::set_level(embervm::log::Level::Warn);  // not BlockDevice's "activated" lines
    try {
        std::vector<Result> results;
        for (const uint16_t n : {1, 3, 17}) {
            for (const bool event_idx : {false, true}) results.push_back(queue_case(s, n, event_idx));
        }
        for (const bool event_idx : {false, true}) results.push_back(blk_case(s, event_idx));

        if (s.json) {
            nlohmann::ordered_json cases = nlohmann::ordered_json::array();
            for (const Result& r : results) cases.push_back(to_json(r));
#ifdef NDEBUG
            const bool ndebug = true;
#else
            const bool ndebug = false;
#endif
            const nlohmann::ordered_json doc = {
                {"buildtype", EMBERVM_BENCH_BUILDTYPE},  {"ndebug", ndebug},       {"seconds", s.seconds},
                {"warmup_seconds", s.warmup},            {"ring_size", kRingSize}, {"desc_bytes", s.desc_bytes},
                {"blk_request_bytes", kBlockBytes},      {"cases", cases},
            };
            fmt::print("{}\n", doc.dump(2));
        } else {
            print_table(s, results);
        }
    } catch (const std::exception& e) {
        fmt::print(stderr, "bench-queue: {}\n", e.what());
        return 1;
    }
    return 0;
}
