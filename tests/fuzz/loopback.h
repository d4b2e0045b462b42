/*
 * loopback.h - the in-process HTTP server that the network fuzz targets
 * (reply_fuzz.c, multipart_fuzz.c, json_body_fuzz.c) talk to, and the
 * client side of one exchange. Static functions only: each target includes
 * it once.
 *
 * The server (src/http/server.c, libmicrohttpd) is started once per
 * process, on 127.0.0.1 port 0 with an upload folder made by mkdtemp, and
 * stopped at exit. Each input becomes one request on a new loopback
 * connection: the request is sent whole (it is small, so it fits in the
 * socket buffers even when the server answers before reading all of it),
 * then the reply is read until the server closes (Connection: close), with
 * a timeout, so a hang becomes a failure rather than a stuck run. The
 * client closes with SO_LINGER 0 (a reset): no TIME_WAIT sockets pile up
 * over hundreds of thousands of connections. A connection that brings back
 * nothing at all is tried again (LB_TRIES), since a loaded machine drops
 * one now and then; an input that never gets a reply fails.
 *
 * A reply is "complete" when it has a status line, a header block, a
 * Content-Length and exactly that many bytes of body. Every helper is
 * marked unused: a target calls only some of them.
 */
#ifndef UPRES_TESTS_FUZZ_LOOPBACK_H
#define UPRES_TESTS_FUZZ_LOOPBACK_H

#include <arpa/inet.h>
#include <jansson.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/log.h"
#include "http/http.h"

#define LB_TIMEOUT_S 20        /* a reply slower than this is a hang */
#define LB_MAX_REPLY (1 << 20) /* bytes of one reply kept */

typedef struct lb_reply {
    unsigned status;  /* from the status line; 0 when none */
    int complete;     /* head, Content-Length and that many body bytes */
    char *data;       /* new (lb_reply_fini): the whole reply, NUL-terminated */
    size_t size;      /* bytes of data */
    const char *body; /* into data: the body, NUL-terminated */
    size_t body_size; /* bytes of body */
    const char *why;  /* when nothing came back: the step that failed, with errno in err */
    int err;
    int n_tries; /* connections it took (lb_exchange retries an empty one) */
} lb_reply_t;

static http_server_t *lb_server;
static char lb_dir[64];

static __attribute__((unused)) void lb_stop(void) {
    http_server_stop(lb_server);
    lb_server = NULL;
    if (lb_dir[0])
        rmdir(lb_dir); /* the server removes every upload it did not hand over */
}

/*
 * Start the server once (later calls do nothing): cfg's limits with our
 * address, port, upload folder and a small thread pool. Aborts when the
 * server cannot start: the target cannot run without it.
 */
static __attribute__((unused)) void lb_start(const http_config_t *cfg_in, const http_route_t *routes,
                                             int n_routes, void *ctx) {
    if (lb_server)
        return;
    signal(SIGPIPE, SIG_IGN); /* a server that closes early must not kill the client */
    log_set_level(LOG_ERROR); /* one log line per request would be most of the run time */
    /* OpenSSL's one-time set-up (the server hashes uploads) keeps an error
       state in the thread that runs it; in a server thread that state goes
       unreachable when the thread ends, and LeakSanitizer reports it. Here,
       in the main thread, it stays reachable. */
    OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, NULL);
    snprintf(lb_dir, sizeof lb_dir, "/tmp/upres-fuzz-XXXXXX");
    if (!mkdtemp(lb_dir)) {
        perror("loopback: mkdtemp");
        abort();
    }
    http_config_t cfg = *cfg_in;
    cfg.listen_addr = "127.0.0.1";
    cfg.port = 0;
    cfg.upload_dir = lb_dir;
    if (!cfg.n_threads)
        cfg.n_threads = 2;
    if (!cfg.n_defer_threads)
        cfg.n_defer_threads = 2;
    cfg.conn_timeout_s = LB_TIMEOUT_S;
    up_error_t err;
    if (http_server_start(&cfg, routes, n_routes, ctx, &lb_server, &err)) {
        fprintf(stderr, "loopback: cannot start the server: %s\n", err.msg);
        abort();
    }
    atexit(lb_stop);
}

static __attribute__((unused)) void lb_reply_fini(lb_reply_t *r) {
    free(r->data);
    memset(r, 0, sizeof *r);
}

/* Parse r->data into status, body and completeness. */
static __attribute__((unused)) void lb_parse(lb_reply_t *r) {
    const char *d = r->data;
    if (r->size < 12 || strncmp(d, "HTTP/1.", 7) || d[8] != ' ')
        return;
    unsigned s = 0;
    for (int i = 9; i < 12; i++) {
        if (d[i] < '0' || d[i] > '9')
            return;
        s = s * 10 + (unsigned)(d[i] - '0');
    }
    r->status = s;
    const char *end = strstr(d, "\r\n\r\n");
    if (!end)
        return;
    r->body = end + 4;
    r->body_size = r->size - (size_t)(r->body - d);
    long long len = -1;
    for (const char *h = strstr(d, "\r\n"); h && h < end; h = strstr(h + 2, "\r\n"))
        if (!strncasecmp(h + 2, "Content-Length:", 15))
            len = atoll(h + 17);
    r->complete = len >= 0 && (size_t)len == r->body_size;
}

