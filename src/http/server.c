/*
 * server.c - libmicrohttpd glue: daemon set-up, routing (router.c picks
 * the route), CORS, multipart uploads streamed to disk, replies,
 * per-request log lines. See http.h for the model; this file is the only
 * one that includes microhttpd.h.
 *
 * DESIGN: one http_request_t per HTTP request, created on MHD's first
 * access callback and freed in the "request completed" notification. The
 * access callback is called again for each chunk of body (fed to MHD's
 * post processor, which calls upload_iter) and once more with no data,
 * when the handler runs and the response is queued. All of a request's
 * callbacks run on the same MHD thread, so the request needs no lock.
 *
 * Deferred requests: http_request_defer suspends the connection and queues
 * the request for the background threads. While suspended, MHD does not
 * touch the connection, so the background thread owns the request; its
 * reply is built but not queued (MHD_queue_response belongs to the access
 * callback), then the connection is resumed, MHD calls the access callback
 * again, and that call queues the kept reply. The resume is the hand-over
 * (MHD takes a lock in it). At stop, the background threads finish what is
 * queued and exit before the daemon stops, so no connection is left
 * suspended (which MHD_stop_daemon does not allow).
 *
 * Event streams (http_reply_sse): the response is MHD's content-reader
 * kind (chunked). MHD calls sse_read on the connection's thread when it can
 * send; sse_read hands out what fill wrote, and when there is nothing left
 * and no wake is pending it suspends the connection from inside the reader
 * (MHD 0.9.75 allows that from an access handler or a content reader only)
 * and returns 0; MHD then leaves the connection alone until it is resumed
 * and calls the reader again. The flags (dirty, keepalive, closing,
 * suspended) are under the stream's `mu`: the reader decides to suspend
 * under it, and a waker (http_sse_wake from a worker, the reaper's
 * keep-alive pass, http_server_stop) clears `suspended` under it and is
 * then the one that calls MHD_resume_connection, after letting `mu` go, so
 * a connection is resumed exactly once per suspend and no lock of ours is
 * held in MHD's resume (nor in fill: it runs with none held). A claimed
 * resume is counted in `n_resuming` until made, and http_server_stop waits
 * for that count to be 0 after it marked every stream closing (a closing
 * stream never suspends again), so MHD_stop_daemon never meets a suspended
 * connection. The stream is freed with its response (sse_free, MHD's
 * free callback), after end (which unsubscribes, waiting out a wake under
 * way); a wake that comes before that finds `closing` set and does nothing.
 * The stream's connection stays in the CONN_REPLY phase, which the reaper
 * never cuts; suspended connections do not time out in MHD either.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "core/fileio.h"
#include "core/cidr.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/text.h"
#include "core/xmalloc.h"
#include "http/http_int.h"

#define MAX_HEADERS HTTP_MAX_REPLY_HEADERS
#define STOP_DRAIN_S 0.5       /* at stop, uploads under way get this long to be answered 503 */
#define LINGER_S 2.0           /* after an early answer, the body is read and dropped this long at most ... */
#define LINGER_BYTES (1 << 20) /* ... and this many bytes, so the client can read the answer */
#define STREAM_BLOCK (256 * 1024) /* bytes a streamed body's callback is asked for at most */
#define SSE_BLOCK 4096            /* bytes MHD asks an event stream for at most per call */

/*
 * What a connection is doing, for the deadlines (reaper_main): waiting for
 * a request head (since the connection opened or its last reply ended),
 * receiving a body, or being answered (including while suspended, and
 * while the reply is sent: MHD's idle timeout covers a reader that stalls).
 */
typedef enum { CONN_HEAD, CONN_BODY, CONN_REPLY } conn_phase_t;

typedef struct conn {
    struct conn *prev, *next; /* srv->conns, under srv->cmu */
    int fd;
    conn_phase_t phase;
    double since;                  /* mono_s when the phase began */
    unsigned long long body_bytes; /* of the current request */
    int cut;                       /* the reaper shut it down */
} conn_t;

typedef struct deferred {
    http_request_t *req;
    http_defer_fn fn;
    void *arg;
} deferred_t;

/* Background threads and a bounded ring of work under mu. */
typedef struct pool {
    struct http_server *srv;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t *threads;
    int n_threads;
    deferred_t *q;
    int cap, head, len;
    int stop;
} pool_t;

struct http_sse {
    struct http_sse *prev, *next; /* srv->streams, under srv->smu */
    http_server_t *srv;
    http_request_t *req; /* valid while MHD calls the reader (the request lives) */
    struct MHD_Connection *conn;
    http_sse_fill_fn fill;
    http_sse_end_fn end;
    void *arg;
    pthread_mutex_t mu; /* guards the flags and last_sent */
    int dirty;          /* a wake since the last fill */
    int keepalive;      /* the reaper found it quiet: fill, and a comment when fill adds nothing */
    int closing;        /* the server is stopping, or the stream is being freed: never suspend again */
    int suspended;      /* the reader suspended the connection; a waker clears it and resumes */
    double last_sent;   /* mono_now of the last bytes handed to MHD */
    /* the reader's own (the connection's thread only) */
    char *buf;
    size_t len, off, cap;
    int last; /* fill said it sent its last event: the stream ends once buf is out */
};

struct http_server {
    struct MHD_Daemon *daemon;
    pool_t pools[HTTP_N_POOLS]; /* background work (http_request_defer) */
    /* connections and their deadlines */
    pthread_mutex_t cmu;
    pthread_cond_t ccv; /* the reaper's sleep, cut short at stop */
    conn_t *conns;
    int n_conns;
    pthread_t reaper;
    int has_reaper, reaper_stop;
    atomic_int stopping;                       /* http_server_quiesce: bodies under way are answered 503 */
    unsigned long long n_cut_head, n_cut_body; /* connections the reaper closed */
    const http_route_t *routes;                /* borrowed static table */
    int n_routes;
    void *ctx;
    http_config_t cfg;
    char upload_dir[1024];
    int port;
    /* event streams */
    pthread_mutex_t smu;
    http_sse_t *streams; /* open ones, under smu */
    int n_streams;
    int streams_closing;   /* http_server_stop began: new streams start closing */
    atomic_int n_resuming; /* resumes claimed (suspended cleared) and not made yet */
    /* CORS (cfg.cors_origins) */
    int cors_any; /* "*": every reply says Access-Control-Allow-Origin: * */
    int n_cors;   /* listed origins (0 and !cors_any: CORS is off) */
    char cors_origin[HTTP_CORS_MAX][HTTP_ORIGIN_MAX]; /* the list, as configured */
};

/* What CORS headers one request's replies carry (cors_note). */
typedef enum {
    REQ_CORS_OFF = 0, /* none: CORS is off */
    REQ_CORS_ANY,     /* Access-Control-Allow-Origin: * */
    REQ_CORS_ECHO,    /* the request's Origin is listed: echoed, with Vary: Origin */
    REQ_CORS_UNLISTED /* a list, and this Origin (or none) is not on it: only Vary: Origin */
} req_cors_t;

typedef struct field {
    char name[64]; /* valid UTF-8 */
    char *value;   /* new, NUL-terminated; raw bytes while the body arrives, valid UTF-8 once it is in */
    size_t len;
} field_t;

/* A client string made valid UTF-8 for a handler (http_request_query, _header), freed with the request. */
typedef struct kept_text {
    struct kept_text *next;
    char text[];
} kept_text_t;

struct http_request {
    http_server_t *srv;
    struct MHD_Connection *conn;
    struct timespec t0;
    char method[16];
    char path[1024];
    char client[64];    /* the client's address, numeric */
    http_match_t match; /* the route (match.route NULL: none answers), its params, the path's methods */
    const http_route_t *route; /* match.route */
    int found;                 /* http_route_find's answer: 1 routed, 0 other methods only (405), -1 none */
    req_cors_t cors;
    char cors_origin[HTTP_ORIGIN_MAX]; /* REQ_CORS_ECHO: the request's Origin */
    /* body */
    struct MHD_PostProcessor *pp;
    unsigned long long body_bytes;
    /* a refusal found while the body arrives (too large, malformed, storage failed): answered at once */
    unsigned refused;     /* its status, 0 = none */
    char refuse_code[32]; /* its machine-readable code */
    char refuse_msg[256];
    int refuse_errno;                /* storage refusals: the errno */
    int early;                       /* the refusal is being answered before the body ended (write_early) */
    double linger_until;             /* then: when the connection is closed at the latest */
    unsigned long long linger_bytes; /* and the body bytes read since */
    int n_fields;
    field_t fields[HTTP_MAX_FIELDS];
    char *body; /* a body that is not multipart, NUL-terminated; NULL when none */
    size_t body_size, body_cap;
    /* the upload */
    int upload_fd; /* -1 when none open */
    int has_upload;
    char upload_field[64];
    char upload_path[1100];
    char upload_name[256]; /* valid UTF-8 */
    unsigned long long upload_size;
    EVP_MD_CTX *upload_md;    /* SHA-256 of the upload's bytes, for http_request_digest */
    kept_text_t *texts;       /* client strings made valid UTF-8 */
    unsigned char digest[32]; /* http_request_digest, computed once (before the upload is taken) */
    int has_digest;
    /* the reply */
    int replied;
    unsigned status;
    unsigned long long reply_bytes;
    int n_headers;
    char *header_name[MAX_HEADERS], *header_value[MAX_HEADERS];
    http_complete_fn on_complete;
    char tag[128];
    /* deferred: set by the handler's thread, cleared when the kept reply is queued */
    int deferred;
    struct MHD_Response *kept; /* the background thread's reply, queued after the resume */
};

