// ReduceSum in half follows the NPU's order (a binary tree in each 256-byte repeat, repeats in
// order, each addition rounded to half): the emulator's result equals that order computed here
// and differs from a plain left-to-right half sum on this input.
#include "kernel_operator.h"
using namespace AscendC;

extern "C" __global__ __aicore__ void reduce_half(GM_ADDR x, GM_ADDR y, uint32_t n) {
    TPipe pipe;
    TQue<QuePosition::VECIN, 1> inQ;
    TBuf<TPosition::VECCALC> out;
    GlobalTensor<half> xGm, yGm;
    xGm.SetGlobalBuffer((__gm__ half*)x, n);
    yGm.SetGlobalBuffer((__gm__ half*)y, 16);
    pipe.InitBuffer(inQ, 1, n * sizeof(half));
    pipe.InitBuffer(out, 32);
    LocalTensor<half> t = inQ.AllocTensor<half>();
    DataCopy(t, xGm, n);
    inQ.EnQue(t);
    t = inQ.DeQue<half>();
    LocalTensor<half> s = out.Get<half>();
    Duplicate(s, half(0), 16);
    ReduceSum(s, t, t, n);
    DataCopy(yGm, s, 16);
    inQ.FreeTensor(t);
}

int main() {
    const uint32_t n = 1024;  // 8 repeats of 128 halves
    GM_ADDR x = GmAlloc(n * 2);
    GM_ADDR y = GmAlloc(32);
    half* xs = (half*)x;
    for (uint32_t i = 0; i < n; i++) xs[i] = half(1.0f + float(i % 7) * 0.001f);
    int rc = EmuLaunch("reduce_half", reduce_half, 1, x, y, n);
    if (rc) return rc;
    half total = 0, linear = 0;
    for (uint32_t r = 0; r < n / 128; r++) {
        std::vector<half> v(xs + r * 128, xs + (r + 1) * 128);
        while (v.size() > 1) {
            std::vector<half> w;
            for (size_t i = 0; i < v.size(); i += 2) w.push_back(half(float(v[i]) + float(v[i + 1])));
            v = w;
        }
        total = r == 0 ? v[0] : half(float(total) + float(v[0]));
    }
    for (uint32_t i = 0; i < n; i++) linear = half(float(linear) + float(xs[i]));
    half got = ((half*)y)[0];
    std::printf("ReduceSum half of %u: %.4f (tree order %.4f, left to right %.4f)\n", n, double(got), double(total), double(linear));
    return got == total && got != linear ? 0 : 2;
}
