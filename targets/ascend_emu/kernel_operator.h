// tbc's CPU emulation of the Ascend C API subset its generated kernels use (a stand-in for
// CANN's kernel_operator.h; plain C++17, g++ >= 12). Written from the documented semantics
// (../shared/ASCEND_NOTES.md §2-§3), not from CANN's sources. What it models, so that passing
// here means something on an NPU:
//   - the Unified Buffer as a real 32-byte-aligned arena per core, with its capacity
//     (TBC_ASCEND_UB_BYTES, default 192 KiB: 910B) and fresh buffers poisoned (0xFF: NaN);
//   - alignment and bounds checks on every call: UB operands start on 32 bytes, counts within
//     every view, GM views within their buffers;
//   - DataCopy's 32-byte rule (the hardware silently truncates; here it is an error), DataCopyPad
//     for tails with its byte / 32-byte-block units and padding;
//   - queue misuse: DeQue on an empty queue, AllocTensor with every buffer in use, EnQue/Free
//     of a foreign or free tensor, tensors still held when the kernel returns;
//   - blocks run one after another; GM bytes written by two blocks are an error (a race on
//     the NPU);
//   - half as _Float16 (each op computes in float and rounds once); ReduceSum's order: a binary
//     tree inside each 256-byte repeat, repeats summed in order.
// A violation throws AscendC::EmuError; EmuLaunch reports it with the block and returns 1.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#define __aicore__
#define __global__
#define __vector__
#define __gm__
#define __ubuf__
#define GM_ADDR uint8_t*
#define KERNEL_TASK_TYPE_DEFAULT(x)

typedef _Float16 half;

enum pipe_t { PIPE_S, PIPE_V, PIPE_M, PIPE_MTE1, PIPE_MTE2, PIPE_MTE3, PIPE_ALL };
enum KernelType { KERNEL_TYPE_AIV_ONLY, KERNEL_TYPE_AIC_ONLY, KERNEL_TYPE_MIX_AIV_1_0 };
typedef int32_t event_t;

namespace AscendC {

struct EmuError : std::runtime_error {
    explicit EmuError(const std::string& m) : std::runtime_error(m) {}
};

[[noreturn]] inline void Fail(const char* api, const std::string& why) {
    throw EmuError(std::string(api) + ": " + why);
}

enum class TPosition { GM, VECIN, VECOUT, VECCALC };
using QuePosition = TPosition;
enum class HardEvent { MTE2_V, V_MTE2, V_MTE3, MTE3_V, V_S, S_V, MTE2_S, S_MTE2, MTE3_S, S_MTE3, MTE2_MTE3, MTE3_MTE2 };
enum class RoundMode { CAST_NONE, CAST_RINT, CAST_FLOOR, CAST_CEIL, CAST_ROUND, CAST_TRUNC, CAST_ODD };

constexpr uint32_t BLOCK_BYTES = 32;    // a data block
constexpr uint32_t REPEAT_BYTES = 256;  // one vector repeat

inline uint64_t AlignUp(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }
inline uint64_t DivCeil(uint64_t x, uint64_t a) { return (x + a - 1) / a; }

// ----- the emulated core ---------------------------------------------------------------------

/// A GM byte range one block wrote.
struct GmWrite {
    uintptr_t begin, end;
};

class TPipe;

/// The core running the current block: its index, the block count, its UB arena and the GM
/// ranges it wrote.
struct Core {
    int64_t idx = 0, num = 1;
    std::vector<uint8_t> ub_storage;
    uint8_t* ub = nullptr;
    uint64_t ub_bytes = 0, ub_used = 0;
    TPipe* pipe = nullptr;
    std::vector<GmWrite> writes;
    std::map<int, int> flags;  // HardEvent → SetFlag count not yet waited for
    std::string end_error;     // found by a destructor at kernel end (queues still holding buffers)
};

inline Core& CurrentCore() {
    static Core core;
    return core;
}

inline int64_t GetBlockIdx() { return CurrentCore().idx; }
inline int64_t GetBlockNum() { return CurrentCore().num; }

inline bool InUb(const void* p) {
    const Core& c = CurrentCore();
    auto a = reinterpret_cast<const uint8_t*>(p);
    return c.ub && a >= c.ub && a < c.ub + c.ub_bytes;
}

// ----- tensors -------------------------------------------------------------------------------

template <typename T>
class GlobalTensor {
public:
    void SetGlobalBuffer(__gm__ T* p, uint64_t n) {
        if (reinterpret_cast<uintptr_t>(p) % alignof(T) != 0)
            Fail("SetGlobalBuffer", "GM address not aligned to the element size");
        base_ = p;
        size_ = n;
    }
    void SetGlobalBuffer(__gm__ T* p) { SetGlobalBuffer(p, UINT64_MAX / sizeof(T)); }
    GlobalTensor operator[](uint64_t off) const {
        if (off > size_) Fail("GlobalTensor[]", "offset " + std::to_string(off) + " past the buffer's " + std::to_string(size_) + " elements");
        GlobalTensor t;
        t.base_ = base_ + off;
        t.size_ = size_ - off;
        return t;
    }
    T GetValue(uint64_t i) const {
        Check(i, 1, "GetValue");
        return base_[i];
    }
    void SetValue(uint64_t i, T v) {
        Check(i, 1, "SetValue");
        base_[i] = v;
        Written(i, 1);
    }
    uint64_t GetSize() const { return size_; }
    T* GetPhyAddr() const { return base_; }

