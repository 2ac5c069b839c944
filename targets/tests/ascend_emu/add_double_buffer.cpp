// The canonical double-buffered Add (CopyIn / Compute / CopyOut over a TQue of depth 2), with a
// DataCopyPad tail, in float and half, on 8 emulated blocks: z must equal x + y exactly.
#include "kernel_operator.h"
using namespace AscendC;

constexpr int32_t BUFFER_NUM = 2;

template <typename T>
class KernelAdd {
public:
    __aicore__ inline void Init(GM_ADDR x, GM_ADDR y, GM_ADDR z, uint32_t total, uint32_t tile) {
        uint32_t per = total / GetBlockNum();
        uint32_t start = per * GetBlockIdx();
        len_ = GetBlockIdx() == GetBlockNum() - 1 ? total - start : per;
        tile_ = tile;
        xGm.SetGlobalBuffer((__gm__ T*)x + start, len_);
        yGm.SetGlobalBuffer((__gm__ T*)y + start, len_);
        zGm.SetGlobalBuffer((__gm__ T*)z + start, len_);
        pipe.InitBuffer(inX, BUFFER_NUM, tile * sizeof(T));
        pipe.InitBuffer(inY, BUFFER_NUM, tile * sizeof(T));
        pipe.InitBuffer(outZ, BUFFER_NUM, tile * sizeof(T));
    }
    __aicore__ inline void Process() {
        for (uint32_t off = 0; off < len_; off += tile_) {
            uint32_t n = len_ - off < tile_ ? len_ - off : tile_;
            CopyIn(off, n);
            Compute(n);
            CopyOut(off, n);
        }
    }

private:
    __aicore__ inline void CopyIn(uint32_t off, uint32_t n) {
        LocalTensor<T> x = inX.AllocTensor<T>();
        LocalTensor<T> y = inY.AllocTensor<T>();
        if (n * sizeof(T) % 32 == 0) {
            DataCopy(x, xGm[off], n);
            DataCopy(y, yGm[off], n);
        } else {
            DataCopyExtParams p{1, uint32_t(n * sizeof(T)), 0, 0, 0};
            DataCopyPadExtParams<T> pad{true, 0, 0, T(0)};
            DataCopyPad(x, xGm[off], p, pad);
            DataCopyPad(y, yGm[off], p, pad);
        }
        inX.EnQue(x);
        inY.EnQue(y);
    }
    __aicore__ inline void Compute(uint32_t n) {
        LocalTensor<T> x = inX.DeQue<T>();
        LocalTensor<T> y = inY.DeQue<T>();
        LocalTensor<T> z = outZ.AllocTensor<T>();
        Add(z, x, y, n);
        outZ.EnQue<T>(z);
        inX.FreeTensor(x);
        inY.FreeTensor(y);
    }
    __aicore__ inline void CopyOut(uint32_t off, uint32_t n) {
        LocalTensor<T> z = outZ.DeQue<T>();
        if (n * sizeof(T) % 32 == 0) {
            DataCopy(zGm[off], z, n);
        } else {
            DataCopyExtParams p{1, uint32_t(n * sizeof(T)), 0, 0, 0};
            DataCopyPad(zGm[off], z, p);
        }
        outZ.FreeTensor(z);
    }

    TPipe pipe;
    TQue<QuePosition::VECIN, BUFFER_NUM> inX, inY;
    TQue<QuePosition::VECOUT, BUFFER_NUM> outZ;
    GlobalTensor<T> xGm, yGm, zGm;
    uint32_t len_ = 0, tile_ = 0;
};

extern "C" __global__ __aicore__ void add_float(GM_ADDR x, GM_ADDR y, GM_ADDR z, uint32_t total, uint32_t tile) {
    KernelAdd<float> op;
    op.Init(x, y, z, total, tile);
    op.Process();
}

extern "C" __global__ __aicore__ void add_half(GM_ADDR x, GM_ADDR y, GM_ADDR z, uint32_t total, uint32_t tile) {
    KernelAdd<half> op;
    op.Init(x, y, z, total, tile);
    op.Process();
}

template <typename T>
int check(uint32_t total, uint32_t tile, uint32_t blocks) {
    GM_ADDR x = GmAlloc(total * sizeof(T));
    GM_ADDR y = GmAlloc(total * sizeof(T));
    GM_ADDR z = GmAlloc(total * sizeof(T));
    T *xs = (T*)x, *ys = (T*)y, *zs = (T*)z;
    for (uint32_t i = 0; i < total; i++) {
        xs[i] = T(float(i % 97) * 0.25f - 12.0f);
        ys[i] = T(float(i % 13) * 0.5f);
        zs[i] = T(-1);
    }
    auto kernel = sizeof(T) == 4 ? add_float : add_half;
    int rc = EmuLaunch("add", kernel, blocks, x, y, z, total, tile);
    if (rc) return rc;
    for (uint32_t i = 0; i < total; i++)
        if (zs[i] != T(float(xs[i]) + float(ys[i]))) {
            std::printf("mismatch at %u: %f\n", i, double(zs[i]));
            return 2;
        }
    std::printf("add %s: %u elements on %u blocks, tile %u: exact\n", sizeof(T) == 4 ? "float" : "half", total, blocks, tile);
    GmFree(x);
    GmFree(y);
    GmFree(z);
    return 0;
}

int main() {
    int rc = check<float>(8 * 2048, 256, 8);      // whole tiles
    rc = rc ? rc : check<float>(8 * 1000 + 3, 256, 8);  // tails through DataCopyPad
    rc = rc ? rc : check<half>(8 * 2048 + 40, 512, 8);
    return rc;
}