void http_config_init(http_config_t *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->listen_addr = "127.0.0.1";
    cfg->port = 8089;
    cfg->n_threads = 4;
    cfg->conn_timeout_s = 30;
    cfg->head_timeout_s = 10;
    cfg->min_body_rate = 1024;
    cfg->max_conns = 1024;
    cfg->max_conns_per_ip = 64;
    cfg->max_upload = 50ULL * 1000 * 1000;
    cfg->max_body = 1000 * 1000;
    cfg->n_defer_threads = 8;
    cfg->defer_queue = 256;
    cfg->n_fetch_threads = 8;
    cfg->fetch_queue = 256;
    cfg->sse_keepalive_s = 15;
    cfg->cors_origins = "*";
}

static double mono_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double ms_since(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

/* ---- connections and deadlines ------------------------------------------------ */

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    http_server_t *srv = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        conn_t *k = xcalloc(1, sizeof *k);
        k->fd = info ? info->connect_fd : -1;
        k->phase = CONN_HEAD;
        k->since = mono_now();
        pthread_mutex_lock(&srv->cmu);
        k->next = srv->conns;
        if (srv->conns)
            srv->conns->prev = k;
        srv->conns = k;
        srv->n_conns++;
        pthread_mutex_unlock(&srv->cmu);
        *socket_context = k;
        return;
    }
    /* closed: MHD calls this before it closes the socket, so the reaper never shuts down a reused fd */
    conn_t *k = *socket_context;
    if (!k)
        return;
    pthread_mutex_lock(&srv->cmu);
    if (k->prev)
        k->prev->next = k->next;
    else
        srv->conns = k->next;
    if (k->next)
        k->next->prev = k->prev;
    srv->n_conns--;
    pthread_mutex_unlock(&srv->cmu);
    free(k);
    *socket_context = NULL;
}

static conn_t *conn_of(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return info ? info->socket_context : NULL;
}

static void conn_phase(http_server_t *srv, struct MHD_Connection *c, conn_phase_t phase) {
    conn_t *k = conn_of(c);
    if (!k)
        return;
    pthread_mutex_lock(&srv->cmu);
    k->phase = phase;
    k->since = mono_now();
    k->body_bytes = 0;
    pthread_mutex_unlock(&srv->cmu);
}

static void conn_body_bytes(http_server_t *srv, struct MHD_Connection *c, unsigned long long n) {
    conn_t *k = conn_of(c);
    if (!k)
        return;
    pthread_mutex_lock(&srv->cmu);
    k->body_bytes = n;
    pthread_mutex_unlock(&srv->cmu);
}

static void sse_keepalives(http_server_t *srv);

/*
 * The reaper: a connection that has not sent a whole request head within
 * head_timeout_s, or whose body arrives slower than min_body_rate bytes/s on
 * average once head_timeout_s have passed, is shut down (shutdown(2): MHD
 * then sees the socket end and closes it on its own thread). MHD's own
 * timeout is idle time only, which one byte every few seconds never hits.
 * It also wakes event streams that have been quiet for sse_keepalive_s.
 */
static void *reaper_main(void *p) {
    http_server_t *srv = p;
    double head = (double)srv->cfg.head_timeout_s, rate = (double)srv->cfg.min_body_rate;
    pthread_mutex_lock(&srv->cmu);
    while (!srv->reaper_stop) {
        double now = mono_now();
        for (conn_t *k = srv->conns; k; k = k->next) {
            double age = now - k->since;
            int late_head = k->phase == CONN_HEAD && age > head;
            int slow_body =
                k->phase == CONN_BODY && rate > 0 && age > head && (double)k->body_bytes < rate * age;
            if (!(late_head || slow_body) || k->cut || k->fd < 0)
                continue;
            shutdown(k->fd, SHUT_RDWR);
            k->cut = 1;
            unsigned long long *n = late_head ? &srv->n_cut_head : &srv->n_cut_body;
            if ((*n)++ % 1000 == 0) /* a flood logs a line per thousand, not one each */
                log_info("http: closed %s connection (%llu so far) that %s", *n == 1 ? "a" : "another", *n,
                         late_head ? "sent no complete request head in time" : "sent its body too slowly");
        }
        pthread_mutex_unlock(&srv->cmu);
        sse_keepalives(srv);
        pthread_mutex_lock(&srv->cmu);
        if (srv->reaper_stop)
            break;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 200 * 1000 * 1000;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&srv->ccv, &srv->cmu, &until);
    }
    pthread_mutex_unlock(&srv->cmu);
    return NULL;
}

/* ---- routing ---------------------------------------------------------------- */

static void route(http_request_t *req) {
    req->found = http_route_find(req->srv->routes, req->srv->n_routes, req->method, req->path, &req->match);
    req->route = req->match.route;
}

/* ---- CORS ------------------------------------------------------------------------ */

/*
 * Every reply's CORS headers come from reply_headers, and every reply goes
 * through it (queue_reply, http_reply_sse, write_early); OPTIONS on a
 * routed path is answer_options'. The decision for a request (cors_note) is
 * made once, from its Origin, when its head is in: a deferred thread's
 * reply needs nothing of MHD's for it.
 */

#define CORS_EXPOSE "Content-Disposition, Content-Length, Retry-After, Idempotent-Replayed"
#define CORS_MAX_AGE "600" /* seconds a browser may keep a preflight's answer */

/* What a preflight allows whatever it asks: the headers the API dialects read. "*" would not cover
 * Authorization (Fetch standard), so each is named. */
static const char *const cors_allow_headers[] = {"Content-Type",  "Authorization", "X-Session-Token",
                                                 "Last-Event-ID", "Cache-Control", "Idempotency-Key"};

static void trim(const char **a, const char **b) {
    while (*a < *b && (**a == ' ' || **a == '\t'))
        (*a)++;
    while (*b > *a && ((*b)[-1] == ' ' || (*b)[-1] == '\t'))
        (*b)--;
}

/* 1 when the n bytes at s are an origin: scheme://host[:port], nothing more (RFC 6454). */
static int origin_valid(const char *s, size_t n) {
    char buf[HTTP_ORIGIN_MAX];
    if (n == 0 || n >= sizeof buf)
        return 0;
    memcpy(buf, s, n);
    buf[n] = '\0';
    const char *sep = strstr(buf, "://");
    if (!sep || !isalpha((unsigned char)buf[0]))
        return 0;
    for (const char *p = buf; p < sep; p++)
        if (!isalnum((unsigned char)*p) && *p != '+' && *p != '-' && *p != '.')
            return 0;
    return http_host_valid(sep + 3);
}

/*
 * Read a cors_origins value (NULL = "*") into srv, or only check it (srv
 * NULL): 0, or UP_ERR_INVALID with err. The one reader of its syntax.
 */
static int cors_parse(const char *list, http_server_t *srv, up_error_t *err) {
    if (!list)
        list = "*";
    const char *a = list, *b = list + strlen(list);
    trim(&a, &b);
    if (a == b || (b - a == 4 && !strncasecmp(a, "none", 4)))
        return 0; /* off */
    int n = 0;
    for (const char *e = list;;) {
        const char *comma = strchr(e, ',');
        a = e;
        b = comma ? comma : e + strlen(e);
        trim(&a, &b);
        size_t len = (size_t)(b - a);
        if (len == 1 && *a == '*') {
            if (srv)
                srv->cors_any = 1;
        } else if (!origin_valid(a, len)) {
            return up_error_set(err, UP_ERR_INVALID, 0,
                                "'%.*s' is not an origin: expected *, or scheme://host[:port] with no path "
                                "(a comma-separated list; none = no CORS)",
                                len > 200 ? 200 : (int)len, a);
        } else if (n == HTTP_CORS_MAX) {
            return up_error_set(err, UP_ERR_INVALID, 0, "more than %d CORS origins", HTTP_CORS_MAX);
        } else {
            if (srv) {
                memcpy(srv->cors_origin[n], a, len);
                srv->cors_origin[n][len] = '\0';
            }
            n++;
        }
        if (!comma)
            break;
        e = comma + 1;
    }
    if (srv)
        srv->n_cors = n;
    return 0;
}

int http_cors_origins_check(const char *list, up_error_t *err) { return cors_parse(list, NULL, err); }

/* Which CORS headers req's replies carry, from its Origin (compared without case, echoed as sent). */
static void cors_note(http_request_t *req) {
    const http_server_t *srv = req->srv;
    if (srv->cors_any || !srv->n_cors) {
        req->cors = srv->cors_any ? REQ_CORS_ANY : REQ_CORS_OFF;
        return;
    }
    req->cors = REQ_CORS_UNLISTED;
    const char *origin = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Origin");
    for (int i = 0; origin && i < srv->n_cors; i++)
        if (!strcasecmp(origin, srv->cors_origin[i])) {
            snprintf(req->cors_origin, sizeof req->cors_origin, "%s", origin); /* as long as the entry */
            req->cors = REQ_CORS_ECHO;
            return;
        }
}

typedef void (*header_fn)(void *arg, const char *name, const char *value);

/*
 * Every header of req's reply beyond what its kind sets itself: the
 * handler's (http_reply_header), then the CORS ones, unless the handler
 * set Access-Control-Allow-Origin itself. "Origin" joins the handler's
 * first Vary when there is one, so that a reply has one Vary line.
 */
