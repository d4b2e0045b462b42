/*
 * fetch.c - the safe URL fetcher behind `image_url` (see fetch.h): libcurl
 * with an address check on every socket it opens.
 *
 * DESIGN: the check lives in the CURLOPT_OPENSOCKETFUNCTION callback, which
 * libcurl calls with the resolved address of every connection it is about to
 * make (each address it tries, each redirect, each new connection). The
 * callback refuses by returning CURL_SOCKET_BAD before any socket exists, so
 * a refused address never sees a packet; the reason is kept in the transfer
 * context and turned into the error message once curl gives up with
 * CURLE_COULDNT_CONNECT. Everything else is bounded by curl options (time,
 * redirects, protocols, Content-Length) and by counting in the write
 * callback. One easy handle per call: no state is shared between threads
 * except curl's global init, done once under pthread_once.
 */
#include "http/fetch.h"

#include <arpa/inet.h>
#include <assert.h>
#include <curl/curl.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/cidr.h"

#define URL_MAX 8192 /* longer URLs are refused as invalid */

/* ---- address classification ------------------------------------------- */

typedef struct range4 {
    uint32_t net;     /* host byte order */
    int prefix;       /* bits */
    const char *kind; /* "a KIND address" */
} range4_t;

/* Ranges that are not the public internet (IANA special-purpose registry). */
static const range4_t refused4[] = {
    {0x00000000u, 8, "this-network"},    /* 0.0.0.0/8 */
    {0x0a000000u, 8, "private"},         /* 10.0.0.0/8 */
    {0x64400000u, 10, "shared (CGNAT)"}, /* 100.64.0.0/10 */
    {0x7f000000u, 8, "loopback"},        /* 127.0.0.0/8 */
    {0xa9fe0000u, 16, "link-local"},     /* 169.254.0.0/16, cloud metadata */
    {0xac100000u, 12, "private"},        /* 172.16.0.0/12 */
    {0xc0000000u, 24, "IETF protocol"},  /* 192.0.0.0/24 */
    {0xc0000200u, 24, "documentation"},  /* 192.0.2.0/24 TEST-NET-1 */
    {0xc0a80000u, 16, "private"},        /* 192.168.0.0/16 */
    {0xc6120000u, 15, "benchmarking"},   /* 198.18.0.0/15 */
    {0xc6336400u, 24, "documentation"},  /* 198.51.100.0/24 TEST-NET-2 */
    {0xcb007100u, 24, "documentation"},  /* 203.0.113.0/24 TEST-NET-3 */
    {0xe0000000u, 4, "multicast"},       /* 224.0.0.0/4 */
    {0xf0000000u, 4, "reserved"},        /* 240.0.0.0/4 incl. broadcast */
};

enum { EMBED_NONE, EMBED_LOW32, EMBED_6TO4 };

typedef struct range6 {
    uint8_t net[16];
    int prefix;
    const char *kind; /* NULL: judge the embedded IPv4 address instead */
    int embed;        /* EMBED_*: where the IPv4 address sits */
    const char *form; /* name of the embedding, for the message */
} range6_t;

/* Checked in order: the exact addresses first, then the embeddings. */
static const range6_t refused6[] = {
    {{0}, 128, "unspecified", EMBED_NONE, NULL},                        /* ::/128 */
    {{[15] = 1}, 128, "loopback", EMBED_NONE, NULL},                    /* ::1/128 */
    {{[10] = 0xff, [11] = 0xff}, 96, NULL, EMBED_LOW32, "IPv4-mapped"}, /* ::ffff:0:0/96 */
    {{0x00, 0x64, 0xff, 0x9b}, 96, NULL, EMBED_LOW32, "NAT64"},         /* 64:ff9b::/96 */
    {{0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}, 48, "local-use NAT64", EMBED_NONE, NULL},
    {{0}, 96, NULL, EMBED_LOW32, "IPv4-compatible"},                   /* ::/96 */
    {{0x01, 0x00}, 64, "discard-only", EMBED_NONE, NULL},              /* 100::/64 */
    {{0x20, 0x02}, 16, NULL, EMBED_6TO4, "6to4"},                      /* 2002::/16 */
    {{0x20, 0x01, 0x0d, 0xb8}, 32, "documentation", EMBED_NONE, NULL}, /* 2001:db8::/32 */
    {{0x20, 0x01, 0x00, 0x00}, 32, "Teredo", EMBED_NONE, NULL},        /* 2001::/32 */
    {{0xfc}, 7, "unique-local (private)", EMBED_NONE, NULL},           /* fc00::/7 */
    {{0xfe, 0x80}, 10, "link-local", EMBED_NONE, NULL},                /* fe80::/10 */
    {{0xfe, 0xc0}, 10, "site-local", EMBED_NONE, NULL},                /* fec0::/10 */
    {{0xff}, 8, "multicast", EMBED_NONE, NULL},                        /* ff00::/8 */
};

