// The HTTP API over a real Unix socket: the server (vmm/api_server) and the endpoints
// (vmm/api) in-process, driven by a small HTTP client written on raw sockets, so that malformed
// requests can be sent too. Every endpoint and error path, and a VM booted, paused, resumed and
// ended purely through the API (the ticker test guest, whose path is the first argument after
// the Catch2 options: EMBERVM_TEST_GUEST_TICKER in the environment), and Debian's stock kernel
// powering off through ACPI (EMBERVM_TEST_DEBIAN_BZIMAGE / _INITRAMFS, as scripts/test exports).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/unit/temp_dir.h"
#include "vmm/api/api.h"
#include "vmm/api/api_server.h"
#include "vmm/sys/error.h"

using namespace embervm;
using namespace embervm::vmm;
using nlohmann::json;
namespace fs = std::filesystem;
using embervm::test::TempDir;

namespace {

struct HttpResponse {
    int status = 0;
    std::string headers;
    std::string body;
    json j() const { return json::parse(body); }
    std::string fault() const { return j().at("fault_message").get<std::string>(); }
};

// One connection to the server.
class Client {
public:
    explicit Client(const std::string& path) {
        fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        REQUIRE(fd_ >= 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
        REQUIRE(::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
    }
    ~Client() { ::close(fd_); }

    void send_raw(std::string_view data) {
        while (!data.empty()) {
            const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
            if (n < 0 && errno == EPIPE) return;  // the server closed early; its answer is read next
            REQUIRE(n > 0);
            data.remove_prefix(static_cast<size_t>(n));
        }
    }

    // Reads one response (headers, then Content-Length bytes of body). Fails after 10 s.
    HttpResponse read_response() {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        size_t header_end;
        while ((header_end = buf_.find("\r\n\r\n")) == std::string::npos) {
            if (!fill(deadline)) FAIL("connection closed before a complete response; got: " << buf_);
        }
        HttpResponse r;
        r.headers = buf_.substr(0, header_end + 2);
        REQUIRE(r.headers.starts_with("HTTP/1.1 "));
        r.status = std::stoi(r.headers.substr(9, 3));
        size_t length = 0;
        std::istringstream lines(r.headers);
        for (std::string line; std::getline(lines, line);) {
            if (line.size() > 16 && strncasecmp(line.c_str(), "content-length:", 15) == 0) {
                length = std::stoul(line.substr(15));
            }
        }
        while (buf_.size() < header_end + 4 + length) {
            if (!fill(deadline)) FAIL("connection closed in the body");
        }
        r.body = buf_.substr(header_end + 4, length);
        buf_.erase(0, header_end + 4 + length);
        return r;
    }

    HttpResponse request(const std::string& method, const std::string& target, const std::string& body = "",
                         bool close = false) {
        std::string req = method + " " + target + " HTTP/1.1\r\nHost: localhost\r\n";
        if (!body.empty()) req += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
        if (close) req += "Connection: close\r\n";
        req += "\r\n" + body;
        send_raw(req);
        return read_response();
    }

    // True once the server closed the connection (within 5 s).
    bool closed_by_server() {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (fill(deadline)) {
        }
        return eof_;
    }

private:
    bool fill(std::chrono::steady_clock::time_point deadline) {
        for (;;) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) return false;
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
            char tmp[4096];
            const ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                eof_ = true;
                return false;
            }
            buf_.append(tmp, static_cast<size_t>(n));
            return true;
        }
    }

    int fd_ = -1;
    std::string buf_;
    bool eof_ = false;
};

// The controller behind a real server on a socket in a temporary directory.
struct Api {
    TempDir dir;
    std::string sock = dir.file("api.sock");
    std::string console = dir.file("console.txt");
    std::unique_ptr<ApiController> controller;
    std::unique_ptr<ApiServer> server;

    explicit Api(ApiServerOptions server_options = {}) {
        ApiControllerOptions o;
        o.instance_id = "test-vm";
        o.vm_options.serial_out = console;
        controller = std::make_unique<ApiController>(VmConfig{}, o);
        server = std::make_unique<ApiServer>(
            sock, [this](const ApiRequest& r) { return controller->handle(r); }, server_options);
        server->start();
    }
    ~Api() {
        if (auto vm = controller->vm()) {
            vm->request_shutdown();
            vm->wait();
        }
        server->stop();
    }
    HttpResponse call(const std::string& method, const std::string& target, const std::string& body = "") {
        Client c(sock);
        return c.request(method, target, body, true);
    }
    HttpResponse call(const std::string& method, const std::string& target, const json& body) {
        return call(method, target, body.dump());
    }
};

std::string guest_path(const char* var) {
    const char* p = std::getenv(var);
    if (p == nullptr || *p == '\0') {
        FAIL("environment variable " << var << " is not set: this test needs the ticker test guest (meson test "
                                            "sets it)");
    }
    return p;
}

