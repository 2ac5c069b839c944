// Compare / Compares write one bit per element, little-endian in each byte; Select picks by
// those bits (a NaN in the branch not taken stays out); a compare over a partial 256-byte
// repeat is a fault (argv[1] = "partial").
#include <cmath>
#include <cstring>
#include "kernel_operator.h"
using namespace AscendC;

extern "C" __global__ __aicore__ void compare_select(GM_ADDR x, GM_ADDR y, GM_ADDR bits, GM_ADDR z, uint32_t count) {
    TPipe pipe;
    TBuf<TPosition::VECCALC> buf;
    GlobalTensor<float> xGm, yGm, zGm;
    GlobalTensor<uint8_t> bGm;
    xGm.SetGlobalBuffer((__gm__ float*)x, 64);
    yGm.SetGlobalBuffer((__gm__ float*)y, 64);
    zGm.SetGlobalBuffer((__gm__ float*)z, 128);
    bGm.SetGlobalBuffer((__gm__ uint8_t*)bits, 32);
    pipe.InitBuffer(buf, 5 * 256);
    LocalTensor<float> a = buf.Get<float>(), b = a[64], d = a[128], e = a[192];
    LocalTensor<uint8_t> m = a[256].ReinterpretCast<uint8_t>();
    DataCopy(a, xGm, 64);
    DataCopy(b, yGm, 64);
    Compare(m, a, b, CMPMODE::LT, count);                   // bits 0..7: a < b
    DataCopy(bGm, m, 32);
    Select(d, m, a, b, SELMODE::VSEL_TENSOR_TENSOR_MODE, 64);  // min(a, b), NaN not taken
    Compares(m, a, 3.0f, CMPMODE::GE, 64);
    Select(e, m, a, -1.0f, SELMODE::VSEL_TENSOR_SCALAR_MODE, 64);
    DataCopy(zGm, d, 64);
    DataCopy(zGm[64], e, 64);
}

int main(int argc, char** argv) {
    bool partial = argc > 1 && std::strcmp(argv[1], "partial") == 0;
    GM_ADDR x = GmAlloc(256);
    GM_ADDR y = GmAlloc(256);
    GM_ADDR bits = GmAlloc(32);
    GM_ADDR z = GmAlloc(512);
    float *xs = (float*)x, *ys = (float*)y;
    for (int i = 0; i < 64; i++) {
        xs[i] = float(i % 5);
        ys[i] = i == 9 ? NAN : 2.0f;
    }
    xs[3] = NAN;
    int rc = EmuLaunch("compare_select", compare_select, 1, x, y, bits, z, partial ? 10u : 64u);
    if (rc) return rc;
    // x = 0 1 2 NaN 4 0 1 2 | 3 4 0 ...: x < 2 at 0, 1, 5, 6 → 0b01100011 = 0x63; byte 1: x[8..16)
    // = 3 4 0 1 2 3 4 0 against 2 (x[9] vs NaN: false) → bits 2, 3, 7 = 0x8C.
    const uint8_t* bs = (const uint8_t*)bits;
    const float* zs = (const float*)z;
    bool ok = bs[0] == 0x63 && bs[1] == 0x8C;
    for (int i = 0; i < 64; i++) {
        float want_d = xs[i] < ys[i] ? xs[i] : ys[i];
        float want_e = xs[i] >= 3.0f ? xs[i] : -1.0f;
        bool same_d = (std::isnan(want_d) && std::isnan(zs[i])) || want_d == zs[i];
        ok = ok && same_d && zs[64 + i] == want_e;
    }
    std::printf("Compare/Select: mask bytes 0x%02X 0x%02X, selections %s\n", bs[0], bs[1], ok ? "right" : "wrong");
    return ok ? 0 : 2;
}