static const char *classify4(uint32_t a) {
    for (size_t i = 0; i < sizeof refused4 / sizeof refused4[0]; i++) {
        uint32_t mask = refused4[i].prefix ? 0xffffffffu << (32 - refused4[i].prefix) : 0;
        if ((a & mask) == refused4[i].net)
            return refused4[i].kind;
    }
    return NULL;
}

static int refuse(char *why, size_t why_size, const char *addr, const char *kind, const char *form,
                  const char *embedded) {
    if (why && why_size) {
        const char *article = strchr("aeiouAEIOU", kind[0]) ? "an" : "a";
        if (form)
            snprintf(why, why_size, "refused: %s is %s %s address (%s %s)", addr, article, kind, form,
                     embedded);
        else
            snprintf(why, why_size, "refused: %s is %s %s address", addr, article, kind);
    }
    return 0;
}

int fetch_addr_allowed(const struct sockaddr *sa, const char *allow, char *why, size_t why_size) {
    char text[INET6_ADDRSTRLEN];
    if (why && why_size)
        why[0] = '\0';
    if (!sa)
        return refuse(why, why_size, "(none)", "unknown", NULL, NULL);
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in in;
        memcpy(&in, sa, sizeof in);
        const uint8_t *b = (const uint8_t *)&in.sin_addr;
        if (cidr_list_match(allow, AF_INET, b))
            return 1;
        const char *kind = classify4(ntohl(in.sin_addr.s_addr));
        if (!kind)
            return 1;
        inet_ntop(AF_INET, &in.sin_addr, text, sizeof text);
        return refuse(why, why_size, text, kind, NULL, NULL);
    }
    if (sa->sa_family != AF_INET6) {
        snprintf(text, sizeof text, "family %d", (int)sa->sa_family);
        return refuse(why, why_size, text, "non-IP", NULL, NULL);
    }
    struct sockaddr_in6 in6;
    memcpy(&in6, sa, sizeof in6);
    const uint8_t *b = in6.sin6_addr.s6_addr;
    if (cidr_list_match(allow, AF_INET6, b))
        return 1;
    inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof text);
    for (size_t i = 0; i < sizeof refused6 / sizeof refused6[0]; i++) {
        const range6_t *r = &refused6[i];
        if (!cidr_prefix_match(r->net, b, r->prefix))
            continue;
        if (r->embed == EMBED_NONE)
            return refuse(why, why_size, text, r->kind, NULL, NULL);
        const uint8_t *v4 = r->embed == EMBED_LOW32 ? b + 12 : b + 2;
        /* An IPv4-mapped address is the IPv4 host itself: IPv4 allow ranges apply. */
        if (r->embed == EMBED_LOW32 && r->net[10] == 0xff && cidr_list_match(allow, AF_INET, v4))
            return 1;
        uint32_t a = (uint32_t)v4[0] << 24 | (uint32_t)v4[1] << 16 | (uint32_t)v4[2] << 8 | v4[3];
        const char *kind = classify4(a);
        if (!kind)
            return 1;
        char text4[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, v4, text4, sizeof text4);
        return refuse(why, why_size, text, kind, r->form, text4);
    }
    return 1;
}

int fetch_allow_validate(const char *allow, up_error_t *err) {
    if (cidr_list_check(allow, err) == 0)
        return 0;
    up_error_prefix(err, "the allowed address ranges");
    return UP_ERR_INVALID;
}

/* ---- libcurl ----------------------------------------------------------- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;

static void global_init(void) { global_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

int fetch_global_init(void) {
    pthread_once(&global_once, global_init);
    return global_rc == CURLE_OK ? 0 : UP_ERR_IO;
}

void fetch_opts_init(fetch_opts_t *o) {
    o->max_bytes = FETCH_DEFAULT_MAX_BYTES;
    o->timeout_s = 10;
    o->min_rate = 4096;
    o->min_rate_s = 3;
    o->connect_timeout_s = 10;
    o->max_redirects = 5;
    o->allow = NULL;
}

typedef struct transfer {
    char *buf;         /* new; the body so far */
    size_t len, cap;   /* bytes used, bytes allocated */
    size_t max;        /* body limit in bytes */
    int too_large;     /* the write callback stopped at max */
    int nomem;         /* the write callback could not grow buf */
    const char *allow; /* borrowed from the options */
    int refused;       /* the socket callback refused an address */
    char why[256];     /* its reason, for the first refusal */
} transfer_t;

