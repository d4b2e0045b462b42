/*
 * sign_test.c - the server secret and signed links (src/auth/sign.c).
 *
 * secret.key is made in an empty data folder with mode 0600 and 32 bytes,
 * and read back unchanged; a file of another size is refused, never
 * replaced; threads loading at once from an empty folder all get the same
 * secret. Signatures round-trip, and every altered link is INVALID (a
 * flipped digit, another id or expiry, upper case, wrong length), while a
 * right one past its time is EXPIRED; the signature is plain HMAC-SHA256 of
 * "<id>.<expires>" in lower-case hex.
 */
#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/auth.h"
#include "test.h"

#define N_THREADS 8

static char root[256];

static void make_dir(char *out, size_t size, const char *name) {
    snprintf(out, size, "%s/%s", root, name);
    if (mkdir(out, 0700) != 0) {
        perror(out);
        exit(2);
    }
}

static void remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    char p[512];
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static int count_files(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)))
        n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    if (d)
        closedir(d);
    return n;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
        perror(path);
        exit(2);
    }
}

static void test_secret_file(void) {
    char dir[300], path[400];
    unsigned char s1[32], s2[32], zero[32] = {0};
    up_error_t err;
    struct stat st;

    make_dir(dir, sizeof dir, "fresh");
    snprintf(path, sizeof path, "%s/secret.key", dir);
    memset(s1, 0, sizeof s1);
    CHECKF(auth_secret_load(dir, s1, &err) == 0, "%s", err.msg);
    CHECK(stat(path, &st) == 0);
    CHECKF((st.st_mode & 0777) == 0600, "mode %o", (unsigned)(st.st_mode & 0777));
    CHECK(st.st_size == 32);
    CHECK(memcmp(s1, zero, 32) != 0);
    CHECK(count_files(dir) == 1); /* no temporary file left behind */

    CHECKF(auth_secret_load(dir, s2, &err) == 0, "%s", err.msg);
    CHECK(memcmp(s1, s2, 32) == 0);

    /* The file's bytes are the secret: a copy elsewhere loads the same. */
    char dir2[300], path2[400];
    make_dir(dir2, sizeof dir2, "copy");
    snprintf(path2, sizeof path2, "%s/secret.key", dir2);
    write_file(path2, s1, 32);
    chmod(path2, 0600);
    CHECKF(auth_secret_load(dir2, s2, &err) == 0, "%s", err.msg);
    CHECK(memcmp(s1, s2, 32) == 0);

    /* Wrong sizes are refused and the file is left as it was. */
    write_file(path2, s1, 31);
    CHECK(auth_secret_load(dir2, s2, &err) == UP_ERR_IO);
    CHECKF(strstr(err.msg, "secret.key") && strstr(err.msg, "31 bytes"), "%s", err.msg);
    CHECK(stat(path2, &st) == 0 && st.st_size == 31);
    write_file(path2, "", 0);
    CHECK(auth_secret_load(dir2, s2, &err) == UP_ERR_IO);
    unsigned char big[33] = {1};
    write_file(path2, big, 33);
    CHECK(auth_secret_load(dir2, s2, &err) == UP_ERR_IO);
    CHECK(stat(path2, &st) == 0 && st.st_size == 33);

    /* A folder that does not exist. */
    char missing[300];
    snprintf(missing, sizeof missing, "%s/nope", root);
    CHECK(auth_secret_load(missing, s2, &err) == UP_ERR_IO);
    CHECK(strstr(err.msg, "nope") != NULL);

    remove_dir(dir);
    remove_dir(dir2);
}

