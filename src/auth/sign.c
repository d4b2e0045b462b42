/*
 * sign.c - the server secret and signed result links (see auth.h).
 *
 * A link carries a job id, an expiry (Unix seconds) and
 * hex(HMAC-SHA256(secret, "<id>.<expiry>")); anyone holding it may fetch
 * the result until the expiry, and nobody can make one without the secret.
 *
 * DESIGN: the secret lives in data_dir/secret.key, 32 raw bytes, mode
 * 0600. It is made on first use and never replaced: a new secret would void
 * every link already given out, so a file of the wrong size is an error for
 * the operator to look at. Making it is race-free across processes and
 * threads: each maker writes a complete, fsynced file under a unique
 * temporary name and link()s it to secret.key; link() fails with EEXIST
 * when another maker won, and the loser then reads the winner's file, so
 * everyone ends with the same secret and nobody ever sees a partial file.
 *
 * Processes on several machines share no data folder, so an operator gives
 * them all one secret instead: a file (32 raw bytes, e.g. a copy of one
 * secret.key, or 64 hexadecimal digits) or the digits themselves
 * (auth_secret_read, auth_secret_parse; serve's --secret-file and
 * UPRES_SECRET).
 */
#include "auth/auth.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fileio.h"
#include "core/log.h"

#define SECRET_SIZE 32
#define SECRET_FILE "secret.key"

/*
 * Read the regular file path whole into buf (at most cap bytes; a longer
 * file is an error), warning when other users may read it: a secret's file.
 */
static int read_small(const char *path, unsigned char *buf, size_t cap, size_t *len, up_error_t *err) {
    int rc = UP_ERR_IO;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return up_error_set(err, UP_ERR_IO, 0, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        up_error_set(err, UP_ERR_IO, 0, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        up_error_set(err, UP_ERR_IO, 0, "%s: not a regular file", path);
        goto fail;
    }
    size_t got = 0;
    for (;;) {
        unsigned char extra;
        ssize_t n = got < cap ? read(fd, buf + got, cap - got) : read(fd, &extra, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            up_error_set(err, UP_ERR_IO, 0, "%s: cannot read: %s", path, strerror(errno));
            goto fail;
        }
        if (n == 0)
            break;
        if (got == cap) {
            up_error_set(err, UP_ERR_IO, 0, "%s: longer than %zu bytes: not a secret", path, cap);
            goto fail;
        }
        got += (size_t)n;
    }
    if (st.st_mode & 077)
        log_warn("auth: %s is readable by other users (mode %03o); it should be 0600", path,
                 (unsigned)(st.st_mode & 0777));
    *len = got;
    rc = 0;
fail:
    close(fd);
    return rc;
}

/* Read data_dir's secret.key into secret; it must be exactly SECRET_SIZE bytes. */
static int read_secret(const char *path, unsigned char secret[SECRET_SIZE], up_error_t *err) {
    size_t n;
    int rc = read_small(path, secret, SECRET_SIZE, &n, err);
    if (rc == 0 && n != SECRET_SIZE)
        rc = up_error_set(err, UP_ERR_IO, 0,
                          "%s: the link-signing secret is %zu bytes, expected %d; it is never replaced "
                          "automatically (that would void every signed link): restore it, or delete it to "
                          "make a new one",
                          path, n, SECRET_SIZE);
    return rc;
}

int auth_secret_parse(const char *text, size_t len, unsigned char secret[32], up_error_t *err) {
    while (len > 0 && strchr(" \t\r\n", text[len - 1]))
        len--;
    while (len > 0 && strchr(" \t\r\n", *text))
        text++, len--;
    int ok = len == 2 * SECRET_SIZE;
    for (size_t i = 0; ok && i < SECRET_SIZE; i++) {
        int hi = OPENSSL_hexchar2int((unsigned char)text[2 * i]);
        int lo = OPENSSL_hexchar2int((unsigned char)text[2 * i + 1]);
        ok = hi >= 0 && lo >= 0;
        if (ok)
            secret[i] = (unsigned char)(hi << 4 | lo);
    }
    if (!ok) {
        OPENSSL_cleanse(secret, SECRET_SIZE);
        return up_error_set(
            err, UP_ERR_INVALID, 0,
            "a link-signing secret is 64 hexadecimal digits (32 bytes; `openssl rand -hex 32` "
            "makes one)");
    }
    return 0;
}

int auth_secret_read(const char *path, unsigned char secret[32], up_error_t *err) {
    unsigned char buf[2 * SECRET_SIZE + 8]; /* hex digits and a line end or a few spaces */
    size_t n;
    int rc = read_small(path, buf, sizeof buf, &n, err);
    if (rc == 0 && n == SECRET_SIZE) {
        memcpy(secret, buf, SECRET_SIZE); /* raw, as a data folder's secret.key */
    } else if (rc == 0 && auth_secret_parse((const char *)buf, n, secret, err)) {
        rc = up_error_set(err, UP_ERR_INVALID, 0,
                          "%s: %zu bytes, neither 32 raw bytes nor 64 hexadecimal digits", path, n);
    }
    OPENSSL_cleanse(buf, sizeof buf);
    return rc;
}

/* Write SECRET_SIZE fresh random bytes to a new file tmp (mode 0600) and fsync it. */
static int write_new_secret(const char *data_dir, char *tmp, size_t tmp_size, up_error_t *err) {
    unsigned char bytes[SECRET_SIZE], tag[8];
    int fd = -1;
    for (int attempt = 0; fd < 0; attempt++) {
        if (RAND_bytes(tag, sizeof tag) != 1 || RAND_bytes(bytes, sizeof bytes) != 1)
            return up_error_set(err, UP_ERR_IO, 0, "the random number generator failed");
        snprintf(tmp, tmp_size, "%s/.%s.%ld.%02x%02x%02x%02x%02x%02x%02x%02x.tmp", data_dir, SECRET_FILE,
                 (long)getpid(), tag[0], tag[1], tag[2], tag[3], tag[4], tag[5], tag[6], tag[7]);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 && (errno != EEXIST || attempt >= 10))
            return up_error_set(err, UP_ERR_IO, 0, "%s: cannot create: %s", tmp, strerror(errno));
    }
    int rc = UP_ERR_IO;
    if (fchmod(fd, 0600) != 0) { /* whatever the umask */
        up_error_set(err, UP_ERR_IO, 0, "%s: cannot chmod: %s", tmp, strerror(errno));
        goto fail;
    }
    if (write_all(fd, bytes, SECRET_SIZE)) {
        up_error_set(err, UP_ERR_IO, 0, "%s: cannot write: %s", tmp, strerror(errno));
        goto fail;
    }
    if (fsync(fd) != 0) {
        up_error_set(err, UP_ERR_IO, 0, "%s: cannot fsync: %s", tmp, strerror(errno));
        goto fail;
    }
    rc = 0;
fail:
    OPENSSL_cleanse(bytes, sizeof bytes);
    if (close(fd) != 0 && rc == 0)
        rc = up_error_set(err, UP_ERR_IO, 0, "%s: cannot close: %s", tmp, strerror(errno));
    if (rc)
        unlink(tmp);
    return rc;
}