static size_t on_write(char *data, size_t size, size_t nmemb, void *ud) {
    transfer_t *t = ud;
    size_t n = size * nmemb;
    if (n > t->max - t->len) {
        t->too_large = 1;
        return 0; /* not n: curl aborts the transfer */
    }
    if (t->len + n > t->cap) {
        size_t cap = t->cap ? t->cap : 64 * 1024;
        while (cap < t->len + n)
            cap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
        if (cap > t->max)
            cap = t->max;
        char *nb = realloc(t->buf, cap);
        if (!nb) {
            t->nomem = 1;
            return 0;
        }
        t->buf = nb;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, data, n);
    t->len += n;
    return n;
}

static curl_socket_t on_opensocket(void *ud, curlsocktype purpose, struct curl_sockaddr *a) {
    transfer_t *t = ud;
    char why[sizeof t->why];
    struct sockaddr_storage ss;
    if (purpose != CURLSOCKTYPE_IPCXN || a->addrlen > sizeof ss) {
        snprintf(why, sizeof why, "refused: an unexpected kind of socket was requested");
        goto refused;
    }
    memset(&ss, 0, sizeof ss);
    memcpy(&ss, &a->addr, a->addrlen);
    if (!fetch_addr_allowed((const struct sockaddr *)&ss, t->allow, why, sizeof why))
        goto refused;
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
refused:
    if (!t->refused) {
        t->refused = 1;
        memcpy(t->why, why, sizeof t->why);
    }
    return CURL_SOCKET_BAD;
}

/* Check scheme and syntax before curl sees the URL; copy the host for messages. */
static int url_check(const char *url, char *host, size_t host_size, up_error_t *err) {
    host[0] = '\0';
    if (!url || !*url)
        return up_error_set(err, UP_ERR_INVALID, 0, "the image URL is empty");
    if (strlen(url) > URL_MAX)
        return up_error_set(err, UP_ERR_INVALID, 0, "the image URL is longer than %d bytes", URL_MAX);
    CURLU *u = curl_url();
    if (!u)
        return up_error_set(err, UP_ERR_NOMEM, 0, "out of memory parsing the image URL");
    char *scheme = NULL, *h = NULL;
    int rc = 0;
    if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
        rc = up_error_set(err, UP_ERR_INVALID, 0, "the image URL is not a valid URL");
        goto done;
    }
    if (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0) {
        rc = up_error_set(err, UP_ERR_INVALID, 0,
                          "the image URL scheme \"%.20s\" is not allowed; use http or https", scheme);
        goto done;
    }
    /* libcurl reads "http:///x.png" as host "x.png": an empty authority is no host */
    const char *auth = strstr(url, "://");
    if (!auth || auth[3] == '/' || auth[3] == '\0' || curl_url_get(u, CURLUPART_HOST, &h, 0) != CURLUE_OK ||
        !h || !*h) {
        rc = up_error_set(err, UP_ERR_INVALID, 0, "the image URL has no host");
        goto done;
    }
    snprintf(host, host_size, "%s", h);
done:
    curl_free(scheme);
    curl_free(h);
    curl_url_cleanup(u);
    return rc;
}

static int fail_from_curl(CURL *c, CURLcode cc, const transfer_t *t, const char *host, const char *errbuf,
                          const fetch_opts_t *o, up_error_t *err) {
    const char *detail = errbuf[0] ? errbuf : curl_easy_strerror(cc);
    long status = 0;
    curl_off_t connect_us = 0;
    switch (cc) {
    case CURLE_COULDNT_CONNECT:
        if (t->refused)
            return up_error_set(err, UP_ERR_INVALID, 0, "%s", t->why);
        return up_error_set(err, UP_ERR_IO, 0, "could not connect to %s: %s", host, detail);
    case CURLE_URL_MALFORMAT:
        return up_error_set(err, UP_ERR_INVALID, 0, "the image URL (or a redirect) is not a valid URL");
    case CURLE_UNSUPPORTED_PROTOCOL:
        return up_error_set(err, UP_ERR_INVALID, 0,
                            "the image URL redirected to a scheme other than http or https");
    case CURLE_TOO_MANY_REDIRECTS:
        return up_error_set(err, UP_ERR_INVALID, 0, "the image URL redirected more than %d times",
                            o->max_redirects);
    case CURLE_HTTP_RETURNED_ERROR:
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        return up_error_set(err, UP_ERR_IO, 0, "the server answered %ld", status);
    case CURLE_FILESIZE_EXCEEDED:
        return up_error_set(err, UP_ERR_TOO_LARGE, 0,
                            "the image at the URL is larger than the limit of %zu bytes", o->max_bytes);
    case CURLE_WRITE_ERROR:
        if (t->too_large)
            return up_error_set(err, UP_ERR_TOO_LARGE, 0,
                                "the image at the URL is larger than the limit of %zu bytes", o->max_bytes);
        if (t->nomem)
            return up_error_set(err, UP_ERR_NOMEM, 0, "out of memory receiving the image");
        break;
    case CURLE_COULDNT_RESOLVE_HOST:
        return up_error_set(err, UP_ERR_IO, 0, "could not resolve the host name %s", host);
    case CURLE_OPERATION_TIMEDOUT:
        curl_easy_getinfo(c, CURLINFO_CONNECT_TIME_T, &connect_us);
        if (connect_us == 0)
            return up_error_set(err, UP_ERR_IO, 0, "connecting to %s timed out", host);
        if (strstr(detail, "too slow"))
            return up_error_set(err, UP_ERR_IO, 0, "the image URL sent less than %g bytes/s for %g s",
                                o->min_rate, ceil(o->min_rate_s));
        return up_error_set(err, UP_ERR_IO, 0, "fetching the image URL timed out after %g s", o->timeout_s);
    default: break;
    }
    return up_error_set(err, UP_ERR_IO, 0, "fetching the image URL failed: %s", detail);
}

