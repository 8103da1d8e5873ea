// Applies a config's "logger" section to the process logger (vmm/sys/log.h).
// The one side effect of the configuration, kept apart from the model, its parsing and checks.
#include "vmm/config/apply_logger.h"

#include <exception>

#include <fmt/format.h>

#include "vmm/config/field_checks.h"
#include "vmm/config/validate.h"
#include "vmm/sys/log.h"

namespace embervm::vmm {

namespace {

log::Level to_log_level(LogLevel level) {
    switch (level) {
        case LogLevel::Off: return log::Level::Off;
        case LogLevel::Error: return log::Level::Error;
        case LogLevel::Warning: return log::Level::Warn;
        case LogLevel::Info: return log::Level::Info;
        case LogLevel::Debug: return log::Level::Debug;
        case LogLevel::Trace: return log::Level::Trace;
    }
    return log::Level::Info;
}

}  // namespace

void apply_logger_config(const LoggerConfig& l, std::string_view where) {
    validate(l, where);
    if (l.log_path) {
        try {
            log::set_output_path(*l.log_path);
        } catch (const std::exception& e) {
            throw field_error(fmt::format("{}.log_path", where), e.what());
        }
    }
    if (l.level) log::set_level(to_log_level(*l.level));
    if (l.show_level) log::set_show_level(*l.show_level);
    if (l.show_log_origin) log::set_show_origin(*l.show_log_origin);
}

}  // namespace embervm::vmm
