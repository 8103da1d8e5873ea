// The API's HTTP/1.1 server on a Unix socket (Boost.Beast): connections, framing, limits.
#include "vmm/api/api_server.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <future>
#include <list>
#include <optional>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "vmm/sys/error.h"
#include "vmm/sys/fd.h"
#include "vmm/sys/log.h"
#include "vmm/sys/log_limiter.h"
#include "vmm/sys/seccomp.h"
#include "vmm/sys/unix_socket.h"

namespace embervm::vmm {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using local = asio::local::stream_protocol;

ApiResponse api_fault(unsigned status, std::string_view message) {
    // The message may quote the request's own bytes (a path, a JSON syntax error), which need
    // not be UTF-8: those become U+FFFD rather than an exception from dump().
    return ApiResponse{status, nlohmann::json{{"fault_message", message}}.dump(
                                   -1, ' ', false, nlohmann::json::error_handler_t::replace)};
}

struct ApiServer::Impl {
    class Session;
    std::string path;
    Handler handler;
    ApiServerOptions options;
    size_t connections = 0;  // on the server thread only (before io: sessions die with io)
    // Sessions waiting for (the rest of) a request, longest waiting first: at the connection
    // limit the first is closed to make room for a new client (a slow or silent client must not
    // lock others out). On the server thread only.
    std::list<Session*> waiting;
    log::Limiter eviction_log;
    uint64_t evictions = 0;
    asio::io_context io;
    local::acceptor acceptor{io};
    std::thread thread;
    bool started = false;
    bool stopped = false;

    void accept();
};

// One connection: read a request, answer it, repeat while the client keeps the connection.
class ApiServer::Impl::Session : public std::enable_shared_from_this<Session> {
public:
    Session(Impl& server, local::socket socket) : server_(server), socket_(std::move(socket)), timer_(server.io) {
        ++server_.connections;
    }
    ~Session() {
        stop_waiting();
        --server_.connections;
    }

    // Closes the connection of a client that has not sent a whole request (to make room).
    void evict() {
        stop_waiting();
        boost::system::error_code ignored;
        socket_.close(ignored);  // fails the pending read
    }

