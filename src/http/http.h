/*
 * http.h - the HTTP server: libmicrohttpd glue, route tables, multipart
 * uploads streamed to disk, JSON replies, files streamed from disk.
 *
 * The server knows nothing of jobs or images: an API dialect (src/api/)
 * hands it a static table of routes {method, pattern, handler} and its
 * handlers answer through http_reply_*. Patterns are literal paths whose
 * segments may be "{name}" (one path segment, read back with
 * http_request_param). A literal segment beats a "{name}" whatever the
 * table order ("/status/stream" is never "/status/{job_id}"). A request
 * whose path matches no route gets 404, one whose path matches only with
 * another method gets 405 with Allow (the path's methods); both JSON.
 *
 * CORS (cfg.cors_origins): every reply of the server, from any layer (JSON,
 * errors, files, event streams, the refusals written while a body arrives),
 * carries Access-Control-Allow-Origin ("*", or the request's Origin when
 * listed, with Vary: Origin; an unlisted Origin gets none) and
 * Access-Control-Expose-Headers. OPTIONS on a path that has routes is
 * answered here, before any handler: a preflight (with
 * Access-Control-Request-Method) gets 204 with the methods, the asked
 * headers and the usual API ones (Authorization named: a "*" would not
 * cover it) and Max-Age 600; a plain OPTIONS gets 204 with Allow unless the
 * table has an OPTIONS route for the path. Only MHD's own refusals (a
 * request line or head it cannot parse or hold) go out without them.
 *
 * Uploads: a POST with Content-Type multipart/form-data is parsed while it
 * arrives. Small text fields are kept (up to HTTP_FIELD_MAX bytes each as
 * sent; a handler may see up to 3 times that once invalid bytes became
 * U+FFFD); the
 * first file part is written to a new file in the upload folder as it
 * streams. When the body passes max_upload bytes the file is closed and
 * removed and the handler is not called: the client gets 413 at once, with
 * "Connection: close", and the rest of the body is not read. A file that
 * cannot be written is 507 (disk full) or 503 (read-only, I/O error).
 *
 * Deadlines: a connection must deliver a whole request head within
 * head_timeout_s of opening (or of its last reply), and a body must then
 * average min_body_rate bytes/s; a connection that does not is closed. A handler
 * that wants the file renames it (http_request_upload_take); otherwise it is
 * removed when the request ends. Any other body (JSON) is kept in memory up
 * to max_body bytes (413 beyond) and read with http_request_body.
 *
 * DESIGN: libmicrohttpd runs its own thread pool (internal polling threads,
 * epoll where available); a handler runs on one of those threads and may
 * block briefly (a database read). Slow work (decoding an upload, fetching
 * a client's URL) goes to the server's background threads with
 * http_request_defer: the connection is suspended, the HTTP thread serves
 * others meanwhile, and the reply goes out when the work is done. The request object
 * lives from the first callback to MHD's "completed" notification, where
 * the completion hook runs (with whether the response went out in full),
 * one log line is written, and everything is freed.
 *
 * Streams (Server-Sent Events, http_reply_sse): a reply whose body is
 * written as events happen. No thread is held for an open stream: while it
 * has nothing to send its connection is suspended, and http_sse_wake (from
 * any thread: a job event) resumes it, so that the handler's fill callback
 * runs again on an HTTP thread. A quiet stream gets a ": keep-alive"
 * comment every sse_keepalive_s. A stream counts as "being answered" for
 * the deadlines, so it is never cut for being long; http_server_stop ends
 * every open stream cleanly (the chunked body is terminated) before it
 * closes the connections.
 */
#ifndef UPRES_HTTP_HTTP_H
#define UPRES_HTTP_HTTP_H

#include <jansson.h>
#include <stddef.h>

#include "core/err.h"

#define HTTP_FIELD_MAX 4096 /* bytes kept of one text form field */
#define HTTP_MAX_FIELDS 32
#define HTTP_MAX_PARAMS 4

typedef struct http_request http_request_t;

/* A handler answers the request with exactly one http_reply_* call. */
typedef void (*http_handler_fn)(http_request_t *req, void *ctx);

typedef struct http_route {
    const char *method;  /* "GET", "POST", ... */
    const char *pattern; /* "/api/v1/status/{job_id}" */
    http_handler_fn handler;
} http_route_t;

