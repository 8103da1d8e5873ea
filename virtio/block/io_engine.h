// The block I/O engines and their names: one table for the config JSON ("io_engine"), its
// parser and the logs. Header-only so that vmm/config can use it without linking virtio/.
#pragma once

#include <optional>
#include <string_view>
#include <vector>

namespace embervm::virtio::block {

enum class IoEngine {
    Sync,   // preadv/pwritev on the event-loop thread
    Async,  // io_uring
};

struct IoEngineName {
    IoEngine engine;
    const char* name;
};

inline constexpr IoEngineName kIoEngineNames[] = {
    {IoEngine::Sync, "Sync"},
    {IoEngine::Async, "Async"},
};

constexpr const char* to_string(IoEngine engine) {
    for (const IoEngineName& n : kIoEngineNames) {
        if (n.engine == engine) return n.name;
    }
    return "unknown";
}

// The engine called `name` exactly (case matters), or nullopt.
constexpr std::optional<IoEngine> io_engine_from_string(std::string_view name) {
    for (const IoEngineName& n : kIoEngineNames) {
        if (name == n.name) return n.engine;
    }
    return std::nullopt;
}

// Every name, in the table's order ("Sync", "Async"): the choices a parser offers.
inline std::vector<std::string_view> io_engine_names() {
    std::vector<std::string_view> names;
    for (const IoEngineName& n : kIoEngineNames) names.emplace_back(n.name);
    return names;
}

}  // namespace embervm::virtio::block
