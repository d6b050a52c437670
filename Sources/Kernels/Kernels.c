// Kernels.c: the element-wise kernels of Kernels.h. Swift's SIMD types compile to the baseline
// x86-64 instruction set (4-lane SSE), so the hot element-wise loops live here, written as plain
// loops that the compiler vectorises once per width (target_clones), dispatched by the CPU.
//
// Floating-point contraction is off (the pragma below): every version performs
// the same IEEE operations in the same order, so the results are bitwise the same whichever
// version the CPU selects — a job's task vectors do not depend on the host's vector width. The
// polynomials of exp and erf use fused multiply-adds, written out (fmaf, exactly rounded by
// definition): one instruction in the AVX-512 and x86-64-v3 (AVX2 + FMA) versions, the C
// library's fmaf in the baseline one, the same bits in all three.
#include "Kernels.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#pragma STDC FP_CONTRACT OFF

#if defined(__x86_64__) && defined(__clang__)
#define OF_VERSIONED __attribute__((target_clones("avx512f", "arch=x86-64-v3", "default")))
#else
#define OF_VERSIONED
#endif

static const float inverse_sqrt2 = 0.70710678118654752f;
static const float inverse_sqrt2pi = 0.39894228040143268f;

/// e^x: x = n·ln2 + r with |r| ≤ ln2/2 (ln2 in two parts), a degree-6 Taylor polynomial for e^r
/// (relative error < 2e-7) and 2^n built in the exponent bits; x clamped to [−87, 88].
static inline __attribute__((always_inline)) float of_exp(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    // Adding 1.5·2²³ rounds to the nearest integer, which the sum's low mantissa bits then hold.
    const float shifted = fmaf(x, 1.442695040888963f, 12582912.0f);
    const float n = shifted - 12582912.0f;
    const float r = fmaf(n, 2.12194440e-4f, fmaf(-n, 0.693359375f, x));
    float p = 1.0f / 720.0f;
    p = fmaf(p, r, 1.0f / 120.0f);
    p = fmaf(p, r, 1.0f / 24.0f);
    p = fmaf(p, r, 1.0f / 6.0f);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    int32_t bits;
    memcpy(&bits, &shifted, sizeof bits);
    const int32_t exponent = ((bits - 0x4B400000) + 127) << 23;
    float scale;
    memcpy(&scale, &exponent, sizeof scale);
    return p * scale;
}

/// erf(x) by Abramowitz & Stegun 7.1.26 on |x| (formula error ≤ 1.5e-7), odd symmetry; also
/// hands back the e^(−x²) it computed on the way (GELU's slope needs the same Gaussian).
static inline __attribute__((always_inline)) float of_erf_with_gaussian(float x, float *gaussian) {
    const float magnitude = x < 0.0f ? -x : x;
    const float t = 1.0f / fmaf(0.3275911f, magnitude, 1.0f);
    float p = 1.061405429f;
    p = fmaf(p, t, -1.453152027f);
    p = fmaf(p, t, 1.421413741f);
    p = fmaf(p, t, -0.284496736f);
    p = fmaf(p, t, 0.254829592f);
    *gaussian = of_exp(-(magnitude * magnitude));
    const float value = fmaf(-(p * t), *gaussian, 1.0f);
    return x < 0.0f ? -value : value;
}

static inline __attribute__((always_inline)) float of_erf(float x) {
    float gaussian;
    return of_erf_with_gaussian(x, &gaussian);
}

/// GELU(x) = x·Φ(x) and its slope Φ(x) + x·φ(x), where φ(x) = e^(−x²/2)/√(2π) is the Gaussian
/// erf(x/√2) already computed: one exp for both.
static inline __attribute__((always_inline)) float gelu_with_slope(float x, float *slope) {
    float gaussian;
    const float erf_value = of_erf_with_gaussian(x * inverse_sqrt2, &gaussian);
    const float cdf = 0.5f * (1.0f + erf_value);
    *slope = cdf + x * (inverse_sqrt2pi * gaussian);
    return 0.5f * x * (1.0f + erf_value);
}