size_t count_ticks(const std::string& path) {
    std::ifstream in(path);
    size_t n = 0;
    for (std::string line; std::getline(in, line);) {
        if (line.starts_with("tick ")) n++;
    }
    return n;
}

template <typename Pred>
bool wait_until(Pred pred, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (pred()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return pred();
}

}  // namespace

TEST_CASE("API: instance info and version", "[api]") {
    Api api;
    auto r = api.call("GET", "/");
    REQUIRE(r.status == 200);
    CHECK(r.headers.find("Content-Type: application/json") != std::string::npos);
    CHECK(r.j()["id"] == "test-vm");
    CHECK(r.j()["state"] == "Not started");
    CHECK(r.j()["vmm_version"] == EMBERVM_VERSION);
    CHECK(r.j()["app_name"] == "embervm");
    r = api.call("GET", "/version");
    REQUIRE(r.status == 200);
    CHECK(r.j()["firecracker_version"] == EMBERVM_VERSION);
}

TEST_CASE("API: unknown paths, wrong methods and unsupported Firecracker resources", "[api]") {
    Api api;
    auto r = api.call("GET", "/nonsense");
    CHECK(r.status == 404);
    CHECK(r.fault() == "no such resource: /nonsense");
    r = api.call("DELETE", "/machine-config");
    CHECK(r.status == 405);
    CHECK(r.fault() == "DELETE is not allowed on /machine-config (allowed: GET, PUT, PATCH)");
    CHECK(api.call("POST", "/actions", json{{"action_type", "InstanceStart"}}).status == 405);
    CHECK(api.call("GET", "/drives/").status == 404);
    CHECK(api.call("PUT", "/drives/a/b", json::object()).status == 404);
    r = api.call("PUT", "/mmds", json::object());
    CHECK(r.status == 400);
    CHECK(r.fault() == "/mmds: not supported by embervm");
    // Snapshots: the fields are checked, then the state (no microVM to save yet).
    r = api.call("PUT", "/snapshot/create", json::object());
    CHECK(r.status == 400);
    CHECK(r.fault() == "snapshot.snapshot_path: required");
    r = api.call("PUT", "/snapshot/create", json{{"snapshot_path", "/s"}, {"mem_file_path", "/m"}});
    CHECK(r.status == 400);
    CHECK(r.fault() == "PUT /snapshot/create: not allowed before the microVM started (InstanceStart first)");
    r = api.call("PUT", "/snapshot/load", json{{"snapshot_path", "/s"}, {"mem_backend", {{"backend_type", "Uffd"}}}});
    CHECK(r.status == 400);
    CHECK(r.fault() == "snapshot.mem_backend.backend_path: required");
    r = api.call("PUT", "/snapshot/load",
                 json{{"snapshot_path", "/s"}, {"mem_backend", {{"backend_type", "Mmap"}, {"backend_path", "/u"}}}});
    CHECK(r.status == 400);
    CHECK_THAT(r.fault(), Catch::StartsWith("snapshot.mem_backend.backend_type:"));
    CHECK(api.call("GET", "/snapshot/load").status == 405);
    CHECK(api.call("PUT", "/entropy", json::object()).status == 400);
    // The query string is not part of the path.
    CHECK(api.call("GET", "/machine-config?x=1").status == 200);
}

