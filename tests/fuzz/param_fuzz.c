/*
 * param_fuzz.c - libFuzzer target for the ncnn model reader (param.c,
 * weights.c). ctest runs it through driver.c (fuzz/param, seeded with
 * tests/cases/param). For coverage-guided fuzzing, build and run by hand:
 *
 *   clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *       tests/fuzz/param_fuzz.c src/nn/param.c src/nn/weights.c src/nn/model.c \
 *       src/core/err.c src/core/xmalloc.c -lm -o param_fuzz
 *   ./param_fuzz -max_len=4096 tests/cases/param/<any case>/
 *
 * The input is split in two: the first two bytes (little-endian) give the
 * length of the .param text, the rest after it is the .bin. A plain .param
 * file as a seed therefore reads as a short param and a junk .bin; the
 * fuzzer finds its way from there. Both parts are copied into buffers of
 * exactly their size so that ASan sees any read past the end.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nn/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2)
        return 0;
    size_t param_size = (size_t)(data[0] | data[1] << 8);
    data += 2;
    size -= 2;
    if (param_size > size)
        param_size = size;
    size_t bin_size = size - param_size;

    char *param = malloc(param_size ? param_size : 1);
    unsigned char *bin = malloc(bin_size ? bin_size : 1);
    if (!param || !bin)
        abort();
    memcpy(param, data, param_size);
    memcpy(bin, data + param_size, bin_size);

    nn_model_t *model = NULL;
    up_error_t err;
    int rc = nn_model_load_mem(param, param_size, bin, bin_size, &model, &err);
    if (rc == 0 ? model == NULL : model != NULL || err.code != rc || err.msg[0] == 0)
        abort(); /* the contract of nn_model_load_mem */
    nn_model_free(model);

    /* the text alone, as the parser sees it */
    nn_model_t m;
    if (nn_param_parse(param, param_size, &m, &err) == 0)
        nn_model_fini(&m);
    else if (m.layers || m.blobs)
        abort(); /* a failed parse must leave nothing behind */

    free(param);
    free(bin);
    return 0;
}
