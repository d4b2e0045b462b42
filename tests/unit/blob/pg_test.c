/*
 * pg_test.c - the PostgreSQL blob store (src/blob/blob_pg.c), in a schema
 * of its own in the database UPRES_TEST_PG names (ctest passes the pg
 * fixture's cluster; without it the test says so and passes):
 *
 *   - a streamed put of 3.5 MiB in uneven pieces is invisible until its
 *     commit, lands as four 1 MiB-at-most chunk rows, and reads back byte
 *     for byte across chunk boundaries, in small pieces and in one;
 *   - abort leaves no row; a put replaces (the old chunks go); an empty
 *     blob; a reader of a blob replaced since its open fails, never mixes;
 *   - put_file streams a staged file in and removes it (also when the file
 *     is missing); blob_local_file gives a streamed copy in the staging
 *     folder; blob_path is unsupported; delete; a second handle sees what
 *     the first committed;
 *   - the sweep: an old uncommitted row and a dead process's staged file
 *     go, young ones stay; unreferenced old blobs go, referenced stay;
 *   - the connections: every server connection of ours killed (a restart
 *     as the pool sees it) and the next calls work on new ones;
 *   - URLs: "postgresql:" takes the store's database, and is refused for
 *     a SQLite store; "postgresql:x" is malformed; a newer schema refused.
 */
#include <errno.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "blob/blob.h"
#include "core/clock.h"
#include "core/log.h"
#include "test.h"

#define MIB (1 << 20)

static const char *pg;  /* the database */
static char dir[256];   /* the local folders */
static char schema[64]; /* this run's schema */
static char url[1024];  /* pg with search_path = schema */

static PGconn *db(void) {
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK)
        fprintf(stderr, "test: %s: %s", url, PQerrorMessage(c));
    return c;
}

/* The first field of the first row of sql, as a number (-1 on an error). */
static long long sql_num(const char *sql) {
    PGconn *c = db();
    PGresult *r = PQexec(c, sql);
    long long v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) ? atoll(PQgetvalue(r, 0, 0)) : -1;
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fprintf(stderr, "test: %s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(c);
    return v;
}

static int sql_exec(const char *sql) {
    PGconn *c = db();
    PGresult *r = PQexec(c, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr, "test: %s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(c);
    return ok ? 0 : -1;
}

static blob_store_t *open_pg(const char *local) {
    char root[400];
    snprintf(root, sizeof root, "%s/%s", dir, local);
    blob_store_t *bs = NULL;
    up_error_t err;
    int rc = blob_open_url(url, root, NULL, &bs, &err);
    CHECKF(rc == 0, "%s", err.msg);
    return bs;
}

static int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* Bytes that differ at every offset (a misplaced chunk shows). */
static unsigned char *pattern(size_t n, unsigned seed) {
    unsigned char *p = malloc(n ? n : 1);
    unsigned x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (unsigned char)(x >> 16);
    }
    return p;
}

