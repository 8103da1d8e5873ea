// open_block_backend: opens and locks a raw image, then puts the engine asked for on it.
#include "virtio/block/backend.h"

#include "virtio/block/image_file.h"
#include "virtio/block/sync_engine.h"
#include "virtio/block/uring_engine.h"

namespace embervm::virtio::block {

std::unique_ptr<BlockBackend> open_block_backend(const std::string& path, bool read_only, IoEngine engine,
                                                 unsigned queue_depth) {
    ImageFile image = ImageFile::open(path, read_only);
    if (engine == IoEngine::Async) {
        return std::make_unique<UringBackend>(std::move(image), queue_depth);
    }
    return std::make_unique<SyncBackend>(std::move(image));
}

}  // namespace embervm::virtio::block