    /// Checks that `n` elements from `i` lie within the view.
    void Check(uint64_t i, uint64_t n, const char* api) const {
        if (!base_) Fail(api, "GlobalTensor used before SetGlobalBuffer");
        if (i + n > size_)
            Fail(api, "GM elements [" + std::to_string(i) + ", " + std::to_string(i + n) + ") outside the buffer's " + std::to_string(size_));
    }
    /// Records that this block wrote `n` elements from `i`.
    void Written(uint64_t i, uint64_t n) const {
        auto b = reinterpret_cast<uintptr_t>(base_ + i);
        CurrentCore().writes.push_back({b, b + n * sizeof(T)});
    }

private:
    T* base_ = nullptr;
    uint64_t size_ = 0;
};

template <typename T>
class LocalTensor {
public:
    LocalTensor() = default;
    LocalTensor(T* p, uint32_t n, int owner, int slot) : addr_(p), size_(n), owner_(owner), slot_(slot) {}
    LocalTensor operator[](uint32_t off) const {
        if (off > size_) Fail("LocalTensor[]", "offset " + std::to_string(off) + " past the tensor's " + std::to_string(size_) + " elements");
        return LocalTensor(addr_ + off, size_ - off, owner_, slot_);
    }
    T GetValue(uint32_t i) const {
        if (i >= size_) Fail("GetValue", "index " + std::to_string(i) + " outside " + std::to_string(size_) + " elements");
        return addr_[i];
    }
    void SetValue(uint32_t i, T v) const {
        if (i >= size_) Fail("SetValue", "index " + std::to_string(i) + " outside " + std::to_string(size_) + " elements");
        addr_[i] = v;
    }
    uint32_t GetSize() const { return size_; }
    void SetSize(uint32_t n) { size_ = n; }
    T* GetPhyAddr() const { return addr_; }
    template <typename U>
    LocalTensor<U> ReinterpretCast() const {
        return LocalTensor<U>(reinterpret_cast<U*>(addr_), uint32_t(uint64_t(size_) * sizeof(T) / sizeof(U)), owner_, slot_);
    }
    int Owner() const { return owner_; }
    int Slot() const { return slot_; }

