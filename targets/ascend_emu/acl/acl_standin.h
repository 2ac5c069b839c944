// tbc's stand-in for the Ascend runtime (ACL) and the aclnn operators it calls, over host
// memory: what `tbc compile --target ascend` trainers run on tbc's CPU emulation, so the
// trainer's real Ascend device code (runtime/src/device/ascend/) is exercised without an NPU.
// The calls have CANN 8/9's C signatures; "device" memory is host memory that the stand-in
// tracks, so copies in the wrong direction, ranges past an allocation and unknown pointers are
// errors (status != 0, the message through aclGetRecentErrMsg), never silent.
//
// Three libraries, as CANN ships them: libascendcl.so (devices, streams, memory; this header's
// tbc_standin_* helpers), libnnopbase.so (tensor and scalar descriptors), libopapi.so (the
// operators, run at once: the stream is in order by construction).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

extern "C" {
typedef int aclError;
typedef void* aclrtStream;
// Records the message aclGetRecentErrMsg returns next; returns `code`.
int tbc_standin_fail(int code, const char* message);
// Whether [p, p + bytes) lies in one live device allocation.
bool tbc_standin_is_device(const void* p, size_t bytes);
// Whether `s` is a live stream.
bool tbc_standin_is_stream(aclrtStream s);
}

namespace tbc_standin {

enum DataType { FLOAT = 0, FLOAT16 = 1, INT32 = 3, INT64 = 9, BF16 = 27 };

inline size_t ElemBytes(int t) {
    switch (t) {
        case FLOAT: case INT32: return 4;
        case FLOAT16: case BF16: return 2;
        case INT64: return 8;
        default: return 0;
    }
}

struct Tensor {
    std::vector<int64_t> dims, strides;
    int64_t offset;
    int dtype;
    std::vector<int64_t> storage;
    void* data;

    int64_t Numel() const {
        int64_t n = 1;
        for (auto d : dims) n *= d;
        return n;
    }
    // Elements of storage the view may touch.
    int64_t StorageElems() const {
        int64_t n = 1;
        for (auto d : storage) n *= d;
        return n;
    }
    std::string Describe() const {
        std::string s = "[";
        for (size_t i = 0; i < dims.size(); i++) s += (i ? "," : "") + std::to_string(dims[i]);
        return s + "] dtype " + std::to_string(dtype);
    }
};

struct Scalar {
    double value;
    int dtype;
};

}  // namespace tbc_standin