static void test_put_read(void) {
    blob_store_t *bs = open_pg("a");
    if (!bs)
        return;
    up_error_t err;
    char path[PATH_MAX];
    CHECK(strcmp(blob_backend_name(bs), "postgresql") == 0);
    snprintf(path, sizeof path, "%s/uploads", blob_root(bs));
    CHECK(file_exists(path) && strcmp(blob_staging_dir(bs), path) == 0);
    CHECK(blob_path(bs, "results/x.png", path, sizeof path, &err) == UP_ERR_UNSUPPORTED);

    /* streamed, uneven pieces: nothing under the key until the commit */
    size_t n = 3 * MIB + MIB / 2;
    unsigned char *data = pattern(n, 1);
    blob_writer_t *w = NULL;
    CHECKF(blob_put_begin(bs, "results/big-a1.png", &w, &err) == 0, "%s", err.msg);
    size_t pieces[] = {1, 4095, MIB, 3, MIB - 4099, 700000};
    size_t at = 0;
    for (size_t i = 0; w && at < n; i = (i + 1) % (sizeof pieces / sizeof *pieces)) {
        size_t k = pieces[i] < n - at ? pieces[i] : n - at;
        CHECK(blob_write(w, data + at, k, &err) == 0);
        at += k;
    }
    blob_info_t info;
    CHECK(blob_stat(bs, "results/big-a1.png", &info, &err) == UP_ERR_NOT_FOUND);
    CHECK(sql_num("SELECT count(*) FROM blobs WHERE key IS NULL") == 1);
    CHECKF(blob_commit(w, &err) == 0, "%s", err.msg);
    CHECK(blob_stat(bs, "results/big-a1.png", &info, &err) == 0 && info.size == (long long)n);
    CHECK(info.mtime > now_s() - 60 && info.mtime < now_s() + 1);
    CHECK(sql_num("SELECT count(*) FROM blobs WHERE key IS NULL") == 0);
    CHECK(sql_num("SELECT count(*) FROM blob_chunks") == 4);
    CHECK(sql_num("SELECT max(length(data)) FROM blob_chunks") == MIB);

    /* reads: whole, across boundaries, in small pieces, at the end */
    unsigned char *back = malloc(n + 16);
    size_t got = 0;
    CHECK(blob_read(bs, "results/big-a1.png", 0, back, n + 16, &got, &err) == 0 && got == n &&
          memcmp(back, data, n) == 0);
    CHECK(blob_read(bs, "results/big-a1.png", MIB - 5, back, 10, &got, &err) == 0 && got == 10 &&
          memcmp(back, data + MIB - 5, 10) == 0);
    CHECK(blob_read(bs, "results/big-a1.png", (long long)n - 3, back, 10, &got, &err) == 0 && got == 3 &&
          memcmp(back, data + n - 3, 3) == 0);
    CHECK(blob_read(bs, "results/big-a1.png", (long long)n, back, 10, &got, &err) == 0 && got == 0);
    CHECK(blob_read(bs, "results/big-a1.png", (long long)n + 1, back, 10, &got, &err) == UP_ERR_INVALID);
    blob_reader_t *r = NULL;
    CHECK(blob_open(bs, "results/big-a1.png", &r, &info, &err) == 0 && info.size == (long long)n);
    int same = 1;
    for (size_t off = 0; r && off < n; off += 65536) {
        size_t want = n - off < 65536 ? n - off : 65536;
        same &= blob_reader_read(r, (long long)off, back, 65536, &got, &err) == 0 && got == want &&
                memcmp(back, data + off, want) == 0;
    }
    CHECK(same);

    /* replaced since the open: the old chunks are gone, the read fails rather than mixing */
    unsigned char *other = pattern(MIB + 10, 2);
    CHECK(blob_put(bs, "results/big-a1.png", other, MIB + 10, &err) == 0);
    CHECK(sql_num("SELECT count(*) FROM blob_chunks") == 2);
    CHECK(r && blob_reader_read(r, 2 * MIB, back, 10, &got, &err) == UP_ERR_IO);
    blob_reader_close(r);
    CHECK(blob_read(bs, "results/big-a1.png", 0, back, n, &got, &err) == 0 && got == MIB + 10 &&
          memcmp(back, other, MIB + 10) == 0);

    /* abort: no row left; an empty blob */
    CHECK(blob_put_begin(bs, "results/gone-a1.png", &w, &err) == 0);
    CHECK(blob_write(w, data, 2 * MIB + 1, &err) == 0);
    blob_abort(w);
    CHECK(blob_stat(bs, "results/gone-a1.png", &info, &err) == UP_ERR_NOT_FOUND);
    CHECK(sql_num("SELECT count(*) FROM blobs WHERE key IS NULL") == 0);
    CHECK(sql_num("SELECT count(*) FROM blob_chunks") == 2);
    CHECK(blob_put(bs, "results/empty-a1.png", "", 0, &err) == 0);
    CHECK(blob_stat(bs, "results/empty-a1.png", &info, &err) == 0 && info.size == 0);
    CHECK(blob_read(bs, "results/empty-a1.png", 0, back, 4, &got, &err) == 0 && got == 0);

    /* put_file: the staged file streamed in and removed; a missing one is an error with errno */
    char staged[PATH_MAX + 64];
    snprintf(staged, sizeof staged, "%s/.upload-%ld-abcdef", blob_staging_dir(bs), (long)getpid());
    FILE *f = fopen(staged, "wb");
    CHECK(f && fwrite(data, 1, MIB + 7, f) == MIB + 7);
    if (f)
        fclose(f);
    CHECKF(blob_put_file(bs, "uploads/u1.png", staged, &err) == 0, "%s", err.msg);
    CHECK(!file_exists(staged));
    CHECK(blob_read(bs, "uploads/u1.png", 0, back, n, &got, &err) == 0 && got == MIB + 7 &&
          memcmp(back, data, MIB + 7) == 0);
    CHECK(blob_put_file(bs, "uploads/u2.png", staged, &err) == UP_ERR_IO && errno == ENOENT);
    CHECK(blob_stat(bs, "uploads/u2.png", &info, &err) == UP_ERR_NOT_FOUND);

    /* blob_local_file: a streamed copy in the staging folder, the caller's to remove */
    int copy = 0;
    CHECKF(blob_local_file(bs, "uploads/u1.png", path, sizeof path, &copy, &err) == 0, "%s", err.msg);
    CHECK(copy == 1 && strncmp(path, blob_staging_dir(bs), strlen(blob_staging_dir(bs))) == 0 &&
          strstr(path, "/.upload-") != NULL);
    f = fopen(path, "rb");
    size_t k = f ? fread(back, 1, n, f) : 0;
    if (f)
        fclose(f);
    CHECK(k == MIB + 7 && memcmp(back, data, k) == 0);
    unlink(path);
    CHECK(blob_local_file(bs, "uploads/none.png", path, sizeof path, &copy, &err) == UP_ERR_NOT_FOUND);

    /* another handle (another process) sees the committed blobs */
    blob_store_t *b2 = open_pg("b");
    CHECK(b2 && blob_stat(b2, "uploads/u1.png", &info, &err) == 0 && info.size == MIB + 7);

    /* delete: gone for both, then NOT_FOUND */
    CHECK(blob_delete(bs, "uploads/u1.png", &err) == 0);
    CHECK(blob_delete(bs, "uploads/u1.png", &err) == UP_ERR_NOT_FOUND);
    CHECK(b2 && blob_stat(b2, "uploads/u1.png", &info, &err) == UP_ERR_NOT_FOUND);
    CHECK(blob_put(bs, "../x", "x", 1, &err) == UP_ERR_INVALID);

    /* the server drops every connection of ours: the next calls reconnect */
    char kill[300];
    snprintf(kill, sizeof kill,
             "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '%s' "
             "AND pid <> pg_backend_pid()",
             schema);
    CHECK(sql_num("SELECT count(*) FROM pg_stat_activity WHERE application_name = current_setting("
                  "'application_name') AND pid <> pg_backend_pid()") >= 2);
    CHECK(sql_exec(kill) == 0);
    usleep(100 * 1000);
    CHECK(blob_read(bs, "results/big-a1.png", 0, back, 16, &got, &err) == 0 && got == 16 &&
          memcmp(back, other, 16) == 0);
    CHECKF(blob_put(b2, "results/after-a1.png", data, MIB + 1, &err) == 0, "%s", err.msg);

    blob_close(b2);
    blob_close(bs);
    free(data);
    free(other);
    free(back);
}