typedef struct http_config {
    const char *listen_addr;   /* IPv4 or IPv6 literal; NULL = 127.0.0.1 */
    int port;                  /* 0 = any free port */
    int n_threads;             /* MHD thread pool size; 0 = 4 */
    unsigned conn_timeout_s;   /* idle connection timeout; 0 = 30 */
    unsigned head_timeout_s;   /* a request head must be in within this, and a body past it keep
                                  min_body_rate; 0 = 10 */
    unsigned min_body_rate;    /* bytes/s a body must average once head_timeout_s passed; 0 = no minimum */
    unsigned max_conns;        /* 0 = 1024 */
    unsigned max_conns_per_ip; /* 0 = 64 */
    const char *upload_dir;    /* where uploads stream to (borrowed, must exist) */
    unsigned long long max_upload; /* bytes of a request body; 0 = 50 MB */
    size_t max_body;               /* bytes of a body kept in memory (not multipart); 0 = 1 MB */
    int n_defer_threads;           /* HTTP_POOL_SUBMIT threads for http_request_defer; 0 = 8 */
    int defer_queue;               /* deferred requests that may wait for one; 0 = 256 */
    int n_fetch_threads;         /* HTTP_POOL_FETCH threads (work that waits on others: URL fetches); 0 = 8 */
    int fetch_queue;             /* requests that may wait for one; 0 = 256 */
    unsigned sse_keepalive_s;    /* a quiet event stream gets a comment this often; 0 = 15 */
    const char *cors_origins;    /* borrowed: "*", a list of origins, or "" / "none" = no CORS (see
                                    http_cors_origins_check); NULL = "*" */
    const char *trusted_proxies; /* borrowed: CIDR ranges (core/cidr.h) whose X-Forwarded-For names the
                                    client (http_request_client); NULL or "" = none: the peer is the client */
} http_config_t;

void http_config_init(http_config_t *cfg);

typedef struct http_server http_server_t;

/*
 * Check a cors_origins value: 0, or UP_ERR_INVALID with err naming the bad
 * entry. "*", "", "none", or entries (spaces around them ignored), each "*"
 * or an origin scheme://host[:port] with no path, under HTTP_ORIGIN_MAX
 * bytes, at most HTTP_CORS_MAX of them.
 */
#define HTTP_ORIGIN_MAX 256
#define HTTP_CORS_MAX 64
int http_cors_origins_check(const char *list, up_error_t *err);

/*
 * Start serving routes (n_routes entries, borrowed: static tables) with
 * handlers called with ctx. *out is new (http_server_stop).
 * Errors: UP_ERR_INVALID (bad address or cors_origins), UP_ERR_IO (cannot listen).
 */
int http_server_start(const http_config_t *cfg, const http_route_t *routes, int n_routes, void *ctx,
                      http_server_t **out, up_error_t *err);

/* The port actually listened on (useful with port 0). */
int http_server_port(const http_server_t *srv);

/*
 * Stop accepting new connections; requests under way go on, but a body
 * still arriving is answered 503 (with "Connection: close") at its next
 * bytes.
 */
void http_server_quiesce(http_server_t *srv);

/*
 * Stop: open event streams end (each sends what it has, then its end),
 * bodies under way get up to half a second to be answered 503 (and streams
 * as long to finish), then deferred requests finish, every connection is
 * closed, the threads are joined and everything freed. Accepts NULL.
 */
void http_server_stop(http_server_t *srv);

/* ---- reading a request (all strings borrowed, valid until the reply is sent) ---- */

const char *http_request_method(const http_request_t *req);
const char *http_request_path(const http_request_t *req);
/* A "{name}" segment of the matched pattern, or NULL. */
const char *http_request_param(const http_request_t *req, const char *name);
/* A query-string argument, or NULL. */
const char *http_request_query(const http_request_t *req, const char *name);
/* Every value of a query parameter given several times (?id=a&id=b), in order, to fn until it returns
 * non-zero. */
void http_request_query_all(const http_request_t *req, const char *name,
                            int (*fn)(const char *value, void *ctx), void *ctx);
/* A request header (the first line of that name, case-insensitive), or NULL. */
const char *http_request_header(const http_request_t *req, const char *name);
/*
 * Every line of the header name (case-insensitive), joined with ", " in the
 * order sent, as RFC 9110 5.3 combines them; NULL when there is none.
 */
const char *http_request_header_all(const http_request_t *req, const char *name);
/*
 * 1 when the Accept header (all its lines) names the media type type
 * ("text/html", case-insensitive) with a q above 0, else 0. Only the type
 * itself counts, not a wildcard range (any type, or "text/" with any
 * subtype): a browser names text/html, while curl and most API clients
 * send only the full wildcard, so a page can go to the one and JSON to the
 * others.
 */