int fetch_url(const char *url, const fetch_opts_t *opts, void **body, size_t *size, up_error_t *err) {
    fetch_opts_t o;
    if (opts)
        o = *opts;
    else
        fetch_opts_init(&o);
    assert(body && size);
    if (o.max_bytes == 0)
        o.max_bytes = FETCH_DEFAULT_MAX_BYTES;
    if (o.timeout_s <= 0)
        o.timeout_s = 10;
    if (o.min_rate_s <= 0)
        o.min_rate_s = 3;
    if (o.connect_timeout_s <= 0)
        o.connect_timeout_s = 10;
    if (o.max_redirects < 0)
        o.max_redirects = 5;
    *body = NULL;
    *size = 0;

    char host[256];
    char errbuf[CURL_ERROR_SIZE];
    transfer_t t = {0};
    CURL *c = NULL;
    int rc;
    t.max = o.max_bytes;
    t.allow = o.allow;
    errbuf[0] = '\0';

    if ((rc = fetch_global_init()) != 0) {
        up_error_set(err, rc, 0, "the HTTP client library could not be initialised");
        goto fail;
    }
    if ((rc = fetch_allow_validate(o.allow, err)) != 0)
        goto fail;
    if ((rc = url_check(url, host, sizeof host, err)) != 0)
        goto fail;
    c = curl_easy_init();
    if (!c) {
        rc = up_error_set(err, UP_ERR_NOMEM, 0, "the HTTP client could not be created");
        goto fail;
    }
    long timeout_ms = (long)(o.timeout_s * 1000), connect_ms = (long)(o.connect_timeout_s * 1000);
    if (curl_easy_setopt(c, CURLOPT_URL, url) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
        /* "" disables proxies, also those from http_proxy & co in the environment,
           which would otherwise dial the target for us, past the address check. */
        curl_easy_setopt(c, CURLOPT_PROXY, "") != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_MAXREDIRS, (long)o.max_redirects) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_USERAGENT, "upres/1.0") != CURLE_OK ||
        /* CURLOPT_ACCEPT_ENCODING stays unset: no Accept-Encoding, no decoding, so
           max_bytes bounds the bytes we keep (no decompression bombs). */
        curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms > 0 ? timeout_ms : 1L) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, connect_ms > 0 ? connect_ms : 1L) != CURLE_OK ||
        /* a source that trickles bytes is cut long before the total time runs out */
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, (long)o.min_rate) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, o.min_rate > 0 ? (long)ceil(o.min_rate_s) : 0L) !=
            CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)o.max_bytes) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &t) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, on_opensocket) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, &t) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf) != CURLE_OK) {
        rc = up_error_set(err, UP_ERR_IO, 0, "the HTTP client could not be configured");
        goto fail;
    }
    CURLcode cc = curl_easy_perform(c);
    if (cc != CURLE_OK) {
        rc = fail_from_curl(c, cc, &t, host, errbuf, &o, err);
        goto fail;
    }
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299) {
        /* A 3xx without Location, or 1xx: not an image. */
        rc = up_error_set(err, UP_ERR_IO, 0, "the server answered %ld", status);
        goto fail;
    }
    curl_easy_cleanup(c);
    if (!t.buf) {
        t.buf = malloc(1);
        if (!t.buf)
            return up_error_set(err, UP_ERR_NOMEM, 0, "out of memory receiving the image");
    }
    *body = t.buf;
    *size = t.len;
    return 0;
fail:
    curl_easy_cleanup(c);
    free(t.buf);
    return rc;
}
