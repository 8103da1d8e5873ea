// Logging implementation: one write(2) per line so lines from threads never interleave.
#include "vmm/log.h"

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <strings.h>

namespace embervm::log {
namespace {
std::atomic<Level> g_level{Level::Info};
const auto g_start = std::chrono::steady_clock::now();
thread_local std::string t_name = "main";

const char* level_name(Level l) {
    switch (l) {
        case Level::Error: return "ERROR";
        case Level::Warn: return "WARN";
        case Level::Info: return "INFO";
        case Level::Debug: return "DEBUG";
    }
    return "?";
}
}  // namespace

std::chrono::steady_clock::time_point process_start() { return g_start; }
int64_t micros_since_start() {
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - g_start).count();
}

void set_level(Level l) { g_level.store(l, std::memory_order_relaxed); }
Level level() { return g_level.load(std::memory_order_relaxed); }

bool parse_level(std::string_view text, Level* out) {
    const std::string s(text);
    if (strcasecmp(s.c_str(), "error") == 0) *out = Level::Error;
    else if (strcasecmp(s.c_str(), "warn") == 0 || strcasecmp(s.c_str(), "warning") == 0) *out = Level::Warn;
    else if (strcasecmp(s.c_str(), "info") == 0) *out = Level::Info;
    else if (strcasecmp(s.c_str(), "debug") == 0) *out = Level::Debug;
    else return false;
    return true;
}

void set_thread_name(const std::string& name) {
    t_name = name;
    pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
}

void write(Level l, std::string_view message) {
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - g_start).count();
    const std::string line = fmt::format("[{:10.6f}] {:<5} {}: {}\n", t, level_name(l), t_name, message);
    size_t off = 0;
    while (off < line.size()) {
        const ssize_t n = ::write(STDERR_FILENO, line.data() + off, line.size() - off);
        if (n <= 0) break;
        off += static_cast<size_t>(n);
    }
}

}  // namespace embervm::log