static void reply_headers(const http_request_t *req, header_fn add, void *arg) {
    int own = 0, vary_origin = 0;
    for (int i = 0; i < req->n_headers; i++)
        own |= !strcasecmp(req->header_name[i], "Access-Control-Allow-Origin");
    /* a listed origin's reply differs from another's: a cache must not hand out the one for the other */
    vary_origin = !own && (req->cors == REQ_CORS_ECHO || req->cors == REQ_CORS_UNLISTED);
    for (int i = 0; i < req->n_headers; i++) {
        if (vary_origin && !strcasecmp(req->header_name[i], "Vary")) {
            char v[512];
            snprintf(v, sizeof v, "%s, Origin", req->header_value[i]);
            add(arg, req->header_name[i], v);
            vary_origin = 0;
        } else {
            add(arg, req->header_name[i], req->header_value[i]);
        }
    }
    if (vary_origin)
        add(arg, "Vary", "Origin");
    if (own || req->cors == REQ_CORS_OFF || req->cors == REQ_CORS_UNLISTED)
        return;
    add(arg, "Access-Control-Allow-Origin", req->cors == REQ_CORS_ANY ? "*" : req->cors_origin);
    add(arg, "Access-Control-Expose-Headers", CORS_EXPOSE);
}

static void add_to_response(void *arg, const char *name, const char *value) {
    MHD_add_response_header(arg, name, value);
}

/* reply_headers onto an MHD response. */
static void response_headers(const http_request_t *req, struct MHD_Response *resp) {
    reply_headers(req, add_to_response, resp);
}

/* 1 when the n bytes at s are an HTTP token (RFC 9110 5.6.2: a method, a header name). */
static int is_token(const char *s, size_t n) {
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("!#$%&'*+-.^_`|~", s[i]))
            return 0;
    return 1;
}

/* Append the n bytes at s to the ", "-separated list (cap bytes) unless there (nocase: without case). */
static void list_add(char *list, size_t cap, const char *s, size_t n, int nocase) {
    for (const char *a = list; *a;) {
        size_t k = strcspn(a, ",");
        if (k == n && !(nocase ? strncasecmp(a, s, n) : strncmp(a, s, n)))
            return;
        a += k;
        a += strspn(a, ", ");
    }
    size_t len = strlen(list);
    if (len + n + 3 > cap)
        return; /* full: what a browser asks beyond it is not allowed, and it says so */
    snprintf(list + len, cap - len, "%s%.*s", len ? ", " : "", (int)n, s);
}

/* 1 when req is a CORS preflight that this server answers as one (CORS on for its Origin). */
static int is_preflight(const http_request_t *req) {
    return !strcmp(req->method, "OPTIONS") && (req->cors == REQ_CORS_ANY || req->cors == REQ_CORS_ECHO) &&
           MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Access-Control-Request-Method");
}

/*
 * OPTIONS on a path that has routes: 204 with Allow, and for a preflight
 * the methods (the path's, and the one asked, so that a wrong one gets a
 * 405 the page can read rather than a CORS failure), the headers (ours and
 * those asked) and Max-Age. Nothing is looked up: no handler runs.
 */
static void answer_options(http_request_t *req) {
    if (is_preflight(req)) {
        char methods[HTTP_ALLOW_MAX + 32], headers[2048] = "";
        snprintf(methods, sizeof methods, "%s", req->match.allow);
        const char *m = http_request_header(req, "Access-Control-Request-Method");
        if (is_token(m, strlen(m)) && strlen(m) < 32)
            list_add(methods, sizeof methods, m, strlen(m), 0);
        for (size_t i = 0; i < sizeof cors_allow_headers / sizeof cors_allow_headers[0]; i++)
            list_add(headers, sizeof headers, cors_allow_headers[i], strlen(cors_allow_headers[i]), 1);
        const char *asked = http_request_header_all(req, "Access-Control-Request-Headers");
        for (const char *e = asked; e && *e;) {
            const char *a = e, *b = e + strcspn(e, ",");
            e = *b ? b + 1 : b;
            trim(&a, &b);
            if (is_token(a, (size_t)(b - a)))
                list_add(headers, sizeof headers, a, (size_t)(b - a), 1);
        }
        http_reply_header(req, "Access-Control-Allow-Methods", methods);
        http_reply_header(req, "Access-Control-Allow-Headers", headers);
        http_reply_header(req, "Access-Control-Max-Age", CORS_MAX_AGE);
        http_reply_header(req, "Vary", "Access-Control-Request-Method, Access-Control-Request-Headers");
    }
    http_reply_header(req, "Allow", req->match.allow);
    http_reply_data(req, 204, NULL, "", 0);
}

/* ---- the upload ---------------------------------------------------------------- */

static void upload_discard(http_request_t *req) {
    if (req->upload_fd >= 0) {
        close(req->upload_fd);
        req->upload_fd = -1;
    }
    if (req->upload_path[0]) {
        unlink(req->upload_path);
        req->upload_path[0] = '\0';
    }
    req->has_upload = 0;
}

/*
 * Refuse the request while its body arrives: the upload goes, the rest of
 * the body is not read, and the refusal is answered at once with
 * "Connection: close" (answer_refusal), or when the body ends where MHD
 * does not allow an early answer. The first refusal wins.
 */
