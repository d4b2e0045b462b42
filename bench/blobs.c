/*
 * blobs.c - how fast the blob stores move bytes: a put of SIZE MiB (the
 * writer fed 256 KiB at a time, as an encoder's buffer or an upload
 * stream would), a read of it in 256 KiB pieces (a download's), and a
 * local copy (blob_local_file: a worker's input for libvips), on the local
 * folder (a temporary one; every commit fsyncs) and, when UPRES_BENCH_PG
 * names a PostgreSQL database, on PostgreSQL (a schema of its own, dropped
 * at the end). Prints MB/s for each, best of 3.
 *
 * usage: [UPRES_BENCH_PG=postgresql://...] bench_blobs [SIZE_MIB]
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blob/blob.h"
#include "core/clock.h"
#include "core/log.h"

#define PIECE (256 * 1024)

static int run(const char *what, blob_store_t *bs, size_t bytes) {
    unsigned char *buf = malloc(PIECE);
    for (size_t i = 0; i < PIECE; i++)
        buf[i] = (unsigned char)(i * 2654435761u >> 13);
    double best_put = 1e9, best_read = 1e9, best_copy = 1e9;
    up_error_t err;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now_s();
        blob_writer_t *w;
        if (blob_put_begin(bs, "results/bench-a1.png", &w, &err))
            goto fail;
        for (size_t at = 0; at < bytes; at += PIECE)
            if (blob_write(w, buf, PIECE, &err)) {
                blob_abort(w);
                goto fail;
            }
        if (blob_commit(w, &err))
            goto fail;
        double t1 = now_s();
        blob_reader_t *r;
        if (blob_open(bs, "results/bench-a1.png", &r, NULL, &err))
            goto fail;
        size_t n = 0;
        for (long long at = 0; at < (long long)bytes; at += (long long)n)
            if (blob_reader_read(r, at, buf, PIECE, &n, &err) || n == 0) {
                blob_reader_close(r);
                goto fail;
            }
        blob_reader_close(r);
        double t2 = now_s();
        char path[4096];
        int copy = 0;
        if (blob_local_file(bs, "results/bench-a1.png", path, sizeof path, &copy, &err))
            goto fail;
        if (copy)
            unlink(path);
        double t3 = now_s();
        best_put = t1 - t0 < best_put ? t1 - t0 : best_put;
        best_read = t2 - t1 < best_read ? t2 - t1 : best_read;
        best_copy = t3 - t2 < best_copy ? t3 - t2 : best_copy;
    }
    double mb = (double)bytes / 1e6;
    printf("%-11s %6.0f MB  put %7.0f MB/s  read %7.0f MB/s  ", what, mb, mb / best_put, mb / best_read);
    if (strcmp(blob_backend_name(bs), "local"))
        printf("local copy %7.0f MB/s\n", mb / best_copy);
    else
        printf("local copy: none (the blob's own file)\n");
    blob_delete(bs, "results/bench-a1.png", NULL);
    free(buf);
    return 0;
fail:
    fprintf(stderr, "%s: %s\n", what, err.msg);
    free(buf);
    return 1;
}

int main(int argc, char **argv) {
    log_set_level(LOG_WARN);
    size_t mib = argc > 1 ? (size_t)atoi(argv[1]) : 64;
    if (mib < 1 || mib > 4096) {
        fprintf(stderr, "usage: bench_blobs [SIZE_MIB: 1 to 4096]\n");
        return 2;
    }
    size_t bytes = mib << 20;
    char dir[] = "/tmp/upres-bench-blobs-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    int rc = 0;
    blob_store_t *bs = NULL;
    up_error_t err;
    if (blob_open_local(dir, &bs, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    rc |= run("local", bs, bytes);
    blob_close(bs);
    const char *pg = getenv("UPRES_BENCH_PG");
    if (pg && *pg) {
        char schema[64], sql[160], url[2048];
        snprintf(schema, sizeof schema, "bench_blobs_%ld", (long)getpid());
        PGconn *c = PQconnectdb(pg);
        snprintf(sql, sizeof sql, "CREATE SCHEMA %s", schema);
        PQclear(PQexec(c, sql));
        snprintf(url, sizeof url, "%s%coptions=-csearch_path%%3D%s", pg, strchr(pg, '?') ? '&' : '?', schema);
        if (blob_open_url(url, dir, NULL, &bs, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            rc = 1;
        } else {
            rc |= run("postgresql", bs, bytes);
            blob_close(bs);
        }
        snprintf(sql, sizeof sql, "SET client_min_messages = warning; DROP SCHEMA %s CASCADE", schema);
        PQclear(PQexec(c, sql));
        PQfinish(c);
    } else {
        printf("postgresql: not run (set UPRES_BENCH_PG to a postgresql:// URL; see README, Benchmarks)\n");
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return rc;
}
