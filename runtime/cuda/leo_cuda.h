/*
 * leo_cuda.h: the C ABI of libleo_cuda.so, leo's CUDA kernels.
 *
 * The Go runtime (package runtime/cuda) dlopens the library at run time, so
 * that leo-runtime builds and runs without CUDA; this header is the whole
 * contract between the two. The library keeps a model's weights, the KV
 * cache and every intermediate on the GPU and runs the whole forward pass
 * there; Go hands it token embeddings and positions and reads back logits.
 *
 * Every function returns 0 on success, or non-zero after writing a message
 * (at most LEO_ERR_LEN bytes with its NUL) into err, which may be NULL.
 */
#ifndef LEO_CUDA_H
#define LEO_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on every incompatible change; Go refuses a library of another. */
#define LEO_CUDA_ABI_VERSION 2
#define LEO_ERR_LEN 512

/* Weight types, numbered as GGML numbers them. */
enum { LEO_TYPE_F16 = 1, LEO_TYPE_Q4_0 = 2, LEO_TYPE_Q8_0 = 8 };

/* How a matrix's activations are rounded, to agree with the CPU backend:
 * by its type (F16: halves; Q8_0, Q4_0: int8 blocks of 32, as GGML), or
 * as int8 blocks of 256 (Q8_K), for K-quant weights converted to F16. */
enum { LEO_ACT_DEFAULT = 0, LEO_ACT_Q8_K = 1 };

/* The matrices of a layer, and the classifier (layer -1). */
enum {
	LEO_W_Q = 0, LEO_W_K, LEO_W_V, LEO_W_O, LEO_W_GATE, LEO_W_UP, LEO_W_DOWN,
	LEO_W_OUTPUT
};

/* The vectors (float32 gains) of a layer, and the final norm (layer -1). */
enum { LEO_V_ATTN_NORM = 0, LEO_V_FFN_NORM, LEO_V_OUTPUT_NORM };

typedef struct {
	int32_t dim, hidden_dim, layers, heads, kv_heads, vocab, rope_dim, context;
	float norm_eps;
} leo_config;

typedef struct leo_model leo_model;
typedef struct leo_state leo_state;

int leo_abi_version(void);

/* Devices. */
int leo_device_count(int *count, char *err);
int leo_device_info(int device, char *name, int name_len, size_t *free_bytes,
                    size_t *total_bytes, int *cc_major, int *cc_minor, char *err);
/* Device-to-device copy bandwidth in GB/s, counting bytes read and written:
 * the median of iters copies of bytes bytes. */
int leo_copy_bandwidth(int device, size_t bytes, int iters, double *gbps, char *err);

/* Models. Matrices arrive as GGML blocks (rows × cols, row-major) and are
 * re-laid out on the device; Q, K and V must share a type, as must gate and
 * up. Every matrix, vector and the RoPE tables must be set before a state
 * is made. */
int leo_model_new(int device, const leo_config *c, leo_model **out, char *err);
int leo_model_matrix(leo_model *m, int layer, int which, int type, int act, int rows, int cols,
                     const void *data, size_t bytes, char *err);
int leo_model_vector(leo_model *m, int layer, int which, const float *data, int n, char *err);
/* cos and sin of every position p < context and pair i < rope_dim/2, at
 * [p*rope_dim/2 + i]: the CPU backend's own tables, so rotations agree. */
int leo_model_rope(leo_model *m, const float *cos, const float *sin, int n, char *err);
/* Device bytes the model holds. */
size_t leo_model_bytes(const leo_model *m);
void leo_model_free(leo_model *m);

/* States: a KV cache of slots sequences of len positions (F16) and room
 * for batches of up to max_batch tokens. */
int leo_state_bytes(const leo_model *m, int slots, int len, int max_batch, size_t *bytes, char *err);
int leo_state_new(leo_model *m, int slots, int len, int max_batch, leo_state **out, char *err);
/* Host buffers (page-locked) that leo_forward reads and writes:
 * x[max_batch*dim] the tokens' embeddings, pos and seq[max_batch] each
 * token's position and KV slot, rows[max_batch] the batch indices of the
 * tokens whose logits are wanted, logits[max_batch*vocab] those logits. */
void leo_state_buffers(leo_state *s, float **x, int32_t **pos, int32_t **seq,
                       int32_t **rows, float **logits);
/* Runs the n tokens of the buffers through the model and fills logits for
 * the first nout entries of rows. */
int leo_forward(leo_state *s, int n, int nout, char *err);
void leo_state_free(leo_state *s);

#ifdef __cplusplus
}
#endif

#endif
