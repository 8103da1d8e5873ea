// A private temporary directory for a test, removed with everything in it at the end: under
// $TMPDIR, else /tmp (a file system that takes Unix sockets, which the API tests need).
#pragma once

#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include <catch2/catch.hpp>

namespace embervm::test {

class TempDir {
public:
    TempDir() {
        const char* base = std::getenv("TMPDIR");
        std::string tmpl = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/embervm-test-XXXXXX";
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        path_ = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    const std::string& path() const { return path_; }
    // The path of `name` inside it (not created).
    std::string file(const std::string& name) const { return path_ + "/" + name; }
    // Creates (or replaces) `name` holding `content`; returns its path.
    std::string write(const std::string& name, const std::string& content) const {
        const std::string p = file(name);
        std::ofstream out(p, std::ios::binary | std::ios::trunc);
        out << content;
        out.close();
        REQUIRE(out.good());
        return p;
    }
    // Creates (or replaces) `name` as a file of `size` zero bytes (sparse); returns its path.
    std::string make_file(const std::string& name, uint64_t size = 0) const {
        const std::string p = write(name, "");
        std::filesystem::resize_file(p, size);
        return p;
    }

private:
    std::string path_;
};

}  // namespace embervm::test