/* An operator's shared secret: 64 hex digits, as text or in a file, or a file of 32 raw bytes. */
static void test_shared_secret(void) {
    static const char hex[] = "00112233445566778899aabbccddeeffFFEEDDCCBBAA99887766554433221100";
    unsigned char want[32], got[32], raw[32];
    for (int i = 0; i < 16; i++)
        want[i] = (unsigned char)(i * 0x11), want[31 - i] = (unsigned char)(i * 0x11);
    up_error_t err;
    CHECKF(auth_secret_parse(hex, strlen(hex), got, &err) == 0, "%s", err.msg);
    CHECK(memcmp(got, want, 32) == 0);
    char padded[80];
    snprintf(padded, sizeof padded, "  %s\n", hex);
    CHECK(auth_secret_parse(padded, strlen(padded), got, &err) == 0 && memcmp(got, want, 32) == 0);
    /* Wrong length, a non-digit, a digit missing: refused, and the message does not echo the text. */
    CHECK(auth_secret_parse(hex, 62, got, &err) == UP_ERR_INVALID);
    CHECK(strstr(err.msg, "0011") == NULL && strstr(err.msg, "64 hexadecimal") != NULL);
    char bad[65];
    memcpy(bad, hex, 65);
    bad[40] = 'g';
    CHECK(auth_secret_parse(bad, 64, got, &err) == UP_ERR_INVALID);
    CHECK(auth_secret_parse("", 0, got, &err) == UP_ERR_INVALID);

    char dir[300], path[400];
    make_dir(dir, sizeof dir, "shared");
    snprintf(path, sizeof path, "%s/link.secret", dir);
    write_file(path, padded, strlen(padded));
    chmod(path, 0600);
    CHECKF(auth_secret_read(path, got, &err) == 0, "%s", err.msg);
    CHECK(memcmp(got, want, 32) == 0);
    /* 32 raw bytes: a copy of a data folder's secret.key is the same secret there. */
    CHECKF(auth_secret_load(dir, raw, &err) == 0, "%s", err.msg);
    char key[400];
    snprintf(key, sizeof key, "%s/secret.key", dir);
    CHECKF(auth_secret_read(key, got, &err) == 0, "%s", err.msg);
    CHECK(memcmp(got, raw, 32) == 0);
    /* Neither: 31 or 33 raw bytes, hex with a digit short, a long file, a folder, nothing. */
    write_file(path, raw, 31);
    CHECK(auth_secret_read(path, got, &err) == UP_ERR_INVALID && strstr(err.msg, "31 bytes"));
    write_file(path, hex, 63);
    CHECK(auth_secret_read(path, got, &err) == UP_ERR_INVALID);
    char big[4096];
    memset(big, 'a', sizeof big);
    write_file(path, big, sizeof big);
    CHECK(auth_secret_read(path, got, &err) == UP_ERR_IO && strstr(err.msg, "longer"));
    CHECK(auth_secret_read(dir, got, &err) == UP_ERR_IO && strstr(err.msg, "not a regular file"));
    unlink(path);
    CHECK(auth_secret_read(path, got, &err) == UP_ERR_IO && strstr(err.msg, "link.secret"));
    remove_dir(dir);
}

typedef struct {
    const char *dir;
    pthread_barrier_t *go;
    unsigned char secret[32];
    int rc;
} loader_t;

static void *loader(void *arg) {
    loader_t *l = arg;
    up_error_t err;
    pthread_barrier_wait(l->go);
    l->rc = auth_secret_load(l->dir, l->secret, &err);
    if (l->rc)
        fprintf(stderr, "loader: %s\n", err.msg);
    return NULL;
}

static void test_secret_race(void) {
    for (int round = 0; round < 20; round++) {
        char dir[300], name[32];
        snprintf(name, sizeof name, "race%d", round);
        make_dir(dir, sizeof dir, name);
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, N_THREADS);
        loader_t l[N_THREADS];
        pthread_t th[N_THREADS];
        for (int i = 0; i < N_THREADS; i++) {
            l[i].dir = dir;
            l[i].go = &go;
            pthread_create(&th[i], NULL, loader, &l[i]);
        }
        int n_ok = 0, n_same = 0;
        for (int i = 0; i < N_THREADS; i++) {
            pthread_join(th[i], NULL);
            n_ok += l[i].rc == 0;
            n_same += memcmp(l[i].secret, l[0].secret, 32) == 0;
        }
        pthread_barrier_destroy(&go);
        CHECK(n_ok == N_THREADS);
        CHECK(n_same == N_THREADS);
        unsigned char again[32];
        up_error_t err;
        CHECK(auth_secret_load(dir, again, &err) == 0 && memcmp(again, l[0].secret, 32) == 0);
        CHECKF(count_files(dir) == 1, "%d files", count_files(dir));
        remove_dir(dir);
    }
}