    /// Checks a vector operand: UB, 32-byte aligned start, `n` elements within the view.
    void CheckOperand(uint64_t n, const char* api) const {
        if (!addr_) Fail(api, "LocalTensor used before it was allocated");
        if (!InUb(addr_)) Fail(api, "operand is not in the Unified Buffer");
        auto off = reinterpret_cast<uintptr_t>(addr_) - reinterpret_cast<uintptr_t>(CurrentCore().ub);
        if (off % BLOCK_BYTES != 0)
            Fail(api, "UB operand at byte " + std::to_string(off) + " is not 32-byte aligned");
        if (n > size_)
            Fail(api, "count " + std::to_string(n) + " exceeds the tensor's " + std::to_string(size_) + " elements");
    }

private:
    T* addr_ = nullptr;
    uint32_t size_ = 0;
    int owner_ = -1, slot_ = -1;
};

// ----- the pipe, queues and buffers ----------------------------------------------------------

class TQueBase;

class TPipe {
public:
    /// Resets the core's UB arena: one pipe per kernel.
    TPipe() {
        Core& c = CurrentCore();
        c.ub_used = 0;
        c.pipe = this;
    }
    ~TPipe() {
        if (CurrentCore().pipe == this) CurrentCore().pipe = nullptr;
    }
    template <class Q>
    void InitBuffer(Q& q, uint32_t num, uint32_t len) {
        if (num == 0 || len == 0) Fail("InitBuffer", "a queue needs at least one buffer of at least one byte");
        uint64_t each = AlignUp(len, BLOCK_BYTES);
        std::vector<uint8_t*> bufs;
        for (uint32_t i = 0; i < num; i++) bufs.push_back(Carve(each, "InitBuffer"));
        q.Attach(bufs, each, next_queue_++);
    }
    /// One scratch buffer (a `TBuf`).
    template <class B>
    void InitBuffer(B& b, uint32_t len) {
        if (len == 0) Fail("InitBuffer", "a buffer needs at least one byte");
        uint64_t each = AlignUp(len, BLOCK_BYTES);
        b.Attach({Carve(each, "InitBuffer")}, each, next_queue_++);
    }
    /// Carves `bytes` (32-byte multiple) from the arena, poisoned.
    uint8_t* Carve(uint64_t bytes, const char* api) {
        Core& c = CurrentCore();
        if (c.ub_used + bytes > c.ub_bytes)
            Fail(api, "Unified Buffer overflow: " + std::to_string(bytes) + " more bytes with " + std::to_string(c.ub_used) + " of " + std::to_string(c.ub_bytes) + " in use");
        uint8_t* p = c.ub + c.ub_used;
        std::memset(p, 0xFF, bytes);
        c.ub_used += bytes;
        return p;
    }
    event_t FetchEventID(HardEvent) { return next_event_++ % 8; }

private:
    int next_queue_ = 0;
    event_t next_event_ = 0;
};

inline TPipe* GetTPipePtr() {
    TPipe* p = CurrentCore().pipe;
    if (!p) Fail("GetTPipePtr", "no TPipe in this kernel");
    return p;
}

class TQueBase {
public:
    virtual ~TQueBase() = default;
    void Attach(const std::vector<uint8_t*>& bufs, uint64_t bytes, int id) {
        bufs_ = bufs;
        bytes_ = bytes;
        id_ = id;
        state_.assign(bufs.size(), Free);
    }
protected:
    /// At the kernel's end (the queue's destructor): every buffer free again.
    void RecordIfBusy() const noexcept {
        std::string& err = CurrentCore().end_error;
        for (size_t i = 0; i < state_.size() && err.empty(); i++)
            if (state_[i] != Free)
                err = "kernel end: queue " + std::to_string(id_) + " still holds buffer " + std::to_string(i) +
                      (state_[i] == Queued ? " (enqueued, never dequeued)" : " (allocated, never freed)");
    }

