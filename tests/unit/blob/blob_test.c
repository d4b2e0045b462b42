/*
 * blob_test.c - the blob store (src/blob/blob.c) over a local directory:
 * keys (valid ones; "..", absolute, empty segments, hidden names,
 * temporaries' marks, NUL and control bytes refused), a relative root made
 * absolute at open (the store then works from another working directory),
 * put / commit / abort (no partial blob visible under its key before the
 * commit, nothing left after an abort), put_file (a staged file taken
 * over, also on failure), read with ranges, stat, delete, blob_path, and
 * the sweep: temporaries by age and by their writer's pid, unreferenced
 * blobs by age, referenced and young ones kept, files outside the swept
 * folders (the database) never touched.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "blob/blob.h"
#include "core/clock.h"
#include "core/log.h"
#include "test.h"

static char dir[256];

static int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* Set path's modification time to now - age seconds. */
static void age_file(const char *path, double age) {
    struct timeval tv[2];
    double t = now_s() - age;
    tv[0].tv_sec = tv[1].tv_sec = (time_t)t;
    tv[0].tv_usec = tv[1].tv_usec = 0;
    utimes(path, tv);
}

/* Files in folder whose name contains part. */
static int count_files(const char *folder, const char *part) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -c -- '%s'", folder, part);
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (p) {
        if (fscanf(p, "%d", &n) != 1)
            n = -1;
        pclose(p);
    }
    return n;
}

