// libascendcl.so of tbc's ACL stand-in (see acl_standin.h): one device, streams, device memory
// as tracked host allocations, copies with their direction checked.
#include "acl_standin.h"

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>

namespace {
std::mutex mu;
std::map<uintptr_t, size_t> allocations;  // start -> bytes
std::set<aclrtStream> streams;
std::string last_error;
bool initialized = false;
int device = -1;

// The allocation holding [p, p + bytes), if any.
bool InDevice(const void* p, size_t bytes) {
    auto a = reinterpret_cast<uintptr_t>(p);
    auto it = allocations.upper_bound(a);
    if (it == allocations.begin()) return false;
    --it;
    return a >= it->first && a + bytes <= it->first + it->second;
}

int Fail(int code, const std::string& m) {
    last_error = "tbc ACL stand-in: " + m;
    return code;
}

constexpr int kInvalidParam = 100000;
constexpr int kUninitialized = 100001;
constexpr int kBadAlloc = 200000;
constexpr int kInvalidDevice = 107001;
enum { HOST_TO_HOST, HOST_TO_DEVICE, DEVICE_TO_HOST, DEVICE_TO_DEVICE };

int CheckReady(const char* call) {
    if (!initialized) return Fail(kUninitialized, std::string(call) + " before aclInit");
    if (device < 0) return Fail(kInvalidDevice, std::string(call) + " before aclrtSetDevice");
    return 0;
}

int Copy(void* dst, size_t destMax, const void* src, size_t count, int kind, const char* call) {
    if (int e = CheckReady(call)) return e;
    if (count > destMax)
        return Fail(kInvalidParam, std::string(call) + ": count " + std::to_string(count) +
                                       " exceeds destMax " + std::to_string(destMax));
    if (count == 0) return 0;
    if (!dst || !src) return Fail(kInvalidParam, std::string(call) + ": null pointer");
    bool dst_dev = kind == HOST_TO_DEVICE || kind == DEVICE_TO_DEVICE;
    bool src_dev = kind == DEVICE_TO_HOST || kind == DEVICE_TO_DEVICE;
    if (kind < HOST_TO_HOST || kind > DEVICE_TO_DEVICE)
        return Fail(kInvalidParam, std::string(call) + ": unknown copy kind " + std::to_string(kind));
    if (dst_dev != InDevice(dst, count))
        return Fail(kInvalidParam, std::string(call) + ": destination " +
                                       (dst_dev ? "is not " + std::to_string(count) + " bytes of device memory"
                                                : "is device memory but the kind says host"));
    if (src_dev != InDevice(src, count))
        return Fail(kInvalidParam, std::string(call) + ": source " +
                                       (src_dev ? "is not " + std::to_string(count) + " bytes of device memory"
                                                : "is device memory but the kind says host"));
    std::memmove(dst, src, count);
    return 0;
}
}  // namespace