int http_request_accepts(const http_request_t *req, const char *type);
/* The same test on an Accept value (NULL: 0). Pure: any thread. */
int http_accepts(const char *accept, const char *type);
/* A multipart text field, or NULL when absent. */
const char *http_request_field(const http_request_t *req, const char *name);
/*
 * The client's address, numeric ("127.0.0.1", "::1"), or "?": the peer's,
 * or behind a trusted proxy the one its X-Forwarded-For names (see
 * http_config_t.trusted_proxies). What per-address limits count.
 */
const char *http_request_client(const http_request_t *req);
/*
 * Every string above is valid UTF-8 (core/text.h: invalid bytes replaced
 * with U+FFFD, cuts on character boundaries), whatever bytes the client
 * sent, so it can go into a JSON reply or a row as it is. A form field is
 * never cut: a request with a field longer than HTTP_FIELD_MAX, or with more
 * than HTTP_MAX_FIELDS fields, is answered 400 before any handler runs.
 */

/*
 * SHA-256 of what the request asks: method, path, form fields (in name
 * order), the upload's field, file name and bytes, and a non-multipart body.
 * Two requests with equal digests ask the same thing (Idempotency-Key).
 * Computed at the first call (before http_request_upload_take: the upload
 * is part of it) and kept.
 */
void http_request_digest(const http_request_t *req, unsigned char out[32]);

/* 1 when h is a plain host[:port] (a DNS name, IPv4, or [IPv6] literal; port 0..65535), else 0. */
int http_host_valid(const char *h);

/*
 * The body of a request that is not multipart/form-data (NUL-terminated,
 * *size bytes), or NULL when it had none.
 */
const char *http_request_body(const http_request_t *req, size_t *size);

/*
 * The uploaded file part named field, if any: its path on disk, the client's
 * file name ("" when none) and its size. Returns 0 when present, else -1.
 */
int http_request_upload(const http_request_t *req, const char *field, const char **path,
                        const char **filename, unsigned long long *size);

/*
 * Rename the uploaded file to dest; it is then the caller's. dest NULL: the
 * file stays where it is (the path http_request_upload gave) and is the
 * caller's (the blob store moves it). 0, or UP_ERR_IO with errno set.
 */
int http_request_upload_take(http_request_t *req, const char *dest, up_error_t *err);

/*
 * Finish req on a thread of pool: fn(req, ctx, arg) runs there and
 * replies with exactly one http_reply_* call, as a handler does (a missing
 * reply becomes 500). The calling handler returns at once without
 * replying; the request's body, fields and upload stay valid for fn. arg
 * is fn's (fn frees it). Returns 0, or -1 when the pool's queue is full
 * (cfg.defer_queue or cfg.fetch_queue requests wait at most): nothing
 * changed, the handler replies itself (503).
 */
typedef enum {
    HTTP_POOL_SUBMIT = 0, /* CPU-bound work: decoding an upload */
    HTTP_POOL_FETCH = 1,  /* work that waits on someone else (a client's URL): never delays the other */
    HTTP_N_POOLS
} http_pool_t;
typedef void (*http_defer_fn)(http_request_t *req, void *ctx, void *arg);
int http_request_defer(http_request_t *req, http_pool_t pool, http_defer_fn fn, void *arg);

/* ---- replying ---- */

/* Reply with status and the JSON body (taken over: its reference is stolen). */
void http_reply_json(http_request_t *req, unsigned status, json_t *body);

/* The compact text of body (taken over) as http_reply_json sends it: new (free()), NULL when body is NULL. */
char *http_json_text(json_t *body);

/*
 * A file could not be created or written (errno e): 507 INSUFFICIENT_STORAGE
 * when the disk or a quota is full, else 503 STORAGE_UNAVAILABLE with
 * Retry-After (read-only folder, permissions, I/O error).
 */
void http_reply_storage_error(http_request_t *req, int e);

/* Reply {"success": false, "error": "<message>", "code": "<CODE>", "detail": "<message>"}; CODE from status.
 */
