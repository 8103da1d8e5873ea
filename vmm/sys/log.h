// Logging: "[<seconds since start>] <LEVEL> <thread name>: message", one line per write(2),
// on stderr or on a file / named pipe (set_output_path). Every function here is thread-safe.
//
// With show_log_origin the call site follows the thread name:
// "[  0.012345] INFO  main vmm/vmm.cpp:123: message"; without show_level the level is left out.
#pragma once

#include <chrono>
#include <cstdint>
#include <source_location>
#include <string>
#include <string_view>
#include <type_traits>

#include <fmt/format.h>

#include "vmm/sys/fd.h"

namespace embervm::log {

// Off: nothing is logged, not even errors. Trace: the most detailed.
enum class Level { Off = -1, Error = 0, Warn = 1, Info = 2, Debug = 3, Trace = 4 };

void set_level(Level level);
Level level();
// Parses "off", "error", "warn"/"warning", "info", "debug", "trace" (any case); returns false
// if unknown.
bool parse_level(std::string_view text, Level* out);
// "Off", "Error", "Warning", "Info", "Debug", "Trace".
const char* level_name(Level level);
// Names the calling thread in log lines (also sets the kernel thread name, max 15 chars).
void set_thread_name(const std::string& name);

// Where log lines go. set_output_path opens `path` with open_output_file and, if that worked,
// sends every later line there (the previous file, if any, is closed); throws embervm::Error
// ("<path>: <strerror>") and leaves the output unchanged otherwise. set_output_stderr goes
// back to stderr.
void set_output_path(const std::string& path);
void set_output_stderr();
// The descriptor log lines go to now (stderr or the file): for a signal handler that must
// write a line itself (async-signal-safe: one atomic load).
int output_fd();
// The path given to set_output_path, or "" while logging to stderr.
std::string output_path();
// Lines not written because the output could not take them (a named pipe that is full, a
// file system that is full); they are dropped rather than stalling the VMM.
uint64_t dropped_lines();

// The shape of a line: the level (default on) and the call site (default off).
void set_show_level(bool show);
void set_show_origin(bool show);
bool show_level();
bool show_origin();

// Opens a log or metrics output: O_WRONLY | O_APPEND | O_CLOEXEC, created with mode 0600 if
// missing. A named pipe is opened non-blocking (open fails with ENXIO while it has no reader,
// and a full pipe makes writes fail with EAGAIN rather than stall the writer); anything else
// is left blocking. Throws embervm::Error "<path>: <strerror>".
FileDescriptor open_output_file(const std::string& path);

void write(Level level, std::string_view message);
void write(Level level, std::string_view message, const std::source_location& origin);

// A format string checked at compile time, with the call site it was written at.
template <typename... Args>
struct FormatAt {
    template <typename S>
    consteval FormatAt(const S& text, std::source_location where = std::source_location::current())
        : format(text), origin(where) {}
    fmt::format_string<Args...> format;
    std::source_location origin;
};
template <typename... Args>
using format_at = FormatAt<std::type_identity_t<Args>...>;
// When the process started (static initialisation): the zero of log timestamps and of the
// boot-time measurements.
std::chrono::steady_clock::time_point process_start();
// Microseconds since process_start().
int64_t micros_since_start();

template <typename... Args>
void error(format_at<Args...> f, Args&&... args) {
    if (level() >= Level::Error) write(Level::Error, fmt::format(f.format, std::forward<Args>(args)...), f.origin);
}
template <typename... Args>
void warn(format_at<Args...> f, Args&&... args) {
    if (level() >= Level::Warn) write(Level::Warn, fmt::format(f.format, std::forward<Args>(args)...), f.origin);
}
template <typename... Args>
void info(format_at<Args...> f, Args&&... args) {
    if (level() >= Level::Info) write(Level::Info, fmt::format(f.format, std::forward<Args>(args)...), f.origin);
}
template <typename... Args>
void debug(format_at<Args...> f, Args&&... args) {
    if (level() >= Level::Debug) write(Level::Debug, fmt::format(f.format, std::forward<Args>(args)...), f.origin);
}
template <typename... Args>
void trace(format_at<Args...> f, Args&&... args) {
    if (level() >= Level::Trace) write(Level::Trace, fmt::format(f.format, std::forward<Args>(args)...), f.origin);
}

}  // namespace embervm::log
