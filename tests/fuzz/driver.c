/*
 * driver.c - runs a libFuzzer target without libFuzzer, so that the fuzz
 * targets in tests/fuzz/ run in ctest (and so under ASan+UBSan in CI) with
 * the compiler we have. Each NAME_fuzz.c is linked with this file:
 *
 *   fuzz_NAME [-n N] [-s SEED] SEED_FILE_OR_FOLDER...
 *
 * feeds the target every seed file (folders are read two levels deep),
 * then N inputs made by mutating seeds (bit flips, byte changes, inserts,
 * deletes, copies of runs, bytes that parsers care about), from a fixed
 * random seed so that a failure repeats. Each input is in a buffer of
 * exactly its size, so ASan sees any read past the end. A crash or a
 * sanitizer report fails the test; a clean run prints the count.
 *
 * For real coverage-guided fuzzing, build the target with clang's
 * -fsanitize=fuzzer instead of this file (see each target's header).
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_SEEDS 512
#define MAX_SEED_SIZE (64 * 1024)
#define MAX_GROWTH 256

typedef struct seed {
    unsigned char *data;
    size_t size;
} seed_t;

static seed_t seeds[MAX_SEEDS];
static int n_seeds;

static void add_file(const char *path) {
    if (n_seeds >= MAX_SEEDS)
        return;
    FILE *f = fopen(path, "rb");
    if (!f)
        return;
    unsigned char *buf = malloc(MAX_SEED_SIZE);
    size_t n = buf ? fread(buf, 1, MAX_SEED_SIZE, f) : 0;
    fclose(f);
    if (!buf)
        return;
    seeds[n_seeds++] = (seed_t){buf, n};
}

static void add_path(const char *path, int depth) {
    struct stat st;
    if (stat(path, &st))
        return;
    if (S_ISREG(st.st_mode)) {
        add_file(path);
        return;
    }
    if (!S_ISDIR(st.st_mode) || depth > 2)
        return;
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char sub[4096];
        snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
        add_path(sub, depth + 1);
    }
    closedir(d);
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint64_t next(void) { /* xorshift64* */
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545f4914f6cdd1dULL;
}
static size_t below(size_t n) { return n ? (size_t)(next() % n) : 0; }

/* Bytes that the parsers under test branch on. */
static const char interesting[] = "\0 \t\n\r:;,.-+/=_%\"'{}[]0129AZaz7fFT";

/* Mutate buf[0..*size) in place (capacity cap). */
static void mutate(unsigned char *buf, size_t *size, size_t cap) {
    int rounds = 1 + (int)below(8);
    for (int r = 0; r < rounds; r++) {
        size_t n = *size;
        switch (below(6)) {
        case 0: /* flip a bit */
            if (n)
                buf[below(n)] ^= (unsigned char)(1u << below(8));
            break;
        case 1: /* a random byte */
            if (n)
                buf[below(n)] = (unsigned char)next();
            break;
        case 2: /* an interesting byte */
            if (n)
                buf[below(n)] = (unsigned char)interesting[below(sizeof interesting - 1)];
            break;
        case 3: /* insert a byte */
            if (n < cap) {
                size_t at = below(n + 1);
                memmove(buf + at + 1, buf + at, n - at);
                buf[at] =
                    (unsigned char)(below(2) ? next() : (uint64_t)interesting[below(sizeof interesting - 1)]);
                *size = n + 1;
            }
            break;
        case 4: /* delete a run */
            if (n) {
                size_t at = below(n), len = 1 + below(n - at < 8 ? n - at : 8);
                memmove(buf + at, buf + at + len, n - at - len);
                *size = n - len;
            }
            break;
        case 5: /* copy a run over another place */
            if (n > 1) {
                size_t from = below(n), to = below(n), len = 1 + below(16);
                if (from + len > n)
                    len = n - from;
                if (to + len > n)
                    len = n - to;
                memmove(buf + to, buf + from, len);
            }
            break;
        }
    }
}

int main(int argc, char **argv) {
    long iterations = 10000;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "-n") && i + 1 < argc)
            iterations = atol(argv[++i]);
        else if (!strcmp(argv[i], "-s") && i + 1 < argc)
            rng = strtoull(argv[++i], NULL, 0) | 1;
        else {
            fprintf(stderr, "usage: %s [-n N] [-s SEED] SEED_FILE_OR_FOLDER...\n", argv[0]);
            return 2;
        }
    }
    for (; i < argc; i++)
        add_path(argv[i], 0);
    if (n_seeds == 0)
        seeds[n_seeds++] = (seed_t){calloc(1, 1), 0};
    long runs = 0;
    for (int k = 0; k < n_seeds; k++, runs++) {
        unsigned char *copy = malloc(seeds[k].size ? seeds[k].size : 1);
        memcpy(copy, seeds[k].data, seeds[k].size);
        LLVMFuzzerTestOneInput(copy, seeds[k].size);
        free(copy);
    }
    unsigned char *work = malloc(MAX_SEED_SIZE + MAX_GROWTH);
    for (long it = 0; it < iterations; it++, runs++) {
        const seed_t *s = &seeds[below((size_t)n_seeds)];
        size_t size = s->size, cap = s->size + MAX_GROWTH;
        memcpy(work, s->data, size);
        mutate(work, &size, cap);
        unsigned char *input = malloc(size ? size : 1); /* exactly its size: ASan sees overreads */
        memcpy(input, work, size);
        LLVMFuzzerTestOneInput(input, size);
        free(input);
    }
    free(work);
    for (int k = 0; k < n_seeds; k++)
        free(seeds[k].data);
    printf("%ld inputs (%d seeds, %ld mutations), no crash\n", runs, n_seeds, iterations);
    return 0;
}