static int in_list(const char *key, void *ctx) {
    for (const char *const *k = ctx; *k; k++)
        if (strcmp(*k, key) == 0)
            return 1;
    return 0;
}

static void test_sweep(void) {
    CHECK(sql_exec("DELETE FROM blobs") == 0);
    blob_store_t *bs = open_pg("a");
    if (!bs)
        return;
    up_error_t err;
    /* an old uncommitted row and a young one; a dead process's staged file and a live one's */
    blob_writer_t *w_old = NULL, *w_new = NULL;
    CHECK(blob_put_begin(bs, "results/old-a1.png", &w_old, &err) == 0);
    CHECK(blob_write(w_old, "abc", 3, &err) == 0);
    CHECK(blob_put_begin(bs, "results/new-a1.png", &w_new, &err) == 0);
    CHECK(sql_exec("UPDATE blobs SET created = created - 7200 WHERE target = 'results/old-a1.png'") == 0);
    pid_t p = fork();
    if (p == 0)
        _exit(0);
    waitpid(p, NULL, 0);
    char dead[PATH_MAX + 64], live[PATH_MAX + 64];
    snprintf(dead, sizeof dead, "%s/.upload-%ld-AbC123", blob_staging_dir(bs), (long)p);
    snprintf(live, sizeof live, "%s/.upload-%ld-DeF456", blob_staging_dir(bs), (long)getppid());
    FILE *f = fopen(dead, "w");
    if (f)
        fclose(f);
    f = fopen(live, "w");
    if (f)
        fclose(f);
    /* blobs: referenced kept, unreferenced old ones go, young ones stay */
    const char *keys[] = {"uploads/queued.png", "uploads/orphan.png", "results/orphan-a1.png",
                          "uploads/fresh.png"};
    for (int i = 0; i < 4; i++)
        CHECK(blob_put(bs, keys[i], "blob", 4, &err) == 0);
    CHECK(sql_exec("UPDATE blobs SET mtime = mtime - 3600 WHERE key IN ('uploads/queued.png', "
                   "'uploads/orphan.png', 'results/orphan-a1.png')") == 0);
    static const char *const prefixes[] = {"uploads", "results", NULL};
    static const char *const refs[] = {"uploads/queued.png", NULL};
    blob_sweep_opts_t o;
    blob_sweep_opts_init(&o);
    o.prefixes = prefixes;
    o.referenced = in_list;
    o.ctx = (void *)refs;
    blob_sweep_stats_t st;
    CHECKF(blob_sweep(bs, &o, &st, &err) == 0, "%s", err.msg);
    CHECKF(st.n_temporaries == 2 && st.n_orphans == 2 && st.n_kept == 2, "%d %d %d", st.n_temporaries,
           st.n_orphans, st.n_kept);
    CHECK(!file_exists(dead) && file_exists(live));
    blob_info_t info;
    CHECK(blob_stat(bs, "uploads/queued.png", &info, &err) == 0);
    CHECK(blob_stat(bs, "uploads/fresh.png", &info, &err) == 0);
    CHECK(blob_stat(bs, "uploads/orphan.png", &info, &err) == UP_ERR_NOT_FOUND);
    CHECK(blob_stat(bs, "results/orphan-a1.png", &info, &err) == UP_ERR_NOT_FOUND);
    /* the swept writer's commit fails and leaves nothing; the young one commits */
    CHECK(blob_commit(w_old, &err) == UP_ERR_IO);
    CHECK(blob_stat(bs, "results/old-a1.png", &info, &err) == UP_ERR_NOT_FOUND);
    CHECK(blob_commit(w_new, &err) == 0);
    CHECK(blob_stat(bs, "results/new-a1.png", &info, &err) == 0 && info.size == 0);
    CHECK(sql_num("SELECT count(*) FROM blobs WHERE key IS NULL") == 0);
    unlink(live);
    blob_close(bs);
}