/* Make the directory entry of a new file durable (best effort: some file systems refuse). */
static void sync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

int auth_secret_load(const char *data_dir, unsigned char secret[32], up_error_t *err) {
    char path[PATH_MAX], tmp[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s/%s", data_dir, SECRET_FILE);
    if (n < 0 || (size_t)n + 64 >= sizeof path) /* room for the temporary name too */
        return up_error_set(err, UP_ERR_IO, 0, "%s: data directory path too long", data_dir);

    if (access(path, F_OK) == 0 || errno != ENOENT)
        return read_secret(path, secret, err);

    int rc = write_new_secret(data_dir, tmp, sizeof tmp, err);
    if (rc)
        return rc;
    if (link(tmp, path) == 0) {
        sync_dir(data_dir);
        log_info("auth: made a new link-signing secret in %s", path);
    } else if (errno != EEXIST) {
        rc = up_error_set(err, UP_ERR_IO, 0, "%s: cannot link %s to it: %s", path, tmp, strerror(errno));
    }
    /* EEXIST: another process or thread made it first; its file is complete, read that. */
    unlink(tmp);
    if (rc)
        return rc;
    return read_secret(path, secret, err);
}

void auth_sign(const unsigned char secret[32], const char *id, long long expires, char sig[65]) {
    static const char hex[] = "0123456789abcdef";
    char tail[32];
    int tail_len = snprintf(tail, sizeof tail, ".%lld", expires);
    size_t id_len = strlen(id);
    size_t msg_len = id_len + (size_t)tail_len;
    char stack_msg[256];
    char *msg = msg_len <= sizeof stack_msg ? stack_msg : malloc(msg_len);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    if (!msg) {
        fputs("upres: fatal: out of memory signing a link\n", stderr);
        abort();
    }
    memcpy(msg, id, id_len);
    memcpy(msg + id_len, tail, (size_t)tail_len);
    if (!HMAC(EVP_sha256(), secret, SECRET_SIZE, (const unsigned char *)msg, msg_len, mac, &mac_len) ||
        mac_len != 32) {
        fputs("upres: fatal: HMAC-SHA256 failed\n", stderr);
        abort();
    }
    if (msg != stack_msg)
        free(msg);
    for (int i = 0; i < 32; i++) {
        sig[2 * i] = hex[mac[i] >> 4];
        sig[2 * i + 1] = hex[mac[i] & 15];
    }
    sig[64] = '\0';
}

int auth_verify(const unsigned char secret[32], const char *id, long long expires, const char *sig,
                double now) {
    if (!id || !sig)
        return UP_ERR_INVALID;
    /* Only the exact form auth_sign makes: 64 lower-case hex digits. */
    for (int i = 0; i < 64; i++)
        if (!((sig[i] >= '0' && sig[i] <= '9') || (sig[i] >= 'a' && sig[i] <= 'f')))
            return UP_ERR_INVALID;
    if (sig[64] != '\0')
        return UP_ERR_INVALID;
    char want[65];
    auth_sign(secret, id, expires, want);
    if (CRYPTO_memcmp(want, sig, 64) != 0)
        return UP_ERR_INVALID;
    if (now > (double)expires)
        return UP_ERR_EXPIRED;
    return 0;
}
