// libnnopbase.so of tbc's ACL stand-in (see acl_standin.h): tensor and scalar descriptors.
#include "acl_standin.h"

using tbc_standin::Scalar;
using tbc_standin::Tensor;

extern "C" {

void* aclCreateTensor(const int64_t* viewDims, uint64_t viewDimsNum, int dataType, const int64_t* stride,
                      int64_t offset, int /*format*/, const int64_t* storageDims, uint64_t storageDimsNum,
                      void* tensorData) {
    if (tbc_standin::ElemBytes(dataType) == 0) {
        tbc_standin_fail(161002, ("aclCreateTensor: data type " + std::to_string(dataType) + " is not one the stand-in has").c_str());
        return nullptr;
    }
    auto* t = new Tensor{{viewDims, viewDims + viewDimsNum},
                         {stride, stride + viewDimsNum},
                         offset,
                         dataType,
                         {storageDims, storageDims + storageDimsNum},
                         tensorData};
    return t;
}

int aclDestroyTensor(const void* tensor) {
    delete static_cast<const Tensor*>(tensor);
    return 0;
}

void* aclCreateScalar(void* value, int dataType) {
    double v;
    switch (dataType) {
        case tbc_standin::FLOAT: v = *static_cast<float*>(value); break;
        case tbc_standin::INT32: v = *static_cast<int32_t*>(value); break;
        case tbc_standin::INT64: v = double(*static_cast<int64_t*>(value)); break;
        default:
            tbc_standin_fail(161002, "aclCreateScalar: unsupported data type");
            return nullptr;
    }
    return new Scalar{v, dataType};
}

int aclDestroyScalar(const void* scalar) {
    delete static_cast<const Scalar*>(scalar);
    return 0;
}
}
