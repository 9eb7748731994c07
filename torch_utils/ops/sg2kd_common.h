// Shared by the CUDA plugins' headers (original code for this project, MIT): SG2KD_HD marks the
// element-wise arithmetic that runs both in the kernels (nvcc) and in the CPU replay of
// kernel_emulation.cpp (host compiler).

#pragma once

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#define SG2KD_HD __host__ __device__ __forceinline__
#else
#include <cmath>
#define SG2KD_HD inline
#endif