/* One connection: send, read until the server closes. 0 when something came back. */
static __attribute__((unused)) int lb_try(const void *request, size_t n, lb_reply_t *r) {
    r->why = NULL;
    r->err = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        r->why = "socket", r->err = errno;
        return -1;
    }
    struct timeval tv = {.tv_sec = LB_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)http_server_port(lb_server))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        r->why = "connect", r->err = errno;
        close(fd);
        return -1;
    }
    const char *p = request;
    for (size_t left = n; left > 0;) {
        ssize_t k = send(fd, p, left, MSG_NOSIGNAL);
        if (k <= 0) {
            if (k < 0 && errno == EINTR)
                continue;
            break; /* the server closed early: read what it said */
        }
        p += k;
        left -= (size_t)k;
    }
    size_t cap = 4096;
    r->data = malloc(cap + 1);
    if (!r->data)
        abort();
    for (;;) {
        if (r->size == cap) {
            if (cap >= LB_MAX_REPLY)
                break;
            cap *= 2;
            r->data = realloc(r->data, cap + 1);
            if (!r->data)
                abort();
        }
        ssize_t k = recv(fd, r->data + r->size, cap - r->size, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            r->why = "recv", r->err = errno;
        if (k <= 0)
            break;
        r->size += (size_t)k;
    }
    r->data[r->size] = '\0';
    if (!r->size && !r->why)
        r->why = "closed with no reply";
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
    return r->size ? 0 : -1;
}

/*
 * Send the n bytes of a request (with "Connection: close") and read the
 * reply into *r (lb_reply_fini). A connection that brings back nothing at
 * all (refused, reset, closed at once: a loaded machine, not the input) is
 * tried again, LB_TRIES times in all; an input that gets no reply every
 * time fails. Returns 0 when a reply with a status line came back, else -1
 * (r->why says why when nothing came).
 */
#define LB_TRIES 3
static __attribute__((unused)) int lb_exchange(const void *request, size_t n, lb_reply_t *r) {
    memset(r, 0, sizeof *r);
    for (;;) {
        r->n_tries++;
        int rc = lb_try(request, n, r);
        if (rc == 0 || r->n_tries == LB_TRIES)
            break;
        free(r->data);
        r->data = NULL;
        r->size = 0;
        usleep(10000 * r->n_tries);
    }
    lb_parse(r);
    return r->status ? 0 : -1;
}

/* Append n bytes at *len of buf (capacity cap); aborts when it does not fit (the targets size it). */
static __attribute__((unused)) void lb_put(char *buf, size_t cap, size_t *len, const void *s, size_t n) {
    if (*len + n > cap)
        abort();
    memcpy(buf + *len, s, n);
    *len += n;
}

static __attribute__((unused)) void lb_puts(char *buf, size_t cap, size_t *len, const char *s) {
    lb_put(buf, cap, len, s, strlen(s));
}

/* Append the n bytes at s percent-encoded, every byte of them (3n bytes). */
static __attribute__((unused)) void lb_put_pct(char *buf, size_t cap, size_t *len, const unsigned char *s,
                                               size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        char e[3] = {'%', hex[s[i] >> 4], hex[s[i] & 15]};
        lb_put(buf, cap, len, e, 3);
    }
}

/* 1 when the n bytes at s are well-formed UTF-8 (RFC 3629) with no NUL; the targets' own oracle. */
static __attribute__((unused)) int lb_utf8_clean(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t k;
        unsigned min;
        if (c == 0)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF)
            k = 1, min = 0x80;
        else if (c >= 0xE0 && c <= 0xEF)
            k = 2, min = 0x800;
        else if (c >= 0xF0 && c <= 0xF4)
            k = 3, min = 0x10000;
        else
            return 0;
        if (i + k >= n) /* the sequence runs past the end */
            return 0;
        unsigned v = c & (0x3F >> k);
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
            v = v << 6 | (s[i + j] & 0x3F);
        }
        if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
            return 0;
        i += k + 1;
    }
    return 1;
}

/* Print what failed and the reply, then abort (the fuzzer keeps the input). */
static __attribute__((unused)) void lb_fail(const char *what, const lb_reply_t *r) {
    fprintf(stderr, "loopback: %s", what);
    if (r && r->why)
        fprintf(stderr, " (%s%s%s, %d tries)", r->why, r->err ? ": " : "", r->err ? strerror(r->err) : "",
                r->n_tries);
    fprintf(stderr, "\n--- reply (%zu bytes) ---\n%.2000s\n---\n", r ? r->size : 0,
            r && r->data ? r->data : "");
    abort();
}

/*
 * Send request, require a complete reply whose body is a JSON object, and
 * return that object (new: json_decref); *r gets the reply. Aborts otherwise.
 */
static __attribute__((unused)) json_t *lb_exchange_json(const void *request, size_t n, lb_reply_t *r) {
    if (lb_exchange(request, n, r))
        lb_fail("no reply", r);
    if (!r->complete)
        lb_fail("an incomplete reply", r);
    json_t *o = json_loadb(r->body, r->body_size, 0, NULL);
    if (!json_is_object(o))
        lb_fail("the body is not a JSON object", r);
    return o;
}

#endif