static void refuse(http_request_t *req, unsigned status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void refuse(http_request_t *req, unsigned status, const char *code, const char *fmt, ...) {
    upload_discard(req);
    if (req->refused)
        return;
    req->refused = status;
    snprintf(req->refuse_code, sizeof req->refuse_code, "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(req->refuse_msg, sizeof req->refuse_msg, fmt, ap);
    va_end(ap);
}

/* A file could not be created or written (errno e): refused as http_reply_storage_error says. */
static void refuse_storage(http_request_t *req, int e, const char *what) {
    log_error("http: %s %s: %s %s: %s", req->method, req->path, what, req->upload_path, strerror(e));
    if (req->upload_fd < 0)
        req->upload_path[0] = '\0'; /* mkstemp failed: nothing to remove */
    refuse(req, 507, "STORAGE", "%s", strerror(e));
    req->refuse_errno = e;
}

static enum MHD_Result upload_iter(void *cls, enum MHD_ValueKind kind, const char *key, const char *filename,
                                   const char *content_type, const char *transfer_encoding, const char *data,
                                   uint64_t off, size_t size) {
    http_request_t *req = cls;
    (void)kind;
    (void)content_type;
    (void)transfer_encoding;
    (void)off;
    if (req->refused)
        return MHD_NO;
    if (!key)
        return MHD_YES;
    if (strlen(key) >= sizeof req->fields[0].name) {
        refuse(req, 400, "INVALID_REQUEST", "a form field name is longer than %zu bytes",
               sizeof req->fields[0].name - 1);
        return MHD_NO;
    }
    if (filename) {
        if (req->has_upload && strcmp(req->upload_field, key))
            return MHD_YES; /* one file per request: later parts are ignored */
        if (!req->has_upload) {
            /* the pid tells a sweep at start that a killed server's partial upload has no writer left */
            snprintf(req->upload_path, sizeof req->upload_path, "%s/.upload-%ld-XXXXXX", req->srv->upload_dir,
                     (long)getpid());
            req->upload_fd = mkstemp(req->upload_path);
            if (req->upload_fd < 0) {
                refuse_storage(req, errno, "cannot create");
                return MHD_NO;
            }
            req->has_upload = 1;
            text_utf8_copy(req->upload_field, sizeof req->upload_field, key, strlen(key));
            text_utf8_copy(req->upload_name, sizeof req->upload_name, filename, strlen(filename));
            req->upload_md = EVP_MD_CTX_new();
            if (!req->upload_md || !EVP_DigestInit_ex(req->upload_md, EVP_sha256(), NULL)) {
                refuse(req, 503, "UNAVAILABLE", "out of memory");
                return MHD_NO;
            }
        }
        if (req->upload_fd < 0)
            return MHD_YES; /* a second part with the same name after the first closed */
        if (write_all(req->upload_fd, data, size)) {
            refuse_storage(req, errno, "writing");
            return MHD_NO;
        }
        EVP_DigestUpdate(req->upload_md, data, size);
        req->upload_size += size;
        return MHD_YES;
    }
    /* a text field: every byte is kept, or the request is refused (never a silently different job) */
    field_t *f = NULL;
    for (int i = 0; i < req->n_fields; i++)
        if (!strcmp(req->fields[i].name, key))
            f = &req->fields[i];
    if (!f) {
        if (req->n_fields >= HTTP_MAX_FIELDS) {
            refuse(req, 400, "INVALID_REQUEST", "too many form fields: at most %d are accepted",
                   HTTP_MAX_FIELDS);
            return MHD_NO;
        }
        f = &req->fields[req->n_fields++];
        snprintf(f->name, sizeof f->name, "%s", key);
        f->value = xcalloc(1, HTTP_FIELD_MAX + 1);
        f->len = 0;
    }
    if (f->len + size > HTTP_FIELD_MAX) {
        char name[80];
        text_utf8_copy(name, sizeof name, key, strlen(key));
        refuse(req, 400, "INVALID_REQUEST", "form field '%s' is longer than %d bytes", name, HTTP_FIELD_MAX);
        return MHD_NO;
    }
    memcpy(f->value + f->len, data, size);
    f->len += size;
    f->value[f->len] = '\0';
    return MHD_YES;
}

/* The body is in: field names and values become valid UTF-8 for the handler. */
static void fields_finish(http_request_t *req) {
    for (int i = 0; i < req->n_fields; i++) {
        field_t *f = &req->fields[i];
        char name[sizeof f->name];
        text_utf8_copy(name, sizeof name, f->name, strlen(f->name));
        memcpy(f->name, name, sizeof name);
        if (!text_utf8_valid(f->value, f->len)) {
            char *v = text_utf8_dup(f->value, f->len);
            free(f->value);
            f->value = v;
            f->len = strlen(v);
        }
    }
}

/* ---- requests ------------------------------------------------------------------ */

static void request_free(http_request_t *req) {
    if (!req)
        return;
    if (req->kept)
        MHD_destroy_response(req->kept);
    if (req->pp)
        MHD_destroy_post_processor(req->pp);
    upload_discard(req);
    for (int i = 0; i < req->n_fields; i++)
        free(req->fields[i].value);
    free(req->body);
    EVP_MD_CTX_free(req->upload_md);
    while (req->texts) {
        kept_text_t *next = req->texts->next;
        free(req->texts);
        req->texts = next;
    }
    for (int i = 0; i < req->n_headers; i++) {
        free(req->header_name[i]);
        free(req->header_value[i]);
    }
    free(req);
}

static void queue_reply(http_request_t *req, unsigned status, struct MHD_Response *resp,
                        unsigned long long bytes) {
    if (req->replied) {
        MHD_destroy_response(resp);
        return;
    }
    response_headers(req, resp);
    if (req->deferred)
        req->kept = resp; /* a background thread: queued by the access callback after the resume */
    else {
        MHD_queue_response(req->conn, status, resp);
        MHD_destroy_response(resp);
    }
    req->replied = 1;
    req->status = status;
    req->reply_bytes = bytes;
}

/* A reply head written by hand (write_early). */
typedef struct raw_head {
    char buf[4096];
    size_t len; /* sizeof buf or more: it did not fit */
} raw_head_t;

static void raw_head_add(void *arg, const char *name, const char *value) {
    raw_head_t *h = arg;
    if (h->len < sizeof h->buf)
        h->len += (size_t)snprintf(h->buf + h->len, sizeof h->buf - h->len, "%s: %s\r\n", name, value);
}

/*
 * Answer before the body ended. MHD 0.9.75 queues no response in the middle
 * of a body (MHD_queue_response refuses), so the whole reply is written to
 * the socket here, from MHD's own thread while it is reading (it writes
 * nothing then), and the write side is shut: the client reads a complete
 * answer ending in "Connection: close", and the access callback drops what
 * it still sends for a short lingering time, then closes the connection.
 */
static void write_early(http_request_t *req, unsigned status, const char *content_type, const void *data,
                        size_t size) {
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    raw_head_t head;
    const char *reason = MHD_get_reason_phrase_for(status);
    head.len = (size_t)snprintf(
        head.buf, sizeof head.buf, "HTTP/1.1 %u %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n", status,
        reason && *reason ? reason : "Error", content_type ? content_type : "application/json", size);
    reply_headers(req, raw_head_add, &head);
    if (head.len < sizeof head.buf)
        head.len += (size_t)snprintf(head.buf + head.len, sizeof head.buf - head.len, "\r\n");
    if (head.len >= sizeof head.buf) /* our headers only: a bug */
        log_error("http: %s %s: the early %u answer's head is over %zu bytes: not sent", req->method,
                  req->path, status, sizeof head.buf);
    if (info) {
        int fd = info->connect_fd;
        if (head.len < sizeof head.buf) {
            struct iovec iov[2] = {{head.buf, head.len}, {(void *)data, size}};
            /* a few hundred bytes on a socket that is reading: the send buffer takes them at once */
            ssize_t w = writev(fd, iov, 2);
            if (w != (ssize_t)(head.len + size))
                log_warn("http: %s %s: the early %u answer was cut (%s)", req->method, req->path, status,
                         w < 0 ? strerror(errno) : "short write");
        }
        shutdown(fd, SHUT_WR);
    }
    req->replied = 1;
    req->status = status;
    req->reply_bytes = size;
    req->linger_until = mono_now() + LINGER_S;
}

void http_reply_data(http_request_t *req, unsigned status, const char *content_type, const void *data,
                     size_t size) {
    if (req->early && !req->replied) {
        write_early(req, status, content_type, data, size);
        return;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(size, (void *)data, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return;
    if (content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    queue_reply(req, status, resp, size);
}

char *http_json_text(json_t *body) {
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
    json_decref(body);
    return text;
}

void http_reply_json(http_request_t *req, unsigned status, json_t *body) {
    char *text = http_json_text(body);
    if (!text) {
        /* every string we pack is valid UTF-8 (client text goes through core/text.h), so this is a bug */
        log_error("http: %s %s: the %u reply could not be encoded", req->method, req->path, status);
        static const char fail[] = "{\"success\":false,\"error\":\"internal error: the reply could not be "
                                   "encoded\",\"code\":\"INTERNAL\"}";
        http_reply_data(req, 500, "application/json", fail, sizeof fail - 1);
        return;
    }
    http_reply_data(req, status, "application/json", text, strlen(text));
    free(text);
}

/* The machine-readable code of an error reply that names none. */
static const char *status_code_name(unsigned status) {
    switch (status) {
    case 400: return "INVALID_REQUEST";
    case 401: return "UNAUTHORIZED";
    case 403: return "FORBIDDEN";
    case 404: return "NOT_FOUND";
    case 405: return "METHOD_NOT_ALLOWED";
    case 409: return "CONFLICT";
    case 410: return "GONE";
    case 413: return "TOO_LARGE";
    case 415: return "UNSUPPORTED_IMAGE";
    case 422: return "UNPROCESSABLE";
    case 429: return "RATE_LIMITED";
    case 503: return "UNAVAILABLE";
    case 507: return "INSUFFICIENT_STORAGE";
    }
    return status >= 500 ? "INTERNAL" : "ERROR";
}

/* vsnprintf, then valid UTF-8: a message cut at its buffer's end never ends in half a character. */
static void format_message(char *msg, size_t size, const char *fmt, va_list ap) {
    char raw[1024];
    vsnprintf(raw, sizeof raw, fmt, ap);
    text_utf8_copy(msg, size, raw, strlen(raw));
}

/*
 * Every error body: {"success": false, "error", "code", "detail"}, detail
 * the message again (the Tinify contract's shape; a superset of the other
 * specs' error schemas, none of which forbids fields).
 */
static json_t *error_body(const char *msg, const char *code) {
    return json_pack("{s:b,s:s,s:s,s:s}", "success", 0, "error", msg, "code", code, "detail", msg);
}

void http_reply_error(http_request_t *req, unsigned status, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    format_message(msg, sizeof msg, fmt, ap);
    va_end(ap);
    http_reply_json(req, status, error_body(msg, status_code_name(status)));
}

void http_reply_error_code(http_request_t *req, unsigned status, const char *code, json_t *extra,
                           const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    format_message(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *o = error_body(msg, code);
    if (extra) {
        json_object_update(o, extra);
        json_decref(extra);
    }
    http_reply_json(req, status, o);
}

void http_reply_storage_error(http_request_t *req, int e) {
    if (e == ENOSPC || e == EDQUOT) {
        http_reply_error_code(req, 507, "INSUFFICIENT_STORAGE", NULL,
                              "the server has no room to store this request now (%s): try again later",
                              strerror(e));
        return;
    }
    http_reply_header(req, "Retry-After", "30");
    http_reply_error_code(req, 503, "STORAGE_UNAVAILABLE", NULL,
                          "the server cannot store this request now (%s): try again later", strerror(e));
}

/* A body's headers (Content-Type, Content-Disposition), then the reply queued. */
static void queue_body(http_request_t *req, unsigned status, struct MHD_Response *resp,
                       unsigned long long size, const char *content_type, const char *attachment_name) {
    if (content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (attachment_name) {
        char cd[512];
        snprintf(cd, sizeof cd, "attachment; filename=\"%s\"", attachment_name);
        MHD_add_response_header(resp, "Content-Disposition", cd);
    }
    queue_reply(req, status, resp, size);
}

int http_reply_file(http_request_t *req, unsigned status, const char *path, const char *content_type,
                    const char *attachment_name) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? UP_ERR_NOT_FOUND : UP_ERR_IO;
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        return UP_ERR_IO;
    }
    struct MHD_Response *resp = MHD_create_response_from_fd((uint64_t)st.st_size, fd); /* takes fd */
    if (!resp) {
        close(fd);
        return UP_ERR_IO;
    }
    queue_body(req, status, resp, (unsigned long long)st.st_size, content_type, attachment_name);
    return 0;
}

typedef struct body_stream {
    http_read_fn read;
    http_free_fn free;
    void *ctx;
    char method[16], path[256]; /* for the log line */
} body_stream_t;

static ssize_t body_read(void *cls, uint64_t pos, char *buf, size_t max) {
    body_stream_t *b = cls;
    long n = b->read(b->ctx, pos, buf, max);
    if (n > 0)
        return (ssize_t)n;
    /* the size was told in the head: a short body is an error, and the connection is closed */
    log_warn("http: %s %s: the reply's body ended at byte %llu, before its length", b->method, b->path,
             (unsigned long long)pos);
    return MHD_CONTENT_READER_END_WITH_ERROR;
}

static void body_free(void *cls) {
    body_stream_t *b = cls;
    if (b->free)
        b->free(b->ctx);
    free(b);
}

int http_reply_stream(http_request_t *req, unsigned status, unsigned long long size, http_read_fn read,
                      http_free_fn free_ctx, void *ctx, const char *content_type,
                      const char *attachment_name) {
    body_stream_t *b = xcalloc(1, sizeof *b);
    *b = (body_stream_t){.read = read, .free = free_ctx, .ctx = ctx};
    snprintf(b->method, sizeof b->method, "%s", req->method);
    snprintf(b->path, sizeof b->path, "%.200s", req->path);
    struct MHD_Response *resp =
        MHD_create_response_from_callback(size, STREAM_BLOCK, body_read, b, body_free);
    if (!resp) {
        free(b); /* ctx stays the caller's */
        return UP_ERR_NOMEM;
    }
    queue_body(req, status, resp, size, content_type, attachment_name);
    return 0;
}

void http_reply_header(http_request_t *req, const char *name, const char *value) {
    if (req->n_headers >= MAX_HEADERS) {
        log_error("http: %s %s: more than %d reply headers: %s dropped", req->method, req->path, MAX_HEADERS,
                  name);
        return;
    }
    req->header_name[req->n_headers] = xstrdup(name);
    req->header_value[req->n_headers] = xstrdup(value);
    req->n_headers++;
}

void http_request_on_complete(http_request_t *req, http_complete_fn fn) { req->on_complete = fn; }
void http_request_set_tag(http_request_t *req, const char *tag) {
    snprintf(req->tag, sizeof req->tag, "%s", tag);
}
const char *http_request_tag(const http_request_t *req) { return req->tag; }
const char *http_request_method(const http_request_t *req) { return req->method; }
const char *http_request_path(const http_request_t *req) { return req->path; }

const char *http_request_param(const http_request_t *req, const char *name) {
    for (int i = 0; i < req->match.n_params; i++)
        if (!strcmp(req->match.param_name[i], name))
            return req->match.param_value[i];
    return NULL;
}

/* The n bytes at raw as valid UTF-8, in a copy kept with the request. */
static const char *keep_copy(const http_request_t *creq, const char *raw, size_t n) {
    http_request_t *req = (http_request_t *)creq; /* the cache is not part of what callers see */
    kept_text_t *k = xmalloc(sizeof *k + 3 * n + 1);
    text_utf8_copy(k->text, 3 * n + 1, raw, n);
    k->next = req->texts;
    req->texts = k;
    return k->text;
}

/* raw as valid UTF-8: itself when it is, else a copy kept with the request. */
static const char *keep_text(const http_request_t *req, const char *raw) {
    if (!raw || text_utf8_valid(raw, strlen(raw)))
        return raw;
    return keep_copy(req, raw, strlen(raw));
}

const char *http_request_query(const http_request_t *req, const char *name) {
    return keep_text(req, MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name));
}

/* MHD_KeyValueIterator over the query: every value of one name, made valid UTF-8, to the caller's fn. */
typedef struct query_walk {
    http_request_t *req;
    const char *name;
    int (*fn)(const char *value, void *ctx);
    void *ctx;
} query_walk_t;

static enum MHD_Result query_value(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    query_walk_t *w = cls;
    (void)kind;
    if (!key || strcmp(key, w->name))
        return MHD_YES;
    return w->fn(keep_text(w->req, value ? value : ""), w->ctx) ? MHD_NO : MHD_YES;
}

void http_request_query_all(const http_request_t *req, const char *name,
                            int (*fn)(const char *value, void *ctx), void *ctx) {
    query_walk_t w = {(http_request_t *)req, name, fn, ctx};
    MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, query_value, &w);
}

const char *http_request_header(const http_request_t *req, const char *name) {
    return keep_text(req, MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name));
}

typedef struct header_join {
    const char *name;
    char *buf; /* new */
    size_t len, cap;
    int n; /* lines joined */
} header_join_t;

static enum MHD_Result join_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    header_join_t *j = cls;
    (void)kind;
    if (!key || !value || strcasecmp(key, j->name))
        return MHD_YES;
    size_t n = strlen(value), need = j->len + 2 + n + 1;
    if (need > j->cap) {
        j->cap = need * 2;
        j->buf = xrealloc(j->buf, j->cap);
    }
    if (j->n++) {
        memcpy(j->buf + j->len, ", ", 2);
        j->len += 2;
    }
    memcpy(j->buf + j->len, value, n + 1);
    j->len += n;
    return MHD_YES;
}

const char *http_request_header_all(const http_request_t *req, const char *name) {
    header_join_t j = {.name = name};
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, join_header, &j);
    const char *all = j.n == 1 ? http_request_header(req, name) : j.n ? keep_copy(req, j.buf, j.len) : NULL;
    free(j.buf);
    return all;
}