OF_VERSIONED
void of_gelu_forward(float *restrict out, const float *restrict inp, ptrdiff_t count) {
    for (ptrdiff_t i = 0; i < count; i++) {
        float slope;
        out[i] = gelu_with_slope(inp[i], &slope);
    }
}

OF_VERSIONED
void of_gelu_forward_slope(float *restrict out, float *restrict slope, const float *restrict inp, ptrdiff_t count) {
    for (ptrdiff_t i = 0; i < count; i++) out[i] = gelu_with_slope(inp[i], &slope[i]);
}

OF_VERSIONED
void of_gelu_backward(float *restrict dinp, const float *restrict dout, const float *restrict inp, ptrdiff_t count,
                      int accumulate) {
    for (ptrdiff_t i = 0; i < count; i++) {
        float slope;
        (void)gelu_with_slope(inp[i], &slope);
        const float gradient = dout[i] * slope;
        dinp[i] = accumulate ? dinp[i] + gradient : gradient;
    }
}

/// QuickGELU(x) = x·σ(1.702x), OpenAI CLIP's activation, and its slope σ + 1.702·x·σ·(1 − σ),
/// with σ = 1/(1 + e^(−1.702x)): one exp for both.
static inline __attribute__((always_inline)) float quick_gelu_with_slope(float x, float *slope) {
    const float sigmoid = 1.0f / (1.0f + of_exp(-1.702f * x));
    *slope = sigmoid + 1.702f * x * (sigmoid * (1.0f - sigmoid));
    return x * sigmoid;
}

OF_VERSIONED
void of_quick_gelu_forward_slope(float *restrict out, float *restrict slope, const float *restrict inp,
                                 ptrdiff_t count) {
    for (ptrdiff_t i = 0; i < count; i++) out[i] = quick_gelu_with_slope(inp[i], &slope[i]);
}

OF_VERSIONED
void of_multiply(float *restrict out, const float *restrict a, const float *restrict b, ptrdiff_t count) {
    for (ptrdiff_t i = 0; i < count; i++) out[i] = a[i] * b[i];
}

// The flat element-wise operations. `y` and `x` may be the same buffer (y += y), so no restrict.
OF_VERSIONED
void of_add(float *y, const float *x, ptrdiff_t count) {
    for (ptrdiff_t i = 0; i < count; i++) y[i] += x[i];
}

OF_VERSIONED
void of_axpy(float *y, float a, const float *x, ptrdiff_t count) {
    for (ptrdiff_t i = 0; i < count; i++) y[i] += a * x[i];
}

OF_VERSIONED
void of_subtract(float *out, const float *a, const float *b, ptrdiff_t count) {
    // In place (out == a) gets a loop of its own: the general loop's overlap check would send
    // it down the scalar path.
    if (out == a) {
        for (ptrdiff_t i = 0; i < count; i++) out[i] -= b[i];
        return;
    }
    for (ptrdiff_t i = 0; i < count; i++) out[i] = a[i] - b[i];
}

OF_VERSIONED
void of_scale(float *x, float a, ptrdiff_t count) {
    for (ptrdiff_t i = 0; i < count; i++) x[i] *= a;
}

/// c[j][i] = c[i][j] for i < j: the upper triangle of a row-major n × n matrix copied onto the
/// lower, tile by tile, so that both the column reads and the row writes stay within a few cache
/// lines (row by row, every read of a 256 × 256 matrix touched another line).
void of_mirror_upper(float *c, ptrdiff_t n) {
    enum { tile = 32 };
    for (ptrdiff_t top = 0; top < n; top += tile) {
        const ptrdiff_t bottom = top + tile < n ? top + tile : n;
        for (ptrdiff_t left = 0; left <= top; left += tile) {
            const ptrdiff_t right = left + tile < n ? left + tile : n;
            for (ptrdiff_t row = top; row < bottom; row++) {
                const ptrdiff_t end = right < row ? right : row;
                for (ptrdiff_t column = left; column < end; column++) c[row * n + column] = c[column * n + row];
            }
        }
    }
}

