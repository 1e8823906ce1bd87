/* matmul_onednn: the oneDNN engine of matmul.h. Each thread keeps its own oneDNN engine, stream
 * and cache of matmul primitives, one per shape (transposes, M, N, K, leading dimensions, beta):
 * created at the shape's first product with its memory objects (whose data handles are set at
 * each product) and its scratchpad (user mode: allocated once here, never by the library during
 * a product). A thread's cache is freed when the thread ends.
 *
 * alpha is not an attribute of the primitive: a run-time output scale makes oneDNN 2.6 fall back
 * from its brgemm kernels (brg:avx512_core) to gemm:jit, 30% slower at W1's shapes, and a fixed one
 * would need a primitive per value (the loss's alpha is the logit scale, new every step). So a
 * product with alpha != 1 first copies the smaller operand, times alpha, into a per-thread buffer
 * (it grows to the largest operand once, then is reused) and multiplies that with alpha 1. */
#ifdef HCL_HAVE_DNNL
#include "matmul.h"

#include <immintrin.h>
#include <omp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include "bf16.h"
#include "log.h"
#include "memlimit.h"
#include "util.h"

#define DNNL_OK(call) do { dnnl_status_t _s = (call); \
    if (_s == dnnl_out_of_memory) memlimit_out_of_memory("oneDNN (" #call ")", 0.0); \
    HCL_CHECK(_s == dnnl_success, "%s failed: %s", #call, dnnl_status2str(_s)); } while (0)

/* A parameter tensor's bf16 copy (matmul_f32_param): valid while gen is the current
 * matmul_params_generation. */
typedef struct {
    const float *src;
    int rows, cols, ld;
    unsigned long gen;
    uint16_t *bf;
} param_copy;

typedef struct {
    int ta, tb, M, N, K, lda, ldb, ldc;
    int bf16;                    /* operands bf16 (--precision bf16), else f32; C is f32 */
    float beta;
    dnnl_primitive_t prim;
    dnnl_memory_t a, b, c, scratch;
    void *scratch_buf;
} entry;

typedef struct {
    dnnl_engine_t eng;
    dnnl_stream_t strm;
    entry *e;
    int n, cap, last;
    float *scaled;               /* alpha times an operand (see the top), scaled_cap floats */
    size_t scaled_cap;
    uint16_t *bf[2];             /* bf16 copies of A and B (--precision bf16), bf_cap[] each */
    size_t bf_cap[2];
    param_copy *pc;              /* bf16 copies of parameter operands (matmul_f32_param) */
    int npc, pc_cap;
} cache;

static pthread_key_t cache_key;
static int threads = 1;          /* every thread's OpenMP team for oneDNN (kernels_set_threads) */
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

static void cache_free(void *p) {
    cache *c = p;
    for (int i = 0; i < c->n; i++) {
        entry *e = &c->e[i];
        dnnl_primitive_destroy(e->prim);
        dnnl_memory_destroy(e->a);
        dnnl_memory_destroy(e->b);
        dnnl_memory_destroy(e->c);
        dnnl_memory_destroy(e->scratch);
        free(e->scratch_buf);
    }
    free(c->e);
    free(c->scaled);
    free(c->bf[0]);
    free(c->bf[1]);
    for (int i = 0; i < c->npc; i++) free(c->pc[i].bf);
    free(c->pc);
    dnnl_stream_destroy(c->strm);
    dnnl_engine_destroy(c->eng);
    free(c);
}

static void make_key(void) { HCL_CHECK(pthread_key_create(&cache_key, cache_free) == 0, "pthread_key_create"); }

static cache *thread_cache(void) {
    pthread_once(&cache_once, make_key);
    cache *c = pthread_getspecific(cache_key);
    if (c) return c;
    c = hcl_calloc(1, sizeof *c);
    omp_set_num_threads(__atomic_load_n(&threads, __ATOMIC_RELAXED));   /* a new thread's default */
    DNNL_OK(dnnl_engine_create(&c->eng, dnnl_cpu, 0));
    DNNL_OK(dnnl_stream_create(&c->strm, c->eng, dnnl_stream_default_flags));
    HCL_CHECK(pthread_setspecific(cache_key, c) == 0, "pthread_setspecific");
    return c;
}

/* A plain 2-D f32 matrix of rows x cols whose rows are ld apart (or, transposed, whose
 * columns are). */
static void matrix_md(dnnl_memory_desc_t *md, int rows, int cols, int ld, int trans, dnnl_data_type_t dt) {
    dnnl_dims_t dims = {rows, cols};
    dnnl_dims_t strides = {trans ? 1 : ld, trans ? ld : 1};
    DNNL_OK(dnnl_memory_desc_init_by_strides(md, 2, dims, dt, strides));
}

static void entry_create(cache *c, entry *e) {
    dnnl_memory_desc_t a_md, b_md, c_md;
    const dnnl_data_type_t in = e->bf16 ? dnnl_bf16 : dnnl_f32;
    matrix_md(&a_md, e->M, e->K, e->lda, e->ta, in);
    matrix_md(&b_md, e->K, e->N, e->ldb, e->tb, in);
    matrix_md(&c_md, e->M, e->N, e->ldc, 0, dnnl_f32);
    dnnl_matmul_desc_t desc;
    DNNL_OK(dnnl_matmul_desc_init(&desc, &a_md, &b_md, NULL, &c_md));
    dnnl_primitive_attr_t attr;
    DNNL_OK(dnnl_primitive_attr_create(&attr));
    if (e->beta != 0.0f) {
        dnnl_post_ops_t po;
        DNNL_OK(dnnl_post_ops_create(&po));
        DNNL_OK(dnnl_post_ops_append_sum(po, e->beta));                     /* + beta C */
        DNNL_OK(dnnl_primitive_attr_set_post_ops(attr, po));
        dnnl_post_ops_destroy(po);
    }
    DNNL_OK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    dnnl_primitive_desc_t pd;
    DNNL_OK(dnnl_primitive_desc_create(&pd, &desc, attr, c->eng, NULL));
    dnnl_primitive_attr_destroy(attr);
    DNNL_OK(dnnl_primitive_create(&e->prim, pd));
    const dnnl_memory_desc_t *sp = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    size_t sp_bytes = sp ? dnnl_memory_desc_get_size(sp) : 0;
    e->scratch_buf = sp_bytes ? hcl_floats((sp_bytes + 3) / 4) : NULL;
    e->scratch = NULL;
    if (sp_bytes) DNNL_OK(dnnl_memory_create(&e->scratch, sp, c->eng, e->scratch_buf));
    dnnl_primitive_desc_destroy(pd);
    DNNL_OK(dnnl_memory_create(&e->a, &a_md, c->eng, DNNL_MEMORY_NONE));
    DNNL_OK(dnnl_memory_create(&e->b, &b_md, c->eng, DNNL_MEMORY_NONE));
    DNNL_OK(dnnl_memory_create(&e->c, &c_md, c->eng, DNNL_MEMORY_NONE));
}

static entry *entry_find(cache *c, int ta, int tb, int M, int N, int K, int lda, int ldb, int ldc,
                         float beta, int bf16) {
    for (int k = 0; k < c->n; k++) {
        int i = (c->last + k) % c->n;   /* products repeat in order: start at the last hit */
        entry *e = &c->e[i];
        if (e->ta == ta && e->tb == tb && e->M == M && e->N == N && e->K == K && e->lda == lda &&
            e->ldb == ldb && e->ldc == ldc && e->beta == beta && e->bf16 == bf16) {
            c->last = i + 1 < c->n ? i + 1 : 0;
            return e;
        }
    }
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 32;
        entry *grown = realloc(c->e, sizeof(entry) * (size_t)c->cap);
        HCL_CHECK(grown, "out of memory caching %d matmul shapes", c->cap);
        c->e = grown;
    }
    entry *e = &c->e[c->n++];
    memset(e, 0, sizeof *e);
    *e = (entry){.ta = ta, .tb = tb, .M = M, .N = N, .K = K, .lda = lda, .ldb = ldb, .ldc = ldc, .beta = beta,
                 .bf16 = bf16};
    entry_create(c, e);
    c->last = 0;
    return e;
}

/* *buf holds at least n elements of elem bytes afterwards (64-byte aligned; grown, never shrunk:
 * the step's largest operand, once). */
static void *reserve(void *buf, size_t *cap, size_t n, size_t elem) {
    if (n <= *cap) return buf;
    free(buf);
    *cap = n;
    return hcl_floats((n * elem + sizeof(float) - 1) / sizeof(float));
}

/* alpha X into the thread's buffer, compact: X is rows x cols as stored (rows ld apart). */
static const float *scaled_copy(cache *c, const float *X, int rows, int cols, int ld, float alpha) {
    c->scaled = reserve(c->scaled, &c->scaled_cap, (size_t)rows * (size_t)cols, sizeof(float));
    for (int i = 0; i < rows; i++) {
        const float *x = X + (size_t)i * ld;
        float *y = c->scaled + (size_t)i * cols;
        for (int j = 0; j < cols; j++) y[j] = alpha * x[j];
    }
    return c->scaled;
}

/* y[0..n) = bf16(alpha x[0..n)): 16 at a time with AVX512_BF16 where the build targets it (the
 * same rounding), else one at a time. */
static void bf16_row(uint16_t *y, const float *x, int n, float alpha) {
    int j = 0;
#ifdef __AVX512BF16__
    const __m512 a = _mm512_set1_ps(alpha);
    for (; j + 16 <= n; j += 16) {
        __m256bh h = _mm512_cvtneps_pbh(_mm512_mul_ps(a, _mm512_loadu_ps(x + j)));
        _mm256_storeu_si256((__m256i *)(y + j), (__m256i)h);
    }
#endif
    for (; j < n; j++) y[j] = bf16_of(alpha * x[j]);
}

/* alpha X as bf16 into the thread's buffer k, compact: X is rows x cols as stored (rows ld
 * apart). */
static const uint16_t *bf16_copy(cache *c, int k, const float *X, int rows, int cols, int ld, float alpha) {
    c->bf[k] = reserve(c->bf[k], &c->bf_cap[k], (size_t)rows * (size_t)cols, sizeof(uint16_t));
    for (int i = 0; i < rows; i++) bf16_row(c->bf[k] + (size_t)i * cols, X + (size_t)i * ld, cols, alpha);
    return c->bf[k];
}

/* The bf16 copy of parameter tensor X (rows x cols as stored, rows ld apart): made at its first
 * use after the parameters last changed, then reused. */
static const uint16_t *param_bf16(cache *c, const float *X, int rows, int cols, int ld) {
    const unsigned long gen = __atomic_load_n(&matmul_params_generation, __ATOMIC_ACQUIRE);
    param_copy *p = NULL;
    for (int i = 0; i < c->npc && !p; i++)
        if (c->pc[i].src == X && c->pc[i].rows == rows && c->pc[i].cols == cols && c->pc[i].ld == ld) p = &c->pc[i];
    if (!p) {
        if (c->npc == c->pc_cap) {
            c->pc_cap = c->pc_cap ? 2 * c->pc_cap : 16;
            param_copy *grown = realloc(c->pc, sizeof(param_copy) * (size_t)c->pc_cap);
            HCL_CHECK(grown, "out of memory caching %d parameter copies", c->pc_cap);
            c->pc = grown;
        }
        p = &c->pc[c->npc++];
        *p = (param_copy){X, rows, cols, ld, 0, (uint16_t *)hcl_floats(((size_t)rows * cols + 1) / 2)};
    }
    if (p->gen != gen) {
        for (int i = 0; i < rows; i++) bf16_row(p->bf + (size_t)i * cols, X + (size_t)i * ld, cols, 1.0f);
        p->gen = gen;
    }
    return p->bf;
}

void matmul_onednn_round_bf16(uint16_t *y, const float *X, int rows, int cols, int ld) {
    for (int i = 0; i < rows; i++) bf16_row(y + (size_t)i * cols, X + (size_t)i * ld, cols, 1.0f);
}

void matmul_onednn_f32(int transA, int transB, int M, int N, int K, float alpha, const float *A,
                       int lda, const uint16_t *Ab, const float *B, int ldb, const uint16_t *Bb, float beta,
                       float *C, int ldc, int b_param) {
    if (K <= 0) {
        /* no products to add: C = beta C */
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(size_t)i * ldc + j];
        return;
    }
    cache *c = thread_cache();
    transA = !!transA, transB = !!transB;
    const int bf16 = matmul_precision() == HCL_PRECISION_BF16;
    if (bf16) {
        /* both operands rounded to bf16, compact (unless the caller has: then alpha is 1), alpha
         * folded into the smaller one */
        HCL_CHECK(alpha == 1.0f || (!Ab && !Bb), "matmul: rounded operands with alpha %g", alpha);
        const int scale_a = b_param || (size_t)M * K <= (size_t)K * N;   /* a parameter is never scaled */
        A = Ab ? (const float *)Ab
               : (const float *)bf16_copy(c, 0, A, transA ? K : M, transA ? M : K, lda, scale_a ? alpha : 1.0f);
        B = Bb       ? (const float *)Bb
            : b_param ? (const float *)param_bf16(c, B, transB ? N : K, transB ? K : N, ldb)
                      : (const float *)bf16_copy(c, 1, B, transB ? N : K, transB ? K : N, ldb, scale_a ? 1.0f : alpha);
        lda = transA ? M : K;
        ldb = transB ? K : N;
    } else if (alpha != 1.0f) {
        /* the smaller operand, as stored: A is (M,K) or, transposed, (K,M); B is (K,N) or (N,K) */
        if ((size_t)M * K <= (size_t)K * N) {
            A = scaled_copy(c, A, transA ? K : M, transA ? M : K, lda, alpha);
            lda = transA ? M : K;
        } else {
            B = scaled_copy(c, B, transB ? N : K, transB ? K : N, ldb, alpha);
            ldb = transB ? K : N;
        }
    }
    entry *e = entry_find(c, transA, transB, M, N, K, lda, ldb, ldc, beta, bf16);
    DNNL_OK(dnnl_memory_set_data_handle(e->a, (void *)A));
    DNNL_OK(dnnl_memory_set_data_handle(e->b, (void *)B));
    DNNL_OK(dnnl_memory_set_data_handle(e->c, C));
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, e->a}, {DNNL_ARG_WEIGHTS, e->b}, {DNNL_ARG_DST, e->c},
                               {DNNL_ARG_SCRATCHPAD, e->scratch}};
    DNNL_OK(dnnl_primitive_execute(e->prim, c->strm, e->scratch ? 4 : 3, args));
    DNNL_OK(dnnl_stream_wait(c->strm));
}

int matmul_onednn_cached(void) {
    pthread_once(&cache_once, make_key);
    cache *c = pthread_getspecific(cache_key);
    return c ? c->n : 0;
}

void matmul_onednn_set_threads(int n) {
    n = n > 0 ? n : 1;
    /* libgomp reads its wait policy when it loads: hcl cannot undo an active one, only say so */
    const char *policy = getenv("OMP_WAIT_POLICY");
    if (n > 1 && policy && strcasecmp(policy, "active") == 0)
        LOG_WARN("OMP_WAIT_POLICY=%s: oneDNN's %d OpenMP threads will spin on their cores while they wait "
                 "(unset it to let them sleep)", policy, n);
    __atomic_store_n(&threads, n, __ATOMIC_RELAXED);
    omp_set_num_threads(n);
}
#endif