void http_reply_error(http_request_t *req, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Reply {"success": false, "error": "<message>", "code": "<code>", "detail"} with
 * status: code is a machine-readable name (PicShapes' "INSUFFICIENT_CREDITS").
 * extra, when not NULL, is merged into the body (taken over).
 */
void http_reply_error_code(http_request_t *req, unsigned status, const char *code, json_t *extra,
                           const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Reply with a static or borrowed buffer copied into the response. */
void http_reply_data(http_request_t *req, unsigned status, const char *content_type, const void *data,
                     size_t size);

/*
 * Stream the file at path (opened here). attachment_name, when not NULL,
 * becomes Content-Disposition: attachment; filename="...". Returns 0, or
 * UP_ERR_NOT_FOUND / UP_ERR_IO without replying (the caller answers).
 */
int http_reply_file(http_request_t *req, unsigned status, const char *path, const char *content_type,
                    const char *attachment_name);

/*
 * Reply with a body of exactly size bytes that read produces: read(ctx,
 * pos, buf, max) puts up to max bytes from offset pos into buf and returns
 * how many (> 0), or 0 or less on an error (the connection is then closed:
 * the head promised size bytes). free_ctx (may be NULL) gets ctx when the
 * reply is done with, whatever happened; on a failure here (UP_ERR_NOMEM,
 * nothing replied) ctx stays the caller's. Headers as http_reply_file.
 */
typedef long (*http_read_fn)(void *ctx, unsigned long long pos, char *buf, size_t max);
typedef void (*http_free_fn)(void *ctx);
int http_reply_stream(http_request_t *req, unsigned status, unsigned long long size, http_read_fn read,
                      http_free_fn free_ctx, void *ctx, const char *content_type,
                      const char *attachment_name);

/* ---- streamed replies: Server-Sent Events ---- */

typedef struct http_sse http_sse_t;

/*
 * Fill an event stream: called on an HTTP thread (one call at a time per
 * stream, without any lock of the server's held), first when the stream
 * starts, then once after each run of http_sse_wake calls (wakes that come
 * while it runs make one more call), and at each keep-alive (a comment is
 * sent when it adds nothing). It adds events with http_sse_send and may
 * block briefly (a database read). Returns 0 to go on, 1 when what it sent
 * is the last: the stream ends once that is sent.
 */
typedef int (*http_sse_fill_fn)(http_sse_t *s, void *arg);

/*
 * The stream ended (sent in full, the client went away, or the server is
 * stopping): called once, on an HTTP thread or in http_server_stop, with no
 * fill call under way or to come. When it returns, no http_sse_wake with
 * this stream may come any more (unsubscribe here); arg is then its own to
 * free.
 */
typedef void (*http_sse_end_fn)(void *arg);

/*
 * Answer req (from its handler, not from a deferred function) with an
 * event stream: 200, Content-Type text/event-stream, Cache-Control no-cache,
 * a chunked body filled by fill. *out is the stream for http_sse_wake
 * (borrowed: valid until end is called). arg is borrowed by fill and handed
 * to end. Returns 0 (end will be called once, and never before the handler
 * returns), or -1 when nothing was sent and end will not be called (the
 * handler answers itself).
 */
int http_reply_sse(http_request_t *req, http_sse_fill_fn fill, http_sse_end_fn end, void *arg,
                   http_sse_t **out);

/* Ask for a fill call soon. Any thread; cheap; never blocks for long (a worker may call it). */
void http_sse_wake(http_sse_t *s);

/*
 * From fill: queue one event (event may be NULL: the default "message";
 * data may hold newlines, each line becomes a "data:" line).
 */
void http_sse_send(http_sse_t *s, const char *event, const char *data);

/* From fill: queue "retry: ms" (how long an EventSource waits before it reconnects). */
void http_sse_retry(http_sse_t *s, int ms);

/*
 * Add a header to the response about to be sent (call before http_reply_*:
 * it applies to every kind, JSON, data, files, event streams and the early
 * refusals). name and value are copied. At most HTTP_MAX_REPLY_HEADERS per
 * request; more are dropped (logged: a bug). A handler that sets
 * Access-Control-Allow-Origin itself gets none of the server's CORS headers
 * on that reply.
 */
#define HTTP_MAX_REPLY_HEADERS 16
void http_reply_header(http_request_t *req, const char *name, const char *value);

/*
 * Called once the request ends, on a server thread: ok is 1 when the whole
 * response was sent. arg is borrowed (a copy of small data may be kept in
 * http_request_set_tag's buffer).
 */
typedef void (*http_complete_fn)(http_request_t *req, int ok, void *ctx);
void http_request_on_complete(http_request_t *req, http_complete_fn fn);

/* A small string kept with the request for the completion hook. */
void http_request_set_tag(http_request_t *req, const char *tag);
const char *http_request_tag(const http_request_t *req);

#endif
