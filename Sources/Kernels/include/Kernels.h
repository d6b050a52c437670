// Kernels: element-wise float kernels in C, compiled once per x86 vector width (SSE, AVX2,
// AVX-512) and chosen at load time for the CPU the process runs on.
#ifndef ORTHOFUSE_KERNELS_H
#define ORTHOFUSE_KERNELS_H

#include <stddef.h>

/// out = x·Φ(x), the exact (erf) GELU, as PyTorch's nn.GELU().
void of_gelu_forward(float *out, const float *inp, ptrdiff_t count);

/// out = GELU(x) as above and slope = Φ(x) + x·φ(x), its derivative, bitwise as of_gelu_backward's.
void of_gelu_forward_slope(float *out, float *slope, const float *inp, ptrdiff_t count);

/// dinp (+)= dout ⊙ (Φ(x) + x·φ(x)): added when accumulate is non-zero, else overwritten.
void of_gelu_backward(float *dinp, const float *dout, const float *inp, ptrdiff_t count, int accumulate);

/// out = x·σ(1.702x) (QuickGELU, OpenAI CLIP's activation) and slope = its derivative.
void of_quick_gelu_forward_slope(float *out, float *slope, const float *inp, ptrdiff_t count);

/// out = a ⊙ b.
void of_multiply(float *out, const float *a, const float *b, ptrdiff_t count);

/// y += x.
void of_add(float *y, const float *x, ptrdiff_t count);

/// y += a·x (a product then a sum, never fused).
void of_axpy(float *y, float a, const float *x, ptrdiff_t count);

/// out = a − b.
void of_subtract(float *out, const float *a, const float *b, ptrdiff_t count);

/// x *= a.
void of_scale(float *x, float a, ptrdiff_t count);
void of_mirror_upper(float *c, ptrdiff_t n);

/// One AdamW update of `count` parameters (PyTorch's order of operations):
/// p ← p·decay − stepSize·m / (√v / correction2Root + ε), with m and v updated from g first.
void of_adamw(float *parameters, const float *gradient, float *m, float *v, ptrdiff_t count, float decay,
              float beta1, float beta2, float step_size, float correction2_root, float epsilon);

/// The index of the first infinite or NaN value, or −1 when every value is finite.
ptrdiff_t of_first_nonfinite(const float *x, ptrdiff_t count);

/// Each of `rows` rows of `count` values replaced by its softmax (shifted by the row's maximum).
void of_softmax_rows(float *x, ptrdiff_t rows, ptrdiff_t count);

/// LayerNorm over rows of `width`: out = (x − mean)·rstd ⊙ weight + bias, rstd = 1/√(var + ε)
/// with the biased variance (two passes); mean[r] and rstd[r] saved.
void of_layer_norm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                           const float *bias, ptrdiff_t rows, ptrdiff_t width, float epsilon);

/// LayerNorm's backward with g = dout ⊙ weight: dinp += rstd·(g − mean(g) − x̂·mean(g ⊙ x̂));
/// dweight += Σ dout ⊙ x̂; dbias += Σ dout. Any of dinp, dweight, dbias may be NULL.
void of_layer_norm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                            const float *weight, const float *mean, const float *rstd, ptrdiff_t rows,
                            ptrdiff_t width);

/// bfloat16 (little-endian 16-bit patterns, any alignment) to float: the pattern is the float's
/// upper half, so the conversion is exact.
void of_bf16_to_f32(float *out, const void *bf16, ptrdiff_t count);

/// float to bfloat16, rounded to nearest even (as PyTorch's conversion); NaN stays a quiet NaN of
/// the same sign, values beyond bfloat16's range become ±infinity. `bf16` may be unaligned.
void of_f32_to_bf16(void *bf16, const float *inp, ptrdiff_t count);

/// e^x and erf(x) of the kernels above, one value (for tests).
float of_exp_value(float x);
float of_erf_value(float x);

/// The vector width the dispatched kernels use on this CPU: 512, 256 or 128 bits.
int of_kernels_vector_bits(void);

#endif