/* 1 when a q parameter's value (at v, up to a delimiter) is 0: "0", "0.", "0.000" (RFC 9110 12.4.2). */
static int q_is_zero(const char *v) {
    if (*v != '0')
        return 0;
    for (v++; *v && !strchr(" \t;,", *v); v++)
        if (*v != '.' && *v != '0')
            return 0;
    return 1;
}

int http_accepts(const char *accept, const char *type) {
    if (!accept || !type)
        return 0;
    size_t tn = strlen(type);
    for (const char *p = accept; *p;) {
        /* one element: a media range, its parameters, up to a comma outside a quoted string */
        p += strspn(p, " \t,");
        const char *range = p;
        size_t rn = strcspn(p, " \t;,");
        p += rn;
        int named = rn == tn && !strncasecmp(range, type, tn), zero = 0;
        while (*p && *p != ',') {
            if (*p == '"') { /* a quoted parameter value: commas and semicolons in it count for nothing */
                for (p++; *p && *p != '"'; p++)
                    if (*p == '\\' && p[1])
                        p++;
                if (*p)
                    p++;
            } else if (*p == ';') {
                p++;
                p += strspn(p, " \t");
                if ((*p == 'q' || *p == 'Q') && p[1 + strspn(p + 1, " \t")] == '=') {
                    p += 1 + strspn(p + 1, " \t") + 1;
                    p += strspn(p, " \t");
                    zero = q_is_zero(p);
                }
            } else {
                p++;
            }
        }
        if (named && rn > 0)
            return !zero; /* the first element naming it decides */
    }
    return 0;
}

int http_request_accepts(const http_request_t *req, const char *type) {
    return http_accepts(http_request_header_all(req, "Accept"), type);
}

