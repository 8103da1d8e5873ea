// The backend side's sendmsg in the vhost-user tests and fuzz target: bytes with at most one
// descriptor attached (SCM_RIGHTS), as a backend sends a reply.
#pragma once

#include "vmm/sys/fd_passing.h"

namespace embervm::test::vhost_user {

// One sendmsg of `bytes` on `sock` with `fd` attached (none when fd < 0); its result.
using embervm::send_with_fd;

}  // namespace embervm::test::vhost_user