static void test_urls(void) {
    up_error_t err;
    blob_store_t *bs = NULL;
    char root[400];
    snprintf(root, sizeof root, "%s/c", dir);
    /* "postgresql:": the store's database */
    CHECKF(blob_open_url("postgresql:", root, url, &bs, &err) == 0, "%s", err.msg);
    CHECK(bs && strcmp(blob_backend_name(bs), "postgresql") == 0);
    blob_info_t info;
    CHECK(bs && blob_stat(bs, "results/new-a1.png", &info, &err) == 0);
    blob_close(bs);
    CHECK(blob_open_url("postgresql:", root, "sqlite:///tmp/x.db", &bs, &err) == UP_ERR_INVALID && !bs &&
          strstr(err.msg, "not on PostgreSQL"));
    CHECK(blob_open_url("postgresql:", root, NULL, &bs, &err) == UP_ERR_INVALID);
    CHECK(blob_url_check("postgresql:", &err) == 0 && blob_url_check("postgres://h/db", &err) == 0);
    CHECK(blob_url_check("postgresql:db", &err) == UP_ERR_INVALID);
    CHECK(blob_url_check("s3://bucket", &err) == UP_ERR_UNSUPPORTED);
    /* a database that is not there: an error, not a crash */
    CHECK(blob_open_url("postgresql:///no_such_db_here?host=/nonexistent", root, NULL, &bs, &err) ==
              UP_ERR_IO &&
          !bs);
    /* a schema newer than this upres: refused */
    CHECK(sql_exec("INSERT INTO blob_schema_version (version) VALUES (99)") == 0);
    CHECK(blob_open_url(url, root, NULL, &bs, &err) == UP_ERR_INVALID && !bs && strstr(err.msg, "newer"));
    CHECK(sql_exec("DELETE FROM blob_schema_version WHERE version = 99") == 0);
}

int main(void) {
    log_set_level(LOG_ERROR); /* the expected failures log errors: only those show */
    pg = getenv("UPRES_TEST_PG");
    if (!pg || !*pg) {
        printf("unit/blob/pg: UPRES_TEST_PG is not set: skipped (ctest sets it with a PostgreSQL server)\n");
        return 0;
    }
    snprintf(dir, sizeof dir, "/tmp/upres-blobpg-test-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(schema, sizeof schema, "blobs_%ld_%ld", (long)getpid(), (long)now_s());
    PGconn *c = PQconnectdb(pg);
    char sql[200];
    snprintf(sql, sizeof sql, "SET client_min_messages = warning; CREATE SCHEMA %s", schema);
    PGresult *r = PQexec(c, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) {
        fprintf(stderr, "test: %s: %s", pg, PQerrorMessage(c));
        PQfinish(c);
        return 1;
    }
    /* our connections carry the schema and a name of their own (killed by name below) */
    snprintf(url, sizeof url, "%s%coptions=-csearch_path%%3D%s&application_name=%s", pg,
             strchr(pg, '?') ? '&' : '?', schema, schema);
    test_put_read();
    test_sweep();
    test_urls();
    snprintf(sql, sizeof sql, "SET client_min_messages = warning; DROP SCHEMA %s CASCADE", schema);
    PQclear(PQexec(c, sql));
    PQfinish(c);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return test_summary();
}
