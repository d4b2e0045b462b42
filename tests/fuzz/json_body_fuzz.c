/*
 * json_body_fuzz.c - fuzz target for the JSON request bodies of the API:
 * POST /v1/jobs {"image_url", "model", "scale"} (upres.ai dialect,
 * src/api/upres_v1.c create_from_json), through the real route table.
 *
 * The real API runs in-process behind the loopback server (loopback.h):
 * api_t with a store opened in a mkdtemp folder holding one API key, an
 * empty model registry and no queue, and api_routes(). With no model
 * installed a body that passes every check is answered 503
 * MODEL_UNAVAILABLE (a known model name) or 400 (an unknown one) before
 * anything is fetched, so the target never reaches the network or a
 * worker. The input is the body, sent with Content-Type application/json.
 *
 * Checked for every input: a complete reply whose body is a JSON object
 * with string "error" and "code", and the status the API's checks give,
 * worked out here from the same parse (json_loadb): 413 over max_body; 400
 * for an empty body, anything but an object, an image_url that is not a
 * non-empty string, a model that is not a string, a scale that is not an
 * integer from 2 to 8; 400 or 503 for a body that passes them. Never 500: a
 * message that jansson cannot encode (a cut inside a character) comes out
 * as 500 "out of memory".
 *
 * In ctest through driver.c (seeds: tests/fuzz/seeds/json_body); with
 * libFuzzer: tests/fuzz/run.sh 60 json_body.
 */
#include <dirent.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "auth/auth.h"
#include "core/clock.h"
#include "core/uuid.h"
#include "loopback.h"

#define JSON_BODY_FUZZ_MAX_BODY 4096 /* max_body: bytes of a JSON body kept */
#define JSON_BODY_FUZZ_MAX_INPUT 8192

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static api_t api;
static store_t *store;
static upscale_registry_t registry; /* no models */
static http_route_t *routes;        /* api_routes(): new, borrowed by the server until api_stop */
static char store_dir[64];
static char bearer[AUTH_KEY_LEN + 32];
static char request[JSON_BODY_FUZZ_MAX_INPUT + 1024];

static void api_stop(void) {
    store_close(store);
    store = NULL;
    free(routes);
    routes = NULL;
    DIR *d = opendir(store_dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        char p[600];
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", store_dir, e->d_name);
            unlink(p);
        }
    }
    closedir(d);
    rmdir(store_dir);
}

static void api_start(void) {
    if (store)
        return;
    snprintf(store_dir, sizeof store_dir, "/tmp/upres-fuzz-store-XXXXXX");
    up_error_t err;
    if (!mkdtemp(store_dir) || store_open(store_dir, &store, &err)) {
        fprintf(stderr, "json_body: cannot open a store in %s\n", store_dir);
        abort();
    }
    atexit(api_stop); /* after lb_stop (atexit runs in reverse): the server is gone first */
    api_key_t k;
    memset(&k, 0, sizeof k);
    char key[AUTH_KEY_LEN + 1];
    if (auth_key_generate(key, k.hash, k.prefix))
        abort();
    uuid_v4(k.id);
    snprintf(k.name, sizeof k.name, "fuzz");
    snprintf(k.tier, sizeof k.tier, "basic");
    k.quota = -1;
    k.credits = -1;
    k.created_at = now_s();
    if (store_key_insert(store, &k, &err)) {
        fprintf(stderr, "json_body: cannot add a key: %s\n", err.msg);
        abort();
    }
    snprintf(bearer, sizeof bearer, "Authorization: Bearer %s\r\n", key);

    api_init(&api);
    api.jobs.store = store;
    api.jobs.registry = &registry;
    snprintf(registry.dir, sizeof registry.dir, "/nonexistent");
    int n_routes;
    routes = api_routes(&n_routes);
    http_config_t cfg;
    http_config_init(&cfg);
    cfg.max_body = JSON_BODY_FUZZ_MAX_BODY;
    cfg.max_upload = 64 * 1024;
    lb_start(&cfg, routes, n_routes, &api);
}

/* The status the API's checks give the body (400 or 413), or 0 when it passes them (400 or 503). */
static unsigned expected(const uint8_t *data, size_t size) {
    if (size > JSON_BODY_FUZZ_MAX_BODY)
        return 413;
    if (size == 0)
        return 400;
    json_error_t jerr;
    json_t *o = json_loadb((const char *)data, size, 0, &jerr);
    json_t *url = json_object_get(o, "image_url"), *model = json_object_get(o, "model"),
           *scale = json_object_get(o, "scale");
    unsigned want = 0;
    if (!json_is_object(o) || !json_is_string(url) || !*json_string_value(url) ||
        (model && !json_is_string(model)) || (scale && !json_is_integer(scale)))
        want = 400;
    else if (scale && (json_integer_value(scale) < 2 || json_integer_value(scale) > 8))
        want = 400;
    json_decref(o);
    return want;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > JSON_BODY_FUZZ_MAX_INPUT)
        return 0;
    api_start();
    size_t len = 0, cap = sizeof request;
    char head[256];
    lb_puts(request, cap, &len, "POST /v1/jobs HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n");
    lb_puts(request, cap, &len, bearer);
    snprintf(head, sizeof head, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n", size);
    lb_puts(request, cap, &len, head);
    lb_put(request, cap, &len, data, size);

    lb_reply_t r;
    json_t *o = lb_exchange_json(request, len, &r);
    unsigned want = expected(data, size);
    if (want ? r.status != want : r.status != 400 && r.status != 503)
        lb_fail(r.status >= 500 && r.status != 503 ? "a server error (a message the encoder refused?)"
                                                   : "a status the body's checks do not give",
                &r);
    if (!json_is_string(json_object_get(o, "error")) || !json_is_string(json_object_get(o, "code")))
        lb_fail("an error reply without a string error and code", &r);
    json_decref(o);
    lb_reply_fini(&r);
    return 0;
}