static void test_keys(void) {
    const char *good[] = {"uploads/0f8a.png", "results/0f8a-a1.png", "a",
                          "x/y/z.webp",       "uploads/a..b.png",    "uploads/sp ace.png"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        CHECKF(blob_key_valid(good[i]), "%s", good[i]);
    const char *bad[] = {"",
                         "/uploads/a.png",
                         "../a.png",
                         "uploads/../a.png",
                         "uploads/..",
                         "./a.png",
                         "uploads/./a.png",
                         "uploads//a.png",
                         "uploads/",
                         "/",
                         "uploads/.upload-1-abc",
                         "uploads/.hidden",
                         "results/a.png.tmp-12-0",
                         "a\\b",
                         "a\nb",
                         "a\x7f"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECKF(!blob_key_valid(bad[i]), "'%s'", bad[i]);
    CHECK(!blob_key_valid(NULL));
    /* NUL: the length says the key goes on past it */
    CHECK(blob_key_check("uploads/a.png", 13));
    CHECK(!blob_key_check("uploads/a\0.png", 14));
    CHECK(!blob_key_check("uploads/a.png\0", 14));
    char longest[BLOB_KEY_MAX + 2];
    memset(longest, 'k', sizeof longest);
    longest[BLOB_KEY_MAX] = '\0';
    CHECK(blob_key_valid(longest));
    longest[BLOB_KEY_MAX] = 'k';
    longest[BLOB_KEY_MAX + 1] = '\0';
    CHECK(!blob_key_valid(longest));
}

/* Open a store on dir/sub, given as a path relative to dir (the test chdirs there first). */
static blob_store_t *open_rel(const char *sub) {
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd) || chdir(dir))
        return NULL;
    blob_store_t *bs = NULL;
    up_error_t err;
    int rc = blob_open_local(sub, &bs, &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (chdir(cwd))
        CHECK(0);
    return bs;
}

static void test_put_read(void) {
    blob_store_t *bs = open_rel("data");
    if (!bs)
        return;
    up_error_t err;
    char want[PATH_MAX + 64], root[PATH_MAX], path[PATH_MAX + 128];
    CHECK(realpath(dir, root) != NULL);
    snprintf(want, sizeof want, "%s/data", root);
    /* the root is absolute, and we are not in dir: everything below works from here */
    CHECKF(strcmp(blob_root(bs), want) == 0, "%s", blob_root(bs));
    CHECK(strcmp(blob_backend_name(bs), "local") == 0);
    snprintf(path, sizeof path, "%s/uploads", want);
    CHECK(file_exists(path) && strcmp(blob_staging_dir(bs), path) == 0);
    snprintf(path, sizeof path, "%s/results", want);
    CHECK(file_exists(path));

    /* streamed put: nothing under the key before the commit */
    blob_writer_t *w = NULL;
    CHECKF(blob_put_begin(bs, "results/j1-a1.png", &w, &err) == 0, "%s", err.msg);
    CHECK(w && blob_write(w, "0123", 4, &err) == 0 && blob_write(w, "456789", 6, &err) == 0);
    blob_info_t info;
    CHECK(blob_stat(bs, "results/j1-a1.png", &info, &err) == UP_ERR_NOT_FOUND);
    CHECK(count_files(path, "j1-a1.png.tmp-") == 1);
    CHECKF(blob_commit(w, &err) == 0, "%s", err.msg);
    CHECK(count_files(path, "tmp-") == 0);
    CHECK(blob_stat(bs, "results/j1-a1.png", &info, &err) == 0 && info.size == 10);
    CHECK(info.mtime > now_s() - 60 && info.mtime < now_s() + 1);

    /* abort: no blob, no temporary */
    CHECK(blob_put_begin(bs, "results/j2-a1.png", &w, &err) == 0);
    CHECK(blob_write(w, "partial", 7, &err) == 0);
    blob_abort(w);
    blob_abort(NULL);
    CHECK(blob_stat(bs, "results/j2-a1.png", &info, &err) == UP_ERR_NOT_FOUND);
    CHECK(count_files(path, "tmp-") == 0);

    /* bad keys never reach the disk */
    CHECK(blob_put(bs, "../escape.png", "x", 1, &err) == UP_ERR_INVALID);
    CHECK(blob_put(bs, "/tmp/escape.png", "x", 1, &err) == UP_ERR_INVALID);
    CHECK(blob_put_begin(bs, "results/..", &w, &err) == UP_ERR_INVALID && w == NULL);
    CHECK(blob_stat(bs, "results/../upres.db", &info, &err) == UP_ERR_INVALID);
    CHECK(blob_delete(bs, "..", &err) == UP_ERR_INVALID);

    /* reads and ranges */
    char buf[32];
    size_t n = 99;
    CHECK(blob_read(bs, "results/j1-a1.png", 0, buf, sizeof buf, &n, &err) == 0 && n == 10 &&
          memcmp(buf, "0123456789", 10) == 0);
    CHECK(blob_read(bs, "results/j1-a1.png", 3, buf, 4, &n, &err) == 0 && n == 4 &&
          memcmp(buf, "3456", 4) == 0);
    CHECK(blob_read(bs, "results/j1-a1.png", 8, buf, 4, &n, &err) == 0 && n == 2 &&
          memcmp(buf, "89", 2) == 0);
    CHECK(blob_read(bs, "results/j1-a1.png", 10, buf, 4, &n, &err) == 0 && n == 0);
    CHECK(blob_read(bs, "results/j1-a1.png", 11, buf, 4, &n, &err) == UP_ERR_INVALID);
    CHECK(blob_read(bs, "results/j1-a1.png", -1, buf, 4, &n, &err) == UP_ERR_INVALID);
    CHECK(blob_read(bs, "results/none.png", 0, buf, 4, &n, &err) == UP_ERR_NOT_FOUND);
    blob_reader_t *r = NULL;
    CHECK(blob_open(bs, "results/j1-a1.png", &r, &info, &err) == 0 && r && info.size == 10);
    CHECK(blob_reader_read(r, 5, buf, 5, &n, &err) == 0 && n == 5 && memcmp(buf, "56789", 5) == 0);
    CHECK(blob_reader_read(r, 0, buf, 1, &n, &err) == 0 && n == 1 && buf[0] == '0');
    blob_reader_close(r);
    blob_reader_close(NULL);
    CHECK(blob_open(bs, "results", &r, &info, &err) == UP_ERR_NOT_FOUND); /* a folder is no blob */

    /* a put replaces */
    CHECK(blob_put(bs, "results/j1-a1.png", "new", 3, &err) == 0);
    CHECK(blob_stat(bs, "results/j1-a1.png", &info, &err) == 0 && info.size == 3);

    /* the local extra: the file behind a key */
    CHECK(blob_path(bs, "results/j1-a1.png", path, sizeof path, &err) == 0);
    snprintf(want, sizeof want, "%s/data/results/j1-a1.png", root);
    CHECKF(strcmp(path, want) == 0, "%s", path);
    CHECK(file_exists(path));
    CHECK(blob_path(bs, "../x", path, sizeof path, &err) == UP_ERR_INVALID);
    CHECK(blob_path(bs, "results/j1-a1.png", path, 10, &err) == UP_ERR_INVALID);

    /* put_file takes a staged file over: renamed, time now; gone on failure too */
    char staged[PATH_MAX + 64];
    snprintf(staged, sizeof staged, "%s/.upload-%ld-abcdef", blob_staging_dir(bs), (long)getpid());
    write_text(staged, "image bytes");
    age_file(staged, 7200);
    CHECKF(blob_put_file(bs, "uploads/u1.png", staged, &err) == 0, "%s", err.msg);
    CHECK(!file_exists(staged));
    CHECK(blob_stat(bs, "uploads/u1.png", &info, &err) == 0 && info.size == 11 && info.mtime > now_s() - 60);
    write_text(staged, "x");
    CHECK(blob_put_file(bs, "uploads/../u2.png", staged, &err) == UP_ERR_INVALID && !file_exists(staged));
    CHECK(blob_put_file(bs, "uploads/u3.png", staged, &err) == UP_ERR_IO && errno == ENOENT);
    CHECK(blob_stat(bs, "uploads/u3.png", &info, &err) == UP_ERR_NOT_FOUND);

    /* delete: gone, then NOT_FOUND */
    CHECK(blob_delete(bs, "uploads/u1.png", &err) == 0);
    CHECK(blob_delete(bs, "uploads/u1.png", &err) == UP_ERR_NOT_FOUND);
    CHECK(blob_stat(bs, "uploads/u1.png", &info, &err) == UP_ERR_NOT_FOUND);
    blob_close(bs);
    blob_close(NULL);
}

/* The sweep's referenced callback: keys listed in ctx, a NULL-terminated array. */
static int in_list(const char *key, void *ctx) {
    for (const char *const *k = ctx; *k; k++)
        if (strcmp(*k, key) == 0)
            return 1;
    return 0;
}

/* A pid that is surely no process now: a child that has exited and been reaped. */
static long dead_pid(void) {
    pid_t p = fork();
    if (p == 0)
        _exit(0);
    waitpid(p, NULL, 0);
    return (long)p;
}

static void test_sweep(void) {
    blob_store_t *bs = open_rel("sweep");
    if (!bs)
        return;
    up_error_t err;
    char up[PATH_MAX + 16], res[PATH_MAX + 16], p[PATH_MAX + 128];
    snprintf(up, sizeof up, "%s/uploads", blob_root(bs));
    snprintf(res, sizeof res, "%s/results", blob_root(bs));
    long dead = dead_pid(), live = (long)getppid();

    /* temporaries: a dead writer's go at once, a live one's only when old, an untagged one by age */
    struct {
        const char *folder, *fmt;
        long pid;
        double age;
        int gone;
    } tmps[] = {
        {up, "%s/.upload-%ld-AbC123", dead, 0, 1},    {up, "%s/.upload-%ld-DeF456", live, 0, 0},
        {up, "%s/.upload-%ld-GhI789", live, 7200, 1}, {up, "%s/.upload-q%ldXYZ", 0, 60, 0},
        {up, "%s/.upload-q%ldOLD", 0, 7200, 1},       {res, "%s/j-a1.png.tmp-%ld-0", dead, 0, 1},
        {res, "%s/j-a2.png.tmp-%ld-1", live, 10, 0},
    };
    char paths[sizeof tmps / sizeof *tmps][PATH_MAX + 128];
    for (size_t i = 0; i < sizeof tmps / sizeof *tmps; i++) {
        snprintf(paths[i], sizeof paths[i], tmps[i].fmt, tmps[i].folder, tmps[i].pid);
        write_text(paths[i], "tmp");
        age_file(paths[i], tmps[i].age);
    }
    /* blobs: referenced (old or not) kept, unreferenced go when old, young ones stay */
    struct {
        const char *key;
        double age;
        int gone;
    } blobs[] = {
        {"uploads/queued.png", 86400, 0},  {"results/done-a1.png", 86400, 0}, {"uploads/orphan.png", 3600, 1},
        {"results/orphan-a1.png", 600, 1}, {"uploads/fresh.png", 30, 0},
    };
    for (size_t i = 0; i < sizeof blobs / sizeof *blobs; i++) {
        CHECK(blob_put(bs, blobs[i].key, "blob", 4, &err) == 0);
        snprintf(p, sizeof p, "%s/%s", blob_root(bs), blobs[i].key);
        age_file(p, blobs[i].age);
    }
    /* not ours: a hidden file, a folder, and the database beside the folders */
    snprintf(p, sizeof p, "%s/.keep", up);
    write_text(p, "x");
    age_file(p, 86400);
    snprintf(p, sizeof p, "%s/sub", res);
    mkdir(p, 0777);
    snprintf(p, sizeof p, "%s/upres.db", blob_root(bs));
    write_text(p, "db");
    age_file(p, 86400);

    /* without a referenced callback no blob is judged: only temporaries go */
    static const char *const prefixes[] = {"uploads", "results", NULL};
    blob_sweep_opts_t o;
    blob_sweep_opts_init(&o);
    CHECK(o.temp_age_s == 3600 && o.orphan_age_s == 300 && !o.referenced);
    o.prefixes = prefixes;
    blob_sweep_stats_t st;
    CHECKF(blob_sweep(bs, &o, &st, &err) == 0, "%s", err.msg);
    CHECKF(st.n_temporaries == 4 && st.n_orphans == 0, "%d %d", st.n_temporaries, st.n_orphans);
    for (size_t i = 0; i < sizeof tmps / sizeof *tmps; i++)
        CHECKF(file_exists(paths[i]) == !tmps[i].gone, "%s", paths[i]);
    for (size_t i = 0; i < sizeof blobs / sizeof *blobs; i++) {
        blob_info_t info;
        CHECKF(blob_stat(bs, blobs[i].key, &info, &err) == 0, "%s", blobs[i].key);
    }

    /* with the rows' keys: the old unreferenced blobs go */
    static const char *const refs[] = {"uploads/queued.png", "results/done-a1.png", NULL};
    o.referenced = in_list;
    o.ctx = (void *)refs;
    CHECKF(blob_sweep(bs, &o, &st, &err) == 0, "%s", err.msg);
    CHECKF(st.n_temporaries == 0 && st.n_orphans == 2 && st.n_kept == 3, "%d %d %d", st.n_temporaries,
           st.n_orphans, st.n_kept);
    for (size_t i = 0; i < sizeof blobs / sizeof *blobs; i++) {
        blob_info_t info;
        CHECKF((blob_stat(bs, blobs[i].key, &info, &err) == 0) == !blobs[i].gone, "%s", blobs[i].key);
    }
    snprintf(p, sizeof p, "%s/.keep", up);
    CHECK(file_exists(p));
    snprintf(p, sizeof p, "%s/sub", res);
    CHECK(file_exists(p));
    snprintf(p, sizeof p, "%s/upres.db", blob_root(bs));
    CHECK(file_exists(p));

    /* a smaller orphan age takes the young one too; the root itself is never a prefix */
    o.orphan_age_s = 10;
    CHECK(blob_sweep(bs, &o, &st, &err) == 0 && st.n_orphans == 1);
    CHECK(blob_stat(bs, "uploads/queued.png", &(blob_info_t){0}, &err) == 0);
    static const char *const bad[] = {"..", NULL};
    o.prefixes = bad;
    CHECK(blob_sweep(bs, &o, &st, &err) == UP_ERR_INVALID);
    blob_close(bs);
}

int main(void) {
    log_set_level(LOG_WARN);
    snprintf(dir, sizeof dir, "/tmp/upres-blob-test-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_keys();
    test_put_read();
    test_sweep();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return test_summary();
}
