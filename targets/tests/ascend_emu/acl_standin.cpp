// Our ACL stand-in (targets/ascend_emu/acl/) on its own: the aclnn operators compute the right
// numbers (a transposed, batched matmul; an embedding; an index-add with repeated rows) and every
// misuse the trainer could make is an error with a message: calls before aclInit, copies in the
// wrong direction or past an allocation, freeing a foreign pointer, mismatched matmul shapes, an
// index outside the table.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
int aclInit(const char*);
int aclrtSetDevice(int32_t);
int aclrtCreateStream(void**);
int aclrtMalloc(void**, size_t, int);
int aclrtFree(void*);
int aclrtMemcpy(void*, size_t, const void*, size_t, int);
const char* aclGetRecentErrMsg();
void* aclCreateTensor(const int64_t*, uint64_t, int, const int64_t*, int64_t, int, const int64_t*, uint64_t, void*);
void* aclCreateScalar(void*, int);
int aclnnMatmulGetWorkspaceSize(const void*, const void*, void*, int8_t, uint64_t*, void**);
int aclnnMatmul(void*, uint64_t, void*, void*);
int aclnnEmbeddingGetWorkspaceSize(const void*, const void*, const void*, uint64_t*, void**);
int aclnnEmbedding(void*, uint64_t, void*, void*);
int aclnnIndexAddGetWorkspaceSize(const void*, int64_t, const void*, const void*, const void*, void*, uint64_t*, void**);
int aclnnIndexAdd(void*, uint64_t, void*, void*);
}

enum { H2D = 1, D2H = 2, FLOAT = 0, INT32 = 3 };
static int failures = 0;

// `status` must be an error whose message contains `want`.
static void ExpectError(const char* what, int status, const char* want) {
    const char* m = aclGetRecentErrMsg();
    std::string msg = m ? m : "";
    if (status == 0 || msg.find(want) == std::string::npos) {
        std::printf("FAIL %s: status %d, message '%s' (expected '%s')\n", what, status, msg.c_str(), want);
        failures++;
    } else {
        std::printf("ok   %s: %s\n", what, msg.c_str());
    }
}

static void Expect(const char* what, bool cond) {
    std::printf("%s %s\n", cond ? "ok  " : "FAIL", what);
    if (!cond) failures++;
}

static void* Device(const std::vector<float>& host) {
    void* p = nullptr;
    aclrtMalloc(&p, host.size() * 4, 0);
    aclrtMemcpy(p, host.size() * 4, host.data(), host.size() * 4, H2D);
    return p;
}

static std::vector<float> Host(void* p, size_t n) {
    std::vector<float> out(n);
    aclrtMemcpy(out.data(), n * 4, p, n * 4, D2H);
    return out;
}

static void* Tensor(std::vector<int64_t> dims, std::vector<int64_t> strides, int64_t storage, int type, void* data) {
    return aclCreateTensor(dims.data(), dims.size(), type, strides.data(), 0, 2, &storage, 1, data);
}

int main() {
    void* p = nullptr;
    ExpectError("malloc before aclInit", aclrtMalloc(&p, 64, 0), "before aclInit");
    aclInit(nullptr);
    aclrtSetDevice(0);
    void* stream = nullptr;
    aclrtCreateStream(&stream);

    float host[4] = {1, 2, 3, 4};
    void* dev = nullptr;
    aclrtMalloc(&dev, 16, 0);
    ExpectError("H2D into host memory", aclrtMemcpy(host, 16, host, 16, H2D), "destination is not 16 bytes of device memory");
    ExpectError("D2H past the allocation", aclrtMemcpy(host, 32, dev, 32, D2H), "source is not 32 bytes of device memory");
    ExpectError("count over destMax", aclrtMemcpy(dev, 8, host, 16, H2D), "exceeds destMax");
    ExpectError("free of a host pointer", aclrtFree(host), "aclrtFree of a pointer aclrtMalloc did not return");

    // c[b] = a[b] · bᵀ[b] with b stored transposed: batch 2, m 2, k 3, n 2.
    std::vector<float> a = {1, 2, 3, 4, 5, 6, -1, 0, 2, 1, 1, 1};
    std::vector<float> bt = {1, 0, 1, 2, 1, 0, 0, 1, 1, 1, 0, 2};  // [2][n=2][k=3]
    void *da = Device(a), *db = Device(bt), *dc = Device(std::vector<float>(8, 0));
    void* ta = Tensor({2, 2, 3}, {6, 3, 1}, 12, FLOAT, da);
    void* tb = Tensor({2, 3, 2}, {6, 1, 3}, 12, FLOAT, db);
    void* tc = Tensor({2, 2, 2}, {4, 2, 1}, 8, FLOAT, dc);
    uint64_t ws = 0;
    void* exec = nullptr;
    int s = aclnnMatmulGetWorkspaceSize(ta, tb, tc, 0, &ws, &exec);
    s = s ? s : aclnnMatmul(nullptr, ws, exec, stream);
    std::vector<float> want;
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++) {
                float sum = 0;
                for (int l = 0; l < 3; l++) sum += a[b * 6 + i * 3 + l] * bt[b * 6 + j * 3 + l];
                want.push_back(sum);
            }
    Expect("batched matmul with a transposed operand", s == 0 && Host(dc, 8) == want);
    void* bad = Tensor({2, 2, 2}, {4, 2, 1}, 8, FLOAT, da);
    ExpectError("matmul of mismatched shapes", aclnnMatmulGetWorkspaceSize(ta, bad, tc, 0, &ws, &exec), "do not match");

    // Embedding and index-add over a 3 × 2 table.
    void* table = Device({10, 11, 20, 21, 30, 31});
    int32_t ids[3] = {2, 0, 2};
    void* dids = nullptr;
    aclrtMalloc(&dids, 12, 0);
    aclrtMemcpy(dids, 12, ids, 12, H2D);
    void* out = Device(std::vector<float>(6, 0));
    void* tt = Tensor({3, 2}, {2, 1}, 6, FLOAT, table);
    void* ti = Tensor({3}, {1}, 3, INT32, dids);
    void* to = Tensor({3, 2}, {2, 1}, 6, FLOAT, out);
    s = aclnnEmbeddingGetWorkspaceSize(tt, ti, to, &ws, &exec);
    s = s ? s : aclnnEmbedding(nullptr, ws, exec, stream);
    Expect("embedding", s == 0 && Host(out, 6) == std::vector<float>{30, 31, 10, 11, 30, 31});
    float one = 1;
    void* alpha = aclCreateScalar(&one, FLOAT);
    void* acc = Device(std::vector<float>(6, 0));
    void* tacc = Tensor({3, 2}, {2, 1}, 6, FLOAT, acc);
    s = aclnnIndexAddGetWorkspaceSize(tacc, 0, ti, to, alpha, tacc, &ws, &exec);
    s = s ? s : aclnnIndexAdd(nullptr, ws, exec, stream);
    Expect("index-add with a repeated row", s == 0 && Host(acc, 6) == std::vector<float>{10, 11, 0, 0, 60, 62});
    ids[1] = 3;
    aclrtMemcpy(dids, 12, ids, 12, H2D);
    s = aclnnEmbeddingGetWorkspaceSize(tt, ti, to, &ws, &exec);
    ExpectError("embedding index outside the table", s ? s : aclnnEmbedding(nullptr, ws, exec, stream), "index 3 outside the 3 rows of weight");
    return failures ? 1 : 0;
}