OF_VERSIONED
void of_adamw(float *restrict parameters, const float *restrict gradient, float *restrict m, float *restrict v,
              ptrdiff_t count, float decay, float beta1, float beta2, float step_size, float correction2_root,
              float epsilon) {
    const float keep1 = 1.0f - beta1, keep2 = 1.0f - beta2;
    for (ptrdiff_t i = 0; i < count; i++) {
        const float g = gradient[i];
        const float first = beta1 * m[i] + keep1 * g;
        const float second = beta2 * v[i] + keep2 * g * g;
        // The builtin is IEEE sqrt without errno, so the loop vectorises.
        const float denominator = __builtin_elementwise_sqrt(second) / correction2_root + epsilon;
        parameters[i] = parameters[i] * decay - step_size * first / denominator;
        m[i] = first;
        v[i] = second;
    }
}

static inline __attribute__((always_inline)) int is_nonfinite(const float *x) {
    uint32_t bits;
    memcpy(&bits, x, sizeof bits);
    return (bits & 0x7F800000u) == 0x7F800000u;
}

OF_VERSIONED
ptrdiff_t of_first_nonfinite(const float *x, ptrdiff_t count) {
    // Blocks of 64 are tested with an OR over the block (one vector reduction); the first
    // block that holds one is searched value by value.
    ptrdiff_t i = 0;
    for (; i + 64 <= count; i += 64) {
        int any = 0;
        for (int l = 0; l < 64; l++) any |= is_nonfinite(x + i + l);
        if (any) break;
    }
    for (; i < count; i++)
        if (is_nonfinite(x + i)) return i;
    return -1;
}

// Row reductions keep LANES partial sums (lane l takes elements l, l + LANES, …), added in a
// fixed order at the end: the compiler turns the lane loop into one vector without reassociating,
// and the result does not depend on the vector width.
#define LANES 16

static inline __attribute__((always_inline)) float lanes_total(const float *lanes) {
    float total = 0.0f;
    for (int l = 0; l < LANES; l++) total += lanes[l];
    return total;
}

static inline __attribute__((always_inline)) float row_sum(const float *x, ptrdiff_t count) {
    float lanes[LANES] = {0};
    ptrdiff_t i = 0;
    for (; i + LANES <= count; i += LANES)
        for (int l = 0; l < LANES; l++) lanes[l] += x[i + l];
    float total = lanes_total(lanes);
    for (; i < count; i++) total += x[i];
    return total;
}

static inline __attribute__((always_inline)) float row_squared_deviations(const float *x, float center, ptrdiff_t count) {
    float lanes[LANES] = {0};
    ptrdiff_t i = 0;
    for (; i + LANES <= count; i += LANES)
        for (int l = 0; l < LANES; l++) {
            const float d = x[i + l] - center;
            lanes[l] += d * d;
        }
    float total = lanes_total(lanes);
    for (; i < count; i++) total += (x[i] - center) * (x[i] - center);
    return total;
}

static inline __attribute__((always_inline)) float row_max(const float *x, ptrdiff_t count) {
    float largest = x[0];
    for (ptrdiff_t i = 1; i < count; i++) largest = x[i] > largest ? x[i] : largest;
    return largest;
}

OF_VERSIONED
void of_softmax_rows(float *restrict x, ptrdiff_t rows, ptrdiff_t count) {
    // Shift every row by its maximum first, so exp runs over the whole block in one vector loop
    // (rows are often shorter than a vector: 17 tokens in the demo's ViT).
    for (ptrdiff_t r = 0; r < rows; r++) {
        float *row = x + r * count;
        const float largest = row_max(row, count);
        for (ptrdiff_t i = 0; i < count; i++) row[i] -= largest;
    }
    const ptrdiff_t total = rows * count;
    for (ptrdiff_t i = 0; i < total; i++) x[i] = of_exp(x[i]);
    for (ptrdiff_t r = 0; r < rows; r++) {
        float *row = x + r * count;
        const float inverse = 1.0f / row_sum(row, count);
        for (ptrdiff_t i = 0; i < count; i++) row[i] *= inverse;
    }
}

