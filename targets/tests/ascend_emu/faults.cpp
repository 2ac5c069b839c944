// Planted faults, one per argument: each must end the launch with a clear message.
#include "kernel_operator.h"
using namespace AscendC;

static int fault = 0;

extern "C" __global__ __aicore__ void faulty(GM_ADDR x, GM_ADDR y) {
    TPipe pipe;
    TQue<QuePosition::VECIN, 1> q;
    GlobalTensor<float> xGm, yGm;
    xGm.SetGlobalBuffer((__gm__ float*)x, 1024);
    yGm.SetGlobalBuffer((__gm__ float*)y, 1024);
    switch (fault) {
        case 1: {  // 10 floats = 40 bytes: not a whole number of 32-byte blocks
            pipe.InitBuffer(q, 1, 64);
            LocalTensor<float> t = q.AllocTensor<float>();
            DataCopy(t, xGm, 10);
            q.FreeTensor(t);
            break;
        }
        case 2: {  // 200 KiB of queue buffers in a 192 KiB Unified Buffer
            pipe.InitBuffer(q, 2, 100 * 1024);
            break;
        }
        case 3: {  // DeQue without an EnQue
            pipe.InitBuffer(q, 1, 1024);
            LocalTensor<float> t = q.DeQue<float>();
            q.FreeTensor(t);
            break;
        }
        case 4: {  // every block writes the same 256 floats (the block offset forgotten)
            pipe.InitBuffer(q, 1, 1024);
            LocalTensor<float> t = q.AllocTensor<float>();
            DataCopy(t, xGm, 256);
            DataCopy(yGm, t, 256);
            q.FreeTensor(t);
            break;
        }
        case 5: {  // a vector operand 4 bytes into a buffer
            pipe.InitBuffer(q, 1, 1024);
            LocalTensor<float> t = q.AllocTensor<float>();
            Duplicate(t, 0.0f, 256);
            Exp(t[1], t[1], 8);
            q.FreeTensor(t);
            break;
        }
        case 6: {  // a tensor never freed
            pipe.InitBuffer(q, 1, 1024);
            LocalTensor<float> t = q.AllocTensor<float>();
            Duplicate(t, 0.0f, 256);
            break;
        }
        default: break;
    }
}

int main(int argc, char** argv) {
    fault = argc > 1 ? std::atoi(argv[1]) : 0;
    GM_ADDR x = GmAlloc(4096);
    GM_ADDR y = GmAlloc(4096);
    return EmuLaunch("faulty", faulty, 4, x, y);
}