    void read() {
        stop_waiting();
        waiting_ = server_.waiting.insert(server_.waiting.end(), this);
        parser_.emplace();
        parser_->body_limit(server_.options.max_body_bytes);
        parser_->header_limit(static_cast<uint32_t>(server_.options.max_header_bytes));
        arm_timer();
        http::async_read(socket_, buffer_, *parser_,
                         [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
    }

private:
    void arm_timer() {
        timer_.expires_after(server_.options.idle_timeout);
        timer_.async_wait([weak = weak_from_this()](const boost::system::error_code& ec) {
            if (ec) return;
            if (auto self = weak.lock()) {
                boost::system::error_code ignored;
                self->socket_.close(ignored);  // fails the pending read or write
            }
        });
    }

    void stop_waiting() {
        if (waiting_) server_.waiting.erase(*waiting_);
        waiting_.reset();
    }

    void on_read(beast::error_code ec) {
        timer_.cancel();
        stop_waiting();
        if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::operation_aborted ||
            ec == asio::error::connection_reset || ec == asio::error::bad_descriptor) {
            return;  // the client left (or the idle timer closed the socket)
        }
        if (ec == http::error::partial_message && buffer_.size() == 0 && !parser_->got_some()) return;
        if (ec) {
            // The request could not be read: answer if the socket still works, then close.
            if (ec == http::error::body_limit) {
                reply(api_fault(413, fmt::format("the request body is larger than the limit of {} bytes",
                                                 server_.options.max_body_bytes)),
                      false);
            } else if (ec == http::error::header_limit) {
                reply(api_fault(431, fmt::format("the request header is larger than the limit of {} bytes",
                                                 server_.options.max_header_bytes)),
                      false);
            } else {
                reply(api_fault(400, fmt::format("malformed HTTP request: {}", ec.message())), false);
            }
            return;
        }
        http::request<http::string_body> req = parser_->release();
        const bool keep_alive = req.keep_alive();
        ApiRequest request{std::string(req.method_string()), std::string(req.target()), std::move(req.body())};
        ApiResponse response;
        try {
            response = server_.handler(request);
        } catch (const std::exception& e) {
            log::error("API: {} {}: {}", request.method, request.target, e.what());
            response = api_fault(500, fmt::format("internal error: {}", e.what()));
        }
        log::debug("API: {} {} -> {}", request.method, request.target, response.status);
        reply(std::move(response), keep_alive);
    }

    void reply(ApiResponse response, bool keep_alive) {
        auto res = std::make_shared<http::response<http::string_body>>();
        res->version(11);
        res->result(response.status);
        res->set(http::field::server, "embervm");
        if (!response.body.empty()) res->set(http::field::content_type, "application/json");
        res->body() = std::move(response.body);
        res->keep_alive(keep_alive);
        res->prepare_payload();
        arm_timer();
        http::async_write(socket_, *res, [self = shared_from_this(), res, keep_alive](beast::error_code ec, size_t) {
            self->timer_.cancel();
            if (ec || !keep_alive) {
                boost::system::error_code ignored;
                self->socket_.shutdown(local::socket::shutdown_both, ignored);
                self->socket_.close(ignored);
                return;
            }
            self->read();
        });
    }

    Impl& server_;
    local::socket socket_;
    asio::steady_timer timer_;
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
    std::optional<std::list<Session*>::iterator> waiting_;  // in server_.waiting while reading
};

void ApiServer::Impl::accept() {
    acceptor.async_accept([this](const boost::system::error_code& ec, local::socket socket) {
        if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
        if (ec) {
            log::warn("API: accept failed: {}", ec.message());
        } else if (connections >= options.max_connections && waiting.empty()) {
            log::warn("API: {} connections open already, each with a request in progress; closing a new one",
                      connections);
        } else {
            if (connections >= options.max_connections) {
                // The connection that has waited longest for a request goes (its client was
                // silent or slow; the evicted sessions are freed as their reads fail).
                waiting.front()->evict();
                ++evictions;
                uint64_t not_logged = 0;
                if (eviction_log.admit(&not_logged)) {
                    log::warn("API: {} connections open (the limit); closed the one waiting longest for a request "
                              "({} such closes so far)", connections, evictions);
                }
            }
            std::make_shared<Session>(*this, std::move(socket))->read();
        }
        accept();
    });
}

ApiServer::ApiServer(std::string socket_path, Handler handler, ApiServerOptions options)
    : impl_(std::make_unique<Impl>()) {
    impl_->path = std::move(socket_path);
    impl_->handler = std::move(handler);
    impl_->options = options;
    const std::string& path = impl_->path;
    // Created 0600 (only the owner may drive the VM), and the path appears already listening.
    FileDescriptor fd = listen_unix_socket(path, "API", asio::socket_base::max_listen_connections, 0600, false);
    boost::system::error_code ec;
    impl_->acceptor.assign(local(), fd.get(), ec);
    if (ec) throw Error(fmt::format("API socket {}: {}", path, ec.message()));
    fd.release();
}

ApiServer::~ApiServer() { stop(); }

void ApiServer::start() {
    if (impl_->started) throw Error("ApiServer::start: started already");
    impl_->started = true;
    impl_->accept();
    std::promise<std::exception_ptr> filtered;
    impl_->thread = std::thread([impl = impl_.get(), &filtered] {
        log::set_thread_name("api");
        if (impl->options.seccomp) {
            try {
                seccomp::install_on_this_thread(seccomp::ThreadKind::Api);
            } catch (...) {
                filtered.set_value(std::current_exception());
                return;
            }
        }
        filtered.set_value(nullptr);
        seccomp::forbidden_call_for_test(seccomp::ThreadKind::Api);
        try {
            impl->io.run();
        } catch (const std::exception& e) {
            log::error("API server stopped: {}", e.what());
        }
    });
    if (const std::exception_ptr error = filtered.get_future().get()) {
        impl_->thread.join();
        std::rethrow_exception(error);
    }
    log::info("API: serving on {}", impl_->path);
}

void ApiServer::stop() {
    if (impl_->stopped) return;
    impl_->stopped = true;
    asio::post(impl_->io, [impl = impl_.get()] {
        boost::system::error_code ignored;
        impl->acceptor.close(ignored);
        impl->io.stop();  // drops the sessions' pending operations (and with them the sessions)
    });
    if (impl_->thread.joinable()) impl_->thread.join();
    ::unlink(impl_->path.c_str());
}

const std::string& ApiServer::socket_path() const { return impl_->path; }

}  // namespace embervm::vmm
