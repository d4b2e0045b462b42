/*
 * fetch_test.c - tests for src/http/fetch.c: the address classifier, table
 * driven over every refused range (with the edge addresses just inside and
 * just outside), the allow list, and real transfers against a libmicrohttpd
 * server on 127.0.0.1 started here: bodies, redirects (counted, to refused
 * addresses, to other schemes), size limits with and without Content-Length,
 * HTTP errors, connection refused and a stalled server. Only loopback
 * addresses are ever dialled: the redirects to 169.254.169.254 and 10.0.0.1
 * are refused by the socket callback before a socket exists.
 */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http/fetch.h"
#include "test.h"

/* ---- classifier -------------------------------------------------------- */

static int to_sockaddr(const char *text, struct sockaddr_storage *ss) {
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, text, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, text, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        return 0;
    }
    return -1;
}

typedef struct addr_case {
    const char *addr;
    int allowed;      /* expected result with no allow list */
    const char *kind; /* substring of the reason when refused */
} addr_case_t;

static const addr_case_t addr_cases[] = {
    /* public */
    {"8.8.8.8", 1, NULL},
    {"1.1.1.1", 1, NULL},
    {"2606:4700::1111", 1, NULL},
    {"2a00:1450:4001:80b::200e", 1, NULL},
    /* 0.0.0.0/8 */
    {"0.0.0.0", 0, "this-network"},
    {"0.255.255.255", 0, "this-network"},
    {"1.0.0.0", 1, NULL},
    /* 10/8 */
    {"9.255.255.255", 1, NULL},
    {"10.0.0.0", 0, "private"},
    {"10.0.0.1", 0, "private"},
    {"10.255.255.255", 0, "private"},
    {"11.0.0.0", 1, NULL},
    /* 100.64/10 */
    {"100.63.255.255", 1, NULL},
    {"100.64.0.0", 0, "CGNAT"},
    {"100.127.255.255", 0, "CGNAT"},
    {"100.128.0.0", 1, NULL},
    /* 127/8 */
    {"126.255.255.255", 1, NULL},
    {"127.0.0.1", 0, "loopback"},
    {"127.255.255.255", 0, "loopback"},
    {"128.0.0.0", 1, NULL},
    /* 169.254/16 */
    {"169.253.255.255", 1, NULL},
    {"169.254.0.0", 0, "link-local"},
    {"169.254.169.254", 0, "link-local"},
    {"169.255.0.0", 1, NULL},
    /* 172.16/12 */
    {"172.15.255.255", 1, NULL},
    {"172.16.0.0", 0, "private"},
    {"172.31.255.255", 0, "private"},
    {"172.32.0.0", 1, NULL},
    /* 192.0.0/24, 192.0.2/24 */
    {"191.255.255.255", 1, NULL},
    {"192.0.0.0", 0, "IETF"},
    {"192.0.0.255", 0, "IETF"},
    {"192.0.1.0", 1, NULL},
    {"192.0.2.0", 0, "documentation"},
    {"192.0.2.255", 0, "documentation"},
    {"192.0.3.0", 1, NULL},
    /* 192.168/16 */
    {"192.167.255.255", 1, NULL},
    {"192.168.0.0", 0, "private"},
    {"192.168.255.255", 0, "private"},
    {"192.169.0.0", 1, NULL},
    /* 198.18/15 */
    {"198.17.255.255", 1, NULL},
    {"198.18.0.0", 0, "benchmarking"},
    {"198.19.255.255", 0, "benchmarking"},
    {"198.20.0.0", 1, NULL},
    /* 198.51.100/24, 203.0.113/24 */
    {"198.51.99.255", 1, NULL},
    {"198.51.100.0", 0, "documentation"},
    {"198.51.100.255", 0, "documentation"},
    {"198.51.101.0", 1, NULL},
    {"203.0.112.255", 1, NULL},
    {"203.0.113.0", 0, "documentation"},
    {"203.0.113.255", 0, "documentation"},
    {"203.0.114.0", 1, NULL},
    /* 224/4, 240/4 */
    {"223.255.255.255", 1, NULL},
    {"224.0.0.0", 0, "multicast"},
    {"239.255.255.255", 0, "multicast"},
    {"240.0.0.0", 0, "reserved"},
    {"255.255.255.255", 0, "reserved"},
    /* IPv6 */
    {"::", 0, "unspecified"},
    {"::1", 0, "loopback"},
    {"::2", 0, "this-network"}, /* IPv4-compatible 0.0.0.2 */
    {"fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1, NULL},
    {"fc00::", 0, "unique-local"},
    {"fd12:3456::1", 0, "unique-local"},
    {"fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0, "unique-local"},
    {"fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1, NULL},
    {"fe80::", 0, "link-local"},
    {"fe80::1", 0, "link-local"},
    {"febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0, "link-local"},
    {"ff00::", 0, "multicast"},
    {"ff02::1", 0, "multicast"},
    {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0, "multicast"},
    /* IPv4-mapped */
    {"::ffff:127.0.0.1", 0, "loopback"},
    {"::ffff:169.254.169.254", 0, "link-local"},
    {"::ffff:10.0.0.1", 0, "private"},
    {"::ffff:0.0.0.0", 0, "this-network"},
    {"::ffff:8.8.8.8", 1, NULL},
    {"::fffe:7f00:1", 1, NULL}, /* neither ::ffff:0:0/96 nor ::/96: public */
    /* NAT64 */
    {"64:ff9b::7f00:1", 0, "loopback"},
    {"64:ff9b::a9fe:a9fe", 0, "link-local"},
    {"64:ff9b::808:808", 1, NULL},
    {"64:ff9b:1::1", 0, "NAT64"},
    /* 6to4 */
    {"2002:7f00:1::1", 0, "loopback"},
    {"2002:a00:1::", 0, "private"},
    {"2002:808:808::1", 1, NULL},
    {"2001:ffff::1", 1, NULL},
    /* further special-purpose IPv6 ranges */
    {"2001::1", 0, "Teredo"},
    {"2001:0:ffff:ffff:ffff:ffff:ffff:ffff", 0, "Teredo"},
    {"2001:1::", 1, NULL},
    {"fec0::1", 0, "site-local"},
    {"100::1", 0, "discard"},
    {"::808:808", 1, NULL}, /* IPv4-compatible, embedded 8.8.8.8 */
    {"::a00:1", 0, "private"},
    /* documentation 2001:db8::/32 and neighbours */
    {"2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", 1, NULL},
    {"2001:db8::", 0, "documentation"},
    {"2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 0, "documentation"},
    {"2001:db9::", 1, NULL},
};

static void test_classifier(void) {
    for (size_t i = 0; i < sizeof addr_cases / sizeof addr_cases[0]; i++) {
        const addr_case_t *c = &addr_cases[i];
        struct sockaddr_storage ss;
        if (to_sockaddr(c->addr, &ss) != 0) {
            CHECKF(0, "bad test address %s", c->addr);
            continue;
        }
        char why[256];
        int got = fetch_addr_allowed((struct sockaddr *)&ss, NULL, why, sizeof why);
        CHECKF(got == c->allowed, "%s: expected %d, got %d (%s)", c->addr, c->allowed, got, why);
        if (!c->allowed) {
            CHECKF(strncmp(why, "refused: ", 9) == 0 && strstr(why, c->kind),
                   "%s: reason \"%s\" lacks \"%s\"", c->addr, why, c->kind);
        } else {
            CHECKF(why[0] == '\0', "%s: reason set when allowed: %s", c->addr, why);
        }
    }

    /* The exact message format the API shows. */
    struct sockaddr_storage ss;
    char why[256];
    to_sockaddr("169.254.169.254", &ss);
    fetch_addr_allowed((struct sockaddr *)&ss, NULL, why, sizeof why);
    CHECKF(strcmp(why, "refused: 169.254.169.254 is a link-local address") == 0, "%s", why);
    to_sockaddr("::ffff:127.0.0.1", &ss);
    fetch_addr_allowed((struct sockaddr *)&ss, NULL, why, sizeof why);
    CHECKF(strstr(why, "IPv4-mapped") && strstr(why, "127.0.0.1"), "%s", why);

    /* A small buffer is truncated, not overrun; NULL why is fine. */
    char tiny[8];
    to_sockaddr("10.0.0.1", &ss);
    CHECK(fetch_addr_allowed((struct sockaddr *)&ss, NULL, tiny, sizeof tiny) == 0);
    CHECK(strlen(tiny) == sizeof tiny - 1);
    CHECK(fetch_addr_allowed((struct sockaddr *)&ss, NULL, NULL, 0) == 0);

    /* Non-IP families are refused. */
    struct sockaddr_storage un;
    memset(&un, 0, sizeof un);
    un.ss_family = AF_UNIX;
    CHECK(fetch_addr_allowed((struct sockaddr *)&un, NULL, why, sizeof why) == 0);
    CHECK(fetch_addr_allowed(NULL, NULL, why, sizeof why) == 0);
}

static int allowed(const char *addr, const char *allow) {
    struct sockaddr_storage ss;
    if (to_sockaddr(addr, &ss) != 0)
        return -1;
    char why[256];
    return fetch_addr_allowed((struct sockaddr *)&ss, allow, why, sizeof why);
}

static void test_allow_list(void) {
    CHECK(allowed("127.0.0.1", "127.0.0.0/8") == 1);
    CHECK(allowed("127.255.0.9", "127.0.0.0/8") == 1);
    CHECK(allowed("10.0.0.1", "127.0.0.0/8") == 0);
    CHECK(allowed("::ffff:127.0.0.1", "127.0.0.0/8") == 1); /* the same host */
    CHECK(allowed("::1", "127.0.0.0/8") == 0);
    CHECK(allowed("::1", "::1/128") == 1);
    CHECK(allowed("::1", "::1") == 1);
    CHECK(allowed("::2", "::1/128") == 0);
    CHECK(allowed("127.0.0.1", "::1/128") == 0);
    CHECK(allowed("127.0.0.1", "127.0.0.0/8,::1/128") == 1);
    CHECK(allowed("::1", " 127.0.0.0/8 , ::1/128 ") == 1);
    CHECK(allowed("10.1.2.3", "10.1.2.0/24") == 1);
    CHECK(allowed("10.1.3.3", "10.1.2.0/24") == 0);
    CHECK(allowed("172.20.0.1", "172.16.0.0/12") == 1);
    CHECK(allowed("127.0.0.1", "127.0.0.1") == 1);
    CHECK(allowed("127.0.0.2", "127.0.0.1") == 0);
    CHECK(allowed("fd00::5", "fd00::/8") == 1);
    CHECK(allowed("fe80::1", "fd00::/8") == 0);
    CHECK(allowed("127.0.0.1", "") == 0);
    CHECK(allowed("127.0.0.1", ",") == 0);
    /* Public addresses stay allowed whatever the list says. */
    CHECK(allowed("8.8.8.8", "127.0.0.0/8") == 1);
    /* Malformed entries allow nothing, and do not break the good ones. */
    static const char *bad[] = {"127.0.0.0/33",
                                "127.0.0.0/",
                                "127.0.0/8",
                                "127.0.0.0/8x",
                                "localhost",
                                "::1/129",
                                "127.0.0.0/-1",
                                "127.0.0.0/0008",
                                "0x7f000001/8",
                                "127.0.0.0/8/8",
                                "1234567890123456789012345678901234567890123456789012345678901234567890"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECKF(allowed("127.0.0.1", bad[i]) == 0, "allow \"%s\" let 127.0.0.1 through", bad[i]);
        up_error_t e = {0};
        CHECKF(fetch_allow_validate(bad[i], &e) == UP_ERR_INVALID, "validate \"%s\"", bad[i]);
        CHECK(e.code == UP_ERR_INVALID && strstr(e.msg, "allowed address range"));
    }
    CHECK(allowed("127.0.0.1", "bogus,127.0.0.0/8") == 1);
    up_error_t e = {0};
    CHECK(fetch_allow_validate(NULL, &e) == 0);
    CHECK(fetch_allow_validate("", &e) == 0);
    CHECK(fetch_allow_validate("127.0.0.0/8, ::1/128,10.0.0.0/8", &e) == 0);
    CHECK(fetch_allow_validate("127.0.0.0/8,nope", &e) == UP_ERR_INVALID);
    CHECK(strstr(e.msg, "nope") != NULL);
}

/* ---- loopback test server ---------------------------------------------- */

#define BIG_SIZE 2000          /* /big, with Content-Length */
#define CHUNKED_SIZE (4 << 20) /* /chunked, no Content-Length */

static atomic_int stop_stalling;
static atomic_long chunked_sent;

static ssize_t chunked_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)cls;
    if (pos >= CHUNKED_SIZE)
        return MHD_CONTENT_READER_END_OF_STREAM;
    size_t n = max < 4096 ? max : 4096;
    memset(buf, 'c', n);
    atomic_fetch_add(&chunked_sent, (long)n);
    return (ssize_t)n;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *body,
                             const char *location) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (location)
        MHD_add_response_header(r, "Location", location);
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                               const char *version, const char *upload_data, size_t *upload_data_size,
                               void **con_cls) {
    (void)cls;
    (void)method;
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    int n;
    char loc[64];
    if (strcmp(url, "/ok") == 0)
        return reply(conn, 200, "hello, upres", NULL);
    if (strcmp(url, "/empty") == 0)
        return reply(conn, 200, "", NULL);
    if (sscanf(url, "/redir/%d", &n) == 1) {
        if (n <= 0)
            return reply(conn, 200, "redirected", NULL);
        snprintf(loc, sizeof loc, "/redir/%d", n - 1);
        return reply(conn, 302, "", loc);
    }
    if (strcmp(url, "/to-metadata") == 0)
        return reply(conn, 302, "", "http://169.254.169.254/latest/meta-data/");
    if (strcmp(url, "/to-private") == 0)
        return reply(conn, 301, "", "http://10.0.0.1/");
    if (strcmp(url, "/to-file") == 0)
        return reply(conn, 302, "", "file:///etc/passwd");
    if (strcmp(url, "/to-ftp") == 0)
        return reply(conn, 302, "", "ftp://127.0.0.1/x");
    if (strcmp(url, "/big") == 0) {
        static char big[BIG_SIZE + 1];
        memset(big, 'b', BIG_SIZE);
        return reply(conn, 200, big, NULL);
    }
    if (strcmp(url, "/chunked") == 0) {
        struct MHD_Response *r =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, chunked_reader, NULL, NULL);
        enum MHD_Result ret = MHD_queue_response(conn, 200, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (strcmp(url, "/stall") == 0) {
        /* Up to 3 s, in this connection's own thread, unless the test ends. */
        for (int i = 0; i < 300 && !atomic_load(&stop_stalling); i++)
            usleep(10 * 1000);
        return reply(conn, 200, "late", NULL);
    }
    return reply(conn, 404, "not found", NULL);
}

static struct MHD_Daemon *server_start(int *port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    struct MHD_Daemon *d =
        MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL,
                         handler, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&a, MHD_OPTION_END);
    if (!d)
        return NULL;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    *port = info ? info->port : 0;
    return d;
}

/* A loopback port nobody listens on (bound, then closed). */
static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Fetch base+path; returns the code, fills body/size/err; body freed by caller. */
static int get(int port, const char *path, const fetch_opts_t *o, void **body, size_t *size,
               up_error_t *err) {
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    memset(err, 0, sizeof *err);
    return fetch_url(url, o, body, size, err);
}

static void test_transfers(void) {
    int port = 0;
    struct MHD_Daemon *d = server_start(&port);
    CHECK(d != NULL && port > 0);
    if (!d)
        return;

    fetch_opts_t o;
    fetch_opts_init(&o);
    CHECK(o.max_bytes == 50u * 1000 * 1000 && o.timeout_s == 10 && o.connect_timeout_s == 10 &&
          o.max_redirects == 5 && o.allow == NULL && o.min_rate == 4096 && o.min_rate_s == 3);
    o.allow = "127.0.0.0/8";
    o.timeout_s = 10;
    void *body = NULL;
    size_t size = 0;
    up_error_t err;
    int rc;

    /* 200 with a body, through the allow list. */
    rc = get(port, "/ok", &o, &body, &size, &err);
    CHECKF(rc == 0, "/ok: %d %s", rc, err.msg);
    CHECK(body && size == 12 && memcmp(body, "hello, upres", 12) == 0);
    free(body);

    rc = get(port, "/empty", &o, &body, &size, &err);
    CHECKF(rc == 0 && body != NULL && size == 0, "/empty: %d %s", rc, err.msg);
    free(body);

    /* The same URL without the allow list: loopback refused. */
    fetch_opts_t plain;
    fetch_opts_init(&plain);
    rc = get(port, "/ok", &plain, &body, &size, &err);
    CHECKF(rc == UP_ERR_INVALID && err.code == UP_ERR_INVALID, "no allow: %d", rc);
    CHECKF(strstr(err.msg, "refused: 127.0.0.1 is a loopback address") != NULL, "%s", err.msg);
    CHECK(body == NULL && size == 0);
    /* NULL options mean the defaults: refused too. */
    rc = get(port, "/ok", NULL, &body, &size, &err);
    CHECKF(rc == UP_ERR_INVALID && strstr(err.msg, "loopback"), "NULL opts: %d %s", rc, err.msg);

    /* Redirect chains: 3 is fine, 6 is over the limit of 5. */
    rc = get(port, "/redir/3", &o, &body, &size, &err);
    CHECKF(rc == 0 && size == 10 && memcmp(body, "redirected", 10) == 0, "/redir/3: %d %s", rc, err.msg);
    free(body);
    rc = get(port, "/redir/5", &o, &body, &size, &err);
    CHECKF(rc == 0, "/redir/5: %d %s", rc, err.msg);
    free(body);
    rc = get(port, "/redir/6", &o, &body, &size, &err);
    CHECKF(rc == UP_ERR_INVALID && strstr(err.msg, "redirected more than 5 times"), "/redir/6: %d %s", rc,
           err.msg);
    CHECK(body == NULL);

    /* Redirects from the allowed server to refused addresses: refused at connect. */
    rc = get(port, "/to-metadata", &o, &body, &size, &err);
    CHECKF(rc == UP_ERR_INVALID && strcmp(err.msg, "refused: 169.254.169.254 is a link-local address") == 0,
           "/to-metadata: %d %s", rc, err.msg);
    rc = get(port, "/to-private", &o, &body, &size, &err);
    CHECKF(rc == UP_ERR_INVALID && strstr(err.msg, "10.0.0.1") && strstr(err.msg, "private"),
           "/to-private: %d %s", rc, err.msg);

    /* Other schemes: directly and after a redirect. */
    rc = get(port, "/to-file", &o, &body, &size, &err);
    CHECKF(rc == UP_ERR_INVALID && strstr(err.msg, "http or https"), "/to-file: %d %s", rc, err.msg);
    rc = get(port, "/to-ftp", &o, &body, &size, &err);
    CHECKF(rc == UP_ERR_INVALID && strstr(err.msg, "http or https"), "/to-ftp: %d %s", rc, err.msg);
    memset(&err, 0, sizeof err);
    rc = fetch_url("ftp://127.0.0.1/x", &o, &body, &size, &err);
    CHECKF(rc == UP_ERR_INVALID && strstr(err.msg, "\"ftp\""), "ftp: %d %s", rc, err.msg);
    rc = fetch_url("file:///etc/passwd", &o, &body, &size, &err);
    CHECKF(rc == UP_ERR_INVALID && strstr(err.msg, "\"file\""), "file: %d %s", rc, err.msg);
    rc = fetch_url("gopher://127.0.0.1/", &o, &body, &size, &err);
    CHECKF(rc == UP_ERR_INVALID, "gopher: %d %s", rc, err.msg);

    /* Malformed URLs. */
    static const char *bad_urls[] = {
        "", "not a url", "127.0.0.1/ok", "http://", "http:///x.png", "http://[::1", "http://exa mple.com/"};
    for (size_t i = 0; i < sizeof bad_urls / sizeof bad_urls[0]; i++) {
        memset(&err, 0, sizeof err);
        rc = fetch_url(bad_urls[i], &o, &body, &size, &err);
        CHECKF(rc == UP_ERR_INVALID && err.msg[0], "\"%s\": %d %s", bad_urls[i], rc, err.msg);
        CHECK(body == NULL);
    }
    rc = fetch_url(NULL, &o, &body, &size, &err);
    CHECK(rc == UP_ERR_INVALID);

    /* Size limits: Content-Length up front, and counted while receiving. */
    fetch_opts_t small = o;
    small.max_bytes = 1000;
    rc = get(port, "/big", &small, &body, &size, &err);
    CHECKF(rc == UP_ERR_TOO_LARGE && strstr(err.msg, "1000 bytes"), "/big: %d %s", rc, err.msg);
    CHECK(body == NULL);
    small.max_bytes = BIG_SIZE;
    rc = get(port, "/big", &small, &body, &size, &err);
    CHECKF(rc == 0 && size == BIG_SIZE, "/big at the limit: %d %s", rc, err.msg);
    free(body);
    small.max_bytes = 10000;
    atomic_store(&chunked_sent, 0);
    rc = get(port, "/chunked", &small, &body, &size, &err);
    CHECKF(rc == UP_ERR_TOO_LARGE, "/chunked: %d %s", rc, err.msg);
    CHECK(body == NULL);
    /* Aborted early: far from the 4 MB the server would have sent. */
    CHECKF(atomic_load(&chunked_sent) < CHUNKED_SIZE, "server sent %ld", atomic_load(&chunked_sent));
    small.max_bytes = 2 * CHUNKED_SIZE;
    rc = get(port, "/chunked", &small, &body, &size, &err);
    CHECKF(rc == 0 && size == CHUNKED_SIZE, "/chunked within limit: %d %s", rc, err.msg);
    free(body);

    /* HTTP errors. */
    rc = get(port, "/missing", &o, &body, &size, &err);
    CHECKF(rc == UP_ERR_IO && strcmp(err.msg, "the server answered 404") == 0, "/missing: %d %s", rc,
           err.msg);

    /* Connection refused (nobody listens there): an I/O error, not a refusal. */
    int closed = free_port();
    rc = get(closed, "/ok", &o, &body, &size, &err);
    CHECKF(rc == UP_ERR_IO && strstr(err.msg, "could not connect"), "closed port: %d %s", rc, err.msg);

    /* A stalled server: timed out after timeout_s. */
    fetch_opts_t quick = o;
    quick.timeout_s = 1;
    double t0 = now_s();
    rc = get(port, "/stall", &quick, &body, &size, &err);
    double took = now_s() - t0;
    CHECKF(rc == UP_ERR_IO && strstr(err.msg, "timed out"), "/stall: %d %s", rc, err.msg);
    CHECKF(took >= 0.9 && took < 2.5, "/stall took %.2f s", took);

    /* A malformed allow list is reported, not silently ignored. */
    fetch_opts_t badallow = o;
    badallow.allow = "127.0.0.0/99";
    rc = get(port, "/ok", &badallow, &body, &size, &err);
    CHECKF(rc == UP_ERR_INVALID && strstr(err.msg, "127.0.0.0/99"), "bad allow: %d %s", rc, err.msg);

    atomic_store(&stop_stalling, 1);
    MHD_stop_daemon(d);
}

int main(void) {
    test_classifier();
    test_allow_list();
    CHECK(fetch_global_init() == 0);
    CHECK(fetch_global_init() == 0);
    test_transfers();
    return test_summary();
}
