// Logging implementation: one write(2) per line so lines from threads never interleave; the
// output descriptor is swapped under a mutex, which every line takes while it is written.
#include "vmm/sys/log.h"

#include <fcntl.h>
#include <pthread.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>

#include "vmm/sys/error.h"
#include "vmm/sys/write_all.h"

namespace embervm::log {
namespace {
std::atomic<Level> g_level{Level::Info};
std::atomic<bool> g_show_level{true};
std::atomic<bool> g_show_origin{false};
std::atomic<uint64_t> g_dropped{0};
const auto g_start = std::chrono::steady_clock::now();
thread_local std::string t_name = "main";

// The output: stderr unless a file was set. Lines are written with the mutex held.
std::mutex g_output_mutex;
FileDescriptor g_output_file;
std::string g_output_path;
std::atomic<int> g_output_fd{STDERR_FILENO};  // the fd of g_output_file (or stderr), for output_fd()

const char* line_tag(Level l) {
    switch (l) {
        case Level::Off: return "OFF";
        case Level::Error: return "ERROR";
        case Level::Warn: return "WARN";
        case Level::Info: return "INFO";
        case Level::Debug: return "DEBUG";
        case Level::Trace: return "TRACE";
    }
    return "?";
}

// "../vmm/vmm.cpp" (the path as the build gave it to the compiler) -> "vmm/vmm.cpp"; a unity
// build's "/src/build/../vmm/vmm.cpp" -> "vmm/vmm.cpp" as well.
std::string_view short_file_name(std::string_view path) {
    if (const auto up = path.rfind("/../"); up != std::string_view::npos) path.remove_prefix(up + 4);
    while (path.starts_with("../") || path.starts_with("./")) path.remove_prefix(path[1] == '.' ? 3 : 2);
    return path;
}

void emit(Level l, std::string_view message, const std::source_location* origin) {
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - g_start).count();
    std::string line = fmt::format("[{:10.6f}] ", t);
    if (g_show_level.load(std::memory_order_relaxed)) line += fmt::format("{:<5} ", line_tag(l));
    line += t_name;
    if (origin != nullptr && g_show_origin.load(std::memory_order_relaxed)) {
        line += fmt::format(" {}:{}", short_file_name(origin->file_name()), origin->line());
    }
    line += ": ";
    line += message;
    line += '\n';
    std::lock_guard lock(g_output_mutex);
    const int fd = g_output_file ? g_output_file.get() : STDERR_FILENO;
    if (!write_all(fd, line, WhenFull::FinishLine)) g_dropped.fetch_add(1, std::memory_order_relaxed);
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
    if (strcasecmp(s.c_str(), "off") == 0) *out = Level::Off;
    else if (strcasecmp(s.c_str(), "error") == 0) *out = Level::Error;
    else if (strcasecmp(s.c_str(), "warn") == 0 || strcasecmp(s.c_str(), "warning") == 0) *out = Level::Warn;
    else if (strcasecmp(s.c_str(), "info") == 0) *out = Level::Info;
    else if (strcasecmp(s.c_str(), "debug") == 0) *out = Level::Debug;
    else if (strcasecmp(s.c_str(), "trace") == 0) *out = Level::Trace;
    else return false;
    return true;
}

const char* level_name(Level l) {
    switch (l) {
        case Level::Off: return "Off";
        case Level::Error: return "Error";
        case Level::Warn: return "Warning";
        case Level::Info: return "Info";
        case Level::Debug: return "Debug";
        case Level::Trace: return "Trace";
    }
    return "?";
}

void set_thread_name(const std::string& name) {
    t_name = name;
    pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
}

void set_show_level(bool show) { g_show_level.store(show, std::memory_order_relaxed); }
void set_show_origin(bool show) { g_show_origin.store(show, std::memory_order_relaxed); }
bool show_level() { return g_show_level.load(std::memory_order_relaxed); }
bool show_origin() { return g_show_origin.load(std::memory_order_relaxed); }
uint64_t dropped_lines() { return g_dropped.load(std::memory_order_relaxed); }

FileDescriptor open_output_file(const std::string& path) {
    // O_NONBLOCK so that opening a named pipe never waits for a reader; cleared again below for
    // everything that is not a pipe (a terminal or a regular file must not drop lines).
    FileDescriptor fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC | O_CREAT | O_NONBLOCK, 0600));
    if (!fd) {
        const int err = errno;
        if (err == ENXIO) throw Error(fmt::format("{}: {} (a named pipe needs a reader)", path, std::strerror(err)));
        throw Error(fmt::format("{}: {}", path, std::strerror(err)));
    }
    struct stat st{};
    if (::fstat(fd.get(), &st) < 0) throw Error(fmt::format("{}: {}", path, std::strerror(errno)));
    if (!S_ISFIFO(st.st_mode)) {
        const int flags = ::fcntl(fd.get(), F_GETFL);
        if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) < 0) {
            throw Error(fmt::format("{}: {}", path, std::strerror(errno)));
        }
    }
    return fd;
}

void set_output_path(const std::string& path) {
    FileDescriptor fd = open_output_file(path);
    std::lock_guard lock(g_output_mutex);
    g_output_file = std::move(fd);
    g_output_path = path;
    g_output_fd.store(g_output_file.get());
}

void set_output_stderr() {
    std::lock_guard lock(g_output_mutex);
    g_output_fd.store(STDERR_FILENO);
    g_output_file.reset();
    g_output_path.clear();
}

int output_fd() { return g_output_fd.load(); }

std::string output_path() {
    std::lock_guard lock(g_output_mutex);
    return g_output_path;
}

void write(Level l, std::string_view message) { emit(l, message, nullptr); }
void write(Level l, std::string_view message, const std::source_location& origin) { emit(l, message, &origin); }

}  // namespace embervm::log
