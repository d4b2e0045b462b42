/*
 * backends.h - the store unit tests' backends: each test program runs its
 * backend-neutral cases on SQLite (a folder per store under the test's
 * folder) and then, when UPRES_TEST_PG names a PostgreSQL database (ctest
 * passes the throw-away cluster of tests/pg/cluster.sh), again on
 * PostgreSQL (a schema per store, chosen through the URL's search_path).
 *
 *   tb_run(dir, fn)          fn() on each backend in turn; tb_pg says which
 *   tb_open(name)            a store of its own named name (a second call
 *                            with the same name: a second handle on it, as
 *                            another process)
 *   tb_exec(name, sql)       SQL run on that store directly (the tests'
 *                            "a process died" and similar), 0 on success
 *
 * Cases that only SQLite has (file migrations, WAL) run outside tb_run.
 */
#ifndef UPRES_TESTS_STORE_BACKENDS_H
#define UPRES_TESTS_STORE_BACKENDS_H

#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "store/store.h"
#include "test.h"

static char tb_dir[256];          /* SQLite: the test's folder */
static const char *tb_pg;         /* the PostgreSQL URL while its run is on, else NULL */
static char tb_schema_prefix[32]; /* PostgreSQL: this process's schemas start so */

/* PostgreSQL: the schema of store name (letters, digits and '_' only). */
static inline void tb_schema(const char *name, char *out, size_t size) {
    snprintf(out, size, "%s%s", tb_schema_prefix, *name ? name : "main");
    for (char *c = out; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9')))
            *c = '_';
}

/* PostgreSQL: a connection to the test database with search_path at store name's schema (made). */
static inline PGconn *tb_pg_connect(const char *name) {
    PGconn *c = PQconnectdb(tb_pg);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "test: %s: %s", tb_pg, PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, NULL, NULL);
    char schema[128], sql[400];
    tb_schema(name, schema, sizeof schema);
    snprintf(sql, sizeof sql,
             "SET client_min_messages = warning; CREATE SCHEMA IF NOT EXISTS %s; SET search_path = %s",
             schema, schema);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fprintf(stderr, "test: %s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    return c;
}

/* The URL of store name: SQLite's file, or the PostgreSQL URL with the schema as its search_path. */
static inline void tb_url(const char *name, char *out, size_t size) {
    if (!tb_pg) {
        char sub[400];
        snprintf(sub, sizeof sub, "%s/%s", tb_dir, name);
        mkdir(sub, 0777);
        snprintf(out, size, "sqlite://%s/upres.db", sub);
        return;
    }
    char schema[128];
    tb_schema(name, schema, sizeof schema);
    snprintf(out, size, "%s%coptions=-csearch_path%%3D%s", tb_pg, strchr(tb_pg, '?') ? '&' : '?', schema);
}

static inline store_t *tb_open(const char *name) {
    char url[700];
    store_t *st = NULL;
    up_error_t err;
    if (tb_pg) { /* the schema first: a store makes its tables, not the schema they go in */
        PGconn *c = tb_pg_connect(name);
        PQfinish(c);
    }
    tb_url(name, url, sizeof url);
    CHECKF(store_open_url(url, NULL, &st, &err) == 0, "%s: %s", url, err.msg);
    return st;
}

static inline int tb_exec(const char *name, const char *sql) {
    if (tb_pg) {
        PGconn *c = tb_pg_connect(name);
        if (!c)
            return -1;
        PGresult *r = PQexec(c, sql);
        int rc = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK ? 0 : -1;
        if (rc)
            fprintf(stderr, "test: %s: %s", sql, PQresultErrorMessage(r));
        PQclear(r);
        PQfinish(c);
        return rc;
    }
    char path[400];
    snprintf(path, sizeof path, "%s/%s", tb_dir, name);
    mkdir(path, 0777);
    snprintf(path, sizeof path, "%s/%s/upres.db", tb_dir, name);
    sqlite3 *db = NULL;
    int rc = sqlite3_open(path, &db);
    char *msg = NULL;
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fprintf(stderr, "%s: %s\n", path, msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    sqlite3_close(db);
    return rc;
}

/* PostgreSQL: drop every schema this process made. */
static inline void tb_pg_drop_all(void) {
    PGconn *c = PQconnectdb(tb_pg);
    if (PQstatus(c) == CONNECTION_OK) {
        char sql[600];
        snprintf(
            sql, sizeof sql,
            "DO $$DECLARE s text; BEGIN FOR s IN SELECT nspname FROM pg_namespace WHERE nspname LIKE '%s%%'"
            " LOOP EXECUTE 'DROP SCHEMA ' || quote_ident(s) || ' CASCADE'; END LOOP; END$$",
            tb_schema_prefix);
        PQsetNoticeProcessor(c, NULL, NULL);
        PQclear(PQexec(c, "SET client_min_messages = warning"));
        PGresult *r = PQexec(c, sql);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            fprintf(stderr, "test: dropping the schemas: %s", PQresultErrorMessage(r));
        PQclear(r);
    }
    PQfinish(c);
}

/* fn on SQLite in dir (made), then on PostgreSQL when UPRES_TEST_PG is set; each run's counts and time. */
static inline void tb_run(const char *dir, void (*fn)(void)) {
    snprintf(tb_dir, sizeof tb_dir, "%s", dir);
    mkdir(tb_dir, 0777);
    snprintf(tb_schema_prefix, sizeof tb_schema_prefix, "t%d_", (int)getpid());
    const char *pg = getenv("UPRES_TEST_PG");
    for (int b = 0; b < 2; b++) {
        if (b == 1 && (!pg || !*pg)) {
            printf("postgresql: not run (UPRES_TEST_PG not set)\n");
            break;
        }
        tb_pg = b ? pg : NULL;
        int pass0 = test_n_pass, fail0 = test_n_fail;
        double t0 = mono_s();
        fn();
        printf("%s: %d passed, %d failed, %.2f s\n", b ? "postgresql" : "sqlite", test_n_pass - pass0,
               test_n_fail - fail0, mono_s() - t0);
        fflush(stdout);
        if (b)
            tb_pg_drop_all();
    }
    tb_pg = NULL;
}

#endif