    enum State { Free, Held, Queued };
    std::vector<uint8_t*> bufs_;
    std::vector<State> state_;
    uint64_t bytes_ = 0;
    int id_ = -1;
};

template <TPosition pos, int32_t depth>
class TQue : public TQueBase {
public:
    ~TQue() override { RecordIfBusy(); }
    template <typename T>
    LocalTensor<T> AllocTensor() {
        if (bufs_.empty()) Fail("AllocTensor", "queue used before InitBuffer");
        for (size_t i = 0; i < state_.size(); i++)
            if (state_[i] == Free) {
                state_[i] = Held;
                return LocalTensor<T>(reinterpret_cast<T*>(bufs_[i]), uint32_t(bytes_ / sizeof(T)), id_, int(i));
            }
        Fail("AllocTensor", "all " + std::to_string(state_.size()) + " buffers of queue " + std::to_string(id_) + " are in use (a FreeTensor missing?)");
    }
    template <typename T>
    void EnQue(const LocalTensor<T>& t) {
        int s = Own(t.Owner(), t.Slot(), "EnQue");
        if (state_[s] != Held) Fail("EnQue", "the tensor is not allocated (enqueued twice, or freed)");
        if (int32_t(fifo_.size()) >= depth) Fail("EnQue", "queue " + std::to_string(id_) + " is full (depth " + std::to_string(depth) + ")");
        state_[s] = Queued;
        fifo_.push_back(s);
    }
    template <typename T>
    LocalTensor<T> DeQue() {
        if (fifo_.empty()) Fail("DeQue", "queue " + std::to_string(id_) + " is empty (an EnQue missing?): this deadlocks on the NPU");
        int s = fifo_.front();
        fifo_.erase(fifo_.begin());
        state_[s] = Held;
        return LocalTensor<T>(reinterpret_cast<T*>(bufs_[s]), uint32_t(bytes_ / sizeof(T)), id_, s);
    }
    template <typename T>
    void FreeTensor(const LocalTensor<T>& t) {
        int s = Own(t.Owner(), t.Slot(), "FreeTensor");
        if (state_[s] != Held) Fail("FreeTensor", "the tensor is not held (freed twice, or still enqueued)");
        state_[s] = Free;
    }

private:
    int Own(int owner, int slot, const char* api) const {
        if (owner != id_ || slot < 0 || slot >= int(state_.size()))
            Fail(api, "the tensor does not belong to queue " + std::to_string(id_));
        return slot;
    }
    std::vector<int> fifo_;
};

template <TPosition pos>
class TBuf : public TQueBase {
public:
    template <typename T>
    LocalTensor<T> Get() {
        if (bufs_.empty()) Fail("TBuf::Get", "buffer used before InitBuffer");
        return LocalTensor<T>(reinterpret_cast<T*>(bufs_[0]), uint32_t(bytes_ / sizeof(T)), -1, -1);
    }
    template <typename T>
    LocalTensor<T> Get(uint32_t n) {
        LocalTensor<T> t = Get<T>();
        if (n > t.GetSize()) Fail("TBuf::Get", std::to_string(n) + " elements exceed the buffer's " + std::to_string(t.GetSize()));
        t.SetSize(n);
        return t;
    }
};

// ----- synchronisation (ordering is sequential here; pairing is checked) ---------------------

template <pipe_t p>
inline void PipeBarrier() {}

template <HardEvent e>
inline void SetFlag(event_t) {
    CurrentCore().flags[int(e)]++;
}

template <HardEvent e>
inline void WaitFlag(event_t) {
    int& n = CurrentCore().flags[int(e)];
    if (n == 0) Fail("WaitFlag", "no SetFlag of this event before it: this deadlocks on the NPU");
    n--;
}

// ----- data movement -------------------------------------------------------------------------

template <typename T>
inline void CheckCopyBytes(uint32_t count, const char* api) {
    if ((uint64_t(count) * sizeof(T)) % BLOCK_BYTES != 0)
        Fail(api, std::to_string(count) + " elements = " + std::to_string(uint64_t(count) * sizeof(T)) + " bytes: GM<->UB copies move whole 32-byte blocks (the NPU would silently drop the tail; use DataCopyPad)");
}

template <typename T>
inline void DataCopy(const LocalTensor<T>& dst, const GlobalTensor<T>& src, uint32_t count) {
    CheckCopyBytes<T>(count, "DataCopy GM->UB");
    dst.CheckOperand(count, "DataCopy GM->UB");
    src.Check(0, count, "DataCopy GM->UB");
    std::memcpy(dst.GetPhyAddr(), src.GetPhyAddr(), count * sizeof(T));
}

template <typename T>
inline void DataCopy(const GlobalTensor<T>& dst, const LocalTensor<T>& src, uint32_t count) {
    CheckCopyBytes<T>(count, "DataCopy UB->GM");
    src.CheckOperand(count, "DataCopy UB->GM");
    dst.Check(0, count, "DataCopy UB->GM");
    std::memcpy(dst.GetPhyAddr(), src.GetPhyAddr(), count * sizeof(T));
    dst.Written(0, count);
}

struct DataCopyExtParams {
    uint16_t blockCount = 1;
    uint32_t blockLen = 0;  // bytes
    uint32_t srcStride = 0;
    uint32_t dstStride = 0;
    uint32_t rsv = 0;
};

template <typename T>
struct DataCopyPadExtParams {
    bool isPad = false;
    uint8_t leftPadding = 0;
    uint8_t rightPadding = 0;
    T paddingValue = T(0);
};

/// GM → UB: `blockCount` blocks of `blockLen` bytes (GM stride in bytes), each landing on a
/// 32-byte boundary in UB (stride in 32-byte blocks), its tail padded to 32 bytes with
/// `paddingValue` when `isPad`, else left poisoned.
template <typename T>
inline void DataCopyPad(const LocalTensor<T>& dst, const GlobalTensor<T>& src, const DataCopyExtParams& p, const DataCopyPadExtParams<T>& pad) {
    const char* api = "DataCopyPad GM->UB";
    if (p.blockLen % sizeof(T) != 0) Fail(api, "blockLen must be a multiple of the element size");
    if (p.blockCount == 0 || p.blockCount > 4095) Fail(api, "blockCount must be in 1..4095");
    uint64_t ub_block = AlignUp(p.blockLen, BLOCK_BYTES) + uint64_t(p.dstStride) * BLOCK_BYTES;
    uint64_t gm_block = uint64_t(p.blockLen) + p.srcStride;
    uint64_t ub_elems = ((p.blockCount - 1) * ub_block + AlignUp(p.blockLen, BLOCK_BYTES)) / sizeof(T);
    dst.CheckOperand(ub_elems, api);
    src.Check(0, ((p.blockCount - 1) * gm_block + p.blockLen) / sizeof(T), api);
    for (uint32_t b = 0; b < p.blockCount; b++) {
        auto to = reinterpret_cast<uint8_t*>(dst.GetPhyAddr()) + b * ub_block;
        auto from = reinterpret_cast<const uint8_t*>(src.GetPhyAddr()) + b * gm_block;
        std::memcpy(to, from, p.blockLen);
        if (pad.isPad) {
            T* t = reinterpret_cast<T*>(to + p.blockLen);
            for (uint64_t i = 0; i < (AlignUp(p.blockLen, BLOCK_BYTES) - p.blockLen) / sizeof(T); i++) t[i] = pad.paddingValue;
        }
    }
}

/// UB → GM: `blockCount` blocks of `blockLen` bytes read from 32-byte boundaries in UB (stride
/// in 32-byte blocks), written `blockLen + dstStride` bytes apart in GM.
template <typename T>
inline void DataCopyPad(const GlobalTensor<T>& dst, const LocalTensor<T>& src, const DataCopyExtParams& p) {
    const char* api = "DataCopyPad UB->GM";
    if (p.blockLen % sizeof(T) != 0) Fail(api, "blockLen must be a multiple of the element size");
    if (p.blockCount == 0 || p.blockCount > 4095) Fail(api, "blockCount must be in 1..4095");
    uint64_t ub_block = AlignUp(p.blockLen, BLOCK_BYTES) + uint64_t(p.srcStride) * BLOCK_BYTES;
    uint64_t gm_block = uint64_t(p.blockLen) + p.dstStride;
    src.CheckOperand(((p.blockCount - 1) * ub_block + p.blockLen) / sizeof(T), api);
    dst.Check(0, ((p.blockCount - 1) * gm_block + p.blockLen) / sizeof(T), api);
    for (uint32_t b = 0; b < p.blockCount; b++) {
        auto from = reinterpret_cast<const uint8_t*>(src.GetPhyAddr()) + b * ub_block;
        auto to = reinterpret_cast<uint8_t*>(dst.GetPhyAddr()) + b * gm_block;
        std::memcpy(to, from, p.blockLen);
        dst.Written(b * gm_block / sizeof(T), p.blockLen / sizeof(T));
    }
}

// ----- vector compute (count forms) ----------------------------------------------------------

/// Operands that overlap must be the same tensor (in-place): partial overlap is an error.
template <typename A, typename B>
inline void CheckOverlap(const LocalTensor<A>& d, const LocalTensor<B>& s, uint64_t n, const char* api) {
    auto d0 = reinterpret_cast<uintptr_t>(d.GetPhyAddr()), s0 = reinterpret_cast<uintptr_t>(s.GetPhyAddr());
    auto d1 = d0 + n * sizeof(A), s1 = s0 + n * sizeof(B);
    if (d0 < s1 && s0 < d1 && !(d0 == s0 && sizeof(A) == sizeof(B))) Fail(api, "destination partly overlaps a source");
}

template <typename T, typename F>
inline void Binary(const LocalTensor<T>& d, const LocalTensor<T>& a, const LocalTensor<T>& b, int32_t n, const char* api, F f) {
    if (n < 0) Fail(api, "negative count");
    d.CheckOperand(n, api);
    a.CheckOperand(n, api);
    b.CheckOperand(n, api);
    CheckOverlap(d, a, n, api);
    CheckOverlap(d, b, n, api);
    T *x = a.GetPhyAddr(), *y = b.GetPhyAddr(), *z = d.GetPhyAddr();
    for (int32_t i = 0; i < n; i++) z[i] = T(f(float(x[i]), float(y[i])));
}

template <typename T, typename F>
inline void Unary(const LocalTensor<T>& d, const LocalTensor<T>& a, int32_t n, const char* api, F f) {
    if (n < 0) Fail(api, "negative count");
    d.CheckOperand(n, api);
    a.CheckOperand(n, api);
    CheckOverlap(d, a, n, api);
    T *x = a.GetPhyAddr(), *z = d.GetPhyAddr();
    for (int32_t i = 0; i < n; i++) z[i] = T(f(float(x[i])));
}

#define TBC_EMU_BINARY(NAME, EXPR)                                                                     \
    template <typename T>                                                                              \
    inline void NAME(const LocalTensor<T>& d, const LocalTensor<T>& a, const LocalTensor<T>& b, const int32_t& n) { \
        Binary(d, a, b, n, #NAME, [](float x, float y) { return EXPR; });                             \
    }
TBC_EMU_BINARY(Add, x + y)
TBC_EMU_BINARY(Sub, x - y)
TBC_EMU_BINARY(Mul, x * y)
TBC_EMU_BINARY(Div, x / y)
TBC_EMU_BINARY(Max, std::fmax(x, y))
TBC_EMU_BINARY(Min, std::fmin(x, y))
#undef TBC_EMU_BINARY

#define TBC_EMU_SCALAR(NAME, EXPR)                                                                     \
    template <typename T>                                                                              \
    inline void NAME(const LocalTensor<T>& d, const LocalTensor<T>& a, const T& s, const int32_t& n) { \
        float y = float(s);                                                                            \
        Unary(d, a, n, #NAME, [y](float x) { return EXPR; });                                          \
    }
TBC_EMU_SCALAR(Adds, x + y)
TBC_EMU_SCALAR(Muls, x * y)
TBC_EMU_SCALAR(Maxs, std::fmax(x, y))
TBC_EMU_SCALAR(Mins, std::fmin(x, y))
#undef TBC_EMU_SCALAR

#define TBC_EMU_UNARY(NAME, EXPR)                                                                      \
    template <typename T>                                                                              \
    inline void NAME(const LocalTensor<T>& d, const LocalTensor<T>& a, const int32_t& n) {            \
        Unary(d, a, n, #NAME, [](float x) { return EXPR; });                                           \
    }
TBC_EMU_UNARY(Exp, std::exp(x))
TBC_EMU_UNARY(Ln, std::log(x))
TBC_EMU_UNARY(Sqrt, std::sqrt(x))
TBC_EMU_UNARY(Rsqrt, 1.0f / std::sqrt(x))
TBC_EMU_UNARY(Abs, std::fabs(x))
TBC_EMU_UNARY(Relu, std::fmax(x, 0.0f))
TBC_EMU_UNARY(Reciprocal, 1.0f / x)
#undef TBC_EMU_UNARY

template <typename T>
inline void Duplicate(const LocalTensor<T>& d, const T& v, const int32_t& n) {
    if (n < 0) Fail("Duplicate", "negative count");
    d.CheckOperand(n, "Duplicate");
    std::fill(d.GetPhyAddr(), d.GetPhyAddr() + n, v);
}

template <typename T, typename U>
inline void Cast(const LocalTensor<T>& d, const LocalTensor<U>& s, const RoundMode& mode, uint32_t n) {
    d.CheckOperand(n, "Cast");
    s.CheckOperand(n, "Cast");
    CheckOverlap(d, s, n, "Cast");
    for (uint32_t i = 0; i < n; i++) {
        double x = double(s.GetPhyAddr()[i]);
        switch (mode) {
            case RoundMode::CAST_FLOOR: x = std::floor(x); break;
            case RoundMode::CAST_CEIL: x = std::ceil(x); break;
            case RoundMode::CAST_ROUND: x = std::round(x); break;
            case RoundMode::CAST_TRUNC: x = std::trunc(x); break;
            default: break;  // CAST_NONE / CAST_RINT: round to nearest even by the conversion
        }
        d.GetPhyAddr()[i] = T(x);
    }
}

enum class CMPMODE { LT, GT, EQ, LE, GE, NE };
enum class SELMODE { VSEL_CMPMASK_SPR, VSEL_TENSOR_SCALAR_MODE, VSEL_TENSOR_TENSOR_MODE };

/// One bit per element, little-endian within each byte (the NPU's selection masks).
template <typename U>
inline void SetMaskBit(const LocalTensor<U>& m, uint32_t i, bool v) {
    auto b = reinterpret_cast<uint8_t*>(m.GetPhyAddr());
    b[i / 8] = uint8_t((b[i / 8] & ~(1u << (i % 8))) | (uint32_t(v) << (i % 8)));
}
template <typename U>
inline bool MaskBit(const LocalTensor<U>& m, uint32_t i) {
    return (reinterpret_cast<const uint8_t*>(m.GetPhyAddr())[i / 8] >> (i % 8)) & 1u;
}

inline bool CompareWith(CMPMODE m, float x, float y) {
    switch (m) {
        case CMPMODE::LT: return x < y;
        case CMPMODE::GT: return x > y;
        case CMPMODE::EQ: return x == y;
        case CMPMODE::LE: return x <= y;
        case CMPMODE::GE: return x >= y;
        default: return x != y;
    }
}

/// The checks every Compare shares: whole 256-byte repeats (the NPU leaves a partial one
/// uncomputed), the mask's bytes within its tensor.
template <typename T, typename U>
inline void CheckCompare(const LocalTensor<U>& d, const LocalTensor<T>& a, uint32_t n, const char* api) {
    if ((uint64_t(n) * sizeof(T)) % REPEAT_BYTES != 0)
        Fail(api, std::to_string(n) + " elements = " + std::to_string(uint64_t(n) * sizeof(T)) + " bytes: Compare works on whole 256-byte repeats (the NPU leaves the tail uncomputed)");
    a.CheckOperand(n, api);
    d.CheckOperand(DivCeil(n, 8 * sizeof(U)), api);
}

/// Bit i of `d` = a[i] <m> b[i].
template <typename T, typename U>
inline void Compare(const LocalTensor<U>& d, const LocalTensor<T>& a, const LocalTensor<T>& b, CMPMODE m, uint32_t n) {
    CheckCompare(d, a, n, "Compare");
    b.CheckOperand(n, "Compare");
    for (uint32_t i = 0; i < n; i++) SetMaskBit(d, i, CompareWith(m, float(a.GetPhyAddr()[i]), float(b.GetPhyAddr()[i])));
}

/// Bit i of `d` = a[i] <m> s.
template <typename T, typename U>
inline void Compares(const LocalTensor<U>& d, const LocalTensor<T>& a, const T s, CMPMODE m, uint32_t n) {
    CheckCompare(d, a, n, "Compares");
    for (uint32_t i = 0; i < n; i++) SetMaskBit(d, i, CompareWith(m, float(a.GetPhyAddr()[i]), float(s)));
}

/// d[i] = bit i of the mask ? a[i] : b[i].
template <typename T, typename U>
inline void Select(const LocalTensor<T>& d, const LocalTensor<U>& mask, const LocalTensor<T>& a, const LocalTensor<T>& b, SELMODE mode, uint32_t n) {
    if (mode != SELMODE::VSEL_TENSOR_TENSOR_MODE) Fail("Select", "two tensors need SELMODE::VSEL_TENSOR_TENSOR_MODE");
    d.CheckOperand(n, "Select");
    a.CheckOperand(n, "Select");
    b.CheckOperand(n, "Select");
    mask.CheckOperand(DivCeil(n, 8 * sizeof(U)), "Select");
    CheckOverlap(d, a, n, "Select");
    CheckOverlap(d, b, n, "Select");
    for (uint32_t i = 0; i < n; i++) d.GetPhyAddr()[i] = MaskBit(mask, i) ? a.GetPhyAddr()[i] : b.GetPhyAddr()[i];
}

/// d[i] = bit i of the mask ? a[i] : s.
template <typename T, typename U>
inline void Select(const LocalTensor<T>& d, const LocalTensor<U>& mask, const LocalTensor<T>& a, T s, SELMODE mode, uint32_t n) {
    if (mode != SELMODE::VSEL_TENSOR_SCALAR_MODE) Fail("Select", "a tensor and a scalar need SELMODE::VSEL_TENSOR_SCALAR_MODE");
    d.CheckOperand(n, "Select");
    a.CheckOperand(n, "Select");
    mask.CheckOperand(DivCeil(n, 8 * sizeof(U)), "Select");
    CheckOverlap(d, a, n, "Select");
    for (uint32_t i = 0; i < n; i++) d.GetPhyAddr()[i] = MaskBit(mask, i) ? a.GetPhyAddr()[i] : s;
}

/// d[i] = first + i.
template <typename T>
inline void CreateVecIndex(LocalTensor<T>& d, const T first, uint32_t n) {
    d.CheckOperand(n, "CreateVecIndex");
    for (uint32_t i = 0; i < n; i++) d.GetPhyAddr()[i] = T(float(first) + float(i));
}

/// ReduceSum's order: a binary tree over each 256-byte repeat, the repeats summed in order.
template <typename T, typename F>
inline void ReduceTree(const LocalTensor<T>& d, const LocalTensor<T>& s, const LocalTensor<T>& tmp, int32_t n, const char* api, F f) {
    if (n <= 0) Fail(api, "count must be positive");
    d.CheckOperand(1, api);
    s.CheckOperand(n, api);
    (void)tmp;
    const int32_t per = REPEAT_BYTES / sizeof(T);
    const T* x = s.GetPhyAddr();
    float total = 0;
    for (int32_t r = 0; r * per < n; r++) {
        std::vector<float> v(x + r * per, x + std::min(n, (r + 1) * per));
        while (v.size() > 1) {
            std::vector<float> w;
            for (size_t i = 0; i + 1 < v.size(); i += 2) w.push_back(float(T(f(v[i], v[i + 1]))));
            if (v.size() % 2) w.push_back(v.back());
            v = w;
        }
        total = r == 0 ? v[0] : float(T(f(total, v[0])));
    }
    d.GetPhyAddr()[0] = T(total);
}

template <typename T, bool isSetMask = true>
inline void ReduceSum(const LocalTensor<T>& d, const LocalTensor<T>& s, const LocalTensor<T>& tmp, const int32_t count) {
    ReduceTree(d, s, tmp, count, "ReduceSum", [](float a, float b) { return a + b; });
}

template <typename T>
inline void ReduceMax(const LocalTensor<T>& d, const LocalTensor<T>& s, const LocalTensor<T>& tmp, const int32_t count, bool calIndex = false) {
    if (calIndex) Fail("ReduceMax", "calIndex is not in tbc's subset");
    ReduceTree(d, s, tmp, count, "ReduceMax", [](float a, float b) { return std::fmax(a, b); });
}

template <typename T>
inline void ReduceMin(const LocalTensor<T>& d, const LocalTensor<T>& s, const LocalTensor<T>& tmp, const int32_t count, bool calIndex = false) {
    if (calIndex) Fail("ReduceMin", "calIndex is not in tbc's subset");
    ReduceTree(d, s, tmp, count, "ReduceMin", [](float a, float b) { return std::fmin(a, b); });
}

// ----- the host side: running a kernel on emulated cores -------------------------------------

/// GM allocations (for messages that name the buffer of a race).
inline std::map<uintptr_t, uint64_t>& GmAllocations() {
    static std::map<uintptr_t, uint64_t> m;
    return m;
}

inline uint8_t* GmAlloc(size_t bytes) {
    void* p = std::aligned_alloc(64, AlignUp(bytes ? bytes : 1, 64));
    if (!p) throw std::bad_alloc();
    GmAllocations()[reinterpret_cast<uintptr_t>(p)] = bytes;
    return static_cast<uint8_t*>(p);
}

inline void GmFree(void* p) {
    GmAllocations().erase(reinterpret_cast<uintptr_t>(p));
    std::free(p);
}

/// "buffer at 0x… + offset" for a GM address, when it came from GmAlloc.
inline std::string GmName(uintptr_t a) {
    auto& m = GmAllocations();
    auto it = m.upper_bound(a);
    if (it != m.begin()) {
        --it;
        if (a < it->first + it->second) {
            char buf[64];
            std::snprintf(buf, sizeof buf, "GM buffer %#lx byte %lu", (unsigned long)it->first, (unsigned long)(a - it->first));
            return buf;
        }
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, "GM address %#lx", (unsigned long)a);
    return buf;
}

/// Runs `kernel(args...)` on `blockDim` emulated cores, one after another. Returns 0, or 1
/// after printing the first violation (with its block) to stderr.
template <typename K, typename... Args>
inline int EmuLaunch(const char* name, K kernel, uint32_t blockDim, Args... args) {
    Core& c = CurrentCore();
    const char* env = std::getenv("TBC_ASCEND_UB_BYTES");
    uint64_t ub = env ? std::strtoull(env, nullptr, 10) : 196608;
    std::vector<std::vector<GmWrite>> writes(blockDim);
    for (uint32_t b = 0; b < blockDim; b++) {
        c.idx = b;
        c.num = blockDim;
        c.ub_storage.assign(ub + BLOCK_BYTES, 0xFF);
        auto base = reinterpret_cast<uintptr_t>(c.ub_storage.data());
        c.ub = c.ub_storage.data() + (AlignUp(base, BLOCK_BYTES) - base);
        c.ub_bytes = ub;
        c.ub_used = 0;
        c.pipe = nullptr;
        c.writes.clear();
        c.flags.clear();
        c.end_error.clear();
        try {
            kernel(args...);
            if (!c.end_error.empty()) throw EmuError(c.end_error);
            for (auto& f : c.flags)
                if (f.second != 0) Fail("kernel end", "a SetFlag was never waited for");
        } catch (const EmuError& e) {
            std::fprintf(stderr, "ascend-emu: %s, block %u of %u: %s\n", name, b, blockDim, e.what());
            return 1;
        }
        writes[b] = c.writes;
    }
    // Two blocks writing the same GM bytes race on the NPU. Sorted by start, each range is
    // checked against the furthest-reaching range so far and the furthest of another block.
    std::vector<std::pair<GmWrite, uint32_t>> all;
    for (uint32_t b = 0; b < blockDim; b++)
        for (auto w : writes[b]) all.push_back({w, b});
    std::sort(all.begin(), all.end(), [](auto& x, auto& y) { return x.first.begin < y.first.begin; });
    std::pair<uintptr_t, int64_t> best{0, -1}, other{0, -1};  // (end, block)
    for (auto& [w, b] : all) {
        auto clash = best.second >= 0 && best.second != int64_t(b) && best.first > w.begin ? best
                     : other.second >= 0 && other.second != int64_t(b) && other.first > w.begin ? other
                                                                                                 : std::pair<uintptr_t, int64_t>{0, -1};
        if (clash.second >= 0) {
            std::fprintf(stderr, "ascend-emu: %s: blocks %ld and %u both write %s (%lu bytes): a race on the NPU\n", name, (long)clash.second, b,
                         GmName(w.begin).c_str(), (unsigned long)(std::min(w.end, clash.first) - w.begin));
            return 1;
        }
        if (w.end > best.first) {
            if (best.second != int64_t(b)) other = best;
            best = {w.end, b};
        } else if (int64_t(b) != best.second && w.end > other.first) {
            other = {w.end, b};
        }
    }
    return 0;
}

}  // namespace AscendC

// The kernel-side spelling of the pipe (a TPipe member in CANN).
using AscendC::GetBlockIdx;
using AscendC::GetBlockNum;
