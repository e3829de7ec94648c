/*
 * fakelib.c: a library with libleo_cuda.so's ABI and no CUDA, built by the
 * tests with the C compiler to prove what leo-runtime does on a machine
 * without a GPU (the real library then reports no device) or with a stale
 * library (another ABI version). Nothing else of it is ever called.
 */
#include <stdio.h>
#include "../leo_cuda.h"

#ifndef FAKE_ABI
#define FAKE_ABI LEO_CUDA_ABI_VERSION
#endif

int leo_abi_version(void) { return FAKE_ABI; }

/* What libcudart says through the real library on a machine without a GPU. */
int leo_device_count(int *count, char *err) {
	*count = 0;
	snprintf(err, LEO_ERR_LEN, "no CUDA-capable device is detected");
	return 1;
}

static int none(char *err) {
	snprintf(err, LEO_ERR_LEN, "fake library");
	return 1;
}

int leo_device_info(int d, char *n, int l, size_t *f, size_t *t, int *a, int *b, char *err) { return none(err); }
int leo_copy_bandwidth(int d, size_t b, int i, double *g, char *err) { return none(err); }
int leo_model_new(int d, const leo_config *c, leo_model **m, char *err) { return none(err); }
int leo_model_matrix(leo_model *m, int l, int w, int t, int a, int r, int c, const void *p, size_t b, char *err) { return none(err); }
int leo_model_vector(leo_model *m, int l, int w, const float *p, int n, char *err) { return none(err); }
int leo_model_rope(leo_model *m, const float *c, const float *s, int n, char *err) { return none(err); }
size_t leo_model_bytes(const leo_model *m) { return 0; }
void leo_model_free(leo_model *m) {}
int leo_state_bytes(const leo_model *m, int s, int l, int b, size_t *n, char *err) { return none(err); }
int leo_state_new(leo_model *m, int s, int l, int b, leo_state **o, char *err) { return none(err); }
void leo_state_buffers(leo_state *s, float **x, int32_t **p, int32_t **q, int32_t **r, float **lg) {}
int leo_forward(leo_state *s, int n, int o, char *err) { return none(err); }
void leo_state_free(leo_state *s) {}
