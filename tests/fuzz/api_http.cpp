// Fuzz target api_http: raw bytes from an API client through Boost.Beast's request parser,
// with the limits the API server sets (ApiServerOptions' defaults), and every request it
// completes through ApiController::handle, the API server's handler, in the order given
// (pipelined requests on one connection: the same controller sees them all, so sequences such
// as PUT /machine-config then PATCH /balloon are reached). No socket: the parser runs on the
// input buffer, as the server's read loop would feed it.
//
// Checks: a request the parser refuses ends the "connection" as the server would (400, 413,
// 431); every response of the handler has a status the API documents and the body its status
// promises (204: none; 200: JSON; 4xx/5xx: {"fault_message": "..."}).
//
// The fuzz input must not reach outside: requests that would start the VM (InstanceStart) or
// redirect the process's log to a file (PUT /logger with log_path) are not passed on, and
// neither is a body with a string holding a '/' unless it names a file under kFileDir (no "..").
// The files the seed corpus names (vmlinux, initrd, rootfs.ext4 there) are created empty on
// first use; the handler opens them only to check that they can be opened.
#include <sys/stat.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>
#include <string_view>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "tests/fuzz/boot_harness.h"
#include "vmm/api/api.h"
#include "vmm/api/api_server.h"
#include "vmm/config/json_reader.h"
#include "vmm/sys/log.h"

using namespace embervm;
namespace http = boost::beast::http;

namespace {

constexpr std::string_view kFileDir = "/tmp/embervm-fuzz-api/";

void make_files() {
    static const bool made = [] {
        ::mkdir(std::string(kFileDir).c_str(), 0700);
        for (const char* name : {"vmlinux", "initrd", "rootfs.ext4"}) {
            const std::string path = std::string(kFileDir) + name;
            struct stat st {};
            if (::stat(path.c_str(), &st) != 0) std::ofstream(path, std::ios::binary);
        }
        return true;
    }();
    (void)made;
}

bool safe_strings(const nlohmann::json& j) {
    if (j.is_string()) {
        const std::string& s = j.get_ref<const std::string&>();
        if (s.find('/') == std::string::npos) return true;
        return s.starts_with(kFileDir) && s.find("..") == std::string::npos;
    }
    if (j.is_structured()) {
        for (const auto& item : j.items()) {
            if (!safe_strings(item.value())) return false;
        }
    }
    return true;
}

// Whether the request may go to the handler (see the top of the file).
bool harmless(const vmm::ApiRequest& request) {
    nlohmann::json body;
    try {
        body = vmm::parse_json_document(request.body, "fuzz", "fuzz");
    } catch (const std::exception&) {
        return true;  // the handler refuses it without looking further
    }
    if (!safe_strings(body)) return false;
    if (body.is_object()) {
        if (body.contains("log_path")) return false;
        const auto action = body.find("action_type");
        if (action != body.end() && *action == "InstanceStart") return false;
    }
    return true;
}

void check_response(const vmm::ApiResponse& r) {
    switch (r.status) {
        case 204: fuzz::fuzz_check(r.body.empty(), "API: 204 with a body"); return;
        case 200:
            fuzz::fuzz_check(nlohmann::json::accept(r.body), "API: 200 without a JSON body");
            return;
        case 400:
        case 404:
        case 405:
        case 500: {
            const nlohmann::json j = nlohmann::json::parse(r.body, nullptr, false);
            fuzz::fuzz_check(j.is_object() && j.size() == 1 && j.contains("fault_message") &&
                                 j["fault_message"].is_string(),
                             "API: error without {\"fault_message\": ...}");
            return;
        }
        default: fuzz::fuzz_fail("API: undocumented status", std::to_string(r.status));
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    make_files();
    // EMBERVM_FUZZ_VERBOSE=1: every request and its answer on stderr (to see what a corpus reaches).
    static const bool verbose = std::getenv("EMBERVM_FUZZ_VERBOSE") != nullptr;
    log::set_level(log::Level::Off);  // the handler logs nothing the checks need
    const vmm::ApiServerOptions limits;
    vmm::ApiController controller;
    std::string_view rest(reinterpret_cast<const char*>(data), size);
    for (;;) {
        http::request_parser<http::string_body> parser;
        parser.body_limit(limits.max_body_bytes);
        parser.header_limit(static_cast<uint32_t>(limits.max_header_bytes));
        boost::beast::error_code ec;
        while (!parser.is_done()) {
            size_t used = 0;
            if (!rest.empty()) {
                used = parser.put(boost::asio::buffer(rest.data(), rest.size()), ec);
                rest.remove_prefix(used);
                if (ec == http::error::need_more) ec = {};
                if (ec) return 0;  // the server answers 400/413/431 and closes the connection
            }
            if (used == 0 && !parser.is_done()) {
                // The input ends here: between requests (the client left) or within one (400).
                if (!parser.got_some()) return 0;
                parser.put_eof(ec);
                if (ec || !parser.is_done()) return 0;
            }
        }
        http::request<http::string_body> req = parser.release();
        const bool keep_alive = req.keep_alive();
        const vmm::ApiRequest request{std::string(req.method_string()), std::string(req.target()),
                                      std::move(req.body())};
        if (!harmless(request)) {
            if (verbose) std::fprintf(stderr, "%s %s: not passed on\n", request.method.c_str(), request.target.c_str());
        } else {
            const vmm::ApiResponse response = controller.handle(request);
            if (verbose) {
                std::fprintf(stderr, "%s %s -> %u %s\n", request.method.c_str(), request.target.c_str(), response.status,
                             response.body.c_str());
            }
            check_response(response);
        }
        if (!keep_alive) return 0;
    }
}
