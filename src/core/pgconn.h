/*
 * pgconn.h - a PostgreSQL connection opened the one way every part of
 * upres opens one (the job store, its listener, the blob store): libpq's
 * URI forms, text in UTF-8 both ways, an application name unless the URL
 * sets its own, and a description of where it goes for messages.
 */
#ifndef UPRES_CORE_PGCONN_H
#define UPRES_CORE_PGCONN_H

#include <libpq-fe.h>
#include <stddef.h>

/*
 * Connect to the database url names (blocking). The URL's own settings
 * come first and client_encoding UTF8 wins; app is the application name
 * when the URL gives none. where (may be NULL) gets "postgresql database
 * DB on HOST[:PORT]", never the password. Returns the connection, whose
 * PQstatus the caller checks (PQfinish it either way), or NULL when libpq
 * could not allocate one.
 */
PGconn *pgconn_open(const char *url, const char *app, char *where, size_t where_size);

#endif
