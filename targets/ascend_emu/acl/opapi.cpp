// libopapi.so of tbc's ACL stand-in (see acl_standin.h): the aclnn operators tbc's Ascend
// runtime calls, checked the way aclnn checks them (null descriptors, shapes, data types,
// views inside device memory) and computed on the host when the executor runs.
#include "acl_standin.h"

#include <cmath>
#include <cstring>
#include <functional>

using tbc_standin::Scalar;
using tbc_standin::Tensor;

namespace {

constexpr int kNullptr = 161001;
constexpr int kInvalid = 161002;

struct Executor {
    std::function<int()> run;
};

int Fail(int code, const std::string& m) { return tbc_standin_fail(code, m.c_str()); }

// The view's storage lies in device memory.
bool InDevice(const Tensor* t) {
    return tbc_standin_is_device(t->data, size_t(t->StorageElems()) * tbc_standin::ElemBytes(t->dtype));
}

// Offset (elements) of the view's element `index` (row-major over dims).
int64_t At(const Tensor* t, int64_t index) {
    int64_t off = t->offset;
    for (int d = int(t->dims.size()) - 1; d >= 0; d--) {
        off += (index % t->dims[d]) * t->strides[d];
        index /= t->dims[d];
    }
    return off;
}

// Every element the view reaches lies in its storage.
bool ViewFits(const Tensor* t) {
    if (t->dims.size() != t->strides.size()) return false;
    int64_t last = t->offset;
    for (size_t d = 0; d < t->dims.size(); d++) {
        if (t->dims[d] <= 0 || t->strides[d] < 0) return false;
        last += (t->dims[d] - 1) * t->strides[d];
    }
    return t->offset >= 0 && last < t->StorageElems();
}

float Load(const Tensor* t, int64_t off) {
    switch (t->dtype) {
        case tbc_standin::FLOAT: return static_cast<const float*>(t->data)[off];
        case tbc_standin::FLOAT16: return float(static_cast<const _Float16*>(t->data)[off]);
        case tbc_standin::BF16: {
            uint32_t bits = uint32_t(static_cast<const uint16_t*>(t->data)[off]) << 16;
            float f;
            std::memcpy(&f, &bits, 4);
            return f;
        }
        default: return 0;
    }
}

void Store(const Tensor* t, int64_t off, float v) {
    switch (t->dtype) {
        case tbc_standin::FLOAT: static_cast<float*>(t->data)[off] = v; break;
        case tbc_standin::FLOAT16: static_cast<_Float16*>(t->data)[off] = _Float16(v); break;
        case tbc_standin::BF16: {
            uint32_t bits;
            std::memcpy(&bits, &v, 4);
            bits += 0x7FFF + ((bits >> 16) & 1);  // round to nearest even
            static_cast<uint16_t*>(t->data)[off] = uint16_t(bits >> 16);
            break;
        }
    }
}

bool IsFloat(int t) { return t == tbc_standin::FLOAT || t == tbc_standin::FLOAT16 || t == tbc_standin::BF16; }
bool IsIndex(int t) { return t == tbc_standin::INT32 || t == tbc_standin::INT64; }

int64_t Index(const Tensor* t, int64_t i) {
    int64_t off = At(t, i);
    return t->dtype == tbc_standin::INT32 ? static_cast<const int32_t*>(t->data)[off]
                                          : static_cast<const int64_t*>(t->data)[off];
}

// Checks common to every operand: present, a view inside device memory.
int CheckOperand(const char* op, const char* name, const Tensor* t) {
    if (!t) return Fail(kNullptr, std::string(op) + ": " + name + " is null");
    if (!ViewFits(t)) return Fail(kInvalid, std::string(op) + ": " + name + " " + t->Describe() + " reaches past its storage");
    if (!InDevice(t)) return Fail(kInvalid, std::string(op) + ": " + name + " " + t->Describe() + " is not in device memory");
    return 0;
}

int Make(uint64_t* workspaceSize, void** executor, std::function<int()> run) {
    *workspaceSize = 0;
    *executor = new Executor{std::move(run)};
    return 0;
}

// Runs and frees a one-shot executor.
int Run(const char* op, void* executor, aclrtStream stream) {
    if (!executor) return Fail(kNullptr, std::string(op) + ": null executor");
    if (!tbc_standin_is_stream(stream)) return Fail(kInvalid, std::string(op) + ": unknown stream");
    auto* e = static_cast<Executor*>(executor);
    int status = e->run();
    delete e;
    return status;
}

}  // namespace