static void test_sign_verify(void) {
    unsigned char secret[32], other[32];
    for (int i = 0; i < 32; i++) {
        secret[i] = (unsigned char)i;
        other[i] = (unsigned char)(i + 1);
    }
    const char *id = "123e4567-e89b-42d3-a456-426614174000";
    long long exp = 1700003600;
    char sig[65], s2[65];
    auth_sign(secret, id, exp, sig);
    CHECK(strlen(sig) == 64);
    CHECK(strspn(sig, "0123456789abcdef") == 64);
    auth_sign(secret, id, exp, s2);
    CHECK(strcmp(sig, s2) == 0); /* deterministic */

    CHECK(auth_verify(secret, id, exp, sig, 1700000000.0) == 0);
    CHECK(auth_verify(secret, id, exp, sig, (double)exp) == 0); /* the last second still counts */
    CHECK(auth_verify(secret, id, exp, sig, exp + 0.5) == UP_ERR_EXPIRED);
    CHECK(auth_verify(secret, id, exp, sig, exp + 86400.0) == UP_ERR_EXPIRED);

    /* Every single flipped hex digit is caught. */
    int n_caught = 0;
    for (int i = 0; i < 64; i++) {
        char bad[65];
        memcpy(bad, sig, 65);
        bad[i] = bad[i] == '0' ? '1' : '0';
        n_caught += auth_verify(secret, id, exp, bad, 1700000000.0) == UP_ERR_INVALID;
    }
    CHECK(n_caught == 64);
    CHECK(auth_verify(secret, "123e4567-e89b-42d3-a456-426614174001", exp, sig, 1700000000.0) ==
          UP_ERR_INVALID);
    CHECK(auth_verify(secret, id, exp + 1, sig, 1700000000.0) == UP_ERR_INVALID);
    CHECK(auth_verify(secret, id, exp - 1, sig, 1700000000.0) == UP_ERR_INVALID);
    CHECK(auth_verify(other, id, exp, sig, 1700000000.0) == UP_ERR_INVALID);
    /* A forged link is INVALID even when also late: nothing is said about its time. */
    CHECK(auth_verify(other, id, exp, sig, exp + 10.0) == UP_ERR_INVALID);

    char upper[65];
    for (int i = 0; i < 65; i++)
        upper[i] = (sig[i] >= 'a' && sig[i] <= 'f') ? (char)(sig[i] - 32) : sig[i];
    CHECK(strcmp(upper, sig) != 0); /* 64 hex digits without a letter: about 1 in 10^12 */
    CHECK(auth_verify(secret, id, exp, upper, 1700000000.0) == UP_ERR_INVALID);

    char shortsig[65], longsig[70];
    memcpy(shortsig, sig, 63);
    shortsig[63] = '\0';
    CHECK(auth_verify(secret, id, exp, shortsig, 1700000000.0) == UP_ERR_INVALID);
    snprintf(longsig, sizeof longsig, "%s0", sig);
    CHECK(auth_verify(secret, id, exp, longsig, 1700000000.0) == UP_ERR_INVALID);
    CHECK(auth_verify(secret, id, exp, "", 1700000000.0) == UP_ERR_INVALID);
    CHECK(auth_verify(secret, id, exp, NULL, 1700000000.0) == UP_ERR_INVALID);
    char spaced[66];
    snprintf(spaced, sizeof spaced, " %.63s", sig);
    CHECK(auth_verify(secret, id, exp, spaced, 1700000000.0) == UP_ERR_INVALID);

    /* The message is exactly "<id>.<expires>", so it is HMAC-SHA256 as anyone computes it. */
    unsigned char mac[32];
    unsigned int mac_len = 0;
    char want[65];
    const char *msg = "123e4567-e89b-42d3-a456-426614174000.1700003600";
    HMAC(EVP_sha256(), secret, 32, (const unsigned char *)msg, strlen(msg), mac, &mac_len);
    for (int i = 0; i < 32; i++)
        snprintf(want + 2 * i, 3, "%02x", mac[i]);
    CHECK(mac_len == 32 && strcmp(sig, want) == 0);

    /* The expiry has no '.', so the split is unambiguous. */
    char a[65], b[65];
    auth_sign(secret, "a", 12, a);
    auth_sign(secret, "a.1", 2, b);
    CHECK(strcmp(a, b) != 0);
    auth_sign(secret, "x", -5, a);
    CHECK(auth_verify(secret, "x", -5, a, -10.0) == 0);

    /* Long ids take the heap path. */
    char long_id[1000];
    memset(long_id, 'q', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    auth_sign(secret, long_id, exp, a);
    CHECK(auth_verify(secret, long_id, exp, a, 0) == 0);
    long_id[500] = 'r';
    CHECK(auth_verify(secret, long_id, exp, a, 0) == UP_ERR_INVALID);
}

int main(void) {
    snprintf(root, sizeof root, "%s/upres-sign-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 2;
    }
    test_secret_file();
    test_secret_race();
    test_shared_secret();
    test_sign_verify();
    rmdir(root);
    return test_summary();
}
