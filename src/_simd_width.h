/* The vector width of the ISA a SIMD build of a module is compiled for (one build per ISA:
   baseline x86-64 SSE2, AVX2+FMA, AVX-512), and GCC vector types of that width: shared by the
   "blocked" (_blocked_conv.h) and "rows" (_rowconv.h) conv microkernels. */
#ifndef CNN_SIMD_WIDTH_H
#define CNN_SIMD_WIDTH_H

#include <stddef.h>
#include <stdint.h>

#if defined(__AVX512F__)
#define CNN_VBYTES 64
#elif defined(__AVX__)
#define CNN_VBYTES 32
#else
#define CNN_VBYTES 16
#endif

typedef float cnn_vf __attribute__((vector_size(CNN_VBYTES)));
typedef double cnn_vd __attribute__((vector_size(CNN_VBYTES)));
typedef int32_t cnn_vmf __attribute__((vector_size(CNN_VBYTES))); /* lane masks of cnn_vf */
typedef int64_t cnn_vmd __attribute__((vector_size(CNN_VBYTES))); /* lane masks of cnn_vd */
#define CNN_VL_float (CNN_VBYTES / 4)
#define CNN_VL_double (CNN_VBYTES / 8)

/* Lanes of one vector of T. */
static inline ptrdiff_t cnn_vec_lanes_float(void) { return CNN_VL_float; }
static inline ptrdiff_t cnn_vec_lanes_double(void) { return CNN_VL_double; }

#endif /* CNN_SIMD_WIDTH_H */