void http_request_digest(const http_request_t *creq, unsigned char out[32]) {
    http_request_t *req = (http_request_t *)creq; /* the cache is not part of what callers see */
    if (req->has_digest) {
        memcpy(out, req->digest, sizeof req->digest);
        return;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md)
        abort(); /* a few hundred bytes: as xmalloc does */
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    EVP_DigestUpdate(md, req->method, strlen(req->method) + 1);
    EVP_DigestUpdate(md, req->path, strlen(req->path) + 1);
    /* fields in name order, so that a client's field order does not matter */
    int order[HTTP_MAX_FIELDS];
    for (int i = 0; i < req->n_fields; i++) {
        int j = i;
        while (j > 0 && strcmp(req->fields[order[j - 1]].name, req->fields[i].name) > 0) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
    for (int i = 0; i < req->n_fields; i++) {
        const field_t *f = &req->fields[order[i]];
        EVP_DigestUpdate(md, f->name, strlen(f->name) + 1);
        EVP_DigestUpdate(md, f->value, f->len + 1);
    }
    if (req->has_upload && req->upload_md) {
        unsigned char h[EVP_MAX_MD_SIZE];
        unsigned n = 0;
        EVP_MD_CTX *copy = EVP_MD_CTX_new();
        if (copy && EVP_MD_CTX_copy_ex(copy, req->upload_md) && EVP_DigestFinal_ex(copy, h, &n)) {
            EVP_DigestUpdate(md, req->upload_field, strlen(req->upload_field) + 1);
            EVP_DigestUpdate(md, req->upload_name, strlen(req->upload_name) + 1);
            EVP_DigestUpdate(md, h, n);
        }
        EVP_MD_CTX_free(copy);
    }
    if (req->body)
        EVP_DigestUpdate(md, req->body, req->body_size);
    unsigned n = 0;
    EVP_DigestFinal_ex(md, req->digest, &n);
    EVP_MD_CTX_free(md);
    req->has_digest = 1;
    memcpy(out, req->digest, sizeof req->digest);
}

const char *http_request_field(const http_request_t *req, const char *name) {
    for (int i = 0; i < req->n_fields; i++)
        if (!strcmp(req->fields[i].name, name))
            return req->fields[i].value;
    return NULL;
}

const char *http_request_body(const http_request_t *req, size_t *size) {
    if (size)
        *size = req->body ? req->body_size : 0;
    return req->body;
}

/* Keep n more bytes of a body that is not multipart; 0, or -1 when over the limit. */
static int body_append(http_request_t *req, const char *data, size_t n) {
    if (req->body_size + n > req->srv->cfg.max_body)
        return -1;
    if (req->body_size + n + 1 > req->body_cap) {
        size_t cap = req->body_cap ? req->body_cap : 4096;
        while (cap < req->body_size + n + 1)
            cap *= 2;
        req->body = xrealloc(req->body, cap);
        req->body_cap = cap;
    }
    memcpy(req->body + req->body_size, data, n);
    req->body_size += n;
    req->body[req->body_size] = '\0';
    return 0;
}

int http_request_upload(const http_request_t *req, const char *field, const char **path,
                        const char **filename, unsigned long long *size) {
    if (!req->has_upload || !req->upload_path[0] || strcmp(req->upload_field, field))
        return -1;
    if (path)
        *path = req->upload_path;
    if (filename)
        *filename = req->upload_name;
    if (size)
        *size = req->upload_size;
    return 0;
}

int http_request_upload_take(http_request_t *req, const char *dest, up_error_t *err) {
    if (!req->has_upload || !req->upload_path[0])
        return up_error_set(err, UP_ERR_NOT_FOUND, 0, "no upload");
    if (dest && rename(req->upload_path, dest)) {
        int e = errno;
        up_error_set(err, UP_ERR_IO, 0, "cannot move the upload to %s: %s", dest, strerror(e));
        errno = e; /* for the caller's answer (http_reply_storage_error) */
        return UP_ERR_IO;
    }
    req->upload_path[0] = '\0';
    req->has_upload = 0;
    return 0;
}

/* ---- deferred work ------------------------------------------------------------- */

int http_request_defer(http_request_t *req, http_pool_t which, http_defer_fn fn, void *arg) {
    pool_t *pool = &req->srv->pools[which];
    if (req->replied || req->deferred)
        return -1;
    pthread_mutex_lock(&pool->mu);
    if (pool->stop || pool->len == pool->cap) {
        pthread_mutex_unlock(&pool->mu);
        return -1;
    }
    req->deferred = 1;
    MHD_suspend_connection(req->conn); /* we are in the access callback, as MHD requires */
    pool->q[(pool->head + pool->len++) % pool->cap] = (deferred_t){req, fn, arg};
    pthread_cond_signal(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
    return 0;
}

static void *pool_main(void *p) {
    pool_t *pool = p;
    pthread_mutex_lock(&pool->mu);
    for (;;) {
        while (!pool->len && !pool->stop)
            pthread_cond_wait(&pool->cv, &pool->mu);
        if (!pool->len)
            break; /* stopping, and nothing left: every deferred request was answered */
        deferred_t d = pool->q[pool->head];
        pool->head = (pool->head + 1) % pool->cap;
        pool->len--;
        pthread_mutex_unlock(&pool->mu);
        d.fn(d.req, pool->srv->ctx, d.arg);
        if (!d.req->replied) {
            log_error("http: %s %s: the deferred handler sent no reply", d.req->method, d.req->path);
            http_reply_error(d.req, 500, "internal error");
        }
        MHD_resume_connection(d.req->conn);
        pthread_mutex_lock(&pool->mu);
    }
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

/* Start a pool of n threads and queue places. 0, or -1 when no thread started. */
static int pool_start(http_server_t *srv, pool_t *pool, int n, int queue) {
    pool->srv = srv;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->cv, NULL);
    pool->cap = queue;
    pool->q = xcalloc((size_t)queue, sizeof *pool->q);
    pool->threads = xcalloc((size_t)n, sizeof *pool->threads);
    for (; pool->n_threads < n; pool->n_threads++)
        if (pthread_create(&pool->threads[pool->n_threads], NULL, pool_main, pool))
            break; /* fewer threads still work; none means every defer waits for one that never comes */
    return pool->n_threads ? 0 : -1;
}

/* Finish the queued work and join the threads. */
static void pool_stop(pool_t *pool) {
    if (!pool->q)
        return;
    pthread_mutex_lock(&pool->mu);
    pool->stop = 1;
    pthread_cond_broadcast(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 0; i < pool->n_threads; i++)
        pthread_join(pool->threads[i], NULL);
    pool->n_threads = 0;
}

static void pool_free(pool_t *pool) {
    if (!pool->q)
        return;
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->cv);
    free(pool->q);
    free(pool->threads);
    pool->q = NULL;
}

/* ---- event streams (Server-Sent Events) ---------------------------------------------- */

/* Append n bytes to what the reader hands out next (the connection's thread only). */
static void sse_append(http_sse_t *s, const char *data, size_t n) {
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 1024;
        while (cap < s->len + n)
            cap *= 2;
        s->buf = xrealloc(s->buf, cap);
        s->cap = cap;
    }
    memcpy(s->buf + s->len, data, n);
    s->len += n;
}

void http_sse_send(http_sse_t *s, const char *event, const char *data) {
    if (event) { /* a name is one line: anything after a line break would be a field of its own */
        sse_append(s, "event: ", 7);
        sse_append(s, event, strcspn(event, "\r\n"));
        sse_append(s, "\n", 1);
    }
    const char *p = data ? data : "";
    for (;;) { /* one "data:" line per line (SSE: LF, CR or CRLF end a line) */
        size_t n = strcspn(p, "\r\n");
        sse_append(s, "data: ", 6);
        sse_append(s, p, n);
        sse_append(s, "\n", 1);
        p += n;
        if (!*p)
            break;
        p += p[0] == '\r' && p[1] == '\n' ? 2 : 1;
    }
    sse_append(s, "\n", 1);
}

void http_sse_retry(http_sse_t *s, int ms) {
    char line[32];
    int n = snprintf(line, sizeof line, "retry: %d\n\n", ms > 0 ? ms : 0);
    sse_append(s, line, (size_t)n);
}

/*
 * Under s->mu: claim the resume of a suspended stream (1: the caller calls
 * sse_resume once it let s->mu go), else 0.
 */
static int sse_claim_resume(http_sse_t *s) {
    if (!s->suspended)
        return 0;
    s->suspended = 0;
    atomic_fetch_add(&s->srv->n_resuming, 1);
    return 1;
}

/* Make a claimed resume: the connection is still suspended, so it (and s) cannot have gone. */
static void sse_resume(http_sse_t *s) {
    http_server_t *srv = s->srv;
    MHD_resume_connection(s->conn);
    atomic_fetch_sub(&srv->n_resuming, 1);
}

void http_sse_wake(http_sse_t *s) {
    pthread_mutex_lock(&s->mu);
    s->dirty = 1;
    int resume = sse_claim_resume(s);
    pthread_mutex_unlock(&s->mu);
    if (resume)
        sse_resume(s);
}

/* The reaper's pass: streams quiet for sse_keepalive_s get a keep-alive. */
static void sse_keepalives(http_server_t *srv) {
    enum { BATCH = 64 };
    http_sse_t *wake[BATCH];
    double now = mono_now(), every = (double)srv->cfg.sse_keepalive_s;
    int more = 1;
    while (more) {
        int n = 0;
        more = 0;
        pthread_mutex_lock(&srv->smu);
        for (http_sse_t *s = srv->streams; s; s = s->next) {
            pthread_mutex_lock(&s->mu);
            int due = !s->keepalive && !s->closing && now - s->last_sent >= every;
            if (due && n == BATCH)
                more = 1; /* the rest next round, after these are resumed */
            else if (due) {
                s->keepalive = 1;
                if (sse_claim_resume(s))
                    wake[n++] = s;
            }
            pthread_mutex_unlock(&s->mu);
            if (more)
                break;
        }
        pthread_mutex_unlock(&srv->smu);
        for (int i = 0; i < n; i++)
            sse_resume(wake[i]); /* suspended until this call, so still there */
    }
}

/* MHD's content reader: what fill wrote, else suspend until woken; the end after the last event. */
static ssize_t sse_read(void *cls, uint64_t pos, char *out, size_t max) {
    http_sse_t *s = cls;
    (void)pos;
    for (;;) {
        if (s->off < s->len) {
            size_t n = s->len - s->off < max ? s->len - s->off : max;
            memcpy(out, s->buf + s->off, n);
            s->off += n;
            if (s->off == s->len)
                s->off = s->len = 0;
            s->req->reply_bytes += n;
            pthread_mutex_lock(&s->mu);
            s->last_sent = mono_now();
            pthread_mutex_unlock(&s->mu);
            return (ssize_t)n;
        }
        if (s->last)
            return MHD_CONTENT_READER_END_OF_STREAM;
        pthread_mutex_lock(&s->mu);
        if (s->closing) {
            pthread_mutex_unlock(&s->mu);
            return MHD_CONTENT_READER_END_OF_STREAM; /* the server is stopping: end cleanly */
        }
        int keepalive = s->keepalive, fill = s->dirty || keepalive;
        s->dirty = s->keepalive = 0;
        if (!fill) {
            /* nothing to send: MHD leaves the connection alone until a waker resumes it */
            s->suspended = 1;
            MHD_suspend_connection(s->conn);
            pthread_mutex_unlock(&s->mu);
            return 0;
        }
        pthread_mutex_unlock(&s->mu);
        if (s->fill(s, s->arg))
            s->last = 1;
        if (keepalive && !s->len && !s->last)
            sse_append(s, ": keep-alive\n\n", 14);
    }
}

/* MHD's free callback: the response is done with (the request ended, or the daemon stops). */
static void sse_free(void *cls) {
    http_sse_t *s = cls;
    http_server_t *srv = s->srv;
    pthread_mutex_lock(&s->mu);
    assert(!s->suspended); /* MHD frees no response of a suspended connection */
    s->closing = 1;        /* a wake from now on does nothing */
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_lock(&srv->smu);
    if (s->prev)
        s->prev->next = s->next;
    else
        srv->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    srv->n_streams--;
    pthread_mutex_unlock(&srv->smu);
    if (s->end)
        s->end(s->arg); /* unsubscribes: a wake under way is over when this returns */
    pthread_mutex_destroy(&s->mu);
    free(s->buf);
    free(s);
}