extern "C" {

// out[b] = self[b] · mat2[b]: 2-D, or 3-D with one batch size; f32 sums, rounded once to out.
int aclnnMatmulGetWorkspaceSize(const void* self_, const void* mat2_, void* out_, int8_t /*cubeMathType*/,
                                uint64_t* workspaceSize, void** executor) {
    auto *a = static_cast<const Tensor*>(self_), *b = static_cast<const Tensor*>(mat2_);
    auto* c = static_cast<const Tensor*>(out_);
    const char* op = "aclnnMatmul";
    for (auto [name, t] : {std::pair{"self", a}, {"mat2", b}, {"out", c}})
        if (int e = CheckOperand(op, name, t)) return e;
    size_t r = a->dims.size();
    if (r < 2 || r > 3 || b->dims.size() != r || c->dims.size() != r)
        return Fail(kInvalid, "aclnnMatmul: operands of ranks " + std::to_string(a->dims.size()) + ", " +
                                  std::to_string(b->dims.size()) + ", " + std::to_string(c->dims.size()) + " (2 or 3, all alike)");
    int64_t batch = r == 3 ? a->dims[0] : 1;
    int64_t m = a->dims[r - 2], k = a->dims[r - 1], n = b->dims[r - 1];
    if (b->dims[r - 2] != k || c->dims[r - 2] != m || c->dims[r - 1] != n ||
        (r == 3 && (b->dims[0] != batch || c->dims[0] != batch)))
        return Fail(kInvalid, std::string("aclnnMatmul: shapes ") + a->Describe() + " · " + b->Describe() + " → " + c->Describe() + " do not match");
    if (!IsFloat(a->dtype) || a->dtype != b->dtype || a->dtype != c->dtype)
        return Fail(kInvalid, "aclnnMatmul: self, mat2 and out must have one float data type");
    Tensor A = *a, B = *b, C = *c;
    return Make(workspaceSize, executor, [=]() {
        for (int64_t bi = 0; bi < batch; bi++)
            for (int64_t i = 0; i < m; i++)
                for (int64_t j = 0; j < n; j++) {
                    float sum = 0;
                    for (int64_t l = 0; l < k; l++)
                        sum += Load(&A, At(&A, (bi * m + i) * k + l)) * Load(&B, At(&B, (bi * k + l) * n + j));
                    Store(&C, At(&C, (bi * m + i) * n + j), sum);
                }
        return 0;
    });
}

int aclnnMatmul(void*, uint64_t, void* executor, aclrtStream stream) { return Run("aclnnMatmul", executor, stream); }

// out[i, :] = weight[indices[i], :].
int aclnnEmbeddingGetWorkspaceSize(const void* weight_, const void* indices_, const void* out_, uint64_t* workspaceSize,
                                   void** executor) {
    auto *w = static_cast<const Tensor*>(weight_), *ix = static_cast<const Tensor*>(indices_);
    auto* out = static_cast<const Tensor*>(out_);
    const char* op = "aclnnEmbedding";
    for (auto [name, t] : {std::pair{"weight", w}, {"indices", ix}, {"out", out}})
        if (int e = CheckOperand(op, name, t)) return e;
    if (w->dims.size() != 2 || !IsIndex(ix->dtype) || out->dims.size() != ix->dims.size() + 1 ||
        out->Numel() != ix->Numel() * w->dims[1] || out->dtype != w->dtype)
        return Fail(kInvalid, std::string("aclnnEmbedding: weight ") + w->Describe() + ", indices " + ix->Describe() + ", out " + out->Describe() + " do not match");
    Tensor W = *w, I = *ix, O = *out;
    return Make(workspaceSize, executor, [=]() {
        int64_t rows = W.dims[0], row = W.dims[1];
        for (int64_t i = 0; i < I.Numel(); i++) {
            int64_t id = Index(&I, i);
            if (id < 0 || id >= rows)
                return Fail(kInvalid, "aclnnEmbedding: index " + std::to_string(id) + " outside the " + std::to_string(rows) + " rows of weight");
            for (int64_t j = 0; j < row; j++) Store(&O, At(&O, i * row + j), Load(&W, At(&W, id * row + j)));
        }
        return 0;
    });
}

int aclnnEmbedding(void*, uint64_t, void* executor, aclrtStream stream) { return Run("aclnnEmbedding", executor, stream); }

// out = self; out[index[i], :] += alpha · source[i, :] (dim 0).
int aclnnIndexAddGetWorkspaceSize(const void* self_, int64_t dim, const void* index_, const void* source_,
                                  const void* alpha_, void* out_, uint64_t* workspaceSize, void** executor) {
    auto *s = static_cast<const Tensor*>(self_), *ix = static_cast<const Tensor*>(index_);
    auto *src = static_cast<const Tensor*>(source_), *out = static_cast<const Tensor*>(out_);
    auto* alpha = static_cast<const Scalar*>(alpha_);
    const char* op = "aclnnIndexAdd";
    for (auto [name, t] : {std::pair{"self", s}, {"index", ix}, {"source", src}, {"out", out}})
        if (int e = CheckOperand(op, name, t)) return e;
    if (!alpha) return Fail(kNullptr, "aclnnIndexAdd: alpha is null");
    if (dim != 0) return Fail(kInvalid, "aclnnIndexAdd: the stand-in adds along dim 0 only");
    if (s->dims.size() != 2 || ix->dims.size() != 1 || !IsIndex(ix->dtype) || src->dims.size() != 2 ||
        src->dims[0] != ix->dims[0] || src->dims[1] != s->dims[1] || out->dims != s->dims || out->dtype != s->dtype ||
        src->dtype != s->dtype)
        return Fail(kInvalid, std::string("aclnnIndexAdd: self ") + s->Describe() + ", index " + ix->Describe() + ", source " + src->Describe() + ", out " + out->Describe() + " do not match");
    Tensor S = *s, I = *ix, U = *src, O = *out;
    float a = float(alpha->value);
    return Make(workspaceSize, executor, [=]() {
        int64_t rows = S.dims[0], row = S.dims[1];
        if (S.data != O.data)
            for (int64_t e = 0; e < rows * row; e++) Store(&O, At(&O, e), Load(&S, At(&S, e)));
        for (int64_t i = 0; i < I.Numel(); i++) {
            int64_t id = Index(&I, i);
            if (id < 0 || id >= rows)
                return Fail(kInvalid, "aclnnIndexAdd: index " + std::to_string(id) + " outside the " + std::to_string(rows) + " rows of self");
            for (int64_t j = 0; j < row; j++) {
                int64_t o = At(&O, id * row + j);
                Store(&O, o, Load(&O, o) + a * Load(&U, At(&U, i * row + j)));
            }
        }
        return 0;
    });
}

int aclnnIndexAdd(void*, uint64_t, void* executor, aclrtStream stream) { return Run("aclnnIndexAdd", executor, stream); }
}
