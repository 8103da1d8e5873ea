// -Dstatic=true only (vmm/sys/meson.build): Debian ships fmt as a shared library alone, so the
// statically linked build compiles the few functions of fmt that are not inline here, from fmt's
// own header that defines them (vformat, vprint and their helpers), plus the two locale helpers
// that fmt's headers declare for char but leave to the library to instantiate.
#include <fmt/format-inl.h>

namespace fmt::detail {
template auto thousands_sep_impl<char>(locale_ref) -> thousands_sep_result<char>;
template auto decimal_point_impl<char>(locale_ref) -> char;
}  // namespace fmt::detail
