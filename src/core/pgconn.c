/* pgconn.c - see pgconn.h. */
#include "core/pgconn.h"

#include <stdio.h>

PGconn *pgconn_open(const char *url, const char *app, char *where, size_t where_size) {
    const char *const keys[] = {"dbname", "client_encoding", "fallback_application_name", NULL};
    const char *const vals[] = {url, "UTF8", app, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1); /* 1: dbname is expanded as a URL */
    if (c && where && where_size) {
        const char *host = PQhost(c), *port = PQport(c), *db = PQdb(c);
        snprintf(where, where_size, "postgresql database %s on %s%s%s", db && *db ? db : "?",
                 host && *host ? host : "the default host", port && *port ? ":" : "", port ? port : "");
    }
    return c;
}