int http_reply_sse(http_request_t *req, http_sse_fill_fn fill, http_sse_end_fn end, void *arg,
                   http_sse_t **out) {
    http_server_t *srv = req->srv;
    *out = NULL;
    if (req->replied || req->deferred || req->early)
        return -1;
    http_sse_t *s = xcalloc(1, sizeof *s);
    s->srv = srv;
    s->req = req;
    s->conn = req->conn;
    s->fill = fill;
    s->arg = arg;
    s->dirty = 1; /* the first fill comes at once */
    s->last_sent = mono_now();
    pthread_mutex_init(&s->mu, NULL);
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, SSE_BLOCK, sse_read, s, sse_free);
    if (!resp) {
        pthread_mutex_destroy(&s->mu);
        free(s);
        return -1;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no"); /* a proxy (nginx) passes events on at once */
    response_headers(req, resp);
    pthread_mutex_lock(&srv->smu);
    s->closing = srv->streams_closing; /* stopping already: the first state, then the end */
    s->next = srv->streams;
    if (srv->streams)
        srv->streams->prev = s;
    srv->streams = s;
    srv->n_streams++;
    pthread_mutex_unlock(&srv->smu);
    if (MHD_queue_response(req->conn, 200, resp) != MHD_YES) {
        MHD_destroy_response(resp); /* sse_free runs now, without end */
        return -1;
    }
    s->end = end; /* from here on sse_free calls it: the connection's thread is ours until we return */
    MHD_destroy_response(resp);
    req->replied = 1;
    req->status = 200;
    req->reply_bytes = 0;
    *out = s;
    return 0;
}

/* 1 while an event stream is open. */
static int streams_open(http_server_t *srv) {
    pthread_mutex_lock(&srv->smu);
    int n = srv->n_streams;
    pthread_mutex_unlock(&srv->smu);
    return n > 0;
}

/* Stop: every open stream ends after what it has to send, and none suspends again. */
static void streams_close(http_server_t *srv) {
    int more = 1;
    pthread_mutex_lock(&srv->smu);
    srv->streams_closing = 1;
    pthread_mutex_unlock(&srv->smu);
    while (more) {
        enum { BATCH = 64 };
        http_sse_t *wake[BATCH];
        int n = 0;
        more = 0;
        pthread_mutex_lock(&srv->smu);
        for (http_sse_t *s = srv->streams; s && !more; s = s->next) {
            pthread_mutex_lock(&s->mu);
            if (!s->closing || s->suspended) {
                if (n == BATCH) {
                    more = 1;
                } else {
                    s->closing = 1;
                    if (sse_claim_resume(s))
                        wake[n++] = s;
                }
            }
            pthread_mutex_unlock(&s->mu);
        }
        pthread_mutex_unlock(&srv->smu);
        for (int i = 0; i < n; i++)
            sse_resume(wake[i]);
    }
}

int http_host_valid(const char *h) {
    size_t n = strlen(h);
    const char *colon = NULL;
    if (n == 0 || n > 260)
        return 0;
    if (h[0] == '[') { /* an IPv6 literal */
        const char *close = strchr(h, ']');
        if (!close || close == h + 1)
            return 0;
        for (const char *p = h + 1; p < close; p++)
            if (!isxdigit((unsigned char)*p) && *p != ':' && *p != '.')
                return 0;
        if (close[1] && close[1] != ':')
            return 0;
        colon = close[1] ? close + 1 : NULL;
    } else {
        colon = strchr(h, ':');
        size_t len = colon ? (size_t)(colon - h) : n;
        if (len == 0 || len > 253)
            return 0;
        size_t label = 0;
        for (size_t i = 0; i < len; i++) {
            unsigned char ch = (unsigned char)h[i];
            if (ch == '.') {
                if (label == 0 && i + 1 < len)
                    return 0; /* an empty label (a trailing dot is allowed) */
                label = 0;
            } else if (isalnum(ch) || (ch == '-' && label > 0)) {
                if (++label > 63)
                    return 0;
            } else {
                return 0;
            }
        }
    }
    if (colon) {
        const char *p = colon + 1;
        if (!*p || strlen(p) > 5 || strspn(p, "0123456789") != strlen(p) || atoi(p) > 65535)
            return 0;
    }
    return 1;
}

static void client_address(struct MHD_Connection *c, char *out, size_t size) {
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(out, size, "?");
    if (!info || !info->client_addr)
        return;
    const struct sockaddr *sa = info->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)size);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)size);
}

/*
 * The client behind trusted proxies (cfg.trusted_proxies): when the peer is
 * one, X-Forwarded-For (all its lines, in order) is read from the right,
 * each proxy having appended the address it saw; the first address that is
 * not a trusted proxy is the client. An entry that is not a bare address
 * ("unknown", a port, garbage: not written by a proxy we trust) stops the
 * walk at the hop before it, which is the most a trusted proxy vouches
 * for. A peer that is not trusted is the client whatever it sends.
 */
static void forwarded_client(http_request_t *req) {
    const char *trusted = req->srv->cfg.trusted_proxies;
    if (!trusted || !*trusted || !cidr_list_match_text(trusted, req->client))
        return;
    const char *xff = http_request_header_all(req, "X-Forwarded-For");
    if (!xff)
        return;
    size_t end = strlen(xff);
    while (end > 0) {
        size_t start = end;
        while (start > 0 && xff[start - 1] != ',')
            start--;
        size_t a = start, b = end;
        while (a < b && (xff[a] == ' ' || xff[a] == '\t'))
            a++;
        while (b > a && (xff[b - 1] == ' ' || xff[b - 1] == '\t'))
            b--;
        char hop[INET6_ADDRSTRLEN];
        unsigned char bytes[16];
        if (b - a >= sizeof hop)
            return;
        memcpy(hop, xff + a, b - a);
        hop[b - a] = '\0';
        if (inet_pton(AF_INET, hop, bytes) != 1 && inet_pton(AF_INET6, hop, bytes) != 1)
            return;
        snprintf(req->client, sizeof req->client, "%s", hop);
        if (!cidr_list_match_text(trusted, hop))
            return;
        end = start > 0 ? start - 1 : 0;
    }
}

const char *http_request_client(const http_request_t *req) { return req->client; }

static int is_multipart(struct MHD_Connection *c) {
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    return ct && !strncasecmp(ct, "multipart/form-data", 19);
}

/*
 * Answer a refusal found while the body arrived (refuse()), with
 * "Connection: close": the rest of the body is never read.
 */
static void answer_refusal(http_request_t *req, int mid_body) {
    req->early = mid_body;
    http_reply_header(req, "Connection", "close");
    if (req->refuse_errno)
        http_reply_storage_error(req, req->refuse_errno);
    else
        http_reply_error_code(req, req->refused, req->refuse_code, NULL, "%s", req->refuse_msg);
}

static void refuse_too_large(http_request_t *req, unsigned long long limit) {
    refuse(req, 413, "TOO_LARGE", "request body too large: the limit is %llu bytes", limit);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_data_size,
                                 void **con_cls) {
    http_server_t *srv = cls;
    (void)version;
    http_request_t *req = *con_cls;
    if (!req) {
        req = xcalloc(1, sizeof *req);
        req->srv = srv;
        req->conn = c;
        req->upload_fd = -1;
        clock_gettime(CLOCK_MONOTONIC, &req->t0);
        text_utf8_copy(req->method, sizeof req->method, method, strlen(method));
        text_utf8_copy(req->path, sizeof req->path, url, strlen(url));
        client_address(c, req->client, sizeof req->client);
        forwarded_client(req);
        *con_cls = req;
        conn_phase(srv, c, CONN_BODY);
        route(req);
        cors_note(req);
        const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (host && !http_host_valid(host)) /* RFC 9112 3.2: an invalid Host is answered 400 */
            refuse(req, 400, "INVALID_REQUEST", "malformed Host header: expected host[:port]");
        else if (atomic_load(&srv->stopping) && cl && strtoull(cl, NULL, 10) > 0)
            refuse(req, 503, "UNAVAILABLE", "the server is shutting down: try again shortly");
        else if (cl && strtoull(cl, NULL, 10) > srv->cfg.max_upload) /* refused before any of it is read */
            refuse_too_large(req, srv->cfg.max_upload);
        else if (req->route && !strcmp(req->method, "POST") && is_multipart(c)) {
            req->pp = MHD_create_post_processor(c, 64 * 1024, upload_iter, req);
            if (!req->pp)
                refuse(req, 400, "INVALID_REQUEST", "malformed multipart/form-data request (no boundary)");
        }
        if (req->refused) {
            answer_refusal(req, 0);
            conn_phase(srv, c, CONN_REPLY);
        }
        return MHD_YES;
    }
    if (req->deferred) {
        /* called again after the resume: the background thread's reply goes out */
        req->deferred = 0;
        if (req->kept) {
            MHD_queue_response(c, req->status, req->kept);
            MHD_destroy_response(req->kept);
            req->kept = NULL;
        }
        upload_discard(req);
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        req->body_bytes += n;
        conn_body_bytes(srv, c, req->body_bytes);
        if (req->early) { /* answered: drop the rest for a short while, then close */
            req->linger_bytes += n;
            return req->linger_bytes > LINGER_BYTES || mono_now() > req->linger_until ? MHD_NO : MHD_YES;
        }
        if (req->refused)
            return MHD_YES; /* refused with the head (answer queued): nothing of the body is kept */
        if (atomic_load(&srv->stopping))
            refuse(req, 503, "UNAVAILABLE", "the server is shutting down: try again shortly");
        else if (req->body_bytes > srv->cfg.max_upload) /* a body with no or a false length */
            refuse_too_large(req, srv->cfg.max_upload);
        else if (req->pp) {
            if (MHD_post_process(req->pp, upload_data, n) != MHD_YES && !req->refused)
                refuse(req, 400, "INVALID_REQUEST", "malformed multipart/form-data body");
        } else if (req->route && body_append(req, upload_data, n)) {
            refuse_too_large(req, (unsigned long long)srv->cfg.max_body); /* a JSON body is small */
            free(req->body);
            req->body = NULL;
            req->body_size = req->body_cap = 0;
        }
        if (req->refused) {
            answer_refusal(req, 1);
            conn_phase(srv, c, CONN_REPLY);
        }
        return MHD_YES;
    }
    /* the whole request is in: answer it */
    if (req->early)
        return MHD_NO; /* answered on the socket already: close */
    conn_phase(srv, c, CONN_REPLY);
    if (req->upload_fd >= 0) {
        close(req->upload_fd);
        req->upload_fd = -1;
    }
    if (req->refused) {
        if (!req->replied)
            answer_refusal(req, 0);
    } else if (!strcmp(req->method, "OPTIONS") && req->found >= 0 && (!req->route || is_preflight(req))) {
        answer_options(req); /* before any handler: a preflight needs no credentials */
    } else if (req->route) {
        fields_finish(req);
        req->route->handler(req, srv->ctx);
        if (req->deferred)
            return MHD_YES; /* suspended: a background thread has it now */
    } else if (req->found == 0) {
        http_reply_header(req, "Allow", req->match.allow);
        http_reply_error(req, 405, "method %s not allowed on %s (allowed: %s)", req->method, req->path,
                         req->match.allow);
    } else
        http_reply_error(req, 404, "no such endpoint: %s %s", req->method, req->path);
    if (!req->replied) {
        log_error("http: %s %s: the handler sent no reply", req->method, req->path);
        http_reply_error(req, 500, "internal error");
    }
    upload_discard(req); /* not taken by the handler: gone before the client reads the reply */
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)cls;
    http_request_t *req = *con_cls;
    if (!req)
        return;
    int ok = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK;
    conn_phase(req->srv, c, CONN_HEAD); /* the next request's head is due from now */
    if (req->on_complete)
        req->on_complete(req, ok, req->srv->ctx);
    if (req->replied) {
        char code[8];
        snprintf(code, sizeof code, "%u", req->status);
        metrics_add("upres_http_requests_total", code, 1);
    }
    log_info("http: %s %s %u %llu %.1fms%s", req->method, req->path, req->replied ? req->status : 0,
             req->reply_bytes, ms_since(&req->t0), ok ? "" : " (not completed)");
    request_free(req);
    *con_cls = NULL;
}