TEST_CASE("API: malformed HTTP and oversized requests get a 4xx, and the server goes on serving", "[api]") {
    ApiServerOptions small;
    small.max_body_bytes = 1024;
    small.max_header_bytes = 512;
    Api api(small);
    {
        Client c(api.sock);
        c.send_raw("THIS IS NOT HTTP\r\n\r\n");
        const auto r = c.read_response();
        CHECK(r.status == 400);
        CHECK(r.fault().starts_with("malformed HTTP request"));
        CHECK(c.closed_by_server());
    }
    {
        Client c(api.sock);
        c.send_raw("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: zzz\r\n\r\n");
        CHECK(c.read_response().status == 400);
    }
    {
        Client c(api.sock);
        c.send_raw("PUT /boot-source HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + std::string(5000, ' '));
        const auto r = c.read_response();
        CHECK(r.status == 413);
        CHECK(r.fault() == "the request body is larger than the limit of 1024 bytes");
        CHECK(c.closed_by_server());
    }
    {
        Client c(api.sock);
        c.send_raw("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(2000, 'a') + "\r\n\r\n");
        const auto r = c.read_response();
        CHECK(r.status == 431);
    }
    {
        // Chunked bodies over the limit are refused too.
        Client c(api.sock);
        c.send_raw("PUT /boot-source HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" +
                   std::string(0x800, ' ') + "\r\n0\r\n\r\n");
        CHECK(c.read_response().status == 413);
    }
    // Still serving.
    CHECK(api.call("GET", "/").status == 200);
}

TEST_CASE("API: keep-alive connections and a silent client do not block others", "[api]") {
    ApiServerOptions quick;
    quick.idle_timeout = std::chrono::milliseconds(500);
    Api api(quick);
    Client silent(api.sock);  // connects and sends nothing
    Client partial(api.sock);
    partial.send_raw("PUT /machine-config HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"vcpu");  // never finished
    Client c(api.sock);
    for (int i = 0; i < 3; i++) CHECK(c.request("GET", "/").status == 200);  // one connection, three requests
    CHECK(c.request("PATCH", "/machine-config", R"({"vcpu_count": 2})").status == 204);
    CHECK(c.request("GET", "/machine-config").j()["vcpu_count"] == 2);
    // The idle ones are closed after the timeout.
    CHECK(silent.closed_by_server());
    CHECK(partial.closed_by_server());
}

TEST_CASE("API: request bodies must be JSON objects", "[api]") {
    Api api;
    auto r = api.call("PUT", "/machine-config", std::string("{\"vcpu_count\": 2,"));
    CHECK(r.status == 400);
    CHECK(r.fault().starts_with("machine-config: JSON syntax error at byte"));
    r = api.call("PUT", "/boot-source", std::string());
    CHECK(r.status == 400);
    CHECK(r.fault() == "boot-source: the request has no body (a JSON object is expected)");
    r = api.call("PUT", "/balloon", std::string("[1, 2]"));
    CHECK(r.status == 400);
    CHECK(r.fault().starts_with("balloon: expected a JSON object"));
    r = api.call("PUT", "/machine-config", std::string(R"({"vcpu_count": 1, "vcpu_count": 2})"));
    CHECK(r.status == 400);
    CHECK(r.fault() == "machine-config.vcpu_count: duplicate key");
    // The field named as the section parser names it ("drives.rootfs.path_on_host: ..."), as a
    // config file names it from the document's root ("drives[0].path_on_host: duplicate key").
    r = api.call("PUT", "/drives/rootfs",
                 std::string(R"({"drive_id": "rootfs", "path_on_host": "/a", "path_on_host": "/b"})"));
    CHECK(r.status == 400);
    CHECK(r.fault() == "drives.rootfs.path_on_host: duplicate key");
    r = api.call("PUT", "/balloon", std::string(R"({"amount_mib": 1, "x": {"y": 1, "y": 2}})"));
    CHECK(r.status == 400);
    CHECK(r.fault() == "balloon.x.y: duplicate key");
}

TEST_CASE("API: GET /vm/config with command-line paths that are not UTF-8", "[api]") {
    // A command line may give any bytes; JSON is UTF-8. Such bytes come back as \xHH (README).
    VmConfig config;
    config.boot_source = BootSourceConfig{"/boot/vmlinux\xff", std::nullopt, "console=ttyS0 tag=\xfe"};
    DriveConfig d;
    d.drive_id = "rootfs";
    d.path_on_host = "/var/tmp/disk\xff.img";
    config.drives.push_back(d);
    ApiController controller(config);
    const ApiResponse r = controller.handle(ApiRequest{"GET", "/vm/config", {}});
    REQUIRE(r.status == 200);
    const json j = json::parse(r.body);
    CHECK(j["boot-source"]["kernel_image_path"] == "/boot/vmlinux\\xff");
    CHECK(j["boot-source"]["boot_args"] == "console=ttyS0 tag=\\xfe");
    CHECK(j["drives"][0]["path_on_host"] == "/var/tmp/disk\\xff.img");
}

TEST_CASE("API: boot source and machine configuration", "[api]") {
    Api api;
    auto r = api.call("PUT", "/boot-source", json{{"kernel_image_path", "/nonexistent/vmlinux"}});
    CHECK(r.status == 400);
    CHECK(r.fault() == "boot-source.kernel_image_path: /nonexistent/vmlinux: No such file or directory");
    r = api.call("PUT", "/boot-source", json{{"kernel_image_path", "/"}, {"boot_args", "x"}});
    CHECK(r.status == 400);
    r = api.call("PUT", "/boot-source", json{{"kernel_path", "x"}});
    CHECK(r.status == 400);
    CHECK(r.fault().starts_with("boot-source.kernel_path: unknown key"));
    const std::string kernel = api.dir.make_file("vmlinux", 4096);
    r = api.call("PUT", "/boot-source", json{{"kernel_image_path", kernel}, {"boot_args", "console=ttyS0"}});
    CHECK(r.status == 204);
    CHECK(r.body.empty());

    r = api.call("GET", "/machine-config");
    REQUIRE(r.status == 200);
    CHECK(r.j()["vcpu_count"] == 1);
    CHECK(r.j()["mem_size_mib"] == 128);
    r = api.call("PUT", "/machine-config", json{{"vcpu_count", 0}, {"mem_size_mib", 256}});
    CHECK(r.status == 400);
    CHECK(r.fault().starts_with("machine-config.vcpu_count"));
    r = api.call("PUT", "/machine-config", json{{"vcpu_count", 2}, {"mem_size_mib", 256}});
    CHECK(r.status == 204);
    r = api.call("PATCH", "/machine-config", json{{"mem_size_mib", 64}});
    CHECK(r.status == 204);
    r = api.call("GET", "/machine-config");
    CHECK(r.j()["vcpu_count"] == 2);
    CHECK(r.j()["mem_size_mib"] == 64);
    r = api.call("PATCH", "/machine-config", json{{"mem_size_mib", "lots"}});
    CHECK(r.status == 400);
    CHECK(r.fault().starts_with("machine-config.mem_size_mib"));
    CHECK(api.call("GET", "/machine-config").j()["mem_size_mib"] == 64);  // unchanged by the failure

    const json cfg = api.call("GET", "/vm/config").j();
    CHECK(cfg["boot-source"]["kernel_image_path"] == kernel);
    CHECK(cfg["boot-source"]["boot_args"] == "console=ttyS0");
    CHECK(cfg["machine-config"]["vcpu_count"] == 2);
}

TEST_CASE("API: drives, network interfaces and the balloon before boot", "[api]") {
    Api api;
    const std::string img = api.dir.make_file("disk.img", 1 << 20);
    auto r = api.call("PUT", "/drives/rootfs",
                      json{{"drive_id", "other"}, {"path_on_host", img}, {"is_root_device", true}, {"is_read_only", false}});
    CHECK(r.status == 400);
    CHECK(r.fault() == "drives.rootfs.drive_id: 'other' does not match the id in the path ('rootfs')");
    r = api.call("PUT", "/drives/rootfs", json{{"drive_id", "rootfs"}, {"path_on_host", api.dir.file("missing.img")},
                                               {"is_root_device", true}, {"is_read_only", false}});
    CHECK(r.status == 400);
    CHECK(r.fault().find("No such file or directory") != std::string::npos);
    r = api.call("PUT", "/drives/rootfs",
                 json{{"drive_id", "rootfs"}, {"path_on_host", img}, {"is_root_device", true}, {"is_read_only", false}});
    CHECK(r.status == 204);
    // A second root device is refused; replacing the same id is not.
    const std::string img2 = api.dir.make_file("data.img", 1 << 20);
    r = api.call("PUT", "/drives/data",
                 json{{"drive_id", "data"}, {"path_on_host", img2}, {"is_root_device", true}, {"is_read_only", true}});
    CHECK(r.status == 400);
    r = api.call("PUT", "/drives/data",
                 json{{"drive_id", "data"}, {"path_on_host", img2}, {"is_root_device", false}, {"is_read_only", true}});
    CHECK(r.status == 204);
    r = api.call("PUT", "/drives/rootfs",
                 json{{"drive_id", "rootfs"}, {"path_on_host", img}, {"is_root_device", true}, {"is_read_only", true}});
    CHECK(r.status == 204);
    r = api.call("PUT", "/drives/bad", json{{"drive_id", "bad"}, {"path_on_host", img2}, {"is_root_device", false},
                                            {"is_read_only", false},
                                            {"rate_limiter", {{"ops", {{"size", 10}, {"refill_time", 0}}}}}});
    CHECK(r.status == 400);
    CHECK(r.fault() == "drives.bad.rate_limiter.ops.refill_time: must not be 0 when size is not 0 (size 0 means no limit)");
    r = api.call("PATCH", "/drives/rootfs", json{{"drive_id", "rootfs"}, {"path_on_host", img2}});
    CHECK(r.status == 400);
    CHECK(r.fault() == "PATCH /drives: not allowed before the microVM started (InstanceStart first)");

    r = api.call("PUT", "/network-interfaces/eth0",
                 json{{"iface_id", "eth0"}, {"host_dev_name", "tap0"}, {"guest_mac", "zz:00:00:00:00:01"}});
    CHECK(r.status == 400);
    CHECK(r.fault().starts_with("network-interfaces.eth0.guest_mac"));
    r = api.call("PUT", "/network-interfaces/eth0",
                 json{{"iface_id", "eth0"}, {"host_dev_name", "tap0"}, {"guest_mac", "06:00:00:00:00:01"}});
    CHECK(r.status == 204);
    r = api.call("PUT", "/network-interfaces/eth1",
                 json{{"iface_id", "eth1"}, {"host_dev_name", "tap0"}});  // the same TAP twice
    CHECK(r.status == 400);
    CHECK(api.call("PATCH", "/network-interfaces/eth0", json{{"iface_id", "eth0"}}).status == 400);

    r = api.call("GET", "/balloon");
    CHECK(r.status == 400);
    CHECK(r.fault() == "balloon: no balloon device is configured");
    r = api.call("PUT", "/balloon", json{{"amount_mib", 100000}, {"deflate_on_oom", true}});
    CHECK(r.status == 400);
    CHECK(r.fault().starts_with("balloon.amount_mib"));
    r = api.call("PUT", "/balloon", json{{"amount_mib", 16}, {"deflate_on_oom", true}, {"stats_polling_interval_s", 1}});
    CHECK(r.status == 204);
    r = api.call("PATCH", "/balloon", json{{"amount_mib", 32}});
    CHECK(r.status == 204);
    r = api.call("GET", "/balloon");
    CHECK(r.status == 200);
    CHECK(r.j()["amount_mib"] == 32);
    CHECK(r.j()["deflate_on_oom"] == true);
    CHECK(api.call("GET", "/balloon/statistics").status == 400);
    CHECK(api.call("PATCH", "/balloon/statistics", json{{"stats_polling_interval_s", 2}}).status == 400);

    CHECK(!api.call("GET", "/vm/config").j().contains("console"));  // the UART, as by default
    r = api.call("PUT", "/console", json{{"type", "hvc"}});
    CHECK(r.status == 400);
    CHECK(r.fault().starts_with("console.type"));
    CHECK(api.call("PUT", "/console", json{{"type", "virtio"}, {"input", "stdin"}}).status == 400);  // unknown key
    CHECK(api.call("GET", "/console").status == 405);
    CHECK(api.call("PUT", "/console", json{{"type", "virtio"}}).status == 204);

    CHECK(api.call("GET", "/vm/config").j()["enable_pci"] == false);
    r = api.call("PUT", "/pci", json{{"enable_pci", "yes"}});
    CHECK(r.status == 400);
    CHECK(r.fault().starts_with("pci.enable_pci"));
    CHECK(api.call("PUT", "/pci", json{{"enable", true}}).status == 400);  // unknown key
    CHECK(api.call("GET", "/pci").status == 405);
    CHECK(api.call("PUT", "/pci", json{{"enable_pci", true}}).status == 204);
    CHECK(api.call("GET", "/vm/config").j()["enable_pci"] == true);
    CHECK(api.call("PUT", "/pci", json{{"enable_pci", false}}).status == 204);

    r = api.call("PUT", "/vsock", json::object());
    CHECK(r.status == 400);
    CHECK(r.fault().starts_with("vsock.guest_cid"));
    r = api.call("PUT", "/vsock", json{{"guest_cid", 2}, {"uds_path", "/tmp/v.sock"}});
    CHECK(r.status == 400);
    CHECK(r.fault().starts_with("vsock.guest_cid"));
    r = api.call("PUT", "/vsock", json{{"guest_cid", 3}, {"uds_path", ""}});
    CHECK(r.fault().starts_with("vsock.uds_path"));
    CHECK(api.call("GET", "/vsock").status == 405);
    // Firecracker's deprecated vsock_id is accepted.
    CHECK(api.call("PUT", "/vsock", json{{"vsock_id", "vsock0"}, {"guest_cid", 3}, {"uds_path", "/tmp/v.sock"}}).status == 204);

    // virtio-fs devices by tag (an embervm extension).
    CHECK(!api.call("GET", "/vm/config").j().contains("fs"));
    r = api.call("PUT", "/fs/share", json{{"tag", "share"}});
    CHECK(r.status == 400);
    CHECK(r.fault().starts_with("fs.share.socket"));
    r = api.call("PUT", "/fs/share", json{{"tag", "other"}, {"socket", "/tmp/fs.sock"}});
    CHECK(r.status == 400);
    CHECK(r.fault().starts_with("fs.share.tag: 'other' does not match"));
    r = api.call("PUT", "/fs/share", json{{"tag", "share"}, {"socket", "/tmp/fs.sock"}, {"queue_size", 1000}});
    CHECK(r.fault().starts_with("fs.share.queue_size"));
    r = api.call("PUT", "/fs/" + std::string(37, 't'), json{{"tag", std::string(37, 't')}, {"socket", "/tmp/fs.sock"}});
    CHECK(r.status == 400);
    CHECK_THAT(r.fault(), Catch::StartsWith("fs.") && Catch::Contains(".tag: longer than 36 bytes"));
    CHECK(api.call("GET", "/fs/share").status == 405);
    CHECK(api.call("PUT", "/fs/share", json{{"tag", "share"}, {"socket", "/tmp/a.sock"}}).status == 204);
    // The body names its tag (required, as drive_id is); the same tag again replaces the entry.
    CHECK(api.call("PUT", "/fs/share", json{{"socket", "/tmp/fs.sock"}, {"num_request_queues", 1}}).status == 400);
    CHECK(api.call("PUT", "/fs/share", json{{"tag", "share"}, {"socket", "/tmp/fs.sock"}}).status == 204);

    const json cfg = api.call("GET", "/vm/config").j();
    CHECK(cfg["fs"] == json::array({json{{"tag", "share"}, {"socket", "/tmp/fs.sock"}, {"num_request_queues", 1},
                                         {"queue_size", 1024}}}));
    CHECK(cfg["vsock"] == json{{"guest_cid", 3}, {"uds_path", "/tmp/v.sock"}});
    CHECK(cfg["console"]["type"] == "virtio");
    REQUIRE(cfg["drives"].size() == 2);
    CHECK(cfg["drives"][0]["drive_id"] == "rootfs");
    CHECK(cfg["drives"][0]["is_read_only"] == true);
    CHECK(cfg["drives"][1]["drive_id"] == "data");
    CHECK(cfg["network-interfaces"][0]["guest_mac"] == "06:00:00:00:00:01");
    CHECK(cfg["balloon"]["amount_mib"] == 32);
}

TEST_CASE("API: actions and run-time requests before boot are refused", "[api]") {
    Api api;
    auto r = api.call("PUT", "/actions", json{{"action_type", "Reboot"}});
    CHECK(r.status == 400);
    CHECK(r.fault().starts_with("actions.action_type"));
    r = api.call("PUT", "/actions", json::object());
    CHECK(r.status == 400);
    r = api.call("PUT", "/actions", json{{"action_type", "InstanceStart"}});
    CHECK(r.status == 400);
    CHECK(r.fault().find("boot-source") != std::string::npos);
    r = api.call("PUT", "/actions", json{{"action_type", "SendCtrlAltDel"}});
    CHECK(r.status == 400);
    CHECK(r.fault() == "SendCtrlAltDel: not allowed before the microVM started (InstanceStart first)");
    r = api.call("PUT", "/actions", json{{"action_type", "FlushMetrics"}});
    CHECK(r.status == 400);
    r = api.call("PATCH", "/vm", json{{"state", "Paused"}});
    CHECK(r.status == 400);
    r = api.call("PATCH", "/vm", json{{"state", "Frozen"}});
    CHECK(r.status == 400);
    CHECK(r.fault().starts_with("vm.state"));
    // A kernel that is not one: InstanceStart fails with 400, and the VM can still be configured.
    const std::string junk = api.dir.make_file("junk", 8192);
    CHECK(api.call("PUT", "/boot-source", json{{"kernel_image_path", junk}}).status == 204);
    r = api.call("PUT", "/actions", json{{"action_type", "InstanceStart"}});
    CHECK(r.status == 400);
    CHECK(r.fault().starts_with("InstanceStart: "));
    CHECK(api.call("GET", "/").j()["state"] == "Not started");
    CHECK(api.call("PUT", "/machine-config", json{{"vcpu_count", 1}, {"mem_size_mib", 64}}).status == 204);
}

TEST_CASE("API: the socket path", "[api]") {
    TempDir dir;
    const auto handler = [](const ApiRequest&) { return ApiResponse{200, "{}"}; };
    const std::string sock = dir.file("s");
    {
        ApiServer a(sock, handler);
        a.start();
        struct stat st {};
        REQUIRE(::stat(sock.c_str(), &st) == 0);
        CHECK((st.st_mode & 0777) == 0600);
        // A live socket is not taken over.
        CHECK_THROWS_WITH(ApiServer(sock, handler), Catch::Contains("another process is serving on it"));
        a.stop();
        CHECK_FALSE(fs::exists(sock));
    }
    // A stale socket (its server gone without removing it) is replaced.
    {
        const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strcpy(addr.sun_path, sock.c_str());
        REQUIRE(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
        ::close(fd);
        ApiServer b(sock, handler);
        b.start();
        Client c(sock);
        CHECK(c.request("GET", "/").status == 200);
    }
    const std::string regular = dir.make_file("regular");
    CHECK_THROWS_WITH(ApiServer(regular, handler), Catch::Contains("a file that is not a socket is in the way"));
    CHECK_THROWS_WITH(ApiServer("/tmp/" + std::string(200, 'x'), handler), Catch::Contains("path longer than"));
    CHECK_THROWS_WITH(ApiServer(dir.file("no/such/dir/s"), handler), Catch::Contains("API socket"));
}

TEST_CASE("API: a handler that throws gives 500 and the server goes on", "[api]") {
    TempDir dir;
    const std::string sock = dir.file("s");
    ApiServer s(sock, [](const ApiRequest& r) -> ApiResponse {
        if (r.target == "/boom") throw std::runtime_error("boom");
        return ApiResponse{200, "{}"};
    });
    s.start();
    Client c(sock);
    const auto r = c.request("GET", "/boom");
    CHECK(r.status == 500);
    CHECK(r.fault() == "internal error: boom");
    CHECK(c.request("GET", "/").status == 200);
}

TEST_CASE("API: a guest booted, paused, resumed and ended through the API", "[api][guest]") {
    const std::string ticker = guest_path("EMBERVM_TEST_GUEST_TICKER");
    Api api;
    REQUIRE(api.call("PUT", "/boot-source", json{{"kernel_image_path", ticker}}).status == 204);
    REQUIRE(api.call("PUT", "/machine-config", json{{"vcpu_count", 1}, {"mem_size_mib", 32}}).status == 204);
    const std::string img1 = api.dir.make_file("one.img", 1 << 20);
    const std::string img2 = api.dir.make_file("two.img", 2 << 20);
    const std::string metrics = api.dir.file("metrics.json");
    REQUIRE(api.call("PUT", "/drives/data", json{{"drive_id", "data"}, {"path_on_host", img1},
                                                 {"is_root_device", false}, {"is_read_only", false}})
                .status == 204);
    REQUIRE(api.call("PUT", "/balloon", json{{"amount_mib", 0}, {"deflate_on_oom", false},
                                             {"stats_polling_interval_s", 1}})
                .status == 204);
    REQUIRE(api.call("PUT", "/metrics", json{{"metrics_path", metrics}, {"interval_s", 0}}).status == 204);
    REQUIRE(api.call("PUT", "/actions", json{{"action_type", "InstanceStart"}}).status == 204);
    CHECK(api.call("GET", "/").j()["state"] == "Running");
    REQUIRE(wait_until([&] { return count_ticks(api.console) >= 3; }, std::chrono::seconds(20)));

    // Pre-boot-only requests are refused now.
    auto r = api.call("PUT", "/boot-source", json{{"kernel_image_path", ticker}});
    CHECK(r.status == 400);
    CHECK(r.fault() == "PUT /boot-source: not allowed after the microVM started (pre-boot only)");
    CHECK(api.call("PUT", "/machine-config", json{{"vcpu_count", 2}, {"mem_size_mib", 32}}).status == 400);
    CHECK(api.call("PUT", "/actions", json{{"action_type", "InstanceStart"}}).status == 400);
    CHECK(api.call("GET", "/machine-config").j()["mem_size_mib"] == 32);
    CHECK(api.call("PUT", "/drives/x", json{{"drive_id", "x"}, {"path_on_host", img2}, {"is_root_device", false},
                                            {"is_read_only", false}})
              .status == 400);
    CHECK(api.call("PUT", "/balloon", json{{"amount_mib", 1}}).status == 400);
    CHECK(api.call("PUT", "/metrics", json{{"metrics_path", metrics}}).status == 400);
    r = api.call("PUT", "/fs/share", json{{"tag", "share"}, {"socket", api.dir.file("fs.sock")}});
    CHECK(r.status == 400);
    CHECK(r.fault() == "PUT /fs: not allowed after the microVM started (pre-boot only)");

    // Run-time requests: a drive's image swapped, the balloon target and statistics interval.
    r = api.call("PATCH", "/drives/data", json{{"drive_id", "data"}, {"path_on_host", api.dir.file("nope.img")}});
    CHECK(r.status == 400);
    CHECK(r.fault().starts_with("drives.data.path_on_host"));
    r = api.call("PATCH", "/drives/nosuch", json{{"drive_id", "nosuch"}, {"path_on_host", img2}});
    CHECK(r.status == 400);
    CHECK(r.fault() == "drives.nosuch: no such drive");
    CHECK(api.call("PATCH", "/drives/data", json{{"drive_id", "data"}, {"path_on_host", img2}}).status == 204);
    CHECK(api.call("GET", "/vm/config").j()["drives"][0]["path_on_host"] == img2);
    // One run-time configuration: the library's Vm shows the API's swap, the API shows a swap
    // and a balloon target set through the library.
    auto running = api.controller->vm();
    REQUIRE(running);
    CHECK(running->config().drives[0].path_on_host == img2);
    running->update_drive("data", img1);
    CHECK(running->config().drives[0].path_on_host == img1);
    CHECK(api.call("GET", "/vm/config").j()["drives"][0]["path_on_host"] == img1);
    CHECK(api.call("PATCH", "/drives/data", json{{"drive_id", "data"}}).status == 204);  // nothing to change
    REQUIRE(running->set_balloon_target_mib(4));
    CHECK(api.call("GET", "/balloon").j()["amount_mib"] == 4);
    CHECK(api.call("PATCH", "/balloon", json{{"amount_mib", 8}}).status == 204);
    CHECK(api.call("GET", "/balloon").j()["amount_mib"] == 8);
    CHECK(running->config().balloon->amount_mib == 8);
    r = api.call("PATCH", "/balloon", json{{"amount_mib", 33}});
    CHECK(r.status == 400);
    CHECK(r.fault().starts_with("balloon.amount_mib"));
    r = api.call("GET", "/balloon/statistics");  // the ticker has no balloon driver
    CHECK(r.status == 400);
    CHECK(r.fault() == "balloon: the guest has not reported statistics yet");
    CHECK(api.call("PATCH", "/balloon/statistics", json{{"stats_polling_interval_s", 2}}).status == 204);
    CHECK(api.call("GET", "/balloon").j()["stats_polling_interval_s"] == 2);
    CHECK(api.call("PATCH", "/balloon/statistics", json{{"stats_polling_interval_s", 0}}).status == 400);

    // FlushMetrics: a line with the vCPU's exits.
    REQUIRE(api.call("PUT", "/actions", json{{"action_type", "FlushMetrics"}}).status == 204);
    {
        std::ifstream in(metrics);
        std::string line, last;
        while (std::getline(in, line)) last = line;
        REQUIRE_FALSE(last.empty());
        const json m = json::parse(last);
        CHECK(m.contains("utc_timestamp_ms"));
        CHECK(m.dump().find("\"exits\"") != std::string::npos);
    }

    // Paused: the guest makes no progress.
    REQUIRE(api.call("PATCH", "/vm", json{{"state", "Paused"}}).status == 204);
    CHECK(api.call("GET", "/").j()["state"] == "Paused");
    const size_t at_pause = count_ticks(api.console);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    const size_t after_wait = count_ticks(api.console);
    CHECK(after_wait <= at_pause + 1);  // at most a line that was being written
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    CHECK(count_ticks(api.console) == after_wait);
    CHECK(api.call("PATCH", "/vm", json{{"state", "Paused"}}).status == 204);  // idempotent

    REQUIRE(api.call("PATCH", "/vm", json{{"state", "Resumed"}}).status == 204);
    CHECK(api.call("GET", "/").j()["state"] == "Running");
    CHECK(wait_until([&] { return count_ticks(api.console) >= after_wait + 5; }, std::chrono::seconds(20)));

    // Ctrl-Alt-Del: the ticker resets the machine when it sees it; the VM ends.
    REQUIRE(api.call("PUT", "/actions", json{{"action_type", "SendCtrlAltDel"}}).status == 204);
    auto vm = api.controller->vm();
    REQUIRE(vm);
    CHECK(wait_until([&] { return vm->state() == VmState::Ended; }, std::chrono::seconds(20)));
    const VmExit exit = vm->wait();
    CHECK(exit.reason == VmExit::Reason::GuestReset);
    CHECK(exit.status == 0);
    std::ifstream in(api.console);
    const std::string console((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(console.find("ticker: ctrl-alt-del") != std::string::npos);
    CHECK(api.call("GET", "/").j()["state"] == "Halted");
    r = api.call("PATCH", "/vm", json{{"state", "Paused"}});
    CHECK(r.status == 400);
    // No drive swap once the VM ended; the configuration keeps the image the VM ended with.
    CHECK_THROWS_WITH(vm->update_drive("data", img2), Catch::Contains("drives.data: the VM is not running"));
    CHECK(api.call("GET", "/vm/config").j()["drives"][0]["path_on_host"] == img1);
}

TEST_CASE("API: Debian's stock kernel powers off through ACPI; GET / shows it Halted", "[api][guest][debian]") {
    // The kernel and initramfs of the linux-debian-* tests (scripts/test exports both).
    const char* kernel = std::getenv("EMBERVM_TEST_DEBIAN_BZIMAGE");
    const char* initrd = std::getenv("EMBERVM_TEST_DEBIAN_INITRAMFS");
    if (kernel == nullptr || initrd == nullptr) {
        FAIL("EMBERVM_TEST_DEBIAN_BZIMAGE / EMBERVM_TEST_DEBIAN_INITRAMFS are not set (scripts/test sets them)");
    }
    Api api;
    REQUIRE(api.call("PUT", "/boot-source",
                     json{{"kernel_image_path", kernel}, {"initrd_path", initrd},
                          {"boot_args", "console=ttyS0 panic=-1 gtest=poweroff"}})
                .status == 204);
    REQUIRE(api.call("PUT", "/machine-config", json{{"vcpu_count", 1}, {"mem_size_mib", 512}}).status == 204);
    CHECK(api.call("GET", "/machine-config").j()["acpi"] == true);  // the default
    CHECK(api.call("GET", "/vm/config").j()["machine-config"]["acpi"] == true);
    REQUIRE(api.call("PUT", "/actions", json{{"action_type", "InstanceStart"}}).status == 204);
    auto vm = api.controller->vm();
    REQUIRE(vm);
    // About 30 s in the nested-KVM VM; the guest's /init ends with `poweroff -f`.
    REQUIRE(wait_until([&] { return vm->state() == VmState::Ended; }, std::chrono::seconds(300)));
    const VmExit exit = vm->wait();
    CHECK(exit.reason == VmExit::Reason::GuestShutdown);
    CHECK(exit.detail == "ACPI S5");
    CHECK(exit.status == 0);
    CHECK(api.call("GET", "/").j()["state"] == "Halted");
    std::ifstream in(api.console);
    const std::string console((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(console.find("reboot: Power down") != std::string::npos);
}
