// Replays fuzz inputs without libFuzzer: runs LLVMFuzzerTestOneInput once on every file of the
// directories (and files) given, so the seed corpus and every input that once crashed a target
// are run by the ordinary build's tests, under whichever sanitizers that build has.
//
//   fuzz-replay-NAME DIR_OR_FILE...
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

bool replay(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "fuzz-replay: cannot read %s\n", file.c_str());
    return false;
  }
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR_OR_FILE...\n", argv[0]);
    return 2;
  }
  size_t inputs = 0;
  for (int i = 1; i < argc; ++i) {
    std::filesystem::path arg(argv[i]);
    std::error_code ec;
    if (std::filesystem::is_directory(arg, ec)) {
      std::vector<std::filesystem::path> files;
      for (const auto& entry : std::filesystem::directory_iterator(arg))
        if (entry.is_regular_file()) files.push_back(entry.path());
      std::sort(files.begin(), files.end());
      for (const auto& f : files) {
        if (!replay(f)) return 1;
        ++inputs;
      }
    } else if (std::filesystem::is_regular_file(arg, ec)) {
      if (!replay(arg)) return 1;
      ++inputs;
    }
    // A missing directory is allowed (a target without regressions yet); the count below
    // says how many inputs ran.
  }
  if (inputs == 0) {
    std::fprintf(stderr, "fuzz-replay: no input found in the given paths: nothing was tested\n");
    return 1;
  }
  std::printf("fuzz-replay: %zu inputs replayed without a crash\n", inputs);
  return 0;
}