int http_server_start(const http_config_t *cfg_in, const http_route_t *routes, int n_routes, void *ctx,
                      http_server_t **out, up_error_t *err) {
    *out = NULL;
    http_config_t cfg = *cfg_in;
    http_config_t def;
    http_config_init(&def);
    if (!cfg.listen_addr || !*cfg.listen_addr)
        cfg.listen_addr = def.listen_addr;
    if (cfg.n_threads <= 0)
        cfg.n_threads = def.n_threads;
    if (!cfg.conn_timeout_s)
        cfg.conn_timeout_s = def.conn_timeout_s;
    if (!cfg.max_conns)
        cfg.max_conns = def.max_conns;
    if (!cfg.max_conns_per_ip)
        cfg.max_conns_per_ip = def.max_conns_per_ip;
    if (!cfg.max_upload)
        cfg.max_upload = def.max_upload;
    if (!cfg.max_body)
        cfg.max_body = def.max_body;
    if (cfg.n_defer_threads <= 0)
        cfg.n_defer_threads = def.n_defer_threads;
    if (cfg.defer_queue <= 0)
        cfg.defer_queue = def.defer_queue;
    if (cfg.n_fetch_threads <= 0)
        cfg.n_fetch_threads = def.n_fetch_threads;
    if (cfg.fetch_queue <= 0)
        cfg.fetch_queue = def.fetch_queue;
    if (!cfg.head_timeout_s)
        cfg.head_timeout_s = def.head_timeout_s;
    if (!cfg.sse_keepalive_s)
        cfg.sse_keepalive_s = def.sse_keepalive_s;
    if (cfg.port < 0 || cfg.port > 65535)
        return up_error_set(err, UP_ERR_INVALID, 0, "bad port %d", cfg.port);
    if (cors_parse(cfg.cors_origins, NULL, err))
        return UP_ERR_INVALID;

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    /* poll(), not MHD_USE_AUTO's epoll: with epoll MHD_quiesce_daemon (SIGTERM) removes the listen socket
     * from the epoll set from our thread while MHD's own thread may just have removed it (at its
     * connection limit), and MHD then aborts the process ("Failed to remove listen FD from epoll set",
     * seen once in e2e/page_test under ASan); with poll quiescing only sets a flag its thread reads */
    unsigned flags =
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, cfg.listen_addr, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)cfg.port);
    } else if (inet_pton(AF_INET6, cfg.listen_addr, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)cfg.port);
        flags |= MHD_USE_IPv6;
    } else {
        return up_error_set(err, UP_ERR_INVALID, 0, "bad listen address '%s': an IPv4 or IPv6 literal",
                            cfg.listen_addr);
    }

    http_server_t *srv = xcalloc(1, sizeof *srv);
    srv->routes = routes;
    srv->n_routes = n_routes;
    srv->ctx = ctx;
    snprintf(srv->upload_dir, sizeof srv->upload_dir, "%s", cfg.upload_dir ? cfg.upload_dir : ".");
    cfg.upload_dir = srv->upload_dir;
    cfg.listen_addr = NULL;                 /* not kept */
    cors_parse(cfg.cors_origins, srv, err); /* checked above */
    cfg.cors_origins = NULL;                /* kept parsed */
    srv->cfg = cfg;
    pthread_mutex_init(&srv->cmu, NULL);
    pthread_cond_init(&srv->ccv, NULL);
    pthread_mutex_init(&srv->smu, NULL);
    atomic_store(&srv->stopping, 0);
    atomic_store(&srv->n_resuming, 0);
    if (pool_start(srv, &srv->pools[HTTP_POOL_SUBMIT], cfg.n_defer_threads, cfg.defer_queue) ||
        pool_start(srv, &srv->pools[HTTP_POOL_FETCH], cfg.n_fetch_threads, cfg.fetch_queue)) {
        http_server_stop(srv);
        return up_error_set(err, UP_ERR_IO, 0, "cannot start the HTTP background threads");
    }

    srv->daemon = MHD_start_daemon(
        flags, (uint16_t)cfg.port, NULL, NULL, on_access, srv, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)cfg.n_threads, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)cfg.conn_timeout_s, MHD_OPTION_CONNECTION_LIMIT, (unsigned int)cfg.max_conns,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned int)cfg.max_conns_per_ip, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, srv, MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv, MHD_OPTION_END);
    if (!srv->daemon) {
        http_server_stop(srv);
        return up_error_set(err, UP_ERR_IO, 0, "cannot listen on %s port %d (in use, or not allowed)",
                            cfg_in->listen_addr ? cfg_in->listen_addr : def.listen_addr, cfg.port);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : cfg.port;
    if (pthread_create(&srv->reaper, NULL, reaper_main, srv)) {
        http_server_stop(srv);
        return up_error_set(err, UP_ERR_IO, 0, "cannot start the HTTP deadline thread");
    }
    srv->has_reaper = 1;
    *out = srv;
    return 0;
}

int http_server_port(const http_server_t *srv) { return srv->port; }

void http_server_quiesce(http_server_t *srv) {
    if (!srv || !srv->daemon)
        return;
    atomic_store(&srv->stopping, 1);
    MHD_socket s = MHD_quiesce_daemon(srv->daemon);
    if (s != MHD_INVALID_SOCKET)
        close(s);
}

/* 1 while a request body is arriving on some connection. */
static int bodies_under_way(http_server_t *srv) {
    int n = 0;
    pthread_mutex_lock(&srv->cmu);
    for (conn_t *k = srv->conns; k && !n; k = k->next)
        n = k->phase == CONN_BODY && !k->cut;
    pthread_mutex_unlock(&srv->cmu);
    return n;
}

void http_server_stop(http_server_t *srv) {
    if (!srv)
        return;
    atomic_store(&srv->stopping, 1);
    /* event streams end now, cleanly (their chunked body is terminated) */
    streams_close(srv);
    /* uploads under way get their 503 with the next bytes they send, rather than a dropped socket;
     * streams as long to send their end */
    for (double t0 = mono_now();
         srv->daemon && (bodies_under_way(srv) || streams_open(srv)) && mono_now() - t0 < STOP_DRAIN_S;)
        usleep(10 * 1000);
    /* then: every suspended connection is resumed before the daemon stops (a stream that is still
     * open is not suspended: closing, it never suspends again, and a resume claimed before is made) */
    for (int i = 0; i < HTTP_N_POOLS; i++)
        pool_stop(&srv->pools[i]);
    while (atomic_load(&srv->n_resuming) > 0)
        usleep(1000);
    if (srv->daemon)
        MHD_stop_daemon(srv->daemon);
    if (srv->has_reaper) {
        pthread_mutex_lock(&srv->cmu);
        srv->reaper_stop = 1;
        pthread_cond_signal(&srv->ccv);
        pthread_mutex_unlock(&srv->cmu);
        pthread_join(srv->reaper, NULL);
    }
    pthread_mutex_destroy(&srv->cmu);
    pthread_cond_destroy(&srv->ccv);
    pthread_mutex_destroy(&srv->smu);
    for (int i = 0; i < HTTP_N_POOLS; i++)
        pool_free(&srv->pools[i]);
    free(srv);
}
