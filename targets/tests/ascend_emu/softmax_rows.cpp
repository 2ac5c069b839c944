// Row softmax of a [rows × cols] float matrix, one row per tile, TQue depth 2, a TBuf for
// the reduction results, scalar reads of them after V→S events: against a float64 reference.
#include "kernel_operator.h"
using namespace AscendC;

class KernelSoftmax {
public:
    __aicore__ inline void Init(GM_ADDR x, GM_ADDR y, uint32_t rows, uint32_t cols) {
        cols_ = cols;
        uint32_t per = (rows + GetBlockNum() - 1) / GetBlockNum();
        row0_ = per * GetBlockIdx();
        rows_ = row0_ >= rows ? 0 : (rows - row0_ < per ? rows - row0_ : per);
        xGm.SetGlobalBuffer((__gm__ float*)x, uint64_t(rows) * cols);
        yGm.SetGlobalBuffer((__gm__ float*)y, uint64_t(rows) * cols);
        pipe.InitBuffer(inQ, 2, cols * sizeof(float));
        pipe.InitBuffer(outQ, 2, cols * sizeof(float));
        pipe.InitBuffer(tmp, 64 * sizeof(float));
    }
    __aicore__ inline void Process() {
        for (uint32_t r = 0; r < rows_; r++) {
            uint64_t off = uint64_t(row0_ + r) * cols_;
            LocalTensor<float> x = inQ.AllocTensor<float>();
            DataCopy(x, xGm[off], cols_);
            inQ.EnQue(x);
            x = inQ.DeQue<float>();
            LocalTensor<float> y = outQ.AllocTensor<float>();
            LocalTensor<float> s = tmp.Get<float>();
            ReduceMax(s, x, y, cols_);
            event_t e = static_cast<event_t>(GetTPipePtr()->FetchEventID(HardEvent::V_S));
            SetFlag<HardEvent::V_S>(e);
            WaitFlag<HardEvent::V_S>(e);
            float m = s.GetValue(0);
            Adds(y, x, -m, cols_);
            PipeBarrier<PIPE_V>();
            Exp(y, y, cols_);
            PipeBarrier<PIPE_V>();
            ReduceSum(s, y, x, cols_);
            SetFlag<HardEvent::V_S>(e);
            WaitFlag<HardEvent::V_S>(e);
            float z = s.GetValue(0);
            Muls(y, y, 1.0f / z, cols_);
            inQ.FreeTensor(x);
            outQ.EnQue(y);
            y = outQ.DeQue<float>();
            DataCopy(yGm[off], y, cols_);
            outQ.FreeTensor(y);
        }
    }

private:
    TPipe pipe;
    TQue<QuePosition::VECIN, 2> inQ;
    TQue<QuePosition::VECOUT, 2> outQ;
    TBuf<TPosition::VECCALC> tmp;
    GlobalTensor<float> xGm, yGm;
    uint32_t cols_ = 0, row0_ = 0, rows_ = 0;
};

extern "C" __global__ __aicore__ void softmax_rows(GM_ADDR x, GM_ADDR y, uint32_t rows, uint32_t cols) {
    KernelSoftmax op;
    op.Init(x, y, rows, cols);
    op.Process();
}

int main() {
    const uint32_t rows = 50, cols = 768;
    GM_ADDR x = GmAlloc(rows * cols * 4);
    GM_ADDR y = GmAlloc(rows * cols * 4);
    float *xs = (float*)x, *ys = (float*)y;
    for (uint32_t i = 0; i < rows * cols; i++) xs[i] = std::sin(0.37 * i) * 6.0f;
    int rc = EmuLaunch("softmax_rows", softmax_rows, 8, x, y, rows, cols);
    if (rc) return rc;
    double worst = 0;
    for (uint32_t r = 0; r < rows; r++) {
        double m = -1e300, z = 0;
        for (uint32_t c = 0; c < cols; c++) m = std::fmax(m, xs[r * cols + c]);
        for (uint32_t c = 0; c < cols; c++) z += std::exp(xs[r * cols + c] - m);
        for (uint32_t c = 0; c < cols; c++) {
            double want = std::exp(xs[r * cols + c] - m) / z;
            worst = std::fmax(worst, std::fabs(ys[r * cols + c] - want) / want);
        }
    }
    std::printf("softmax %ux%u on 8 blocks: worst relative error %.2e\n", rows, cols, worst);
    return worst <= 1e-5 ? 0 : 2;
}