extern "C" {

int tbc_standin_fail(int code, const char* message) {
    std::lock_guard<std::mutex> g(mu);
    return Fail(code, message);
}

bool tbc_standin_is_device(const void* p, size_t bytes) {
    std::lock_guard<std::mutex> g(mu);
    return InDevice(p, bytes);
}

bool tbc_standin_is_stream(aclrtStream s) {
    std::lock_guard<std::mutex> g(mu);
    return streams.count(s) > 0;
}

aclError aclInit(const char*) {
    std::lock_guard<std::mutex> g(mu);
    if (initialized) return Fail(100002, "aclInit called twice");
    initialized = true;
    return 0;
}

aclError aclFinalize() {
    std::lock_guard<std::mutex> g(mu);
    initialized = false;
    return 0;
}

aclError aclrtGetDeviceCount(uint32_t* count) {
    std::lock_guard<std::mutex> g(mu);
    if (!initialized) return Fail(kUninitialized, "aclrtGetDeviceCount before aclInit");
    *count = 1;
    return 0;
}

aclError aclrtSetDevice(int32_t id) {
    std::lock_guard<std::mutex> g(mu);
    if (!initialized) return Fail(kUninitialized, "aclrtSetDevice before aclInit");
    if (id != 0) return Fail(kInvalidDevice, "device " + std::to_string(id) + " does not exist (the stand-in has device 0)");
    device = id;
    return 0;
}

aclError aclrtResetDevice(int32_t id) {
    std::lock_guard<std::mutex> g(mu);
    if (id != device) return Fail(kInvalidDevice, "aclrtResetDevice of a device never set");
    device = -1;
    return 0;
}

// TBC_ACL_STANDIN_SOC plays another chip (the tests check the trainer's SoC check with it).
const char* aclrtGetSocName() {
    const char* soc = std::getenv("TBC_ACL_STANDIN_SOC");
    return soc ? soc : "Ascend910B (tbc ACL stand-in on the CPU)";
}

aclError aclrtCreateStream(aclrtStream* stream) {
    std::lock_guard<std::mutex> g(mu);
    if (int e = CheckReady("aclrtCreateStream")) return e;
    *stream = std::malloc(1);
    streams.insert(*stream);
    return 0;
}

aclError aclrtDestroyStream(aclrtStream stream) {
    std::lock_guard<std::mutex> g(mu);
    if (!streams.erase(stream)) return Fail(kInvalidParam, "aclrtDestroyStream of an unknown stream");
    std::free(stream);
    return 0;
}

aclError aclrtSynchronizeStream(aclrtStream stream) {
    std::lock_guard<std::mutex> g(mu);
    if (!streams.count(stream)) return Fail(kInvalidParam, "aclrtSynchronizeStream of an unknown stream");
    return 0;
}

aclError aclrtMalloc(void** ptr, size_t size, int /*policy*/) {
    std::lock_guard<std::mutex> g(mu);
    if (int e = CheckReady("aclrtMalloc")) return e;
    if (size == 0) return Fail(kInvalidParam, "aclrtMalloc of 0 bytes");
    // 512-byte aligned like the NPU's allocator; poisoned, as fresh device memory is not zero.
    size_t rounded = (size + 511) / 512 * 512;
    void* p = std::aligned_alloc(512, rounded);
    if (!p) return Fail(kBadAlloc, "out of memory allocating " + std::to_string(size) + " bytes");
    std::memset(p, 0xA5, rounded);
    allocations[reinterpret_cast<uintptr_t>(p)] = size;
    *ptr = p;
    return 0;
}

aclError aclrtFree(void* ptr) {
    std::lock_guard<std::mutex> g(mu);
    auto it = allocations.find(reinterpret_cast<uintptr_t>(ptr));
    if (it == allocations.end()) return Fail(kInvalidParam, "aclrtFree of a pointer aclrtMalloc did not return");
    allocations.erase(it);
    std::free(ptr);
    return 0;
}

aclError aclrtGetMemInfo(int /*attr*/, size_t* free, size_t* total) {
    *free = size_t(16) << 30;
    *total = size_t(32) << 30;
    return 0;
}

aclError aclrtMemcpy(void* dst, size_t destMax, const void* src, size_t count, int kind) {
    std::lock_guard<std::mutex> g(mu);
    return Copy(dst, destMax, src, count, kind, "aclrtMemcpy");
}

aclError aclrtMemcpyAsync(void* dst, size_t destMax, const void* src, size_t count, int kind, aclrtStream stream) {
    std::lock_guard<std::mutex> g(mu);
    if (!streams.count(stream)) return Fail(kInvalidParam, "aclrtMemcpyAsync on an unknown stream");
    return Copy(dst, destMax, src, count, kind, "aclrtMemcpyAsync");
}

aclError aclrtMemsetAsync(void* ptr, size_t maxCount, int32_t value, size_t count, aclrtStream stream) {
    std::lock_guard<std::mutex> g(mu);
    if (int e = CheckReady("aclrtMemsetAsync")) return e;
    if (!streams.count(stream)) return Fail(kInvalidParam, "aclrtMemsetAsync on an unknown stream");
    if (count > maxCount) return Fail(kInvalidParam, "aclrtMemsetAsync: count exceeds maxCount");
    if (!InDevice(ptr, count)) return Fail(kInvalidParam, "aclrtMemsetAsync: not device memory");
    std::memset(ptr, value, count);
    return 0;
}

const char* aclGetRecentErrMsg() {
    std::lock_guard<std::mutex> g(mu);
    thread_local std::string copy;
    copy = last_error;
    last_error.clear();
    return copy.empty() ? nullptr : copy.c_str();
}
}
