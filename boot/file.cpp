// Reading kernel and initrd files into memory, with errors that name the file and errno.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>

#include "boot/boot.h"
#include "vmm/sys/error.h"
#include "vmm/sys/fd.h"

namespace embervm::boot {

std::vector<uint8_t> read_file(const std::string& path, std::string_view what) {
    FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        throw sys_error(fmt::format("{} {}: open", what, path));
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
        throw sys_error(fmt::format("{} {}: fstat", what, path));
    }
    if (S_ISDIR(st.st_mode)) {
        throw Error(fmt::format("{} {}: is a directory, expected a file", what, path));
    }

    std::vector<uint8_t> data;
    if (S_ISREG(st.st_mode)) {
        data.reserve(static_cast<size_t>(st.st_size));
    }
    constexpr size_t kChunk = size_t{1} << 20;
    size_t used = 0;
    for (;;) {
        data.resize(used + kChunk);
        const ssize_t n = ::read(fd.get(), data.data() + used, kChunk);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw sys_error(fmt::format("{} {}: read at offset {}", what, path, used));
        }
        if (n == 0) {
            break;
        }
        used += static_cast<size_t>(n);
    }
    data.resize(used);
    return data;
}

FileImage::FileImage(const std::string& path, std::string_view what) {
    FileDescriptor& fd = fd_;
    fd = FileDescriptor(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
        throw sys_error(fmt::format("{} {}: open", what, path));
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
        throw sys_error(fmt::format("{} {}: fstat", what, path));
    }
    if (S_ISREG(st.st_mode) && st.st_size > 0) {
        // No MAP_POPULATE: the loaders look only at headers through the mapping and read what
        // goes into guest memory with pread (BootOptions::kernel_fd), so most pages of the
        // mapping are never touched and never read.
        void* p = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd.get(), 0);
        if (p != MAP_FAILED) {
            data_ = static_cast<const uint8_t*>(p);
            size_ = static_cast<size_t>(st.st_size);
            mapped_ = true;
            return;
        }
    }
    fd = FileDescriptor();
    copy_ = read_file(path, what);
    data_ = copy_.data();
    size_ = copy_.size();
}

FileImage::~FileImage() {
    if (mapped_) {
        ::munmap(const_cast<uint8_t*>(data_), size_);
    }
}

}  // namespace embervm::boot
