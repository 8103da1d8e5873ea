// Logging: "[<seconds since start>] <LEVEL> <thread name>: message" on stderr.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace embervm::log {

enum class Level { Error = 0, Warn = 1, Info = 2, Debug = 3 };

void set_level(Level level);
Level level();
// Parses "error", "warn"/"warning", "info", "debug" (any case); returns false if unknown.
bool parse_level(std::string_view text, Level* out);
// Names the calling thread in log lines (also sets the kernel thread name, max 15 chars).
void set_thread_name(const std::string& name);
void write(Level level, std::string_view message);
// When the process started (static initialisation): the zero of log timestamps and of the
// boot-time measurements.
std::chrono::steady_clock::time_point process_start();
// Microseconds since process_start().
int64_t micros_since_start();

template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
    write(Level::Error, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
    if (level() >= Level::Warn) write(Level::Warn, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
    if (level() >= Level::Info) write(Level::Info, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
    if (level() >= Level::Debug) write(Level::Debug, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace embervm::log