OF_VERSIONED
void of_layer_norm_forward(float *restrict out, float *restrict mean, float *restrict rstd, const float *restrict inp,
                           const float *restrict weight, const float *restrict bias, ptrdiff_t rows, ptrdiff_t width,
                           float epsilon) {
    const float inverse_width = 1.0f / (float)width;
    for (ptrdiff_t r = 0; r < rows; r++) {
        const float *x = inp + r * width;
        float *y = out + r * width;
        const float m = row_sum(x, width) * inverse_width;
        // Two passes (mean, then squared deviations): no cancellation for rows far from zero.
        const float variance = row_squared_deviations(x, m, width) * inverse_width;
        const float s = 1.0f / sqrtf(variance + epsilon);
        mean[r] = m;
        rstd[r] = s;
        for (ptrdiff_t i = 0; i < width; i++) y[i] = (x[i] - m) * s * weight[i] + bias[i];
    }
}

OF_VERSIONED
void of_layer_norm_backward(float *restrict dinp, float *restrict dweight, float *restrict dbias,
                            const float *restrict dout, const float *restrict inp, const float *restrict weight,
                            const float *restrict mean, const float *restrict rstd, ptrdiff_t rows, ptrdiff_t width) {
    const float inverse_width = 1.0f / (float)width;
    for (ptrdiff_t r = 0; r < rows; r++) {
        const float *x = inp + r * width;
        const float *g = dout + r * width;
        const float m = mean[r], s = rstd[r];
        if (dweight)
            for (ptrdiff_t i = 0; i < width; i++) dweight[i] += g[i] * (x[i] - m) * s;
        if (dbias)
            for (ptrdiff_t i = 0; i < width; i++) dbias[i] += g[i];
        if (!dinp) continue;
        // Σ g·w and Σ (x − m)·g·w in lanes, as the reductions above.
        float plain[LANES] = {0}, centered[LANES] = {0};
        ptrdiff_t i = 0;
        for (; i + LANES <= width; i += LANES)
            for (int l = 0; l < LANES; l++) {
                const float gw = g[i + l] * weight[i + l];
                plain[l] += gw;
                centered[l] += (x[i + l] - m) * gw;
            }
        float plain_total = lanes_total(plain), centered_total = lanes_total(centered);
        for (; i < width; i++) {
            const float gw = g[i] * weight[i];
            plain_total += gw;
            centered_total += (x[i] - m) * gw;
        }
        const float mean_g = plain_total * inverse_width;
        const float mean_gx = centered_total * s * inverse_width;
        float *d = dinp + r * width;
        for (ptrdiff_t j = 0; j < width; j++) d[j] += s * (g[j] * weight[j] - mean_g - (x[j] - m) * s * mean_gx);
    }
}

OF_VERSIONED
void of_bf16_to_f32(float *restrict out, const void *restrict bf16, ptrdiff_t count) {
    const unsigned char *bytes = bf16;
    for (ptrdiff_t i = 0; i < count; i++) {
        uint16_t half;
        memcpy(&half, bytes + 2 * i, sizeof half);
        const uint32_t bits = (uint32_t)half << 16;
        memcpy(&out[i], &bits, sizeof bits);
    }
}

OF_VERSIONED
void of_f32_to_bf16(void *restrict bf16, const float *restrict inp, ptrdiff_t count) {
    unsigned char *bytes = bf16;
    for (ptrdiff_t i = 0; i < count; i++) {
        uint32_t bits;
        memcpy(&bits, &inp[i], sizeof bits);
        const uint32_t rounded = bits + 0x7FFFu + ((bits >> 16) & 1u);
        const int is_nan = (bits & 0x7FFFFFFFu) > 0x7F800000u;
        const uint16_t half = is_nan ? (uint16_t)((bits >> 16) | 0x0040u) : (uint16_t)(rounded >> 16);
        memcpy(bytes + 2 * i, &half, sizeof half);
    }
}

float of_exp_value(float x) { return of_exp(x); }

float of_erf_value(float x) { return of_erf(x); }

OF_VERSIONED
int of_kernels_vector_bits(void) {
#if defined(__AVX512F__)
    return 512;
#elif defined(__AVX2__)
    return 256;
#else
    return 128;
#endif
}
